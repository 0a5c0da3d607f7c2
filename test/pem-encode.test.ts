/**
 * encodePem (issue #14: 64-character lines sliced in a loop instead of a regex match and join) against
 * the libraries: Node's X509Certificate.toString() (OpenSSL's PEM writer) for real certificates of
 * every key kind, openssl reading it back, and decodePem round trips for every length across the
 * 48-byte (64-character) line boundaries.
 */
import { X509Certificate } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodePem, encodePem } from '../src/pki/index.js';
import { joinedPem } from '../src/pki/pem.js';
import { makeIntermediate, makeRoot, opensslText } from './helpers/pki.js';

describe('encodePem', () => {
  it('writes certificates exactly as OpenSSL does (X509Certificate.toString), and openssl reads them', () => {
    const root = makeRoot({ key: 'rsa-2048' });
    for (const ca of [root, makeIntermediate(root, { key: 'ec-p256' }), makeIntermediate(root, { key: 'ec-p384' }), makeIntermediate(root, { key: 'rsa-3072' })]) {
      const pem = encodePem('CERTIFICATE', ca.cert.raw);
      expect(pem).toBe(new X509Certificate(ca.cert.raw).toString());
      expect(opensslText(pem)).toContain('Certificate:');
    }
  });

  it('frames every length around the line boundaries: 64-character lines, one trailing newline, decodePem round trip', () => {
    for (let len = 0; len <= 200; len++) {
      const der = randomBytes(len);
      const pem = encodePem('TEST BLOCK', der);
      const lines = pem.split('\n');
      expect(lines[0]).toBe('-----BEGIN TEST BLOCK-----');
      expect(lines.at(-2)).toBe('-----END TEST BLOCK-----');
      expect(lines.at(-1)).toBe('');
      const body = lines.slice(1, -2);
      if (len === 0) expect(body).toEqual(['']);
      else {
        expect(body.slice(0, -1).every((l) => l.length === 64)).toBe(true);
        expect(body.at(-1)!.length).toBeGreaterThan(0);
        expect(body.at(-1)!.length).toBeLessThanOrEqual(64);
        expect(body.join('')).toBe(der.toString('base64'));
      }
      expect(decodePem(pem)[0]?.der.equals(der)).toBe(true);
      // A view into a larger buffer encodes only its own bytes.
      const outer = Buffer.concat([Buffer.from([1, 2, 3]), der, Buffer.from([4])]);
      expect(encodePem('TEST BLOCK', outer.subarray(3, 3 + len))).toBe(pem);
    }
  });

  it('equals the line-by-line join for any bytes and label (issue #14: written in one Buffer)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.oneof(fc.constantFrom('CERTIFICATE', 'PRIVATE KEY', 'X509 CRL', ''), fc.string(), fc.string({ unit: 'binary' })), (der, type) => {
        expect(encodePem(type, der)).toBe(joinedPem(type, Buffer.from(der).toString('base64')));
      }),
      { numRuns: 500 },
    );
  });
});
