/**
 * --istiod-cert-secret against a local fake Kubernetes API server: the Lease holder keeps Secret
 * istiod-tls (kubernetes.io/tls) issued by svid-ca, renewed at half-life and after a bundle change.
 */
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadCacerts } from '../src/ca/index.js';
import { CLOCK_SKEW_GRACE_MS as GRACE_MS, splitCertificatePem } from '../src/pki/index.js';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { makeCacerts, makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const DNS = ['istiod.istio-system.svc', 'istiod-rev.istio-system.svc'];
const LEASE_TIMING = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 150 };

let pki: ReturnType<typeof makeCacerts>;
let fake: FakeKubeApi;
const servers: TestServer[] = [];

async function serve(ttlMs: number): Promise<TestServer> {
  const server = await startTestServer({
    cacerts: pki.dir,
    issuer: await createTestIssuer(),
    kubernetes: {
      kubeconfig: fake.kubeconfigPath,
      istiodCert: { namespace: 'istio-system', name: 'istiod-tls', dnsNames: DNS, ttlMs },
      leaderElectionNamespace: 'istio-system',
      leaseTiming: LEASE_TIMING,
    },
  });
  servers.push(server);
  return server;
}

const decoded = (s: { data: Record<string, string> }) => Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
const secret = () => fake.get('secrets', 'istio-system', 'istiod-tls');
const serialOf = () => {
  const s = secret();
  return s ? new X509Certificate(splitCertificatePem(decoded(s)['tls.crt']!)[0]!).serialNumber : undefined;
};

beforeAll(async () => {
  pki = makeCacerts();
  fake = await FakeKubeApi.start();
  fake.addNamespace('istio-system');
});

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  fake.remove('secrets', 'istio-system', 'istiod-tls');
  fake.remove('leases', 'istio-system', 'svid-ca');
});

afterAll(async () => {
  await fake?.close();
  removeDir(pki.dir);
});

describe('istiod-tls Secret against a local fake Kubernetes API server', () => {
  it('writes a kubernetes.io/tls Secret istiod can use: chain to ca.crt (openssl verify), key matches, DNS names', async () => {
    const server = await serve(24 * 3_600_000);
    await waitFor('the istiod-tls Secret', () => secret() !== undefined);
    const s = secret();
    expect(s.type).toBe('kubernetes.io/tls');
    const data = decoded(s);
    expect(Object.keys(data).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    expect(data['ca.crt']).toBe(server.service.authority.bundle.rootsPem);
    const [leafPem, ...chain] = splitCertificatePem(data['tls.crt']!);
    expect(chain.length).toBeGreaterThan(0);
    expect(opensslVerify(data['ca.crt']!, chain, leafPem!, ['-purpose', 'sslserver'])).toContain('OK');
    const leaf = new X509Certificate(leafPem!);
    expect(leaf.subjectAltName).toBe(DNS.map((d) => `DNS:${d}`).join(', '));
    const der = (k: ReturnType<typeof createPublicKey>) => k.export({ type: 'spki', format: 'der' });
    expect(der(createPublicKey(createPrivateKey(data['tls.key']!))).equals(der(leaf.publicKey))).toBe(true);
  });

  it('leaves a valid Secret alone when svid-ca restarts', async () => {
    const first = await serve(24 * 3_600_000);
    await waitFor('the istiod-tls Secret', () => secret() !== undefined);
    const serial = serialOf();
    await first.close();
    servers.splice(servers.indexOf(first), 1);
    const second = await serve(24 * 3_600_000);
    await waitFor('the new instance to lead', () => second.service.kube!.leader!.isLeader());
    await waitFor('the new leader to read the Secret', () => fake.requests.filter((r) => r.resource === 'secrets' && r.method === 'GET').length >= 2);
    await second.service.kube!.istiodCert!.settled();
    expect(serialOf()).toBe(serial);
  });

  it('re-issues after a bundle change: new ca.crt and a leaf from the new signer', async () => {
    const server = await serve(24 * 3_600_000);
    await waitFor('the istiod-tls Secret', () => secret() !== undefined);
    const before = serialOf();
    const nextRoot = makeRoot({ cn: 'next root' });
    const nextSigner = makeIntermediate(nextRoot, { cn: 'next signer' });
    const nextDir = writeCacerts(tempDir(), { signer: nextSigner, roots: [pki.root, nextRoot] });
    try {
      const next = loadCacerts(nextDir);
      server.service.authority.replaceBundle(next);
      await waitFor('the Secret to carry the new bundle', () => decoded(secret())['ca.crt'] === next.rootsPem);
      expect(serialOf()).not.toBe(before);
      const data = decoded(secret());
      const [leafPem, ...chain] = splitCertificatePem(data['tls.crt']!);
      expect(new X509Certificate(leafPem!).checkIssued(nextSigner.cert)).toBe(true);
      expect(opensslVerify(nextRoot.certPem, chain, leafPem!)).toContain('OK');
    } finally {
      removeDir(nextDir);
    }
  });

  it('renews at half-life', async () => {
    await serve(4_000);
    await waitFor('the istiod-tls Secret', () => secret() !== undefined);
    const first = serialOf();
    const leaf = new X509Certificate(splitCertificatePem(decoded(secret())['tls.crt']!)[0]!);
    await waitFor('a renewed certificate', () => serialOf() !== first, 15_000);
    const renewed = new X509Certificate(splitCertificatePem(decoded(secret())['tls.crt']!)[0]!);
    // Renewed once half of the 4 s lifetime had passed (notBefore is backdated by the clock-skew grace), before expiry.
    const half = new Date(leaf.validTo).getTime() - 2_000;
    expect(new Date(renewed.validFrom).getTime() + GRACE_MS).toBeGreaterThanOrEqual(half);
    expect(new Date(renewed.validFrom).getTime()).toBeLessThan(new Date(leaf.validTo).getTime());
  });
});

describe('istiod-tls when the signer is near expiry (issue #19)', () => {
  it('a certificate that ends with its signer is not rewritten again and again', async () => {
    const root = makeRoot();
    const dir = writeCacerts(tempDir(), { signer: makeIntermediate(root, { notAfter: new Date(Date.now() + 90_000) }), roots: [root] });
    try {
      servers.push(
        await startTestServer({
          cacerts: dir,
          issuer: await createTestIssuer(),
          kubernetes: {
            kubeconfig: fake.kubeconfigPath,
            istiodCert: { namespace: 'istio-system', name: 'istiod-tls', dnsNames: DNS, ttlMs: 3_600_000 },
            leaderElectionNamespace: 'istio-system',
            leaseTiming: LEASE_TIMING,
          },
        }),
      );
      await waitFor('the istiod-tls Secret', () => secret() !== undefined);
      const writes = () => fake.permissions().filter((p) => p.resource === 'secrets' && p.name === 'istiod-tls' && p.verb === 'update').length;
      const before = writes();
      // It ends with the signer (90 s away): renewing cannot extend it, so it is not renewed each second.
      expect(new Date(new X509Certificate(splitCertificatePem(decoded(secret())['tls.crt']!)[0]!).validTo).getTime()).toBeLessThanOrEqual(Date.now() + 90_000);
      await new Promise((r) => setTimeout(r, 3500));
      expect(writes() - before).toBe(0);
    } finally {
      removeDir(dir);
    }
  });
});
