/**
 * --publish-crl-configmap (issue #16) against a local fake Kubernetes API server: the real svid-ca
 * service keeps ConfigMap istio-ca-crl (key ca-crl.pem) equal to the cacerts folder's ca-crl.pem in
 * every selected namespace, reverts drift, publishes into new namespaces, empties (never deletes)
 * the ConfigMaps when ca-crl.pem leaves the folder through a Kubernetes `..data` swap, reports
 * svid_ca_crl_configmaps, and only the Lease holder writes. CRLs are made by `openssl ca -gencrl`
 * and checked by `openssl crl -CAfile` as published.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { opensslCrl } from './helpers/openssl-crl.js';
import { loadCacerts } from '../src/ca/index.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts, type TestCa } from './helpers/pki.js';
import { createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const CM = 'istio-ca-crl';
const KEY = 'ca-crl.pem';
const ROOT_CM = 'istio-ca-root-cert';
const LEASE_TIMING = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 150 };
const PUBLISHED = ['default', 'kube-system', 'istio-system', 'demo'];
const SKIPPED = ['kube-public', 'kube-node-lease', 'local-path-storage'];

let root: TestCa;
let signer: TestCa;
/** A retired intermediate of the same root, revoked by the CRL (the signer itself is never revoked). */
let retired: TestCa;
let crlPem: string;
let signerCrlPem: string;
const dirs: string[] = [];
const servers: TestServer[] = [];
const fakes: FakeKubeApi[] = [];

beforeAll(() => {
  root = makeRoot({ cn: 'crl test root' });
  signer = makeIntermediate(root, { cn: 'current intermediate' });
  retired = makeIntermediate(root, { cn: 'compromised intermediate' });
  const work = tempDir('svid-ca-crl-');
  dirs.push(work);
  const signerWork = tempDir('svid-ca-crl-signer-');
  dirs.push(signerWork);
  // A CRL at every level (issue #16): the root's, revoking the retired intermediate, then the signer's own (empty).
  signerCrlPem = opensslCrl(signerWork, signer);
  crlPem = opensslCrl(work, root, [retired]) + signerCrlPem;
});

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const f of fakes.splice(0)) await f.close();
});

afterAll(() => {
  for (const d of dirs) removeDir(d);
});

async function newFake(): Promise<FakeKubeApi> {
  const fake = await FakeKubeApi.start();
  fakes.push(fake);
  for (const ns of [...PUBLISHED, ...SKIPPED]) fake.addNamespace(ns);
  fake.addNamespace('going-away', undefined, 'Terminating');
  return fake;
}

/** A cacerts Secret volume (Istio layout) with or without ca-crl.pem. */
function cacertsVolume(crl: string | undefined): SecretVolume {
  const dir = tempDir('svid-ca-cacerts-');
  dirs.push(dir);
  const volume = new SecretVolume(dir);
  volume.write({ ...istioFiles(signer, [root]), ...(crl !== undefined ? { [KEY]: crl } : {}) });
  return volume;
}

async function serve(fake: FakeKubeApi, volume: SecretVolume, o: { user?: string; namespaceSelector?: string; root?: boolean } = {}): Promise<TestServer> {
  const server = await startTestServer({
    cacerts: volume.dir,
    issuer: await createTestIssuer(),
    reloadIntervalMs: 500,
    kubernetes: {
      kubeconfig: o.user ? fake.kubeconfigFor(o.user) : fake.kubeconfigPath,
      publishCrlConfigMap: { namespaceSelector: o.namespaceSelector },
      publishRootConfigMap: o.root ? { namespaceSelector: o.namespaceSelector } : undefined,
      leaderElectionNamespace: 'istio-system',
      leaseTiming: LEASE_TIMING,
    },
  });
  servers.push(server);
  return server;
}

const published = (fake: FakeKubeApi) => fake.list('configmaps').filter((c) => c.metadata.name === CM);
const allHold = (fake: FakeKubeApi, value: string, namespaces = PUBLISHED) =>
  namespaces.every((ns) => {
    const cm = fake.get('configmaps', ns, CM);
    return cm?.data?.[KEY] === value && Object.keys(cm.data).length === 1 && cm.metadata.labels?.['istio.io/config'] === 'true';
  });
const gauge = async (s: TestServer) => {
  const text = await s.service.metrics.registry.getSingleMetricAsString('svid_ca_crl_configmaps');
  const v = (state: string) => Number(new RegExp(`svid_ca_crl_configmaps\\{state="${state}"\\} (\\d+)`).exec(text)?.[1] ?? NaN);
  return { current: v('current'), stale: v('stale') };
};
/** ConfigMap writes (where only --publish-crl-configmap is on, every one is a CRL ConfigMap's). */
const crlWrites = (fake: FakeKubeApi) => fake.requests.filter((r) => r.resource === 'configmaps' && (r.method === 'POST' || r.method === 'PUT'));

/** openssl's own reading of a published CRL: its signature verifies against the root, and the serials it revokes. */
function opensslReadsCrl(pem: string): { verified: boolean; text: string } {
  const dir = tempDir('svid-ca-crl-check-');
  dirs.push(dir);
  writeFileSync(join(dir, 'crl.pem'), pem);
  writeFileSync(join(dir, 'root.pem'), root.certPem);
  // openssl crl exits 0 either way; it reports the signature check as "verify OK" or "verify failure".
  const r = spawnSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-CAfile', join(dir, 'root.pem'), '-noout', '-text'], { encoding: 'utf8' });
  return { verified: /^verify OK$/m.test(`${r.stdout}${r.stderr}`), text: r.stdout };
}

describe('what is published: SigningBundle.crlPem', () => {
  it('is ca-crl.pem verbatim in the Istio layout, and empty without the file or in the Kubernetes TLS layout (which has no CRL, as in istiod)', () => {
    const istio = writeCacerts(tempDir(), { signer, roots: [root] });
    const tls = writeCacerts(tempDir(), { signer, roots: [root], layout: 'kubernetes-tls' });
    dirs.push(istio, tls);
    expect(loadCacerts(istio).crlPem).toBe('');
    writeFileSync(join(istio, KEY), crlPem);
    writeFileSync(join(tls, KEY), crlPem);
    expect(loadCacerts(istio).crlPem).toBe(crlPem);
    expect(loadCacerts(tls).layout).toBe('kubernetes-tls');
    expect(loadCacerts(tls).crlPem).toBe('');
  });
});

describe('CRL ConfigMap publication (--publish-crl-configmap) against a local fake Kubernetes API server', () => {
  it('publishes ca-crl.pem verbatim as istio-ca-crl in every namespace istiod would use, reverts drift, serves new namespaces', async () => {
    const fake = await newFake();
    const server = await serve(fake, cacertsVolume(crlPem));
    expect(server.service.authority.bundle.crlPem).toBe(crlPem);
    await waitFor('every namespace to carry the CRL', () => allHold(fake, crlPem));
    expect(published(fake).map((c) => c.metadata.namespace).sort()).toEqual([...PUBLISHED].sort());
    // Only the CRL was asked for: no root ConfigMap.
    expect(fake.list('configmaps').filter((c) => c.metadata.name === ROOT_CM)).toEqual([]);
    // What a client reads from the ConfigMap is the CRL openssl made: signed by the root, revoking the retired intermediate.
    const serial = BigInt(`0x${retired.cert.serialNumber}`).toString(16).toUpperCase();
    const read = opensslReadsCrl(fake.get('configmaps', 'demo', CM).data[KEY]);
    expect(read.verified).toBe(true);
    expect(read.text).toContain('Certificate Revocation List');
    expect(read.text.replace(/:/g, '').toUpperCase()).toContain(serial);
    await waitFor('the gauge to count every namespace current', async () => (await gauge(server)).current === PUBLISHED.length);
    expect(await gauge(server)).toEqual({ current: PUBLISHED.length, stale: 0 });

    fake.addNamespace('late');
    await waitFor('the new namespace to get the CRL ConfigMap', () => allHold(fake, crlPem, ['late']));
    const cm = fake.get('configmaps', 'demo', CM);
    fake.put('configmaps', { ...cm, data: { [KEY]: '', extra: 'x' }, metadata: { ...cm.metadata, labels: {} } });
    await waitFor('the edit to be reverted', () => allHold(fake, crlPem, ['demo']));
    fake.remove('configmaps', 'default', CM);
    await waitFor('the deleted ConfigMap to be recreated', () => allHold(fake, crlPem, ['default']));
    await waitFor('the gauge to count every namespace current', async () => (await gauge(server)).current === PUBLISHED.length + 1);
    expect(await gauge(server)).toEqual({ current: PUBLISHED.length + 1, stale: 0 });
  });

  it('removing ca-crl.pem (a ..data swap) empties every istio-ca-crl ConfigMap, key kept, none deleted; a new CRL is published again', async () => {
    const fake = await newFake();
    const volume = cacertsVolume(crlPem);
    const server = await serve(fake, volume, { root: true });
    const roots = server.service.authority.bundle.rootsPem;
    await waitFor('every namespace to carry the CRL', () => allHold(fake, crlPem));
    const uids = new Map(PUBLISHED.map((ns) => [ns, fake.get('configmaps', ns, CM).metadata.uid as string]));

    volume.write(istioFiles(signer, [root]));
    await waitFor('the reload to drop the CRL', () => server.service.authority.bundle.crlPem === '', 20_000);
    await waitFor('every CRL ConfigMap to be emptied', () => allHold(fake, ''));
    for (const ns of PUBLISHED) {
      const cm = fake.get('configmaps', ns, CM);
      expect(Object.keys(cm.data), ns).toEqual([KEY]);
      expect(cm.metadata.uid, `${ns}: updated in place, not deleted and recreated`).toBe(uids.get(ns));
    }
    expect(fake.requests.filter((r) => r.resource === 'configmaps' && r.method === 'DELETE')).toEqual([]);
    // The root ConfigMaps did not move.
    expect(PUBLISHED.every((ns) => fake.get('configmaps', ns, ROOT_CM)?.data?.['root-cert.pem'] === roots)).toBe(true);
    await waitFor('the gauge to count the emptied ConfigMaps current', async () => (await gauge(server)).current === PUBLISHED.length);
    expect(await gauge(server)).toEqual({ current: PUBLISHED.length, stale: 0 });

    const work = tempDir('svid-ca-crl-next-');
    dirs.push(work);
    const next = opensslCrl(work, root, [retired, makeIntermediate(root, { cn: 'another compromised intermediate' })]) + signerCrlPem;
    volume.write({ ...istioFiles(signer, [root]), [KEY]: next });
    await waitFor('the new CRL to be published', () => allHold(fake, next), 20_000);
  });

  it('a folder that never had a CRL publishes istio-ca-crl with an empty ca-crl.pem, as istiod does', async () => {
    const fake = await newFake();
    const server = await serve(fake, cacertsVolume(undefined));
    expect(server.service.authority.bundle.crlPem).toBe('');
    await waitFor('every namespace to carry an empty CRL ConfigMap', () => allHold(fake, ''));
    expect(published(fake).map((c) => c.metadata.namespace).sort()).toEqual([...PUBLISHED].sort());
    await waitFor('the gauge', async () => (await gauge(server)).current === PUBLISHED.length);
  });

  it('--root-configmap-namespace-selector selects the namespaces of the CRL ConfigMaps too', async () => {
    const fake = await newFake();
    fake.addNamespace('mesh-a', { 'istio-injection': 'enabled' });
    fake.addNamespace('mesh-b', { 'istio-injection': 'enabled' });
    await serve(fake, cacertsVolume(crlPem), { namespaceSelector: 'istio-injection=enabled' });
    await waitFor('the selected namespaces to get the CRL ConfigMap', () => allHold(fake, crlPem, ['mesh-a', 'mesh-b']));
    expect(published(fake).map((c) => c.metadata.namespace).sort()).toEqual(['mesh-a', 'mesh-b']);
    expect(fake.requests.find((r) => r.resource === 'namespaces')?.query.labelSelector).toBe('istio-injection=enabled');
    expect(fake.requests.find((r) => r.resource === 'configmaps' && r.method === 'GET')?.query.fieldSelector).toBe(`metadata.name=${CM}`);
  });

  it('only the Lease holder writes CRL ConfigMaps; the other replica takes over when it stops', async () => {
    const fake = await newFake();
    const volume = cacertsVolume(crlPem);
    const a = await serve(fake, volume, { user: 'replica-a' });
    await waitFor('replica a to lead', () => a.service.kube!.leader!.isLeader());
    await waitFor('initial publication', () => allHold(fake, crlPem));
    const b = await serve(fake, volume, { user: 'replica-b' });
    await waitFor('replica b to have tried the lease a few times', () => fake.requests.filter((r) => r.user === 'replica-b' && r.resource === 'leases').length >= 4);
    await waitFor('replica b caches to sync', async () => !Number.isNaN((await gauge(b)).current));
    expect(b.service.kube!.leader!.isLeader()).toBe(false);
    const cm = fake.get('configmaps', 'demo', CM);
    fake.put('configmaps', { ...cm, data: { [KEY]: '' } });
    await waitFor('the edit to be reverted', () => allHold(fake, crlPem, ['demo']));
    expect(new Set(crlWrites(fake).map((w) => w.user))).toEqual(new Set(['replica-a']));

    await a.close();
    servers.splice(servers.indexOf(a), 1);
    await waitFor('replica b to take over', () => b.service.kube!.leader!.isLeader());
    const c2 = fake.get('configmaps', 'istio-system', CM);
    fake.put('configmaps', { ...c2, data: { [KEY]: 'tampered' } });
    await waitFor('the new leader to revert the edit', () => allHold(fake, crlPem, ['istio-system']));
    expect(crlWrites(fake).filter((w) => w.user === 'replica-b').length).toBeGreaterThan(0);
  });
});
