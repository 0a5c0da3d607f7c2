/** Authenticators (who is calling) and the authorization rule (which identity they may ask for). */
export { AuthError, type Authenticator, type AuthFailure, type CallCredentials, type Caller } from './types.js';
export { JwtAuthenticator, bearerToken, MAX_TOKEN_BYTES, type JwtAuthenticatorOptions } from './jwt.js';
export { authenticateCall, type AuthenticationOptions } from './authenticate.js';
export { authorizeSans, AuthzError, type AuthzFailure } from './authorize.js';
export { spiffeId, parseServiceAccountUsername, isKubernetesName } from './spiffe.js';
