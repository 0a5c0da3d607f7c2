import { AuthError, type Authenticator, type CallCredentials, type Caller } from './types.js';

export interface AuthenticationOptions {
  /** When set, a call whose non-empty clusterid header names another cluster is refused. */
  clusterId?: string | undefined;
  /**
   * issue #18: the clusters this CA serves besides clusterId (--jwt-issuers-file entries,
   * --remote-kubeconfig-dir files), read on every call since both follow their files. When given,
   * a clusterid naming any of them routes the call there instead of being refused.
   */
  clusters?: (() => ReadonlySet<string>) | undefined;
}

/**
 * issue #18: the cluster a call is for, as istiod reads the `clusterid` header: empty (or absent)
 * means the local cluster (--cluster-id, '' when unset); a configured cluster routes there; any
 * other is UNAUTHENTICATED naming it. Without options.clusters, only --cluster-id is served (the
 * single-cluster check and message, unchanged).
 */
export function resolveCluster(creds: CallCredentials, options: AuthenticationOptions): string {
  const claimed = creds.clusterId.length === 1 ? creds.clusterId[0]! : '';
  const local = options.clusterId ?? '';
  if (claimed === '' || claimed === local) return local;
  if (!options.clusters) {
    if (options.clusterId === undefined) return claimed;
    throw new AuthError('unauthenticated', `client claims to be in cluster "${claimed.slice(0, 128)}", but this CA serves cluster "${options.clusterId}"`);
  }
  const known = options.clusters();
  if (known.has(claimed)) return claimed;
  const served = [...new Set([local, ...known])].filter((c) => c !== '').map((c) => `"${c}"`).join(', ');
  throw new AuthError('unauthenticated', `client claims to be in cluster "${claimed.slice(0, 128)}", which this CA does not serve (configured clusters: ${served})`);
}

/**
 * Runs the authenticators in their fixed order (client certificate, JWT, TokenReview); the first
 * that yields a caller wins. One that refuses the credential does not end the call: the next may
 * still vouch for it (a token the local JWKS does not know can pass TokenReview). If none does, the
 * call fails with the first refusal, or UNAVAILABLE when any authenticator could not decide, since
 * a retry may then succeed.
 */
export async function authenticateCall(
  authenticators: readonly Authenticator[],
  creds: CallCredentials,
  options: AuthenticationOptions,
): Promise<Caller> {
  creds = { ...creds, cluster: resolveCluster(creds, options) };
  let refused: AuthError | undefined;
  let undecided: AuthError | undefined;
  // An index loop: entries() made an iterator and an [index, value] pair per authenticator (issue #14).
  for (let i = 0; i < authenticators.length; i++) {
    const authenticator = authenticators[i]!;
    try {
      const caller = await authenticator.authenticate(creds);
      if (caller?.renewalNotAfter && creds.authorization.length > 0) return (await tokenForSameIdentity(authenticators.slice(i + 1), creds, caller)) ?? caller;
      if (caller) return caller;
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      if (err.failure === 'unavailable') undecided ??= err;
      else refused ??= err;
    }
  }
  const failure = undecided ?? refused;
  if (failure) throw failure;
  throw new AuthError('unauthenticated', 'no credentials: send "authorization: Bearer <service-account token>"');
}

/**
 * A client certificate's caller is limited in how long its renewal may live (Caller.renewalNotAfter);
 * a token presented with it lifts that limit only when a token authenticator vouches for the same
 * identity. A token that fails or names someone else leaves the certificate's (limited) caller.
 */
async function tokenForSameIdentity(rest: readonly Authenticator[], creds: CallCredentials, certCaller: Caller): Promise<Caller | undefined> {
  for (const authenticator of rest) {
    try {
      const caller = await authenticator.authenticate(creds);
      if (caller) return caller.identity === certCaller.identity ? caller : undefined;
    } catch {
      // the certificate alone still authenticates the call
    }
  }
  return undefined;
}
