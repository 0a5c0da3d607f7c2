import pino, { type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };
export const LOG_LEVELS: readonly LevelWithSilent[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** The keys redact() censors in every log line (a second line of defence, see createLogger). */
export const REDACT_PATHS: readonly string[] = ['token', 'authorization', 'csr', 'key', 'privateKey', 'keyPem', '*.token', '*.authorization', '*.csr', '*.privateKey', '*.keyPem'];

/** --log-buffer-bytes' default: log lines waiting for a slow stdout reader, at most (issue #14). */
export const DEFAULT_LOG_BUFFER_BYTES = 16 * 1024 * 1024;

/** The warnings (on stderr) when the stdout log starts dropping lines and when its reader has caught up. */
const LOG_DROPPING = 'stdout log reader is behind: dropping log lines until it catches up (the --audit-log file still gets every record)';
const LOG_RESUMED = 'stdout log lines flow again after some were dropped';

/** Lines the stdout log dropped since this process started, its reader being --log-buffer-bytes behind. */
let droppedLines = 0;

/** svid_ca_log_lines_dropped_total's value: stdout log lines this process dropped (a count, since start). */
export function droppedLogLines(): number {
  return droppedLines;
}

/**
 * JSON logs on stdout. Redaction is a second line of defence: the code never hands tokens, keys or
 * CSRs to the logger, and these paths catch a mistake before it reaches a log pipeline.
 * `bufferBytes` bounds the stdout lines waiting for their reader (bytes, --log-buffer-bytes); a
 * given `destination` (tests) is used as it is.
 */
export function createLogger(level: string, destination?: DestinationStream, bufferBytes = DEFAULT_LOG_BUFFER_BYTES): Logger {
  const options = { level, base: { service: 'svid-ca' }, timestamp: pino.stdTimeFunctions.isoTime };
  const redacting = { ...options, redact: { paths: [...REDACT_PATHS], censor: '[redacted]' } };
  if (destination) return pino(redacting, destination);
  // The notices about dropped lines go to stderr: stdout is the stream that is not being read (a notice
  // there would wait behind the lines it is about, or be dropped itself). process.stderr is synchronous
  // for files and pipes: two short lines per episode at most. pid: which process (worker) dropped.
  const stderr = pino(options, process.stderr);
  let logger: Logger | undefined;
  const stdout = stdoutDestination(bufferBytes, {
    dropping: () => stderr.warn({ pid: process.pid, logBufferBytes: bufferBytes }, LOG_DROPPING),
    resumed: (lines) => {
      stderr.warn({ pid: process.pid, droppedLines: lines }, LOG_RESUMED);
      // The stdout reader sees where its gap is, and whose (with --workers, each process has its own gap).
      logger?.warn({ pid: process.pid, droppedLines: lines }, LOG_RESUMED);
    },
  });
  return (logger = pino(redacting, stdout));
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
 * A reader that stays but stops reading (blocked pipe, stuck collector) holds at most `bufferBytes`
 * of lines here; the lines beyond are dropped and counted (svid_ca_log_lines_dropped_total), with a
 * notice on stderr when dropping starts and when the reader has caught up again.
 */
function stdoutDestination(
  bufferBytes: number,
  on: { dropping(): void; resumed(lines: number): void },
): DestinationStream & { flush(cb: (err?: Error) => void): void } {
  // maxLength (sonic-boom 4.2.1): a line that would take the bytes not yet written past it is not
  // buffered and 'drop' is emitted with it; a later line that fits is written as usual.
  // contentMode 'buffer': each line is encoded once (encodeLine, below) and the lines waiting are concatenated
  // once per write(2). In its default 'utf8' mode sonic-boom appends each line to a string and measures
  // that string's UTF-8 length at every line, which flattens it: up to 16 KB copied per line while a
  // write is in flight, most of the garbage of a busy server's log (issue #14).
  const boom = pino.destination({ fd: 1, sync: false, maxLength: bufferBytes, contentMode: 'buffer' });
  /** Lines dropped since the reader last caught up (0: not dropping). */
  let dropping = 0;
  boom.on('drop', () => {
    droppedLines++;
    if (dropping++ === 0) on.dropping();
  });
  let pending = false;
  let closed = false;
  const waiting: Array<(err?: Error) => void> = [];
  const settle = () => {
    pending = false;
    for (const cb of waiting.splice(0)) cb();
  };
  boom.on('drain', settle);
  // Caught up: everything buffered is written ('drain'; after settle, so that the notice written to stdout
  // here counts as pending). Not merely a line taken again: a reader that keeps up only in part would
  // otherwise start and stop an episode (two notices) every few lines.
  boom.on('drain', () => {
    if (dropping === 0) return;
    const lines = dropping;
    dropping = 0;
    on.resumed(lines);
  });
  boom.on('error', (err: NodeJS.ErrnoException) => {
    // Registered after pino's EPIPE filter, which stops the stream; any other error is thrown as before.
    if (err.code !== 'EPIPE') throw err;
    closed = true;
    settle();
  });
  return {
    write(line: string) {
      if (!closed) pending = true;
      // contentMode 'buffer' takes Buffers (its types say string).
      return boom.write(encodeLine(line) as unknown as string);
    },
    flush(cb: (err?: Error) => void) {
      if (!pending || closed) cb();
      else waiting.push(cb);
    },
  };
}

/** Bytes of each slab the stdout lines are encoded into. */
const SLAB_BYTES = 64 * 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let slabUsed = 0;

/**
 * A log line's UTF-8 bytes, in a slab that holds only log lines. Not Buffer.from: its small buffers are
 * slices of Node's shared 8 KB pool, so a line waiting for a blocked reader would keep alive the whole
 * slab with whatever else the call allocated there (tokens, CSRs): measured ~6 KB of memory per waiting
 * line, ten times the line, which would make --log-buffer-bytes a bound on the lines but not on memory.
 * As fast as Buffer.from (one encode, a view); a line longer than a quarter slab gets its own buffer.
 */
function encodeLine(line: string): Buffer {
  const most = line.length * 3; // UTF-8 bytes of one UTF-16 unit, at most (a pair: 4 bytes for 2 units)
  if (most > SLAB_BYTES / 4) {
    const own = Buffer.allocUnsafeSlow(Buffer.byteLength(line));
    own.write(line);
    return own;
  }
  if (SLAB_BYTES - slabUsed < most) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  const start = slabUsed;
  slabUsed += slab.write(line, start);
  return slab.subarray(start, slabUsed);
}
