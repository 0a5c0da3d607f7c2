/**
 * Hostile input, faults and shutdown, provoked for real against the running server: oversize and
 * garbage frames on the TLS port, a JWKS server that goes away, a cacerts folder removed, a signer
 * that expires mid-test, an audit file that fails at the file-descriptor level (/dev/full), SIGTERM
 * with 200 calls in flight.
 */
import { createServer, type Server } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { chmodSync, readFileSync, renameSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { calculateJwkThumbprint, exportJWK, generateKeyPair as joseKeyPair, SignJWT } from 'jose';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair, type SanEntry } from '../src/pki/index.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { allLogLines, call, clientFor, createTestIssuer, fetchText, startTestServer, TEST_ISSUER, type TestIssuer, type TestServer } from './helpers/server.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const csr = (sans: SanEntry[] = [{ type: 'uri', value: ID }]) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const root = makeRoot({ notBefore: new Date(Date.now() - 86_400_000) });
const signer = makeIntermediate(root);
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

let issuer: TestIssuer;
async function server(extra: Partial<Parameters<typeof startTestServer>[0]> = {}): Promise<TestServer & { token: string; dir: string }> {
  issuer ??= await createTestIssuer();
  const dir = extra.cacerts ?? writeCacerts(tempDir(), { signer, roots: [root] });
  const s = await startTestServer({ cacerts: dir, issuer, ...extra });
  cleanups.push(() => removeDir(dir), () => s.close());
  return Object.assign(s, { token: await issuer.token({ namespace: 'demo', serviceAccount: 'web' }), dir });
}

async function issue(s: TestServer & { token: string }, request: Record<string, unknown> = { csr: csr() }, metadata?: Record<string, string>) {
  const c = clientFor(s, root.certPem);
  try {
    return await call(c, request, metadata ?? { authorization: `Bearer ${s.token}` });
  } finally {
    c.close();
  }
}

describe('input limits', () => {
  it('a request over --max-request-bytes is RESOURCE_EXHAUSTED; the server keeps serving', async () => {
    const s = await server({ maxRequestBytes: 64 * 1024 });
    const big = await issue(s, { csr: 'x'.repeat(70 * 1024) });
    expect(big.err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await issue(s)).err).toBeUndefined();
  });

  it.each<[string, () => Record<string, unknown>, () => Record<string, string> | undefined, grpc.status, RegExp]>([
    ['more than 8 SANs', () => ({ csr: csr(Array.from({ length: 9 }, (_, i) => ({ type: 'uri' as const, value: `${ID}${i}` }))) }), () => undefined, grpc.status.INVALID_ARGUMENT, /at most 8/],
    ['a SAN longer than 1 KiB', () => ({ csr: csr([{ type: 'uri', value: `${ID}/${'a'.repeat(1100)}` }]) }), () => undefined, grpc.status.INVALID_ARGUMENT, /longer than 1024/],
    ['metadata nested deeper than 4 levels', () => {
      let v: Record<string, unknown> = { stringValue: 'x' };
      for (let i = 0; i < 6; i++) v = { structValue: { fields: { k: v } } };
      return { csr: csr(), metadata: { fields: { deep: v } } };
    }, () => undefined, grpc.status.INVALID_ARGUMENT, /deeper than 4/],
    ['metadata larger than 4 KiB', () => ({ csr: csr(), metadata: { fields: { CertSigner: { stringValue: 'x'.repeat(5000) } } } }), () => undefined, grpc.status.INVALID_ARGUMENT, /larger than 4096/],
    ['a JWT larger than 16 KiB', () => ({ csr: csr() }), () => ({ authorization: `Bearer ${'a'.repeat(17 * 1024)}` }), grpc.status.UNAUTHENTICATED, /larger than 16384/],
  ])('%s', async (_name, request, metadata, code, message) => {
    const s = await server();
    const r = await issue(s, request(), metadata());
    expect(r.err?.code).toBe(code);
    expect(r.err?.details).toMatch(message);
  });

  it('absurd validity_duration values never overflow a date', async () => {
    const s = await server();
    for (const v of ['9223372036854775807', '-9223372036854775808', '99999999999']) {
      const r = await issue(s, { csr: csr(), validity_duration: v });
      if (v.startsWith('-')) expect(r.err).toBeUndefined();
      else expect(r.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    }
  });
});

describe('garbage on the wire', () => {
  it('garbage bytes over TCP and over TLS close that connection only; other clients are served', async () => {
    const s = await server();
    const port = s.service.grpcPort;
    // Resolves true when the server closed the connection within 5 s.
    const closedByServer = (open: (done: (closed: boolean) => void) => { destroy(): void }) =>
      new Promise<boolean>((resolve) => {
        const sock = open(resolve);
        setTimeout(() => {
          sock.destroy();
          resolve(false);
        }, 5000).unref();
      });
    const tcpClosed = await closedByServer((done) => {
      const sock = tcpConnect(port, '127.0.0.1', () => sock.write(Buffer.from('GET / HTTP/1.1\r\n\r\n\x00\xff\xfe garbage')));
      sock.on('close', () => done(true));
      sock.on('error', () => undefined);
      return sock;
    });
    const tlsClosed = await closedByServer((done) => {
      const sock: TLSSocket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: root.certPem, ALPNProtocols: ['h2'] }, () => {
        sock.write(Buffer.alloc(4096, 0xab));
      });
      sock.resume(); // consume the server's GOAWAY so that its end-of-stream is seen
      sock.on('close', () => done(true));
      sock.on('error', () => undefined);
      return sock;
    });
    expect({ tcpClosed, tlsClosed }).toEqual({ tcpClosed: true, tlsClosed: true });
    expect((await issue(s)).err).toBeUndefined();
  });

  it('--max-connections closes connections past the cap; held ones keep working', async () => {
    const s = await server({ limits: { maxConnections: 2 } });
    const open = (): Promise<TLSSocket | undefined> =>
      new Promise((resolve) => {
        const sock = tlsConnect({ host: '127.0.0.1', port: s.service.grpcPort, servername: 'localhost', ca: root.certPem, ALPNProtocols: ['h2'] }, () => resolve(sock));
        sock.on('error', () => resolve(undefined));
        sock.on('close', () => resolve(undefined));
      });
    const held = [await open(), await open()];
    expect(held.every(Boolean)).toBe(true);
    expect(await open()).toBeUndefined();
    for (const h of held) h?.destroy();
    await sleep(100);
    expect((await issue(s)).err).toBeUndefined();
  });
});

describe('faults', () => {
  it('JWKS server goes away: known keys keep working, an unknown key is UNAVAILABLE; with no keys ever fetched, UNAVAILABLE', async () => {
    const { privateKey, publicKey } = await joseKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256' };
    const kid = await calculateJwkThumbprint(jwk);
    const jwks: Server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...jwk, kid }] })));
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));
    const jwksPort = (jwks.address() as { port: number }).port;
    const mint = (k = privateKey, id = kid) =>
      new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: id }).setIssuer(TEST_ISSUER).setSubject('system:serviceaccount:demo:web').setAudience('istio-ca').setIssuedAt().setExpirationTime('1h').sign(k);
    issuer ??= await createTestIssuer();
    const s = await server({ jwt: { issuer: TEST_ISSUER, audience: 'istio-ca', jwksUri: `http://127.0.0.1:${jwksPort}/openid/v1/jwks`, jwksCooldownMs: 0 } });
    expect((await issue(s, { csr: csr() }, { authorization: `Bearer ${await mint()}` })).err).toBeUndefined();
    await new Promise<void>((r) => jwks.close(() => r()));
    jwks.closeAllConnections();
    // A new token (not in the verified-token cache) signed by the known key still verifies.
    expect((await issue(s, { csr: csr() }, { authorization: `Bearer ${await mint()}` })).err).toBeUndefined();
    const other = await joseKeyPair('ES256');
    const unknown = await issue(s, { csr: csr() }, { authorization: `Bearer ${await mint(other.privateKey, 'rotated-key')}` });
    expect(unknown.err?.code).toBe(grpc.status.UNAVAILABLE);

    const down = await server({ jwt: { issuer: TEST_ISSUER, audience: 'istio-ca', jwksUri: `http://127.0.0.1:${jwksPort}/openid/v1/jwks` } });
    const r = await issue(down, { csr: csr() }, { authorization: `Bearer ${await mint()}` });
    expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.err?.details).toMatch(/cannot be fetched/);
  });

  it('cacerts folder deleted under the running server: keeps serving, stays ready, recovers when it returns', async () => {
    const dir = tempDir('svid-ca-vanishing-');
    const volume = new SecretVolume(dir);
    volume.write(istioFiles(signer, [root]));
    const s = await server({ cacerts: dir, reloadIntervalMs: 1000 });
    removeDir(dir);
    expect(s.service.lifecycle.checkNow()?.result).toBe('failure');
    expect((await issue(s)).err).toBeUndefined();
    expect((await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/readyz`)).status).toBe(200);
    expect(s.logs.records().some((r) => r.msg === 'cacerts reload refused; still serving with the current bundle' && /does not exist/.test(String(r.problem)))).toBe(true);
    const next = makeIntermediate(root, { cn: 'after the outage' });
    new SecretVolume(dir).write(istioFiles(next, [root]));
    expect(s.service.lifecycle.checkNow()?.result).toBe('success');
  });

  it('the signer expiring while running: not ready, UNAVAILABLE, negative expiry metric; recovers when a valid bundle is mounted', async () => {
    const shortLived = makeIntermediate(root, { notAfter: new Date(Date.now() + 2500) });
    const dir = tempDir('svid-ca-expiring-');
    const volume = new SecretVolume(dir);
    volume.write(istioFiles(shortLived, [root]));
    const s = await server({ cacerts: dir, reloadIntervalMs: 1000 });
    expect((await issue(s)).err).toBeUndefined();
    await sleep(3000);
    const r = await issue(s);
    expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
    await sleep(1100);
    const base = `http://127.0.0.1:${s.service.monitoringPort}`;
    expect((await fetchText(`${base}/readyz`)).status).toBe(503);
    const metrics = (await fetchText(`${base}/metrics`)).body;
    expect(Number(/^citadel_server_cert_chain_expiry_seconds (\S+)$/m.exec(metrics)?.[1])).toBeLessThan(0);
    volume.write(istioFiles(makeIntermediate(root, { cn: 'replacement' }), [root]));
    expect(s.service.lifecycle.checkNow()?.result).toBe('success');
    expect((await issue(s)).err).toBeUndefined();
    await sleep(1100);
    expect((await fetchText(`${base}/readyz`)).status).toBe(200);
  });

  it('an audit file that cannot be written (ENOSPC from /dev/full): UNAVAILABLE, no certificate; recovers when writes succeed', async () => {
    const work = tempDir('svid-ca-audit-');
    cleanups.push(() => removeDir(work));
    const link = join(work, 'audit.log');
    symlinkSync('/dev/full', link);
    const s = await server({ auditLog: link });
    const failed = await issue(s);
    expect(failed.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(failed.err?.details).toMatch(/audit/);
    expect(failed.res).toBeUndefined();
    // The disk "recovers": the path now leads to a writable file.
    writeFileSync(join(work, 'real.log'), '');
    symlinkSync(join(work, 'real.log'), join(work, 'next'));
    renameSync(join(work, 'next'), link);
    const ok = await issue(s);
    expect(ok.err).toBeUndefined();
    const lines = readFileSync(join(work, 'real.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; serial?: string });
    expect(lines.at(-1)?.event).toBe('issued');
    expect(lines.at(-1)?.serial).toMatch(/^[0-9a-f]+$/);
    expect(s.logs.records().some((r) => r.msg === 'audit log write failed: no certificate is issued until it succeeds again')).toBe(true);
  });

  it('a fault inside one request (a signer key that cannot sign) is INTERNAL; the server keeps serving', async () => {
    const s = await server();
    const good = s.service.authority.bundle;
    s.service.authority.replaceBundle({ ...good, signer: { ...good.signer, privateKey: good.signingCert.x509.publicKey } });
    const r = await issue(s);
    expect(r.err?.code).toBe(grpc.status.INTERNAL);
    expect(r.err?.details).not.toMatch(/KeyObject|at .*\.js/);
    s.service.authority.replaceBundle(good);
    expect((await issue(s)).err).toBeUndefined();
  });
});

describe('secrets hygiene', () => {
  it('warns when the signing key is readable by group or others', async () => {
    const dir = writeCacerts(tempDir(), { signer, roots: [root] });
    chmodSync(join(dir, 'ca-key.pem'), 0o644);
    const s = await server({ cacerts: dir });
    expect(s.logs.lines.some((l) => l.includes('ca-key.pem is readable by others (mode 0644)'))).toBe(true);
  });

  it('refuses the dev CA with NODE_ENV=production', async () => {
    const work = tempDir('svid-ca-prod-');
    cleanups.push(() => removeDir(work));
    const r = startCli(['serve', '--dev', '--dev-dir', join(work, 'certs-dev'), '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0'], { NODE_ENV: 'production' });
    expect(await r.exited).toBe(2);
    expect(r.stderr.join('')).toMatch(/development CA .* refused with NODE_ENV=production/);
  });
});

describe('graceful shutdown', () => {
  it('SIGTERM with 200 calls in flight: each is issued or UNAVAILABLE, none hangs, /readyz turns 503, exit 0', async () => {
    const work = tempDir('svid-ca-shutdown-');
    cleanups.push(() => removeDir(work));
    const devDir = join(work, 'certs-dev');
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    const auditFile = join(work, 'audit.log');
    const proc = startCli(['serve', '--dev', '--dev-dir', devDir, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--audit-log', auditFile, '--shutdown-grace', '10s']);
    await waitForStatus(`http://127.0.0.1:${monPort}/readyz`);
    const { mintDevToken, ensureDevEnvironment } = await import('../src/dev/index.js');
    const token = await mintDevToken(await ensureDevEnvironment(devDir), { namespace: 'demo', serviceAccount: 'web' });
    const rootPem = readFileSync(join(devDir, 'cacerts', 'root-cert.pem'), 'utf8');
    const clients = Array.from({ length: 4 }, () => clientFor({ address: `localhost:${grpcPort}` } as TestServer, rootPem));
    cleanups.push(() => clients.forEach((c) => c.close()));
    const csrs = Array.from({ length: 200 }, () => csr());
    const calls = csrs.map((c, i) => call(clients[i % 4]!, { csr: c }, { authorization: `Bearer ${token}` }));
    await sleep(20);
    proc.child.kill('SIGTERM');
    // Not ready as soon as the signal is handled (or the listener is gone): within a few event-loop turns.
    const notReady = await Promise.race([
      (async () => {
        for (;;) {
          const r = await fetchText(`http://127.0.0.1:${monPort}/readyz`).catch(() => ({ status: 503 }));
          if (r.status === 503) return true;
          await sleep(5);
        }
      })(),
      sleep(2000).then(() => false),
    ]);
    expect(notReady).toBe(true);
    const results = await Promise.race([Promise.all(calls), sleep(20_000).then(() => 'hung' as const)]);
    expect(results).not.toBe('hung');
    const outcomes = (results as Awaited<(typeof calls)[number]>[]).map((r) => (r.err ? grpc.status[r.err.code] : 'OK'));
    expect(outcomes.filter((o) => o !== 'OK' && o !== 'UNAVAILABLE')).toEqual([]);
    expect(await proc.exited).toBe(0);
    // Every issued certificate has its audit record, flushed before exit.
    const issued = outcomes.filter((o) => o === 'OK').length;
    const audited = readFileSync(auditFile, 'utf8').trim().split('\n').filter((l) => l.includes('"event":"issued"')).length;
    expect(audited).toBe(issued);
    expect(proc.stdout.join('')).toContain('"msg":"stopped"');
  }, 40_000);
});

afterAll(() => {
  for (const line of allLogLines) {
    expect(line).not.toMatch(/-----BEGIN/);
    expect(line).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
  }
});
