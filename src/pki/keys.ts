import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { OID } from './oids.js';

/** How a public key is described in errors, logs and audit records. */
export type KeyDescription =
  | { kind: 'rsa'; bits: number }
  | { kind: 'ec'; curve: string }
  | { kind: 'other'; type: string };

export type KeySpec = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096';
export const KEY_SPECS: readonly KeySpec[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'];

/** A signature algorithm as it appears in a certificate, and the node:crypto digest that computes it. */
export interface SignatureAlgorithm {
  name: string;
  oid: string;
  hash: 'sha256' | 'sha384' | 'sha512' | 'sha1';
  /** RSA algorithm identifiers carry an explicit NULL parameter; ECDSA ones carry none. */
  nullParams: boolean;
}

export const SIGNATURE_ALGORITHMS: Record<string, SignatureAlgorithm> = {
  [OID.sha256WithRSA]: { name: 'sha256WithRSAEncryption', oid: OID.sha256WithRSA, hash: 'sha256', nullParams: true },
  [OID.sha384WithRSA]: { name: 'sha384WithRSAEncryption', oid: OID.sha384WithRSA, hash: 'sha384', nullParams: true },
  [OID.sha512WithRSA]: { name: 'sha512WithRSAEncryption', oid: OID.sha512WithRSA, hash: 'sha512', nullParams: true },
  [OID.sha1WithRSA]: { name: 'sha1WithRSAEncryption', oid: OID.sha1WithRSA, hash: 'sha1', nullParams: true },
  [OID.ecdsaWithSha256]: { name: 'ecdsa-with-SHA256', oid: OID.ecdsaWithSha256, hash: 'sha256', nullParams: false },
  [OID.ecdsaWithSha384]: { name: 'ecdsa-with-SHA384', oid: OID.ecdsaWithSha384, hash: 'sha384', nullParams: false },
  [OID.ecdsaWithSha512]: { name: 'ecdsa-with-SHA512', oid: OID.ecdsaWithSha512, hash: 'sha512', nullParams: false },
  [OID.ecdsaWithSha1]: { name: 'ecdsa-with-SHA1', oid: OID.ecdsaWithSha1, hash: 'sha1', nullParams: false },
};

const CURVE_NAMES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

export function describeKey(key: KeyObject): KeyDescription {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') return { kind: 'rsa', bits: details.modulusLength ?? 0 };
  if (key.asymmetricKeyType === 'ec') {
    const curve = details.namedCurve ?? 'unknown';
    return { kind: 'ec', curve: CURVE_NAMES[curve] ?? curve };
  }
  return { kind: 'other', type: key.asymmetricKeyType ?? 'unknown' };
}

export function keyLabel(d: KeyDescription): string {
  if (d.kind === 'rsa') return `RSA-${d.bits}`;
  if (d.kind === 'ec') return `EC ${d.curve}`;
  return d.type;
}

/**
 * The algorithm a CA key signs with, as Go's x509 picks it: RSA of any size -> SHA-256,
 * P-256 -> ECDSA-SHA256, P-384 -> ECDSA-SHA384, P-521 -> ECDSA-SHA512. Other key types
 * cannot sign for Istio workloads here.
 */
export function signatureAlgorithmForKey(key: KeyObject): SignatureAlgorithm | undefined {
  const d = describeKey(key);
  if (d.kind === 'rsa') return SIGNATURE_ALGORITHMS[OID.sha256WithRSA];
  if (d.kind === 'ec' && d.curve === 'P-256') return SIGNATURE_ALGORITHMS[OID.ecdsaWithSha256];
  if (d.kind === 'ec' && d.curve === 'P-384') return SIGNATURE_ALGORITHMS[OID.ecdsaWithSha384];
  if (d.kind === 'ec' && d.curve === 'P-521') return SIGNATURE_ALGORITHMS[OID.ecdsaWithSha512];
  return undefined;
}

/** A fresh key pair; the private key never leaves memory unless the caller writes it. */
export function generateKeyPair(spec: KeySpec): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (spec) {
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    case 'ec-p384':
      return generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    case 'rsa-2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 });
    case 'rsa-3072':
      return generateKeyPairSync('rsa', { modulusLength: 3072 });
    case 'rsa-4096':
      return generateKeyPairSync('rsa', { modulusLength: 4096 });
  }
}

export function spkiDer(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'der' });
}

export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/**
 * The canonical SubjectPublicKeyInfo head of an uncompressed EC point on each workload curve
 * (RFC 5480 2.1.1 namedCurve, 2.2 uncompressed form), encoded once with asn1js: an SPKI that is
 * exactly this head plus the point is canonical.
 */
export const EC_SPKI_HEADS = [
  { crv: 'P-256', curveOid: '1.2.840.10045.3.1.7', coordinateBytes: 32 },
  { crv: 'P-384', curveOid: '1.3.132.0.34', coordinateBytes: 48 },
].map((c) => {
  const point = new Uint8Array(1 + 2 * c.coordinateBytes);
  const spki = new asn1js.Sequence({
    value: [
      new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.ecPublicKey }), new asn1js.ObjectIdentifier({ value: c.curveOid })] }),
      new asn1js.BitString({ valueHex: point }),
    ],
  });
  const der = Buffer.from(spki.toBER(false));
  return { ...c, head: der.subarray(0, der.length - point.length), length: der.length };
});

/** Is `spki` exactly the canonical encoding of an uncompressed point on one of EC_SPKI_HEADS' curves? */
export function isCanonicalEcSpki(spki: Buffer, crv?: string): boolean {
  return EC_SPKI_HEADS.some(
    (c) => (crv === undefined || c.crv === crv) && spki.length === c.length && spki[c.head.length] === 0x04 && spki.subarray(0, c.head.length).equals(c.head),
  );
}

/**
 * Why a workload key's SubjectPublicKeyInfo bytes are not the one canonical DER encoding of the key,
 * or undefined when they are. The leaf copies these bytes, so anything else would put bytes of the
 * caller's choosing into a certificate we sign (issue #19: explicit EC parameters, compressed points,
 * RSA parameters other than NULL, BER lengths). Canonical: EC = namedCurve + uncompressed point
 * (RFC 5480), RSA = rsaEncryption with NULL parameters and the DER RSAPublicKey (RFC 3279 2.3.1),
 * whose RSAPublicKey is what OpenSSL writes for the imported key, so a byte comparison decides.
 * The common case costs one Buffer comparison (EC) or one PKCS#1 export (RSA, ~13 us; the SPKI
 * export costs twice that); diagnosis only on failure.
 */
export function spkiProblem(spki: Buffer, publicKey: KeyObject, key: KeyDescription): string | undefined {
  if (key.kind === 'ec') {
    if (isCanonicalEcSpki(spki, key.curve)) return undefined;
  } else if (key.kind === 'rsa') {
    if (isCanonicalRsaSpki(spki, publicKey)) return undefined;
  } else {
    return undefined;
  }
  return `CSR public key is not canonical: ${diagnoseSpki(spki, key.kind)}`;
}

/** rsaEncryption AlgorithmIdentifier with NULL parameters (RFC 3279 2.3.1), DER. */
const RSA_ALGORITHM = Buffer.from('300d06092a864886f70d0101010500', 'hex');

/** A DER definite length in its shortest form (X.690 10.1). */
function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** SEQUENCE { rsaEncryption NULL, BIT STRING { 0 unused bits, the key's DER RSAPublicKey } }, compared piece by piece. */
function isCanonicalRsaSpki(spki: Buffer, publicKey: KeyObject): boolean {
  const pkcs1 = publicKey.export({ type: 'pkcs1', format: 'der' });
  const bitString = Buffer.concat([Buffer.from([0x03]), derLength(pkcs1.length + 1), Buffer.from([0])]);
  const innerLength = RSA_ALGORITHM.length + bitString.length + pkcs1.length;
  const head = Buffer.concat([Buffer.from([0x30]), derLength(innerLength), RSA_ALGORITHM, bitString]);
  return spki.length === head.length + pkcs1.length && spki.subarray(0, head.length).equals(head) && spki.subarray(head.length).equals(pkcs1);
}

function diagnoseSpki(spki: Buffer, kind: 'ec' | 'rsa'): string {
  const notDer = 'it is not DER-encoded';
  const parsed = asn1js.fromBER(new Uint8Array(spki));
  const [algorithm, bits] = parsed.offset === -1 ? [] : ((parsed.result as asn1js.Sequence).valueBlock?.value ?? []);
  const params = (algorithm as asn1js.Sequence | undefined)?.valueBlock?.value?.[1];
  if (kind === 'rsa') return params instanceof asn1js.Null ? notDer : 'RSA algorithm parameters must be NULL';
  if (!(params instanceof asn1js.ObjectIdentifier)) return 'the EC curve must be named (P-256 or P-384), not given by explicit parameters';
  const point = bits instanceof asn1js.BitString ? bits.valueBlock.valueHexView : undefined;
  if (point && point[0] !== 0x04) return 'the EC point must be uncompressed';
  return notDer;
}

/** RSA public exponents we accept: odd, 3 to 2^32+1 (Go's crypto/rsa bound); anything larger only costs us CPU. */
export const MAX_RSA_EXPONENT = 2n ** 32n + 1n;

/** Why an RSA key's public exponent is refused, or undefined. */
export function rsaExponentProblem(publicKey: KeyObject, key: KeyDescription): string | undefined {
  // key.kind first: asymmetricKeyDetails is a C++ round trip that builds an object (~1% of a signing worker).
  if (key.kind !== 'rsa') return undefined;
  const e = publicKey.asymmetricKeyDetails?.publicExponent;
  if (e === undefined) return undefined;
  if (e >= 3n && e <= MAX_RSA_EXPONENT && e % 2n === 1n) return undefined;
  const shown = e > MAX_RSA_EXPONENT ? `a ${e.toString(2).length}-bit public exponent` : `public exponent ${e}`;
  return `CSR key ${keyLabel(key)} has ${shown}; accepted: an odd exponent from 3 to 2^32+1 (65537 is usual)`;
}
