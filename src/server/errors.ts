import * as grpc from '@grpc/grpc-js';
import { AuthError, AuthzError } from '../auth/index.js';
import { CaUnavailableError, TtlError } from '../ca/index.js';
import { CsrError } from '../pki/index.js';
import { AuditWriteError } from '../observability/index.js';
import type { Outcome, SignErrorLabel } from '../observability/index.js';

/** A request refused for a reason the caller can act on; the message goes back as the status details. */
export class RequestError extends Error {
  constructor(
    readonly code: grpc.status,
    readonly outcome: Outcome,
    message: string,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

export interface Failure {
  code: grpc.status;
  outcome: Outcome;
  message: string;
  /** istiod's citadel_server_csr_sign_err_count label, for failures istiod counts as sign errors. */
  signError?: SignErrorLabel;
  /** Counted in citadel_server_authentication_failure_count. */
  authentication?: boolean;
  /** Not the caller's fault: log at error level with the stack. */
  unexpected?: boolean;
}

/**
 * Maps what went wrong to the gRPC status an Istio agent expects: it retries UNAVAILABLE and
 * INTERNAL (5 calls), and gives up at once on UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT.
 */
export function classifyError(err: unknown): Failure {
  if (err instanceof RequestError) {
    // istiod counts a request it cannot read a CSR from (an empty csr field included) as CSR_ERROR.
    return { code: err.code, outcome: err.outcome, message: err.message, ...(err.outcome === 'invalid_csr' ? { signError: 'CSR_ERROR' as const } : {}) };
  }
  if (err instanceof AuthError) {
    return err.failure === 'unavailable'
      ? { code: grpc.status.UNAVAILABLE, outcome: 'unavailable', message: `authentication unavailable: ${err.message}` }
      : { code: grpc.status.UNAUTHENTICATED, outcome: 'unauthenticated', message: `request authenticate failure: ${err.message}`, authentication: true };
  }
  if (err instanceof AuthzError) {
    return err.failure === 'permission_denied'
      ? { code: grpc.status.PERMISSION_DENIED, outcome: 'permission_denied', message: err.message }
      : { code: grpc.status.INVALID_ARGUMENT, outcome: 'invalid_csr', message: err.message, signError: 'CSR_ERROR' };
  }
  if (err instanceof CsrError) {
    return { code: grpc.status.INVALID_ARGUMENT, outcome: 'invalid_csr', message: `CSR error: ${err.message}`, signError: 'CSR_ERROR' };
  }
  if (err instanceof TtlError) {
    return { code: grpc.status.INVALID_ARGUMENT, outcome: 'invalid_ttl', message: `CSR signing error (${err.message})`, signError: 'TTL_ERROR' };
  }
  if (err instanceof AuditWriteError) {
    return { code: grpc.status.UNAVAILABLE, outcome: 'unavailable', message: `CA not ready: ${err.message}; no certificate is issued without its audit record, retry` };
  }
  if (err instanceof CaUnavailableError) {
    return { code: grpc.status.UNAVAILABLE, outcome: 'unavailable', message: `CA not ready: ${err.message}`, signError: 'CA_NOT_READY' };
  }
  return {
    code: grpc.status.INTERNAL,
    outcome: 'internal',
    message: 'internal error while signing; the request may be retried (details are in the svid-ca log)',
    signError: 'CERT_GEN_ERROR',
    unexpected: true,
  };
}
