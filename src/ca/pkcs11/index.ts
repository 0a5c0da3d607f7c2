/** The CA key on a PKCS#11 token (issue #17): RFC 7512 URIs, the token with its session pool, the key behind the pki ExternalKey. */
export { parsePkcs11Uri, Pkcs11UriError, type Pkcs11Uri } from './uri.js';
export { Pkcs11SigningKeySource, type SigningKeyConfig, type CheckedTokenKey } from './source.js';
export { PinRefusedError, TOKEN_KEY_SPECS, type TokenKeySpec, type TokenLog } from './token.js';
export { rawEcdsaToDer } from './key.js';
