import { hash } from 'node:crypto';
import { createVerifier, TokenError } from 'fast-jwt';
import { MAX_CLAIM_PAYLOAD_CHARS, namespaceClaim } from './claimed-namespace.js';
import { FileKeySource, JwksUnavailableError, RemoteKeySource, TOKEN_ALGORITHMS, type JwksKey, type KeySetListener, type KeySetReload, type KeySource } from './jwks.js';
import { isKubernetesName, parseServiceAccountUsername, spiffeId } from './spiffe.js';
import { AuthError, type Authenticator, type BearerKey, type CallCredentials, type Caller } from './types.js';

export interface JwtAuthenticatorOptions {
  issuer: string;
  /** The token must carry this audience (or one of these: an --jwt-issuers-file entry's audiences). */
  audience: string | string[];
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
  /** --jwks-file: poll the file this often besides watching its folder (--reload-interval), milliseconds. Default 10 s. */
  reloadIntervalMs?: number | undefined;
  /** --jwks-uri: refetch this often (--jwks-refresh-interval), milliseconds; a shorter Cache-Control max-age wins. Default 5 min. */
  jwksRefreshIntervalMs?: number | undefined;
  /** Told of every load of the key set (metrics, logs); the authenticator itself has no logger. */
  onKeySetReload?: ((reload: KeySetReload) => void) | undefined;
}

/** A token without kid is tried against at most this many keys of its alg (issue #12). */
export const MAX_KIDLESS_CANDIDATES = 8;

/**
 * Verified tokens by the SHA-256 of the token, each until its own exp (without clock tolerance).
 * An agent presents the same token on every retry and rotation until kubelet refreshes it, and a
 * signature check costs tens of us while a hash costs ~1 us. Bounded: at capacity the oldest entry
 * goes. Holds no token: only its hash, the Caller it proved and the fingerprint of the key that
 * verified it. The cache never outlives that key: when it leaves the issuer's key set, every
 * token it verified is dropped (dropVerifiedBy) and must verify again.
 */
export class VerifiedTokenCache {
  readonly #entries = new Map<string, { caller: Caller; expiresAtMs: number; verifiedBy: string; claim: BearerKey['namespace'] }>();

  constructor(readonly maxEntries: number) {}

  /** SHA-256 of the token, base64: the one-shot crypto.hash (~1.2 us for a Kubernetes token against ~2.3 us for a Hash object). */
  static keyOf(token: string): string {
    return hash('sha256', token, 'base64');
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

  /**
   * Remembers a verified token until expiresAtMs (epoch ms); verifiedBy is the key's fingerprint, claim
   * the namespace the token claims for the admission queue's order (BearerKey.namespace), when known.
   */
  set(key: string, caller: Caller, expiresAtMs: number, nowMs: number = Date.now(), verifiedBy = '', claim?: BearerKey['namespace']): void {
    if (this.maxEntries <= 0 || expiresAtMs <= nowMs) return;
    if (this.#entries.size >= this.maxEntries && !this.#entries.has(key)) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(key, { caller: { ...caller }, expiresAtMs, verifiedBy, claim });
  }

  /**
   * issue #14: the namespace claim stored with the token of cache key `key`, undefined when none is.
   * Read without the expiry check or removal of get(): the claim is a function of the token's bytes
   * alone (so still right for an expired entry), and is used only to order work.
   */
  claimOf(key: string): BearerKey['namespace'] {
    return this.#entries.get(key)?.claim;
  }

  /** Forgets every token verified by one of these key fingerprints; returns how many went. */
  dropVerifiedBy(fingerprints: ReadonlySet<string>): number {
    if (fingerprints.size === 0) return 0;
    let dropped = 0;
    for (const [key, entry] of this.#entries) {
      if (fingerprints.has(entry.verifiedBy)) {
        this.#entries.delete(key);
        dropped++;
      }
    }
    return dropped;
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

/**
 * The bearer token of `authorization` (the call's authorization header values) as bearerToken() reads it, or
 * undefined when there is none or bearerToken() refuses it (the authenticators report that one in their turn).
 */
export function acceptedBearerToken(authorization: string[]): string | undefined {
  try {
    return bearerToken({ authorization, clusterId: [] });
  } catch {
    return undefined;
  }
}

/**
 * issue #14: the call's bearer token and its verified-token-cache key, with the namespace claim one of
 * `authenticators` has cached for it (Authenticator.cachedClaim); undefined when none of them keeps a
 * verified-token cache, or the call has no bearer token bearerToken() accepts (the authenticators
 * report that one in their turn). The token is hashed here once per call; the JWT authenticator
 * reuses the key through CallCredentials.bearer.
 */
export function bearerKey(authenticators: readonly Authenticator[], authorization: string[]): BearerKey | undefined {
  if (!authenticators.some((a) => a.cachedClaim !== undefined)) return undefined;
  const token = acceptedBearerToken(authorization);
  if (token === undefined) return undefined;
  const key = VerifiedTokenCache.keyOf(token);
  for (const authenticator of authenticators) {
    const namespace = authenticator.cachedClaim?.(key);
    if (namespace) return { token, key, namespace };
  }
  return { token, key };
}

interface KubernetesClaims {
  namespace?: unknown;
  serviceaccount?: { name?: unknown; uid?: unknown };
  pod?: { name?: unknown; uid?: unknown };
}

type Claims = Record<string, unknown> & { sub?: unknown; exp?: unknown; iat?: unknown };
type Verify = (token: string) => Claims;

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const SUPPORTED = new Set<string>(TOKEN_ALGORITHMS);
const malformed = () => new AuthError('unauthenticated', 'token is malformed (not a signed JWT)');

/**
 * The protected header's alg and kid (RFC 7515 section 4.1), read before any key is chosen, and the
 * length of the payload segment (base64url characters).
 */
function readHeader(token: string): { alg: string; kid: string | undefined; payloadChars: number } {
  const dot = token.indexOf('.');
  const segment = dot > 0 ? token.slice(0, dot) : '';
  // Exactly three segments (two dots), counted without splitting the token into strings.
  const second = dot > 0 ? token.indexOf('.', dot + 1) : -1;
  if (!BASE64URL.test(segment) || second < 0 || token.indexOf('.', second + 1) >= 0) throw malformed();
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw malformed();
  }
  const { alg, kid } = (header ?? {}) as { alg?: unknown; kid?: unknown };
  if (typeof header !== 'object' || Array.isArray(header) || typeof alg !== 'string' || (kid !== undefined && typeof kid !== 'string')) throw malformed();
  return { alg, kid: kid as string | undefined, payloadChars: second - dot - 1 };
}

/**
 * Verifies Kubernetes projected service-account tokens locally against the issuer's JWKS:
 * signature (fast-jwt over node:crypto, synchronous; one verifier per key, its KeyObject made
 * once), iss, aud, exp (required, as Istio requires it) and nbf with at most 60 s of clock skew.
 * The key is chosen by the token's kid; a token without kid is tried against the keys of its alg
 * (at most MAX_KIDLESS_CANDIDATES). The key set follows the file or URL (see jwks.ts); a key that
 * leaves it takes the tokens it verified out of the verified-token cache.
 */
export class JwtAuthenticator implements Authenticator {
  readonly name = 'jwt';
  private readonly source: KeySource;
  private readonly verifiers = new WeakMap<JwksKey, Verify>();
  /** Tokens already verified, until their exp (see VerifiedTokenCache). */
  readonly verified: VerifiedTokenCache;

  constructor(private readonly options: JwtAuthenticatorOptions) {
    this.verified = new VerifiedTokenCache(options.verifiedTokenCacheSize ?? 10_000);
    const listener: KeySetListener = (reload, removed) => {
      this.verified.dropVerifiedBy(removed);
      options.onKeySetReload?.(reload);
    };
    if (options.jwksFile) {
      this.source = new FileKeySource({ path: options.jwksFile, pollIntervalMs: options.reloadIntervalMs ?? 10_000, cooldownMs: options.jwksCooldownMs }, listener);
    } else if (options.jwksUri) {
      this.source = new RemoteKeySource({ uri: options.jwksUri, refreshIntervalMs: options.jwksRefreshIntervalMs ?? 5 * 60_000, cooldownMs: options.jwksCooldownMs }, listener);
    } else throw new Error('JwtAuthenticator needs a JWKS file or URI');
  }

  /** Stops watching the JWKS file / refetching the JWKS URL. */
  close(): void {
    this.source.close();
  }

  async authenticate(creds: CallCredentials): Promise<Caller | undefined> {
    const token = bearerToken(creds);
    if (token === undefined) return undefined;
    // The key computed for the admission queue's lookup (bearerKey), when it is this very token's.
    const bearer = creds.bearer?.token === token ? creds.bearer : undefined;
    const cacheKey = bearer?.key ?? VerifiedTokenCache.keyOf(token);
    const cached = this.verified.get(cacheKey);
    if (cached) return cached;
    const header = readHeader(token);
    let keys: readonly JwksKey[];
    try {
      keys = (await this.source.keys(header.kid)).keys;
    } catch (err) {
      if (err instanceof JwksUnavailableError) throw new AuthError('unavailable', 'token keys cannot be fetched from the issuer right now; retry');
      throw err;
    }
    const { payload, key } = this.verifyWith(keys, token, header);
    const caller = this.callerFrom(payload);
    // issue #14: the admission queue's claim, from the payload fast-jwt has just decoded (the same
    // rule as claimedNamespace, so not decoded a second time); handed back through creds.bearer.
    const claim = bearer?.namespace ?? { value: header.payloadChars <= MAX_CLAIM_PAYLOAD_CHARS ? namespaceClaim(payload) : undefined };
    if (bearer) bearer.namespace = claim;
    this.verified.set(cacheKey, caller, (payload.exp as number) * 1000, Date.now(), key.fingerprint, claim);
    return caller;
  }

  /** issue #14: see Authenticator.cachedClaim. */
  cachedClaim(tokenKey: string): BearerKey['namespace'] {
    return this.verified.claimOf(tokenKey);
  }

  /** Verifies the token with the key its header names, or with each key of its alg when it names none. */
  private verifyWith(keys: readonly JwksKey[], token: string, header: { alg: string; kid: string | undefined }): { payload: Claims; key: JwksKey } {
    if (!SUPPORTED.has(header.alg)) throw new AuthError('unauthenticated', 'token signature algorithm is not supported');
    const candidates = keys.filter((k) => (header.kid === undefined || k.kid === header.kid) && k.algorithms.includes(header.alg));
    if (candidates.length === 0) throw new AuthError('unauthenticated', 'token is signed by a key the issuer does not publish');
    if (header.kid === undefined && candidates.length > MAX_KIDLESS_CANDIDATES) {
      throw new AuthError(
        'unauthenticated',
        `token has no kid and ${candidates.length} issuer keys use ${header.alg}: at most ${MAX_KIDLESS_CANDIDATES} are tried (have the issuer set kid)`,
      );
    }
    for (const key of candidates) {
      try {
        const payload = this.verifierFor(key)(token);
        return { payload: this.checkClaims(payload), key };
      } catch (err) {
        // Another key of the same kid or alg may still verify it; any other failure is the token's own.
        if (err instanceof TokenError && err.code === TokenError.codes.invalidSignature) continue;
        throw this.describe(err);
      }
    }
    if (header.kid === undefined) {
      const n = candidates.length;
      throw new AuthError('unauthenticated', `token signature does not verify with any of the ${n} issuer key${n === 1 ? '' : 's'} for ${header.alg} (the token has no kid)`);
    }
    throw new AuthError('unauthenticated', 'token signature does not verify');
  }

  private verifierFor(key: JwksKey): Verify {
    let verify = this.verifiers.get(key);
    if (!verify) {
      verify = createVerifier({
        key: key.pem,
        algorithms: key.algorithms as never,
        allowedIss: this.options.issuer,
        allowedAud: this.options.audience,
        requiredClaims: ['iss', 'aud', 'exp'],
        // fast-jwt counts tolerance in milliseconds.
        clockTolerance: Math.min(this.options.clockToleranceSeconds ?? 60, 60) * 1000,
        cache: false,
      }) as Verify;
      this.verifiers.set(key, verify);
    }
    return verify;
  }

  /** What fast-jwt leaves to the caller: claim types jose checked (iat, sub). */
  private checkClaims(payload: Claims): Claims {
    if (payload.iat !== undefined && (typeof payload.iat !== 'number' || !Number.isFinite(payload.iat))) {
      throw new AuthError('unauthenticated', 'token issued-at time is invalid');
    }
    if (payload.sub !== undefined && typeof payload.sub !== 'string') throw new AuthError('unauthenticated', 'token claim "sub" is invalid');
    return payload;
  }

  private callerFrom(payload: Claims): Caller {
    const k8s = (payload['kubernetes.io'] ?? {}) as KubernetesClaims;
    const notServiceAccount = () =>
      new AuthError('unauthenticated', 'token subject is not a Kubernetes service account (want sub "system:serviceaccount:<ns>:<sa>")');
    const claimed =
      typeof k8s.namespace === 'string' && typeof k8s.serviceaccount?.name === 'string' ? [k8s.namespace, k8s.serviceaccount.name] : undefined;
    let ns: string;
    let sa: string;
    if (payload.sub !== undefined) {
      // A Kubernetes token always has sub; its kubernetes.io claims, when present, must agree with it.
      const fromSub = parseServiceAccountUsername(payload.sub as string);
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
    if (err instanceof AuthError) return err;
    if (!(err instanceof TokenError)) return new AuthError('unauthenticated', 'token cannot be verified');
    const c = TokenError.codes;
    const claim = /\b(iss|aud|exp|nbf|iat|sub|jti)\b claim/.exec(err.message)?.[1];
    switch (err.code) {
      case c.expired:
        return new AuthError('unauthenticated', 'token has expired');
      case c.inactive:
        return new AuthError('unauthenticated', 'token is not valid yet (nbf)');
      case c.invalidSignature:
      case c.verifyError:
        return new AuthError('unauthenticated', 'token signature does not verify');
      case c.invalidAlgorithm:
        return new AuthError('unauthenticated', 'token signature algorithm is not supported');
      case c.missingRequiredClaim:
      case c.invalidClaimValue:
      case c.invalidClaimType:
        if (claim === 'iss') return new AuthError('unauthenticated', `token issuer is not trusted (want "${this.options.issuer}")`);
        if (claim === 'aud') {
          const want = typeof this.options.audience === 'string' ? `"${this.options.audience}"` : this.options.audience.map((a) => `"${a}"`).join(' or ');
          return new AuthError('unauthenticated', `token audience does not include ${want}`);
        }
        if (claim === 'exp' && err.code === c.missingRequiredClaim) return new AuthError('unauthenticated', 'token has no expiry (exp)');
        if (claim === 'nbf') return new AuthError('unauthenticated', 'token is not valid yet (nbf)');
        return new AuthError('unauthenticated', `token claim "${claim ?? 'unknown'}" is invalid`);
      default:
        // malformed, invalid payload, missing signature, unsupported crit header
        return malformed();
    }
  }
}
