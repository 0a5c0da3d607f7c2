/**
 * Admission control against the real server: a JWKS server (local HTTP, real jose fetch) that holds
 * its answer keeps calls pending, so the bound, the istio-system reserve and deduplication can be
 * observed exactly.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { calculateJwkThumbprint, exportJWK, generateKeyPair as joseKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { buildCsrPem, decodePem, generateKeyPair } from '../src/pki/index.js';
import { Admission, shareKey } from '../src/server/index.js';
import { makeCacerts, removeDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, TEST_ISSUER } from './helpers/server.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A JWKS endpoint that answers only when released. */
async function heldJwks() {
  const { privateKey, publicKey } = await joseKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256' };
  const kid = await calculateJwkThumbprint(jwk);
  const waiting: ServerResponse[] = [];
  let released = false;
  const body = JSON.stringify({ keys: [{ ...jwk, kid }] });
  const server = createServer((_req: IncomingMessage, res: ServerResponse) => {
    if (released) res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    else waiting.push(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return {
    uri: `http://127.0.0.1:${(server.address() as { port: number }).port}/jwks`,
    release() {
      released = true;
      for (const res of waiting.splice(0)) res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    },
    token: (ns: string, sa: string, key: CryptoKey = privateKey) =>
      new SignJWT({ 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa } } })
        .setProtectedHeader({ alg: 'ES256', kid })
        .setIssuer(TEST_ISSUER)
        .setSubject(`system:serviceaccount:${ns}:${sa}`)
        .setAudience('istio-ca')
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(key),
  };
}

/** maxPendingShare 100 (one caller may hold all of --max-pending) unless a test is about the share. */
async function setup(maxPending: number, maxPendingShare = 100) {
  const jwks = await heldJwks();
  const pki = makeCacerts();
  const issuer = await createTestIssuer();
  const server = await startTestServer({
    cacerts: pki.dir,
    issuer,
    jwt: { issuer: TEST_ISSUER, audience: 'istio-ca', jwksUri: jwks.uri },
    admission: { maxPending, priorityNamespaces: ['istio-system'], maxPendingShare },
    // Every call shares one connection on which nothing has authenticated yet (the JWKS is held):
    // lift the pre-authentication stream limit so that all of them reach the server at once.
    transport: { unauthenticatedStreams: 64 },
  });
  const client = clientFor(server, pki.root.certPem);
  cleanups.push(() => removeDir(pki.dir), () => server.close(), () => client.close());
  return { jwks, server, client };
}

const csrFor = (id: string) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('admission control', () => {
  it('refuses calls beyond --max-pending at once with RESOURCE_EXHAUSTED; admitted ones are issued', async () => {
    const { jwks, server, client } = await setup(3);
    const token = await jwks.token('demo', 'web');
    const id = 'spiffe://cluster.local/ns/demo/sa/web';
    const calls = Array.from({ length: 10 }, () => call(client, { csr: csrFor(id) }, { authorization: `Bearer ${token}` }));
    // The three admitted calls are held in authentication: in flight now, and scraped as such.
    const inFlight = async () => (await server.service.metrics.inFlight.get()).values[0]?.value;
    for (let i = 0; i < 200 && (await inFlight()) !== 3; i++) await sleep(20);
    expect(await inFlight()).toBe(3);
    const scrape = () => fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`).then((r) => r.body);
    expect(await scrape()).toMatch(/^svid_ca_requests_in_flight 3$/m);
    jwks.release();
    const results = await Promise.all(calls);
    expect(await inFlight()).toBe(0);
    expect(await scrape()).toMatch(/^svid_ca_requests_in_flight 0$/m);
    const codes = results.map((r) => (r.err ? grpc.status[r.err.code] : 'OK'));
    expect(codes.filter((c) => c === 'OK')).toHaveLength(3);
    expect(codes.filter((c) => c === 'RESOURCE_EXHAUSTED')).toHaveLength(7);
    expect(results.find((r) => r.err)?.err?.details).toMatch(/CA overloaded: 3 requests pending; retry with backoff/);
    const metrics = (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
    expect(metrics).toMatch(/svid_ca_requests_total\{outcome="overloaded"\} 7/);
    expect(metrics).toMatch(/svid_ca_requests_total\{outcome="issued"\} 3/);
    // Once drained, new calls are admitted again.
    expect((await call(client, { csr: csrFor(id) }, { authorization: `Bearer ${token}` })).err).toBeUndefined();
  });

  it('istio-system callers (gateways, ztunnel) get a reserve above the bound', async () => {
    const { jwks, client } = await setup(3);
    const web = await jwks.token('demo', 'web');
    const gw = await jwks.token('istio-system', 'istio-ingressgateway');
    const others = Array.from({ length: 5 }, () => call(client, { csr: csrFor('spiffe://cluster.local/ns/demo/sa/web') }, { authorization: `Bearer ${web}` }));
    await sleep(200);
    const gateway = call(client, { csr: csrFor('spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway') }, { authorization: `Bearer ${gw}` });
    await sleep(200);
    jwks.release();
    const [gwResult, ...rest] = await Promise.all([gateway, ...others]);
    expect(gwResult!.err).toBeUndefined();
    expect(rest.filter((r) => r.err?.code === grpc.status.RESOURCE_EXHAUSTED)).toHaveLength(2);
  });

  it('concurrent identical requests (an agent retrying while the first is queued) are signed once', async () => {
    const { jwks, server, client } = await setup(100);
    const token = await jwks.token('demo', 'web');
    const csr = csrFor('spiffe://cluster.local/ns/demo/sa/web');
    const a = call(client, { csr, validity_duration: '3600' }, { authorization: `Bearer ${token}` });
    const b = call(client, { csr, validity_duration: '3600' }, { authorization: `Bearer ${token}` });
    const different = call(client, { csr: csrFor('spiffe://cluster.local/ns/demo/sa/web'), validity_duration: '3600' }, { authorization: `Bearer ${token}` });
    // All three are held in authentication (the JWKS has not answered) before it is released.
    for (let i = 0; i < 200 && (await server.service.metrics.inFlight.get()).values[0]?.value !== 3; i++) await sleep(20);
    expect((await server.service.metrics.inFlight.get()).values[0]?.value).toBe(3);
    jwks.release();
    const [ra, rb, rc] = await Promise.all([a, b, different]);
    const serial = (r: typeof ra) => new X509Certificate(decodePem(r.res!.cert_chain[0]!)[0]!.der).serialNumber;
    expect(serial(ra)).toBe(serial(rb));
    expect(serial(rc)).not.toBe(serial(ra));
    const audits = server.logs.records().filter((r) => (r.audit as { event?: string } | undefined)?.event === 'issued');
    expect(audits).toHaveLength(3);
    expect(new Set(audits.map((r) => (r.audit as { serial: string }).serial)).size).toBe(2);
  });
});

describe('fair share of --max-pending (issue #19)', () => {
  it('one identity holds at most --max-pending-share of the bound, whatever else varies; another identity still gets in', async () => {
    // 40 pending at most, 5% each: 2 per identity past authentication.
    const { jwks, server, client } = await setup(40, 5);
    const web = 'spiffe://cluster.local/ns/demo/sa/web';
    // Different CSRs, TTLs and token instances: nothing but the identity is shared.
    const webCalls = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const token = await jwks.token('demo', 'web');
        return () => call(client, { csr: csrFor(web), validity_duration: String(3600 + i) }, { authorization: `Bearer ${token}` });
      }),
    );
    const apiToken = await jwks.token('demo', 'api');
    const pending = webCalls.map((c) => c());
    const api = call(client, { csr: csrFor('spiffe://cluster.local/ns/demo/sa/api') }, { authorization: `Bearer ${apiToken}` });
    // All 13 are held in authentication (the JWKS has not answered) before it is released, so they
    // reach the share check together (token checks finish in batches from the crypto thread pool).
    const inFlight = async () => (await server.service.metrics.inFlight.get()).values[0]?.value;
    for (let i = 0; i < 200 && (await inFlight()) !== 13; i++) await sleep(20);
    expect(await inFlight()).toBe(13);
    jwks.release();
    const results = await Promise.all(pending);
    const refused = results.filter((r) => r.err);
    // Without the share all 12 are issued (the global bound of 40 is far away).
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(r.err!.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(r.err!.details).toBe(`CA overloaded: ${web} already has 2 requests pending, its share of --max-pending (--max-pending-share); retry with backoff`);
    }
    expect(results.filter((r) => !r.err).length).toBeGreaterThanOrEqual(2);
    expect((await api).err).toBeUndefined();
    // The share is released with the calls: the same identity is admitted again.
    const again = await jwks.token('demo', 'web');
    expect((await call(client, { csr: csrFor(web) }, { authorization: `Bearer ${again}` })).err).toBeUndefined();
  });

  it('identical concurrent requests with different tokens are not shared: each is decided on its own credentials', async () => {
    const { jwks, server, client } = await setup(100);
    const id = 'spiffe://cluster.local/ns/demo/sa/web';
    const csr = csrFor(id);
    const owner = await jwks.token('demo', 'web');
    const other = await jwks.token('demo', 'intruder');
    const a = call(client, { csr, validity_duration: '3600' }, { authorization: `Bearer ${owner}` });
    const b = call(client, { csr, validity_duration: '3600' }, { authorization: `Bearer ${other}` });
    // Both are held in authentication together, so a shared computation would answer both.
    for (let i = 0; i < 200 && (await server.service.metrics.inFlight.get()).values[0]?.value !== 2; i++) await sleep(20);
    expect((await server.service.metrics.inFlight.get()).values[0]?.value).toBe(2);
    jwks.release();
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.err).toBeUndefined();
    expect(rb.err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(rb.res).toBeUndefined();
  });
});

describe('the pending bound', () => {
  it('asks whether a caller is a priority one only once --max-pending calls are pending (issue #14), and keeps the reserve for it', () => {
    const admission = new Admission({ maxPending: 20, priorityNamespaces: ['istio-system'] });
    let asked = 0;
    const ask = (answer: boolean) => () => {
      asked++;
      return answer;
    };
    for (let i = 0; i < 20; i++) expect(admission.tryAdmit(ask(false))).toBe(true);
    expect(asked).toBe(0);
    expect(admission.tryAdmit(ask(false))).toBe(false);
    expect(asked).toBe(1);
    // The reserve: ceil(20 / 10) = 2 more for priority callers, then none.
    expect(admission.tryAdmit(ask(true))).toBe(true);
    expect(admission.tryAdmit(ask(true))).toBe(true);
    expect(admission.tryAdmit(ask(true))).toBe(false);
    expect(admission.tryAdmit(true)).toBe(false);
    expect(asked).toBe(4);
    admission.release();
    expect(admission.tryAdmit(true)).toBe(true);
    expect(admission.pendingCount).toBe(22);
  });
});

describe('the signing queue', () => {
  it('runs priority work first, and work of one slice before yielding to I/O', async () => {
    const admission = new Admission({ maxPending: 10, priorityNamespaces: ['istio-system'] });
    const order: string[] = [];
    const jobs = [
      admission.run(false, () => order.push('low-1')),
      admission.run(false, () => order.push('low-2')),
      admission.run(true, () => order.push('high-1')),
      admission.run(true, () => order.push('high-2')),
    ];
    await Promise.all(jobs);
    expect(order).toEqual(['high-1', 'high-2', 'low-1', 'low-2']);
  });

  it('a caller holds at most its share; release gives the slot back; other callers are counted apart', () => {
    const admission = new Admission({ maxPending: 40, priorityNamespaces: [], maxPendingShare: 5 });
    expect(admission.callerLimit).toBe(2);
    expect([admission.tryAdmitCaller('a'), admission.tryAdmitCaller('a'), admission.tryAdmitCaller('a')]).toEqual([true, true, false]);
    expect(admission.tryAdmitCaller('b')).toBe(true);
    expect(admission.callerPending('a')).toBe(2);
    admission.releaseCaller('a');
    expect(admission.tryAdmitCaller('a')).toBe(true);
    admission.releaseCaller('a');
    admission.releaseCaller('a');
    expect(admission.callerPending('a')).toBe(0);
    // The default share is 10%, and never less than one call.
    expect(new Admission({ maxPending: 2048, priorityNamespaces: [] }).callerLimit).toBe(205);
    expect(new Admission({ maxPending: 3, priorityNamespaces: [] }).callerLimit).toBe(1);
  });

  it('whose share a call uses: its identity; an impersonation, the node agent pod (one per node), whatever identity it asks for', () => {
    const web = { identity: 'spiffe://cluster.local/ns/demo/sa/web', namespace: 'demo', serviceAccount: 'web', podName: 'web-1', authenticator: 'jwt' };
    expect(shareKey(web, false)).toEqual(shareKey({ ...web, podName: 'web-2' }, false));
    const zt = (podName: string) => ({ identity: 'spiffe://cluster.local/ns/istio-system/sa/ztunnel', namespace: 'istio-system', serviceAccount: 'ztunnel', podName, authenticator: 'token-review' });
    expect(shareKey(zt('ztunnel-a'), true).key).not.toBe(shareKey(zt('ztunnel-b'), true).key);
    expect(shareKey(zt('ztunnel-a'), true).key).not.toBe(shareKey(zt('ztunnel-a'), false).key);
    expect(shareKey(zt('ztunnel-a'), true).who).toBe('node agent istio-system/ztunnel-a');
  });

  it('a job that throws rejects only its own promise', async () => {
    const admission = new Admission({ maxPending: 10, priorityNamespaces: [] });
    const bad = admission.run(false, () => {
      throw new Error('boom');
    });
    const good = admission.run(false, () => 42);
    await expect(bad).rejects.toThrow('boom');
    await expect(good).resolves.toBe(42);
  });
});
