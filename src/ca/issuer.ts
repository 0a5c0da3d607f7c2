import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { algorithmIdentifier, inspectCertificate, signatureAlgorithmForKey, signTbs, type Signer } from '../pki/index.js';
import { ISTIO_FILES, TLS_FILES } from './cacerts.js';
import type { Pkcs11SigningKeySource } from './pkcs11/index.js';

/** A CA folder's signing key and certificate, for signing structures other than the certificates svid-ca issues. */
export interface IssuerSigner {
  /** The folder's CA certificate: its subject is the issuer name (a CRL's `issuer`), its subject key id the AKI. */
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
 * A CA folder that cannot sign: no CA certificate (and key) in it, a file that is not PEM, a key that
 * does not match. The message names the folder or file; `cacerts crl` reports it as a bad --issuer.
 */
export class IssuerFolderError extends Error {
  override name = 'IssuerFolderError';
}

/** The folder's CA certificate and, unless the key is on a token, its key file: root, Istio or TLS layout. */
function issuerFiles(dir: string, onToken: boolean): { certFile: string; keyFile: string | undefined } {
  // The signing certificate first: a cacerts folder holds root-cert.pem too (the root bundle, not its issuer).
  const layouts: [string, string][] = [
    [ISTIO_FILES.cert, ISTIO_FILES.key],
    [TLS_FILES.cert, TLS_FILES.key],
    ['root-cert.pem', 'root-key.pem'],
  ];
  for (const [cert, key] of layouts) {
    if (!existsSync(join(dir, cert))) continue;
    if (onToken) return { certFile: join(dir, cert), keyFile: undefined };
    if (existsSync(join(dir, key))) return { certFile: join(dir, cert), keyFile: join(dir, key) };
  }
  const want = onToken ? 'root-cert.pem, ca-cert.pem or tls.crt' : 'root-cert.pem + root-key.pem, ca-cert.pem + ca-key.pem, or tls.crt + tls.key';
  throw new IssuerFolderError(`${dir} holds no CA to sign with (want ${want}; with the key on a token add --signing-key)`);
}

/** `parse` of the file's text; a file that cannot be read or parsed is an IssuerFolderError naming it. */
function readable<T>(file: string, parse: (text: string) => T): T {
  try {
    return parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new IssuerFolderError(`${file} cannot be read as PEM (${(err as Error).message})`);
  }
}

/**
 * The signer of the CA folder `dir` (issue #16, `svid-ca cacerts crl --issuer DIR`): an init-root folder
 * (root-cert.pem + root-key.pem) or a cacerts folder, Istio layout (ca-cert.pem + ca-key.pem) or Kubernetes
 * TLS layout (tls.crt + tls.key); the certificate is the first of its file. With `tokenKey` (issue #17) the
 * folder needs only the certificate and the key on the token is checked against it (same public key, a probe
 * signature: Pkcs11SigningKeySource.load); the caller closes the source. Throws IssuerFolderError for the
 * folder and its files, BundleError naming the URI for the token.
 */
export function loadIssuerSigner(dir: string, tokenKey?: Pkcs11SigningKeySource): IssuerSigner {
  const { certFile, keyFile } = issuerFiles(dir, tokenKey !== undefined);
  const certificate = readable(certFile, (text) => new X509Certificate(text));
  const subjectDer = inspectCertificate(Buffer.from(certificate.raw)).subjectDer;
  let signer: Signer;
  if (tokenKey) {
    signer = { subjectDer, external: tokenKey.load(certificate).key, algorithm: signatureAlgorithmForKey(certificate.publicKey)! };
  } else {
    const privateKey = readable(keyFile!, (text) => createPrivateKey(text));
    const algorithm = signatureAlgorithmForKey(privateKey);
    if (!algorithm) throw new IssuerFolderError(`${keyFile} is not an EC P-256/P-384/P-521 or RSA key`);
    if (!certificate.checkPrivateKey(privateKey)) throw new IssuerFolderError(`${keyFile} does not match ${certFile}`);
    signer = { subjectDer, privateKey, algorithm };
  }
  return {
    certificate,
    signer,
    algorithmIdentifierDer: Buffer.from(algorithmIdentifier(signer.algorithm).toSchema().toBER()),
    sign: (tbs) => signTbs(signer, tbs),
  };
}
