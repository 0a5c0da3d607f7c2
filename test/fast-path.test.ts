/**
 * The issuance fast path against the plain pkijs way: the leaf encoder's TBS must be byte for byte
 * what signCertificate(workloadLeaf(...)) writes for the same serial and validity, both leaves
 * must pass `openssl verify`, and the fast CSR reader must return what parseCsrPem returns (or
 * the same kind of CsrError). Also the JWT verified-token cache, with real jose tokens.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { afterAll, describe, expect, it } from 'vitest';
import { JwtAuthenticator, VerifiedTokenCache } from '../src/auth/jwt.js';
import {
  buildCsrPem,
  CsrError,
  describeKey,
  encodePem,
  generateKeyPair,
  inspectCertificate,
  parseCsrPem,
  randomSerial,
  readCsrPem,
  signatureAlgorithmForKey,
  signCertificate,
  workloadLeaf,
  WorkloadLeafEncoder,
  type KeySpec,
  type ParsedCsr,
  type SanEntry,
  type Signer,
} from '../src/pki/index.js';
import { makeIntermediate, makeRoot, opensslText, opensslVerify, removeDir, tempDir, type TestCa } from './helpers/pki.js';
import { createTestIssuer } from './helpers/server.js';
import { tool } from './helpers/tools.js';

const ID = 'spiffe://cluster.local/ns/bench/sa/worker-1';
const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));

function signerOf(ca: TestCa): Signer {
  const privateKey = createPrivateKey(ca.keyPem);
  return { subjectDer: inspectCertificate(ca.cert.raw).subjectDer, privateKey, algorithm: signatureAlgorithmForKey(privateKey)! };
}

/** The certificate's three top-level elements as DER: tbsCertificate, signatureAlgorithm, signatureValue. */
function topLevel(der: Buffer): Buffer[] {
  const asn1 = asn1js.fromBER(new Uint8Array(der));
  expect(asn1.offset).toBe(der.length);
  return (asn1.result as asn1js.Sequence).valueBlock.value.map((b) => Buffer.from(b.valueBeforeDecodeView));
}

/** What a reader of the certificate sees, field by field (pkijs decode of the issued DER). */
function fields(der: Buffer) {
  const c = pkijs.Certificate.fromBER(der);
  return {
    version: c.version,
    serial: Buffer.from(c.serialNumber.valueBlock.valueHexView).toString('hex'),
    signature: c.signature.algorithmId,
    outerSignature: c.signatureAlgorithm.algorithmId,
    issuer: Buffer.from(c.issuer.toSchema().toBER()).toString('hex'),
    subject: Buffer.from(c.subject.toSchema().toBER()).toString('hex'),
    notBefore: c.notBefore.value.toISOString(),
    notAfter: c.notAfter.value.toISOString(),
    spki: Buffer.from(c.subjectPublicKeyInfo.toSchema().toBER()).toString('hex'),
    extensions: (c.extensions ?? []).map((e) => ({ id: e.extnID, critical: e.critical, value: Buffer.from(e.extnValue.valueBlock.valueHexView).toString('hex') })),
  };
}

const comparable = (p: ParsedCsr) => ({ ...p, publicKey: p.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'), publicKeyDer: p.publicKeyDer.toString('hex') });

describe('WorkloadLeafEncoder against signCertificate(workloadLeaf(...))', () => {
  const root = makeRoot({ key: 'ec-p256' });
  const signers: Record<string, TestCa> = {
    'EC P-256': makeIntermediate(root, { key: 'ec-p256' }),
    'EC P-384': makeIntermediate(root, { key: 'ec-p384' }),
    'RSA-2048': makeIntermediate(root, { key: 'rsa-2048' }),
  };
  const csrKeys: KeySpec[] = ['ec-p256', 'ec-p384', 'rsa-2048'];
  /** The EC P-256 signer, its key id, an encoder for it, and a fresh P-256 CSR for ID. */
  const p256Setup = () => {
    const ca = signers['EC P-256']!;
    const signer = signerOf(ca);
    const issuerKeyId = inspectCertificate(ca.cert.raw).subjectKeyId;
    const encoder = new WorkloadLeafEncoder(signer, issuerKeyId);
    const csr = readCsrPem(buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] }));
    return { signer, issuerKeyId, encoder, csr };
  };

  for (const [signerName, ca] of Object.entries(signers)) {
    for (const csrKey of csrKeys) {
      it(`${signerName} signer, ${csrKey} CSR key: identical TBS, same fields, both pass openssl verify`, () => {
        const signer = signerOf(ca);
        const issuerKeyId = inspectCertificate(ca.cert.raw).subjectKeyId;
        expect(issuerKeyId).toBeDefined();
        const csr = readCsrPem(buildCsrPem({ privateKey: generateKeyPair(csrKey).privateKey, sans: [{ type: 'uri', value: ID }], subjectOrganization: '' }));
        const now = Date.now();
        const f = { spiffeId: ID, serialNumber: randomSerial(), publicKeyDer: csr.publicKeyDer, notBefore: new Date(now - 120_000), notAfter: new Date(now + 3_600_000) };

        const encoder = new WorkloadLeafEncoder(signer, issuerKeyId);
        const fast = encoder.issue(f);
        const plain = signCertificate(workloadLeaf({ ...f, issuerKeyId }), signer);

        const [fastTbs, fastAlg] = topLevel(fast);
        const [plainTbs, plainAlg] = topLevel(plain);
        expect(fastTbs!.toString('hex')).toBe(plainTbs!.toString('hex'));
        expect(encoder.encodeTbs(f).equals(plainTbs!)).toBe(true);
        expect(fastAlg!.equals(plainAlg!)).toBe(true);
        expect(fields(fast)).toEqual(fields(plain));

        const x509 = new X509Certificate(fast);
        expect(x509.verify(ca.cert.publicKey)).toBe(true);
        expect(x509.subjectAltName).toBe(`URI:${ID}`);
        expect(x509.serialNumber.toLowerCase()).toBe((f.serialNumber[0] === 0 ? f.serialNumber.subarray(1) : f.serialNumber).toString('hex'));
        for (const der of [fast, plain]) {
          expect(opensslVerify(root.certPem, [ca.certPem], encodePem('CERTIFICATE', der))).toContain('OK');
        }
        expect(opensslText(encodePem('CERTIFICATE', fast))).toContain('TLS Web Server Authentication, TLS Web Client Authentication');
      });
    }
  }

  it('frames SANs across the DER length-form boundaries (short form, one and two length octets) as the pkijs path does', () => {
    const { signer, issuerKeyId, encoder, csr } = p256Setup();
    const base = 'spiffe://cluster.local/ns/n/sa/';
    // SAN element lengths around 127/128 and 255/256 (the URI, the GeneralNames SEQUENCE, the OCTET STRING, the Extension).
    for (const total of [120, 123, 124, 125, 126, 127, 128, 129, 130, 250, 251, 252, 253, 254, 255, 256, 257, 600]) {
      const spiffeId = base + 'a'.repeat(total - base.length);
      const f = { spiffeId, serialNumber: randomSerial(), publicKeyDer: csr.publicKeyDer, notBefore: new Date(), notAfter: new Date(Date.now() + 60_000) };
      const plainTbs = topLevel(signCertificate(workloadLeaf({ ...f, issuerKeyId }), signer))[0]!;
      expect(encoder.encodeTbs(f).toString('hex'), `SPIFFE ID of ${total} characters`).toBe(plainTbs.toString('hex'));
      expect(new X509Certificate(encoder.issue(f)).subjectAltName).toBe(`URI:${spiffeId}`);
    }
  });

  it('draws serials that are distinct, positive, DER-minimal, and unchanged after the entropy pool refills', () => {
    const { encoder, csr } = p256Setup();
    const serials = Array.from({ length: 2_000 }, () => randomSerial());
    const hexAtDraw = serials.map((b) => b.toString('hex'));
    expect(new Set(hexAtDraw).size).toBe(serials.length);
    for (const [i, b] of serials.entries()) {
      expect(b.length).toBeGreaterThanOrEqual(1);
      expect(b.length).toBeLessThanOrEqual(17);
      expect(b[0]! & 0x80).toBe(0); // positive
      if (b.length > 1 && b[0] === 0) expect(b[1]! & 0x80).toBe(0x80); // a leading zero only where the sign needs it
      if (i < 100) {
        const leaf = new X509Certificate(encoder.issue({ spiffeId: ID, serialNumber: b, publicKeyDer: csr.publicKeyDer, notBefore: new Date(), notAfter: new Date(Date.now() + 60_000) }));
        expect(leaf.serialNumber.toLowerCase()).toBe(b.subarray(b[0] === 0 ? 1 : 0).toString('hex'));
      }
    }
    // 2,000 draws span several 4 KiB refills: each serial is its own copy, not a view of the pool.
    expect(serials.map((b) => b.toString('hex'))).toEqual(hexAtDraw);
  });

  it('writes GeneralizedTime from 2050 and UTCTime before, as the pkijs path does, and a serial with a leading zero byte', () => {
    const { signer, issuerKeyId, encoder, csr } = p256Setup();
    const f = {
      spiffeId: ID,
      serialNumber: Buffer.from('00ff0102030405060708090a0b0c0d0e0f', 'hex'),
      publicKeyDer: csr.publicKeyDer,
      notBefore: new Date('2049-12-31T23:59:59.999Z'),
      notAfter: new Date('2051-06-01T12:00:00.500Z'),
    };
    const tbs = encoder.encodeTbs(f);
    expect(tbs.toString('hex')).toBe(topLevel(signCertificate(workloadLeaf({ ...f, issuerKeyId }), signer))[0]!.toString('hex'));
    const c = pkijs.Certificate.fromBER(encoder.issue(f));
    expect(c.notBefore.type).toBe(0);
    expect(c.notAfter.type).toBe(1);
    expect(c.notAfter.value.toISOString()).toBe('2051-06-01T12:00:00.000Z');
  });

  it('omits the AKI exactly as the pkijs path does when the issuer has no key identifier', () => {
    const { signer, csr } = p256Setup();
    const f = { spiffeId: ID, serialNumber: randomSerial(), publicKeyDer: csr.publicKeyDer, notBefore: new Date(), notAfter: new Date(Date.now() + 60_000) };
    const tbs = new WorkloadLeafEncoder(signer, undefined).encodeTbs(f);
    expect(tbs.equals(topLevel(signCertificate(workloadLeaf({ ...f, issuerKeyId: undefined }), signer))[0]!)).toBe(true);
    expect(fields(new WorkloadLeafEncoder(signer, undefined).issue(f)).extensions.map((e) => e.id)).not.toContain('2.5.29.35');
  });
});

/** A CSR made by the openssl CLI, for shapes our own builder cannot make (other digests, other key types). */
function opensslCsr(keyPem: string | undefined, args: string[], subject = '/'): string {
  const dir = tempDir('svid-ca-fastcsr-');
  dirs.push(dir);
  const keyFile = join(dir, 'key.pem');
  if (keyPem) writeFileSync(keyFile, keyPem);
  // No key given: a P-256 key whose public point OpenSSL writes in compressed form.
  else execFileSync(tool('openssl'), ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-conv_form', 'compressed', '-out', keyFile]);
  return execFileSync(tool('openssl'), ['req', '-new', '-key', keyFile, '-subj', subject, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function pemOf(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

function kindOf(fn: () => unknown): string {
  try {
    fn();
    return 'accepted';
  } catch (err) {
    if (err instanceof CsrError) return err.problem;
    throw err;
  }
}

function flipByte(pem: string, fromEnd: number): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - fromEnd]! ^= 0x01;
  return encodePem('CERTIFICATE REQUEST', der);
}

describe('readCsrPem against parseCsrPem', () => {
  const valid: Record<string, () => string> = {
    'EC P-256, empty subject (ztunnel)': () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] }),
    'EC P-256, O= (istio-agent)': () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }], subjectOrganization: '' }),
    'EC P-384': () => buildCsrPem({ privateKey: generateKeyPair('ec-p384').privateKey, sans: [{ type: 'uri', value: ID }] }),
    'RSA-2048': () => buildCsrPem({ privateKey: generateKeyPair('rsa-2048').privateKey, sans: [{ type: 'uri', value: ID }] }),
    'RSA-3072': () => buildCsrPem({ privateKey: generateKeyPair('rsa-3072').privateKey, sans: [{ type: 'uri', value: ID }] }),
    'URI, DNS and IP SANs': () => {
      const sans: SanEntry[] = [
        { type: 'uri', value: ID },
        { type: 'dns', value: 'web.demo.svc' },
        { type: 'ip', value: Buffer.from([10, 1, 2, 3]) },
        { type: 'ip', value: Buffer.from('20010db8000000000000000000000001', 'hex') },
      ];
      return buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans });
    },
    'no SAN at all': () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [] }),
    'openssl req, SHA-384, email and URI SANs': () =>
      opensslCsr(pemOf(generateKeyPair('ec-p256').privateKey), ['-sha384', '-addext', `subjectAltName=URI:${ID},email:a@b.example`]),
    'openssl req, P-256 with a CN and O subject': () => opensslCsr(pemOf(generateKeyPair('ec-p256').privateKey), ['-addext', `subjectAltName=URI:${ID}`], '/CN=web/O=demo'),
    'openssl req, P-256 public key as a compressed point': () => opensslCsr(undefined, ['-addext', `subjectAltName=URI:${ID}`]),
  };
  it('describes a head-matched EC key (P-256, P-384) exactly as describeKey describes the imported KeyObject', () => {
    for (const spec of ['ec-p256', 'ec-p384'] as const) {
      const parsed = readCsrPem(buildCsrPem({ privateKey: generateKeyPair(spec).privateKey, sans: [{ type: 'uri', value: ID }] }));
      expect(parsed.key).toEqual(describeKey(parsed.publicKey));
      expect(parsed.key).toEqual({ kind: 'ec', curve: spec === 'ec-p256' ? 'P-256' : 'P-384' });
    }
  });
  for (const [name, make] of Object.entries(valid)) {
    it(`same ParsedCsr for a valid CSR: ${name}`, () => {
      const pem = make();
      expect(comparable(readCsrPem(pem))).toEqual(comparable(parseCsrPem(pem)));
    });
  }

  const p256 = () => generateKeyPair('ec-p256').privateKey;
  const invalid: Record<string, [() => string, string]> = {
    'no PEM block': [() => 'not a csr', 'malformed'],
    'PEM of random bytes': [() => encodePem('CERTIFICATE REQUEST', Buffer.from('3003020100ff', 'hex')), 'malformed'],
    'a certificate instead of a CSR': [() => makeRoot().certPem, 'malformed'],
    'truncated DER': [
      () => {
        const pem = buildCsrPem({ privateKey: p256(), sans: [{ type: 'uri', value: ID }] });
        const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
        return encodePem('CERTIFICATE REQUEST', der.subarray(0, der.length - 10));
      },
      'malformed',
    ],
    'signature does not verify': [() => flipByte(buildCsrPem({ privateKey: p256(), sans: [{ type: 'uri', value: ID }] }), 3), 'signature'],
    'SHA-1 signature': [() => opensslCsr(pemOf(p256()), ['-sha1', '-addext', `subjectAltName=URI:${ID}`]), 'signature'],
    'RSA-1024 key': [() => buildCsrPem({ privateKey: generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey, sans: [{ type: 'uri', value: ID }] }), 'key'],
    'EC P-521 key': [() => buildCsrPem({ privateKey: generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey, sans: [{ type: 'uri', value: ID }] }), 'key'],
    'Ed25519 key': [() => opensslCsr(pemOf(generateKeyPairSync('ed25519').privateKey), ['-addext', `subjectAltName=URI:${ID}`]), 'key'],
    'more SANs than allowed': [
      () => buildCsrPem({ privateKey: p256(), sans: Array.from({ length: 9 }, (_, i) => ({ type: 'dns' as const, value: `h${i}.example` })) }),
      'san',
    ],
    'a SAN longer than allowed': [() => buildCsrPem({ privateKey: p256(), sans: [{ type: 'uri', value: `spiffe://cluster.local/${'a'.repeat(1100)}` }] }), 'san'],
  };
  for (const [name, [make, kind]] of Object.entries(invalid)) {
    it(`same CsrError kind for an invalid CSR: ${name} -> ${kind}`, () => {
      const pem = make();
      expect(kindOf(() => parseCsrPem(pem))).toBe(kind);
      expect(kindOf(() => readCsrPem(pem))).toBe(kind);
    });
  }
});

describe('JWT verified-token cache', () => {
  it('verifies a token once, serves the same caller from the cache, and forgets it at exp', async () => {
    const issuer = await createTestIssuer();
    const auth = new JwtAuthenticator({ issuer: issuer.issuer, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: issuer.jwksFile });
    const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web', pod: 'web-1', expiresInSeconds: 600 });
    const first = await auth.authenticate({ authorization: [`Bearer ${token}`], clusterId: [] });
    expect(first?.identity).toBe('spiffe://cluster.local/ns/demo/sa/web');
    expect(auth.verified.size).toBe(1);
    const key = VerifiedTokenCache.keyOf(token);
    expect(auth.verified.get(key)).toEqual(first);
    // The same token again is answered from the cache with the same caller.
    expect(await auth.authenticate({ authorization: [`Bearer ${token}`], clusterId: [] })).toEqual(first);
    // At the token's exp the entry is gone (no clock tolerance for cached entries).
    expect(auth.verified.get(key, Date.now() + 601_000)).toBeUndefined();
    expect(auth.verified.size).toBe(0);
    // A token that fails verification is never cached.
    const forged = `${token.slice(0, -4)}AAAA`;
    await expect(auth.authenticate({ authorization: [`Bearer ${forged}`], clusterId: [] })).rejects.toThrow(/signature/);
    expect(auth.verified.get(VerifiedTokenCache.keyOf(forged))).toBeUndefined();
  });

  it('stays within its bound, dropping the oldest entry first', () => {
    const cache = new VerifiedTokenCache(3);
    const caller = (i: number) => ({ identity: `spiffe://cluster.local/ns/n/sa/s${i}`, namespace: 'n', serviceAccount: `s${i}`, authenticator: 'jwt' });
    const exp = Date.now() + 60_000;
    for (let i = 0; i < 5; i++) cache.set(`k${i}`, caller(i), exp);
    expect(cache.size).toBe(3);
    expect(cache.get('k0')).toBeUndefined();
    expect(cache.get('k1')).toBeUndefined();
    expect(cache.get('k4')?.serviceAccount).toBe('s4');
    // Already-expired tokens are not stored; size 0 turns the cache off.
    cache.set('old', caller(9), Date.now() - 1);
    expect(cache.get('old')).toBeUndefined();
    const off = new VerifiedTokenCache(0);
    off.set('k', caller(1), exp);
    expect(off.size).toBe(0);
  });
});
