import { AuthError, type Authenticator, type CallCredentials, type Caller } from './types.js';

export interface AuthenticationOptions {
  /** When set, a call whose non-empty clusterid header names another cluster is refused. */
  clusterId?: string | undefined;
}

/**
 * Runs the authenticators in their fixed order; the first that yields a caller wins. A credential
 * that is present but bad fails the call at once rather than falling through to the next one.
 */
export async function authenticateCall(
  authenticators: readonly Authenticator[],
  creds: CallCredentials,
  options: AuthenticationOptions,
): Promise<Caller> {
  if (options.clusterId !== undefined) {
    const claimed = creds.clusterId.length === 1 ? creds.clusterId[0]! : '';
    if (claimed !== '' && claimed !== options.clusterId) {
      throw new AuthError('unauthenticated', `client claims to be in cluster "${claimed.slice(0, 128)}", but this CA serves cluster "${options.clusterId}"`);
    }
  }
  for (const authenticator of authenticators) {
    const caller = await authenticator.authenticate(creds);
    if (caller) return caller;
  }
  throw new AuthError('unauthenticated', 'no credentials: send "authorization: Bearer <service-account token>"');
}
