/**
 * The audit lines (issue #14): AuditLog builds each line itself (one JSON.stringify of the record) from
 * the server logger's own pieces and writes it to that logger's destination, without the redaction
 * paths, which can never match an audit record's keys. These tests hold every audit line byte-equal
 * (time included, under a fixed clock) to what the redacting logger itself writes for the same record,
 * and show the redaction still works on that logger.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AuditLog, createLogger, REDACT_PATHS, type AuditRecord } from '../src/observability/index.js';

/** A pino destination that keeps the lines, written synchronously. */
function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { stream, lines };
}

const withoutTime = (line: string) => line.replace(/"time":"[^"]*",/, '');

/** A record with every field of AuditRecord set. */
const FULL: AuditRecord = {
  event: 'issued',
  identity: 'spiffe://cluster.local/ns/a/sa/b',
  namespace: 'a',
  serviceAccount: 'b',
  pod: 'b-pod',
  impersonatedIdentity: 'spiffe://cluster.local/ns/a/sa/c',
  clusterId: 'Kubernetes',
  requestedTtlSeconds: 3600,
  grantedTtlSeconds: 3600,
  serial: '0a1b',
  notAfter: '2026-12-01T00:00:00.000Z',
  signerSki: 'beef',
  code: 'OK',
  reason: 'token has expired; "quoted" \\ text',
  durationMs: 1.25,
};

describe('audit lines', () => {
  it('no key of an audit record is a redaction path, so redaction cannot change an audit line', () => {
    const redacted = new Set(REDACT_PATHS.map((p) => p.split('.').pop()));
    for (const key of Object.keys(FULL)) expect(redacted.has(key), key).toBe(false);
    expect(redacted.has('audit')).toBe(false);
  });

  it('writes each record as the redacting logger writes it, for a plain and a worker (child) logger', () => {
    for (const child of [false, true]) {
      const a = capture();
      const b = capture();
      const base = (s: Writable) => (child ? createLogger('info', s).child({ worker: 2 }) : createLogger('info', s));
      const audit = new AuditLog(base(a.stream));
      const reference = base(b.stream);
      const denied: AuditRecord = { event: 'denied', identity: FULL.identity, code: 'PERMISSION_DENIED', reason: 'CSR asks for DNS SAN "x"', durationMs: 0.5 };
      audit.record(FULL);
      audit.record(denied);
      audit.record(denied, 'request failed unexpectedly');
      reference.info({ audit: FULL }, 'certificate issued');
      reference.info({ audit: denied }, 'certificate denied');
      reference.info({ audit: denied }, 'request failed unexpectedly');
      expect(a.lines).toHaveLength(3);
      expect(a.lines.map(withoutTime)).toEqual(b.lines.map(withoutTime));
      expect(JSON.parse(a.lines[0]!).audit).toEqual(FULL);
    }
  });

  afterEach(() => vi.useRealTimers());

  /** Records with optional fields left undefined, strings JSON must escape, and denials. */
  const VARIED: Array<[AuditRecord, string | undefined]> = [
    [FULL, undefined],
    [{ event: 'issued', identity: 'spiffe://td/ns/x/sa/y', namespace: undefined, serviceAccount: 'y', pod: undefined, serial: '01', code: 'OK', durationMs: 3 }, undefined],
    [{ event: 'denied', code: 'UNAUTHENTICATED', reason: 'line\nbreak\ttab\u0001ctl "q" \\ back', durationMs: 0 }, undefined],
    [{ event: 'denied', identity: undefined, code: 'INVALID_ARGUMENT', reason: 'x'.repeat(150) + '"', durationMs: 12.000001 }, 'certificate denied'],
    [{ event: 'denied', pod: 'p\u00e9d-\u4e2d\ud83d\ude00', reason: 'lone \ud800 surrogate \u2028 sep', code: 'INTERNAL', durationMs: 1e-7 }, 'request failed unexpectedly'],
    [{ event: 'issued', clusterId: '', requestedTtlSeconds: 0, grantedTtlSeconds: 86400, code: 'OK', durationMs: 0.1 }, 'certificate issued'],
  ];

  it('is byte-equal to the logger\'s own line, time included, for varied records and bindings', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-11-30T12:34:56.789Z'));
    const loggers = [
      (s: Writable) => createLogger('info', s),
      (s: Writable) => createLogger('info', s).child({ worker: 2 }),
      (s: Writable) => createLogger('debug', s).child({ worker: 7, zone: 'a"b' }).child({ nested: true }),
    ];
    for (const make of loggers) {
      const a = capture();
      const b = capture();
      const audit = new AuditLog(make(a.stream));
      const reference = make(b.stream);
      for (const [record, message] of VARIED) {
        audit.record(record, message);
        reference.info({ audit: record }, message ?? (record.event === 'issued' ? 'certificate issued' : 'certificate denied'));
      }
      expect(a.lines).toHaveLength(VARIED.length);
      expect(a.lines).toEqual(b.lines);
      const first = JSON.parse(a.lines[0]!);
      expect(Object.keys(first).slice(0, 3)).toEqual(['level', 'time', 'service']);
      expect(first.service).toBe('svid-ca');
      expect(first.time).toBe('2026-11-30T12:34:56.789Z');
      expect(a.lines[1]).not.toContain('namespace');
    }
  });

  it('honours the logger\'s level and bindings at each line', () => {
    const a = capture();
    const logger = createLogger('warn', a.stream).child({ worker: 1 });
    const audit = new AuditLog(logger);
    audit.record(FULL);
    expect(a.lines).toHaveLength(0);
    logger.level = 'info';
    logger.setBindings({ worker: 3 });
    audit.record(FULL);
    expect(a.lines).toHaveLength(1);
    expect(JSON.parse(a.lines[0]!).worker).toBe(3);
  });

  it("keeps pino's own path for a logger whose options change lines (a mixin)", () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-11-30T12:34:56.789Z'));
    const a = capture();
    const b = capture();
    const make = (s: Writable) => pino({ base: { service: 'svid-ca' }, timestamp: pino.stdTimeFunctions.isoTime, mixin: () => ({ mixed: 1 }) }, s);
    const audit = new AuditLog(make(a.stream));
    const reference = make(b.stream);
    for (const [record] of VARIED) {
      audit.record(record);
      reference.info({ audit: record }, record.event === 'issued' ? 'certificate issued' : 'certificate denied');
    }
    expect(a.lines).toEqual(b.lines);
    expect(JSON.parse(a.lines[0]!).mixed).toBe(1);
  });

  it('the server logger still redacts its other lines', () => {
    const a = capture();
    const logger = createLogger('info', a.stream);
    new AuditLog(logger).record(FULL);
    logger.info({ authorization: 'Bearer secret', request: { csr: 'PEM' } }, 'x');
    const line = JSON.parse(a.lines[1]!);
    expect(line.authorization).toBe('[redacted]');
    expect(line.request.csr).toBe('[redacted]');
  });
});
