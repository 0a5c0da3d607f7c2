/**
 * Pure X.509 work: parse and check CSRs, build and sign certificates, load and verify a cacerts
 * bundle. No I/O: callers hand in bytes and get bytes back.
 */
export { decodePem, encodePem, splitCertificatePem, withOneNewline, type PemBlock } from './pem.js';
export { OID } from './oids.js';
export { CsrError, BundleError, type CsrProblem } from './errors.js';
export {
  describeKey,
  keyLabel,
  generateKeyPair,
  signatureAlgorithmForKey,
  spkiDer,
  privateKeyPem,
  KEY_SPECS,
  type KeyDescription,
  type KeySpec,
  type SignatureAlgorithm,
} from './keys.js';
export { encodeName, EMPTY_NAME_DER, type NameAttributes } from './name.js';
export { type ExtensionSpec, type SanEntry } from './extensions.js';
export { signCertificate, randomSerial, keyIdentifier, type CertificateTemplate, type Signer } from './certificate.js';
export { signTbs, algorithmIdentifier, type ExternalKey } from './certificate.js';
export { workloadLeaf, servingLeaf, caCertificate, CLOCK_SKEW_GRACE_MS, type LeafParams, type CaParams } from './profiles.js';
export { parseCsrPem, parseCsrDer, checkWorkloadKey, CSR_LIMITS, type ParsedCsr, type CsrSans } from './csr.js';
export { buildCsrPem, buildCaCsrPem, type CsrRequest } from './csr-build.js';
export { readCsrPem, readCsrDer } from './fast-csr.js';
export { WorkloadLeafEncoder, type FastLeafFields } from './fast-leaf.js';
export { inspectCertificate, type CertificateFacts } from './inspect.js';
export {
  verifySigningBundle,
  signingBundleSteps,
  type BundleFiles,
  type BundleLayout,
  type NamedText,
  type SigningBundle,
  type ExternalSigningKey,
  type LoadedCertificate,
} from './bundle.js';
export { loadCrls, crlIssuerName, crlIssuerOf, compareCrlSets, describeCrlChange, type CrlChange, signCrl, revocationOf, describeRevocation, crlLabel, serialHexOf, CRL_REASONS, type LoadedCrl, type RevokedEntry, type CrlReason, type CrlTemplate } from './crl.js';
export { issuedBy, subjectText, verifyCertificateChain } from './verify.js';
export { validateIssuancePaths, certificateLabel, probeSpiffeId, runPathJobsSync, runPathJobsAsync, PATH_VALIDATION_THREAD, type PathJobSteps, type ProbeNames, type PathValidity, type PathCertificate } from './path-validation.js';
