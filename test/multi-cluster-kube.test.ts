/**
 * issue #18, part 2: --remote-kubeconfig-dir against two local fake Kubernetes API servers (the
 * local cluster's and a remote one's). TokenReview and the ztunnel pod lookups go to the API server
 * of the call's clusterid; remote identities get the remote cluster's trust domain from
 * --jwt-issuers-file; kubeconfig files come and go through Secret-volume `..data` swaps; a remote
 * API server that is down fails only its own cluster's calls, with UNAVAILABLE.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaClient } from '../src/client/index.js';
import { buildCsrPem, decodePem, generateKeyPair } from '../src/pki/index.js';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { makeCacerts, opensslVerify, removeDir, tempDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestServer } from './helpers/server.js';

const csr = (id: string) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }], subjectOrganization: '' });
const plain = (id: string) => ({ csr: csr(id), validity_duration: '3600' });
const impersonating = (id: string) => ({ csr: csr(id), validity_duration: '3600', metadata: { fields: { ImpersonatedIdentity: { stringValue: id } } } });
const md = (token: string, clusterid: string) => ({ authorization: `Bearer ${token}`, clusterid });

let local: FakeKubeApi;
let remote: FakeKubeApi;
let pki: ReturnType<typeof makeCacerts>;
let remotes: SecretVolume;
let server: TestServer;
let client: CaClient;
let remoteKubeconfig: string;

function seed(api: FakeKubeApi, suffix: string): void {
  for (const ns of ['istio-system', 'demo']) api.addNamespace(ns);
  api.addPod({ namespace: 'istio-system', name: `ztunnel-${suffix}`, uid: `zt-uid-${suffix}`, serviceAccount: 'ztunnel', nodeName: `node-${suffix}` });
  api.addPod({ namespace: 'demo', name: `web-${suffix}`, uid: `web-uid-${suffix}`, serviceAccount: 'web', nodeName: `node-${suffix}` });
  api.addServiceAccountToken(`zt-${suffix}`, { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: `ztunnel-${suffix}`, podUid: `zt-uid-${suffix}` });
  api.addServiceAccountToken(`web-${suffix}`, { namespace: 'demo', serviceAccount: 'web', podName: `web-${suffix}`, podUid: `web-uid-${suffix}` });
  api.addServiceAccountToken(`web-${suffix}-2`, { namespace: 'demo', serviceAccount: 'web', podName: `web-${suffix}`, podUid: `web-uid-${suffix}` });
}

const reviewsOn = (api: FakeKubeApi) => api.requests.filter((r) => r.resource === 'tokenreviews').length;

beforeAll(async () => {
  pki = makeCacerts();
  [local, remote] = await Promise.all([FakeKubeApi.start(), FakeKubeApi.start()]);
  seed(local, 'a');
  seed(remote, 'b');
  remoteKubeconfig = readFileSync(remote.kubeconfigPath, 'utf8');
  remotes = new SecretVolume(join(tempDir('svid-ca-remotes-'), 'remote-secrets'));
  remotes.write({ 'cluster-b.yaml': remoteKubeconfig });
  // Cluster B's trust domain comes from its --jwt-issuers-file entry.
  const issuerB = await createTestIssuer();
  const issuersFile = join(tempDir('svid-ca-issuers-'), 'issuers.yaml');
  writeFileSync(issuersFile, `- clusterId: cluster-b\n  issuer: https://oidc.cluster-b.example\n  jwksFile: ${issuerB.jwksFile}\n  trustDomain: b.mesh\n`);
  server = await startTestServer({
    cacerts: pki.dir,
    issuer: issuerB,
    jwt: undefined,
    jwtIssuersFile: issuersFile,
    clusterId: 'cluster-a',
    reloadIntervalMs: 1000,
    kubernetes: {
      kubeconfig: local.kubeconfigPath,
      tokenReview: { audiences: ['istio-ca'], cacheTtlMs: 60_000, concurrency: 8 },
      trustedNodeAccounts: ['istio-system/ztunnel'],
      remoteKubeconfigDir: remotes.dir,
      remotePollIntervalMs: 1000,
    },
  });
  client = clientFor(server, pki.root.certPem);
  await waitFor('both pod indexes to sync', () => server.service.kube?.pods?.isSynced() === true && server.service.kube?.remotes?.get('cluster-b')?.pods?.isSynced() === true);
});

afterAll(async () => {
  client?.close();
  await server?.close();
  await local?.close();
  await remote?.close().catch(() => undefined);
  removeDir(pki.dir);
});

const leafUri = (chain: string[]) => new X509Certificate(decodePem(chain[0]!)[0]!.der).subjectAltName;

describe('--remote-kubeconfig-dir: TokenReview and pod lookups by clusterid', () => {
  it('reviews a local token on the local API server and a remote one on the remote API server, with that cluster\'s trust domain', async () => {
    const [localBefore, remoteBefore] = [reviewsOn(local), reviewsOn(remote)];
    const a = await call(client, plain('spiffe://cluster.local/ns/demo/sa/web'), md('web-a', 'cluster-a'));
    expect(a.err).toBeUndefined();
    expect(reviewsOn(local)).toBe(localBefore + 1);
    expect(reviewsOn(remote)).toBe(remoteBefore);
    const b = await call(client, plain('spiffe://b.mesh/ns/demo/sa/web'), md('web-b', 'cluster-b'));
    expect(b.err).toBeUndefined();
    expect(reviewsOn(remote)).toBe(remoteBefore + 1);
    expect(reviewsOn(local)).toBe(localBefore + 1);
    const chain = b.res!.cert_chain;
    expect(opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    expect(leafUri(chain)).toBe('URI:spiffe://b.mesh/ns/demo/sa/web');
    const audit = server.logs.records().filter((l) => l.msg === 'certificate issued').at(-1)!.audit as Record<string, unknown>;
    expect(audit).toMatchObject({ clusterId: 'cluster-b', identity: 'spiffe://b.mesh/ns/demo/sa/web' });
  });

  it('refuses a remote token sent as the local cluster, and an unknown cluster by name', async () => {
    const wrong = await call(client, plain('spiffe://cluster.local/ns/demo/sa/web'), md('web-b-2', 'cluster-a'));
    expect(wrong.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    const unknown = await call(client, plain('spiffe://cluster.local/ns/demo/sa/web'), md('web-b', 'cluster-z'));
    expect(unknown.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(unknown.err?.details).toContain('client claims to be in cluster "cluster-z", which this CA does not serve');
  });

  it("lets a remote ztunnel impersonate a workload on its node, checked against the remote cluster's pod index", async () => {
    const ok = await call(client, impersonating('spiffe://b.mesh/ns/demo/sa/web'), md('zt-b', 'cluster-b'));
    expect(ok.err).toBeUndefined();
    expect(leafUri(ok.res!.cert_chain)).toBe('URI:spiffe://b.mesh/ns/demo/sa/web');
    // The local ztunnel cannot: B's trust domain is not its own.
    const fromLocal = await call(client, impersonating('spiffe://b.mesh/ns/demo/sa/web'), md('zt-a', 'cluster-a'));
    expect(fromLocal.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(fromLocal.err?.details).toContain('trust domain "b.mesh", not "cluster.local"');
    // Remote ztunnel, workload only on a local node: the remote index has no such pod on node-b.
    remote.addPod({ namespace: 'demo', name: 'api-b', uid: 'api-uid-b', serviceAccount: 'api', nodeName: 'node-elsewhere' });
    const elsewhere = await call(client, impersonating('spiffe://b.mesh/ns/demo/sa/api'), md('zt-b', 'cluster-b'));
    expect(elsewhere.err?.details).toContain('no pod of demo/api on node node-b');
  });

  it('/readyz lists each cluster with its API server', async () => {
    const { body } = await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/readyz`);
    expect(body).toContain('cluster "cluster-a": no JWT issuer; local API server; trust domain cluster.local');
    expect(body).toContain(`cluster "cluster-b": issuers https://oidc.cluster-b.example; API server ${remote.url}; trust domain b.mesh`);
  });

  it('follows the folder: a removed kubeconfig stops routing to its API server, a re-added one routes again', async () => {
    const remotesSet = server.service.kube!.remotes!;
    const reviewsBefore = reviewsOn(remote);
    // The Secret updated without the key: after kubelet's ..data swap the file is gone (here: a dangling link).
    remotes.write({});
    await waitFor('cluster-b to be removed', () => remotesSet.get('cluster-b') === undefined);
    const gone = await call(client, plain('spiffe://b.mesh/ns/demo/sa/web'), md('web-b-2', 'cluster-b'));
    expect(gone.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    const reasons = server.logs.records().filter((l) => l.msg === 'certificate denied').map((l) => (l.audit as { reason?: string }).reason);
    expect(reasons.at(-1)).toBe(gone.err?.details);
    expect(reviewsOn(remote)).toBe(reviewsBefore);
    remotes.write({ 'cluster-b.yaml': remoteKubeconfig });
    await waitFor('cluster-b to be back', () => remotesSet.get('cluster-b') !== undefined);
    const back = await call(client, plain('spiffe://b.mesh/ns/demo/sa/web'), md('web-b-2', 'cluster-b'));
    expect(back.err).toBeUndefined();
    const metrics = (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
    expect(metrics).toMatch(/svid_ca_remote_kubeconfig_reloads_total\{result="success"\} 3/);
  });

  it('a remote API server that is down fails only its own cluster\'s calls, with UNAVAILABLE', async () => {
    remote.addServiceAccountToken('web-b-3', { namespace: 'demo', serviceAccount: 'web', podName: 'web-b', podUid: 'web-uid-b' });
    await remote.close();
    const down = await call(client, plain('spiffe://b.mesh/ns/demo/sa/web'), md('web-b-3', 'cluster-b'));
    expect(down.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(down.err?.details).toContain('TokenReview could not be completed');
    const up = await call(client, plain('spiffe://cluster.local/ns/demo/sa/web'), md('web-a-2', 'cluster-a'));
    expect(up.err).toBeUndefined();
  });
});
