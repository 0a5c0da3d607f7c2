import type { X509Certificate } from 'node:crypto';
import { algorithmIdentifier, signTbs, type ProbeNames, type Signer } from '../pki/index.js';
import { DEFAULT_PROBE_NAMES, loadCacerts } from './cacerts.js';
import type { Pkcs11SigningKeySource } from './pkcs11/index.js';

/** A cacerts folder's signing key and certificate, for signing structures other than the certificates svid-ca issues. */
export interface IssuerSigner {
  /** ca-cert.pem: its subject is the issuer name (a CRL's `issuer`), its subject key id the AKI. */
  certificate: X509Certificate;
  /** The pki Signer (in-memory key, or the key on a PKCS#11 token); `signer.algorithm` names the signature. */
  signer: Signer;
  /**
   * DER of the AlgorithmIdentifier of that signature (ecdsa-with-SHA256/384 without parameters,
   * sha256WithRSAEncryption with NULL; RFC 5758 3.2, RFC 4055 5): what goes in both
   * tbsCertList.signature and CertificateList.signatureAlgorithm, which must be equal (RFC 5280 5.1.1.2).
   */
  algorithmIdentifierDer: Buffer;
  /**
   * The signatureValue contents for `tbs`, any DER to be signed (a CRL's tbsCertList): DER
   * ECDSA-Sig-Value, or PKCS#1 v1.5. Blocking; with a token key, within --pkcs11-sign-timeout.
   * Throws CaUnavailableError when the token does not sign.
   */
  sign(tbs: Buffer): Buffer;
}

/**
 * The signer of the cacerts folder `dir`, checked as `serve` checks it (loadCacerts; with `tokenKey`,
 * issue #17, the key on the token is matched against ca-cert.pem by its public key and a probe
 * signature). For `svid-ca cacerts crl --issuer DIR` (issue #16) and anything else that signs a TBS
 * with the CA key. Throws BundleError naming the file or URI to fix.
 */
export function loadIssuerSigner(dir: string, tokenKey?: Pkcs11SigningKeySource, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES): IssuerSigner {
  const bundle = loadCacerts(dir, now, names, tokenKey);
  const signer = bundle.signer;
  return {
    certificate: bundle.signingCert.x509,
    signer,
    algorithmIdentifierDer: Buffer.from(algorithmIdentifier(signer.algorithm).toSchema().toBER()),
    sign: (tbs) => signTbs(signer, tbs),
  };
}
