import { OID } from './oids.js';
import {
  authorityKeyIdentifier,
  basicConstraints,
  extKeyUsage,
  keyUsage,
  KeyUsageBit,
  subjectAltName,
  subjectKeyIdentifier,
  type SanEntry,
} from './extensions.js';
import { EMPTY_NAME_DER } from './name.js';
import { keyIdentifier, type CertificateTemplate } from './certificate.js';

/** Istio's ClockSkewGracePeriod: leaves are valid from two minutes before issuance. */
export const CLOCK_SKEW_GRACE_MS = 2 * 60 * 1000;

export interface LeafParams {
  serialNumber: Buffer;
  publicKeyDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** The issuer's SubjectKeyIdentifier, copied into the leaf's AKI (omitted when the issuer has none). */
  issuerKeyId: Buffer | undefined;
}

/**
 * The Istio leaf profile with the given SANs (critical, since the subject is empty): KU
 * digitalSignature+keyEncipherment (critical), EKU serverAuth+clientAuth, CA:false (critical),
 * AKI = issuer SKI, no SKI. Same profile as istiod's genCertTemplateFromCSR.
 */
function leafTemplate(p: LeafParams, sans: SanEntry[]): CertificateTemplate {
  const extensions = [
    keyUsage([KeyUsageBit.digitalSignature, KeyUsageBit.keyEncipherment]),
    extKeyUsage([OID.serverAuth, OID.clientAuth]),
    basicConstraints(false),
  ];
  if (p.issuerKeyId) extensions.push(authorityKeyIdentifier(p.issuerKeyId));
  extensions.push(subjectAltName(sans, true));
  return { serialNumber: p.serialNumber, subjectDer: EMPTY_NAME_DER, notBefore: p.notBefore, notAfter: p.notAfter, publicKeyDer: p.publicKeyDer, extensions };
}

/** The Istio workload leaf (an X.509 SVID): the leaf profile with one URI SAN, the SPIFFE ID. */
export function workloadLeaf(p: LeafParams & { spiffeId: string }): CertificateTemplate {
  return leafTemplate(p, [{ type: 'uri', value: p.spiffeId }]);
}

/** svid-ca's own TLS serving certificate: the leaf profile with DNS SANs instead of a SPIFFE ID. */
export function servingLeaf(p: LeafParams & { dnsNames: string[] }): CertificateTemplate {
  return leafTemplate(
    p,
    p.dnsNames.map((value) => ({ type: 'dns' as const, value })),
  );
}

export interface CaParams {
  serialNumber: Buffer;
  subjectDer: Buffer;
  publicKeyDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** The issuer's key id; undefined for a self-signed root (AKI then equals the SKI). */
  issuerKeyId?: Buffer | undefined;
  pathLen?: number;
}

/**
 * A CA certificate (root or intermediate): CA:true and KU keyCertSign+cRLSign, both critical; SKI
 * from the key; AKI. No name constraints: a URI constraint makes webpki reject every SPIFFE leaf.
 */
export function caCertificate(p: CaParams): CertificateTemplate {
  const ski = keyIdentifier(p.publicKeyDer);
  return {
    serialNumber: p.serialNumber,
    subjectDer: p.subjectDer,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    publicKeyDer: p.publicKeyDer,
    extensions: [
      keyUsage([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
      basicConstraints(true, p.pathLen),
      subjectKeyIdentifier(ski),
      authorityKeyIdentifier(p.issuerKeyId ?? ski),
    ],
  };
}
