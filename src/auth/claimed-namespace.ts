/**
 * The namespace a bearer token claims, for the admission queue's order only (never to decide
 * anything): gateways and ztunnel in istio-system go first in a storm. One rule for the unverified
 * read (claimedNamespace) and for the payload the JWT authenticator has just verified
 * (namespaceClaim), so a token's place in the queue is the same whichever of them read it.
 */

/** Payloads longer than this (base64url characters) are not decoded unverified; they claim nothing. */
export const MAX_CLAIM_PAYLOAD_CHARS = 8192;

/**
 * The namespace of decoded JWT claims: `kubernetes.io.namespace` when it is a string, else the third
 * `:`-separated part of `sub` (`system:serviceaccount:<ns>:<sa>`), else undefined.
 */
export function namespaceClaim(claims: unknown): string | undefined {
  const c = claims as { sub?: unknown; 'kubernetes.io'?: { namespace?: unknown } } | null | undefined;
  if (typeof c?.['kubernetes.io']?.namespace === 'string') return c['kubernetes.io'].namespace;
  if (typeof c?.sub === 'string') return c.sub.split(':')[2];
  return undefined;
}

/**
 * The namespace `token` (a compact JWT, as bearerToken() reads it from the authorization header)
 * claims, read without verification: its payload segment base64url-decoded and JSON-parsed, then
 * namespaceClaim. Undefined when the token has no payload segment, the segment is longer than
 * MAX_CLAIM_PAYLOAD_CHARS, or it is not JSON.
 */
export function claimedNamespace(token: string): string | undefined {
  const dot = token.indexOf('.');
  if (dot < 0) return undefined;
  const next = token.indexOf('.', dot + 1);
  const end = next < 0 ? token.length : next;
  if (end - dot - 1 === 0 || end - dot - 1 > MAX_CLAIM_PAYLOAD_CHARS) return undefined;
  try {
    return namespaceClaim(JSON.parse(Buffer.from(token.slice(dot + 1, end), 'base64url').toString('utf8')));
  } catch {
    return undefined; // not a JWT: no priority
  }
}
