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
    destination ?? stdoutDestination(),
  );
}

/**
 * stdout for the log: sonic-boom's asynchronous destination (pino.destination, kept for the audit line's cost,
 * docs/performance.md) behind a wrapper with two changes, both for a reader that went away (EPIPE):
 * - no flushSync: pino's fatal() calls a destination's flushSync, and sonic-boom 4.2.1's flushSync retries a
 *   failed write every 100 ms forever unless the error is EAGAIN, so a fatal startup line into a closed pipe
 *   hung `serve` (`... 2>&1 | true`). Fatal lines go out asynchronously like the others.
 * - flush(cb) calls back once what was written is out (sonic-boom's 'drain') or the pipe is known closed,
 *   so the CLI's flush before exit sees the EPIPE first; pino then drops every later line (its own EPIPE
 *   filter), which makes pino's synchronous flush at process exit a no-op.
 * A running serve whose log reader goes away keeps serving; its log lines are dropped.
 */
function stdoutDestination(): DestinationStream & { flush(cb: (err?: Error) => void): void } {
  const boom = pino.destination({ fd: 1, sync: false });
  let pending = false;
  let closed = false;
  const waiting: Array<(err?: Error) => void> = [];
  const settle = () => {
    pending = false;
    for (const cb of waiting.splice(0)) cb();
  };
  boom.on('drain', settle);
  boom.on('error', (err: NodeJS.ErrnoException) => {
    // Registered after pino's EPIPE filter, which stops the stream; any other error is thrown as before.
    if (err.code !== 'EPIPE') throw err;
    closed = true;
    settle();
  });
  return {
    write(line: string) {
      if (!closed) pending = true;
      return boom.write(line);
    },
    flush(cb: (err?: Error) => void) {
      if (!pending || closed) cb();
      else waiting.push(cb);
    },
  };
}
