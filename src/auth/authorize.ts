import type { CsrSans } from '../pki/index.js';

export type AuthzFailure = 'permission_denied' | 'invalid_argument';

export class AuthzError extends Error {
  constructor(
    readonly failure: AuthzFailure,
    message: string,
  ) {
    super(message);
    this.name = 'AuthzError';
  }
}

/**
 * The authorization rule: a CSR may ask for exactly one name, a URI SAN equal to the identity the
 * caller may hold. Unlike istiod (which silently overwrites SANs) we refuse, naming what is not
 * allowed, so a misconfigured client learns why.
 */
export function authorizeSans(sans: CsrSans, allowedIdentity: string): void {
  const denied = (what: string) =>
    new AuthzError('permission_denied', `CSR asks for ${what}, which the caller may not hold; it may ask only for URI SAN ${allowedIdentity}`);
  if (sans.dns[0] !== undefined) throw denied(`DNS SAN "${sans.dns[0]}"`);
  if (sans.ips[0] !== undefined) throw denied(`IP SAN ${sans.ips[0]}`);
  if (sans.emails[0] !== undefined) throw denied(`email SAN "${sans.emails[0]}"`);
  if (sans.other > 0) throw denied('a SAN of a kind svid-ca does not issue (otherName, directoryName, ...)');
  const foreign = sans.uris.find((u) => u !== allowedIdentity);
  if (foreign !== undefined) throw denied(`URI SAN "${foreign}"`);
  if (sans.uris.length === 0) {
    throw new AuthzError('invalid_argument', `CSR has no subject alternative name; it must carry one URI SAN, ${allowedIdentity}`);
  }
  if (sans.uris.length > 1) throw denied(`URI SAN "${allowedIdentity}" ${sans.uris.length} times`);
}
