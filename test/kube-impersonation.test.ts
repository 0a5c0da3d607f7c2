/**
 * ztunnel impersonation (--trusted-node-accounts) against a local fake Kubernetes API server: the
 * caller is authenticated by TokenReview, its pod and the target's pods come from the watched pod
 * index; calls go through the real svid-ca service with a real grpc-js client over TLS.
 */
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import type { CaClient } from '../src/client/index.js';
import { FakeKubeApi } from './helpers/fake-kube-api.js';
import { makeCacerts, removeDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const TD = 'cluster.local';
const WEB = `spiffe://${TD}/ns/demo/sa/web`;
const API = `spiffe://${TD}/ns/demo/sa/api`;
const csr = (id: string) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }], subjectOrganization: '' });
const impersonating = (identity: string, sanInCsr = identity) => ({
  csr: csr(sanInCsr),
  validity_duration: '3600',
  metadata: { fields: { ImpersonatedIdentity: { stringValue: identity } } },
});
const bearer = (t: string) => ({ authorization: `Bearer ${t}`, clusterid: 'Kubernetes' });

let fake: FakeKubeApi;
let pki: ReturnType<typeof makeCacerts>;
let server: TestServer;
let client: CaClient;

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  pki = makeCacerts();
  fake = await FakeKubeApi.start();
  for (const ns of ['istio-system', 'demo']) fake.addNamespace(ns);
  fake.addPod({ namespace: 'istio-system', name: 'ztunnel-a', uid: 'zt-uid-a', serviceAccount: 'ztunnel', nodeName: 'node-1' });
  fake.addPod({ namespace: 'istio-system', name: 'ztunnel-b', uid: 'zt-uid-b', serviceAccount: 'ztunnel', nodeName: 'node-2' });
  fake.addPod({ namespace: 'demo', name: 'web-1', uid: 'web-uid-1', serviceAccount: 'web', nodeName: 'node-1' });
  fake.addPod({ namespace: 'demo', name: 'api-1', uid: 'api-uid-1', serviceAccount: 'api', nodeName: 'node-2' });
  fake.addPod({ namespace: 'demo', name: 'api-failed', uid: 'api-uid-f', serviceAccount: 'api', nodeName: 'node-1', phase: 'Failed' });
  fake.addServiceAccountToken('zt-a', { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: 'ztunnel-a', podUid: 'zt-uid-a' });
  fake.addServiceAccountToken('zt-a-stale-uid', { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: 'ztunnel-a', podUid: 'zt-uid-old' });
  // A pod that runs as another service account, and a token that names it while claiming ztunnel's account
  // (a token minted for ztunnel and bound to someone else's pod): the pod's own account decides.
  fake.addPod({ namespace: 'istio-system', name: 'imposter-a', uid: 'imp-uid-a', serviceAccount: 'default', nodeName: 'node-1' });
  fake.addServiceAccountToken('zt-on-foreign-pod', { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: 'imposter-a', podUid: 'imp-uid-a' });
  // A ztunnel token that names no pod (not a bound token), and a ztunnel pod not yet scheduled on a node.
  fake.addServiceAccountToken('zt-unbound', { namespace: 'istio-system', serviceAccount: 'ztunnel' });
  fake.addPod({ namespace: 'istio-system', name: 'ztunnel-pending', uid: 'zt-uid-p', serviceAccount: 'ztunnel' });
  fake.addServiceAccountToken('zt-pending', { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: 'ztunnel-pending', podUid: 'zt-uid-p' });
  fake.addServiceAccountToken('zt-ghost', { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: 'ztunnel-x', podUid: 'zt-uid-x' });
  fake.addServiceAccountToken('web', { namespace: 'demo', serviceAccount: 'web', podName: 'web-1', podUid: 'web-uid-1' });
  server = await startTestServer({
    cacerts: pki.dir,
    issuer: await createTestIssuer(),
    jwt: undefined,
    kubernetes: {
      kubeconfig: fake.kubeconfigPath,
      tokenReview: { audiences: ['istio-ca'], cacheTtlMs: 60_000, concurrency: 8 },
      trustedNodeAccounts: ['istio-system/ztunnel'],
    },
  });
  client = clientFor(server, pki.root.certPem);
  await until('the pod index to sync', () => server.service.kube?.pods?.isSynced() === true);
  // The watch is opened just after the list; wait for it so request counts below are settled.
  await until('the pod watch to open', () => fake.openWatches('pods') === 1);
});

afterAll(async () => {
  client?.close();
  await server?.close();
  await fake?.close();
  removeDir(pki.dir);
});

const failures = async () =>
  Number(/citadel_server_authentication_failure_count (\d+)/.exec(await server.service.metrics.registry.getSingleMetricAsString('citadel_server_authentication_failure_count'))?.[1] ?? 0);

function lastDenial(): Record<string, unknown> {
  const r = server.logs.records().filter((l) => l.msg === 'certificate denied').at(-1);
  return (r?.audit ?? {}) as Record<string, unknown>;
}

async function refused(token: string, identity: string, reason: string, sanInCsr = identity) {
  const before = await failures();
  const { err } = await call(client, impersonating(identity, sanInCsr), bearer(token));
  expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
  expect(err?.details).toContain(reason);
  expect(await failures()).toBe(before + 1);
  const audit = lastDenial();
  expect(audit.reason).toContain(reason);
  expect(audit.impersonatedIdentity).toBe(identity);
}

describe('ztunnel impersonation against a local fake Kubernetes API server', () => {
  it('lists and watches pods once (field selector status.phase!=Failed), not per request', () => {
    const podRequests = fake.requests.filter((r) => r.resource === 'pods');
    expect(podRequests.map((r) => `${r.method} ${r.path} watch=${r.watch}`)).toEqual(['GET /api/v1/pods watch=false', 'GET /api/v1/pods watch=true']);
    expect(podRequests.every((r) => r.query.fieldSelector === 'status.phase!=Failed')).toBe(true);
  });

  it('issues the impersonated identity when a pod of it runs on the caller pod\'s node', async () => {
    const { res, err } = await call(client, impersonating(WEB), bearer('zt-a'));
    expect(err).toBeUndefined();
    expect(new X509Certificate(res!.cert_chain[0]!).subjectAltName).toBe(`URI:${WEB}`);
    const audit = server.logs.records().filter((l) => l.msg === 'certificate issued').at(-1)!.audit as Record<string, unknown>;
    expect(audit).toMatchObject({ identity: `spiffe://${TD}/ns/istio-system/sa/ztunnel`, pod: 'ztunnel-a', impersonatedIdentity: WEB });
  });

  it('refuses an identity with no pod on the caller\'s node (a Failed pod there does not count)', async () => {
    await refused('zt-a', API, 'no pod of demo/api on node node-1');
  });

  it('refuses a caller that is not a trusted node account', async () => {
    await refused('web', API, 'caller not a trusted node account (demo/web)');
  });

  it('refuses when the token\'s pod UID is not the pod\'s UID (pod replaced under the same name)', async () => {
    await refused('zt-a-stale-uid', WEB, 'pod UID does not match');
  });

  it('refuses when the token\'s pod runs as another service account than the token\'s', async () => {
    await refused('zt-on-foreign-pod', WEB, 'pod istio-system/imposter-a runs as service account default, not ztunnel');
  });

  it('refuses a token that names no pod (the node cannot be known)', async () => {
    await refused('zt-unbound', WEB, "the caller's credential names no pod");
  });

  it('refuses when the token\'s pod is not scheduled on a node', async () => {
    await refused('zt-pending', WEB, 'pod istio-system/ztunnel-pending is not scheduled on a node');
  });

  it('refuses when the token\'s pod does not exist', async () => {
    await refused('zt-ghost', WEB, 'pod istio-system/ztunnel-x not found');
  });

  it('refuses a CSR whose SAN is not the impersonated identity', async () => {
    await refused('zt-a', WEB, "the CSR's SAN must equal the impersonated identity", API);
  });

  it('refuses an identity of another trust domain', async () => {
    await refused('zt-a', 'spiffe://other.domain/ns/demo/sa/web', 'trust domain "other.domain"');
  });

  it('follows the watch: a pod scheduled on the node later makes the identity allowed, its deletion disallows it again', async () => {
    const pods = server.service.kube!.pods!;
    fake.addPod({ namespace: 'demo', name: 'api-2', uid: 'api-uid-2', serviceAccount: 'api', nodeName: 'node-1' });
    await until('api-2 in the pod index', () => pods.hasPodOnNode('demo', 'api', 'node-1'));
    const { err } = await call(client, impersonating(API), bearer('zt-a'));
    expect(err).toBeUndefined();
    fake.remove('pods', 'demo', 'api-2');
    await until('api-2 gone from the pod index', () => !pods.hasPodOnNode('demo', 'api', 'node-1'));
    await refused('zt-a', API, 'no pod of demo/api on node node-1');
    const podRequests = fake.requests.filter((r) => r.resource === 'pods');
    expect(podRequests).toHaveLength(2);
  });
});
