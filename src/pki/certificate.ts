import { createHash, randomFillSync, sign, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import type { ExtensionSpec } from './extensions.js';
import type { SignatureAlgorithm } from './keys.js';

/**
 * A certificate to be signed, as plain data (Go's x509.Certificate template). Names are DER so
 * that an issuer Name is copied byte for byte from the signer's subject: webpki compares them
 * as bytes, and a re-encoded Name breaks the chain for ztunnel even where OpenSSL accepts it.
 */
export interface CertificateTemplate {
  serialNumber: Buffer;
  subjectDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** SubjectPublicKeyInfo DER, copied verbatim from the CSR or key. */
  publicKeyDer: Buffer;
  extensions: ExtensionSpec[];
}

/**
 * A signing key held outside this process (a PKCS#11 token, issue #17), behind one interface as
 * smallstep's KMS backends are: it signs a TBS and returns the signatureValue contents X.509 wants
 * (DER ECDSA-Sig-Value, or PKCS#1 v1.5 for RSA), with the Signer's algorithm.
 */
export interface ExternalKey {
  /** For logs and errors: the key's URI with any query (PIN source) left out. */
  readonly description: string;
  /** Blocking signature: for rare signatures (serving certificate, probes, CA certificates). */
  signSync(tbs: Buffer): Buffer;
  /** Signature off the event loop, bounded by a per-signature timeout: the issuance path. */
  sign(tbs: Buffer): Promise<Buffer>;
  /** False while the key's device does not answer (readiness reports NOT_SERVING). */
  isAvailable(): boolean;
}

/**
 * What signs: the issuer's subject Name DER, the algorithm, and either its private key in memory
 * (the sync node:crypto fast path) or an external key (`external`); an in-memory key, if present, wins.
 */
export type Signer =
  | { subjectDer: Buffer; algorithm: SignatureAlgorithm; privateKey: KeyObject; external?: undefined }
  | { subjectDer: Buffer; algorithm: SignatureAlgorithm; privateKey?: KeyObject | undefined; external: ExternalKey };

/** The signatureValue contents for `tbs`: node:crypto with an in-memory key, else the external key's blocking call. */
export function signTbs(signer: Signer, tbs: Buffer): Buffer {
  return signer.privateKey ? sign(signer.algorithm.hash, tbs, signer.privateKey) : signer.external!.signSync(tbs); // a Signer without privateKey has external (the type says so)
}

/**
 * A random positive serial number: 128 random bits, DER-minimal, with a leading zero byte when
 * the high bit is set (so at most 17 bytes, as Go writes Istio's serials).
 */
export function randomSerial(): Buffer {
  for (;;) {
    let bytes = serialEntropy.next();
    let start = 0;
    while (start < bytes.length - 1 && bytes[start] === 0) start++;
    bytes = bytes.subarray(start);
    if (bytes.length === 1 && bytes[0] === 0) continue;
    const out = Buffer.allocUnsafe(bytes.length + (bytes[0]! & 0x80 ? 1 : 0));
    out[0] = 0;
    out.set(bytes, out.length - bytes.length);
    return out;
  }
}

/**
 * 16-byte draws from the CSPRNG, filled 4 KiB at a time: one randomFillSync per 256 serials
 * instead of one per certificate. Each draw is copied out, so no two serials share bytes.
 */
const serialEntropy = (() => {
  const pool = Buffer.alloc(4096);
  let at = pool.length;
  return {
    next(): Buffer {
      if (at + 16 > pool.length) {
        randomFillSync(pool);
        at = 0;
      }
      at += 16;
      return pool.subarray(at - 16, at);
    },
  };
})();

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(publicKeyDer: Buffer): Buffer {
  const spki = pkijs.PublicKeyInfo.fromBER(publicKeyDer);
  return createHash('sha1').update(spki.subjectPublicKey.valueBlock.valueHexView).digest();
}

export function algorithmIdentifier(alg: SignatureAlgorithm): pkijs.AlgorithmIdentifier {
  return alg.nullParams
    ? new pkijs.AlgorithmIdentifier({ algorithmId: alg.oid, algorithmParams: new asn1js.Null() })
    : new pkijs.AlgorithmIdentifier({ algorithmId: alg.oid });
}

/** A standalone ArrayBuffer copy: pkijs wants ArrayBuffer, and a Buffer may be a view into a shared pool. */
export function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(b.byteLength);
  new Uint8Array(out).set(b);
  return out;
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Whole seconds only. */
function x509Time(date: Date): pkijs.Time {
  const value = new Date(Math.floor(date.getTime() / 1000) * 1000);
  return new pkijs.Time({ type: value.getUTCFullYear() < 2050 ? 0 : 1, value });
}

/** Signs `template` with `signer` and returns the certificate DER. The one place certificates are made. */
export function signCertificate(template: CertificateTemplate, signer: Signer): Buffer {
  const alg = algorithmIdentifier(signer.algorithm);
  const cert = new pkijs.Certificate({
    version: 2,
    serialNumber: new asn1js.Integer({ valueHex: template.serialNumber }),
    signature: alg,
    issuer: pkijs.RelativeDistinguishedNames.fromBER(signer.subjectDer),
    subject: pkijs.RelativeDistinguishedNames.fromBER(template.subjectDer),
    notBefore: x509Time(template.notBefore),
    notAfter: x509Time(template.notAfter),
    subjectPublicKeyInfo: pkijs.PublicKeyInfo.fromBER(template.publicKeyDer),
    extensions: template.extensions.map(
      (e) => new pkijs.Extension({ extnID: e.oid, critical: e.critical, extnValue: toArrayBuffer(e.value) }),
    ),
  });
  const tbs = Buffer.from(cert.encodeTBS().toBER());
  const signature = signTbs(signer, tbs);
  cert.tbsView = new Uint8Array(tbs);
  cert.signatureAlgorithm = algorithmIdentifier(signer.algorithm);
  cert.signatureValue = new asn1js.BitString({ valueHex: signature });
  return Buffer.from(cert.toSchema(false).toBER());
}
