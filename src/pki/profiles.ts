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
import { isIP } from 'node:net';
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

/**
 * svid-ca's own TLS serving certificate: the leaf profile with DNS SANs instead of a SPIFFE ID.
 * An entry that is an IPv4 or IPv6 address becomes an iPAddress SAN (RFC 5280 4.2.1.6: 4 or 16
 * octets), since TLS clients match an IP-literal server address only against IP SANs (RFC 6125 / Node).
 */
export function servingLeaf(p: LeafParams & { dnsNames: string[] }): CertificateTemplate {
  return leafTemplate(p, p.dnsNames.map(servingSan));
}

function servingSan(value: string): SanEntry {
  const family = isIP(value);
  if (family === 4) return { type: 'ip', value: Buffer.from(value.split('.').map(Number)) };
  if (family === 6) return { type: 'ip', value: ipv6Bytes(value) };
  return { type: 'dns', value };
}

/** The 16 octets of an IPv6 address in any textual form (RFC 4291 2.2), incl. a trailing dotted IPv4. */
function ipv6Bytes(text: string): Buffer {
  let t = text;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(t);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    t = t.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = t.includes('::') ? t.split('::') : [t, undefined];
  const h = head ? head.split(':') : [];
  const tl = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - tl.length).fill('0'), ...tl];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
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
