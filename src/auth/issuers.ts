import { dirname, isAbsolute, resolve } from 'node:path';
import { load as loadYaml } from 'js-yaml';
import { FollowedFile } from '../watch/index.js';
import { bearerToken, JwtAuthenticator, type JwtAuthenticatorOptions } from './jwt.js';
import type { KeySetReload } from './jwks.js';
import { AuthError, type Authenticator, type CallCredentials, type Caller } from './types.js';

/**
 * One token issuer of a (possibly multi-cluster) mesh: an entry of --jwt-issuers-file, or the
 * single-issuer flags (--jwt-issuer with --jwks-file or --jwks-uri) read as a one-entry set.
 */
export interface IssuerEntry {
  /** The cluster whose tokens this issuer signs; undefined only for the single-issuer flags without --cluster-id. */
  clusterId: string | undefined;
  /** The tokens' `iss`, exactly. */
  issuer: string;
  /** Exactly one of jwksFile / jwksUri (a relative jwksFile is resolved against the issuers file's folder). */
  jwksFile?: string | undefined;
  jwksUri?: string | undefined;
  /** A token must carry one of these audiences. */
  audiences: string[];
  /** Trust domain of the SPIFFE IDs issued to this issuer's service accounts. */
  trustDomain: string;
}

/** --jwt-issuers-file cannot be used: names the file, the entry index and the field. */
export class IssuersFileError extends Error {
  override name = 'IssuersFileError';
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const FIELDS = new Set(['clusterId', 'issuer', 'jwksFile', 'jwksUri', 'audiences', 'trustDomain']);
/** An issuers file larger than this is refused (an entry is ~200 bytes). */
const MAX_ISSUERS_FILE_BYTES = 1024 * 1024;

/**
 * Parses a --jwt-issuers-file (YAML, or JSON, which is YAML): a top-level array of entries, or an
 * object `{issuers: [...]}`. Each entry: `clusterId` and `issuer` (non-empty strings), exactly one
 * of `jwksFile`/`jwksUri`, optional `audiences` (default `defaults.audiences`) and `trustDomain`
 * (default `defaults.trustDomain`). Throws IssuersFileError naming `source`, the entry index and the
 * field; an issuer listed twice, or one cluster given two trust domains, is refused too.
 */
export function parseIssuersFile(text: string, source: string, defaults: { trustDomain: string; audiences: string[] }): IssuerEntry[] {
  const fail = (what: string) => new IssuersFileError(`--jwt-issuers-file ${source}: ${what}`);
  if (text.length > MAX_ISSUERS_FILE_BYTES) throw fail(`larger than ${MAX_ISSUERS_FILE_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = loadYaml(text);
  } catch (err) {
    throw fail(`not YAML or JSON (${(err as Error).message.split('\n')[0]})`);
  }
  const list = Array.isArray(doc) ? doc : (doc as { issuers?: unknown } | null)?.issuers;
  if (!Array.isArray(list)) throw fail('want a list of issuers: a top-level array, or an object with an "issuers" array');
  if (list.length === 0) throw fail('the list of issuers is empty');
  const folder = dirname(source);
  const entries = list.map((raw: unknown, i): IssuerEntry => {
    const bad = (field: string, want: string) => fail(`entry #${i}: "${field}" ${want}`);
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw fail(`entry #${i}: not an object`);
    const e = raw as Record<string, unknown>;
    const unknown = Object.keys(e).find((k) => !FIELDS.has(k));
    if (unknown !== undefined) throw fail(`entry #${i}: unknown field "${unknown.slice(0, 64)}" (want ${[...FIELDS].join(', ')})`);
    const text = (field: string, required: boolean): string | undefined => {
      const v = e[field];
      if (v === undefined || v === null) {
        if (required) throw bad(field, 'is required');
        return undefined;
      }
      if (typeof v !== 'string' || v.trim() === '') throw bad(field, 'must be a non-empty string');
      return v;
    };
    const clusterId = text('clusterId', true)!;
    const issuer = text('issuer', true)!;
    const jwksFile = text('jwksFile', false);
    const jwksUri = text('jwksUri', false);
    if (!jwksFile === !jwksUri) throw fail(`entry #${i}: give exactly one of "jwksFile" and "jwksUri"`);
    if (jwksUri !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(jwksUri);
      } catch {
        url = undefined;
      }
      if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) throw bad('jwksUri', `is not an https:// URL ("${jwksUri.slice(0, 200)}")`);
    }
    let audiences = defaults.audiences;
    if (e.audiences !== undefined) {
      const a = e.audiences;
      if (!Array.isArray(a) || a.length === 0 || !a.every((x) => typeof x === 'string' && x !== '')) throw bad('audiences', 'must be a non-empty list of strings');
      audiences = a as string[];
    }
    const trustDomain = text('trustDomain', false) ?? defaults.trustDomain;
    if (!TRUST_DOMAIN.test(trustDomain)) throw bad('trustDomain', `is not a valid trust domain ("${trustDomain.slice(0, 200)}": lower-case letters, digits, '.', '-', '_')`);
    return { clusterId, issuer, jwksFile: jwksFile && (isAbsolute(jwksFile) ? jwksFile : resolve(folder, jwksFile)), jwksUri, audiences, trustDomain };
  });
  const byIssuer = new Map<string, number>();
  const domainOf = new Map<string, { trustDomain: string; i: number }>();
  entries.forEach((e, i) => {
    const twin = byIssuer.get(e.issuer);
    if (twin !== undefined) throw fail(`entry #${i}: "issuer" "${e.issuer}" is already entry #${twin} (a token's iss must name one entry)`);
    byIssuer.set(e.issuer, i);
    const other = domainOf.get(e.clusterId!);
    if (other && other.trustDomain !== e.trustDomain) {
      throw fail(`entry #${i}: "trustDomain" "${e.trustDomain}" differs from entry #${other.i}'s "${other.trustDomain}" for the same cluster "${e.clusterId}"`);
    }
    domainOf.set(e.clusterId!, { trustDomain: e.trustDomain, i });
  });
  return entries;
}

/** Settings every issuer's key set shares (the --jwks-file / --jwks-uri behaviour, per entry). */
export type IssuerKeyOptions = Pick<JwtAuthenticatorOptions, 'reloadIntervalMs' | 'jwksRefreshIntervalMs' | 'jwksCooldownMs' | 'clockToleranceSeconds' | 'verifiedTokenCacheSize'> & {
  /** Told of every load of an entry's key set (metrics, logs). */
  onKeySetReload?: ((reload: KeySetReload, entry: IssuerEntry) => void) | undefined;
};

interface Route {
  entry: IssuerEntry;
  jwt: JwtAuthenticator;
  /** What makes two entries the same key source: kept across reloads when unchanged. */
  fingerprint: string;
}

const fingerprintOf = (e: IssuerEntry) => JSON.stringify([e.clusterId, e.issuer, e.jwksFile, e.jwksUri, e.audiences, e.trustDomain]);

/** The `iss` of a JWT's payload, read without verifying (RFC 7519 section 4.1.1); undefined when unreadable. */
function unverifiedIssuer(token: string): string | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const iss = (JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { iss?: unknown } | null)?.iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Verifies service-account tokens of several issuers (one per cluster, as istiod's per-cluster
 * JWT authenticators): the token's `iss`, read once from the unverified payload, picks exactly one
 * entry, whose JwtAuthenticator (its own key set, audiences and trust domain) does the
 * verification; no other key set is tried. With one entry every token goes to it, so the
 * single-issuer flags keep their messages. A non-empty `clusterid` naming another cluster than the
 * entry's is UNAUTHENTICATED naming both. The set can be replaced (file reload): unchanged entries
 * keep their key source and verified-token cache.
 */
export class JwtIssuers implements Authenticator {
  readonly name = 'jwt';
  private routes = new Map<string, Route>();

  constructor(
    entries: readonly IssuerEntry[],
    private readonly options: IssuerKeyOptions,
  ) {
    this.replace(entries);
  }

  /** The entries in use. */
  get entries(): IssuerEntry[] {
    return [...this.routes.values()].map((r) => r.entry);
  }

  /**
   * Uses `entries` from now on. Builds every new key source first: when one cannot be loaded
   * (unreadable JWKS file), throws and keeps the current set. Returns the issuers added and removed.
   */
  replace(entries: readonly IssuerEntry[]): { added: string[]; removed: string[] } {
    const next = new Map<string, Route>();
    const made: Route[] = [];
    try {
      for (const [i, entry] of entries.entries()) {
        const fingerprint = fingerprintOf(entry);
        const old = this.routes.get(entry.issuer);
        if (old && old.fingerprint === fingerprint) {
          next.set(entry.issuer, old);
          continue;
        }
        let jwt: JwtAuthenticator;
        try {
          jwt = this.authenticatorFor(entry);
        } catch (err) {
          // Name the entry and field, as every other refusal of the file does (docs/kubernetes.md).
          const field = entry.jwksFile !== undefined ? 'jwksFile' : 'jwksUri';
          throw new Error(`entry #${i}: "${field}": ${(err as Error).message}`, { cause: err });
        }
        const route: Route = { entry, fingerprint, jwt };
        made.push(route);
        next.set(entry.issuer, route);
      }
    } catch (err) {
      for (const r of made) r.jwt.close();
      throw err;
    }
    const removed = [...this.routes.values()].filter((r) => next.get(r.entry.issuer) !== r);
    for (const r of removed) r.jwt.close();
    this.routes = next;
    return { added: made.map((r) => r.entry.issuer), removed: removed.filter((r) => !next.has(r.entry.issuer)).map((r) => r.entry.issuer) };
  }

  close(): void {
    for (const r of this.routes.values()) r.jwt.close();
  }

  async authenticate(creds: CallCredentials): Promise<Caller | undefined> {
    const token = bearerToken(creds);
    if (token === undefined) return undefined;
    const route = this.route(token);
    const claimed = creds.clusterId.length === 1 ? creds.clusterId[0]! : '';
    const own = route.entry.clusterId;
    if (claimed !== '' && own !== undefined && claimed !== own) {
      throw new AuthError(
        'unauthenticated',
        `token issuer "${route.entry.issuer}" is of cluster "${own}", but the client claims to be in cluster "${claimed.slice(0, 128)}"`,
      );
    }
    const caller = await route.jwt.authenticate(creds);
    return caller && own !== undefined ? { ...caller, clusterId: own } : caller;
  }

  /** issue #14: see Authenticator.cachedClaim; each issuer's verified-token cache in turn (a token verifies with one issuer). */
  cachedClaim(tokenKey: string): { value: string | undefined } | undefined {
    for (const r of this.routes.values()) {
      const claim = r.jwt.cachedClaim(tokenKey);
      if (claim) return claim;
    }
    return undefined;
  }

  private route(token: string): Route {
    if (this.routes.size === 1) return this.routes.values().next().value!;
    const iss = unverifiedIssuer(token);
    if (iss === undefined) throw new AuthError('unauthenticated', 'token is malformed (not a signed JWT with an "iss" claim)');
    const route = this.routes.get(iss);
    if (!route) {
      const known = [...this.routes.keys()].map((i) => `"${i}"`).join(', ');
      throw new AuthError('unauthenticated', `token issuer "${iss.slice(0, 200)}" is not trusted (want one of ${known})`);
    }
    return route;
  }

  private authenticatorFor(entry: IssuerEntry): JwtAuthenticator {
    const { onKeySetReload, ...keyOptions } = this.options;
    return new JwtAuthenticator({
      ...keyOptions,
      issuer: entry.issuer,
      audience: entry.audiences.length === 1 ? entry.audiences[0]! : entry.audiences,
      trustDomain: entry.trustDomain,
      jwksFile: entry.jwksFile,
      jwksUri: entry.jwksUri,
      onKeySetReload: onKeySetReload && ((reload) => onKeySetReload(reload, entry)),
    });
  }
}

/** What a (re)load of --jwt-issuers-file did. */
export type IssuersReload =
  | { source: string; result: 'success'; issuers: number; added: string[]; removed: string[] }
  | { source: string; result: 'failure'; error: Error };

export interface IssuersFileOptions extends IssuerKeyOptions {
  path: string;
  defaults: { trustDomain: string; audiences: string[] };
  /** Poll the file this often besides watching its folder (--reload-interval), milliseconds. */
  pollIntervalMs: number;
  debounceMs?: number | undefined;
  /** Told of every load that changed something or failed (a re-read of the same content is not reported). */
  onReload?: ((reload: IssuersReload) => void) | undefined;
}

/**
 * --jwt-issuers-file followed as the cacerts folder is: fs.watch on its folder (sees Kubernetes'
 * `..data` swap) plus a poll every pollIntervalMs. A file that does not parse, or names a JWKS file
 * that cannot be loaded, is refused and the current issuers are kept (reported once per content).
 * Throws IssuersFileError at construction when the file cannot be used (startup must not go on).
 */
export class IssuersFile {
  readonly issuers: JwtIssuers;
  private readonly file: FollowedFile<IssuersReload>;

  constructor(private readonly options: IssuersFileOptions) {
    const fail = (what: string) => new IssuersFileError(`--jwt-issuers-file ${options.path}: ${what}`);
    this.file = new FollowedFile(options, {
      unreadable: (err) => new IssuersFileError(`--jwt-issuers-file ${options.path}: cannot be read (${err.code ?? err.message})`),
      apply: (text) => {
        let changes: { added: string[]; removed: string[] };
        let count: number;
        try {
          const entries = parseIssuersFile(text, options.path, options.defaults);
          count = entries.length;
          changes = this.issuers.replace(entries);
        } catch (err) {
          throw err instanceof IssuersFileError ? err : fail((err as Error).message);
        }
        return this.report({ source: options.path, result: 'success', issuers: count, ...changes });
      },
      failed: (error) => this.report({ source: options.path, result: 'failure', error }),
    });
    const text = this.file.read();
    const entries = parseIssuersFile(text, options.path, options.defaults);
    try {
      this.issuers = new JwtIssuers(entries, options);
    } catch (err) {
      throw fail((err as Error).message);
    }
    options.onReload?.({ source: options.path, result: 'success', issuers: entries.length, added: entries.map((e) => e.issuer), removed: [] });
    this.file.follow(text);
  }

  /** Re-reads the file; uses the new issuers when the content changed and is good. Returns what happened. */
  check(): IssuersReload | undefined {
    return this.file.check();
  }

  close(): void {
    this.file.stop();
    this.issuers.close();
  }

  private report(reload: IssuersReload): IssuersReload {
    this.options.onReload?.(reload);
    return reload;
  }
}
