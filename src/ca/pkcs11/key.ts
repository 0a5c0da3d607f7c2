import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { BundleError, spkiDer, type ExternalKey, type SignatureAlgorithm } from '../../pki/index.js';
import { CaUnavailableError } from '../authority.js';
import type { FoundKey, KeySelector, Pkcs11Token } from './token.js';

/** CKA_EC_PARAMS (DER OID) -> the JWK curve name. */
const CURVES: Record<string, { crv: string; size: number }> = {
  '06082a8648ce3d030107': { crv: 'P-256', size: 32 },
  '06052b81040022': { crv: 'P-384', size: 48 },
};

/** CKA_EC_POINT is a DER OCTET STRING around 04||X||Y; some tokens return the bare point. */
function unwrapPoint(point: Buffer, size: number): Buffer {
  if (point.length === 2 * size + 1 && point[0] === 0x04) return point;
  const parsed = asn1js.fromBER(new Uint8Array(point));
  if (parsed.offset !== -1 && parsed.result instanceof asn1js.OctetString) return Buffer.from(parsed.result.valueBlock.valueHexView);
  return point;
}

/**
 * The key's public half as a KeyObject, from the token's attributes (RSA modulus and exponent on the
 * private object; the EC point from the public object). Undefined when the token has no public object
 * for an EC key: the probe signature then decides the match alone.
 */
export function publicKeyOf(found: FoundKey, where: string): KeyObject | undefined {
  const b64 = (b: Buffer) => b.toString('base64url');
  const pk = found.publicKey;
  if (pk.kind === 'rsa') return createPublicKey({ key: { kty: 'RSA', n: b64(pk.modulus), e: b64(pk.exponent) }, format: 'jwk' });
  const curve = CURVES[pk.params.toString('hex')];
  if (!curve) throw new BundleError(where, `the key's curve (CKA_EC_PARAMS ${pk.params.toString('hex')}) is not P-256 or P-384`);
  if (!pk.point) return undefined;
  const point = unwrapPoint(pk.point, curve.size);
  if (point.length !== 2 * curve.size + 1 || point[0] !== 0x04) throw new BundleError(where, 'the public key object holds no uncompressed EC point');
  return createPublicKey({ key: { kty: 'EC', crv: curve.crv, x: b64(point.subarray(1, 1 + curve.size)), y: b64(point.subarray(1 + curve.size)) }, format: 'jwk' });
}

/** An unsigned big-endian integer as DER INTEGER contents: leading zeros stripped, a zero added before a high bit. */
function derInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const v = bytes.subarray(start);
  const body = v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v;
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

/** CKM_ECDSA returns raw r||s (IEEE P1363); X.509 wants ECDSA-Sig-Value DER (RFC 3279 2.2.3). Up to P-384 lengths fit one byte. */
export function rawEcdsaToDer(raw: Buffer): Buffer {
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

/**
 * A private key on a PKCS#11 token as the pki Signer's external key. ECDSA: the TBS is hashed here
 * and signed with CKM_ECDSA (SoftHSM and many HSMs lack CKM_ECDSA_SHA256), the raw r||s turned into
 * DER. RSA: CKM_SHA256_RSA_PKCS over the TBS, used as is.
 */
export class Pkcs11Key implements ExternalKey {
  #handle: Buffer;
  #generation: number;
  /** SubjectPublicKeyInfo of the key as checked against the signing certificate. */
  readonly #spki: Buffer;

  /** `publicKey`: the key it was checked against (the signing certificate's); a key found again later must still be it. */
  constructor(
    private readonly token: Pkcs11Token,
    private readonly selector: KeySelector,
    found: FoundKey,
    private readonly algorithm: SignatureAlgorithm,
    readonly description: string,
    publicKey: KeyObject,
  ) {
    this.#handle = found.handle;
    this.#generation = token.generation;
    this.#spki = spkiDer(publicKey);
  }

  isAvailable(): boolean {
    return this.token.isAvailable();
  }

  /** The key handle for this generation of sessions: looked up again after a rebuild or recovery. */
  readonly #handleFor = (session: Buffer): Buffer => {
    if (this.#generation !== this.token.generation) {
      const found = this.token.findKey(this.selector, session);
      // The label may now name another key (replaced in the token ahead of its certificate): never
      // sign with it under this certificate; the cacerts reload with the new certificate takes it up.
      const publicKey = publicKeyOf(found, this.description);
      if (publicKey && !spkiDer(publicKey).equals(this.#spki)) {
        throw new CaUnavailableError(`the key behind ${this.description} changed and no longer matches the signing certificate; waiting for a cacerts reload with its certificate`);
      }
      this.#handle = found.handle;
      this.#generation = this.token.generation;
    }
    return this.#handle;
  };

  #mechanismAndInput(tbs: Buffer): [number, Buffer] {
    const p = this.token.constants;
    if (this.algorithm.oid.startsWith('1.2.840.10045')) return [p.CKM_ECDSA, createHash(this.algorithm.hash).update(tbs).digest()];
    return [p.CKM_SHA256_RSA_PKCS, tbs];
  }

  #finish(raw: Buffer): Buffer {
    return this.algorithm.oid.startsWith('1.2.840.10045') ? rawEcdsaToDer(raw) : raw;
  }

  signSync(tbs: Buffer): Buffer {
    const [mechanism, input] = this.#mechanismAndInput(tbs);
    return this.#finish(this.token.signSync(mechanism, input, this.#handleFor));
  }

  async sign(tbs: Buffer): Promise<Buffer> {
    const [mechanism, input] = this.#mechanismAndInput(tbs);
    return this.#finish(await this.token.sign(mechanism, input, this.#handleFor));
  }
}
