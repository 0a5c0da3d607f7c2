import { sign } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { algorithmIdentifier, toArrayBuffer, type Signer } from './certificate.js';
import { EMPTY_NAME_DER } from './name.js';
import { workloadLeaf } from './profiles.js';

/**
 * The workload-leaf encoder of the issuance hot path.
 *
 * Every leaf a signer issues has the same profile (see profiles.ts workloadLeaf): only the serial,
 * the validity, the public key and the SPIFFE ID change. Building each one as a tree of pkijs
 * objects, encoding it, and re-parsing it for the signature costs ~1 ms; here the constant parts
 * (version, algorithm identifier, issuer Name, subject, KU/EKU/BC/AKI extensions) are encoded once
 * per signer with pkijs/asn1js and kept as DER, and each request only encodes its own fields with
 * asn1js and frames them with the pre-encoded parts (asn1js writes each identifier and length).
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
 * A TLV whose contents are already-encoded DER elements: asn1js writes the identifier and the
 * length, the contents are the parts' bytes in order. (asn1js.RawData cannot be a child of a
 * constructed block in asn1js 3.1: the encoder hands children a writer that RawData ignores.)
 */
function tlv(tagClass: number, tagNumber: number, parts: readonly Uint8Array[]): Buffer {
  const block = new asn1js.Primitive({ idBlock: { tagClass, tagNumber }, valueHex: Buffer.concat(parts) });
  block.idBlock.isConstructed = true;
  return ber(block);
}
const sequence = (parts: readonly Uint8Array[]): Buffer => tlv(1, 16, parts);

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

/** The SubjectAltName extension of a leaf: critical, one URI GeneralName, as pkijs GeneralName type 6 writes it. */
function sanExtension(spiffeId: string): Buffer {
  const uri = new asn1js.IA5String({ value: spiffeId });
  uri.idBlock.tagClass = 3; // context-specific [6] uniformResourceIdentifier
  uri.idBlock.tagNumber = 6;
  const altNames = sequence([ber(uri)]);
  return sequence([SAN_HEADER, ber(new asn1js.OctetString({ valueHex: altNames }))]);
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
    const validity = sequence([this.#times.get(f.notBefore), this.#times.get(f.notAfter)]);
    const extensions = tlv(3, 3, [sequence([this.#fixedExtensions, sanExtension(f.spiffeId)])]);
    return sequence([
      this.#version,
      ber(new asn1js.Integer({ valueHex: f.serialNumber })),
      this.#algorithmAndIssuer,
      validity,
      this.#subject,
      f.publicKeyDer,
      extensions,
    ]);
  }

  /** The signed certificate DER: TBS, algorithm, signature (node:crypto with the signer's KeyObject). */
  issue(f: FastLeafFields): Buffer {
    const tbs = this.encodeTbs(f);
    const signature = sign(this.signer.algorithm.hash, tbs, this.signer.privateKey);
    return sequence([tbs, this.#algorithm, ber(new asn1js.BitString({ valueHex: signature }))]);
  }
}
