/**
 * Hand-framed PKCS#10 CSRs an attacker would send (issue #19): any SubjectPublicKeyInfo bytes and any
 * extension list, still carrying a valid self-signature by the given key, so a server that skips a
 * check issues them. DER is framed here by hand because the point is to write what encoders refuse.
 */
import { sign, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { encodePem, OID, signatureAlgorithmForKey, spkiDer } from '../../src/pki/index.js';

/** A DER element: identifier octet, definite length (shortest form unless `longLength`), contents. */
export function tlv(identifier: number, contents: Uint8Array | readonly Uint8Array[], longLength = false): Buffer {
  const body = Buffer.concat(Array.isArray(contents) ? (contents as Uint8Array[]) : [contents as Uint8Array]);
  const n = body.length;
  let head: Buffer;
  if (n < 0x80 && !longLength) head = Buffer.from([identifier, n]);
  else if (n < 0x100) head = Buffer.from([identifier, 0x81, n]);
  else if (n < 0x10000) head = Buffer.from([identifier, 0x82, n >> 8, n & 0xff]);
  else head = Buffer.from([identifier, 0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([head, body]);
}

export const seq = (...parts: Uint8Array[]) => tlv(0x30, parts);
export const oid = (value: string) => Buffer.from(new asn1js.ObjectIdentifier({ value }).toBER());
const NULL = Buffer.from([0x05, 0x00]);

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN, extnValue OCTET STRING } */
export function extension(id: string, value: Uint8Array, critical = false): Buffer {
  return seq(oid(id), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), tlv(0x04, value));
}

/** A critical SAN extension with one URI. */
export function sanExtension(uri: string): Buffer {
  return extension(OID.subjectAltName, seq(tlv(0x86, Buffer.from(uri, 'latin1'))), true);
}

export interface HostileCsr {
  privateKey: KeyObject;
  /** The SubjectPublicKeyInfo bytes to put in the CSR (default: the key's own canonical SPKI). */
  spki?: Buffer;
  /** Extensions of the extensionRequest attribute (default: one SAN of `uri`). */
  extensions?: Buffer[];
  uri?: string;
  /** Further attributes (each a full Attribute SEQUENCE). */
  extraAttributes?: Buffer[];
}

/** The CSR as PEM, self-signed by privateKey over exactly these bytes. */
export function hostileCsrPem(o: HostileCsr): string {
  const alg = signatureAlgorithmForKey(o.privateKey);
  if (!alg) throw new Error('unsupported key');
  const extensions = o.extensions ?? [sanExtension(o.uri ?? 'spiffe://cluster.local/ns/demo/sa/web')];
  const extReq = seq(oid(OID.extensionRequest), tlv(0x31, seq(...extensions)));
  const info = seq(
    Buffer.from([0x02, 0x01, 0x00]),
    seq(),
    o.spki ?? spkiDer(o.privateKey),
    tlv(0xa0, [extReq, ...(o.extraAttributes ?? [])]),
  );
  const algId = seq(oid(alg.oid), ...(alg.nullParams ? [NULL] : []));
  const signature = sign(alg.hash, info, o.privateKey);
  return encodePem('CERTIFICATE REQUEST', seq(info, algId, tlv(0x03, [Buffer.from([0]), signature])));
}

/** rsaEncryption SPKI of this key with `params` in place of the NULL parameters. */
export function rsaSpkiWithParams(publicKey: KeyObject, params: Buffer): Buffer {
  const parsed = asn1js.fromBER(spkiDer(publicKey)).result as asn1js.Sequence;
  const bitString = Buffer.from((parsed.valueBlock.value[1] as asn1js.BitString).valueBeforeDecodeView);
  return seq(seq(oid(OID.rsaEncryption), params), bitString);
}

/** An RSA SPKI with the given modulus (from the key) and any public exponent. */
export function rsaSpkiWithExponent(publicKey: KeyObject, exponent: bigint): Buffer {
  const jwk = publicKey.export({ format: 'jwk' });
  const n = Buffer.from(jwk.n!, 'base64url');
  const intBytes = (b: Buffer) => (b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
  let hex = exponent.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  const rsaPublicKey = seq(tlv(0x02, intBytes(n)), tlv(0x02, intBytes(Buffer.from(hex, 'hex'))));
  return seq(seq(oid(OID.rsaEncryption), NULL), tlv(0x03, [Buffer.from([0]), rsaPublicKey]));
}
