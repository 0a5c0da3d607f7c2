/**
 * Issue #14: frameCertificateResponse writes the CreateCertificate answer as one gRPC message; it must
 * be byte for byte the framed output of proto-loader's responseSerialize (the generic path), and
 * decline (undefined) whatever it cannot write that way, leaving it to the generic path.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadServices } from '../src/server/index.js';
import { frameCertificateResponse } from '../src/server/response-frame.js';

const method = () => loadServices().ca.service.CreateCertificate!;

/** What the fast path sent before: the 5-byte prefix, then responseSerialize's bytes. */
function framedGeneric(response: unknown): Buffer {
  const body = method().responseSerialize(response as never);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

const ascii = fc.string({ unit: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), maxLength: 300 });
/** Lengths across every varint width the chain can reach (1, 2 and 3 octets). */
const longAscii = fc.integer({ min: 0, max: 70_000 }).map((n) => 'A'.repeat(n));

describe('frameCertificateResponse', () => {
  it('equals the framed responseSerialize output for ASCII chains of any length', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(ascii, longAscii), { maxLength: 6 }), (chain) => {
        const framed = frameCertificateResponse({ cert_chain: chain });
        expect(framed).toBeDefined();
        expect(Buffer.compare(framed!, framedGeneric({ cert_chain: chain }))).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('equals it for a real PEM chain, with 127/128 and 16383/16384-byte strings at the varint edges', () => {
    const pem = `-----BEGIN CERTIFICATE-----\n${'MIIB'.repeat(200)}\n-----END CERTIFICATE-----\n`;
    for (const chain of [[pem, pem, pem], ['x'.repeat(127), 'x'.repeat(128)], ['y'.repeat(16383), 'y'.repeat(16384)], [''], []]) {
      expect(Buffer.compare(frameCertificateResponse({ cert_chain: chain })!, framedGeneric({ cert_chain: chain }))).toBe(0);
    }
  });

  it('declines what it cannot write as protobufjs does: non-ASCII text, non-strings, other shapes', () => {
    fc.assert(
      fc.property(fc.array(ascii, { maxLength: 3 }), fc.string({ unit: 'binary', minLength: 1 }).filter((s) => /[^\x00-\x7f]/.test(s)), (chain, wide) => {
        expect(frameCertificateResponse({ cert_chain: [...chain, wide] })).toBeUndefined();
      }),
    );
    for (const response of [undefined, null, {}, { cert_chain: 'x' }, { cert_chain: [1] }, { cert_chain: [null] }, { cert_chain: ['\ud800'] }]) {
      expect(frameCertificateResponse(response as never)).toBeUndefined();
    }
  });
});
