import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { acceptWorkloadKey, checkCsrCounts, CSR_LIMITS, formatIp, type CsrSans, type ImportedKey, type ParsedCsr } from './csr.js';
import { CsrError } from './errors.js';
import { EC_SPKI_HEADS, SIGNATURE_ALGORITHMS } from './keys.js';
import { readDer, type DerElement } from './der.js';
import { OID } from './oids.js';
import { decodePem } from './pem.js';

/**
 * The CSR reader of the issuance hot path: the same checks and results as csr.ts parseCsrPem,
 * walking the DER elements directly (der.ts: offsets into the CSR, asn1js only for what its narrow
 * reader leaves) instead of building pkijs objects (schema comparison and object construction
 * were most of parseCsrPem's ~0.7 ms).
 *
 * The CSR is untrusted input. Every element is checked for the universal type the PKCS#10
 * grammar puts there before it is used, and anything else is a CsrError, never an exception
 * from a missing property (test/fast-csr-fuzz.test.ts feeds it mutated and random bytes).
 * The checks run in parseCsrDer's order, so a broken CSR gets the same error kind from both:
 * structure (malformed) -> key -> self-signature -> extension request and SANs (malformed/san).
 */

type Block = DerElement;

const UNIVERSAL = 1;
const CONTEXT = 3;
const TAG = { boolean: 1, integer: 2, bitString: 3, octetString: 4, oid: 6, sequence: 16, set: 17 } as const;

const notPkcs10 = () => new CsrError('malformed', 'failed to parse X.509 certificate signing request: not a PKCS#10 structure');

function is(block: Block | undefined, tagClass: number, tagNumber: number, constructed: boolean): block is Block {
  return block !== undefined && block.tagClass === tagClass && block.tagNumber === tagNumber && block.constructed === constructed;
}

/** The CSR being read: its DER bytes, and views of them by element. */
class CsrBytes {
  constructor(readonly der: Buffer) {}

  /** The content octets of a primitive element (of a BIT STRING: after its unused-bits octet, as asn1js gives them). */
  contents(block: Block): Buffer {
    const skip = block.tagClass === UNIVERSAL && block.tagNumber === TAG.bitString ? 1 : 0;
    return this.der.subarray(block.body + skip, block.end);
  }

  /** The whole element, header included. */
  bytesOf(block: Block): Buffer {
    return this.der.subarray(block.start, block.end);
  }
}

function oidOf(block: Block | undefined): string | undefined {
  return is(block, UNIVERSAL, TAG.oid, false) ? block.oid : undefined;
}

/** AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL } */
function algorithmOid(block: Block | undefined): string | undefined {
  if (!is(block, UNIVERSAL, TAG.sequence, true)) return undefined;
  const [oid, , extra] = block.children;
  if (extra !== undefined) return undefined;
  return oidOf(oid);
}

/** Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value ANY } */
function isName(block: Block | undefined): boolean {
  if (!is(block, UNIVERSAL, TAG.sequence, true)) return false;
  return block.children.every(
    (rdn) =>
      is(rdn, UNIVERSAL, TAG.set, true) &&
      rdn.children.every((atv) => {
        if (!is(atv, UNIVERSAL, TAG.sequence, true)) return false;
        const [type, value, extra] = atv.children;
        return oidOf(type) !== undefined && value !== undefined && extra === undefined;
      }),
  );
}

/** Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET OF ANY } */
function attribute(block: Block): { type: string; values: Block[] } {
  if (!is(block, UNIVERSAL, TAG.sequence, true)) throw notPkcs10();
  const [type, values, extra] = block.children;
  const oid = oidOf(type);
  if (oid === undefined || !is(values, UNIVERSAL, TAG.set, true) || extra !== undefined) throw notPkcs10();
  return { type: oid, values: values.children };
}

interface CsrParts {
  bytes: CsrBytes;
  tbs: Buffer;
  spki: Block;
  attributes: { type: string; values: Block[] }[];
  signatureAlgorithm: string;
  signature: Uint8Array;
}

/** CertificationRequest ::= SEQUENCE { info SEQUENCE { version, subject, spki, [0] attributes }, algorithm, signature } */
function decodeCsr(der: Buffer): CsrParts {
  const root = readDer(der);
  if (root === undefined) throw new CsrError('malformed', 'failed to parse X.509 certificate signing request: invalid DER');
  const bytes = new CsrBytes(der);
  if (!is(root, UNIVERSAL, TAG.sequence, true)) throw notPkcs10();
  const [info, algorithm, signature, extra] = root.children;
  if (extra !== undefined || !is(info, UNIVERSAL, TAG.sequence, true) || !is(signature, UNIVERSAL, TAG.bitString, false)) throw notPkcs10();
  const signatureAlgorithm = algorithmOid(algorithm);
  if (signatureAlgorithm === undefined) throw notPkcs10();

  const [version, subject, spki, attrs, extraInfo] = info.children;
  if (!is(version, UNIVERSAL, TAG.integer, false) || !isName(subject) || extraInfo !== undefined) throw notPkcs10();
  // SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
  if (!is(spki, UNIVERSAL, TAG.sequence, true)) throw notPkcs10();
  const [keyAlgorithm, keyBits, extraKey] = spki.children;
  if (algorithmOid(keyAlgorithm) === undefined || !is(keyBits, UNIVERSAL, TAG.bitString, false) || extraKey !== undefined) throw notPkcs10();
  // attributes [0] IMPLICIT SET OF Attribute; optional here as in pkijs (PKCS#10 writers always put it).
  let attributes: CsrParts['attributes'] = [];
  if (attrs !== undefined) {
    if (!is(attrs, CONTEXT, 0, true)) throw notPkcs10();
    attributes = attrs.children.map(attribute);
  }
  checkCsrCounts(attributes.length, extensionCount(attributes));
  return { bytes, tbs: bytes.bytesOf(info), spki, attributes, signatureAlgorithm, signature: bytes.contents(signature) };
}

/** Extensions in the extensionRequest attributes (each value an Extensions SEQUENCE), before they are read. */
function extensionCount(attributes: CsrParts['attributes']): number {
  let count = 0;
  for (const attr of attributes) {
    if (attr.type !== OID.extensionRequest) continue;
    for (const value of attr.values) if (is(value, UNIVERSAL, TAG.sequence, true)) count += value.children.length;
  }
  return count;
}

/**
 * The CSR's public key as a KeyObject. OpenSSL 3's SPKI decoder costs ~130 us per key on this
 * class of machine, the JWK import ~60 us, so the common EC shapes (canonical SPKI, uncompressed
 * point) go through JWK: same key, and OpenSSL still checks the point lies on the curve; for them the
 * key's description comes from the matched head (same as describeKey's). Anything else takes the SPKI
 * decoder and is described by acceptWorkloadKey.
 */
function importPublicKey(spki: Buffer): KeyObject | ImportedKey {
  for (const c of EC_SPKI_HEADS) {
    if (spki.length !== c.length || !spki.subarray(0, c.head.length).equals(c.head) || spki[c.head.length] !== 0x04) continue;
    const x = spki.subarray(c.head.length + 1, c.head.length + 1 + c.coordinateBytes);
    const y = spki.subarray(c.head.length + 1 + c.coordinateBytes);
    const publicKey = createPublicKey({ key: { kty: 'EC', crv: c.crv, x: x.toString('base64url'), y: y.toString('base64url') }, format: 'jwk' });
    // The head names the curve, so the description is known without asking OpenSSL (describeKey).
    return { publicKey, key: { kind: 'ec', curve: c.crv } };
  }
  return createPublicKey({ key: spki, format: 'der', type: 'spki' });
}

function verifySelfSignature(parts: CsrParts, publicKey: KeyObject): string {
  const alg = SIGNATURE_ALGORITHMS[parts.signatureAlgorithm];
  if (!alg || alg.hash === 'sha1') {
    const name = alg?.name ?? parts.signatureAlgorithm;
    throw new CsrError('signature', `CSR signature algorithm ${name} is not accepted: sign with SHA-256 or stronger`);
  }
  let ok = false;
  try {
    ok = verify(alg.hash, parts.tbs, publicKey, parts.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrError('signature', 'CSR signature does not verify with the CSR public key');
  return alg.name;
}

/** Extensions ::= SEQUENCE OF Extension; Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
function extensionValues(value: Block, oid: string): Block[] {
  const bad = () => new CsrError('malformed', 'CSR extension request cannot be parsed');
  if (!is(value, UNIVERSAL, TAG.sequence, true)) throw bad();
  const found: Block[] = [];
  for (const ext of value.children) {
    if (!is(ext, UNIVERSAL, TAG.sequence, true)) throw bad();
    const items = ext.children;
    const id = oidOf(items[0]);
    const hasCritical = is(items[1], UNIVERSAL, TAG.boolean, false);
    const extnValue = items[hasCritical ? 2 : 1];
    if (id === undefined || !is(extnValue, UNIVERSAL, TAG.octetString, false) || items.length !== (hasCritical ? 3 : 2)) throw bad();
    if (id === oid) found.push(extnValue);
  }
  return found;
}

function sanText(bytes: Buffer): string {
  // IA5String content as asn1js decodes it (one character per byte); checked for length before decoding.
  if (bytes.length > CSR_LIMITS.maxSanLength) {
    throw new CsrError('san', `CSR subject alternative name is longer than ${CSR_LIMITS.maxSanLength} characters`);
  }
  return bytes.toString('latin1');
}

/** GeneralNames ::= SEQUENCE OF GeneralName (RFC 5280 4.2.1.6), sorted into what we issue and what we do not. */
function addSans(sans: CsrSans, extnValue: Buffer): void {
  const bad = () => new CsrError('malformed', 'CSR SubjectAltName extension cannot be parsed');
  const altNames = readDer(extnValue);
  if (!is(altNames, UNIVERSAL, TAG.sequence, true)) throw bad();
  const bytes = new CsrBytes(extnValue);
  for (const name of altNames.children) {
    if (name.tagClass !== CONTEXT) throw bad();
    const tag = name.tagNumber;
    const constructed = name.constructed;
    switch (tag) {
      case 1: // rfc822Name
      case 2: // dNSName
      case 6: // uniformResourceIdentifier
      case 7: {
        // iPAddress
        if (constructed) throw bad();
        const text = bytes.contents(name);
        if (tag === 1) sans.emails.push(sanText(text));
        else if (tag === 2) sans.dns.push(sanText(text));
        else if (tag === 6) sans.uris.push(sanText(text));
        else sans.ips.push(formatIp(text));
        break;
      }
      case 0: // otherName
      case 3: // x400Address
      case 4: // directoryName
      case 5: // ediPartyName
        if (!constructed) throw bad();
        sans.other++;
        break;
      case 8: // registeredID
        if (constructed) throw bad();
        sans.other++;
        break;
      default:
        throw bad();
    }
  }
}

function readSans(parts: CsrParts): CsrSans {
  const sans: CsrSans = { uris: [], dns: [], ips: [], emails: [], other: 0 };
  let sanExtensions = 0;
  for (const attr of parts.attributes) {
    if (attr.type !== OID.extensionRequest) continue;
    for (const value of attr.values) {
      for (const extnValue of extensionValues(value, OID.subjectAltName)) {
        if (++sanExtensions > 1) throw new CsrError('malformed', 'CSR carries more than one SubjectAltName extension');
        addSans(sans, parts.bytes.contents(extnValue));
      }
    }
  }
  const count = sans.uris.length + sans.dns.length + sans.ips.length + sans.emails.length + sans.other;
  if (count > CSR_LIMITS.maxSans) {
    throw new CsrError('san', `CSR asks for ${count} subject alternative names; at most ${CSR_LIMITS.maxSans} are accepted`);
  }
  return sans;
}

/** parseCsrDer on the hot path: same result, same CsrError kinds; publicKeyDer is the CSR's SPKI bytes verbatim. */
export function readCsrDer(der: Buffer): ParsedCsr {
  const parts = decodeCsr(der);
  const publicKeyDer = parts.bytes.bytesOf(parts.spki);
  const { publicKey, key } = acceptWorkloadKey(publicKeyDer, importPublicKey);
  const signatureAlgorithm = verifySelfSignature(parts, publicKey);
  return { publicKeyDer, publicKey, key, sans: readSans(parts), signatureAlgorithm };
}

/** parseCsrPem on the hot path: the first PEM block, whatever its label, as istiod reads it. */
export function readCsrPem(pem: string): ParsedCsr {
  const block = decodePem(pem)[0];
  if (!block) throw new CsrError('malformed', 'certificate signing request is not properly encoded: no PEM block found');
  return readCsrDer(block.der);
}
