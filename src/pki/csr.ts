import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { CsrError } from './errors.js';
import { describeKey, keyLabel, rsaExponentProblem, SIGNATURE_ALGORITHMS, spkiProblem, type KeyDescription } from './keys.js';
import { OID } from './oids.js';
import { decodePem } from './pem.js';

/** The subject alternative names a CSR asks for, by kind. */
export interface CsrSans {
  uris: string[];
  dns: string[];
  ips: string[];
  emails: string[];
  /** GeneralName kinds we do not issue (otherName, directoryName, ...), counted for the error. */
  other: number;
}

export interface ParsedCsr {
  /** SubjectPublicKeyInfo DER exactly as in the CSR, which is checked to be the key's canonical DER (keys.ts spkiProblem). */
  publicKeyDer: Buffer;
  publicKey: KeyObject;
  key: KeyDescription;
  sans: CsrSans;
  signatureAlgorithm: string;
}

/** Untrusted-input bounds: far above what any Istio client sends, far below what could cost us. */
export const CSR_LIMITS = { maxSans: 8, maxSanLength: 1024, maxAttributes: 8, maxExtensions: 16 } as const;

/**
 * The attribute and extension counts of a CSR, checked right after its structure is read and before
 * the key is imported or the signature verified (issue #19: 3,300 empty extensions in one CSR).
 * Istio's agents send one attribute with one extension. Both CSR readers call this.
 */
export function checkCsrCounts(attributes: number, extensions: number): void {
  if (attributes > CSR_LIMITS.maxAttributes) {
    throw new CsrError('malformed', `CSR carries ${attributes} attributes; at most ${CSR_LIMITS.maxAttributes} are accepted`);
  }
  if (extensions > CSR_LIMITS.maxExtensions) {
    throw new CsrError('malformed', `CSR requests ${extensions} extensions; at most ${CSR_LIMITS.maxExtensions} are accepted`);
  }
}

/** Keys we sign for: RSA 2048-8192 bits and EC P-256/P-384, as Istio's agents and ztunnel generate. */
export function checkWorkloadKey(key: KeyDescription): void {
  if (key.kind === 'rsa' && key.bits >= 2048 && key.bits <= 8192) return;
  if (key.kind === 'ec' && (key.curve === 'P-256' || key.curve === 'P-384')) return;
  throw new CsrError('key', `CSR key ${keyLabel(key)} is not accepted: use RSA 2048-8192 bits or EC P-256/P-384`);
}

/**
 * A CSR's imported public key and its description. An importer that knows the key's kind and curve
 * from the bytes it matched (fast-csr.ts: the canonical P-256/P-384 SPKI heads) hands back both, so
 * the key's details are not read back from OpenSSL (asymmetricKeyDetails: a C++ round trip per CSR).
 */
export interface ImportedKey {
  publicKey: KeyObject;
  key: KeyDescription;
}

/**
 * Imports a CSR's public key with `importKey` and checks it is one we sign for: kind and size, an
 * RSA exponent that cannot make the signature check expensive, and SPKI bytes that are the key's
 * canonical DER (the leaf copies them). `importKey` returns the KeyObject, or the KeyObject with its
 * description (ImportedKey) when the bytes already say what the key is; the checks are the same.
 * Shared by both CSR readers; runs before the signature check.
 */
export function acceptWorkloadKey(publicKeyDer: Buffer, importKey: (der: Buffer) => KeyObject | ImportedKey): ImportedKey {
  let imported: KeyObject | ImportedKey;
  try {
    imported = importKey(publicKeyDer);
  } catch {
    throw new CsrError('key', 'CSR public key cannot be read: use RSA 2048-8192 bits or EC P-256/P-384');
  }
  const publicKey = 'publicKey' in imported ? imported.publicKey : imported;
  const key = 'publicKey' in imported ? imported.key : describeKey(publicKey);
  checkWorkloadKey(key);
  const problem = rsaExponentProblem(publicKey, key) ?? spkiProblem(publicKeyDer, publicKey, key);
  if (problem) throw new CsrError('key', problem);
  return { publicKey, key };
}

/**
 * Parses a PEM CSR (the first PEM block, whatever its label, as istiod does), checks its
 * self-signature and key, and returns what the CA needs. Throws CsrError on anything else.
 */
export function parseCsrPem(pem: string): ParsedCsr {
  const block = decodePem(pem)[0];
  if (!block) throw new CsrError('malformed', 'certificate signing request is not properly encoded: no PEM block found');
  return parseCsrDer(block.der);
}

export function parseCsrDer(der: Buffer): ParsedCsr {
  try {
    return parseCsrDerUnguarded(der);
  } catch (err) {
    if (err instanceof CsrError) throw err;
    // pkijs/asn1js throw plain errors (RangeError, "Wrong input string ...") on some malformed
    // inputs deep inside structures they accepted at first: still the caller's malformed CSR.
    throw new CsrError('malformed', 'failed to parse X.509 certificate signing request: malformed content');
  }
}

function parseCsrDerUnguarded(der: Buffer): ParsedCsr {
  const { csr, spkiBytes } = decodeCsr(der);
  checkCsrCounts(csr.attributes?.length ?? 0, extensionCount(csr));
  // The SPKI bytes as the CSR carries them (pkijs' toSchema() would re-encode them).
  const publicKeyDer = spkiBytes;
  const { publicKey, key } = acceptWorkloadKey(publicKeyDer, (der) => createPublicKey({ key: der, format: 'der', type: 'spki' }));
  const signatureAlgorithm = verifySelfSignature(csr, publicKey);
  return { publicKeyDer, publicKey, key, sans: readSans(csr), signatureAlgorithm };
}

function decodeCsr(der: Buffer): { csr: pkijs.CertificationRequest; spkiBytes: Buffer } {
  const asn1 = asn1js.fromBER(der);
  if (asn1.offset === -1 || asn1.offset !== der.length) {
    throw new CsrError('malformed', 'failed to parse X.509 certificate signing request: invalid DER');
  }
  let csr: pkijs.CertificationRequest;
  try {
    csr = new pkijs.CertificationRequest({ schema: asn1.result });
  } catch {
    throw new CsrError('malformed', 'failed to parse X.509 certificate signing request: not a PKCS#10 structure');
  }
  // The schema matched: CertificationRequest.certificationRequestInfo.subjectPKInfo is the third element.
  const info = (asn1.result as asn1js.Sequence).valueBlock.value[0] as asn1js.Sequence;
  const spki = info.valueBlock.value[2]!.valueBeforeDecodeView;
  return { csr, spkiBytes: Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength) };
}

/** Extensions in the CSR's extensionRequest attributes, counted as fast-csr.ts counts them. */
function extensionCount(csr: pkijs.CertificationRequest): number {
  let count = 0;
  for (const attr of csr.attributes ?? []) {
    if (attr.type !== OID.extensionRequest) continue;
    for (const value of attr.values as asn1js.AsnType[]) {
      const id = (value as asn1js.BaseBlock).idBlock;
      if (value instanceof asn1js.Constructed && id.tagClass === 1 && id.tagNumber === 16 && !id.isHexOnly) count += value.valueBlock.value.length;
    }
  }
  return count;
}

function verifySelfSignature(csr: pkijs.CertificationRequest, publicKey: KeyObject): string {
  const alg = SIGNATURE_ALGORITHMS[csr.signatureAlgorithm.algorithmId];
  if (!alg || alg.hash === 'sha1') {
    const name = alg?.name ?? csr.signatureAlgorithm.algorithmId;
    throw new CsrError('signature', `CSR signature algorithm ${name} is not accepted: sign with SHA-256 or stronger`);
  }
  let ok = false;
  try {
    ok = verify(alg.hash, csr.tbsView, publicKey, csr.signatureValue.valueBlock.valueHexView);
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrError('signature', 'CSR signature does not verify with the CSR public key');
  return alg.name;
}

function readSans(csr: pkijs.CertificationRequest): CsrSans {
  const sans: CsrSans = { uris: [], dns: [], ips: [], emails: [], other: 0 };
  let sanExtensions = 0;
  for (const attr of csr.attributes ?? []) {
    if (attr.type !== OID.extensionRequest) continue;
    for (const value of attr.values) {
      let exts: pkijs.Extensions;
      try {
        exts = new pkijs.Extensions({ schema: value });
      } catch {
        throw new CsrError('malformed', 'CSR extension request cannot be parsed');
      }
      for (const ext of exts.extensions) {
        if (ext.extnID !== OID.subjectAltName) continue;
        if (++sanExtensions > 1) throw new CsrError('malformed', 'CSR carries more than one SubjectAltName extension');
        const altName = ext.parsedValue;
        if (!(altName instanceof pkijs.AltName)) throw new CsrError('malformed', 'CSR SubjectAltName extension cannot be parsed');
        for (const name of altName.altNames) addSan(sans, name);
      }
    }
  }
  const count = sans.uris.length + sans.dns.length + sans.ips.length + sans.emails.length + sans.other;
  if (count > CSR_LIMITS.maxSans) {
    throw new CsrError('san', `CSR asks for ${count} subject alternative names; at most ${CSR_LIMITS.maxSans} are accepted`);
  }
  return sans;
}

function addSan(sans: CsrSans, name: pkijs.GeneralName): void {
  const text = (v: unknown): string => {
    if (typeof v !== 'string') throw new CsrError('malformed', 'CSR SubjectAltName entry cannot be parsed');
    if (v.length > CSR_LIMITS.maxSanLength) {
      throw new CsrError('san', `CSR subject alternative name is longer than ${CSR_LIMITS.maxSanLength} characters`);
    }
    return v;
  };
  switch (name.type) {
    case 1:
      sans.emails.push(text(name.value));
      return;
    case 2:
      sans.dns.push(text(name.value));
      return;
    case 6:
      sans.uris.push(text(name.value));
      return;
    case 7: {
      const bytes = name.value instanceof asn1js.OctetString ? name.value.valueBlock.valueHexView : undefined;
      sans.ips.push(bytes ? formatIp(bytes) : '(unreadable IP)');
      return;
    }
    default:
      sans.other++;
  }
}

/** An iPAddress SAN as text, for error messages: dotted IPv4, uncompressed IPv6, else hex. */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    return groups.join(':');
  }
  return Buffer.from(bytes).toString('hex');
}
