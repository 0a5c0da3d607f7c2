import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from './oids.js';

/** One X.509v3 extension, its value already DER-encoded (the contents of extnValue). */
export interface ExtensionSpec {
  oid: string;
  critical: boolean;
  value: Buffer;
}

const der = (schema: { toBER(): ArrayBuffer }): Buffer => Buffer.from(schema.toBER());

export type SanEntry = { type: 'uri' | 'dns'; value: string } | { type: 'ip'; value: Buffer };

/** SubjectAltName. Critical when the subject is empty (RFC 5280 4.2.1.6), as on every leaf we issue. */
export function subjectAltName(entries: SanEntry[], critical: boolean): ExtensionSpec {
  const altNames = entries.map((e) => {
    if (e.type === 'uri') return new pkijs.GeneralName({ type: 6, value: e.value });
    if (e.type === 'dns') return new pkijs.GeneralName({ type: 2, value: e.value });
    return new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: e.value as Buffer }) });
  });
  return { oid: OID.subjectAltName, critical, value: der(new pkijs.AltName({ altNames }).toSchema()) };
}

/** KeyUsage bits, numbered as in RFC 5280. */
export const KeyUsageBit = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

/** KeyUsage, always critical (Go marshals it critical; RFC 5280 says SHOULD). Encoded with the minimal number of bits. */
export function keyUsage(bits: number[]): ExtensionSpec {
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  const unusedBits = 7 - (highest % 8);
  return { oid: OID.keyUsage, critical: true, value: der(new asn1js.BitString({ valueHex: bytes, unusedBits })) };
}

export function extKeyUsage(purposes: string[]): ExtensionSpec {
  return { oid: OID.extKeyUsage, critical: false, value: der(new pkijs.ExtKeyUsage({ keyPurposes: purposes }).toSchema()) };
}

export function basicConstraints(ca: boolean, pathLen?: number): ExtensionSpec {
  const params: pkijs.BasicConstraintsParameters = { cA: ca };
  if (ca && pathLen !== undefined) params.pathLenConstraint = pathLen;
  return { oid: OID.basicConstraints, critical: true, value: der(new pkijs.BasicConstraints(params).toSchema()) };
}

export function subjectKeyIdentifier(keyId: Buffer): ExtensionSpec {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: der(new asn1js.OctetString({ valueHex: keyId })) };
}

/** AuthorityKeyIdentifier with the keyIdentifier form only; never critical (webpki rejects a critical AKI). */
export function authorityKeyIdentifier(keyId: Buffer): ExtensionSpec {
  const aki = new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: keyId }) });
  return { oid: OID.authorityKeyIdentifier, critical: false, value: der(aki.toSchema()) };
}
