/**
 * --publish-cluster-trust-bundle (issue #16) against a local fake Kubernetes API server that speaks
 * certificates.k8s.io v1beta1 and v1alpha1 ClusterTrustBundles: the real svid-ca service keeps
 * istio.io:istiod-ca:root-cert (signer istio.io/istiod-ca) equal to root-cert.pem through a root
 * rotation done by Kubernetes `..data` swaps, reverts edits and deletions, falls back to v1alpha1,
 * rediscovers the version on 404, reports svid_ca_cluster_trust_bundle, and only the Lease holder
 * writes. What it publishes is judged by `openssl verify` with the bundle as the trust store.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodePem } from '../src/pki/index.js';
import { clusterTrustBundleProblem, FakeKubeApi, waitFor, type ClusterTrustBundleVersion } from './helpers/fake-kube-api.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, type TestCa } from './helpers/pki.js';
import { createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const NAME = 'istio.io:istiod-ca:root-cert';
const SIGNER = 'istio.io/istiod-ca';
const LEASE_TIMING = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 150 };

let root: TestCa;
let signer: TestCa;
const dirs: string[] = [];
const servers: TestServer[] = [];
const fakes: FakeKubeApi[] = [];

beforeAll(() => {
  root = makeRoot({ cn: 'bundle test root' });
  signer = makeIntermediate(root, { cn: 'bundle test intermediate' });
});

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const f of fakes.splice(0)) await f.close();
});

afterAll(() => {
  for (const d of dirs) removeDir(d);
});

async function newFake(versions: ClusterTrustBundleVersion[] = ['v1beta1', 'v1alpha1']): Promise<FakeKubeApi> {
  const fake = await FakeKubeApi.start();
  fake.clusterTrustBundleVersions = versions;
  fakes.push(fake);
  fake.addNamespace('istio-system');
  return fake;
}

function cacertsVolume(files: Record<string, string> = istioFiles(signer, [root])): SecretVolume {
  const dir = tempDir('svid-ca-cacerts-');
  dirs.push(dir);
  const volume = new SecretVolume(dir);
  volume.write(files);
  return volume;
}

async function serve(fake: FakeKubeApi, volume: SecretVolume, o: { user?: string; rediscoverMs?: number } = {}): Promise<TestServer> {
  const server = await startTestServer({
    cacerts: volume.dir,
    issuer: await createTestIssuer(),
    reloadIntervalMs: 500,
    kubernetes: {
      kubeconfig: o.user ? fake.kubeconfigFor(o.user) : fake.kubeconfigPath,
      publishClusterTrustBundle: { rediscoverMs: o.rediscoverMs ?? 200 },
      leaderElectionNamespace: 'istio-system',
      leaseTiming: LEASE_TIMING,
    },
  });
  servers.push(server);
  return server;
}

/** SHA-256 fingerprints of the CERTIFICATE blocks of a PEM text, in order. */
const fingerprints = (pem: string) => decodePem(pem).filter((b) => b.type === 'CERTIFICATE').map((b) => new X509Certificate(b.der).fingerprint256);
const bundleOf = (fake: FakeKubeApi) => fake.get('clustertrustbundles', undefined, NAME);
/** Does the ClusterTrustBundle carry istiod's signer and exactly the certificates of root-cert.pem, in order? */
const holds = (fake: FakeKubeApi, rootCertPem: string) => {
  const b = bundleOf(fake);
  return b?.spec?.signerName === SIGNER && JSON.stringify(fingerprints(b.spec.trustBundle ?? '')) === JSON.stringify(fingerprints(rootCertPem));
};
const rootFile = (volume: SecretVolume) => readFileSync(join(volume.dir, 'root-cert.pem'), 'utf8');
const gauge = async (s: TestServer) => {
  const text = await s.service.metrics.registry.getSingleMetricAsString('svid_ca_cluster_trust_bundle');
  const v = (state: string) => Number(new RegExp(`svid_ca_cluster_trust_bundle\\{state="${state}"\\} (\\d+)`).exec(text)?.[1] ?? NaN);
  return { current: v('current'), stale: v('stale'), unserved: v('unserved') };
};
const writes = (fake: FakeKubeApi) => fake.requests.filter((r) => r.resource === 'clustertrustbundles' && (r.method === 'POST' || r.method === 'PUT'));

/** openssl verify -x509_strict with the published trustBundle as the only trust store; undefined when it verifies. */
function opensslVerifiesAgainst(trustBundle: string, cert: TestCa): string | undefined {
  const dir = tempDir('svid-ca-ctb-verify-');
  dirs.push(dir);
  writeFileSync(join(dir, 'bundle.pem'), trustBundle);
  writeFileSync(join(dir, 'cert.pem'), cert.certPem);
  const r = spawnSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'cert.pem')], { encoding: 'utf8' });
  return r.status === 0 ? undefined : `${r.stdout}${r.stderr}`;
}

describe('ClusterTrustBundle publication (--publish-cluster-trust-bundle) against a local fake Kubernetes API server', () => {
  it('creates istio.io:istiod-ca:root-cert with signer istio.io/istiod-ca and root-cert.pem through certificates.k8s.io/v1beta1', async () => {
    const fake = await newFake();
    const volume = cacertsVolume();
    const server = await serve(fake, volume);
    await waitFor('the ClusterTrustBundle to hold the root bundle', () => holds(fake, rootFile(volume)));
    const b = bundleOf(fake);
    expect(b.metadata.name).toBe(NAME);
    expect(b.spec.trustBundle).toBe(root.certPem);
    expect(opensslVerifiesAgainst(b.spec.trustBundle, signer)).toBeUndefined();
    const created = fake.requests.find((r) => r.resource === 'clustertrustbundles' && r.method === 'POST');
    expect(created?.path).toBe('/apis/certificates.k8s.io/v1beta1/clustertrustbundles');
    expect(fake.requests.some((r) => r.path.includes('/v1alpha1/clustertrustbundles'))).toBe(false);
    // The watch is of that one name, so RBAC can restrict list and watch by resourceNames.
    expect(fake.requests.filter((r) => r.resource === 'clustertrustbundles' && r.method === 'GET').every((r) => r.query.fieldSelector === `metadata.name=${NAME}`)).toBe(true);
    // The API server asked for `attest` on the signer: the RBAC in deploy/ grants exactly that.
    expect(fake.impliedChecks).toContainEqual({ group: 'certificates.k8s.io', resource: 'signers', verb: 'attest', namespace: undefined, name: SIGNER });
    expect(server.service.kube!.trustBundle!.apiVersion).toBe('v1beta1');
    await waitFor('the gauge to report current', async () => (await gauge(server)).current === 1);
    expect(await gauge(server)).toEqual({ current: 1, stale: 0, unserved: 0 });
  });

  it('follows a root rotation: old and new root while root-cert.pem holds both, then the new root alone', async () => {
    const fake = await newFake();
    const volume = cacertsVolume();
    const server = await serve(fake, volume);
    await waitFor('initial publication', () => holds(fake, root.certPem));
    const next = makeRoot({ cn: 'next root' });
    const nextSigner = makeIntermediate(next, { cn: 'next intermediate' });

    // 1. The new root is added next to the old one.
    volume.write({ ...istioFiles(signer, [root]), 'root-cert.pem': root.certPem + next.certPem });
    await waitFor('the bundle to hold the old and the new root', () => holds(fake, root.certPem + next.certPem), 20_000);
    const both = bundleOf(fake).spec.trustBundle;
    expect(opensslVerifiesAgainst(both, signer)).toBeUndefined();
    expect(opensslVerifiesAgainst(both, nextSigner)).toBeUndefined();
    // 2. The new intermediate signs; the file still holds both roots, so the bundle does too.
    volume.write({ ...istioFiles(nextSigner, [next]), 'root-cert.pem': root.certPem + next.certPem });
    await waitFor('the new intermediate to sign', () => server.service.authority.bundle.signingCert.x509.fingerprint256 === nextSigner.cert.fingerprint256, 20_000);
    expect(holds(fake, root.certPem + next.certPem)).toBe(true);
    // 3. The old root leaves root-cert.pem, and the bundle.
    volume.write(istioFiles(nextSigner, [next]));
    await waitFor('the bundle to hold the new root only', () => holds(fake, next.certPem), 20_000);
    expect(opensslVerifiesAgainst(bundleOf(fake).spec.trustBundle, signer)).toMatch(/error/);
    expect(opensslVerifiesAgainst(bundleOf(fake).spec.trustBundle, nextSigner)).toBeUndefined();
    await waitFor('the gauge to report current', async () => (await gauge(server)).current === 1);
  });

  it('publishes the certificates of root-cert.pem as bare PEM blocks, once each, when the file carries text between them or repeats one', async () => {
    const fake = await newFake();
    const next = makeRoot({ cn: 'second root' });
    const messy = `# mesh roots\nsubject=old\n${root.certPem}\nsubject=new\n${next.certPem}${root.certPem}`;
    const volume = cacertsVolume({ ...istioFiles(signer, [root]), 'root-cert.pem': messy });
    await serve(fake, volume);
    await waitFor('the ClusterTrustBundle to be created', () => bundleOf(fake) !== undefined);
    expect(bundleOf(fake).spec.trustBundle).toBe(root.certPem + next.certPem);
    // The fake refuses what the API server refuses, so publishing the file as it is would have failed.
    const body = (trustBundle: string) => ({ metadata: { name: NAME }, spec: { signerName: SIGNER, trustBundle } });
    expect(clusterTrustBundleProblem(body(root.certPem + next.certPem), undefined)).toBeUndefined();
    expect(clusterTrustBundleProblem(body(messy), undefined)).toMatch(/duplicate trust anchor/);
    expect(clusterTrustBundleProblem(body(signer.certPem.replace('-----BEGIN CERTIFICATE-----\n', '-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\n')), undefined)).toMatch(/headers/);
    expect(clusterTrustBundleProblem({ ...body(root.certPem), metadata: { name: 'istio.io:other:root-cert' } }, undefined)).toMatch(/must be named with prefix istio\.io:istiod-ca:/);
  });

  it('reverts edits and recreates the bundle after a deletion', async () => {
    const fake = await newFake();
    const volume = cacertsVolume();
    await serve(fake, volume);
    await waitFor('initial publication', () => holds(fake, root.certPem));
    const stranger = makeRoot({ cn: 'someone else' });
    fake.put('clustertrustbundles', { ...bundleOf(fake), spec: { signerName: SIGNER, trustBundle: stranger.certPem } });
    await waitFor('the edit to be reverted', () => holds(fake, root.certPem));
    fake.remove('clustertrustbundles', undefined, NAME);
    await waitFor('the deleted bundle to be recreated', () => holds(fake, root.certPem));
  });

  it('falls back to v1alpha1 when the API server does not serve v1beta1', async () => {
    const fake = await newFake(['v1alpha1']);
    const server = await serve(fake, cacertsVolume());
    await waitFor('the ClusterTrustBundle to be created', () => holds(fake, root.certPem));
    expect(server.service.kube!.trustBundle!.apiVersion).toBe('v1alpha1');
    const ctbRequests = fake.requests.filter((r) => r.resource === 'clustertrustbundles');
    expect(ctbRequests.length).toBeGreaterThan(0);
    expect(ctbRequests.every((r) => r.path.startsWith('/apis/certificates.k8s.io/v1alpha1/'))).toBe(true);
    // Discovery asked for v1beta1 first and got 404.
    expect(fake.requests.find((r) => r.path === '/apis/certificates.k8s.io/v1beta1')?.status).toBe(404);
  });

  it('waits while no version is served (gauge unserved), and publishes once one is; rediscovers on 404', async () => {
    const fake = await newFake([]);
    const server = await serve(fake, cacertsVolume());
    await waitFor('the gauge to report unserved', async () => (await gauge(server)).unserved === 1);
    expect(await gauge(server)).toEqual({ current: 0, stale: 0, unserved: 1 });
    expect(server.logs.lines.some((l) => l.includes('the API server serves no ClusterTrustBundle API'))).toBe(true);
    expect(fake.list('clustertrustbundles')).toEqual([]);

    fake.clusterTrustBundleVersions = ['v1beta1'];
    await waitFor('the bundle to be published once v1beta1 is served', () => holds(fake, root.certPem));
    expect(server.service.kube!.trustBundle!.apiVersion).toBe('v1beta1');

    // The API server stops serving v1beta1 (reconfigured): the next list answers 404 and v1alpha1 is found.
    fake.clusterTrustBundleVersions = ['v1alpha1'];
    fake.closeWatches();
    await waitFor('the publisher to move to v1alpha1', () => server.service.kube!.trustBundle!.apiVersion === 'v1alpha1', 20_000);
    const b = bundleOf(fake);
    fake.put('clustertrustbundles', { ...b, spec: { signerName: SIGNER, trustBundle: makeRoot({ cn: 'edit' }).certPem } });
    await waitFor('the edit to be reverted through v1alpha1', () => holds(fake, root.certPem));
    expect(decodeURIComponent(writes(fake).at(-1)?.path ?? '')).toBe(`/apis/certificates.k8s.io/v1alpha1/clustertrustbundles/${NAME}`);
  });

  it('only the Lease holder writes the bundle; the other replica takes over when it stops', async () => {
    const fake = await newFake();
    const volume = cacertsVolume();
    const a = await serve(fake, volume, { user: 'replica-a' });
    await waitFor('replica a to lead', () => a.service.kube!.leader!.isLeader());
    await waitFor('initial publication', () => holds(fake, root.certPem));
    const b = await serve(fake, volume, { user: 'replica-b' });
    await waitFor('replica b to have tried the lease a few times', () => fake.requests.filter((r) => r.user === 'replica-b' && r.resource === 'leases').length >= 4);
    await waitFor('replica b to watch the bundle', async () => (await gauge(b)).current === 1);
    expect(b.service.kube!.leader!.isLeader()).toBe(false);
    fake.put('clustertrustbundles', { ...bundleOf(fake), spec: { signerName: SIGNER, trustBundle: makeRoot({ cn: 'tamper' }).certPem } });
    await waitFor('the edit to be reverted', () => holds(fake, root.certPem));
    expect(new Set(writes(fake).map((w) => w.user))).toEqual(new Set(['replica-a']));

    await a.close();
    servers.splice(servers.indexOf(a), 1);
    await waitFor('replica b to take over', () => b.service.kube!.leader!.isLeader());
    fake.put('clustertrustbundles', { ...bundleOf(fake), spec: { signerName: SIGNER, trustBundle: makeRoot({ cn: 'tamper again' }).certPem } });
    await waitFor('the new leader to revert the edit', () => holds(fake, root.certPem));
    expect(writes(fake).filter((w) => w.user === 'replica-b').length).toBeGreaterThan(0);
  });
});
