import pino, { type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };
export const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** The keys redact() censors in every log line (a second line of defence, see createLogger). */
export const REDACT_PATHS: readonly string[] = ['token', 'authorization', 'csr', 'key', 'privateKey', 'keyPem', '*.token', '*.authorization', '*.csr', '*.privateKey', '*.keyPem'];

/**
 * JSON logs on stdout. Redaction is a second line of defence: the code never hands tokens, keys or
 * CSRs to the logger, and these paths catch a mistake before it reaches a log pipeline.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'svid-ca' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [...REDACT_PATHS],
        censor: '[redacted]',
      },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
