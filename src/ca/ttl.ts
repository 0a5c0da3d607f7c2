import { formatGoDuration } from '../duration.js';
import { CLOCK_SKEW_GRACE_MS } from '../pki/index.js';

export interface TtlPolicy {
  defaultTtlMs: number;
  maxTtlMs: number;
}

export class TtlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TtlError';
  }
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
  requestedMs: number | undefined;
  /** The lifetime granted from now; less than asked when the signer expires first. */
  grantedMs: number;
  /** NotAfter was cut to the signer's NotAfter. */
  clamped: boolean;
  /** NotAfter was cut to the caller's credential limit (a client certificate's renewal bound). */
  credentialCapped: boolean;
}

/** Bounds beyond the TTL policy. */
export interface ValidityBounds {
  /** The signer's NotBefore: a leaf never starts before its signer (RFC 5280 path validation checks each certificate at one time). */
  signerNotBefore?: Date | undefined;
  /** Caller.renewalNotAfter: NotAfter never passes it. */
  notAfterLimit?: Date | undefined;
}

/**
 * Istio's TTL rules: a request <= 0 gets the default; a request above the maximum is rejected
 * (not clamped), in istiod's words; NotAfter never passes the signer's NotAfter. The request is
 * an int64 of seconds, handled as a bigint so that no value can overflow a Date.
 */
export function grantValidity(policy: TtlPolicy, requestedSeconds: bigint, signerNotAfter: Date, now: Date, bounds: ValidityBounds = {}): Validity {
  let requestedMs: number | undefined;
  let ttlMs: number;
  if (requestedSeconds <= 0n) {
    ttlMs = policy.defaultTtlMs;
  } else {
    if (requestedSeconds * 1000n > BigInt(policy.maxTtlMs)) {
      throw new TtlError(
        `requested TTL ${formatGoDuration(requestedSeconds * 1000n)} is greater than the max allowed TTL ${formatGoDuration(policy.maxTtlMs)}`,
      );
    }
    requestedMs = Number(requestedSeconds) * 1000;
    ttlMs = requestedMs;
  }
  let notAfter = new Date(now.getTime() + ttlMs);
  let credentialCapped = false;
  if (bounds.notAfterLimit && notAfter > bounds.notAfterLimit) {
    notAfter = bounds.notAfterLimit;
    credentialCapped = true;
  }
  let clamped = false;
  if (notAfter > signerNotAfter) {
    notAfter = signerNotAfter;
    clamped = true;
  }
  return {
    notBefore: backdatedNotBefore(now, bounds.signerNotBefore),
    notAfter,
    requestedMs,
    grantedMs: notAfter.getTime() - now.getTime(),
    clamped,
    credentialCapped,
  };
}

/** NotBefore of a leaf issued now: backdated by the clock-skew grace, but never before its signer's NotBefore. */
export function backdatedNotBefore(now: Date, signerNotBefore: Date | undefined): Date {
  const backdated = new Date(now.getTime() - CLOCK_SKEW_GRACE_MS);
  return signerNotBefore && backdated < signerNotBefore ? signerNotBefore : backdated;
}
