/**
 * --publish-root-configmap and Lease leader election against a local fake Kubernetes API server:
 * the real svid-ca service keeps istio-ca-root-cert in every namespace, reverts drift, follows a
 * bundle change, reports svid_ca_root_configmaps, and only the Lease holder writes.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadCacerts } from '../src/ca/index.js';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { makeCacerts, makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const CM = 'istio-ca-root-cert';
const LEASE_TIMING = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 150 };
const PUBLISHED = ['default', 'kube-system', 'istio-system', 'demo'];
const SKIPPED = ['kube-public', 'kube-node-lease', 'local-path-storage'];

let pki: ReturnType<typeof makeCacerts>;
const servers: TestServer[] = [];
const fakes: FakeKubeApi[] = [];

async function newFake(): Promise<FakeKubeApi> {
  const fake = await FakeKubeApi.start();
  fakes.push(fake);
  for (const ns of [...PUBLISHED, ...SKIPPED]) fake.addNamespace(ns);
  fake.addNamespace('going-away', undefined, 'Terminating');
  return fake;
}

async function serve(fake: FakeKubeApi, o: { user?: string; namespaceSelector?: string } = {}): Promise<TestServer> {
  const server = await startTestServer({
    cacerts: pki.dir,
    issuer: await createTestIssuer(),
    kubernetes: {
      kubeconfig: o.user ? fake.kubeconfigFor(o.user) : fake.kubeconfigPath,
      publishRootConfigMap: { namespaceSelector: o.namespaceSelector },
      leaderElectionNamespace: 'istio-system',
      leaseTiming: LEASE_TIMING,
    },
  });
  servers.push(server);
  return server;
}

const rootsOf = (s: TestServer) => s.service.authority.bundle.rootsPem;
const published = (fake: FakeKubeApi) => fake.list('configmaps').filter((c) => c.metadata.name === CM);
const allCurrent = (fake: FakeKubeApi, roots: string, namespaces = PUBLISHED) =>
  namespaces.every((ns) => {
    const cm = fake.get('configmaps', ns, CM);
    return cm?.data?.['root-cert.pem'] === roots && Object.keys(cm.data).length === 1 && cm.metadata.labels?.['istio.io/config'] === 'true';
  });
const gauge = async (s: TestServer) => {
  const text = await s.service.metrics.registry.getSingleMetricAsString('svid_ca_root_configmaps');
  const v = (state: string) => Number(new RegExp(`svid_ca_root_configmaps\\{state="${state}"\\} (\\d+)`).exec(text)?.[1] ?? NaN);
  return { current: v('current'), stale: v('stale') };
};
const writes = (fake: FakeKubeApi) => fake.requests.filter((r) => r.resource === 'configmaps' && (r.method === 'POST' || r.method === 'PUT'));

beforeAll(() => {
  pki = makeCacerts();
});

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const f of fakes.splice(0)) await f.close();
});

afterAll(() => removeDir(pki.dir));

describe('root ConfigMap publication against a local fake Kubernetes API server', () => {
  it('creates istio-ca-root-cert in every namespace except kube-public, kube-node-lease, local-path-storage and terminating ones', async () => {
    const fake = await newFake();
    const server = await serve(fake);
    await waitFor('every namespace to carry the root bundle', () => allCurrent(fake, rootsOf(server)));
    expect(published(fake).map((c) => c.metadata.namespace).sort()).toEqual([...PUBLISHED].sort());
    // The gauge reads svid-ca's watch cache, which sees its own writes a moment later.
    await waitFor('the gauge to count every namespace current', async () => (await gauge(server)).current === PUBLISHED.length);
    expect(await gauge(server)).toEqual({ current: PUBLISHED.length, stale: 0 });
    const lease = fake.get('leases', 'istio-system', 'svid-ca');
    expect(lease.spec.holderIdentity).toBe(server.service.kube!.leader!.identity);
    // The lease times are MicroTime: six fractional digits, as the API server requires.
    expect(lease.spec.renewTime).toMatch(/\.\d{6}Z$/);
  });

  it('publishes into a new namespace, and reverts edits, extra keys and deletions', async () => {
    const fake = await newFake();
    const server = await serve(fake);
    const roots = rootsOf(server);
    await waitFor('initial publication', () => allCurrent(fake, roots));

    fake.addNamespace('late');
    await waitFor('the new namespace to get the ConfigMap', () => allCurrent(fake, roots, ['late']));

    const cm = fake.get('configmaps', 'demo', CM);
    fake.put('configmaps', { ...cm, data: { 'root-cert.pem': 'tampered', extra: 'x' }, metadata: { ...cm.metadata, labels: {} } });
    await waitFor('the edit to be reverted', () => allCurrent(fake, roots, ['demo']));

    fake.remove('configmaps', 'default', CM);
    await waitFor('the deleted ConfigMap to be recreated', () => allCurrent(fake, roots, ['default']));
    await waitFor('the gauge to count every namespace current', async () => (await gauge(server)).current === PUBLISHED.length + 1);
    expect(await gauge(server)).toEqual({ current: PUBLISHED.length + 1, stale: 0 });
  });

  it('rewrites every namespace after a bundle change; the gauge shows stale until all carry the new bundle', async () => {
    const fake = await newFake();
    const server = await serve(fake);
    await waitFor('initial publication', () => allCurrent(fake, rootsOf(server)));
    const nextRoot = makeRoot({ cn: 'next root' });
    const nextDir = writeCacerts(tempDir(), { signer: makeIntermediate(nextRoot), roots: [pki.root, nextRoot] });
    try {
      const next = loadCacerts(nextDir);
      expect(next.rootsPem).not.toBe(rootsOf(server));
      server.service.authority.replaceBundle(next);
      // Synchronously after the change nothing can have been written yet: every namespace is stale.
      expect(server.service.kube!.publisher!.status()).toMatchObject({ current: 0, stale: PUBLISHED.length });
      await waitFor('every namespace to carry the new bundle', () => allCurrent(fake, next.rootsPem));
      await waitFor('the gauge to report no stale namespace', async () => (await gauge(server)).stale === 0);
      expect((await gauge(server)).current).toBe(PUBLISHED.length);
    } finally {
      removeDir(nextDir);
    }
  });

  it('with --root-configmap-namespace-selector publishes only into matching namespaces', async () => {
    const fake = await newFake();
    fake.addNamespace('mesh-a', { 'istio-injection': 'enabled' });
    fake.addNamespace('mesh-b', { 'istio-injection': 'enabled' });
    const server = await serve(fake, { namespaceSelector: 'istio-injection=enabled' });
    await waitFor('the selected namespaces to get the ConfigMap', () => allCurrent(fake, rootsOf(server), ['mesh-a', 'mesh-b']));
    expect(published(fake).map((c) => c.metadata.namespace).sort()).toEqual(['mesh-a', 'mesh-b']);
    expect(fake.requests.find((r) => r.resource === 'namespaces')?.query.labelSelector).toBe('istio-injection=enabled');
  });
});

describe('leader election with two svid-ca instances against a local fake Kubernetes API server', () => {
  it('only the Lease holder writes; after it stops the other takes over and writes', async () => {
    const fake = await newFake();
    const a = await serve(fake, { user: 'replica-a' });
    await waitFor('replica a to lead', () => a.service.kube!.leader!.isLeader());
    const roots = rootsOf(a);
    await waitFor('initial publication', () => allCurrent(fake, roots));
    const b = await serve(fake, { user: 'replica-b' });
    // b watches and tries the Lease for several retry periods, never winning it.
    await waitFor('replica b to have tried the lease a few times', () => fake.requests.filter((r) => r.user === 'replica-b' && r.resource === 'leases').length >= 4);
    await waitFor('replica b caches to sync', async () => !Number.isNaN((await gauge(b)).current));
    expect(b.service.kube!.leader!.isLeader()).toBe(false);

    const cm = fake.get('configmaps', 'demo', CM);
    fake.put('configmaps', { ...cm, data: { 'root-cert.pem': 'tampered' } });
    await waitFor('the edit to be reverted', () => allCurrent(fake, roots, ['demo']));
    expect(new Set(writes(fake).map((w) => w.user))).toEqual(new Set(['replica-a']));

    await a.close();
    servers.splice(servers.indexOf(a), 1);
    expect(fake.get('leases', 'istio-system', 'svid-ca').spec.holderIdentity).toBe('');
    await waitFor('replica b to take over', () => b.service.kube!.leader!.isLeader());
    const c2 = fake.get('configmaps', 'istio-system', CM);
    fake.put('configmaps', { ...c2, data: { 'root-cert.pem': 'tampered again' } });
    await waitFor('the new leader to revert the edit', () => allCurrent(fake, roots, ['istio-system']));
    expect(writes(fake).filter((w) => w.user === 'replica-b').length).toBeGreaterThan(0);
    const lease = fake.get('leases', 'istio-system', 'svid-ca');
    expect(lease.spec.holderIdentity).toBe(b.service.kube!.leader!.identity);
    expect(lease.spec.leaseTransitions).toBeGreaterThanOrEqual(1);
  });
});
