/** Authenticators (who is calling) and the authorization rule (which identity they may ask for). */
export { AuthError, type Authenticator, type AuthFailure, type BearerKey, type CallCredentials, type Caller } from './types.js';
export { JwtAuthenticator, acceptedBearerToken, bearerToken, bearerKey, MAX_TOKEN_BYTES, MAX_KIDLESS_CANDIDATES, type JwtAuthenticatorOptions } from './jwt.js';
export { claimedNamespace, namespaceClaim, MAX_CLAIM_PAYLOAD_CHARS } from './claimed-namespace.js';
export { parseJwks, maxAgeMs, MIN_REFRESH_MS, type KeySetReload, type JwksKey, type KeySet } from './jwks.js';
export { authenticateCall, resolveCluster, type AuthenticationOptions } from './authenticate.js';
export { authorizeSans, AuthzError, type AuthzFailure } from './authorize.js';
export { spiffeId, parseServiceAccountUsername, isKubernetesName } from './spiffe.js';
export { TokenReviewAuthenticator, ClusterTokenReview, ConcurrencyLimit, type TokenReviewer, type TokenReviewStatus, type TokenReviewAuthenticatorOptions } from './token-review.js';
export { ClientCertAuthenticator, type ClientCertAuthenticatorOptions } from './client-cert.js';
export { ImpersonationAuthorizer, parseNodeAccounts, parseWorkloadSpiffeId, type PodDirectory, type PodFacts, type ImpersonationOptions } from './impersonation.js';
export { JwtIssuers, IssuersFile, IssuersFileError, parseIssuersFile, type IssuerEntry, type IssuerKeyOptions, type IssuersReload, type IssuersFileOptions } from './issuers.js';
