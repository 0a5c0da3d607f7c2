/**
 * --workers N: the real command with two worker processes sharing the gRPC port, the primary
 * serving health and aggregated metrics, reloads reaching every worker, a killed worker replaced,
 * and SIGTERM draining all of them.
 */
import { execFileSync } from 'node:child_process';
import { connect } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair, inspectCertificate } from '../src/pki/index.js';
import { makeIntermediate, makeRoot, removeDir, tempDir } from './helpers/pki.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { opensslCa, opensslVerdict, STDEXT } from './helpers/openssl-ca.js';
import { exportJWK, generateKeyPair as joseKeyPair } from 'jose';
import { call, clientFor, createTestIssuer, fetchText, type TestServer } from './helpers/server.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';

const work = tempDir('svid-ca-workers-');
let proc: CliProcess | undefined;
afterAll(async () => {
  if (proc && proc.child.exitCode === null) {
    proc.child.kill('SIGTERM');
    await proc.exited;
  }
  removeDir(work);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const metric = (body: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1]);
const workerPids = (primary: number) =>
  execFileSync('ps', ['-o', 'pid=', '--ppid', String(primary)], { encoding: 'utf8' }).split('\n').map((l) => Number(l.trim())).filter(Boolean);

function servingSerial(port: number, rootPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: rootPem, ALPNProtocols: ['h2'] }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.end();
    });
    s.on('error', reject);
  });
}

describe('svid-ca serve --workers 2', () => {
  it('shares the port, aggregates metrics, reloads in every worker, replaces a dead worker, drains on SIGTERM', async () => {
    const root = makeRoot();
    const first = makeIntermediate(root, { cn: 'first' });
    const dir = join(work, 'cacerts');
    const volume = new SecretVolume(dir);
    volume.write(istioFiles(first, [root]));
    const issuer = await createTestIssuer(work);
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    proc = startCli([
      'serve', '--workers', '2', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile,
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--reload-interval', '1s',
    ]);
    const base = `http://127.0.0.1:${monPort}`;
    await waitForStatus(`${base}/readyz`);
    expect(workerPids(proc.child.pid!)).toHaveLength(2);

    // One server: every connection, whichever worker takes it, meets the one serving certificate
    // the primary issued.
    const serials = new Set<string>();
    for (let i = 0; i < 10; i++) serials.add(await servingSerial(grpcPort, root.certPem));
    expect(serials.size).toBe(1);

    // Calls spread over many connections; the primary's /metrics adds up both workers.
    const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    const id = 'spiffe://cluster.local/ns/demo/sa/web';
    let issued = 0;
    for (let i = 0; i < 8; i++) {
      const c = clientFor({ address: `localhost:${grpcPort}` } as TestServer, root.certPem);
      const r = await call(c, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] }) }, { authorization: `Bearer ${token}` });
      c.close();
      if (!r.err) issued++;
    }
    expect(issued).toBe(8);
    // Both workers accept on the one port: the issuances were logged by two processes.
    const issuers = new Set(proc.stdout.join('').split('\n').filter((l) => l.includes('"msg":"certificate issued"')).map((l) => JSON.parse(l).worker));
    expect(issuers.size).toBe(2);
    const metrics = (await fetchText(`${base}/metrics`)).body;
    expect(metric(metrics, 'citadel_server_success_cert_issuance_count')).toBe(8);
    expect(metric(metrics, 'citadel_server_csr_count')).toBe(8);
    expect(metrics.match(/svid_ca_cert_expiry_timestamp_seconds\{role="serving"/g)).toHaveLength(1);
    expect(metrics).toContain(`serial="${[...serials][0]!.toLowerCase()}"`);
    expect(metrics.match(/svid_ca_cert_expiry_timestamp_seconds\{role="root"/g)).toHaveLength(1);

    // A reload reaches every worker.
    const second = makeIntermediate(root, { cn: 'second' });
    volume.write(istioFiles(second, [root]));
    for (let i = 0; i < 60; i++) {
      const body = (await fetchText(`${base}/metrics`)).body;
      if (/svid_ca_bundle_reloads_total\{result="success"\} 1/.test(body)) break;
      await sleep(100);
    }
    // One rotation counts once, however many workers serve it; and both workers sign with it.
    await sleep(500);
    const after = (await fetchText(`${base}/metrics`)).body;
    expect(after).toMatch(/svid_ca_bundle_reloads_total\{result="success"\} 1\n/);
    expect(after.match(/svid_ca_cert_expiry_timestamp_seconds\{role="serving"/g)).toHaveLength(1);
    const signers = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const c = clientFor({ address: `localhost:${grpcPort}` } as TestServer, root.certPem);
      const r = await call(c, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] }) }, { authorization: `Bearer ${token}` });
      c.close();
      expect(r.err).toBeUndefined();
      signers.add(new X509Certificate(r.res!.cert_chain[1]!).subject);
    }
    expect([...signers]).toEqual([second.cert.subject]);
    const out = proc.stdout.join('');
    expect(out.match(/"msg":"starting svid-ca"/g)).toHaveLength(1);
    expect(out.match(/"msg":"signing bundle loaded"/g)).toHaveLength(1);
    expect(out.match(/"msg":"signing bundle reloaded"/g)).toHaveLength(1);
    const reloaded = JSON.parse(out.split('\n').find((l) => l.includes('"msg":"signing bundle reloaded"'))!);
    expect(reloaded.signerSki).toBe(inspectCertificate(Buffer.from(second.cert.raw)).subjectKeyId!.toString('hex'));
    expect(after).toContain('CN=second');
    expect(after).not.toContain('CN=first');

    // A worker that dies is replaced; the service stays up.
    const [victim] = workerPids(proc.child.pid!);
    process.kill(victim!, 'SIGKILL');
    await sleep(300);
    for (let i = 0; i < 50 && !(workerPids(proc.child.pid!).length === 2 && (await fetchText(`${base}/readyz`)).status === 200); i++) await sleep(100);
    const pids = workerPids(proc.child.pid!);
    expect(pids).toHaveLength(2);
    expect(pids).not.toContain(victim);
    expect((await fetchText(`${base}/readyz`)).status).toBe(200);
    expect(proc.stdout.join('')).toContain('worker exited; restarting it');

    // SIGTERM to the primary drains the workers and exits 0.
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
    expect(proc.stdout.join('').match(/"msg":"stopped"/g)!.length).toBeGreaterThanOrEqual(3);
    expect(readFileSync(join(dir, 'ca-cert.pem'), 'utf8')).toBe(second.certPem);
  }, 60_000);

  it('a bundle that breaks a path rule is refused at reload and every worker keeps signing; a key removed from the JWKS file stops in every worker', async () => {
    // Made by openssl (issue #11 case 2): an intermediate limited to serverAuth, under the same root.
    const root = opensslCa(work, 'workers-reload root', STDEXT, undefined, { days: 3650 });
    const good = opensslCa(work, 'workers-reload good', STDEXT, root);
    const eku = opensslCa(work, 'workers-reload eku serverAuth', [...STDEXT, 'extendedKeyUsage=serverAuth'], root);
    expect(opensslVerdict(eku, [eku.certPem], root.certPem)).toMatch(/unsuitable certificate purpose/);
    const dir = join(work, 'reload-cacerts');
    const volume = new SecretVolume(dir);
    volume.write(istioFiles(good, [root]));
    const issuer = await createTestIssuer(work);
    // The JWKS as a Kubernetes volume too: the test issuer's key plus a second one.
    const second = await joseKeyPair('ES256', { extractable: true });
    const secondJwk = { ...(await exportJWK(second.publicKey)), kid: 'second', alg: 'ES256', use: 'sig' };
    const issuerKeys = (JSON.parse(readFileSync(issuer.jwksFile, 'utf8')) as { keys: object[] }).keys;
    const jwksDir = join(work, 'reload-jwks');
    const jwksVolume = new SecretVolume(jwksDir);
    jwksVolume.write({ 'jwks.json': JSON.stringify({ keys: [...issuerKeys, secondJwk] }) });
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    proc = startCli([
      'serve', '--workers', '2', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', join(jwksDir, 'jwks.json'),
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--reload-interval', '1s',
    ]);
    const base = `http://127.0.0.1:${monPort}`;
    await waitForStatus(`${base}/readyz`);
    const id = 'spiffe://cluster.local/ns/demo/sa/web';
    const firstKeyToken = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    const secondKeyToken = await issuer.token({ namespace: 'demo', serviceAccount: 'web', signWith: { key: second.privateKey, kid: 'second' } });
    // Eight new connections: node:cluster hands them to both workers in turn.
    const eightCalls = async (token: string) => {
      const results = [];
      for (let i = 0; i < 8; i++) {
        const c = clientFor({ address: `localhost:${grpcPort}` } as TestServer, root.certPem);
        results.push(await call(c, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] }) }, { authorization: `Bearer ${token}` }));
        c.close();
      }
      return results;
    };

    volume.write(istioFiles(eku, [root]));
    for (let i = 0; i < 100 && !/svid_ca_bundle_reloads_total\{result="failure"\} [1-9]/.test((await fetchText(`${base}/metrics`)).body); i++) await sleep(100);
    const metrics = (await fetchText(`${base}/metrics`)).body;
    expect(metrics).toMatch(/svid_ca_bundle_reloads_total\{result="failure"\} [1-9]/);
    expect(metrics).toMatch(/svid_ca_bundle_reloads_total\{result="success"\} 0\n/);
    const refused = proc.stdout.join('').split('\n').find((l) => l.includes('"msg":"cacerts reload refused; still serving with the current bundle"'));
    expect(JSON.parse(refused!).problem).toMatch(/workers-reload eku serverAuth.*limits extended key usage to serverAuth/);
    expect((await fetchText(`${base}/readyz`)).status).toBe(200);
    const kept = await eightCalls(firstKeyToken);
    expect(kept.map((r) => r.err?.message)).toEqual(Array(8).fill(undefined));
    expect(new Set(kept.map((r) => new X509Certificate(r.res!.cert_chain[1]!).subject))).toEqual(new Set([good.cert.subject]));
    expect(new Set(proc.stdout.join('').split('\n').filter((l) => l.includes('"msg":"certificate issued"')).map((l) => JSON.parse(l).worker)).size).toBe(2);

    // Revoking the first key: within the reload interval no worker accepts a token it signed.
    jwksVolume.write({ 'jwks.json': JSON.stringify({ keys: [secondJwk] }) });
    for (let i = 0; i < 100 && (await eightCalls(firstKeyToken)).some((r) => r.err === undefined); i++) await sleep(200);
    const revoked = await eightCalls(firstKeyToken);
    expect(revoked.map((r) => r.err?.details)).toEqual(Array(8).fill('request authenticate failure: token is signed by a key the issuer does not publish'));
    expect((await eightCalls(secondKeyToken)).map((r) => r.err?.message)).toEqual(Array(8).fill(undefined));

    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  }, 90_000);

  it('/readyz turns 503 when an intermediate above the signer expires while the workers run', async () => {
    const root = makeRoot({ cn: 'workers-expiry root' });
    const upper = makeIntermediate(root, { cn: 'workers-expiry upper', notAfter: new Date(Date.now() + 25_000) });
    const signer = makeIntermediate(upper, { cn: 'workers-expiry signer' });
    const dir = join(work, 'expiry-cacerts');
    new SecretVolume(dir).write({ ...istioFiles(signer, [root]), 'cert-chain.pem': signer.certPem + upper.certPem + root.certPem });
    const issuer = await createTestIssuer(work);
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    proc = startCli([
      'serve', '--workers', '2', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile,
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`,
    ]);
    const base = `http://127.0.0.1:${monPort}`;
    await waitForStatus(`${base}/readyz`);
    expect(Date.now()).toBeLessThan(new Date(upper.cert.validTo).getTime());
    await sleep(Math.max(0, new Date(upper.cert.validTo).getTime() - Date.now()));
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i++) {
      await sleep(200);
      status = (await fetchText(`${base}/readyz`)).status;
    }
    expect(status).toBe(503);
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  }, 60_000);

  it('refuses a broken bundle in the primary with one line and exit 1', async () => {
    const issuer = await createTestIssuer(work);
    const r = startCli(['serve', '--workers', '2', '--cacerts', join(work, 'nope'), '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0']);
    expect(await r.exited).toBe(1);
    expect(r.stderr.join('').trim().split('\n')).toEqual([`svid-ca: ${join(work, 'nope')}: cacerts folder does not exist`]);
  });
});

describe('usable cores', () => {
  it('caps the CPU count by a cgroup v2 or v1 quota, and ignores "max"', async () => {
    const { usableCores } = await import('../src/server/index.js');
    const { availableParallelism } = await import('node:os');
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const v2 = join(work, 'cg2');
    mkdirSync(v2, { recursive: true });
    writeFileSync(join(v2, 'cpu.max'), '150000 100000\n');
    expect(usableCores(v2)).toBe(Math.min(2, availableParallelism()));
    writeFileSync(join(v2, 'cpu.max'), 'max 100000\n');
    expect(usableCores(v2)).toBe(availableParallelism());
    const v1 = join(work, 'cg1');
    mkdirSync(join(v1, 'cpu'), { recursive: true });
    writeFileSync(join(v1, 'cpu', 'cpu.cfs_quota_us'), '50000');
    writeFileSync(join(v1, 'cpu', 'cpu.cfs_period_us'), '100000');
    expect(usableCores(v1)).toBe(1);
    expect(usableCores(join(work, 'none'))).toBe(availableParallelism());
  });
});
