/** The authority: the current signing bundle, TTL policy, and the serving certificate. */
export { Authority, CaUnavailableError, type IssueRequest, type IssuedCertificate, type ServingCertificate } from './authority.js';
export { grantValidity, TtlError, type TtlPolicy, type Validity } from './ttl.js';
export { loadCacerts, loadCacertsWithFiles, loadCacertsWithFilesAsync, bundleFromFiles, bundleFromFilesAsync, readCacertsFiles, ISTIO_FILES, TLS_FILES, CRL_FILE, DEFAULT_PROBE_NAMES } from './cacerts.js';
export { createRootCa, createIntermediateCa, distinctCaName, intermediateCertificateFiles, rootCertificateForKey, type CaMaterial, type CacertsFiles, type RootOptions, type IntermediateOptions } from './hierarchy.js';
export { CacertsReloader, compareRoots, type ReloaderOptions, type ReloadResult, type Refusal, type RootChange } from './reloader.js';
export { ServingCertificateManager, parseGrace, type Grace, type ServingManagerOptions } from './serving.js';
export { SelfSignedRoot, bundleFromRoot, rootNeedsRotation, type SelfSignedOptions, type SelfSignedRootMaterial } from './self-signed.js';
export { Pkcs11SigningKeySource, PinRefusedError, TOKEN_KEY_SPECS, type TokenKeySpec, parsePkcs11Uri, Pkcs11UriError, type SigningKeyConfig, type Pkcs11Uri } from './pkcs11/index.js';
export { loadIssuerSigner, IssuerFolderError, type IssuerSigner } from './issuer.js';
