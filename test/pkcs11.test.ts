/**
 * Issue #17: the intermediate's key on a real SoftHSM2 token. Each test makes its own token
 * directory and SOFTHSM2_CONF and runs the real `svid-ca serve` as a child process with them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { sign, verify, X509Certificate } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { parsePkcs11Uri } from '../src/ca/index.js';
import { ConfigError, parseServeConfig } from '../src/config.js';
import { rawEcdsaToDer } from '../src/ca/pkcs11/index.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, type TestCa } from './helpers/pki.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { call, clientFor, createTestIssuer, fetchText, type TestIssuer, type TestServer } from './helpers/server.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';
import { certificateFiles, createSoftHsm, lockTokenFiles, SOFTHSM_MODULE, type SoftHsm } from './helpers/softhsm.js';

const work = tempDir('svid-ca-pkcs11-');
const running: CliProcess[] = [];
afterEach(async () => {
  for (const p of running.splice(0)) {
    if (p.child.exitCode === null) {
      p.child.kill('SIGTERM');
      await p.exited;
    }
  }
});
afterAll(() => removeDir(work));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ID = 'spiffe://cluster.local/ns/demo/sa/web';

interface Setup {
  hsm: SoftHsm;
  root: TestCa;
  signer: TestCa;
  cacerts: SecretVolume;
  issuer: TestIssuer;
}

let counter = 0;
async function setup(): Promise<Setup> {
  const dir = join(work, `t${counter++}`);
  const hsm = createSoftHsm(dir);
  const root = makeRoot();
  const signer = makeIntermediate(root, { cn: 'token intermediate' });
  hsm.importKey(signer.keyPem, 'intermediate', 'a1b2');
  const cacerts = new SecretVolume(join(dir, 'cacerts'));
  cacerts.write(certificateFiles(signer, [root]));
  return { hsm, root, signer, cacerts, issuer: await createTestIssuer(dir) };
}

async function serve(s: Setup, extra: string[], workers = '1'): Promise<{ proc: CliProcess; grpcPort: number; base: string }> {
  const [grpcPort, monPort] = [await freePort(), await freePort()];
  const proc = startCli(
    [
      'serve', '--workers', workers, '--cacerts', s.cacerts.dir, '--jwt-issuer', s.issuer.issuer, '--jwks-file', s.issuer.jwksFile,
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--reload-interval', '1s',
      '--pkcs11-module', SOFTHSM_MODULE, ...extra,
    ],
    s.hsm.env,
  );
  running.push(proc);
  return { proc, grpcPort, base: `http://127.0.0.1:${monPort}` };
}

async function issue(s: Setup, grpcPort: number) {
  const token = await s.issuer.token({ namespace: 'demo', serviceAccount: 'web' });
  const client = clientFor({ address: `localhost:${grpcPort}` } as TestServer, s.root.certPem);
  try {
    return await call(client, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] }) }, { authorization: `Bearer ${token}` });
  } finally {
    client.close();
  }
}

/** The serving certificate the TLS listener presents (verified against the root by the handshake itself). */
function servingCertificate(port: number, rootPem: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: rootPem, ALPNProtocols: ['h2'] }, () => {
      resolve(new X509Certificate(socket.getPeerCertificate().raw));
      socket.end();
    });
    socket.on('error', reject);
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(200);
  }
}

/** A private key's protection attributes as the token reports them, read in a child process with the token's SOFTHSM2_CONF. */
function keyAttributes(hsm: SoftHsm, label: string): Record<string, boolean> {
  const script = `
    const p = require('pkcs11js'); const lib = new p.PKCS11(); lib.load(${JSON.stringify(SOFTHSM_MODULE)});
    lib.C_Initialize({ flags: p.CKF_OS_LOCKING_OK });
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trimEnd() === 'svid-ca');
    const s = lib.C_OpenSession(slot, p.CKF_SERIAL_SESSION); lib.C_Login(s, p.CKU_USER, ${JSON.stringify(hsm.pin)});
    lib.C_FindObjectsInit(s, [{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }, { type: p.CKA_LABEL, value: ${JSON.stringify(label)} }]);
    const [k] = lib.C_FindObjects(s, 1); lib.C_FindObjectsFinal(s);
    const names = { sensitive: p.CKA_SENSITIVE, extractable: p.CKA_EXTRACTABLE, neverExtractable: p.CKA_NEVER_EXTRACTABLE, local: p.CKA_LOCAL, sign: p.CKA_SIGN };
    const values = lib.C_GetAttributeValue(s, k, Object.values(names).map((type) => ({ type })));
    console.log(JSON.stringify(Object.fromEntries(Object.keys(names).map((n, i) => [n, values[i].value[0] === 1]))));
    lib.C_Finalize();`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...hsm.env }, encoding: 'utf8' })) as Record<string, boolean>;
}

/** Deletes the private and public objects labelled `label` from the token, in a separate process. */
function destroyKeyObjects(hsm: SoftHsm, label: string): void {
  const script = `
    const p = require('pkcs11js'); const lib = new p.PKCS11(); lib.load(${JSON.stringify(SOFTHSM_MODULE)});
    lib.C_Initialize({ flags: p.CKF_OS_LOCKING_OK });
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trimEnd() === 'svid-ca');
    const s = lib.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION); lib.C_Login(s, p.CKU_USER, ${JSON.stringify(hsm.pin)});
    lib.C_FindObjectsInit(s, [{ type: p.CKA_LABEL, value: ${JSON.stringify(label)} }]);
    const found = lib.C_FindObjects(s, 10); lib.C_FindObjectsFinal(s);
    for (const o of found) lib.C_DestroyObject(s, o);
    console.log(found.length);
    lib.C_Finalize();`;
  const n = Number(execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...hsm.env }, encoding: 'utf8' }).trim());
  if (n !== 2) throw new Error(`expected a private and a public object labelled ${label}, destroyed ${n}`);
}

const output = (p: CliProcess) => p.stdout.join('') + p.stderr.join('');

describe('PKCS#11 URI (RFC 7512)', () => {
  it('keeps + literal, decodes id bytes that are not UTF-8, refuses pin-value and a second token selector', () => {
    const u = parsePkcs11Uri('pkcs11:token=svid-ca;object=inter+2026;id=%a1%B2?pin-source=file:/run/pin');
    expect(u).toMatchObject({ token: 'svid-ca', object: 'inter+2026', pinSource: '/run/pin', redacted: 'pkcs11:token=svid-ca;object=inter+2026;id=%a1%B2' });
    expect(u.id).toEqual(Buffer.from([0xa1, 0xb2]));
    expect(parsePkcs11Uri('pkcs11:token=a%20b;id=a1b2').id).toEqual(Buffer.from([0xa1, 0xb2]));
    expect(() => parsePkcs11Uri('pkcs11:token=t;object=k?pin-value=1234')).toThrow(/pin-value is refused/);
    expect(() => parsePkcs11Uri('pkcs11:token=t;slot-id=1;object=k')).toThrow(/exactly one of/);
    expect(() => parsePkcs11Uri('pkcs11:token=t')).toThrow(/name the key/);
    expect(() => parsePkcs11Uri('pkcs11:token=t;object=a;object=b')).toThrow(/twice/);
    expect(() => parsePkcs11Uri('pkcs11:token=t;object=a?module-path=relative.so')).toThrow(/absolute/);
    expect(() => parsePkcs11Uri('pkcs11:token=t;object=k;id=%zz')).toThrow(/percent-encoding/);
  });

  it('turns raw r||s into the DER that node:crypto verifies', () => {
    const { privateKey, publicKey } = generateKeyPair('ec-p256');
    const tbs = Buffer.from('to be signed');
    // Enough signatures that some r or s have the high bit set (a 00 is added) or a leading zero (stripped).
    for (let i = 0; i < 64; i++) {
      const raw = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      expect(raw.length).toBe(64);
      expect(verify('sha256', tbs, publicKey, raw)).toBe(false);
      expect(verify('sha256', tbs, publicKey, rawEcdsaToDer(raw))).toBe(true);
    }
  });
});

describe('serve --signing-key flags', () => {
  const base = ['--jwt-issuer', 'https://issuer', '--jwks-file', '/dev/null'];
  it('are checked together: one of --signing-key/--signing-key-file, --pkcs11-* only with one, no --signing-key-file with --self-signed', () => {
    const cfg = parseServeConfig([...base, '--signing-key', 'pkcs11:token=t;object=k', '--pkcs11-module', SOFTHSM_MODULE, '--pkcs11-pin-file', '/run/pin'], {});
    expect(cfg.signingKey).toEqual({ uri: 'pkcs11:token=t;object=k', uriFile: undefined, modulePath: SOFTHSM_MODULE, pinFile: '/run/pin', sessions: 4, signTimeoutMs: 5000 });
    expect(parseServeConfig(base, {}).signingKey).toBeUndefined();
    expect(parseServeConfig([...base, '--signing-key-file', '/etc/uri'], { SVID_CA_PKCS11_SESSIONS: '32' }).signingKey).toMatchObject({ uriFile: '/etc/uri', sessions: 32 });
    expect(() => parseServeConfig([...base, '--signing-key', 'pkcs11:token=t;object=k', '--signing-key-file', '/etc/uri'], {})).toThrow(ConfigError);
    expect(() => parseServeConfig([...base, '--pkcs11-pin-file', '/run/pin'], {})).toThrow(/--pkcs11-pin-file: only meaningful with --signing-key/);
    // issue #17: with --self-signed, --signing-key names the root's key on the token; a URI file (re-read on reloads) is refused there.
    expect(parseServeConfig([...base, '--signing-key', 'pkcs11:token=t;object=k', '--self-signed'], {}).signingKey?.uri).toBe('pkcs11:token=t;object=k');
    expect(() => parseServeConfig([...base, '--signing-key-file', '/etc/uri', '--self-signed'], {})).toThrow(/--signing-key-file: not with --self-signed/);
    expect(() => parseServeConfig([...base, '--signing-key', 'pkcs11:token=t;object=k', '--pkcs11-sessions', '0'], {})).toThrow(/--pkcs11-sessions/);
    expect(() => parseServeConfig([...base, '--signing-key', 'pkcs11:token=t;object=k', '--pkcs11-sign-timeout', '50ms'], {})).toThrow(/--pkcs11-sign-timeout/);
    expect(parseServeConfig([...base, '--signing-key', 'pkcs11:token=t;object=k', '--pkcs11-sign-timeout', '0s'], {}).signingKey?.signTimeoutMs).toBe(0);
  });
});

describe('serve --signing-key (SoftHSM2)', () => {
  it('issues leaves and its serving certificate with the token key; openssl verifies the chain; the PIN is never logged', async () => {
    const s = await setup();
    const { proc, grpcPort, base } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate;id=%a1%b2', '--pkcs11-pin-file', s.hsm.pinFile]);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    const { res, err } = await issue(s, grpcPort);
    expect(err).toBeUndefined();
    const chain = res!.cert_chain;
    expect(opensslVerify(s.root.certPem, [s.signer.certPem], chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    const leaf = new X509Certificate(chain[0]!);
    expect(leaf.verify(s.signer.cert.publicKey)).toBe(true);
    // The serving certificate is signed by the token key too (the handshake verified it against the root).
    const serving = await servingCertificate(grpcPort, s.root.certPem);
    expect(serving.checkIssued(s.signer.cert) && serving.verify(s.signer.cert.publicKey)).toBe(true);
    expect(output(proc)).toContain('signing bundle loaded');
    expect(output(proc)).not.toContain(s.hsm.pin);
  }, 60_000);

  it('with --workers 2, the primary checks the key and each worker opens the token itself (signing on the main thread)', async () => {
    const s = await setup();
    // --pkcs11-sign-timeout 0: signatures on the main thread (no signing threads).
    const { proc, grpcPort, base } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile, '--pkcs11-sign-timeout', '0s'], '2');
    await waitForStatus(`${base}/readyz`, 200, 60_000);
    // Each call on its own connection: the kernel spreads them over both workers.
    for (let i = 0; i < 6; i++) {
      const { res, err } = await issue(s, grpcPort);
      expect(err).toBeUndefined();
      expect(new X509Certificate(res!.cert_chain[0]!).verify(s.signer.cert.publicKey)).toBe(true);
    }
    // The primary loads the bundle once (issue #13); each worker checks the primary's files against the token
    // with its own PKCS#11 session (never one inherited from the primary).
    expect(output(proc).match(/"signing bundle loaded"/g)?.length).toBe(1);
    const workerChecks = output(proc).split('\n').filter((l) => l.includes("signing key checked on this worker's own token session"));
    expect(new Set(workerChecks.map((l) => (JSON.parse(l) as { pid: number }).pid)).size).toBe(2);
  }, 90_000);

  it('takes the PIN from pin-source=file: in the URI; with one session, concurrent calls are signed in turn', async () => {
    const s = await setup();
    const { grpcPort, base } = await serve(s, ['--signing-key', `pkcs11:token=svid-ca;object=intermediate?pin-source=file:${s.hsm.pinFile}`, '--pkcs11-sessions', '1']);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    const results = await Promise.all(Array.from({ length: 12 }, () => issue(s, grpcPort)));
    for (const { res, err } of results) {
      expect(err).toBeUndefined();
      expect(new X509Certificate(res!.cert_chain[0]!).verify(s.signer.cert.publicKey)).toBe(true);
    }
  }, 60_000);

  it('refuses a token key that does not match ca-cert.pem (exit 1)', async () => {
    const s = await setup();
    const other = makeIntermediate(s.root, { cn: 'other' });
    s.hsm.importKey(other.keyPem, 'other', 'c3d4');
    const { proc } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=other', '--pkcs11-pin-file', s.hsm.pinFile]);
    expect(await proc.exited).toBe(1);
    expect(proc.stderr.join('')).toMatch(/pkcs11:token=svid-ca;object=other: the token key does not match the signing certificate/);
  }, 60_000);

  it('refuses a ca-key.pem next to the certificates, naming the file to remove', async () => {
    const s = await setup();
    s.cacerts.write({ ...certificateFiles(s.signer, [s.root]), 'ca-key.pem': s.signer.keyPem });
    const { proc } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile]);
    expect(await proc.exited).toBe(1);
    expect(proc.stderr.join('')).toMatch(/ca-key\.pem: the signing key is on the token .*remove ca-key\.pem/);
  }, 60_000);

  it('exits 1 on a wrong PIN with a clear message that does not contain the PIN', async () => {
    const s = await setup();
    writeFileSync(s.hsm.pinFile, '987654\n');
    const { proc } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile]);
    expect(await proc.exited).toBe(1);
    expect(proc.stderr.join('')).toContain(`${s.hsm.pinFile}: the token refused the user PIN (CKR_PIN_INCORRECT)`);
    expect(output(proc)).not.toContain('987654');
  }, 60_000);

  it('answers UNAVAILABLE and reports not ready while the token is gone, and recovers when it is back', async () => {
    const s = await setup();
    const { grpcPort, base } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile]);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    expect((await issue(s, grpcPort)).err).toBeUndefined();

    renameSync(s.hsm.tokens, `${s.hsm.tokens}.away`);
    const failed = await issue(s, grpcPort);
    expect(failed.err?.code).toBe(14); // UNAVAILABLE: agents retry
    expect(failed.err?.details).toMatch(/PKCS#11 token/);
    await waitFor('readiness NOT_SERVING', async () => (await fetchText(`${base}/readyz`)).status === 503);
    expect((await issue(s, grpcPort)).err?.code).toBe(14);

    renameSync(`${s.hsm.tokens}.away`, s.hsm.tokens);
    await waitFor('readiness back', async () => (await fetchText(`${base}/readyz`)).status === 200);
    const again = await issue(s, grpcPort);
    expect(again.err).toBeUndefined();
    expect(opensslVerify(s.root.certPem, [s.signer.certPem], again.res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
  }, 90_000);

  it('answers UNAVAILABLE within --pkcs11-sign-timeout when the token blocks, and serves again once it answers', async () => {
    const s = await setup();
    const { grpcPort, base } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile, '--pkcs11-sign-timeout', '1s']);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    expect((await issue(s, grpcPort)).err).toBeUndefined();

    // A real hang: another process holds write locks (fcntl, as SoftHSM takes them) on the token's files,
    // so SoftHSM's C_SignInit waits for them as a network HSM waits on a dead link.
    const lock = await lockTokenFiles(s.hsm);
    try {
      const started = Date.now();
      const blocked = await issue(s, grpcPort);
      expect(blocked.err?.code).toBe(14); // UNAVAILABLE, not the client's 15 s DEADLINE_EXCEEDED
      expect(blocked.err?.details).toContain('did not sign within 1000 ms');
      expect(Date.now() - started).toBeLessThan(14_000);
      await waitFor('readiness NOT_SERVING', async () => (await fetchText(`${base}/readyz`)).status === 503);
    } finally {
      await lock.release();
    }
    await waitFor('readiness back', async () => (await fetchText(`${base}/readyz`)).status === 200);
    expect((await issue(s, grpcPort)).err).toBeUndefined();
  }, 90_000);

  it('never signs with another key put behind the same label; the reload with its certificate takes it up', async () => {
    const s = await setup();
    const { grpcPort, base } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile]);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    expect((await issue(s, grpcPort)).err).toBeUndefined();
    const reloads = async () => Number(/svid_ca_bundle_reloads_total\{result="success"\} (\d+)/.exec((await fetchText(`${base}/metrics`)).body)?.[1] ?? 0);

    // The operator replaces the key object behind the label first (another process), the certificate later.
    const next = makeIntermediate(s.root, { cn: 'next intermediate' });
    destroyKeyObjects(s.hsm, 'intermediate');
    s.hsm.importKey(next.keyPem, 'intermediate', 'a1b2');
    // SoftHSM invalidates the old handle; found again by label, the key no longer matches ca-cert.pem: UNAVAILABLE, never a leaf signed by it.
    for (let i = 0; i < 2; i++) {
      const r = await issue(s, grpcPort);
      expect(r.err?.code).toBe(14);
      expect(r.err?.details).toContain('changed and no longer matches the signing certificate');
    }
    s.cacerts.write(certificateFiles(next, [s.root]));
    await waitFor('reload success', async () => (await reloads()) >= 1);
    await waitFor('readiness', async () => (await fetchText(`${base}/readyz`)).status === 200);
    const after = await issue(s, grpcPort);
    expect(after.err).toBeUndefined();
    expect(opensslVerify(s.root.certPem, [next.certPem], after.res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
  }, 90_000);

  it('reloads to a new key object named by --signing-key-file, and refuses a reload whose key does not match', async () => {
    const s = await setup();
    const uriFile = join(s.hsm.dir, 'signing-key.uri');
    writeFileSync(uriFile, 'pkcs11:token=svid-ca;object=intermediate\n');
    const { proc, grpcPort, base } = await serve(s, ['--signing-key-file', uriFile, '--pkcs11-pin-file', s.hsm.pinFile]);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    const reloads = async (result: string) => Number(new RegExp(`svid_ca_bundle_reloads_total\\{result="${result}"\\} (\\d+)`).exec((await fetchText(`${base}/metrics`)).body)?.[1] ?? 0);

    // The next intermediate, its key generated elsewhere and put on the token under a new label.
    const next = makeIntermediate(s.root, { cn: 'next intermediate' });
    s.hsm.importKey(next.keyPem, 'intermediate-2', 'b2c3');
    s.cacerts.write(certificateFiles(next, [s.root]));
    writeFileSync(uriFile, 'pkcs11:token=svid-ca;object=intermediate-2\n');
    await waitFor('reload success', async () => (await reloads('success')) >= 1);
    const issued = await issue(s, grpcPort);
    expect(issued.err).toBeUndefined();
    expect(opensslVerify(s.root.certPem, [next.certPem], issued.res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    expect(new X509Certificate(issued.res!.cert_chain[0]!).verify(s.signer.cert.publicKey)).toBe(false);

    // A certificate whose key is not the token key named by the URI: refused like any bad bundle.
    const stray = makeIntermediate(s.root, { cn: 'stray intermediate' });
    s.cacerts.write(certificateFiles(stray, [s.root]));
    await waitFor('reload failure', async () => (await reloads('failure')) >= 1);
    expect(output(proc)).toMatch(/the token key does not match the signing certificate/);
    const still = await issue(s, grpcPort);
    expect(still.err).toBeUndefined();
    expect(new X509Certificate(still.res!.cert_chain[0]!).verify(next.cert.publicKey)).toBe(true);
  }, 90_000);
});

describe('serve --signing-key (SoftHSM2): the token deleted and re-created, a self-signed root in the token', () => {
  it('a token deleted under the running server (softhsm2-util --delete-token): UNAVAILABLE and NOT_SERVING; re-created with the key, it serves again without a restart', async () => {
    const s = await setup();
    const { proc, grpcPort, base } = await serve(s, ['--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-pin-file', s.hsm.pinFile]);
    await waitForStatus(`${base}/readyz`, 200, 30_000);
    expect((await issue(s, grpcPort)).err).toBeUndefined();
    const util = (args: string[]) => execFileSync('softhsm2-util', args, { env: { ...process.env, ...s.hsm.env }, stdio: ['ignore', 'pipe', 'pipe'] });

    // Measured with SoftHSM 2.6: the next signature gets CKR_OBJECT_HANDLE_INVALID; the rebuilt session finds no key, the library then CKR_GENERAL_ERROR.
    util(['--delete-token', '--token', 'svid-ca']);
    const failed = await issue(s, grpcPort);
    expect(failed.err?.code).toBe(14);
    expect(failed.err?.details).toMatch(/PKCS#11 token/);
    await waitFor('readiness NOT_SERVING', async () => (await fetchText(`${base}/readyz`)).status === 503);
    expect((await issue(s, grpcPort)).err?.code).toBe(14);

    // A new token (new serial, new slot id) with the same label and the same key: found again by label after C_Finalize + C_Initialize, logged in anew.
    util(['--init-token', '--free', '--label', 'svid-ca', '--so-pin', '5678', '--pin', s.hsm.pin]);
    s.hsm.importKey(s.signer.keyPem, 'intermediate', 'a1b2');
    await waitFor('readiness back', async () => (await fetchText(`${base}/readyz`)).status === 200, 60_000);
    const again = await issue(s, grpcPort);
    expect(again.err).toBeUndefined();
    expect(opensslVerify(s.root.certPem, [s.signer.certPem], again.res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    expect(output(proc)).toContain('PKCS#11 token answers again; serving');
    expect(proc.child.exitCode).toBeNull();
  }, 120_000);

  it('--self-signed with a URI naming no key and lacking id=: exit before listening, saying how to have the key generated', async () => {
    const dir = join(work, `ss${counter++}`);
    const hsm = createSoftHsm(dir);
    const issuer = await createTestIssuer(dir);
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    const r = spawnSync(
      process.execPath,
      [
        'dist/cli.js', 'serve', '--self-signed', '--self-signed-dir', join(dir, 'root'),
        '--signing-key', 'pkcs11:token=svid-ca;object=root', '--pkcs11-module', SOFTHSM_MODULE, '--pkcs11-pin-file', hsm.pinFile,
        '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`,
      ],
      { env: { ...process.env, ...hsm.env }, encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('no private key object=root on the token (logged in as user); to have svid-ca generate it at first start, name it with both object=LABEL and id=%xx');
    expect(existsSync(join(dir, 'root', 'ca-cert.pem'))).toBe(false);
  }, 60_000);

  it('--self-signed with --signing-key: the root key is generated in the token, the root re-issued before expiry with it (openssl verifies the new root), calls keep working across it', async () => {
    const dir = join(work, `ss${counter++}`);
    const hsm = createSoftHsm(dir);
    const issuer = await createTestIssuer(dir);
    const rootDir = join(dir, 'root');
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    // A 30 s root re-issued when less than 75% of its life remains: about every 8 s.
    const proc = startCli(
      [
        'serve', '--self-signed', '--self-signed-dir', rootDir, '--self-signed-ttl', '30s', '--root-grace-percentile', '75', '--root-check-interval', '1s',
        '--signing-key', 'pkcs11:token=svid-ca;object=root;id=%0a', '--pkcs11-module', SOFTHSM_MODULE, '--pkcs11-pin-file', hsm.pinFile,
        '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`,
      ],
      hsm.env,
    );
    running.push(proc);
    await waitForStatus(`http://127.0.0.1:${monPort}/readyz`, 200, 30_000);
    const firstRoot = readFileSync(join(rootDir, 'ca-cert.pem'), 'utf8');
    expect(existsSync(join(rootDir, 'ca-key.pem'))).toBe(false);
    expect(keyAttributes(hsm, 'root')).toEqual({ sensitive: true, extractable: false, neverExtractable: true, local: true, sign: true });
    const leafFor = async () => {
      // The client trusts the first root only: the serving certificate issued under a re-issued root still verifies (same key and subject).
      const client = clientFor({ address: `localhost:${grpcPort}` } as TestServer, firstRoot);
      try {
        const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] });
        const { res, err } = await call(client, { csr }, { authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web' })}` });
        expect(err).toBeUndefined();
        return res!.cert_chain[0]!;
      } finally {
        client.close();
      }
    };
    const before = await leafFor();
    expect(opensslVerify(firstRoot, [], before, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');

    // The log line comes after the file is written and the bundle swapped: wait for it, then read the file.
    await waitFor('root re-issued', async () => output(proc).includes('self-signed root rotated'), 30_000);
    expect(readFileSync(join(rootDir, 'ca-cert.pem'), 'utf8')).not.toBe(firstRoot);
    const secondRoot = readFileSync(join(rootDir, 'ca-cert.pem'), 'utf8');
    expect(opensslVerify(secondRoot, [], secondRoot, ['-x509_strict'])).toContain('OK');
    expect(new X509Certificate(secondRoot).publicKey.export({ type: 'spki', format: 'der' })).toEqual(new X509Certificate(firstRoot).publicKey.export({ type: 'spki', format: 'der' }));
    const after = await leafFor();
    expect(opensslVerify(secondRoot, [], after, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    // A leaf issued under the first root verifies with the re-issued one.
    expect(opensslVerify(secondRoot, [], before, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    expect(existsSync(join(rootDir, 'ca-key.pem'))).toBe(false);
    expect(output(proc)).not.toContain(hsm.pin);
  }, 90_000);
});

describe('cacerts commands with the key in a token (SoftHSM2)', () => {
  it('init-intermediate generates a non-extractable key in the token and signs it with --root, or writes a CSR; verify --signing-key checks a folder against the token', async () => {
    const dir = join(work, `cli${counter++}`);
    const hsm = createSoftHsm(dir);
    const cli = (args: string[]) => {
      try {
        return { code: 0, out: execFileSync(process.execPath, ['dist/cli.js', 'cacerts', ...args], { env: { ...process.env, ...hsm.env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
      } catch (err) {
        const e = err as { status: number; stdout: string; stderr: string };
        return { code: e.status, out: e.stdout + e.stderr };
      }
    };
    const token = ['--pkcs11-module', SOFTHSM_MODULE, '--pkcs11-pin-file', hsm.pinFile];
    expect(cli(['init-root', '--out', join(dir, 'root')]).code).toBe(0);

    const made = cli(['init-intermediate', '--key-uri', 'pkcs11:token=svid-ca;object=intermediate-2026;id=%01', ...token, '--root', join(dir, 'root'), '--out', join(dir, 'cacerts')]);
    expect(made.out).toContain('(sensitive, not extractable)');
    expect(made.out).toContain('OK: svid-ca serve would accept');
    expect(made.code).toBe(0);
    expect(existsSync(join(dir, 'cacerts', 'ca-key.pem'))).toBe(false);
    // The command that loads the folder as the cacerts Secret, as the file variant prints it, without ca-key.pem.
    const secret = /kubectl create secret generic cacerts[^]*?\| kubectl apply -f -/.exec(made.out)?.[0].replace(/\\\n\s*/g, '');
    expect(secret).toBe(
      `kubectl create secret generic cacerts -n istio-system ${['ca-cert.pem', 'cert-chain.pem', 'root-cert.pem'].map((f) => `--from-file=${join(dir, 'cacerts', f)}`).join(' ')} --dry-run=client -o yaml | kubectl apply -f -`,
    );
    const cacerts = (f: string) => readFileSync(join(dir, 'cacerts', f), 'utf8');
    expect(opensslVerify(cacerts('root-cert.pem'), [], cacerts('ca-cert.pem'), ['-x509_strict'])).toContain('OK');
    // The token says what it holds (read in a separate process through pkcs11js, not through svid-ca).
    expect(keyAttributes(hsm, 'intermediate-2026')).toEqual({ sensitive: true, extractable: false, neverExtractable: true, local: true, sign: true });

    // An existing key is never replaced.
    const again = cli(['init-intermediate', '--key-uri', 'pkcs11:token=svid-ca;object=intermediate-2026;id=%01', ...token, '--root', join(dir, 'root'), '--out', join(dir, 'again')]);
    expect(again.code).toBe(1);
    expect(again.out).toMatch(/already holds a private key .*never replaces a key/);

    // As without a token: a folder holding certificates is not overwritten, refused before a key is made in the
    // token; --subject names the intermediate.
    const next = ['init-intermediate', '--key-uri', 'pkcs11:token=svid-ca;object=intermediate-2027;id=%03', ...token, '--root', join(dir, 'root'), '--subject', 'O=Example Corp,CN=east 2027'];
    const taken = cli([...next, '--out', join(dir, 'cacerts')]);
    expect(taken.code).toBe(2);
    expect(taken.out).toContain('refusing to overwrite');
    const east = cli([...next, '--out', join(dir, 'east')]);
    expect(east.out).toContain('OK: svid-ca serve would accept');
    expect(east.code).toBe(0);
    expect(new X509Certificate(readFileSync(join(dir, 'east', 'ca-cert.pem'))).subject).toBe('O=Example Corp\nCN=east 2027');

    // A CSR for an external root, signed by the token key (openssl checks its signature).
    const csr = cli(['init-intermediate', '--key-uri', 'pkcs11:token=svid-ca;object=intermediate-rsa;id=%02', '--key', 'rsa-2048', ...token, '--csr-out', join(dir, 'int.csr')]);
    expect(csr.code).toBe(0);
    expect(execFileSync('openssl', ['req', '-in', join(dir, 'int.csr'), '-verify', '-noout', '-subject'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })).toMatch(/CN ?= ?svid-ca intermediate cluster1/); // OpenSSL 3.0 prints `CN = `, 3.5 `CN=`

    const ok = cli(['verify', join(dir, 'cacerts'), '--signing-key', 'pkcs11:token=svid-ca;object=intermediate-2026', ...token]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('OK: svid-ca serve would accept');
    const wrong = cli(['verify', join(dir, 'cacerts'), '--signing-key', 'pkcs11:token=svid-ca;object=intermediate-rsa', ...token]);
    expect(wrong.code).toBe(1);
    expect(wrong.out).toContain('REJECTED: pkcs11:token=svid-ca;object=intermediate-rsa: the token key does not match the signing certificate');
  }, 60_000);
});
