import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from './oids.js';

/** The facts about a certificate that CA loading and metrics need, read with pkijs. */
export interface CertificateFacts {
  /** Subject Name DER exactly as encoded in the certificate. */
  subjectDer: Buffer;
  subjectKeyId: Buffer | undefined;
  isCa: boolean;
  /** KeyUsage bit numbers set (RFC 5280 numbering), or undefined when the extension is absent. */
  keyUsageBits: number[] | undefined;
  hasNameConstraints: boolean;
  /** BasicConstraints pathLenConstraint (RFC 5280 4.2.1.9), undefined when absent. */
  pathLenConstraint: number | undefined;
  /** ExtendedKeyUsage purposes (OIDs), undefined when the extension is absent. */
  extKeyUsage: string[] | undefined;
  /** OIDs of the extensions marked critical. */
  criticalExtensions: string[];
  uriSans: string[];
  dnsSans: string[];
  serialHex: string;
}

export function inspectCertificate(der: Buffer): CertificateFacts {
  const cert = pkijs.Certificate.fromBER(der);
  const facts: CertificateFacts = {
    subjectDer: Buffer.from(cert.subject.valueBeforeDecode),
    subjectKeyId: undefined,
    isCa: false,
    keyUsageBits: undefined,
    hasNameConstraints: false,
    pathLenConstraint: undefined,
    extKeyUsage: undefined,
    criticalExtensions: [],
    uriSans: [],
    dnsSans: [],
    serialHex: Buffer.from(cert.serialNumber.valueBlock.valueHexView).toString('hex'),
  };
  for (const ext of cert.extensions ?? []) {
    const parsed: unknown = ext.parsedValue;
    if (ext.critical) facts.criticalExtensions.push(ext.extnID);
    switch (ext.extnID) {
      case OID.subjectKeyIdentifier:
        if (parsed instanceof asn1js.OctetString) facts.subjectKeyId = Buffer.from(parsed.valueBlock.valueHexView);
        break;
      case OID.basicConstraints:
        facts.isCa = parsed instanceof pkijs.BasicConstraints && parsed.cA === true;
        if (parsed instanceof pkijs.BasicConstraints && typeof parsed.pathLenConstraint === 'number') facts.pathLenConstraint = parsed.pathLenConstraint;
        break;
      case OID.extKeyUsage:
        facts.extKeyUsage = parsed instanceof pkijs.ExtKeyUsage ? parsed.keyPurposes : [];
        break;
      case OID.keyUsage:
        if (parsed instanceof asn1js.BitString) facts.keyUsageBits = setBits(parsed.valueBlock.valueHexView);
        break;
      case OID.nameConstraints:
        facts.hasNameConstraints = true;
        break;
      case OID.subjectAltName:
        if (parsed instanceof pkijs.AltName) {
          for (const n of parsed.altNames) {
            if (n.type === 6 && typeof n.value === 'string') facts.uriSans.push(n.value);
            if (n.type === 2 && typeof n.value === 'string') facts.dnsSans.push(n.value);
          }
        }
        break;
    }
  }
  return facts;
}

function setBits(bytes: Uint8Array): number[] {
  const bits: number[] = [];
  bytes.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (0x80 >> b)) bits.push(i * 8 + b);
  });
  return bits;
}
