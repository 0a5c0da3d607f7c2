/**
 * SIGTERM under load, as the issue reported it: the real command with two workers, 8 warm
 * connections, 200 CreateCertificate calls released together and SIGTERM a few milliseconds later,
 * repeated. Every call must end OK or UNAVAILABLE (none hangs into DEADLINE_EXCEEDED), every
 * certificate audited as issued must have reached its caller, and the process exits 0. Before the
 * fix, a SIGTERM reaching the workers directly as well killed a worker mid-drain (INTERNAL errors).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { loadServices } from '../src/server/index.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair as joseKeyPair, SignJWT } from 'jose';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, TEST_ISSUER, type TestServer } from './helpers/server.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const work = tempDir('svid-ca-sigterm-');
afterAll(() => removeDir(work));
const devDir = join(work, 'certs-dev');

async function serveDev(run: string, extra: string[]) {
  const [grpcPort, monPort] = [await freePort(), await freePort()];
  const auditFile = join(work, `audit-${run}.log`);
  const proc = startCli(['serve', '--dev', '--dev-dir', devDir, '--workers', '2', '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--audit-log', auditFile, ...extra]);
  await waitForStatus(`http://127.0.0.1:${monPort}/readyz`, 200, 60_000);
  const { mintDevToken, ensureDevEnvironment } = await import('../src/dev/index.js');
  const token = await mintDevToken(await ensureDevEnvironment(devDir), { namespace: 'demo', serviceAccount: 'web' });
  const rootPem = readFileSync(join(devDir, 'cacerts', 'root-cert.pem'), 'utf8');
  return { proc, grpcPort, monPort, auditFile, token, rootPem };
}

describe('SIGTERM with two workers and calls in flight', () => {
  it('20 runs: every call ends OK or UNAVAILABLE, nothing issued goes undelivered, exit 0', async () => {
    const csrs = Array.from({ length: 200 }, () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] }));
    for (let run = 0; run < 20; run++) {
      const s = await serveDev(String(run), ['--shutdown-delay', '0s', '--shutdown-grace', '20s']);
      const clients = Array.from({ length: 8 }, () => clientFor({ address: `localhost:${s.grpcPort}` } as TestServer, s.rootPem));
      // Warm: each connection has carried a call (agents keep theirs open between renewals).
      for (const c of clients) expect((await call(c, { csr: csrs[0]! }, { authorization: `Bearer ${s.token}` })).err).toBeUndefined();
      const calls = csrs.map((csr, i) => call(clients[i % 8]!, { csr }, { authorization: `Bearer ${s.token}` }));
      await sleep([0, 3, 10, 30, 60][run % 5]!);
      // Even runs: SIGTERM to the primary only (Kubernetes signals PID 1). Odd runs: to every
      // process at once, as a terminal's Ctrl+C or `kill -TERM -PGID` does; each worker then gets a
      // second SIGTERM from the primary in the middle of its drain.
      const workers = run % 2 ? execFileSync('ps', ['-o', 'pid=', '--ppid', String(s.proc.child.pid)], { encoding: 'utf8' }).split('\n').map((l) => Number(l.trim())).filter(Boolean) : [];
      s.proc.child.kill('SIGTERM');
      for (const pid of workers) process.kill(pid, 'SIGTERM');
      const results = await Promise.all(calls);
      clients.forEach((c) => c.close());
      const outcomes = results.map((r) => (r.err ? grpc.status[r.err.code] : 'OK'));
      expect({ run, unexpected: outcomes.filter((o) => o !== 'OK' && o !== 'UNAVAILABLE') }).toEqual({ run, unexpected: [] });
      expect(await s.proc.exited).toBe(0);
      const audited = readFileSync(s.auditFile, 'utf8').split('\n').filter((l) => l.includes('"event":"issued"')).length;
      expect({ run, audited }).toEqual({ run, audited: outcomes.filter((o) => o === 'OK').length + 8 });
    }
  }, 600_000);

  // SIGINT too: Ctrl+C on `npm start` runs the same graceful stop as Kubernetes' SIGTERM.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) it(`--shutdown-delay after ${signal}: not ready (gRPC health and /readyz) yet still answering, then exit 0`, async () => {
    const s = await serveDev(`delay-${signal}`, ['--shutdown-delay', '3s']);
    const csr = () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] });
    const client = clientFor({ address: `localhost:${s.grpcPort}` } as TestServer, s.rootPem);
    const { health } = loadServices();
    const hc = new health(`localhost:${s.grpcPort}`, grpc.credentials.createSsl(Buffer.from(s.rootPem))) as unknown as {
      Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      close(): void;
    };
    const check = () => new Promise<string | undefined>((r) => hc.Check({ service: '' }, (_err, res) => r(res?.status)));
    try {
      expect(await check()).toBe('SERVING');
      expect((await call(client, { csr: csr() }, { authorization: `Bearer ${s.token}` })).err).toBeUndefined();
      s.proc.child.kill(signal);
      let status: string | undefined;
      for (let i = 0; i < 100 && (status = await check()) !== 'NOT_SERVING'; i++) await sleep(10);
      expect(status).toBe('NOT_SERVING');
      expect((await fetchText(`http://127.0.0.1:${s.monPort}/readyz`)).status).toBe(503);
      // Still inside the delay (the process has not exited): a call on the open connection is answered.
      const during = await call(client, { csr: csr() }, { authorization: `Bearer ${s.token}` });
      expect(s.proc.child.exitCode).toBeNull();
      expect(during.err).toBeUndefined();
      expect(s.proc.stdout.join('')).toContain('still answering during --shutdown-delay');
    } finally {
      client.close();
      hc.close();
    }
    expect(await s.proc.exited).toBe(0);
  }, 60_000);

  it('calls still unanswered when the grace ends get UNAVAILABLE, and are not issued afterwards', async () => {
    // A JWKS endpoint that holds its answer: calls wait in authentication past the grace.
    const { privateKey, publicKey } = await joseKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' };
    const held: (() => void)[] = [];
    const jwks: Server = createServer((_req, res) => held.push(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }))));
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
    const root = makeRoot();
    const dir = writeCacerts(join(work, 'grace-cacerts'), { signer: makeIntermediate(root), roots: [root] });
    const auditLog = join(work, 'grace-audit.log');
    const s = await startTestServer({
      cacerts: dir,
      issuer: await createTestIssuer(tempDir('svid-ca-grace-')),
      auditLog,
      jwt: { issuer: TEST_ISSUER, audience: 'istio-ca', jwksUri: `http://127.0.0.1:${(jwks.address() as { port: number }).port}/jwks` },
    });
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(TEST_ISSUER).setSubject('system:serviceaccount:demo:web').setAudience('istio-ca').setIssuedAt().setExpirationTime('1h').sign(privateKey);
    const client = clientFor(s, root.certPem);
    try {
      const calls = Array.from({ length: 5 }, () => call(client, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] }) }, { authorization: `Bearer ${token}` }));
      for (let i = 0; i < 200 && held.length === 0; i++) await sleep(10);
      expect(held.length).toBeGreaterThan(0);
      await s.service.close(300, 0);
      const results = await Promise.all(calls);
      expect(results.map((r) => r.err?.code)).toEqual(Array(5).fill(grpc.status.UNAVAILABLE));
      expect(results[0]!.err!.details).toContain('shutting down');
      // The held keys arrive late: the calls resume, and none is signed.
      held.forEach((release) => release());
      await sleep(300);
      expect(s.logs.lines.filter((l) => l.includes('"msg":"certificate issued"'))).toEqual([]);
      expect(s.logs.lines.filter((l) => l.includes('"msg":"certificate denied"') && l.includes('shutting down')).length).toBeGreaterThan(0);
      expect(readFileSync(auditLog, 'utf8')).not.toContain('"event":"issued"');
    } finally {
      client.close();
      jwks.closeAllConnections();
      jwks.close();
    }
  }, 60_000);
});
