import * as asn1js from 'asn1js';

/**
 * DER elements of untrusted bytes for the CSR hot path (fast-csr.ts), as offsets into the input
 * instead of asn1js objects: the asn1js tree (a dozen objects and views per element) was most of
 * the reader's allocation and ~1/8 of a certificate's CPU.
 *
 * readDer walks a narrow subset of BER on its own: one-byte identifiers, definite lengths (the long
 * form too, minimal or not, as asn1js reads it), constructed elements holding exactly their children,
 * and of the universal types only those a PKCS#10 request is made of (BOOLEAN, INTEGER, BIT STRING,
 * OCTET STRING, NULL, OBJECT IDENTIFIER, UTF8String, PrintableString, IA5String, SEQUENCE, SET) with
 * content asn1js also decodes without error. Whatever it does not read itself (another universal type,
 * a multi-byte tag, an OID arc past 2^31, or anything malformed) it hands to asn1js.fromBER and
 * converts that tree (fromAsn1js), so a CSR gets exactly the answer the asn1js reader gave: the
 * subset only decides which of the two does the work. test/fast-csr-fuzz.test.ts and
 * test/fast-path.test.ts hold the result equal to pkijs'.
 */
export interface DerElement {
  /** 1 universal, 2 application, 3 context-specific, 4 private (asn1js' numbering); 0 = unreadable tag. */
  tagClass: number;
  tagNumber: number;
  constructed: boolean;
  /** Offsets into the decoded bytes: the element is [start, end), its content [body, end). */
  start: number;
  body: number;
  end: number;
  /** The children of a constructed element, in order. */
  children: DerElement[];
  /** OBJECT IDENTIFIER only: dotted text, as asn1js writes it. */
  oid?: string;
}

const UNIVERSAL = 1;
/** Deeper nesting is refused (a PKCS#10 request is 7 levels deep; asn1js allows 100). */
export const MAX_DER_DEPTH = 32;
/** More elements than this go to asn1js (which stops at 10,000); the size bound keeps CSRs far below. */
const MAX_WALKED_ELEMENTS = 4096;
const NO_CHILDREN: DerElement[] = [];

/** Thrown inside the walker: not in the subset it reads; asn1js decides. */
class OutsideSubset extends Error {}
const outside = new OutsideSubset();

/** The dotted OID of canonical content (no 0x80 padding, arcs < 2^31), else undefined. */
function oidText(bytes: Uint8Array, start: number, end: number): string | undefined {
  if (end <= start || (bytes[end - 1]! & 0x80) !== 0) return undefined;
  let text = '';
  let value = 0;
  let first = true;
  let fresh = true;
  for (let i = start; i < end; i++) {
    const b = bytes[i]!;
    if (fresh && b === 0x80) return undefined;
    if (value > 0xffffff) return undefined;
    value = value * 128 + (b & 0x7f);
    fresh = (b & 0x80) === 0;
    if (!fresh) continue;
    if (first) {
      text = value <= 39 ? `0.${value}` : value <= 79 ? `1.${value - 40}` : `2.${value - 80}`;
      first = false;
    } else {
      text += `.${value}`;
    }
    value = 0;
  }
  return text;
}

/**
 * The OIDs a workload's CSR is made of (key and signature algorithms, curves, extensionRequest,
 * the extensions a CSR may ask for, common Name attributes), as DER contents with their dotted text.
 * Building the text arc by arc made a string per arc, the largest part of the walker's garbage after
 * its elements; these are found by comparing bytes instead. The texts come from oidText itself, so a
 * known OID reads exactly as an unknown one would.
 */
const KNOWN_OIDS: readonly { der: Buffer; text: string }[] = [
  '2a8648ce3d0201', // 1.2.840.10045.2.1 id-ecPublicKey
  '2a8648ce3d030107', // 1.2.840.10045.3.1.7 prime256v1
  '2b81040022', // 1.3.132.0.34 secp384r1
  '2b81040023', // 1.3.132.0.35 secp521r1
  '2a8648ce3d040302', // 1.2.840.10045.4.3.2 ecdsa-with-SHA256
  '2a8648ce3d040303', // 1.2.840.10045.4.3.3 ecdsa-with-SHA384
  '2a8648ce3d040304', // 1.2.840.10045.4.3.4 ecdsa-with-SHA512
  '2a864886f70d010101', // 1.2.840.113549.1.1.1 rsaEncryption
  '2a864886f70d01010a', // 1.2.840.113549.1.1.10 RSASSA-PSS
  '2a864886f70d01010b', // 1.2.840.113549.1.1.11 sha256WithRSAEncryption
  '2a864886f70d01010c', // 1.2.840.113549.1.1.12 sha384WithRSAEncryption
  '2a864886f70d01010d', // 1.2.840.113549.1.1.13 sha512WithRSAEncryption
  '2a864886f70d01090e', // 1.2.840.113549.1.9.14 extensionRequest
  '2b6570', // 1.3.101.112 Ed25519
  '551d11', // 2.5.29.17 subjectAltName
  '551d0f', // 2.5.29.15 keyUsage
  '551d25', // 2.5.29.37 extKeyUsage
  '551d13', // 2.5.29.19 basicConstraints
  '550403', // 2.5.4.3 commonName
  '55040a', // 2.5.4.10 organizationName
].map((hex) => {
  const der = Buffer.from(hex, 'hex');
  return { der, text: oidText(der, 0, der.length)! };
});

/** oidText, without building the text when the contents are one of KNOWN_OIDS. */
function oidTextOf(bytes: Uint8Array, start: number, end: number): string | undefined {
  const length = end - start;
  for (const known of KNOWN_OIDS) {
    const der = known.der;
    if (der.length !== length) continue;
    let i = 0;
    while (i < length && der[i] === bytes[start + i]) i++;
    if (i === length) return known.text;
  }
  return oidText(bytes, start, end);
}

class Walker {
  count = 0;
  /**
   * The children of the elements being walked, as a stack: each constructed element takes its own
   * off the top with one exact-size slice. A fresh `[]` per element grew a 16-slot backing store on
   * its first push (most elements of a CSR hold one to three children), which was most of the walker's
   * garbage.
   */
  readonly #pending: DerElement[] = [];
  constructor(readonly bytes: Uint8Array) {}

  /** The element at `at`, which must end by `limit`. */
  element(at: number, limit: number, depth: number): DerElement {
    const bytes = this.bytes;
    if (depth > MAX_DER_DEPTH || ++this.count > MAX_WALKED_ELEMENTS || limit - at < 2) throw outside;
    const id = bytes[at]!;
    if ((id & 0x1f) === 0x1f) throw outside;
    const tagClass = (id >> 6) + 1;
    const tagNumber = id & 0x1f;
    const constructed = (id & 0x20) !== 0;
    let length = bytes[at + 1]!;
    let body = at + 2;
    if (length & 0x80) {
      const count = length & 0x7f;
      // 0x80 (indefinite) is not DER; 0xff is reserved; over 4 length bytes cannot fit a CSR.
      if (count === 0 || count > 4 || body + count > limit) throw outside;
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + bytes[body + i]!;
      body += count;
    }
    const end = body + length;
    if (end > limit) throw outside;
    const element: DerElement = { tagClass, tagNumber, constructed, start: at, body, end, children: NO_CHILDREN };
    if (tagClass === UNIVERSAL) this.checkUniversal(element);
    if (constructed) {
      const pending = this.#pending;
      const mark = pending.length;
      for (let p = body; p < end; ) {
        const child = this.element(p, end, depth + 1);
        pending.push(child);
        p = child.end;
      }
      element.children = pending.slice(mark);
      // (A throw leaves the stack as it is: the walk is over and its Walker dropped.)
      pending.length = mark;
    }
    return element;
  }

  /** Universal types: only those, in the form and with the content, that asn1js decodes without a word. */
  checkUniversal(e: DerElement): void {
    const n = e.tagNumber;
    const length = e.end - e.body;
    if (n === 16 || n === 17) {
      if (!e.constructed) throw outside;
      return;
    }
    if (e.constructed) throw outside;
    switch (n) {
      case 1: // BOOLEAN
        if (length !== 1) throw outside;
        return;
      case 2: // INTEGER
        if (length < 1) throw outside;
        return;
      case 3: // BIT STRING: the unused-bits octet first
        if (length < 1 || this.bytes[e.body]! > 7) throw outside;
        return;
      case 5: // NULL
        if (length !== 0) throw outside;
        return;
      case 6: {
        const oid = oidTextOf(this.bytes, e.body, e.end);
        if (oid === undefined) throw outside;
        e.oid = oid;
        return;
      }
      case 4: // OCTET STRING (its content is not decoded)
      case 12: // UTF8String
      case 19: // PrintableString
      case 22: // IA5String
        return;
      default:
        throw outside;
    }
  }
}

/** asn1js' tree as DerElements (offsets into the same bytes), or undefined where asn1js could not tell the tag. */
function fromAsn1js(block: asn1js.AsnType, base: number): DerElement {
  const view = block.valueBeforeDecodeView;
  const start = view.byteOffset - base;
  const end = start + view.byteLength;
  const id = block.idBlock;
  const element: DerElement = {
    tagClass: id.isHexOnly ? 0 : id.tagClass,
    tagNumber: id.tagNumber,
    constructed: id.isConstructed,
    start,
    body: start + id.blockLength + block.lenBlock.blockLength,
    end,
    children: NO_CHILDREN,
  };
  if (block instanceof asn1js.ObjectIdentifier) element.oid = block.valueBlock.toString();
  const value = (block as asn1js.Constructed).valueBlock.value;
  if (id.isConstructed && Array.isArray(value)) element.children = (value as asn1js.AsnType[]).map((c) => fromAsn1js(c, base));
  return element;
}

/**
 * asn1js decodes children past the end their parent declares (a shortened outer length still
 * parses) and accepts indefinite lengths; DER allows neither. Every constructed element must
 * hold exactly its children.
 */
function wellFramed(block: asn1js.AsnType, depth = 0): boolean {
  if (depth > MAX_DER_DEPTH) return false;
  if (!block.idBlock.isConstructed) return true;
  if (block.lenBlock.isIndefiniteForm) return false;
  const value = (block as asn1js.Constructed).valueBlock.value;
  let total = 0;
  for (const child of Array.isArray(value) ? (value as asn1js.AsnType[]) : []) {
    if (!wellFramed(child, depth + 1)) return false;
    total += child.valueBeforeDecodeView.byteLength;
  }
  return total === block.lenBlock.length;
}

/** The narrow reader alone: the element filling `bytes` exactly, or undefined when they are outside its subset. */
export function walkDer(bytes: Uint8Array): DerElement | undefined {
  try {
    const root = new Walker(bytes).element(0, bytes.byteLength, 0);
    return root.end === bytes.byteLength ? root : undefined;
  } catch (err) {
    if (err instanceof OutsideSubset) return undefined;
    throw err;
  }
}

/** asn1js alone: the element filling `bytes` exactly, or undefined when asn1js cannot decode them or the framing is not DER's. */
export function decodeDerWithAsn1js(bytes: Uint8Array): DerElement | undefined {
  // A plain Uint8Array: asn1js takes a slower path for a Buffer.
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let asn1: ReturnType<typeof asn1js.fromBER>;
  try {
    asn1 = asn1js.fromBER(view, { parseEmbedded: false, copyInput: false });
  } catch {
    // Its rare exceptions on hostile input (a RangeError from a DataView) mean the same: not DER.
    return undefined;
  }
  if (asn1.offset === -1 || asn1.offset !== bytes.byteLength || !wellFramed(asn1.result)) return undefined;
  return fromAsn1js(asn1.result, view.byteOffset);
}

/**
 * One DER element filling `bytes` exactly, or undefined when the bytes are not that (asn1js cannot
 * decode them, bytes are left over, or the framing is not DER's): walkDer, and where it declines,
 * asn1js. parseEmbedded is off: the contents of BIT and OCTET STRINGs are not decoded on the chance
 * they hold ASN.1; callers decode the one they need.
 */
export function readDer(bytes: Uint8Array): DerElement | undefined {
  return walkDer(bytes) ?? decodeDerWithAsn1js(bytes);
}
