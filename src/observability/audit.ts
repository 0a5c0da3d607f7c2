import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import pino from 'pino';
import type { Logger } from './logger.js';

/** The audit record: one per decision. Never a token, key or CSR. */
export interface AuditRecord {
  event: 'issued' | 'denied';
  identity?: string | undefined;
  namespace?: string | undefined;
  serviceAccount?: string | undefined;
  pod?: string | undefined;
  /** metadata ImpersonatedIdentity, when the caller asked to impersonate (ztunnel). */
  impersonatedIdentity?: string | undefined;
  clusterId?: string | undefined;
  requestedTtlSeconds?: number | undefined;
  grantedTtlSeconds?: number | undefined;
  serial?: string | undefined;
  notAfter?: string | undefined;
  signerSki?: string | undefined;
  code: string;
  reason?: string | undefined;
  durationMs: number;
}

export class AuditWriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditWriteError';
  }
}

/**
 * The audit trail: each record is a pino info line, and with --audit-log also a JSON line appended
 * to a file. File writes are synchronous so that a certificate is only handed out once its record
 * is on disk; after a failed write the file is reopened on the next record, so the log recovers by
 * itself when the disk does.
 */
export class AuditLog {
  private fd: number | undefined;
  private broken: string | undefined;
  /**
   * Writes the audit line to `logger`'s destination, byte-equal to `logger.info({ audit }, message)`
   * (auditLineWriter below; test/audit-log.test.ts holds them equal). No redaction: it matches keys
   * (logger.ts) and no key of an AuditRecord is one of them, so it could never change an audit line.
   */
  private readonly lines: AuditLineWriter;

  constructor(
    private readonly logger: Logger,
    private readonly path?: string | undefined,
  ) {
    if (path) this.fd = openSync(path, 'a', 0o640);
    this.lines = auditLineWriter(logger);
  }

  /** Writes the record; throws AuditWriteError when the audit file cannot take it. */
  record(record: AuditRecord, message = record.event === 'issued' ? 'certificate issued' : 'certificate denied'): void {
    const line = this.path ? JSON.stringify({ time: new Date().toISOString(), ...record }) + '\n' : undefined;
    if (record.event === 'issued') {
      // File first: an issuance whose record cannot be written is turned into a denial by the caller.
      if (line) this.append(line);
      this.lines(record, message);
      return;
    }
    // A denial reaches the pino log even while the file cannot take it.
    this.lines(record, message);
    if (line) this.append(line);
  }

  private append(line: string): void {
    try {
      if (this.fd === undefined) this.fd = openSync(this.path!, 'a', 0o640);
      const buf = Buffer.from(line);
      let off = 0;
      while (off < buf.length) off += writeSync(this.fd, buf, off);
      if (this.broken) {
        this.logger.warn({ file: this.path, after: this.broken }, 'audit log writable again');
        this.broken = undefined;
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (this.fd !== undefined) {
        try {
          closeSync(this.fd);
        } catch {
          // the descriptor is already unusable
        }
      }
      this.fd = undefined;
      if (!this.broken) this.logger.error({ file: this.path, code }, 'audit log write failed: no certificate is issued until it succeeds again');
      this.broken = code;
      throw new AuditWriteError(`audit log cannot be written (${code})`);
    }
  }

  /** Flushes and closes the audit file (at shutdown). */
  close(): void {
    if (this.fd === undefined) return;
    try {
      fsyncSync(this.fd);
    } catch {
      // devices such as /dev/full cannot be synced; nothing more to flush
    }
    closeSync(this.fd);
    this.fd = undefined;
  }
}

const isoTime = pino.stdTimeFunctions.isoTime;
let isoTimeMs = NaN;
let isoTimeText = '';

/** pino.stdTimeFunctions.isoTime's text (`,"time":"<ISO 8601>"`, pino lib/time.js), formatted once per millisecond (~0.35 us each). */
function isoTimeNow(): string {
  const now = Date.now();
  if (now !== isoTimeMs) {
    isoTimeMs = now;
    isoTimeText = `,"time":"${new Date(now).toISOString()}"`;
  }
  return isoTimeText;
}

/** Writes one audit record as the logger's info line `{ audit: record }, message`. */
type AuditLineWriter = (record: AuditRecord, message: string) => void;

/**
 * The audit line, built the way pino builds `logger.info({ audit: record }, message)` (pino 10
 * lib/tools.js asJson: level prefix, time, the logger's bindings, `"audit":` + JSON.stringify(record),
 * `"msg"`, end) from the logger's own pieces (its level prefix, time function, bindings and line
 * end) and written to the logger's own destination, at the logger's level. pino's general path walks
 * the object key by key, copies and formats it (~5.9 KB of garbage and ~4 us per certificate,
 * issue #14); this is one JSON.stringify and one concatenation. Byte-equal to pino's line (held by
 * test/audit-log.test.ts): the record's keys are plain JSON and no key is one the logger redacts
 * (REDACT_PATHS). A logger with options that change lines (mixin, formatters, hooks, message prefix,
 * nested key) or a destination that wants pino's metadata keeps pino's own path.
 * The messages are the callers' fixed ASCII texts, for which JSON.stringify is pino's escaping.
 */
function auditLineWriter(logger: Logger): AuditLineWriter {
  const s = pino.symbols;
  const l = logger as unknown as Record<symbol, unknown>;
  const stream = l[s.streamSym] as { write(line: string): unknown } & Record<symbol, unknown>;
  const formatters = l[s.formattersSym] as { log?: unknown } | undefined;
  const hooks = l[s.hooksSym] as { streamWrite?: unknown; logMethod?: unknown } | undefined;
  const plain =
    !l[s.mixinSym] &&
    !formatters?.log &&
    !hooks?.streamWrite &&
    !hooks?.logMethod &&
    typeof l[(s as unknown as Record<string, symbol>).msgPrefixSym!] !== 'string' &&
    !l[s.nestedKeySym] &&
    !stream[s.needsMetadataGsym] &&
    l[s.messageKeySym] === 'msg' &&
    typeof l[s.timeSym] === 'function';
  if (!plain) {
    const child = logger.child({}, { redact: [] });
    return (record, message) => child.info({ audit: record }, message);
  }
  const info = logger.levels.values.info!;
  const messages = new Map<string, string>();
  return (record, message) => {
    if (!logger.isLevelEnabled('info')) return;
    let msg = messages.get(message);
    if (msg === undefined) {
      msg = ',"msg":' + JSON.stringify(message);
      if (messages.size < 16) messages.set(message, msg);
    }
    // Read at each line, as pino does: setBindings and a level change replace these pieces.
    const timeOf = l[s.timeSym] as () => string;
    const line = (l[s.lsCacheSym] as Record<number, string>)[info]! + (timeOf === isoTime ? isoTimeNow() : timeOf()) + (l[s.chindingsSym] as string) + ',"audit":' + JSON.stringify(record) + msg + (l[s.endSym] as string);
    (l[s.streamSym] as { write(line: string): unknown }).write(line);
  };
}
