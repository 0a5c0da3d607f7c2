/**
 * --token-review against a local fake Kubernetes API server (real HTTPS, real TokenReview JSON),
 * through the real svid-ca service and a real grpc-js client over TLS.
 */
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import type { CaClient } from '../src/client/index.js';
import { FakeKubeApi } from './helpers/fake-kube-api.js';
import { makeCacerts, removeDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const csr = (id = ID) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }], subjectOrganization: '' });
const request = (id = ID) => ({ csr: csr(id), validity_duration: '3600', metadata: { fields: {} } });
const bearer = (t: string) => ({ authorization: `Bearer ${t}`, clusterid: 'Kubernetes' });

let fake: FakeKubeApi;
let pki: ReturnType<typeof makeCacerts>;
const running: Array<{ server: TestServer; client: CaClient }> = [];

async function serve(tokenReview: { cacheTtlMs?: number; concurrency?: number } = {}) {
  const server = await startTestServer({
    cacerts: pki.dir,
    issuer: await createTestIssuer(),
    jwt: undefined,
    kubernetes: {
      kubeconfig: fake.kubeconfigPath,
      tokenReview: { audiences: ['istio-ca'], cacheTtlMs: tokenReview.cacheTtlMs ?? 60_000, concurrency: tokenReview.concurrency ?? 32 },
    },
  });
  const client = clientFor(server, pki.root.certPem);
  running.push({ server, client });
  return { server, client };
}

const tokenReviews = () => fake.requests.filter((r) => r.path === '/apis/authentication.k8s.io/v1/tokenreviews');

beforeAll(async () => {
  pki = makeCacerts();
  fake = await FakeKubeApi.start();
  fake.addNamespace('demo');
});

afterEach(async () => {
  for (const r of running.splice(0)) {
    r.client.close();
    await r.server.close();
  }
  fake.tokenReviewDelayMs = 0;
  fake.failTokenReviewsWith = undefined;
});

afterAll(async () => {
  await fake?.close();
  removeDir(pki.dir);
});

describe('TokenReview authenticator against a local fake Kubernetes API server', () => {
  it('issues for a token the API server authenticates, with the pod from status.user.extra in the audit log', async () => {
    fake.addServiceAccountToken('tok-ok', { namespace: 'demo', serviceAccount: 'web', podName: 'web-1', podUid: 'uid-1' });
    const { server, client } = await serve();
    const before = tokenReviews().length;
    const { res, err } = await call(client, request(), bearer('tok-ok'));
    expect(err).toBeUndefined();
    const leaf = new X509Certificate(res!.cert_chain[0]!);
    expect(leaf.subjectAltName).toBe(`URI:${ID}`);
    const reviews = tokenReviews().slice(before);
    expect(reviews).toHaveLength(1);
    expect(reviews[0]!.method).toBe('POST');
    const audit = server.logs.records().find((r) => r.msg === 'certificate issued')!.audit as Record<string, unknown>;
    expect(audit).toMatchObject({ identity: ID, namespace: 'demo', serviceAccount: 'web', pod: 'web-1' });
    expect(server.logs.lines.join('\n')).not.toContain('tok-ok');
  });

  it('refuses a token the API server does not authenticate: UNAUTHENTICATED, counted', async () => {
    const { server, client } = await serve();
    const { err } = await call(client, request(), bearer('tok-unknown'));
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('did not authenticate the token');
    const metrics = await server.service.metrics.registry.getSingleMetricAsString('citadel_server_authentication_failure_count');
    expect(metrics).toMatch(/citadel_server_authentication_failure_count 1/);
  });

  it('refuses a token minted for another audience (the fake checks spec.audiences)', async () => {
    fake.addServiceAccountToken('tok-aud', { namespace: 'demo', serviceAccount: 'web', audiences: ['https://kubernetes.default.svc'] });
    const { client } = await serve();
    const { err } = await call(client, request(), bearer('tok-aud'));
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('is invalid for the target audiences ["istio-ca"]');
  });

  it('refuses a user that is not a service account', async () => {
    fake.addToken('tok-user', { username: 'alice', groups: ['system:authenticated'], audiences: ['istio-ca'] });
    const { client } = await serve();
    const { err } = await call(client, request(), bearer('tok-user'));
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('system:serviceaccounts');
  });

  it('answers UNAVAILABLE (never UNAUTHENTICATED) when the API server answers 503 or 429, and does not cache the failure', async () => {
    fake.addServiceAccountToken('tok-5xx', { namespace: 'demo', serviceAccount: 'web' });
    const { client } = await serve();
    for (const code of [503, 429]) {
      fake.failTokenReviewsWith = code;
      const { err } = await call(client, request(), bearer('tok-5xx'));
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(err?.details).toContain(`HTTP ${code}`);
    }
    fake.failTokenReviewsWith = undefined;
    const { err } = await call(client, request(), bearer('tok-5xx'));
    expect(err).toBeUndefined();
  });

  it('serves one TokenReview for repeated calls with the same token (cache by SHA-256 of the token)', async () => {
    fake.addServiceAccountToken('tok-cache', { namespace: 'demo', serviceAccount: 'web' });
    const { client } = await serve();
    const before = tokenReviews().length;
    for (let i = 0; i < 5; i++) {
      const { err } = await call(client, request(), bearer('tok-cache'));
      expect(err).toBeUndefined();
    }
    expect(tokenReviews().length - before).toBe(1);
  });

  it("keeps a cached result no longer than the token's exp, even within the cache TTL", async () => {
    const jwt = await (await createTestIssuer()).token({ namespace: 'demo', serviceAccount: 'web', expiresInSeconds: 2 });
    fake.addServiceAccountToken(jwt, { namespace: 'demo', serviceAccount: 'web' });
    const { client } = await serve({ cacheTtlMs: 600_000 });
    const before = tokenReviews().length;
    expect((await call(client, request(), bearer(jwt))).err).toBeUndefined();
    expect((await call(client, request(), bearer(jwt))).err).toBeUndefined();
    expect(tokenReviews().length - before).toBe(1);
    const exp = JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')).exp as number;
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 50));
    // The fake still says yes (it does not look at exp); svid-ca must ask again.
    expect((await call(client, request(), bearer(jwt))).err).toBeUndefined();
    expect(tokenReviews().length - before).toBe(2);
  });

  it('with --token-review-cache-ttl 0 every call is reviewed', async () => {
    fake.addServiceAccountToken('tok-nocache', { namespace: 'demo', serviceAccount: 'web' });
    const { client } = await serve({ cacheTtlMs: 0 });
    const before = tokenReviews().length;
    for (let i = 0; i < 3; i++) expect((await call(client, request(), bearer('tok-nocache'))).err).toBeUndefined();
    expect(tokenReviews().length - before).toBe(3);
  });

  it('never has more than --token-review-concurrency TokenReviews in flight (slow fake API server)', async () => {
    const tokens = Array.from({ length: 12 }, (_, i) => `tok-burst-${i}`);
    for (const t of tokens) fake.addServiceAccountToken(t, { namespace: 'demo', serviceAccount: 'web' });
    const { client } = await serve({ concurrency: 3 });
    fake.tokenReviewDelayMs = 150;
    fake.maxTokenReviewsInFlight = 0;
    const results = await Promise.all(tokens.map((t) => call(client, request(), bearer(t))));
    expect(results.filter((r) => r.err)).toEqual([]);
    expect(fake.maxTokenReviewsInFlight).toBe(3);
  });
});

describe('TokenReview with the API server down (local fake Kubernetes API server stopped)', () => {
  it('answers UNAVAILABLE with the reason', async () => {
    const down = await FakeKubeApi.start();
    const server = await startTestServer({
      cacerts: pki.dir,
      issuer: await createTestIssuer(),
      jwt: undefined,
      kubernetes: { kubeconfig: down.kubeconfigPath, tokenReview: { audiences: ['istio-ca'], cacheTtlMs: 60_000, concurrency: 4 } },
    });
    const client = clientFor(server, pki.root.certPem);
    running.push({ server, client });
    await down.close();
    const { err } = await call(client, request(), bearer('any-token'));
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(err?.details).toContain('API server unreachable');
  });
});

describe('JWT and TokenReview together, against a local fake Kubernetes API server', () => {
  it('a token the local JWKS refuses still passes when TokenReview vouches for it; JWT-valid tokens skip TokenReview', async () => {
    const issuer = await createTestIssuer();
    const server = await startTestServer({
      cacerts: pki.dir,
      issuer,
      kubernetes: { kubeconfig: fake.kubeconfigPath, tokenReview: { audiences: ['istio-ca'], cacheTtlMs: 60_000, concurrency: 32 } },
    });
    const client = clientFor(server, pki.root.certPem);
    running.push({ server, client });
    fake.addServiceAccountToken('opaque-token', { namespace: 'demo', serviceAccount: 'web', podName: 'web-2', podUid: 'uid-2' });
    const before = tokenReviews().length;
    expect((await call(client, request(), bearer('opaque-token'))).err).toBeUndefined();
    expect(tokenReviews().length).toBe(before + 1);
    const jwt = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    expect((await call(client, request(), bearer(jwt))).err).toBeUndefined();
    expect(tokenReviews().length).toBe(before + 1);
    const refused = await call(client, request(), bearer('unknown-to-both'));
    expect(refused.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    // The first refusal (the JWT authenticator's) is the reason given.
    expect(refused.err?.details).toMatch(/malformed/);
  });
});
