import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
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
   * The audit lines' logger: `logger` without its redaction paths. Redaction matches keys (logger.ts),
   * and no key of an AuditRecord is one of them, so it could never change an audit line; it only cost
   * a walk and a copy of every record (~5 KB of garbage per certificate, issue #14).
   * test/audit-log.test.ts holds the lines byte-equal to what `logger` writes.
   */
  private readonly lines: Logger;

  constructor(
    private readonly logger: Logger,
    private readonly path?: string | undefined,
  ) {
    if (path) this.fd = openSync(path, 'a', 0o640);
    this.lines = logger.child({}, { redact: [] });
  }

  /** Writes the record; throws AuditWriteError when the audit file cannot take it. */
  record(record: AuditRecord, message = record.event === 'issued' ? 'certificate issued' : 'certificate denied'): void {
    const line = this.path ? JSON.stringify({ time: new Date().toISOString(), ...record }) + '\n' : undefined;
    if (record.event === 'issued') {
      // File first: an issuance whose record cannot be written is turned into a denial by the caller.
      if (line) this.append(line);
      this.lines.info({ audit: record }, message);
      return;
    }
    // A denial reaches the pino log even while the file cannot take it.
    this.lines.info({ audit: record }, message);
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
