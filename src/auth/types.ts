/** What an authenticator sees of a call: the credentials, detached from gRPC. */
export interface CallCredentials {
  /** Values of the `authorization` metadata key. */
  authorization: string[];
  /** Values of the `clusterid` metadata key (Istio agents always send one, possibly empty). */
  clusterId: string[];
  /** DER of the client's TLS certificate, present only when the handshake verified it against the root bundle. */
  peerCertificate?: Buffer | undefined;
  /** issue #18: the cluster the call was routed to (authenticateCall sets it when several clusters are configured). */
  cluster?: string | undefined;
  /** issue #16: the certificates the client presented (leaf first, DER), as the handshake verified them. */
  peerChain?: Buffer[] | undefined;
  /**
   * issue #14: the bearer token's verified-token-cache key, computed once per call (bearerKey) and used
   * by the JWT authenticator only when `bearer.token` is the token it reads from `authorization`.
   */
  bearer?: BearerKey | undefined;
}

/**
 * issue #14: a call's bearer token with its verified-token-cache key (SHA-256, base64), so the token is
 * hashed once per call, and the namespace the token claims (the admission queue's order only, never a
 * decision: see auth/claimed-namespace.ts) when it is known.
 */
export interface BearerKey {
  /** The token as bearerToken() reads it from the authorization header. */
  token: string;
  /** VerifiedTokenCache.keyOf(token). */
  key: string;
  /**
   * The namespace the token claims, as claimedNamespace reads it: from a verified-token cache entry,
   * set by the JWT authenticator from the payload it verified, or by the caller once decoded.
   */
  namespace?: { value: string | undefined } | undefined;
}

/** An authenticated caller. */
export interface Caller {
  /** spiffe://<trust-domain>/ns/<ns>/sa/<sa> */
  identity: string;
  namespace: string;
  serviceAccount: string;
  podName?: string | undefined;
  podUid?: string | undefined;
  /** Which authenticator vouched for the caller. */
  authenticator: string;
  /**
   * Latest NotAfter a certificate issued on this credential alone may carry: set for a client
   * certificate (its own NotAfter, and --client-cert-max-ttl from now), so renewing by certificate
   * never extends a stolen SVID's reach (issue #19). Unset for tokens.
   */
  renewalNotAfter?: Date | undefined;
  /** issue #18: the cluster whose issuer or API server vouched for the caller, when several are configured. */
  clusterId?: string | undefined;
}

export type AuthFailure = 'unauthenticated' | 'unavailable';

/**
 * A caller could not be authenticated. `unavailable` means we could not decide (key source or API
 * server down): agents retry UNAVAILABLE, and a healthy workload must not be told it is unknown.
 */
export class AuthError extends Error {
  constructor(
    readonly failure: AuthFailure,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

/**
 * One way of authenticating a caller. Returns undefined when the call carries no credential of its
 * kind (the next authenticator is tried), a Caller on success, and throws AuthError when the
 * credential is present but not acceptable.
 */
export interface Authenticator {
  readonly name: string;
  authenticate(creds: CallCredentials): Promise<Caller | undefined>;
  /**
   * issue #14: the namespace claim stored with a token this authenticator verified, by its cache key
   * (BearerKey.key); undefined when it holds none. For the admission queue's order only.
   */
  cachedClaim?(tokenKey: string): BearerKey['namespace'];
}
