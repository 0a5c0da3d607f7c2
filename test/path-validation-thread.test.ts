/**
 * Issue #14 (storm memory): a serving process validates bundle paths with pkijs on its own event
 * loop, so it keeps no path-validation worker thread (~20 MiB each). Shown on the real processes
 * through Linux's thread names (/proc/<pid>/task/<tid>/comm): `serve` alone (cacerts and --self-signed), and `serve --workers 2`
 * (primary and both workers) at start, after a refused reload and after an accepted one. The
 * asynchronous path refuses a bad bundle (each shown bad by openssl) with exactly the synchronous
 * path's error, which still uses the thread (the cacerts CLI, tests).
 */
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleFromFiles, bundleFromFilesAsync, readCacertsFiles } from '../src/ca/index.js';
import { BundleError, buildCsrPem, generateKeyPair, PATH_VALIDATION_THREAD } from '../src/pki/index.js';
import { opensslCa, opensslVerdict, STDEXT } from './helpers/openssl-ca.js';
import { istioFiles, SecretVolume } from './helpers/k8s-volume.js';
import { removeDir, tempDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, type TestServer } from './helpers/server.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';

const work = tempDir('svid-ca-pathval-thread-');
const procs: CliProcess[] = [];
afterAll(async () => {
  for (const p of procs) {
    if (p.child.exitCode === null) {
      p.child.kill('SIGTERM');
      await p.exited;
    }
  }
  removeDir(work);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The names of a process's threads, as Linux shows them (15 characters at most). */
const threadNames = (pid: number) =>
  readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      return [readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
const workerPids = (primary: number) =>
  execFileSync('ps', ['-o', 'pid=', '--ppid', String(primary)], { encoding: 'utf8' }).split('\n').map((l) => Number(l.trim())).filter(Boolean);

const root = opensslCa(work, 'pathval-thread root', STDEXT, undefined, { days: 3650 });
const good = opensslCa(work, 'pathval-thread good', STDEXT, root);
const good2 = opensslCa(work, 'pathval-thread second', STDEXT, root);
/** Refused by a rule of ours (EKU nesting) and by pkijs (a permitted and an excluded URI name constraint). */
const bad = {
  eku: opensslCa(work, 'pathval-thread eku serverAuth', [...STDEXT, 'extendedKeyUsage=serverAuth'], root),
  nameConstraint: opensslCa(work, 'pathval-thread nc example.org', [...STDEXT, 'nameConstraints=critical,permitted;URI:example.org'], root),
  excluded: opensslCa(work, 'pathval-thread nc excluded', [...STDEXT, 'nameConstraints=critical,excluded;URI:cluster.local'], root),
};

describe('path validation in a serving process (issue #14)', () => {
  it('refuses each bad bundle asynchronously, without a worker thread, with the synchronous path\'s exact error', async () => {
    for (const [name, ca] of Object.entries(bad)) {
      expect(opensslVerdict(ca, [ca.certPem], root.certPem), name).toMatch(/error/);
    }
    expect(opensslVerdict(good, [good.certPem], root.certPem)).toBeUndefined();
    const filesOf = (signer: typeof good, name: string) => {
      const dir = join(work, `in-process-${name}`);
      new SecretVolume(dir).write(istioFiles(signer, [root]));
      return readCacertsFiles(dir);
    };

    // Asynchronous first: no thread is started in this process.
    const asyncErrors: Record<string, BundleError> = {};
    for (const [name, ca] of Object.entries(bad)) {
      const err = await bundleFromFilesAsync(filesOf(ca, name)).then(() => undefined, (e: unknown) => e);
      expect(err, name).toBeInstanceOf(BundleError);
      asyncErrors[name] = err as BundleError;
    }
    const accepted = await bundleFromFilesAsync(filesOf(good, 'good'));
    expect(accepted.signingCert.x509.subject).toBe(good.cert.subject);
    expect(threadNames(process.pid)).not.toContain(PATH_VALIDATION_THREAD);

    // The synchronous path refuses with the same file and message, and it does run the thread.
    for (const [name, ca] of Object.entries(bad)) {
      let syncError: unknown;
      try {
        bundleFromFiles(filesOf(ca, name));
      } catch (err) {
        syncError = err;
      }
      expect(syncError, name).toBeInstanceOf(BundleError);
      expect(asyncErrors[name]!.message, name).toBe((syncError as BundleError).message);
      expect(asyncErrors[name]!.file, name).toBe((syncError as BundleError).file);
    }
    expect(asyncErrors.eku!.problem).toMatch(/limits extended key usage to serverAuth/);
    expect(asyncErrors.nameConstraint!.problem).toMatch(/has name constraints that the workload SVID/);
    expect(asyncErrors.excluded!.problem).toMatch(/name constraints/);
    expect(threadNames(process.pid)).toContain(PATH_VALIDATION_THREAD);
  });

  it.each([
    ['a cacerts folder', (dir: string) => (new SecretVolume(dir).write(istioFiles(good, [root])), ['--cacerts', dir])],
    ['--self-signed', (dir: string) => ['--self-signed', '--self-signed-dir', dir]],
  ])('serve alone with %s starts without a path-validation thread', async (_, bundleArgs) => {
    const issuer = await createTestIssuer(work);
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    const dir = join(work, `single-${grpcPort}`);
    const proc = startCli(['serve', ...bundleArgs(dir), '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`]);
    procs.push(proc);
    await waitForStatus(`http://127.0.0.1:${monPort}/readyz`);
    expect(proc.stdout.join('')).toContain('"msg":"signing bundle loaded"');
    const names = threadNames(proc.child.pid!);
    expect(names.length).toBeGreaterThan(1);
    expect(names).not.toContain(PATH_VALIDATION_THREAD);
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  }, 60_000);

  it('serve --workers 2: no process has the thread at start, after a refused reload, or after a reload every worker re-checked', async () => {
    const dir = join(work, 'workers-cacerts');
    const volume = new SecretVolume(dir);
    volume.write(istioFiles(good, [root]));
    const issuer = await createTestIssuer(work);
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    const proc = startCli([
      'serve', '--workers', '2', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile,
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--reload-interval', '1s',
    ]);
    procs.push(proc);
    const base = `http://127.0.0.1:${monPort}`;
    await waitForStatus(`${base}/readyz`);
    const serving = () => [proc.child.pid!, ...workerPids(proc.child.pid!)];
    expect(serving()).toHaveLength(3);
    for (const pid of serving()) expect(threadNames(pid), `pid ${pid}`).not.toContain(PATH_VALIDATION_THREAD);

    // A bad bundle: refused by the primary's reload (asynchronous) with the synchronous path's message.
    volume.write(istioFiles(bad.eku, [root]));
    for (let i = 0; i < 100 && !/svid_ca_bundle_reloads_total\{result="failure"\} [1-9]/.test((await fetchText(`${base}/metrics`)).body); i++) await sleep(100);
    const refused = proc.stdout.join('').split('\n').find((l) => l.includes('"msg":"cacerts reload refused; still serving with the current bundle"'));
    let expected: BundleError | undefined;
    try {
      bundleFromFiles(readCacertsFiles(dir));
    } catch (err) {
      expected = err as BundleError;
    }
    expect(expected).toBeInstanceOf(BundleError);
    expect(JSON.parse(refused!).problem).toBe(expected!.problem);
    for (const pid of serving()) expect(threadNames(pid), `pid ${pid}`).not.toContain(PATH_VALIDATION_THREAD);

    // A good one: the primary accepts it, both workers check it again (asynchronously) and sign with it.
    volume.write(istioFiles(good2, [root]));
    for (let i = 0; i < 100 && !/svid_ca_bundle_reloads_total\{result="success"\} 1/.test((await fetchText(`${base}/metrics`)).body); i++) await sleep(100);
    const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    const signers = new Set<string>();
    const workers = new Set<number>();
    for (let i = 0; i < 40 && (signers.size !== 1 || !signers.has(good2.cert.subject) || workers.size < 2); i++) {
      signers.clear();
      workers.clear();
      const before = proc.stdout.join('').length;
      for (let j = 0; j < 4; j++) {
        const c = clientFor({ address: `localhost:${grpcPort}` } as TestServer, root.certPem);
        const r = await call(c, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/demo/sa/web' }] }) }, { authorization: `Bearer ${token}` });
        c.close();
        expect(r.err).toBeUndefined();
        signers.add(new X509Certificate(r.res!.cert_chain[1]!).subject);
      }
      for (const l of proc.stdout.join('').slice(before).split('\n')) if (l.includes('"msg":"certificate issued"')) workers.add(JSON.parse(l).worker);
      if (signers.size !== 1 || !signers.has(good2.cert.subject)) await sleep(100);
    }
    expect([...signers]).toEqual([good2.cert.subject]);
    expect(workers.size).toBe(2);
    for (const pid of serving()) expect(threadNames(pid), `pid ${pid}`).not.toContain(PATH_VALIDATION_THREAD);

    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  }, 90_000);
});
