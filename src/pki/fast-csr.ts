import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { acceptWorkloadKey, checkCsrCounts, CSR_LIMITS, formatIp, type CsrSans, type ParsedCsr } from './csr.js';
import { CsrError } from './errors.js';
import { EC_SPKI_HEADS, SIGNATURE_ALGORITHMS } from './keys.js';
import { OID } from './oids.js';
import { decodePem } from './pem.js';

/**
 * The CSR reader of the issuance hot path: the same checks and results as csr.ts parseCsrPem,
 * walking the asn1js tree directly instead of building pkijs objects (schema comparison and
 * object construction were most of parseCsrPem's ~0.7 ms).
 *
 * The CSR is untrusted input. Every element is checked for the universal type the PKCS#10
 * grammar puts there before it is used, and anything else is a CsrError, never an exception
 * from a missing property (test/fast-csr-fuzz.test.ts feeds it mutated and random bytes).
 * The checks run in parseCsrDer's order, so a broken CSR gets the same error kind from both:
 * structure (malformed) -> key -> self-signature -> extension request and SANs (malformed/san).
 */

type Block = asn1js.AsnType;

const UNIVERSAL = 1;
const CONTEXT = 3;
const TAG = { boolean: 1, integer: 2, bitString: 3, octetString: 4, oid: 6, sequence: 16, set: 17 } as const;

const notPkcs10 = () => new CsrError('malformed', 'failed to parse X.509 certificate signing request: not a PKCS#10 structure');

function is(block: Block | undefined, tagClass: number, tagNumber: number, constructed: boolean): block is Block {
  if (!(block instanceof asn1js.BaseBlock)) return false;
  const id = block.idBlock;
  return id.tagClass === tagClass && id.tagNumber === tagNumber && id.isConstructed === constructed && !id.isHexOnly;
}

/** The children of a constructed block (every block `is` accepted as constructed has them). */
function children(block: Block): Block[] {
  const value = (block as asn1js.Constructed).valueBlock.value;
  return Array.isArray(value) ? (value as Block[]) : [];
}

/** The content octets of a primitive block, as asn1js decoded them. */
function contents(block: Block): Uint8Array {
  return (block as asn1js.Primitive).valueBlock.valueHexView;
}

function bytesOf(block: Block): Buffer {
  const view = block.valueBeforeDecodeView;
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function oidOf(block: Block | undefined): string | undefined {
  if (!is(block, UNIVERSAL, TAG.oid, false)) return undefined;
  return (block as asn1js.ObjectIdentifier).valueBlock.toString();
}

/** AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL } */
function algorithmOid(block: Block | undefined): string | undefined {
  if (!is(block, UNIVERSAL, TAG.sequence, true)) return undefined;
  const [oid, params, extra] = children(block);
  if (extra !== undefined || (params !== undefined && !(params instanceof asn1js.BaseBlock))) return undefined;
  return oidOf(oid);
}

/** Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value ANY } */
function isName(block: Block | undefined): boolean {
  if (!is(block, UNIVERSAL, TAG.sequence, true)) return false;
  return children(block).every(
    (rdn) =>
      is(rdn, UNIVERSAL, TAG.set, true) &&
      children(rdn).every((atv) => {
        if (!is(atv, UNIVERSAL, TAG.sequence, true)) return false;
        const [type, value, extra] = children(atv);
        return oidOf(type) !== undefined && value instanceof asn1js.BaseBlock && extra === undefined;
      }),
  );
}

/** Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET OF ANY } */
function attribute(block: Block): { type: string; values: Block[] } {
  if (!is(block, UNIVERSAL, TAG.sequence, true)) throw notPkcs10();
  const [type, values, extra] = children(block);
  const oid = oidOf(type);
  if (oid === undefined || !is(values, UNIVERSAL, TAG.set, true) || extra !== undefined) throw notPkcs10();
  return { type: oid, values: children(values) };
}

interface CsrParts {
  tbs: Buffer;
  spki: Block;
  attributes: { type: string; values: Block[] }[];
  signatureAlgorithm: string;
  signature: Uint8Array;
}

/** CertificationRequest ::= SEQUENCE { info SEQUENCE { version, subject, spki, [0] attributes }, algorithm, signature } */
/**
 * asn1js decodes children past the end their parent declares (a shortened outer length still
 * parses) and accepts indefinite lengths; DER allows neither. Every constructed element must
 * hold exactly its children.
 */
function wellFramed(block: Block, depth = 0): boolean {
  if (depth > 32) return false;
  if (!block.idBlock.isConstructed) return true;
  if (block.lenBlock.isIndefiniteForm) return false;
  let total = 0;
  for (const child of children(block)) {
    if (!wellFramed(child, depth + 1)) return false;
    total += child.valueBeforeDecodeView.byteLength;
  }
  return total === block.lenBlock.length;
}

/**
 * asn1js.fromBER, with its rare exceptions on hostile input (a RangeError from a DataView) turned into
 * a CsrError. parseEmbedded off: asn1js would otherwise try to decode the contents of every BIT STRING
 * and OCTET STRING as ASN.1 (the public key, the signature, each extension value) on the chance they
 * hold some; we decode the one we need (the SAN extension) ourselves, and the CSR costs ~15% less.
 */
function decodeBer(bytes: Uint8Array, error: () => CsrError): Block {
  let asn1: ReturnType<typeof asn1js.fromBER>;
  try {
    asn1 = asn1js.fromBER(bytes, { parseEmbedded: false });
  } catch {
    throw error();
  }
  if (asn1.offset === -1 || asn1.offset !== bytes.byteLength || !wellFramed(asn1.result)) throw error();
  return asn1.result;
}

function decodeCsr(der: Buffer): CsrParts {
  // A plain Uint8Array view: asn1js 3.1 takes a slower path for Buffer (~2x on a CSR).
  const root = decodeBer(
    new Uint8Array(der.buffer, der.byteOffset, der.byteLength),
    () => new CsrError('malformed', 'failed to parse X.509 certificate signing request: invalid DER'),
  );
  if (!is(root, UNIVERSAL, TAG.sequence, true)) throw notPkcs10();
  const [info, algorithm, signature, extra] = children(root);
  if (extra !== undefined || !is(info, UNIVERSAL, TAG.sequence, true) || !is(signature, UNIVERSAL, TAG.bitString, false)) throw notPkcs10();
  const signatureAlgorithm = algorithmOid(algorithm);
  if (signatureAlgorithm === undefined) throw notPkcs10();

  const [version, subject, spki, attrs, extraInfo] = children(info);
  if (!is(version, UNIVERSAL, TAG.integer, false) || !isName(subject) || extraInfo !== undefined) throw notPkcs10();
  // SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
  if (!is(spki, UNIVERSAL, TAG.sequence, true)) throw notPkcs10();
  const [keyAlgorithm, keyBits, extraKey] = children(spki);
  if (algorithmOid(keyAlgorithm) === undefined || !is(keyBits, UNIVERSAL, TAG.bitString, false) || extraKey !== undefined) throw notPkcs10();
  // attributes [0] IMPLICIT SET OF Attribute; optional here as in pkijs (PKCS#10 writers always put it).
  let attributes: CsrParts['attributes'] = [];
  if (attrs !== undefined) {
    if (!is(attrs, CONTEXT, 0, true)) throw notPkcs10();
    attributes = children(attrs).map(attribute);
  }
  checkCsrCounts(attributes.length, extensionCount(attributes));
  return { tbs: bytesOf(info), spki, attributes, signatureAlgorithm, signature: contents(signature) };
}

/** Extensions in the extensionRequest attributes (each value an Extensions SEQUENCE), before they are read. */
function extensionCount(attributes: CsrParts['attributes']): number {
  let count = 0;
  for (const attr of attributes) {
    if (attr.type !== OID.extensionRequest) continue;
    for (const value of attr.values) if (is(value, UNIVERSAL, TAG.sequence, true)) count += children(value).length;
  }
  return count;
}

/**
 * The CSR's public key as a KeyObject. OpenSSL 3's SPKI decoder costs ~130 us per key on this
 * class of machine, the JWK import ~60 us, so the common EC shapes (canonical SPKI, uncompressed
 * point) go through JWK: same key, and OpenSSL still checks the point lies on the curve. Anything
 * else takes the SPKI decoder.
 */
function importPublicKey(spki: Buffer): KeyObject {
  for (const c of EC_SPKI_HEADS) {
    if (spki.length !== c.length || !spki.subarray(0, c.head.length).equals(c.head) || spki[c.head.length] !== 0x04) continue;
    const x = spki.subarray(c.head.length + 1, c.head.length + 1 + c.coordinateBytes);
    const y = spki.subarray(c.head.length + 1 + c.coordinateBytes);
    return createPublicKey({ key: { kty: 'EC', crv: c.crv, x: x.toString('base64url'), y: y.toString('base64url') }, format: 'jwk' });
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
  for (const ext of children(value)) {
    if (!is(ext, UNIVERSAL, TAG.sequence, true)) throw bad();
    const items = children(ext);
    const id = oidOf(items[0]);
    const hasCritical = is(items[1], UNIVERSAL, TAG.boolean, false);
    const extnValue = items[hasCritical ? 2 : 1];
    if (id === undefined || !is(extnValue, UNIVERSAL, TAG.octetString, false) || items.length !== (hasCritical ? 3 : 2)) throw bad();
    if (id === oid) found.push(extnValue);
  }
  return found;
}

function sanText(bytes: Uint8Array): string {
  // IA5String content as asn1js decodes it (one character per byte); checked for length before decoding.
  if (bytes.length > CSR_LIMITS.maxSanLength) {
    throw new CsrError('san', `CSR subject alternative name is longer than ${CSR_LIMITS.maxSanLength} characters`);
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** GeneralNames ::= SEQUENCE OF GeneralName (RFC 5280 4.2.1.6), sorted into what we issue and what we do not. */
function addSans(sans: CsrSans, extnValue: Block): void {
  const bad = () => new CsrError('malformed', 'CSR SubjectAltName extension cannot be parsed');
  const altNames = decodeBer(contents(extnValue), bad);
  if (!is(altNames, UNIVERSAL, TAG.sequence, true)) throw bad();
  for (const name of children(altNames)) {
    if (!(name instanceof asn1js.BaseBlock) || name.idBlock.tagClass !== CONTEXT || name.idBlock.isHexOnly) throw bad();
    const tag = name.idBlock.tagNumber;
    const constructed = name.idBlock.isConstructed;
    switch (tag) {
      case 1: // rfc822Name
      case 2: // dNSName
      case 6: // uniformResourceIdentifier
      case 7: {
        // iPAddress
        if (constructed) throw bad();
        const bytes = contents(name);
        if (tag === 1) sans.emails.push(sanText(bytes));
        else if (tag === 2) sans.dns.push(sanText(bytes));
        else if (tag === 6) sans.uris.push(sanText(bytes));
        else sans.ips.push(formatIp(bytes));
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
        addSans(sans, extnValue);
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
  const publicKeyDer = bytesOf(parts.spki);
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
