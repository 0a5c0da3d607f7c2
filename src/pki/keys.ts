import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
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
