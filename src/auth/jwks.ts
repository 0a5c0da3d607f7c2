import { createHash, createPublicKey, type JsonWebKey } from 'node:crypto';
import { FollowedFile } from '../watch/index.js';

/** JWS algorithms (RFC 7518) accepted on service-account tokens: asymmetric only, never `none` or HMAC. */
export const TOKEN_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
const RSA_ALGORITHMS = TOKEN_ALGORITHMS.filter((a) => a.startsWith('RS') || a.startsWith('PS'));
const EC_ALGORITHM: Record<string, string> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' };
/** As jose and RFC 7518 section 3.3: an RSA key below 2048 bits is not used. */
const MIN_RSA_BITS = 2048;
/** A JWKS document larger than this is refused (Kubernetes publishes a few keys, ~1 KiB each). */
const MAX_JWKS_BYTES = 1024 * 1024;

/** One usable public key of an issuer's JWKS. */
export interface JwksKey {
  kid: string | undefined;
  /** The JWS algorithms this key may verify: its `alg` when given, else every one its type allows. */
  algorithms: readonly string[];
  /** SHA-256 of the key's SPKI DER, hex: the key's identity across reloads (kids may be reused). */
  fingerprint: string;
  /** SPKI PEM, as fast-jwt takes a static key. */
  pem: string;
}

export interface KeySet {
  keys: readonly JwksKey[];
  /** Keys of the document that are not used, each with why (symmetric, encryption-only, too short...). */
  skipped: string[];
}

/** A JWKS document cannot be used at all: not JSON, or no `keys` array. */
export class JwksError extends Error {
  override name = 'JwksError';
}

/** The issuer's keys cannot be fetched right now and no usable answer is at hand: retryable. */
export class JwksUnavailableError extends Error {
  override name = 'JwksUnavailableError';
}

const keyName = (jwk: { kid?: unknown }, i: number) => (typeof jwk.kid === 'string' ? `kid "${jwk.kid.slice(0, 64)}"` : `key #${i}`);

function algorithmsOf(jwk: JsonWebKey & { alg?: unknown; use?: unknown }, bits: number | undefined): string[] | string {
  let allowed: string[];
  if (jwk.kty === 'RSA') {
    if (bits !== undefined && bits < MIN_RSA_BITS) return `RSA key of ${bits} bits (at least ${MIN_RSA_BITS})`;
    allowed = RSA_ALGORITHMS;
  } else if (jwk.kty === 'EC' && typeof jwk.crv === 'string' && EC_ALGORITHM[jwk.crv]) allowed = [EC_ALGORITHM[jwk.crv]!];
  else if (jwk.kty === 'OKP' && (jwk.crv === 'Ed25519' || jwk.crv === 'Ed448')) allowed = ['EdDSA'];
  else return `unsupported key type ${String(jwk.kty)}${jwk.crv ? `/${String(jwk.crv)}` : ''}`;
  if (jwk.use !== undefined && jwk.use !== 'sig') return `"use" is ${JSON.stringify(jwk.use)}, not "sig"`;
  if (jwk.alg === undefined) return allowed;
  return typeof jwk.alg === 'string' && allowed.includes(jwk.alg) ? [jwk.alg] : `"alg" ${JSON.stringify(jwk.alg)} does not fit the key`;
}

/**
 * Reads a JWKS (RFC 7517 section 5) into usable verification keys, imported with node:crypto.
 * Keys that cannot verify tokens (symmetric, `use` other than `sig`, `alg` not fitting the key,
 * RSA under 2048 bits, unknown types) are skipped and named in `skipped`, as jose skips them.
 * Throws JwksError when the document is not JSON or has no `keys` array.
 */
export function parseJwks(text: string): KeySet {
  if (text.length > MAX_JWKS_BYTES) throw new JwksError(`larger than ${MAX_JWKS_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new JwksError(`not JSON (${(err as Error).message})`);
  }
  const list = (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list)) throw new JwksError('not a JWKS: want a JSON object with a "keys" array');
  const keys: JwksKey[] = [];
  const skipped: string[] = [];
  list.forEach((jwk: unknown, i) => {
    if (!jwk || typeof jwk !== 'object') return void skipped.push(`key #${i}: not an object`);
    const j = jwk as JsonWebKey & { kid?: unknown; alg?: unknown; use?: unknown };
    if (j.kty === 'oct') return void skipped.push(`${keyName(j, i)}: symmetric key`);
    try {
      const publicJwk = Object.fromEntries(Object.entries(j).filter(([k]) => ['kty', 'crv', 'x', 'y', 'n', 'e'].includes(k))) as JsonWebKey;
      const key = createPublicKey({ key: publicJwk, format: 'jwk' });
      const algorithms = algorithmsOf(j, key.asymmetricKeyDetails?.modulusLength);
      if (typeof algorithms === 'string') return void skipped.push(`${keyName(j, i)}: ${algorithms}`);
      const der = key.export({ type: 'spki', format: 'der' });
      keys.push({
        kid: typeof j.kid === 'string' ? j.kid : undefined,
        algorithms,
        fingerprint: createHash('sha256').update(der).digest('hex'),
        pem: key.export({ type: 'spki', format: 'pem' }) as string,
      });
    } catch (err) {
      skipped.push(`${keyName(j, i)}: ${(err as Error).message}`);
    }
  });
  return { keys, skipped };
}

/** What a reload of the key set did; `added`/`removed` name keys by kid (or fingerprint prefix). */
export type KeySetReload =
  | { source: string; result: 'success'; keys: number; added: string[]; removed: string[]; skipped: string[] }
  | { source: string; result: 'failure'; error: Error };

/**
 * Called by a key source whenever it (re)loads: `removedFingerprints` lists keys that left the set. A
 * re-read that finds the same file content (good or bad) is not reported, so the latest call's `result`
 * is the state of the key source until the next call (svid_ca_jwks_last_reload_failed rests on this).
 */
export type KeySetListener = (reload: KeySetReload, removedFingerprints: ReadonlySet<string>) => void;

/** Where the authenticator gets the issuer's keys from. */
export interface KeySource {
  /**
   * The current key set. `kid` is the token's key id: a source may refresh when it does not know it
   * (key rotation). Throws JwksUnavailableError when it has no answer and the issuer cannot be reached.
   */
  keys(kid: string | undefined): KeySet | Promise<KeySet>;
  close(): void;
}

const label = (k: JwksKey) => (k.kid !== undefined ? k.kid : `sha256:${k.fingerprint.slice(0, 16)}`);

const sameKey = (a: JwksKey, b: JwksKey) => a.kid === b.kid && a.algorithms.join() === b.algorithms.join();

/**
 * What replacing `current` by `next` adds and removes (by fingerprint), and the set to use: keys
 * that did not change are carried over as the same objects, so verifiers built for them stay.
 */
function diff(source: string, current: KeySet | undefined, next: KeySet): { set: KeySet; reload: KeySetReload; removed: Set<string> } {
  const before = new Map((current?.keys ?? []).map((k) => [k.fingerprint, k]));
  const after = new Set(next.keys.map((k) => k.fingerprint));
  const removed = [...before.values()].filter((k) => !after.has(k.fingerprint));
  const added = next.keys.filter((k) => !before.has(k.fingerprint));
  const keys = next.keys.map((k) => {
    const old = before.get(k.fingerprint);
    return old && sameKey(old, k) ? old : k;
  });
  return {
    set: { keys, skipped: next.skipped },
    reload: { source, result: 'success', keys: next.keys.length, added: added.map(label), removed: removed.map(label), skipped: next.skipped },
    removed: new Set(removed.map((k) => k.fingerprint)),
  };
}

export interface FileKeySourceOptions {
  path: string;
  /** Poll the file this often besides watching its folder (--reload-interval), milliseconds. */
  pollIntervalMs: number;
  /** Minimum time between re-reads caused by a token naming an unknown kid, milliseconds (default 5 s). */
  cooldownMs?: number | undefined;
  debounceMs?: number | undefined;
}

/**
 * The key set of a JWKS file (--jwks-file), replaced as soon as the file changes: fs.watch on its
 * folder (which sees Kubernetes' `..data` symlink swap) plus a poll every `pollIntervalMs`, so a
 * removed key stops verifying within one poll interval at most. A file that stops parsing keeps
 * the last good set and is reported once per content. Throws at construction when the file
 * cannot be read or parsed (startup must not go on without keys).
 */
export class FileKeySource implements KeySource {
  private current: KeySet;
  private lastReread = 0;
  private readonly file: FollowedFile<KeySetReload>;

  constructor(
    private readonly options: FileKeySourceOptions,
    private readonly listener: KeySetListener,
  ) {
    this.file = new FollowedFile(options, {
      unreadable: (err) => new JwksError(`JWKS file ${options.path}: cannot be read (${err.code ?? err.message})`),
      apply: (text) => this.swap(this.parse(text)),
      failed: (error) => {
        const reload: KeySetReload = { source: options.path, result: 'failure', error };
        this.listener(reload, new Set());
        return reload;
      },
    });
    const text = this.file.read();
    this.current = this.parse(text);
    listener(diff(options.path, undefined, this.current).reload, new Set());
    this.file.follow(text);
  }

  keys(kid: string | undefined): KeySet {
    if (kid !== undefined && !this.current.keys.some((k) => k.kid === kid) && Date.now() - this.lastReread >= (this.options.cooldownMs ?? 5_000)) {
      // A watch event may be late or lost (network filesystems): a new kid is worth one early look.
      this.lastReread = Date.now();
      this.check();
    }
    return this.current;
  }

  /** Re-reads the file; swaps the key set in when its content changed and parses. Returns what happened. */
  check(): KeySetReload | undefined {
    return this.file.check();
  }

  close(): void {
    this.file.stop();
  }

  private parse(text: string): KeySet {
    try {
      return parseJwks(text);
    } catch (err) {
      throw new JwksError(`JWKS file ${this.options.path}: ${(err as Error).message}`);
    }
  }

  private swap(next: KeySet): KeySetReload {
    const { set, reload, removed } = diff(this.options.path, this.current, next);
    this.current = set;
    this.listener(reload, removed);
    return reload;
  }
}

export interface RemoteKeySourceOptions {
  uri: string;
  /** Refetch this often (--jwks-refresh-interval), milliseconds; a shorter `Cache-Control: max-age` wins. */
  refreshIntervalMs: number;
  /** Minimum time between fetches caused by an unknown kid or by failures, milliseconds (default 5 s). */
  cooldownMs?: number | undefined;
  /** Give up on one fetch after this long, milliseconds (default 5 s). */
  timeoutMs?: number | undefined;
}

/** The shortest refresh a `Cache-Control: max-age` can ask for: an issuer saying max-age=0 is not fetched in a loop. */
export const MIN_REFRESH_MS = 1_000;
/** After a failed fetch, the next try comes this soon (or at the refresh interval, if shorter). */
const RETRY_AFTER_FAILURE_MS = 30_000;

/** `max-age` of a Cache-Control header, milliseconds; undefined when absent. */
export function maxAgeMs(cacheControl: string | null): number | undefined {
  const m = cacheControl ? /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)/i.exec(cacheControl) : null;
  return m ? Number(m[1]) * 1000 : undefined;
}

/**
 * The key set of a JWKS URL (--jwks-uri): fetched on first use, refetched every refresh interval
 * (or the response's `Cache-Control: max-age` when shorter, at least MIN_REFRESH_MS) and on a
 * token naming an unknown kid (after a cooldown). The last good set is kept while the issuer
 * cannot be reached: tokens of known keys still verify; with nothing ever fetched, or an unknown
 * kid while the issuer is unreachable, keys() throws JwksUnavailableError (agents retry).
 */
export class RemoteKeySource implements KeySource {
  private current: KeySet | undefined;
  private inFlight: Promise<void> | undefined;
  private lastAttempt = 0;
  private lastFailed = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly options: RemoteKeySourceOptions,
    private readonly listener: KeySetListener,
  ) {}

  async keys(kid: string | undefined): Promise<KeySet> {
    const cooledDown = Date.now() - this.lastAttempt >= (this.options.cooldownMs ?? 5_000);
    if (!this.current) {
      if (cooledDown || this.inFlight) await this.refresh();
      if (!this.current) throw new JwksUnavailableError(`JWKS ${this.options.uri} has not been fetched`);
      return this.current;
    }
    if (kid !== undefined && !this.current.keys.some((k) => k.kid === kid)) {
      if (cooledDown || this.inFlight) await this.refresh();
      // A kid never seen while the issuer is unreachable may be a new key: retryable, not a rejection.
      if (this.lastFailed && !this.current.keys.some((k) => k.kid === kid)) throw new JwksUnavailableError(`JWKS ${this.options.uri} cannot be fetched`);
    }
    return this.current;
  }

  /** Fetches now (joining a fetch in flight) and schedules the next one. */
  refresh(): Promise<void> {
    this.inFlight ??= this.fetchOnce().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private async fetchOnce(): Promise<void> {
    this.lastAttempt = Date.now();
    let nextMs = this.options.refreshIntervalMs;
    try {
      const res = await fetch(this.options.uri, {
        headers: { accept: 'application/json' },
        redirect: 'manual',
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 5_000),
      });
      const text = await res.text();
      if (res.status !== 200) throw new JwksError(`JWKS ${this.options.uri}: HTTP ${res.status}`);
      let next: KeySet;
      try {
        next = parseJwks(text);
      } catch (err) {
        throw new JwksError(`JWKS ${this.options.uri}: ${(err as Error).message}`);
      }
      const maxAge = maxAgeMs(res.headers.get('cache-control'));
      if (maxAge !== undefined) nextMs = Math.min(nextMs, Math.max(maxAge, MIN_REFRESH_MS));
      const { set, reload, removed } = diff(this.options.uri, this.current, next);
      this.current = set;
      this.lastFailed = false;
      this.listener(reload, removed);
    } catch (err) {
      this.lastFailed = true;
      nextMs = Math.min(nextMs, RETRY_AFTER_FAILURE_MS);
      const error = err instanceof JwksError ? err : new JwksError(`JWKS ${this.options.uri}: ${describeFetchError(err)}`);
      this.listener({ source: this.options.uri, result: 'failure', error }, new Set());
    }
    if (!this.closed) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.refresh(), nextMs);
      this.timer.unref();
    }
  }
}

function describeFetchError(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') return 'no answer in time';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}
