/**
 * Issue #14: the fast path's request metadata (src/server/header-metadata.ts) against grpc-js's own
 * `Metadata.fromHttp2Headers`, over generated HTTP/2 header sets: the same `get(key)` answer for every
 * key (upper-case spellings too), and the same grpc-js log lines (a header grpc-js finds illegal is
 * left out and logged once).
 */
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { headerMetadata } from '../src/server/header-metadata.js';

const logged: string[] = [];
grpc.setLogger({ error: (...args: unknown[]) => logged.push(args.map(String).join(' ')) } as unknown as Console);
afterAll(() => grpc.setLogger(console));

/** The log lines `fn` makes grpc-js write. */
function logOf(fn: () => unknown): string[] {
  logged.length = 0;
  fn();
  return [...logged];
}

const KEYS = [
  ':path', ':authority', ':method', 'authorization', 'clusterid', 'content-type', 'te', 'user-agent', 'grpc-timeout',
  'grpc-accept-encoding', 'x-trace-bin', 'grpc-status-details-bin', 'grpcx-bin', 'x-bin', 'a.b_c-d', 'Authorization', 'x@y', 'x y', 'ü',
  '__proto__', 'constructor', 'toString', 'hasOwnProperty', '',
];
const key = fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 }));
const text = fc.oneof(
  fc.constantFrom('Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln', 'Kubernetes', 'a, b,c', ' AQID , BAUG ', 'AQID,', ',', '', ' ', 'é', 'tab\there', 'bad\u0000', '~!', 'QUJD=='),
  fc.string({ maxLength: 24 }),
  fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b).toString('base64')),
);
const value = fc.oneof(text, fc.array(text, { maxLength: 3 }));
const headerSet = fc.array(fc.tuple(key, value), { maxLength: 10 }).map((entries) => {
  // node:http2 hands a null-prototype object of lower-case names; upper-case and odd names are kept here too.
  const headers = Object.create(null) as Record<string, string | string[]>;
  for (const [k, v] of entries) headers[k] = v;
  return headers;
});

const shown = (values: (string | Buffer)[]) => values.map((v) => (Buffer.isBuffer(v) ? `buffer:${v.toString('hex')}` : `string:${v}`));

describe('headerMetadata against grpc-js Metadata.fromHttp2Headers', () => {
  it('the same get(key) for every key and the same grpc-js log lines, over generated header sets', () => {
    fc.assert(
      fc.property(headerSet, (headers) => {
        let reference!: grpc.Metadata;
        let ours!: ReturnType<typeof headerMetadata>;
        const referenceLog = logOf(() => (reference = grpc.Metadata.fromHttp2Headers(headers)));
        const ourLog = logOf(() => (ours = headerMetadata(headers)));
        expect(ourLog).toEqual(referenceLog);
        for (const k of [...KEYS, ...Object.keys(headers), ...Object.keys(headers).map((h) => h.toUpperCase())]) {
          expect(shown(ours.get(k))).toEqual(shown(reference.get(k)));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('the generators reach both sides: header sets grpc-js takes whole and ones it logs', () => {
    let clean = 0;
    let withLog = 0;
    fc.assert(
      fc.property(headerSet, (headers) => {
        if (logOf(() => grpc.Metadata.fromHttp2Headers(headers)).length === 0) clean++;
        else withLog++;
      }),
      { numRuns: 500 },
    );
    expect(clean).toBeGreaterThan(50);
    expect(withLog).toBeGreaterThan(50);
  });

  it('a typical Istio call: token and clusterid as strings, reserved headers hidden, a -bin list split and decoded', () => {
    const headers = Object.assign(Object.create(null), {
      ':path': '/istio.v1.auth.IstioCertificateService/CreateCertificate',
      'content-type': 'application/grpc',
      authorization: 'Bearer abc.def.ghi',
      clusterid: 'Kubernetes',
      'x-trace-bin': 'AQID, BAUG',
    }) as Record<string, string>;
    const md = headerMetadata(headers);
    expect(md).not.toBeInstanceOf(grpc.Metadata);
    expect(md.get('Authorization')).toEqual(['Bearer abc.def.ghi']);
    expect(md.get('clusterid')).toEqual(['Kubernetes']);
    expect(md.get(':path')).toEqual([]);
    expect(md.get('x-trace-bin')).toEqual([Buffer.from([1, 2, 3]), Buffer.from([4, 5, 6])]);
    expect(md.get('absent')).toEqual([]);
  });
});
