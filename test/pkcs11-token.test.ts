/**
 * Issue #17, in this test process against a real SoftHSM2 token: every signature besides workload
 * leaves (serving certificate, istiod-tls, bundle probes on reload, self-signed root re-issue) under
 * the per-signature timeout when the token stops answering, and the session pool's recovery ladder
 * for the Cryptoki codes of a removed or reset device. SOFTHSM2_CONF is read at C_Initialize, so it
 * is set for this process (vitest runs each file in its own process) before the first token opens.
 */
import { createHash, verify, X509Certificate } from 'node:crypto';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type * as P11 from 'pkcs11js';
import { Authority, CaUnavailableError, loadIssuerSigner, parsePkcs11Uri, Pkcs11SigningKeySource, SelfSignedRoot, type SigningKeyConfig } from '../src/ca/index.js';
import { Pkcs11Token } from '../src/ca/pkcs11/token.js';
import { rawEcdsaToDer } from '../src/ca/pkcs11/index.js';
import { buildCsrPem, encodePem, generateKeyPair, splitCertificatePem } from '../src/pki/index.js';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, type TestCa } from './helpers/pki.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestServer } from './helpers/server.js';
import { certificateFiles, createSoftHsm, lockTokenFiles, SOFTHSM_MODULE, type SoftHsm } from './helpers/softhsm.js';

const p = createRequire(import.meta.url)('pkcs11js') as typeof P11;
const work = tempDir('svid-ca-pkcs11-token-');
let hsm: SoftHsm;
let root: TestCa;
let signer: TestCa;
let fake: FakeKubeApi;
const closers: Array<() => unknown> = [];

beforeAll(async () => {
  hsm = createSoftHsm(join(work, 'hsm'));
  process.env.SOFTHSM2_CONF = hsm.conf;
  root = makeRoot();
  signer = makeIntermediate(root, { cn: 'token intermediate' });
  hsm.importKey(signer.keyPem, 'intermediate', 'a1b2');
  fake = await FakeKubeApi.start();
  fake.addNamespace('istio-system');
});
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});
afterAll(async () => {
  await fake?.close();
  removeDir(work);
});

const keyConfig = (object: string, signTimeoutMs = 1000): SigningKeyConfig => ({ uri: `pkcs11:token=svid-ca;object=${object}`, modulePath: SOFTHSM_MODULE, pinFile: hsm.pinFile, sessions: 2, signTimeoutMs });
const serialOf = (pem: string) => new X509Certificate(splitCertificatePem(pem)[0]!).serialNumber;
const decoded = (s: { data: Record<string, string> }) => Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));

/** The certificate the TLS listener presents. */
function presented(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: root.certPem, ALPNProtocols: ['h2'] }, () => {
      resolve(new X509Certificate(socket.getPeerCertificate().raw));
      socket.end();
    });
    socket.on('error', reject);
  });
}

describe('a token that stops answering, for the signatures besides workload leaves (SoftHSM2 files locked)', () => {
  it('serving certificate renewal, istiod-tls and a reload fail within the timeout with a clear error; the old certificate keeps serving, readiness is NOT_SERVING; all recover', async () => {
    const cacerts = new SecretVolume(join(work, 'cacerts-timeouts'));
    cacerts.write(certificateFiles(signer, [root]));
    const issuer = await createTestIssuer();
    const server: TestServer = await startTestServer({
      cacerts: cacerts.dir,
      issuer,
      signingKey: keyConfig('intermediate'),
      kubernetes: {
        kubeconfig: fake.kubeconfigPath,
        // Short-lived: istiod-tls is re-issued every few seconds, so a check comes while the token is locked.
        istiodCert: { namespace: 'istio-system', name: 'istiod-tls', dnsNames: ['istiod.istio-system.svc'], ttlMs: 4_000 },
        leaderElectionNamespace: 'istio-system',
        leaseTiming: { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 150 },
      },
    });
    closers.push(() => server.close(), () => fake.remove('secrets', 'istio-system', 'istiod-tls'), () => fake.remove('leases', 'istio-system', 'svid-ca'));
    const secret = () => fake.get('secrets', 'istio-system', 'istiod-tls');
    await waitFor('istiod-tls written', () => secret() !== undefined, 30_000);
    const ready = async () => (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/readyz`)).status;
    expect(await ready()).toBe(200);
    const servingBefore = (await presented(server.service.grpcPort)).serialNumber;
    const bundleBefore = server.service.authority.bundle;
    const logs = () => server.logs.records();
    const logged = (msg: string) => logs().filter((r) => r.msg === msg);

    const lock = await lockTokenFiles(hsm);
    try {
      // The serving certificate: renewal fails (a clear error, retried later), the listener keeps the old one.
      server.service.lifecycle.serving.renew('test: renewal while the token is locked');
      await waitFor('renewal failure logged', () => logged('serving certificate renewal failed; retrying').length > 0, 30_000);
      expect(String(logged('serving certificate renewal failed; retrying')[0]!.err)).toMatch(/PKCS#11 token/);
      expect((await presented(server.service.grpcPort)).serialNumber).toBe(servingBefore);
      // Readiness NOT_SERVING, as for leaves; the monitoring listener still answers (no signature blocks the event loop past the timeout).
      expect(await ready()).toBe(503);
      // A token signature that hung: the timeout named, in the log.
      expect(server.logs.lines.some((l) => /did not (sign|answer a key lookup) within 1000 ms/.test(l))).toBe(true);

      // istiod-tls: its next check fails with a warning and the Secret is left as it was.
      const secretSerial = serialOf(decoded(secret()!)['tls.crt']!);
      await waitFor('istiod-tls failure logged', () => logged('istiod serving certificate: update failed; retrying').length > 0, 30_000);
      expect(String(logged('istiod serving certificate: update failed; retrying')[0]!.problem)).toMatch(/PKCS#11 token/);
      expect(serialOf(decoded(secret()!)['tls.crt']!)).toBe(secretSerial);

      // A reload to a new bundle: refused, the current bundle keeps serving.
      const next = makeIntermediate(root, { cn: 'next intermediate' });
      cacerts.write(certificateFiles(next, [root]));
      const reload = server.service.lifecycle.checkNow();
      expect(reload?.result).toBe('failure');
      expect(reload && 'error' in reload ? reload.error : undefined).toBeInstanceOf(CaUnavailableError);
      expect(server.service.authority.bundle).toBe(bundleBefore);
      cacerts.write(certificateFiles(signer, [root]));
    } finally {
      await lock.release();
    }

    // The token answers again: readiness back, a renewal goes through (verified by the handshake against the root), istiod-tls is re-issued.
    await waitFor('readiness back', async () => (await ready()) === 200, 30_000);
    server.service.lifecycle.serving.renew('test: token back');
    await waitFor('new serving certificate', async () => (await presented(server.service.grpcPort)).serialNumber !== servingBefore, 30_000);
    const written = serialOf(decoded(secret()!)['tls.crt']!);
    await waitFor('istiod-tls re-issued', () => serialOf(decoded(secret()!)['tls.crt']!) !== written, 30_000);
    const chain = splitCertificatePem(decoded(secret()!)['tls.crt']!);
    expect(opensslVerify(root.certPem, chain.slice(1), chain[0]!, ['-x509_strict', '-purpose', 'sslserver'])).toContain('OK');
    // And workload leaves.
    const client = clientFor(server, root.certPem);
    try {
      const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/demo/sa/web' }] });
      const { res, err } = await call(client, { csr }, { authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web' })}` });
      expect(err).toBeUndefined();
      expect(opensslVerify(root.certPem, [signer.certPem], res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    } finally {
      client.close();
    }
  }, 120_000);

  it('self-signed root in the token: a re-issue while the token is locked fails within the timeout and changes nothing; once it answers the root is re-issued with the same key', async () => {
    const dir = join(work, 'self-signed');
    const source = new Pkcs11SigningKeySource({ ...keyConfig('root'), uri: 'pkcs11:token=svid-ca;object=root;id=%0b' }, () => {});
    closers.push(() => source.close());
    const rootCa = new SelfSignedRoot({ dir, ttlMs: 3_600_000, key: 'ec-p256', organization: 'cluster.local', gracePercentile: 20, checkIntervalMs: 0, tokenKey: source });
    const authority = new Authority(rootCa.bundle(), { defaultTtlMs: 600_000, maxTtlMs: 600_000 });
    const first = readFileSync(join(dir, 'ca-cert.pem'), 'utf8');
    const dueAt = new Date(Date.now() + 55 * 60_000);

    const lock = await lockTokenFiles(hsm);
    try {
      expect(() => rootCa.rotateIfDue(authority, dueAt)).toThrow(CaUnavailableError);
      expect(readFileSync(join(dir, 'ca-cert.pem'), 'utf8')).toBe(first);
      expect(authority.bundle.signingCert.x509.raw.equals(new X509Certificate(first).raw)).toBe(true);
      expect(authority.isReady()).toBe(false);
    } finally {
      await lock.release();
    }
    await waitFor('token back', () => authority.signingKeyAnswers(), 30_000);
    expect(rootCa.rotateIfDue(authority, dueAt)).toBe(true);
    const second = readFileSync(join(dir, 'ca-cert.pem'), 'utf8');
    expect(second).not.toBe(first);
    // Issued at dueAt (the clock the re-issue was asked for): checked at that time.
    expect(opensslVerify(second, [], second, ['-x509_strict', '-attime', String(Math.ceil(dueAt.getTime() / 1000))])).toContain('OK');
    expect(new X509Certificate(second).publicKey.export({ type: 'spki', format: 'der' })).toEqual(new X509Certificate(first).publicKey.export({ type: 'spki', format: 'der' }));

    // A ca-key.pem beside the certificates of a token-held root is refused, naming the file to remove.
    writeFileSync(join(dir, 'ca-key.pem'), signer.keyPem, { mode: 0o600 });
    expect(() => new SelfSignedRoot({ dir, ttlMs: 3_600_000, key: 'ec-p256', organization: 'cluster.local', gracePercentile: 20, checkIntervalMs: 0, tokenKey: source })).toThrow(
      /ca-key\.pem: the self-signed root key is on the token \(--signing-key\): remove ca-key\.pem from --self-signed-dir/,
    );
  }, 60_000);
});

describe('the session pool against the real module: Cryptoki codes of a reset or removed device', () => {
  /** A token with its key, logged in; `fault` lets one signature throw a Cryptoki code at the session-pool seam. */
  function openToken(logs: string[]) {
    const uri = parsePkcs11Uri('pkcs11:token=svid-ca;object=intermediate');
    const token = new Pkcs11Token({ modulePath: SOFTHSM_MODULE, uri, pin: hsm.pin, pinFile: hsm.pinFile, sessions: 2, signTimeoutMs: 1000, log: (_l, _f, m) => logs.push(m) });
    closers.push(() => token.close());
    token.watchKey({ object: 'intermediate' });
    let handle = token.findKey({ object: 'intermediate' }).handle;
    let generation = token.generation;
    let fault: number | undefined;
    const keyHandle = () => {
      if (fault !== undefined) {
        const code = fault;
        fault = undefined;
        throw Object.assign(new Error(Object.keys(p).find((k) => k.startsWith('CKR_') && (p as unknown as Record<string, number>)[k] === code)!), { code });
      }
      if (generation !== token.generation) {
        handle = token.findKey({ object: 'intermediate' }).handle;
        generation = token.generation;
      }
      return handle;
    };
    const tbs = Buffer.from('a CRL tbsCertList, or any TBS');
    const digest = createHash('sha256').update(tbs).digest();
    const signs = async (how: 'async' | 'sync') => {
      const raw = how === 'async' ? await token.sign(p.CKM_ECDSA, digest, keyHandle) : token.signSync(p.CKM_ECDSA, digest, keyHandle);
      return verify('sha256', tbs, signer.cert.publicKey, rawEcdsaToDer(raw));
    };
    return { token, signs, inject: (code: number) => (fault = code) };
  }

  it('CKR_SESSION_HANDLE_INVALID, produced for real (C_CloseAllSessions by another binding of the module): the session is rebuilt and the signature retried, the token stays available', async () => {
    const logs: string[] = [];
    const { token, signs } = openToken(logs);
    expect(await signs('async')).toBe(true);
    const other = new p.PKCS11();
    other.load(SOFTHSM_MODULE);
    try {
      other.C_Initialize({ flags: p.CKF_OS_LOCKING_OK });
    } catch (err) {
      expect((err as { code: number }).code).toBe(p.CKR_CRYPTOKI_ALREADY_INITIALIZED); // same module, same process: one library state
    }
    const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).label.trimEnd() === 'svid-ca')!;
    for (const how of ['async', 'sync'] as const) {
      const generation = token.generation;
      other.C_CloseAllSessions(slot);
      expect(await signs(how)).toBe(true);
      expect(token.generation).toBeGreaterThan(generation);
      expect(token.isAvailable()).toBe(true);
    }
    expect(logs).not.toContain('PKCS#11 token unavailable: calls get UNAVAILABLE until it answers again');
  }, 60_000);

  // SoftHSM2 cannot produce these (measured: a deleted token gives CKR_OBJECT_HANDLE_INVALID, then CKR_GENERAL_ERROR;
  // an empty slot CKR_TOKEN_NOT_RECOGNIZED), so they are raised at the session-pool seam, with the real module under it.
  for (const name of ['CKR_DEVICE_REMOVED', 'CKR_TOKEN_NOT_PRESENT', 'CKR_DEVICE_ERROR'] as const) {
    it(`${name}: UNAVAILABLE with the code named, the token unavailable (readiness NOT_SERVING), then recovered by C_Finalize + C_Initialize and a new login`, async () => {
      const logs: string[] = [];
      const { token, signs, inject } = openToken(logs);
      expect(await signs('async')).toBe(true);
      inject(p[name]);
      const err = await signs('async').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CaUnavailableError);
      expect((err as Error).message).toContain(`(${name})`);
      expect(token.isAvailable()).toBe(false);
      await expect(signs('sync')).rejects.toThrow(/does not answer; svid-ca is reconnecting/);
      const generation = token.generation;
      await waitFor('recovery', () => token.isAvailable(), 30_000);
      expect(token.generation).toBeGreaterThan(generation);
      expect(logs).toContain('PKCS#11 token answers again; serving');
      expect(await signs('async')).toBe(true);
      expect(await signs('sync')).toBe(true);
    }, 60_000);
  }
});

describe('CRL signing through the token (for `cacerts crl --issuer DIR`, issue #16)', () => {
  /** A CRL (RFC 5280 5.1) revoking `serial`, its tbsCertList signed by `issuer.sign`; returns the PEM. */
  function signedCrl(issuer: ReturnType<typeof loadIssuerSigner>, serial: string): string {
    const alg = () => pkijs.AlgorithmIdentifier.fromBER(issuer.algorithmIdentifierDer);
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const crl = new pkijs.CertificateRevocationList({
      version: 1,
      signature: alg(),
      issuer: pkijs.Certificate.fromBER(issuer.certificate.raw).subject,
      thisUpdate: new pkijs.Time({ type: 0, value: now }),
      nextUpdate: new pkijs.Time({ type: 0, value: new Date(now.getTime() + 3_600_000) }),
      revokedCertificates: [new pkijs.RevokedCertificate({ userCertificate: new asn1js.Integer({ valueHex: Buffer.from(serial, 'hex') }), revocationDate: new pkijs.Time({ type: 0, value: now }) })],
    });
    // pkijs types encodeTBS as protected on CRLs (public on certificates); it is the tbsCertList DER.
    const tbs = Buffer.from((crl as unknown as { encodeTBS(): asn1js.Sequence }).encodeTBS().toBER());
    crl.tbsView = new Uint8Array(tbs);
    crl.signatureAlgorithm = alg();
    crl.signatureValue = new asn1js.BitString({ valueHex: issuer.sign(tbs) });
    return encodePem('X509 CRL', Buffer.from(crl.toSchema(false).toBER()));
  }

  for (const key of ['ec-p256', 'rsa-2048'] as const) {
    it(`${key}: the token key signs a tbsCertList with the algorithm of ca-cert.pem; openssl verifies the CRL`, () => {
      const ca = key === 'ec-p256' ? signer : makeIntermediate(root, { key, cn: `crl issuer ${key}` });
      const label = key === 'ec-p256' ? 'intermediate' : `crl-${key}`;
      if (ca !== signer) hsm.importKey(ca.keyPem, label, 'c4c4');
      const cacerts = new SecretVolume(join(work, `crl-${key}`));
      cacerts.write(certificateFiles(ca, [root]));
      const source = new Pkcs11SigningKeySource(keyConfig(label), () => {});
      closers.push(() => source.close());
      const issuer = loadIssuerSigner(cacerts.dir, source);
      expect(issuer.signer.privateKey).toBeUndefined(); // the key is on the token
      const crlPem = signedCrl(issuer, '0badc0ffee');
      const crlFile = join(work, `crl-${key}.pem`);
      const caFile = join(work, `crl-${key}-ca.pem`);
      writeFileSync(crlFile, crlPem);
      writeFileSync(caFile, ca.certPem + root.certPem);
      const run = (args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      // openssl prints "verify OK" on stderr: run it through a shell to see both streams.
      const verified = execFileSync('sh', ['-c', 'openssl crl -in "$1" -CAfile "$2" -noout 2>&1', 'sh', crlFile, caFile], { encoding: 'utf8' });
      expect(verified).toContain('verify OK');
      const text = run(['crl', '-in', crlFile, '-noout', '-text']);
      expect(text).toMatch(key === 'ec-p256' ? /Signature Algorithm: ecdsa-with-SHA256/ : /Signature Algorithm: sha256WithRSAEncryption/);
      expect(text).toMatch(/Serial Number: 0BADC0FFEE/i);
    }, 60_000);
  }
});
