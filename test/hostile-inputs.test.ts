/**
 * Issue #19 part B, each attack run against the real server on loopback (real grpc-js client over
 * TLS): CSRs that amplify CPU, SubjectPublicKeyInfo bytes that would be smuggled into the leaf,
 * client-certificate renewals that never end, and leaves that start before their signer.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authority, loadCacerts } from '../src/ca/index.js';
import type { CaClient } from '../src/client/index.js';
import { buildCsrPem, CsrError, decodePem, generateKeyPair, parseCsrPem, readCsrPem, privateKeyPem, spkiDer } from '../src/pki/index.js';
import { loadServices } from '../src/server/index.js';
import { extension, hostileCsrPem, oid, rsaSpkiWithExponent, rsaSpkiWithParams, sanExtension, seq, tlv } from './helpers/hostile-csr.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';
import { call, clientFor, createTestIssuer, fetchText, type TestIssuer, type TestServer, startTestServer } from './helpers/server.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

let issuer: TestIssuer;
let server: TestServer;
let client: CaClient;
let dir: string;
let root: ReturnType<typeof makeRoot>;
let signer: ReturnType<typeof makeIntermediate>;
let token: string;
const clients: CaClient[] = [];

beforeAll(async () => {
  // A signer that became valid 30 s ago (a freshly rotated intermediate): a leaf backdated by the
  // 2-minute clock-skew grace would start before it.
  root = makeRoot({ notBefore: new Date(Date.now() - 3 * DAY) });
  signer = makeIntermediate(root, { notBefore: new Date(Date.now() - 30_000) });
  dir = writeCacerts(tempDir(), { signer, roots: [root] });
  issuer = await createTestIssuer();
  server = await startTestServer({ cacerts: dir, issuer, clientCertAuth: true, clientCertMaxTtlMs: 12 * HOUR });
  client = clientFor(server, root.certPem);
  token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
});

afterAll(async () => {
  for (const c of clients) c.close();
  client?.close();
  await server?.close();
  removeDir(dir);
});

const bearer = () => ({ authorization: `Bearer ${token}` });
const ask = (csr: string, ttl = '3600') => call(client, { csr, validity_duration: ttl }, bearer());
const leafOf = (res: { cert_chain: string[] } | undefined) => new X509Certificate(decodePem(res!.cert_chain[0]!)[0]!.der);
const ecKey = () => generateKeyPair('ec-p256').privateKey;

/** `openssl pkey -pubin -text` of an SPKI: shows what a fixture's key really is. */
const opensslKeyText = (spki: Buffer) => execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-noout', '-text_pub'], { input: spki, encoding: 'utf8' });

describe('CPU amplification by one token: bounded before any expensive work', () => {
  it('a csr field over --max-csr-bytes (3,300 empty extensions, ~50 KB) is INVALID_ARGUMENT naming the bound', async () => {
    const empties = Array.from({ length: 3300 }, () => extension('1.2.3.4', Buffer.alloc(0)));
    const csr = hostileCsrPem({ privateKey: ecKey(), extensions: [sanExtension(ID), ...empties] });
    expect(csr.length).toBeGreaterThan(8192);
    const { err } = await ask(csr);
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/csr field is \d+ bytes; at most 8192 are accepted \(--max-csr-bytes\)/);
  });

  it('more than 16 extensions or 8 attributes in a small CSR are INVALID_ARGUMENT', async () => {
    const extra = Array.from({ length: 16 }, (_, i) => extension(`1.2.3.${i}`, Buffer.alloc(0)));
    const many = await ask(hostileCsrPem({ privateKey: ecKey(), extensions: [sanExtension(ID), ...extra] }));
    expect(many.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(many.err?.details).toBe('CSR error: CSR requests 17 extensions; at most 16 are accepted');
    const attribute = seq(oid('1.2.840.113549.1.9.7'), tlv(0x31, tlv(0x0c, Buffer.from('pw'))));
    const attrs = await ask(hostileCsrPem({ privateKey: ecKey(), extraAttributes: Array.from({ length: 8 }, () => attribute) }));
    expect(attrs.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(attrs.err?.details).toBe('CSR error: CSR carries 9 attributes; at most 8 are accepted');
    // 16 extensions and 8 attributes are fine.
    const ok = await ask(hostileCsrPem({ privateKey: ecKey(), extensions: [sanExtension(ID), ...extra.slice(1)], extraAttributes: Array.from({ length: 7 }, () => attribute) }));
    expect(ok.err).toBeUndefined();
  });

  it('an RSA key with a 3071-bit public exponent is refused for the exponent, not after an expensive signature check', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 3072 });
    const spki = rsaSpkiWithExponent(publicKey, (1n << 3070n) + 1n);
    expect(opensslKeyText(spki)).toMatch(/Exponent:\n(\s+[0-9a-f:]+\n){20,}/);
    const { err } = await ask(hostileCsrPem({ privateKey, spki }));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('CSR error: CSR key RSA-3072 has a 3071-bit public exponent; accepted: an odd exponent from 3 to 2^32+1 (65537 is usual)');
    const even = await ask(hostileCsrPem({ privateKey, spki: rsaSpkiWithExponent(publicKey, 65538n) }));
    expect(even.err?.details).toMatch(/public exponent/);
  });

  it('RSA keys with exponent 3 or 65537 are issued', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 });
    const { err } = await ask(hostileCsrPem({ privateKey }));
    expect(err).toBeUndefined();
    expect((await ask(hostileCsrPem({ privateKey: generateKeyPair('rsa-2048').privateKey }))).err).toBeUndefined();
  });
});

describe('the leaf never carries attacker-chosen SubjectPublicKeyInfo bytes', () => {
  it('RSA parameters replaced by 250 chosen bytes: INVALID_ARGUMENT', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const chosen = tlv(0x04, Buffer.alloc(250, 0x41));
    const spki = rsaSpkiWithParams(publicKey, chosen);
    // OpenSSL reads it as an ordinary RSA key: the bytes would ride along into the leaf.
    expect(opensslKeyText(spki)).toMatch(/Public-Key: \(2048 bit\)/);
    const { err } = await ask(hostileCsrPem({ privateKey, spki }));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('CSR error: CSR public key is not canonical: RSA algorithm parameters must be NULL');
  });

  it('EC key with explicit curve parameters: INVALID_ARGUMENT', async () => {
    const privateKey = ecKey();
    const spki = execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-outform', 'DER', '-ec_param_enc', 'explicit'], { input: spkiDer(privateKey) });
    expect(opensslKeyText(spki)).toContain('Field Type: prime-field');
    const { err } = await ask(hostileCsrPem({ privateKey, spki }));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('CSR error: CSR public key is not canonical: the EC curve must be named (P-256 or P-384), not given by explicit parameters');
  });

  it('EC key with a compressed point: INVALID_ARGUMENT', async () => {
    const privateKey = ecKey();
    const spki = execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-outform', 'DER', '-ec_conv_form', 'compressed'], { input: spkiDer(privateKey) });
    expect(spki.length).toBeLessThan(spkiDer(privateKey).length);
    expect(opensslKeyText(spki)).toMatch(/pub:\s+0[23]:/);
    const { err } = await ask(hostileCsrPem({ privateKey, spki }));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('CSR error: CSR public key is not canonical: the EC point must be uncompressed');
  });

  it('SPKI with a non-minimal DER length: INVALID_ARGUMENT (the leaf would not be DER)', async () => {
    const privateKey = ecKey();
    const canonical = spkiDer(privateKey);
    expect(canonical[1]).toBeLessThan(0x80);
    const spki = Buffer.concat([Buffer.from([0x30, 0x81, canonical[1]!]), canonical.subarray(2)]);
    const { err } = await ask(hostileCsrPem({ privateKey, spki }));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('CSR error: CSR public key is not canonical: it is not DER-encoded');
  });

  it('canonical keys of every accepted kind are issued, and the leaf carries exactly the canonical SPKI', async () => {
    for (const spec of ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-4096'] as const) {
      const { privateKey } = generateKeyPair(spec);
      const { res, err } = await ask(hostileCsrPem({ privateKey }));
      expect(err, spec).toBeUndefined();
      expect(leafOf(res).publicKey.export({ type: 'spki', format: 'der' })).toEqual(spkiDer(createPublicKey(privateKey)));
      expect(opensslVerify(root.certPem, [signer.certPem], res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    }
  });
});

describe('both CSR readers apply the same bounds', () => {
  it('the hot-path reader and the pkijs reader refuse each hostile CSR with the same CsrError', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = ecKey();
    const canonical = spkiDer(ec);
    const hostile = [
      hostileCsrPem({ privateKey: ec, extensions: [sanExtension(ID), ...Array.from({ length: 16 }, (_, i) => extension(`1.2.3.${i}`, Buffer.alloc(0)))] }),
      hostileCsrPem({ privateKey: ec, extraAttributes: Array.from({ length: 8 }, () => seq(oid('1.2.840.113549.1.9.7'), tlv(0x31, tlv(0x0c, Buffer.from('pw'))))) }),
      hostileCsrPem({ privateKey: rsa.privateKey, spki: rsaSpkiWithExponent(rsa.publicKey, (1n << 2000n) + 1n) }),
      hostileCsrPem({ privateKey: rsa.privateKey, spki: rsaSpkiWithParams(rsa.publicKey, tlv(0x04, Buffer.alloc(250, 0x41))) }),
      hostileCsrPem({ privateKey: ec, spki: Buffer.concat([Buffer.from([0x30, 0x81, canonical[1]!]), canonical.subarray(2)]) }),
    ];
    const outcome = (read: (pem: string) => unknown, pem: string) => {
      try {
        read(pem);
        return 'accepted';
      } catch (err) {
        return err instanceof CsrError ? `${err.problem}: ${err.message}` : `other: ${String(err)}`;
      }
    };
    for (const pem of hostile) {
      const fast = outcome(readCsrPem, pem);
      expect(fast).not.toBe('accepted');
      expect(fast).not.toMatch(/^other/);
      expect(outcome(parseCsrPem, pem)).toBe(fast);
    }
  });
});

describe('NotBefore never precedes the signer', () => {
  it('workload and serving leaves of a signer valid since 30 s start no earlier than it', async () => {
    const signerFrom = new Date(signer.cert.validFrom).getTime();
    const { res, err } = await ask(buildCsrPem({ privateKey: ecKey(), sans: [{ type: 'uri', value: ID }] }));
    expect(err).toBeUndefined();
    expect(new Date(leafOf(res).validFrom).getTime()).toBeGreaterThanOrEqual(signerFrom);
    // openssl at the leaf's first second: the whole chain is already valid.
    const at = String(Math.floor(new Date(leafOf(res).validFrom).getTime() / 1000));
    expect(opensslVerify(root.certPem, [signer.certPem], res!.cert_chain[0]!, ['-x509_strict', '-attime', at])).toContain('OK');
    const serving = new X509Certificate(server.service.lifecycle.serving.current.certChainPem);
    expect(new Date(serving.validFrom).getTime()).toBeGreaterThanOrEqual(signerFrom);
  });
});

interface Svid {
  keyPem: string;
  chainPem: string;
  notAfter: Date;
}

/** An SVID for ID signed by the test cacerts, valid for ttlMs from now. */
async function svid(ttlMs: number): Promise<Svid> {
  const authority = new Authority(loadCacerts(dir), { defaultTtlMs: ttlMs, maxTtlMs: ttlMs });
  const { privateKey } = generateKeyPair('ec-p256');
  const csr = parseCsrPem(buildCsrPem({ privateKey, sans: [{ type: 'uri', value: ID }] }));
  const issued = await authority.issueCertificate({ identity: ID, csr, requestedTtlSeconds: BigInt(Math.floor(ttlMs / 1000)) });
  return { keyPem: privateKeyPem(privateKey), chainPem: issued.certChain.slice(0, -1).join(''), notAfter: issued.notAfter };
}

function clientWithCert(cert: Svid): CaClient {
  const { ca } = loadServices();
  const c = new ca(server.address, grpc.credentials.createSsl(Buffer.from(root.certPem), Buffer.from(cert.keyPem), Buffer.from(cert.chainPem))) as unknown as CaClient;
  clients.push(c);
  return c;
}

describe('client-certificate renewal ends', () => {
  /** A renewal with a fresh key; returns the call's result and the new SVID (to renew with next). */
  async function renew(c: CaClient, ttl: string, md: Record<string, string> = {}) {
    const privateKey = ecKey();
    const result = await call(c, { csr: buildCsrPem({ privateKey, sans: [{ type: 'uri', value: ID }] }), validity_duration: ttl }, md);
    const next: Svid | undefined = result.res && {
      keyPem: privateKeyPem(privateKey),
      chainPem: result.res.cert_chain.slice(0, -1).join(''),
      notAfter: new Date(leafOf(result.res).validTo),
    };
    return { ...result, next };
  }

  it('a renewal without a token never outlives the presented certificate, however often it is repeated', async () => {
    const first = await svid(2 * HOUR);
    const once = await renew(clientWithCert(first), String(90 * 24 * 3600));
    expect(once.err).toBeUndefined();
    expect(once.next!.notAfter.getTime()).toBeLessThanOrEqual(first.notAfter.getTime());
    // Renewing with the renewed SVID does not extend it either.
    const twice = await renew(clientWithCert(once.next!), '86400');
    expect(twice.err).toBeUndefined();
    expect(twice.next!.notAfter.getTime()).toBeLessThanOrEqual(first.notAfter.getTime());
    const audit = server.logs.records().filter((l) => l.msg === 'certificate issued').at(-1)!.audit as Record<string, unknown>;
    expect(audit.grantedTtlSeconds as number).toBeLessThanOrEqual(2 * 3600);
  });

  it('--client-cert-max-ttl caps a renewal by certificate alone', async () => {
    const long = await svid(30 * DAY);
    const { res, err } = await renew(clientWithCert(long), '0');
    expect(err).toBeUndefined();
    const life = new Date(leafOf(res).validTo).getTime() - Date.now();
    expect(life).toBeLessThanOrEqual(12 * HOUR);
    expect(life).toBeGreaterThan(11 * HOUR);
  });

  it('with a valid token for the same identity as well, the renewal gets the asked lifetime', async () => {
    const short = await svid(HOUR);
    const { res, err } = await renew(clientWithCert(short), String(48 * 3600), bearer());
    expect(err).toBeUndefined();
    expect(new Date(leafOf(res).validTo).getTime() - Date.now()).toBeGreaterThan(47 * HOUR);
  });

  it('a token that does not verify does not lift the cap', async () => {
    const short = await svid(HOUR);
    const { res, err } = await renew(clientWithCert(short), String(48 * 3600), { authorization: 'Bearer not-a-token' });
    expect(err).toBeUndefined();
    expect(new Date(leafOf(res).validTo).getTime()).toBeLessThanOrEqual(short.notAfter.getTime());
  });
});


describe('serving-certificate renewal when the signer is near expiry', () => {
  /** A server whose signer expires in `signerLeftMs`, run for a second and a half. */
  async function runNearExpiry(signerLeftMs: number, grace: { ms: number } | { fraction: number }) {
    const nearRoot = makeRoot();
    const nearSigner = makeIntermediate(nearRoot, { notAfter: new Date(Date.now() + signerLeftMs) });
    const nearDir = writeCacerts(tempDir(), { signer: nearSigner, roots: [nearRoot] });
    const s = await startTestServer({ cacerts: nearDir, issuer, servingCertGrace: grace });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const renewals = s.logs.records().filter((l) => l.msg === 'serving certificate renewed').length;
      const warnings = s.logs.records().filter((l) => typeof l.msg === 'string' && l.msg.startsWith('the serving certificate cannot be renewed past the signing certificate'));
      const metrics = (await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/metrics`)).body;
      return { renewals, warnings, metrics, signerNotAfter: new Date(nearSigner.cert.validTo) };
    } finally {
      await s.close();
      removeDir(nearDir);
    }
  }

  it('signer with 5 h left and --serving-cert-grace 6h: no renewal loop; one loud warning and a metric', async () => {
    const r = await runNearExpiry(5 * HOUR, { ms: 6 * HOUR });
    expect(r.renewals).toBe(0);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]!.level).toBe(50);
    expect(r.warnings[0]!.signerNotAfter).toBe(r.signerNotAfter.toISOString());
    expect(r.metrics).toMatch(/^svid_ca_serving_cert_limited_by_signer 1$/m);
  });

  it('signer in its last 2 minutes with the default 50% grace: no renewal loop', async () => {
    const r = await runNearExpiry(90_000, { fraction: 0.5 });
    expect(r.renewals).toBe(0);
    expect(r.warnings).toHaveLength(1);
  });

  it('a signer far from expiry: no warning, metric 0', async () => {
    expect((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body).toMatch(/^svid_ca_serving_cert_limited_by_signer 0$/m);
  });
});

describe('the issue #19 flags through the real command', () => {
  it('serve --max-csr-bytes 1024: a larger CSR is INVALID_ARGUMENT naming the flag; a normal one is issued', async () => {
    const work = tempDir('svid-ca-19b-cli-');
    const devDir = join(work, 'dev');
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    const cli = startCli(['serve', '--dev', '--dev-dir', devDir, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--max-csr-bytes', '1024', '--max-pending-share', '50', '--client-cert-max-ttl', '1h']);
    try {
      await waitForStatus(`http://127.0.0.1:${monPort}/readyz`);
      writeFileSync(join(work, 'token'), execFileSync(process.execPath, ['dist/cli.js', 'dev-token', '--dev-dir', devDir, '--namespace', 'demo', '--service-account', 'web'], { encoding: 'utf8' }));
      const request = (key: string) =>
        spawnSync(process.execPath, ['dist/cli.js', 'request', '--ca', `localhost:${grpcPort}`, '--root', join(devDir, 'cacerts/root-cert.pem'), '--token', join(work, 'token'), '--out', join(work, key), '--key', key], { encoding: 'utf8' });
      // An RSA-4096 CSR is ~1.7 KB of PEM.
      const big = request('rsa-4096');
      expect(big.status).not.toBe(0);
      expect(big.stderr).toMatch(/csr field is \d{4} bytes; at most 1024 are accepted \(--max-csr-bytes\)/);
      expect(request('ec-p256').status).toBe(0);
      const start = cli.stdout.join('').split('\n').find((l) => l.includes('starting svid-ca'))!;
      expect(JSON.parse(start).sources).toMatchObject({ 'max-csr-bytes': 'flag', 'max-pending-share': 'flag', 'client-cert-max-ttl': 'flag' });
    } finally {
      cli.child.kill('SIGTERM');
      await cli.exited;
      removeDir(work);
    }
  });
});
