import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { bearerToken } from './jwt.js';
import { parseServiceAccountUsername, spiffeId } from './spiffe.js';
import { AuthError, type Authenticator, type CallCredentials, type Caller } from './types.js';

/** The fields of a TokenReview status that authentication needs (authentication.k8s.io/v1). */
export interface TokenReviewStatus {
  authenticated?: boolean | undefined;
  user?: { username?: string | undefined; groups?: string[] | undefined; extra?: Record<string, string[]> | undefined } | undefined;
  audiences?: string[] | undefined;
  error?: string | undefined;
}

/**
 * Sends one TokenReview. Resolves with the status the API server returned; rejects (with a
 * message that never contains the token) only when the API server could not give an answer.
 */
export interface TokenReviewer {
  review(token: string, audiences: string[]): Promise<TokenReviewStatus>;
}

export interface TokenReviewAuthenticatorOptions {
  reviewer: TokenReviewer;
  audiences: string[];
  /** issue #18: a function for a remote cluster, whose trust domain follows --jwt-issuers-file. */
  trustDomain: string | (() => string);
  /** issue #18: the cluster whose API server this reviewer asks; set on its callers. */
  clusterId?: string | undefined;
  /** Positive results are kept this long at most (--token-review-cache-ttl). */
  cacheTtlMs: number;
  /** TokenReviews in flight at most (--token-review-concurrency). */
  concurrency: number;
  /** Bound on cached tokens; the oldest entry goes first. */
  maxCacheEntries?: number;
  /** How long a call may wait for a TokenReview slot before it gets UNAVAILABLE. */
  maxQueueWaitMs?: number;
  clock?: () => number;
}

const POD_NAME = 'authentication.kubernetes.io/pod-name';
const POD_UID = 'authentication.kubernetes.io/pod-uid';
const SERVICE_ACCOUNTS_GROUP = 'system:serviceaccounts';

/** A FIFO counting semaphore: a mass restart queues here instead of flooding the API server. */
export class ConcurrencyLimit {
  private active = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error('concurrency limit must be a positive integer');
  }

  get inFlight(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiters.length;
  }

  async run<T>(fn: () => Promise<T>, maxWaitMs: number): Promise<T> {
    if (this.active >= this.limit) {
      await new Promise<void>((resolve, reject) => {
        const grant = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          const i = this.waiters.indexOf(grant);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new AuthError('unavailable', `too many TokenReviews in flight (limit ${this.limit}); retry`));
        }, maxWaitMs);
        this.waiters.push(grant);
      });
    } else {
      this.active++;
    }
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      // Hand the slot straight to the next waiter, so `active` never exceeds the limit.
      if (next) next();
      else this.active--;
    }
  }
}

/**
 * Authenticates bearer tokens with the Kubernetes TokenReview API, as istiod's KubeJWTAuthenticator
 * does: revoked tokens (deleted pods) are refused, which local JWT verification cannot see.
 * Positive answers are cached by SHA-256 of the token until the earlier of its exp and the cache
 * TTL; errors and refusals are never cached. Identical tokens in flight share one review.
 */
export class TokenReviewAuthenticator implements Authenticator {
  readonly name = 'token-review';
  private readonly cache = new Map<string, { caller: Caller; expiresAt: number }>();
  private readonly pending = new Map<string, Promise<Caller>>();
  private readonly limit: ConcurrencyLimit;
  private readonly clock: () => number;

  constructor(private readonly options: TokenReviewAuthenticatorOptions) {
    this.limit = new ConcurrencyLimit(options.concurrency);
    this.clock = options.clock ?? Date.now;
  }

  /** TokenReviews currently in flight (for tests and debugging). */
  get inFlight(): number {
    return this.limit.inFlight;
  }

  async authenticate(creds: CallCredentials): Promise<Caller | undefined> {
    const token = bearerToken(creds);
    if (token === undefined) return undefined;
    const key = createHash('sha256').update(token).digest('hex');
    const now = this.clock();
    const hit = this.cache.get(key);
    if (hit && hit.expiresAt > now) return hit.caller;
    if (hit) this.cache.delete(key);
    let review = this.pending.get(key);
    if (!review) {
      review = this.review(token, key).finally(() => this.pending.delete(key));
      this.pending.set(key, review);
    }
    return review;
  }

  private async review(token: string, key: string): Promise<Caller> {
    let status: TokenReviewStatus;
    try {
      status = await this.limit.run(() => this.options.reviewer.review(token, this.options.audiences), this.options.maxQueueWaitMs ?? 10_000);
    } catch (err) {
      if (err instanceof AuthError) throw err;
      throw new AuthError('unavailable', `TokenReview could not be completed: ${err instanceof Error ? err.message : String(err)}; retry`);
    }
    const caller = this.callerFrom(status);
    this.remember(key, token, caller);
    return caller;
  }

  private callerFrom(status: TokenReviewStatus): Caller {
    if (status.authenticated !== true) {
      const why = status.error ? `: ${status.error.slice(0, 300)}` : '';
      throw new AuthError('unauthenticated', `TokenReview: the API server did not authenticate the token${why}`);
    }
    const audiences = status.audiences;
    if (audiences && audiences.length > 0 && !audiences.some((a) => this.options.audiences.includes(a))) {
      throw new AuthError('unauthenticated', `TokenReview: token audience does not include ${this.options.audiences.map((a) => `"${a}"`).join(' or ')}`);
    }
    const user = status.user ?? {};
    if (!(user.groups ?? []).includes(SERVICE_ACCOUNTS_GROUP)) {
      throw new AuthError('unauthenticated', `TokenReview: the token's user is not in group ${SERVICE_ACCOUNTS_GROUP}; a service-account token is needed`);
    }
    const parsed = parseServiceAccountUsername(user.username ?? '');
    if (!parsed) {
      throw new AuthError('unauthenticated', 'TokenReview: the token user is not a service account (want "system:serviceaccount:<ns>:<sa>")');
    }
    const [namespace, serviceAccount] = parsed;
    const extra = user.extra ?? {};
    return {
      identity: spiffeId(typeof this.options.trustDomain === 'string' ? this.options.trustDomain : this.options.trustDomain(), namespace, serviceAccount),
      namespace,
      serviceAccount,
      podName: extra[POD_NAME]?.[0],
      podUid: extra[POD_UID]?.[0],
      authenticator: this.name,
      ...(this.options.clusterId !== undefined ? { clusterId: this.options.clusterId } : {}),
    };
  }

  private remember(key: string, token: string, caller: Caller): void {
    const now = this.clock();
    let expiresAt = now + this.options.cacheTtlMs;
    try {
      const exp = decodeJwt(token).exp;
      if (typeof exp === 'number') expiresAt = Math.min(expiresAt, exp * 1000);
    } catch {
      // Not a JWT the API server still accepted (e.g. a webhook token): the TTL alone bounds it.
    }
    if (expiresAt <= now) return;
    const max = this.options.maxCacheEntries ?? 10_000;
    while (this.cache.size >= max) {
      const oldest = this.cache.keys().next().value;
      if (oldest === undefined) break;
      this.cache.delete(oldest);
    }
    this.cache.set(key, { caller, expiresAt });
  }
}

/**
 * issue #18: TokenReview against the API server of the call's cluster (CallCredentials.cluster, set
 * by authenticateCall): `reviewerFor` gives that cluster's authenticator (its own cache and
 * concurrency limit), or undefined when the cluster has no API server configured, in which case
 * this authenticator does not vouch (another may). A cluster whose API server is down fails only
 * its own calls (UNAVAILABLE).
 */
export class ClusterTokenReview implements Authenticator {
  readonly name = 'token-review';

  constructor(private readonly reviewerFor: (cluster: string) => Authenticator | undefined) {}

  async authenticate(creds: CallCredentials): Promise<Caller | undefined> {
    const reviewer = this.reviewerFor(creds.cluster ?? '');
    if (!reviewer) {
      if (bearerToken(creds) === undefined) return undefined;
      throw new AuthError('unauthenticated', `TokenReview: no Kubernetes API server is configured for cluster "${creds.cluster ?? ''}" (add its kubeconfig to --remote-kubeconfig-dir)`);
    }
    return reviewer.authenticate(creds);
  }
}
