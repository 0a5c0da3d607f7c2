/**
 * Certificate revocation lists (RFC 5280 section 5) of a cacerts folder's `ca-crl.pem` (issue #16),
 * as istiod's plugged-in CA reads them. pkijs parses (outside the hot path); node:crypto verifies
 * the signature over the CRL's TBS bytes with the issuer's public key. Also builds and signs a CRL
 * (`svid-ca cacerts crl`) with a Signer, so a key on a PKCS#11 token can sign it too.
 */
import { verify as verifySignature } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { algorithmIdentifier, signTbs, toArrayBuffer, type Signer } from './certificate.js';
import { BundleError } from './errors.js';
import { KeyUsageBit } from './extensions.js';
import type { CertificateFacts } from './inspect.js';
import { SIGNATURE_ALGORITHMS, spkiDer } from './keys.js';
import { certificateLabel } from './path-validation.js';
import { decodePem, encodePem } from './pem.js';
import { subjectText } from './verify.js';
import type { X509Certificate } from 'node:crypto';

const OID_CRL_NUMBER = '2.5.29.20';
const OID_CRL_REASON = '2.5.29.21';
const OID_AKI = '2.5.29.35';

/** RFC 5280 5.3.1 CRLReason codes (7 is unused). */
export const CRL_REASONS = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'certificateHold',
  '',
  'removeFromCRL',
  'privilegeWithdrawn',
  'aACompromise',
] as const;
export type CrlReason = Exclude<(typeof CRL_REASONS)[number], ''>;

/** One revoked certificate of a CRL: serial as lowercase hex without a sign byte (as Node prints it). */
export interface RevokedEntry {
  serialHex: string;
  revocationDate: Date;
  reason?: CrlReason | undefined;
}

/** A certificate a CRL may be signed by: what the bundle already parsed. */
export interface CrlIssuerCandidate {
  x509: X509Certificate;
  der: Buffer;
  facts: CertificateFacts;
}

/** A CRL of ca-crl.pem, parsed and checked against the certificate that signed it. */
export interface LoadedCrl {
  der: Buffer;
  /** The issuer's subject on one line ("O=x, CN=y"): the metrics' `issuer` label. */
  issuer: string;
  /** The certificate (of cert-chain.pem or root-cert.pem) whose key verified the signature. */
  issuerCert: CrlIssuerCandidate;
  /** cRLNumber as decimal text; undefined when the CRL has none. */
  number: string | undefined;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  revoked: RevokedEntry[];
}

/** Serial bytes as lowercase hex without DER sign bytes ("00" prefix), as Node's X509Certificate prints it. */
export function serialHexOf(bytes: Uint8Array): string {
  let hex = Buffer.from(bytes).toString('hex');
  while (hex.length > 2 && hex.startsWith('00')) hex = hex.slice(2);
  return hex;
}

const nameDer = (rdn: pkijs.RelativeDistinguishedNames): Buffer => {
  // The bytes as signed: a re-encoding could differ from a BER-encoded name.
  const before = rdn.valueBeforeDecode;
  return before && before.byteLength > 0 ? Buffer.from(before) : Buffer.from(rdn.toSchema().toBER());
};

/** `CRL (issuer "O=x, CN=y", number 3)`: how every message names a CRL. */
export function crlLabel(crl: { issuer: string; number: string | undefined }): string {
  return `CRL (issuer "${crl.issuer}", number ${crl.number ?? 'none'})`;
}

function integerText(value: asn1js.Integer): string {
  const hex = Buffer.from(value.valueBlock.valueHexView).toString('hex');
  return hex ? BigInt(`0x${hex}`).toString(10) : '0';
}

/** The fix appended to every refusal: the certificates passed, only the CRL is at fault (issue #16: say exactly that). */
const CRL_ONLY = 'the certificates and key of this bundle pass every other check; only the CRL is refused: fix ca-crl.pem or remove it';

/**
 * Parses and checks every `X509 CRL` block of `file` (RFC 5280 5, istiod's ca-crl.pem): each must
 * parse, be signed (node:crypto verify over the TBS) by one of `issuers` (cert-chain.pem and
 * root-cert.pem certificates) whose keyUsage, when present, has cRLSign, and have thisUpdate not
 * after `now` (CLOCK_SKEW_GRACE_MS is not granted: a CRL from the future is a clock or signing
 * mistake). One CRL per issuer. A text without blocks (only whitespace) is no CRL at all.
 * Throws BundleError(file.name, `CRL #n (issuer ..., number ...) <reason>; <fix>`).
 */
export function loadCrls(file: { name: string; text: string }, issuers: CrlIssuerCandidate[], now: Date): LoadedCrl[] {
  const blocks = decodePem(file.text);
  if (blocks.length === 0 && file.text.trim() !== '') throw new BundleError(file.name, `no PEM X509 CRL block found; ${CRL_ONLY}`);
  const other = blocks.find((b) => b.type !== 'X509 CRL');
  if (other) throw new BundleError(file.name, `holds a PEM ${other.type} block; ca-crl.pem holds only X509 CRL blocks; ${CRL_ONLY}`);
  const crls: LoadedCrl[] = [];
  for (const [i, block] of blocks.entries()) {
    const crl = parseOne(file.name, i, block.der, issuers, now);
    const twin = crls.findIndex((c) => c.issuerCert.der.equals(crl.issuerCert.der));
    if (twin >= 0) throw new BundleError(file.name, `CRL #${twin + 1} and CRL #${i + 1} (issuer "${crl.issuer}", numbers ${crls[twin]!.number ?? 'none'} and ${crl.number ?? 'none'}) have the same issuer; keep only the newest CRL of each issuer; ${CRL_ONLY}`);
    crls.push(crl);
  }
  return crls;
}

/**
 * crl-safety2: the CRLs of `file` that load (loadCrls' checks) on their own, each block alone; blocks refused
 * (e.g. of an issuer not in `issuers`) are left out. For a refusal that explains more than the first bad block.
 */
export function loadableCrls(file: { name: string; text: string }, issuers: CrlIssuerCandidate[], now: Date): LoadedCrl[] {
  return decodePem(file.text).flatMap((block, i) => {
    try {
      return block.type === 'X509 CRL' ? [parseOne(file.name, i, block.der, issuers, now)] : [];
    } catch {
      return [];
    }
  });
}

function parseOne(fileName: string, index: number, der: Buffer, issuers: CrlIssuerCandidate[], now: Date): LoadedCrl {
  let crl: pkijs.CertificateRevocationList;
  try {
    crl = pkijs.CertificateRevocationList.fromBER(toArrayBuffer(der));
  } catch (err) {
    throw new BundleError(fileName, `CRL #${index + 1} cannot be parsed (${(err as Error).message}); ${CRL_ONLY}`);
  }
  const issuerName = nameDer(crl.issuer);
  const numberExt = crl.crlExtensions?.extensions.find((e) => e.extnID === OID_CRL_NUMBER);
  const number = numberExt?.parsedValue instanceof asn1js.Integer ? integerText(numberExt.parsedValue) : undefined;
  const named = issuers.filter((c) => c.facts.subjectDer.equals(issuerName));
  const label = (issuer: string) => `CRL #${index + 1} (issuer "${issuer}", number ${number ?? 'none'})`;
  if (named.length === 0) {
    const issuer = issuerTextOf(crl.issuer);
    throw new BundleError(fileName, `${label(issuer)} is issued by no certificate of cert-chain.pem or root-cert.pem: clients cannot verify it; if it is the CRL of a CA this folder no longer uses, drop it with svid-ca cacerts crl --out ${fileName} --drop-issuer '${issuer}', else sign it with the intermediate or root it revokes under; ${CRL_ONLY}`);
  }
  const algorithm = SIGNATURE_ALGORITHMS[crl.signatureAlgorithm.algorithmId];
  const tbs = Buffer.from(crl.tbsView);
  const signature = Buffer.from(crl.signatureValue.valueBlock.valueHexView);
  const signer = algorithm && named.find((c) => {
    try {
      return verifySignature(algorithm.hash, tbs, c.x509.publicKey, signature);
    } catch {
      return false;
    }
  });
  const issuer = subjectText(named[0]!.x509) || '(empty subject)';
  if (!algorithm) throw new BundleError(fileName, `${label(issuer)} uses signature algorithm ${crl.signatureAlgorithm.algorithmId}, which svid-ca does not verify; sign it with ECDSA or RSA PKCS#1 v1.5; ${CRL_ONLY}`);
  if (!signer) {
    throw new BundleError(fileName, `${label(issuer)} has a signature that does not verify with the key of its issuer certificate: it was altered or signed by another key; re-sign it with the issuer's key (svid-ca cacerts crl); ${CRL_ONLY}`);
  }
  const ku = signer.facts.keyUsageBits;
  if (ku && !ku.includes(KeyUsageBit.cRLSign)) {
    throw new BundleError(fileName, `${label(issuer)} is signed by a certificate whose keyUsage lacks cRLSign: clients reject it (key usage does not include CRL signing); reissue the CA with keyUsage cRLSign, or sign the CRL with a CA that has it; ${CRL_ONLY}`);
  }
  const thisUpdate = crl.thisUpdate.value;
  if (thisUpdate > now) {
    throw new BundleError(fileName, `${label(issuer)} has thisUpdate ${thisUpdate.toISOString()}, in the future: clients reject it (CRL is not yet valid); check the clock of the machine that signed it and re-sign it; ${CRL_ONLY}`);
  }
  const revoked = (crl.revokedCertificates ?? []).map((r): RevokedEntry => {
    const reasonExt = r.crlEntryExtensions?.extensions.find((e) => e.extnID === OID_CRL_REASON);
    const code = reasonExt?.parsedValue instanceof asn1js.Enumerated ? reasonExt.parsedValue.valueBlock.valueDec : undefined;
    const reason = code === undefined ? undefined : (CRL_REASONS[code] || undefined) as CrlReason | undefined;
    return { serialHex: serialHexOf(r.userCertificate.valueBlock.valueHexView), revocationDate: r.revocationDate.value, reason };
  });
  return { der, issuer, issuerCert: signer, number, thisUpdate, nextUpdate: crl.nextUpdate?.value, revoked };
}

/** The issuer name (DER, as signed) of a CRL; throws when `der` is no CRL. For `cacerts crl` to find an issuer's block. */
export function crlIssuerName(der: Buffer): Buffer {
  return nameDer(pkijs.CertificateRevocationList.fromBER(toArrayBuffer(der)).issuer);
}

/** The entry of `crls` revoking `cert` (issued by a CRL's issuer: names chain and its key verifies), if any. */
export function revocationOf(cert: X509Certificate, crls: readonly LoadedCrl[]): { crl: LoadedCrl; entry: RevokedEntry } | undefined {
  const serial = serialHexOf(Buffer.from(cert.serialNumber.length % 2 ? `0${cert.serialNumber}` : cert.serialNumber, 'hex'));
  // (Node prints the serial as hex with its DER bytes; the CRL's form drops the sign byte the same way.)
  for (const crl of crls) {
    const entry = crl.revoked.find((r) => r.serialHex === serial);
    if (!entry || cert.issuer !== crl.issuerCert.x509.subject) continue;
    let signed = false;
    try {
      signed = cert.verify(crl.issuerCert.x509.publicKey);
    } catch {
      signed = false;
    }
    if (signed) return { crl, entry };
  }
  return undefined;
}

/** `certificate "CN=x" serial 0a1b is revoked by CRL (issuer ..., number 2) (reason keyCompromise, since ...)`. */
export function describeRevocation(cert: X509Certificate, hit: { crl: LoadedCrl; entry: RevokedEntry }): string {
  const reason = hit.entry.reason ? `reason ${hit.entry.reason}, ` : '';
  return `certificate "${subjectText(cert) || '(empty subject)'}" serial ${hit.entry.serialHex} is revoked by ${crlLabel(hit.crl)} (${reason}since ${hit.entry.revocationDate.toISOString()})`;
}

/**
 * Refuses a bundle whose CRLs revoke a certificate of a signing path (issue #16: svid-ca will not
 * sign under a revoked certificate). `paths`: signing certificate -> ... -> root, with their files.
 */
export function checkPathsNotRevoked(fileName: string, paths: { x509: X509Certificate }[][], crls: readonly LoadedCrl[]): void {
  for (const path of paths) {
    for (const [i, c] of path.entries()) {
      const hit = revocationOf(c.x509, crls);
      if (!hit) continue;
      const role = i === 0 ? 'the signing certificate' : 'a certificate on the signing path';
      throw new BundleError(
        fileName,
        `${describeRevocation(c.x509, hit)}, which is ${role}: svid-ca will not sign under a revoked certificate; rotate to a new intermediate first (docs: Revoking a compromised intermediate), or remove its serial from the CRL; ${CRL_ONLY}`,
      );
    }
  }
}

/** Whether `crl` was signed by `ca`: same subject (the CRL's issuer name) and `ca`'s key verified it (loadCrls). */
const crlOf = (crl: LoadedCrl, ca: CrlIssuerCandidate) =>
  crl.issuerCert.facts.subjectDer.equals(ca.facts.subjectDer) && spkiDer(crl.issuerCert.x509.publicKey).equals(spkiDer(ca.x509.publicKey));

/**
 * Refuses a non-empty CRL set that leaves a CA of the signing path without a CRL (issue #16). Once a
 * CRL is given, clients check CRLs at every level of the chain they validate: Envoy (the
 * `istio-ca-crl` ConfigMap) unless only_verify_leaf_cert_crl is set, `openssl verify -crl_check_all`
 * ("unable to get certificate CRL"); and istiod refuses a folder where a certificate of
 * cert-chain.pem has no CRL signed by it ("missing CRL signed by certificates").
 * `required`: every certificate of each signing path (signing certificate, intermediates, root), then
 * every certificate of cert-chain.pem; the first without a CRL is named. A CRL "of" a CA: its issuer name is the CA's subject and the CA's key
 * verified it. No-op when `crls` is empty (no ca-crl.pem, or one without blocks).
 * Throws BundleError(fileName, `certificate "..." (SKI ..) has no CRL in ...; ...`) for the first CA without one.
 */
export function checkEveryLevelHasCrl(fileName: string, required: readonly CrlIssuerCandidate[], crls: readonly LoadedCrl[]): void {
  if (crls.length === 0) return;
  const missing = required.find((ca) => !crls.some((crl) => crlOf(crl, ca)));
  if (!missing) return;
  throw new BundleError(
    fileName,
    `${certificateLabel(missing)} has no CRL in this file: once a CRL is given, clients (Envoy, openssl -crl_check_all) check a CRL at every level of the chain and reject every leaf under a CA without one ("unable to get certificate CRL"), and istiod refuses the same folder ("missing CRL signed by certificates"); add one with svid-ca cacerts crl --issuer <that CA's folder> --out <this file> (a CRL that revokes nothing is fine); ${CRL_ONLY}`,
  );
}

/** What `svid-ca cacerts crl` signs. Times are whole seconds (UTCTime through 2049). */
export interface CrlTemplate {
  number: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  revoked: RevokedEntry[];
  /** The issuer's subjectKeyIdentifier, carried as authorityKeyIdentifier (RFC 5280 5.2.1 MUST). */
  issuerKeyId?: Buffer | undefined;
}

const crlTime = (d: Date) => {
  const value = new Date(Math.floor(d.getTime() / 1000) * 1000);
  return new pkijs.Time({ type: value.getUTCFullYear() < 2050 ? 0 : 1, value });
};

const integerOf = (n: bigint) => {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return new asn1js.Integer({ valueHex: toArrayBuffer(Buffer.from(hex, 'hex')) });
};

/** Builds a v2 CRL (cRLNumber, authorityKeyIdentifier, reasons) signed with `signer` (node:crypto or its token); returns PEM. */
export function signCrl(template: CrlTemplate, signer: Signer): string {
  const extensions = [new pkijs.Extension({ extnID: OID_CRL_NUMBER, critical: false, extnValue: integerOf(template.number).toBER() })];
  if (template.issuerKeyId) {
    const aki = new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: toArrayBuffer(template.issuerKeyId) }) });
    extensions.push(new pkijs.Extension({ extnID: OID_AKI, critical: false, extnValue: aki.toSchema().toBER() }));
  }
  const crl = new pkijs.CertificateRevocationList({
    version: 1,
    signature: algorithmIdentifier(signer.algorithm),
    issuer: pkijs.RelativeDistinguishedNames.fromBER(toArrayBuffer(signer.subjectDer)),
    thisUpdate: crlTime(template.thisUpdate),
    nextUpdate: crlTime(template.nextUpdate),
    crlExtensions: new pkijs.Extensions({ extensions }),
  });
  if (template.revoked.length > 0) {
    crl.revokedCertificates = template.revoked.map(
      (r) =>
        new pkijs.RevokedCertificate({
          userCertificate: integerOf(BigInt(`0x${r.serialHex}`)),
          revocationDate: crlTime(r.revocationDate),
          // Only with a reason: pkijs would encode an absent value as an empty (invalid) extensions SEQUENCE.
          ...(r.reason
            ? { crlEntryExtensions: new pkijs.Extensions({ extensions: [new pkijs.Extension({ extnID: OID_CRL_REASON, critical: false, extnValue: new asn1js.Enumerated({ value: CRL_REASONS.indexOf(r.reason) }).toBER() })] }) }
            : {}),
        }),
    );
  }
  // toSchema(true) encodes the TBS from the fields (encodeTBS is protected in pkijs' types).
  const tbs = Buffer.from((crl.toSchema(true) as asn1js.Sequence).valueBlock.value[0]!.toBER());
  crl.tbsView = new Uint8Array(tbs);
  crl.signatureAlgorithm = algorithmIdentifier(signer.algorithm);
  crl.signatureValue = new asn1js.BitString({ valueHex: toArrayBuffer(signTbs(signer, tbs)) });
  return encodePem('X509 CRL', Buffer.from(crl.toSchema(false).toBER()));
}

/**
 * How the CRLs of one issuer changed from a bundle in use (`current`) to the next one (issue crl-safety):
 * `rollback` when the next CRL's cRLNumber is lower (RFC 5280 5.2.3: CRL numbers increase, so a lower
 * one is an older CRL put back), `sameNumber` when both have the same number but revoke different
 * serials (two different CRLs under one number: a client that has one may never take the other; the same serials
 * re-signed under the same number, e.g. a later nextUpdate, is no change), `unrevoked` the serials
 * the current CRL revokes that the next one no longer lists, `dropped` a current CRL whose issuer has no
 * CRL in the next set (clients lose it). CRLs are "of the same issuer" when their issuer names and the
 * verifying keys are equal. A CRL without a cRLNumber is compared by serials only.
 */
export interface CrlChange {
  issuer: string;
  current: LoadedCrl;
  next?: LoadedCrl | undefined;
  kind: 'rollback' | 'sameNumber' | 'unrevoked' | 'dropped';
  /** For `unrevoked`: the serials (hex) no longer listed. */
  serials: string[];
}

/** Every change between the CRLs in use and the next ones, one per issuer and kind; [] when nothing is lost or rolled back. */
const serialSet = (crl: LoadedCrl) => crl.revoked.map((r) => r.serialHex).sort().join(',');

export function compareCrlSets(current: readonly LoadedCrl[], next: readonly LoadedCrl[]): CrlChange[] {
  const changes: CrlChange[] = [];
  for (const cur of current) {
    const nxt = next.find((n) => crlOf(n, cur.issuerCert));
    if (!nxt) {
      changes.push({ issuer: cur.issuer, current: cur, kind: 'dropped', serials: cur.revoked.map((r) => r.serialHex) });
      continue;
    }
    if (cur.number !== undefined && nxt.number !== undefined) {
      if (BigInt(nxt.number) < BigInt(cur.number)) changes.push({ issuer: cur.issuer, current: cur, next: nxt, kind: 'rollback', serials: [] });
      else if (BigInt(nxt.number) === BigInt(cur.number) && serialSet(nxt) !== serialSet(cur)) changes.push({ issuer: cur.issuer, current: cur, next: nxt, kind: 'sameNumber', serials: [] });
    }
    const lost = cur.revoked.filter((r) => !nxt.revoked.some((n) => n.serialHex === r.serialHex)).map((r) => r.serialHex);
    if (lost.length > 0) changes.push({ issuer: cur.issuer, current: cur, next: nxt, kind: 'unrevoked', serials: lost });
  }
  return changes;
}

/** One line for a rollback/sameNumber/unrevoked change: issuer, both numbers, the serials (what `plan-rotation`, `verify --previous` and serve print). */
export function describeCrlChange(c: CrlChange): string {
  const numbers = `number ${c.current.number ?? 'none'} in use, number ${c.next?.number ?? 'none'} next`;
  switch (c.kind) {
    case 'rollback':
      return `the CRL of "${c.issuer}" goes back from number ${c.current.number} to number ${c.next!.number}: CRL numbers only increase (RFC 5280 5.2.3), so this is an older CRL`;
    case 'sameNumber':
      return `the CRL of "${c.issuer}" keeps number ${c.current.number} but revokes other serials: a changed CRL takes the next number`;
    case 'unrevoked':
      return `the CRL of "${c.issuer}" (${numbers}) no longer revokes serial ${c.serials.join(', ')}: those certificates would be trusted again`;
    case 'dropped':
      return `there is no CRL of "${c.issuer}" (number ${c.current.number ?? 'none'}, revoking ${c.serials.length === 0 ? 'nothing' : `serial ${c.serials.join(', ')}`}) any more: clients lose it`;
  }
}

/** The issuer of a CRL as text ("O=x, CN=y") and its authorityKeyIdentifier keyIdentifier (hex), without its issuer certificate; throws when `der` is no CRL. */
export function crlIssuerOf(der: Buffer): { subject: string; keyId: string | undefined } {
  const crl = pkijs.CertificateRevocationList.fromBER(toArrayBuffer(der));
  const aki = crl.crlExtensions?.extensions.find((e) => e.extnID === OID_AKI)?.parsedValue;
  const keyId = aki instanceof pkijs.AuthorityKeyIdentifier && aki.keyIdentifier ? Buffer.from(aki.keyIdentifier.valueBlock.valueHexView).toString('hex') : undefined;
  return { subject: issuerTextOf(crl.issuer), keyId };
}

const issuerTextOf = (name: pkijs.RelativeDistinguishedNames) =>
  name.typesAndValues.map((t) => `${t.type === '2.5.4.3' ? 'CN' : t.type === '2.5.4.10' ? 'O' : t.type}=${t.value.valueBlock.value}`).join(', ');
