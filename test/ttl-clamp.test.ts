/**
 * A leaf never outlives its signer (RFC 5280 path validation would reject it; Istio clamps the same way).
 * A second guard beside create-certificate.test.ts's "clamps NotAfter to the signer NotAfter", independent of
 * it: the rule itself as a property of grantValidity over any request and signer lifetime, and the server's
 * default-TTL branch (validity_duration 0) with the clamp's counter and audit record, the leaf checked by
 * Node's X509Certificate and `openssl verify -attime`.
 */
import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grantValidity, TtlError, type TtlPolicy } from '../src/ca/index.js';
import type { CaClient } from '../src/client/index.js';
import { buildCsrPem, CLOCK_SKEW_GRACE_MS, generateKeyPair } from '../src/pki/index.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts, type TestCa } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, type TestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const HOUR = 3600_000;
const ID = 'spiffe://cluster.local/ns/demo/sa/web';

describe('grantValidity: NotAfter is the earlier of now + TTL and the signer NotAfter', () => {
  const policy: TtlPolicy = { defaultTtlMs: 24 * HOUR, maxTtlMs: 90 * 24 * HOUR };
  const now = new Date('2026-01-01T00:00:00Z');

  it('holds for any request up to the max TTL and any signer lifetime', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -10n, max: BigInt(policy.maxTtlMs / 1000) }),
        fc.integer({ min: 1, max: 200 * 24 * 3600 }),
        (requestedSeconds, signerLeftSeconds) => {
          const signerNotAfter = new Date(now.getTime() + signerLeftSeconds * 1000);
          const v = grantValidity(policy, requestedSeconds, signerNotAfter, now);
          const ttlMs = requestedSeconds <= 0n ? policy.defaultTtlMs : Number(requestedSeconds) * 1000;
          const wanted = now.getTime() + ttlMs;
          expect(v.notAfter.getTime()).toBe(Math.min(wanted, signerNotAfter.getTime()));
          expect(v.notAfter.getTime()).toBeLessThanOrEqual(signerNotAfter.getTime());
          expect(v.clamped).toBe(wanted > signerNotAfter.getTime());
          expect(v.grantedMs).toBe(v.notAfter.getTime() - now.getTime());
          expect(v.notBefore.getTime()).toBe(now.getTime() - CLOCK_SKEW_GRACE_MS);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('rejects a request above the max TTL instead of clamping it', () => {
    const farSigner = new Date(now.getTime() + 365 * 24 * HOUR);
    expect(() => grantValidity(policy, BigInt(policy.maxTtlMs / 1000) + 1n, farSigner, now)).toThrow(TtlError);
  });
});

describe('the server clamps a default-TTL leaf to a signer that expires sooner', () => {
  let root: TestCa;
  let signer: TestCa;
  let dir: string;
  let issuer: TestIssuer;
  let server: TestServer;
  let client: CaClient;

  beforeAll(async () => {
    root = makeRoot();
    // The default TTL is 24 h; this signer has 3 h left.
    signer = makeIntermediate(root, { notAfter: new Date(Date.now() + 3 * HOUR) });
    dir = writeCacerts(tempDir(), { signer, roots: [root] });
    issuer = await createTestIssuer();
    server = await startTestServer({ cacerts: dir, issuer });
    client = clientFor(server, root.certPem);
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
    if (dir) removeDir(dir);
  });

  it('issues a leaf ending with the signer, counts the clamp and records the granted TTL', async () => {
    const clampedBefore = await clampedCount(server);
    const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }], subjectOrganization: '' });
    const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web', pod: 'web-1' });
    const { res, err } = await call(client, { csr, validity_duration: '0' }, { authorization: `Bearer ${token}` });
    expect(err).toBeUndefined();
    const leafPem = res!.cert_chain[0]!;
    const leaf = new X509Certificate(leafPem);
    expect(new Date(leaf.validTo).getTime()).toBe(new Date(signer.cert.validTo).getTime());
    // Valid just before the signer's end, by OpenSSL's own clock handling.
    const lastSecond = Math.floor(new Date(signer.cert.validTo).getTime() / 1000) - 60;
    expect(opensslVerify(root.certPem, [signer.certPem], leafPem, ['-attime', String(lastSecond)])).toContain('OK');
    expect(await clampedCount(server)).toBe(clampedBefore + 1);
    const audit = server.logs.records().filter((l) => l.msg === 'certificate issued').at(-1)?.audit as Record<string, unknown> | undefined;
    expect(audit?.grantedTtlSeconds).toBeLessThanOrEqual(3 * 3600);
    expect(audit?.grantedTtlSeconds).toBeGreaterThan(3 * 3600 - 120);
  });
});

async function clampedCount(server: TestServer): Promise<number> {
  const text = await server.service.metrics.registry.getSingleMetricAsString('svid_ca_ttl_clamped_total');
  const m = /^svid_ca_ttl_clamped_total (\d+)$/m.exec(text);
  if (!m) throw new Error(`svid_ca_ttl_clamped_total not in the registry:\n${text}`);
  return Number(m[1]);
}
