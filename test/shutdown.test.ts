/**
 * SIGTERM under load, as the issue reported it: the real command with two workers, 8 warm
 * connections, 200 CreateCertificate calls released together and SIGTERM a few milliseconds later,
 * repeated. Every call must end OK or UNAVAILABLE (none hangs into DEADLINE_EXCEEDED), every
 * certificate audited as issued must have reached its caller, and the process exits 0.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { loadServices } from '../src/server/index.js';
import { removeDir, tempDir } from './helpers/pki.js';
import { call, clientFor, fetchText, type TestServer } from './helpers/server.js';
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
  await waitForStatus(`http://127.0.0.1:${monPort}/readyz`, 200, 30_000);
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
      s.proc.child.kill('SIGTERM');
      const results = await Promise.all(calls);
      clients.forEach((c) => c.close());
      const outcomes = results.map((r) => (r.err ? grpc.status[r.err.code] : 'OK'));
      expect({ run, unexpected: outcomes.filter((o) => o !== 'OK' && o !== 'UNAVAILABLE') }).toEqual({ run, unexpected: [] });
      expect(await s.proc.exited).toBe(0);
      const audited = readFileSync(s.auditFile, 'utf8').split('\n').filter((l) => l.includes('"event":"issued"')).length;
      expect({ run, audited }).toEqual({ run, audited: outcomes.filter((o) => o === 'OK').length + 8 });
    }
  }, 600_000);

  it('--shutdown-delay: not ready (gRPC health and /readyz) yet still answering, then exit 0', async () => {
    const s = await serveDev('delay', ['--shutdown-delay', '3s']);
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
      s.proc.child.kill('SIGTERM');
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
});
