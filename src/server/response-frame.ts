import type { IstioCertificateResponse } from './proto.js';

/**
 * Issue #14: the CreateCertificate answer as one gRPC message (5-byte prefix: uncompressed flag and
 * big-endian length, then the protobuf), written straight into one Buffer. The generic path
 * (proto-loader's responseSerialize: protobufjs fromObject, a Writer with an op per field, finish()
 * into a Buffer, then a second Buffer to add the prefix) allocated ~1.5 KB per certificate for what
 * is, on the wire, `repeated string cert_chain = 1`: per string the tag 0x0a, the UTF-8 length as a
 * varint, the bytes (protobuf encoding, as protobufjs writes it).
 *
 * Only for what it can write byte for byte as protobufjs does: a cert_chain array of ASCII strings
 * (PEM is ASCII; for ASCII, UTF-8 is one byte per character). Anything else (another shape, a
 * non-string, a non-ASCII character) returns undefined and the caller takes the generic path, so its
 * errors stay the generic path's. test/response-frame.test.ts holds it equal to responseSerialize.
 */
export function frameCertificateResponse(response: IstioCertificateResponse | null | undefined): Buffer | undefined {
  const chain = response?.cert_chain;
  if (!Array.isArray(chain)) return undefined;
  let length = 0;
  for (const pem of chain as unknown[]) {
    if (typeof pem !== 'string' || Buffer.byteLength(pem, 'utf8') !== pem.length) return undefined;
    length += 1 + varintLength(pem.length) + pem.length;
  }
  const out = Buffer.allocUnsafe(5 + length);
  out[0] = 0;
  out.writeUInt32BE(length, 1);
  let at = 5;
  for (const pem of chain as string[]) {
    out[at++] = 0x0a; // field 1, wire type 2 (length-delimited)
    for (let n = pem.length; ; n >>>= 7) {
      if (n < 0x80) {
        out[at++] = n;
        break;
      }
      out[at++] = (n & 0x7f) | 0x80;
    }
    at += out.write(pem, at, 'latin1');
  }
  return out;
}

/** Octets of `n` as a protobuf varint (n < 2^32). */
function varintLength(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}
