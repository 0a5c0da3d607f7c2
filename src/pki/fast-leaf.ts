import { sign } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { algorithmIdentifier, toArrayBuffer, type ExternalKey, type Signer } from './certificate.js';
import { EMPTY_NAME_DER } from './name.js';
import { workloadLeaf } from './profiles.js';

/**
 * The workload-leaf encoder of the issuance hot path.
 *
 * Every leaf a signer issues has the same profile (see profiles.ts workloadLeaf): only the serial,
 * the validity, the public key and the SPIFFE ID change. Building each one as a tree of pkijs
 * objects, encoding it, and re-parsing it for the signature costs ~1 ms; here the constant parts
 * (version, algorithm identifier, issuer Name, subject, KU/EKU/BC/AKI extensions) are encoded once
 * per signer with pkijs/asn1js and kept as DER, and each request only frames its own fields (serial,
 * validity, the CSR's SubjectPublicKeyInfo verbatim, the SAN) with the pre-encoded parts.
 * The TBS is byte for byte what signCertificate(workloadLeaf(...)) produces for the same serial
 * and validity (test/fast-path.test.ts checks that).
 */

export interface FastLeafFields {
  spiffeId: string;
  serialNumber: Buffer;
  /** SubjectPublicKeyInfo DER, copied verbatim from the CSR. */
  publicKeyDer: Buffer;
  notBefore: Date;
  notAfter: Date;
}

const ber = (block: { toBER(sizeOnly?: boolean): ArrayBuffer }): Buffer => Buffer.from(block.toBER(false));

/**
 * Octets of a DER element with `length` octets of contents: one identifier octet (every tag here is
 * below 31), the definite length in its shortest form (X.690 8.1.3, 10.1), the contents.
 */
function framed(length: number): number {
  return (length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : 5) + length;
}

/**
 * Writes the identifier and length octets of an element with `length` octets of contents at `at`;
 * returns where the contents go. Each leaf is written with these into one buffer whose size is added
 * up first (framed), rather than element by element with a Buffer and an array per element (the
 * leaf's largest garbage); writing the few head bytes directly rather than through an asn1js block
 * per element took the per-leaf encoding from ~40 us to a few (profiled under `npm run bench`).
 * test/fast-path.test.ts holds the output to the pkijs path byte for byte, including SANs long
 * enough for two-byte lengths.
 */
function writeHead(out: Buffer, at: number, identifier: number, length: number): number {
  const head = framed(length) - length;
  out[at] = identifier;
  if (head === 2) out[at + 1] = length;
  else {
    out[at + 1] = 0x80 | (head - 2);
    out.writeUIntBE(length, at + 2, head - 2);
  }
  return at + head;
}

/** Copies already-encoded `part` to `at`; returns the offset after it. */
function put(out: Buffer, at: number, part: Uint8Array): number {
  out.set(part, at);
  return at + part.length;
}
/** Identifier octets of the elements the encoder frames per request. */
const ID = { integer: 0x02, bitString: 0x03, octetString: 0x04, sequence: 0x30, uri: 0x86, extensions: 0xa3 } as const;

/** RFC 5280 4.1.2.5, as certificate.ts x509Time writes it: whole seconds, UTCTime through 2049. */
function encodeTime(date: Date): Buffer {
  const valueDate = new Date(Math.floor(date.getTime() / 1000) * 1000);
  return ber(valueDate.getUTCFullYear() < 2050 ? new asn1js.UTCTime({ valueDate }) : new asn1js.GeneralizedTime({ valueDate }));
}

/**
 * Validity encodings of the last few distinct instants: under load every request of the same
 * second shares its notBefore/notAfter, so the Date -> DER step runs about once per second.
 */
class TimeCache {
  readonly #entries = new Map<number, Buffer>();
  get(date: Date): Buffer {
    const second = Math.floor(date.getTime() / 1000);
    let der = this.#entries.get(second);
    if (!der) {
      if (this.#entries.size >= 16) this.#entries.clear();
      der = encodeTime(date);
      this.#entries.set(second, der);
    }
    return der;
  }
}

/** extnID 2.5.29.17 and critical TRUE: the constant head of every SAN extension we write. */
const SAN_HEADER: Buffer = Buffer.concat([ber(new asn1js.ObjectIdentifier({ value: '2.5.29.17' })), ber(new asn1js.Boolean({ value: true }))]);

export class WorkloadLeafEncoder {
  /** version [0] INTEGER 2, kept apart from the serial that follows it. */
  readonly #version: Buffer;
  /** signature AlgorithmIdentifier followed by the issuer Name (the signer's subject, byte for byte). */
  readonly #algorithmAndIssuer: Buffer;
  readonly #algorithm: Buffer;
  readonly #subject: Buffer = EMPTY_NAME_DER;
  /** The Extension SEQUENCEs before the SAN (KU, EKU, BC, AKI), concatenated. */
  readonly #fixedExtensions: Buffer;
  readonly #times = new TimeCache();

  /** Pre-encodes the constant parts from the same profile the pkijs path uses. */
  constructor(
    readonly signer: Signer,
    issuerKeyId: Buffer | undefined,
  ) {
    this.#version = ber(new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: [new asn1js.Integer({ value: 2 })] }));
    this.#algorithm = ber(algorithmIdentifier(signer.algorithm).toSchema());
    this.#algorithmAndIssuer = Buffer.concat([this.#algorithm, signer.subjectDer]);
    // The profile's own extension list, with a placeholder SAN that is dropped: the fixed
    // extensions then follow profiles.ts by construction rather than by a second copy of it.
    const template = workloadLeaf({
      spiffeId: 'spiffe://placeholder',
      serialNumber: Buffer.from([1]),
      publicKeyDer: Buffer.alloc(0),
      notBefore: new Date(0),
      notAfter: new Date(0),
      issuerKeyId,
    });
    const last = template.extensions[template.extensions.length - 1];
    if (last?.oid !== '2.5.29.17') throw new Error('workloadLeaf no longer ends with the SubjectAltName extension; update fast-leaf.ts');
    this.#fixedExtensions = Buffer.concat(
      template.extensions
        .slice(0, -1)
        .map((e) => ber(new pkijs.Extension({ extnID: e.oid, critical: e.critical, extnValue: toArrayBuffer(e.value) }).toSchema())),
    );
  }

  /** The TBSCertificate DER for these fields: exposed so tests can compare it with the pkijs path byte for byte. */
  encodeTbs(f: FastLeafFields): Buffer {
    const notBefore = this.#times.get(f.notBefore);
    const notAfter = this.#times.get(f.notAfter);
    // Contents lengths, innermost first. The SubjectAltName extension: critical, one URI GeneralName
    // ([6] IA5String), as pkijs GeneralName type 6 writes it; the identity is an authenticated SPIFFE
    // ID (ASCII), written one byte per character (latin1) as asn1js writes an IA5String.
    const uri = f.spiffeId.length;
    const altNames = framed(uri);
    const extnValue = framed(altNames);
    const san = SAN_HEADER.length + framed(extnValue);
    const extensionList = this.#fixedExtensions.length + framed(san);
    const extensions = framed(extensionList);
    const validity = notBefore.length + notAfter.length;
    const tbs =
      this.#version.length +
      framed(f.serialNumber.length) +
      this.#algorithmAndIssuer.length +
      framed(validity) +
      this.#subject.length +
      f.publicKeyDer.length +
      framed(extensions);
    const out = Buffer.allocUnsafe(framed(tbs));
    let at = writeHead(out, 0, ID.sequence, tbs);
    at = put(out, at, this.#version);
    // randomSerial() is already DER-minimal and positive: it is the INTEGER's contents as they are.
    at = put(out, writeHead(out, at, ID.integer, f.serialNumber.length), f.serialNumber);
    at = put(out, at, this.#algorithmAndIssuer);
    at = writeHead(out, at, ID.sequence, validity);
    at = put(out, put(out, at, notBefore), notAfter);
    at = put(out, at, this.#subject);
    at = put(out, at, f.publicKeyDer);
    at = writeHead(out, at, ID.extensions, extensions);
    at = put(out, writeHead(out, at, ID.sequence, extensionList), this.#fixedExtensions);
    at = put(out, writeHead(out, at, ID.sequence, san), SAN_HEADER);
    at = writeHead(out, at, ID.octetString, extnValue);
    at = writeHead(out, at, ID.sequence, altNames);
    at = writeHead(out, at, ID.uri, uri);
    out.write(f.spiffeId, at, 'latin1');
    return out;
  }

  /** The signed certificate DER: TBS, algorithm, signature (node:crypto with the signer's KeyObject). */
  issue(f: FastLeafFields): Buffer {
    const tbs = this.encodeTbs(f);
    const key = this.signer.privateKey;
    return this.#assemble(tbs, key ? sign(this.signer.algorithm.hash, tbs, key) : this.signer.external!.signSync(tbs));
  }

  /** As issue(), signed by the signer's external key off the event loop (bounded by its timeout). */
  async issueExternal(f: FastLeafFields, external: ExternalKey): Promise<Buffer> {
    const tbs = this.encodeTbs(f);
    return this.#assemble(tbs, await external.sign(tbs));
  }

  #assemble(tbs: Buffer, signature: Buffer): Buffer {
    const bits = 1 + signature.length;
    const certificate = tbs.length + this.#algorithm.length + framed(bits);
    const out = Buffer.allocUnsafe(framed(certificate));
    let at = put(out, put(out, writeHead(out, 0, ID.sequence, certificate), tbs), this.#algorithm);
    at = writeHead(out, at, ID.bitString, bits);
    // BIT STRING contents start with the count of unused bits: none for a signature.
    out[at] = 0;
    out.set(signature, at + 1);
    return out;
  }
}
