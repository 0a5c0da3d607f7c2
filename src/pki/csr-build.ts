import { sign, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { algorithmIdentifier, toArrayBuffer, type ExternalKey } from './certificate.js';
import { subjectAltName, type SanEntry } from './extensions.js';
import { signatureAlgorithmForKey, spkiDer, type SignatureAlgorithm } from './keys.js';
import { OID } from './oids.js';
import { encodePem } from './pem.js';

export interface CsrRequest {
  privateKey: KeyObject;
  sans: SanEntry[];
  /** Istio's agent writes `O=` (one empty Organization); ztunnel writes an empty subject. */
  subjectOrganization?: string;
}

/** A PKCS#10 CSR as istio-agent makes one: a critical SAN extension request, signed by the key. */
export function buildCsrPem(req: CsrRequest): string {
  const alg = signatureAlgorithmForKey(req.privateKey);
  if (!alg) throw new Error('unsupported key type for a CSR');
  const csr = new pkijs.CertificationRequest();
  csr.version = 0;
  if (req.subjectOrganization !== undefined) {
    csr.subject.typesAndValues.push(
      new pkijs.AttributeTypeAndValue({
        type: OID.organization,
        value: new asn1js.Utf8String({ value: req.subjectOrganization }),
      }),
    );
  }
  csr.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(spkiDer(req.privateKey));
  if (req.sans.length > 0) {
    const san = subjectAltName(req.sans, true);
    const exts = new pkijs.Extensions({
      extensions: [new pkijs.Extension({ extnID: san.oid, critical: san.critical, extnValue: toArrayBuffer(san.value) })],
    });
    csr.attributes = [new pkijs.Attribute({ type: OID.extensionRequest, values: [exts.toSchema()] })];
  }
  return signCsr(csr, alg, (tbs) => sign(alg.hash, tbs, req.privateKey));
}

/** Signs the CSR's TBS with `signTbs` (signatureValue contents for `alg`) and returns the PEM. */
function signCsr(csr: pkijs.CertificationRequest, alg: SignatureAlgorithm, signTbs: (tbs: Buffer) => Buffer): string {
  // encodeTBS is protected in the typings but is the documented way to get the bytes to sign.
  const tbs = Buffer.from((csr as unknown as { encodeTBS(): asn1js.Sequence }).encodeTBS().toBER());
  csr.tbsView = new Uint8Array(tbs);
  csr.signatureAlgorithm = algorithmIdentifier(alg);
  csr.signatureValue = new asn1js.BitString({ valueHex: signTbs(tbs) });
  return encodePem('CERTIFICATE REQUEST', Buffer.from(csr.toSchema(false).toBER()));
}

/**
 * A CA's PKCS#10 CSR for an offline or external root (issue #17: the key is in a token): the
 * subject Name DER, no extension request (the root decides the CA profile), signed by `key`.
 */
export function buildCaCsrPem(req: { subjectDer: Buffer; publicKeyDer: Buffer; algorithm: SignatureAlgorithm; key: ExternalKey }): string {
  const csr = new pkijs.CertificationRequest();
  csr.version = 0;
  csr.subject = pkijs.RelativeDistinguishedNames.fromBER(req.subjectDer);
  csr.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(req.publicKeyDer);
  return signCsr(csr, req.algorithm, (tbs) => req.key.signSync(tbs));
}
