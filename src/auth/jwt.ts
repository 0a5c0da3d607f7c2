import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { errors as joseErrors } from 'jose';
import { isKubernetesName, parseServiceAccountUsername, spiffeId } from './spiffe.js';
import { AuthError, type Authenticator, type CallCredentials, type Caller } from './types.js';

export interface JwtAuthenticatorOptions {
  issuer: string;
  audience: string;
  trustDomain: string;
  /** Exactly one of jwksFile / jwksUri. */
  jwksFile?: string | undefined;
  jwksUri?: string | undefined;
  /** Leeway for exp/nbf, seconds (at most 60). */
  clockToleranceSeconds?: number;
  /** Minimum time between JWKS refetches on an unknown kid (default 5 s). */
  jwksCooldownMs?: number | undefined;
  /** How many verified tokens to remember (by SHA-256) until they expire; 0 turns the cache off. Default 10,000. */
  verifiedTokenCacheSize?: number;
}

/**
 * Verified tokens by the SHA-256 of the token, each until its own exp (without clock tolerance).
 * An agent presents the same token on every retry and rotation until kubelet refreshes it, and a
 * signature check costs ~100 us while a hash costs ~1 us. Bounded: at capacity the oldest entry
 * goes. Holds no token: only its hash and the Caller it proved. A key removed from the JWKS stops
 * new tokens at once; tokens it verified before stay accepted until their exp, as with any
 * bearer token already accepted.
 */
export class VerifiedTokenCache {
  readonly #entries = new Map<string, { caller: Caller; expiresAtMs: number }>();

  constructor(readonly maxEntries: number) {}

  static keyOf(token: string): string {
    return createHash('sha256').update(token).digest('base64');
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string, nowMs: number = Date.now()): Caller | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (nowMs >= entry.expiresAtMs) {
      this.#entries.delete(key);
      return undefined;
    }
    return { ...entry.caller };
  }

  set(key: string, caller: Caller, expiresAtMs: number, nowMs: number = Date.now()): void {
    if (this.maxEntries <= 0 || expiresAtMs <= nowMs) return;
    if (this.#entries.size >= this.maxEntries && !this.#entries.has(key)) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(key, { caller: { ...caller }, expiresAtMs });
  }
}

/** Tokens beyond this size are refused before any parsing. Kubernetes tokens are about 1 KiB. */
export const MAX_TOKEN_BYTES = 16 * 1024;
const BEARER = 'Bearer ';

/** The bearer token of a call, or undefined when there is none. */
export function bearerToken(creds: CallCredentials): string | undefined {
  const header = creds.authorization.find((v) => v.startsWith(BEARER));
  if (header === undefined) {
    if (creds.authorization.length > 0) throw new AuthError('unauthenticated', 'authorization header is not of the form "Bearer <token>"');
    return undefined;
  }
  const token = header.slice(BEARER.length).trim();
  if (token.length === 0) throw new AuthError('unauthenticated', 'bearer token is empty');
  if (token.length > MAX_TOKEN_BYTES) throw new AuthError('unauthenticated', `bearer token is larger than ${MAX_TOKEN_BYTES} bytes`);
  return token;
}

/** A key set read from a JWKS file, re-read when a token names a key id it does not hold (key rotation). */
function fileKeySet(path: string): JWTVerifyGetKey {
  const load = () => createLocalJWKSet(JSON.parse(readFileSync(path, 'utf8')));
  let keys = load();
  let lastReload = 0;
  return async (header, token) => {
    try {
      return await keys(header, token);
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey) || Date.now() - lastReload < 5_000) throw err;
      lastReload = Date.now();
      keys = load();
      return keys(header, token);
    }
  };
}

/** A fetch of the JWKS that failed for reasons of the network or the issuer, not of the token. */
function isFetchFailure(err: unknown): boolean {
  if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid) return true;
  if (err instanceof joseErrors.JOSEError) return /JSON Web Key Set HTTP response/.test(err.message);
  // fetch() rejections ("fetch failed", connection refused, TLS errors) are not JOSE errors.
  return err instanceof Error;
}

/**
 * A remote JWKS (cached by jose, refetched on an unknown kid after a cooldown) that keeps the last
 * key set it fetched: when the issuer cannot be reached, tokens signed by known keys still verify.
 * With nothing ever fetched, the failure is UNAVAILABLE (agents retry), never UNAUTHENTICATED.
 */
function remoteKeySet(uri: string, cooldownMs = 5_000): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(new URL(uri), { cooldownDuration: cooldownMs, timeoutDuration: 5_000, cacheMaxAge: 10 * 60_000 });
  let lastGood: { keys: JWTVerifyGetKey; uat: string } | undefined;
  return async (header, token) => {
    try {
      const key = await remote(header, token);
      const jwks = remote.jwks();
      const uat = JSON.stringify(jwks);
      if (jwks && lastGood?.uat !== uat) lastGood = { keys: createLocalJWKSet(jwks), uat };
      return key;
    } catch (err) {
      if (!lastGood || !isFetchFailure(err)) throw err;
      try {
        return await lastGood.keys(header, token);
      } catch {
        // A kid we never saw while the issuer is unreachable may be a new key: retryable, not a rejection.
        throw err;
      }
    }
  };
}

interface KubernetesClaims {
  namespace?: unknown;
  serviceaccount?: { name?: unknown; uid?: unknown };
  pod?: { name?: unknown; uid?: unknown };
}

/**
 * Verifies Kubernetes projected service-account tokens locally with jose against the issuer's
 * JWKS: signature, iss, aud, exp/nbf. The remote JWKS is cached and refetched on an unknown kid.
 */
export class JwtAuthenticator implements Authenticator {
  readonly name = 'jwt';
  private readonly keys: JWTVerifyGetKey;
  /** Tokens already verified, until their exp (see VerifiedTokenCache). */
  readonly verified: VerifiedTokenCache;

  constructor(private readonly options: JwtAuthenticatorOptions) {
    this.verified = new VerifiedTokenCache(options.verifiedTokenCacheSize ?? 10_000);
    if (options.jwksFile) this.keys = fileKeySet(options.jwksFile);
    else if (options.jwksUri) this.keys = remoteKeySet(options.jwksUri, options.jwksCooldownMs);
    else throw new Error('JwtAuthenticator needs a JWKS file or URI');
  }

  async authenticate(creds: CallCredentials): Promise<Caller | undefined> {
    const token = bearerToken(creds);
    if (token === undefined) return undefined;
    const cacheKey = VerifiedTokenCache.keyOf(token);
    const cached = this.verified.get(cacheKey);
    if (cached) return cached;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        issuer: this.options.issuer,
        audience: this.options.audience,
        clockTolerance: Math.min(this.options.clockToleranceSeconds ?? 60, 60),
      }));
    } catch (err) {
      throw this.describe(err);
    }
    const caller = this.callerFrom(payload);
    if (typeof payload.exp === 'number') this.verified.set(cacheKey, caller, payload.exp * 1000);
    return caller;
  }

  private callerFrom(payload: JWTPayload): Caller {
    const k8s = (payload['kubernetes.io'] ?? {}) as KubernetesClaims;
    const notServiceAccount = () =>
      new AuthError('unauthenticated', 'token subject is not a Kubernetes service account (want sub "system:serviceaccount:<ns>:<sa>")');
    const claimed =
      typeof k8s.namespace === 'string' && typeof k8s.serviceaccount?.name === 'string' ? [k8s.namespace, k8s.serviceaccount.name] : undefined;
    let ns: string;
    let sa: string;
    if (payload.sub !== undefined) {
      // A Kubernetes token always has sub; its kubernetes.io claims, when present, must agree with it.
      const fromSub = parseServiceAccountUsername(payload.sub);
      if (!fromSub) throw notServiceAccount();
      [ns, sa] = fromSub;
      if (claimed && (claimed[0] !== ns || claimed[1] !== sa)) {
        throw new AuthError('unauthenticated', 'token kubernetes.io claims do not match its subject');
      }
    } else if (claimed && isKubernetesName(claimed[0]!) && isKubernetesName(claimed[1]!)) {
      [ns, sa] = claimed as [string, string];
    } else {
      throw notServiceAccount();
    }
    return {
      identity: spiffeId(this.options.trustDomain, ns, sa),
      namespace: ns,
      serviceAccount: sa,
      podName: typeof k8s.pod?.name === 'string' ? k8s.pod.name : undefined,
      podUid: typeof k8s.pod?.uid === 'string' ? k8s.pod.uid : undefined,
      authenticator: this.name,
    };
  }

  /** A caller-facing reason that names the failed check and never echoes the token. */
  private describe(err: unknown): AuthError {
    const e = joseErrors;
    if (err instanceof AuthError) return err;
    if (err instanceof e.JWTExpired) return new AuthError('unauthenticated', 'token has expired');
    if (err instanceof e.JWTClaimValidationFailed) {
      switch (err.claim) {
        case 'iss':
          return new AuthError('unauthenticated', `token issuer is not trusted (want "${this.options.issuer}")`);
        case 'aud':
          return new AuthError('unauthenticated', `token audience does not include "${this.options.audience}"`);
        case 'nbf':
          return new AuthError('unauthenticated', 'token is not valid yet (nbf)');
        case 'iat':
          return new AuthError('unauthenticated', 'token issued-at time is invalid');
        default:
          return new AuthError('unauthenticated', `token claim "${err.claim}" is invalid`);
      }
    }
    if (err instanceof e.JWSSignatureVerificationFailed) return new AuthError('unauthenticated', 'token signature does not verify');
    if (err instanceof e.JWKSNoMatchingKey) return new AuthError('unauthenticated', 'token is signed by a key the issuer does not publish');
    if (err instanceof e.JOSEAlgNotAllowed || err instanceof e.JOSENotSupported) {
      return new AuthError('unauthenticated', 'token signature algorithm is not supported');
    }
    if (err instanceof e.JWTInvalid || err instanceof e.JWSInvalid || err instanceof e.JWKSMultipleMatchingKeys) {
      return new AuthError('unauthenticated', 'token is malformed (not a signed JWT)');
    }
    if (isFetchFailure(err) || isNetworkError(err)) {
      return new AuthError('unavailable', 'token keys cannot be fetched from the issuer right now; retry');
    }
    return new AuthError('unauthenticated', 'token cannot be verified');
  }
}

function isNetworkError(err: unknown): boolean {
  const code = (err as { code?: unknown; cause?: { code?: unknown } })?.cause?.code ?? (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|UND_ERR)/.test(code);
}
