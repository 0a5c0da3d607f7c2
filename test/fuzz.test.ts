/**
 * Property-based tests (fast-check) of the untrusted-input paths: CSR parsing and checking, the
 * bearer-token path, the duration parser and the request metadata. Never a crash, never an
 * unexpected exception type; a CSR whose signature no longer verifies is never accepted.
 */
import fc from 'fast-check';
import * as pkijs from 'pkijs';
import { describe, expect, it } from 'vitest';
import { AuthError, JwtAuthenticator, bearerToken } from '../src/auth/index.js';
import { formatGoDuration, parseDuration } from '../src/duration.js';
import { buildCsrPem, CsrError, decodePem, encodePem, generateKeyPair, parseCsrDer, parseCsrPem } from '../src/pki/index.js';
import { RequestError } from '../src/server/index.js';
import { readRequestMetadata, readValidityDuration } from '../src/server/metadata.js';
import { createTestIssuer } from './helpers/server.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const validCsrs = (['ec-p256', 'ec-p384', 'rsa-2048'] as const).map((k) => decodePem(buildCsrPem({ privateKey: generateKeyPair(k).privateKey, sans: [{ type: 'uri', value: ID }] }))[0]!.der);

/** Runs fn; returns the error if it threw one. */
function outcome(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err;
  }
}

describe('CSR parser', () => {
  it('random bytes and random PEM text: only CsrError, never a crash', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        const err = outcome(() => parseCsrDer(Buffer.from(bytes)));
        expect(err).toBeInstanceOf(CsrError);
        const pemErr = outcome(() => parseCsrPem(encodePem('CERTIFICATE REQUEST', Buffer.from(bytes))));
        expect(pemErr).toBeInstanceOf(CsrError);
      }),
      { numRuns: 400 },
    );
    fc.assert(fc.property(fc.string({ maxLength: 3000 }), (text) => {
      const err = outcome(() => parseCsrPem(text));
      expect(err === undefined || err instanceof CsrError).toBe(true);
    }), { numRuns: 400 });
  });

  it('mutated valid CSRs: either rejected with CsrError or, if accepted, the signature still verifies over unchanged signed bytes', () => {
    fc.assert(
      fc.property(fc.constantFrom(...validCsrs), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), (der, flips) => {
        const mutated = Buffer.from(der);
        for (const [pos, x] of flips) mutated[pos % mutated.length] = mutated[pos % mutated.length]! ^ x;
        const err = outcome(() => parseCsrDer(mutated));
        if (err === undefined) {
          // Accepted: then the mutation must have left the signed content and signature intact in meaning
          // (e.g. a flip in an unused bit); re-parsing the original gives the same key and SANs.
          const a = parseCsrDer(mutated);
          const b = parseCsrDer(der);
          expect(a.publicKeyDer.equals(b.publicKeyDer)).toBe(true);
          expect(a.sans).toEqual(b.sans);
        } else {
          expect(err).toBeInstanceOf(CsrError);
        }
      }),
      { numRuns: 600 },
    );
  });

  it('a flipped byte inside the signed part or the signature is never accepted', () => {
    // Where the signed bytes (CertificationRequestInfo) and the signature value lie in each CSR.
    const regions = new Map(
      validCsrs.map((der) => {
        const csr = pkijs.CertificationRequest.fromBER(der);
        const tbsStart = der.indexOf(Buffer.from(csr.tbsView));
        const sig = Buffer.from(csr.signatureValue.valueBlock.valueHexView);
        return [der, { tbsStart, tbsEnd: tbsStart + csr.tbsView.length, sigStart: der.length - sig.length }] as const;
      }),
    );
    fc.assert(
      fc.property(fc.constantFrom(...validCsrs), fc.nat(), fc.integer({ min: 1, max: 255 }), (der, pos, x) => {
        const r = regions.get(der)!;
        const signedOrSignature = r.tbsEnd - r.tbsStart + (der.length - r.sigStart);
        const k = pos % signedOrSignature;
        const at = k < r.tbsEnd - r.tbsStart ? r.tbsStart + k : r.sigStart + (k - (r.tbsEnd - r.tbsStart));
        const mutated = Buffer.from(der);
        mutated[at] = mutated[at]! ^ x;
        expect(outcome(() => parseCsrDer(mutated))).toBeInstanceOf(CsrError);
      }),
      { numRuns: 600 },
    );
  });
});

/** True when both are three base64url segments that decode to the same bytes (the same signed JWT). */
function decodesLike(token: string, good: string): boolean {
  const a = token.split('.');
  const b = good.split('.');
  return a.length === 3 && b.length === 3 && a.every((seg, i) => /^[A-Za-z0-9_-]*$/.test(seg) && Buffer.from(seg, 'base64url').equals(Buffer.from(b[i]!, 'base64url')));
}

describe('token path', () => {
  it('random authorization headers: bearerToken returns a token, undefined, or throws AuthError', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 200 }), { maxLength: 3 }), (values) => {
        const err = outcome(() => bearerToken({ authorization: values, clusterId: [] }));
        expect(err === undefined || err instanceof AuthError).toBe(true);
      }),
    );
  });

  it('random and mangled tokens through the JWT authenticator: only AuthError("unauthenticated")', async () => {
    const issuer = await createTestIssuer();
    const auth = new JwtAuthenticator({ issuer: issuer.issuer, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: issuer.jwksFile });
    const good = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 300 }),
          fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 1 })).map(([pos, ch]) => {
            const i = pos % good.length;
            return good.slice(0, i) + ch + good.slice(i + 1);
          }),
          fc.base64String({ maxLength: 200 }).map((b) => `${b}.${b}.${b}`),
        ),
        async (token) => {
          if (token === good || token.trim() === '') return;
          let err: unknown;
          try {
            await auth.authenticate({ authorization: [`Bearer ${token}`], clusterId: [] });
          } catch (e) {
            err = e;
          }
          // A mutation may hit the unused low bits of a segment's last base64url character and leave the
          // token byte-identical once decoded; any other accepted mangling is a verification hole.
          if (err === undefined) {
            expect(decodesLike(token, good), `a mangled token was accepted: ${token}`).toBe(true);
            return;
          }
          expect(err).toBeInstanceOf(AuthError);
          expect((err as AuthError).failure).toBe('unauthenticated');
          if (token.length >= 12) expect((err as AuthError).message).not.toContain(token.slice(0, 40));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('duration parser', () => {
  it('never throws; accepted text gives a finite non-negative number of milliseconds', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (text) => {
        const ms = parseDuration(text);
        if (ms !== undefined) expect(Number.isFinite(ms) && ms >= 0).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('formatGoDuration and parseDuration round-trip whole seconds', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 ** 9 }), (seconds) => {
        expect(parseDuration(formatGoDuration(seconds * 1000))).toBe(seconds * 1000);
      }),
    );
  });

  it('validity_duration: any int64 string parses without overflow; other text is INVALID_ARGUMENT', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (v) => {
        expect(readValidityDuration(v.toString())).toBe(v);
      }),
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 30 }), (text) => {
        const err = outcome(() => readValidityDuration(text));
        expect(err === undefined || err instanceof RequestError).toBe(true);
      }),
    );
  });
});

describe('request metadata', () => {
  const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.record({ stringValue: fc.string({ maxLength: 600 }) }),
      fc.record({ numberValue: fc.double() }),
      fc.record({ boolValue: fc.boolean() }),
      fc.record({ structValue: tie('struct') }),
      fc.record({ listValue: fc.record({ values: fc.array(tie('value'), { maxLength: 4 }) }) }),
    ),
    struct: fc.record({ fields: fc.dictionary(fc.string({ maxLength: 20 }), tie('value'), { maxKeys: 5 }) }),
  })).value;

  it('any Struct: Istio keys read out, or INVALID_ARGUMENT for depth/size, never another error', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 20 }), value, { maxKeys: 6 }), (fields) => {
        const err = outcome(() => readRequestMetadata({ fields } as never));
        if (err !== undefined) {
          expect(err).toBeInstanceOf(RequestError);
          expect((err as RequestError).message).toMatch(/deeper than|larger than/);
        }
      }),
      { numRuns: 500 },
    );
  });
});
