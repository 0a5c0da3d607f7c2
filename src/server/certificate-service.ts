import * as grpc from '@grpc/grpc-js';
import { acceptedBearerToken, AuthError, authenticateCall, authorizeSans, bearerKey, AuthzError, claimedNamespace, type AuthenticationOptions, type Authenticator, type Caller, type ImpersonationAuthorizer } from '../auth/index.js';
import type { Authority, IssuedCertificate } from '../ca/index.js';
import type { AuditLog, AuditRecord, CaMetrics, Logger } from '../observability/index.js';
import { readCsrPem } from '../pki/index.js';
import { Admission } from './admission.js';
import { classifyError, RequestError } from './errors.js';
import { wholeSeconds } from './lifecycle.js';
import { readRequestMetadata, readValidityDuration } from './metadata.js';
import type { IstioCertificateRequest, IstioCertificateResponse } from './proto.js';

export interface CertificateServiceDeps {
  authority: Authority;
  authenticators: readonly Authenticator[];
  authOptions: AuthenticationOptions;
  /** --trusted-node-accounts: honours metadata ImpersonatedIdentity (ztunnel); absent = impersonation refused. */
  impersonation?: ImpersonationAuthorizer | undefined;
  metrics: CaMetrics;
  logger: Logger;
  audit: AuditLog;
  admission: Admission;
  /**
   * True once the shutdown grace is over and pending calls have been answered UNAVAILABLE: a result
   * reached after that is not issued (nor audited as issued), since its caller already has its answer.
   */
  shuttingDown?: (() => boolean) | undefined;
  /** --max-csr-bytes: the longest csr field (PEM characters) read at all; default DEFAULT_MAX_CSR_BYTES. */
  maxCsrBytes?: number | undefined;
  /** issue #19: called with call.getPeer() once a call has authenticated (the connection leaves its pre-authentication limits). */
  onAuthenticated?: ((peer: string) => void) | undefined;
  /**
   * issue #18: serving several clusters, the `cluster` label of svid_ca_requests_total for a call's
   * clusterid header values (a served cluster, or "unknown"); absent for a single-cluster CA, whose
   * series keep only `outcome`.
   */
  clusterLabel?: ((clusterIdHeader: string[]) => string) | undefined;
  /** issue #16: the certificates the client presented on connection `peer`, leaf first (for the CRL check of --client-cert-auth). */
  peerChain?: ((peer: string) => Buffer[] | undefined) | undefined;
}

/** Default --max-csr-bytes: an RSA-8192 CSR with eight long SANs fits; 3,300 empty extensions do not. */
export const DEFAULT_MAX_CSR_BYTES = 8192;

/**
 * Whose share of --max-pending a call uses (Admission.tryAdmitCaller): the authenticated identity;
 * for an impersonation, the node agent's own pod (one ztunnel per node), so one node cannot hold
 * the queue by asking for many of its workloads' identities.
 */
export function shareKey(caller: Caller, impersonating: boolean): { key: string; who: string } {
  if (impersonating) return { key: `pod\0${caller.namespace}/${caller.podName ?? ''}\0${caller.identity}`, who: `node agent ${caller.namespace}/${caller.podName ?? caller.serviceAccount}` };
  return { key: `id\0${caller.identity}`, who: caller.identity };
}

const SHUTTING_DOWN = 'svid-ca is shutting down; retry (another replica will answer)';

/** The SAN rule; for an impersonation a SAN other than the impersonated identity is an impersonation failure (UNAUTHENTICATED, counted). */
function authorizeSansFor(sans: Parameters<typeof authorizeSans>[0], identity: string, impersonating: boolean): void {
  try {
    authorizeSans(sans, identity);
  } catch (err) {
    if (impersonating && err instanceof AuthzError && err.failure === 'permission_denied') {
      throw new AuthError('unauthenticated', `impersonation refused: the CSR's SAN must equal the impersonated identity (${err.message})`);
    }
    throw err;
  }
}

/**
 * What the CreateCertificate handler reads of a call: grpc-js's ServerUnaryCall has this shape, and so
 * does the call the CreateCertificate fast path (unary-fast-path.ts) builds from a node:http2 stream.
 */
export interface CertificateCall {
  request: IstioCertificateRequest;
  /** The request's metadata (grpc-js's Metadata: `-bin` values are Buffers). */
  metadata: { get(key: string): (string | Buffer)[] };
  /** "address:port" of the connection (grpc-js's call.getPeer() format; transport-limits keys on it). */
  getPeer(): string;
  /** grpc-js's auth context: the client certificate when the TLS handshake verified one. */
  getAuthContext?(): { sslPeerCertificate?: { raw?: Buffer } | undefined } | undefined;
}

/** The handler's answer: an error carries a gRPC status code and its message (grpc-js's ServiceError shape). */
export type CertificateCallback = (err: { code: grpc.status; details: string } | null, value?: IstioCertificateResponse) => void;

/** A CreateCertificate handler: one call in, one answer out through the callback. */
export type CertificateHandler = (call: CertificateCall, callback: CertificateCallback) => void;

function firstString(md: CertificateCall['metadata'], key: string): string[] {
  return md.get(key).map((v) => (typeof v === 'string' ? v : v.toString('utf8')));
}

interface CallContext {
  caller?: Caller | undefined;
  impersonatedIdentity?: string | undefined;
  requestedTtl?: bigint | undefined;
}

/**
 * The identity of a request for deduplication (Admission.share): everything that decides its outcome,
 * the CSR first (it indexes the pending calls; the other parts are compared when it matches). It
 * lives only while the call is pending. Compared part by part, so no separator can be ambiguous.
 */
function requestKey(authorization: string[], clusterIds: string[], peerCertificate: Buffer | undefined, req: IstioCertificateRequest): string[] {
  return [
    String(req.csr),
    authorization.join('\n'),
    peerCertificate ? peerCertificate.toString('base64') : '',
    clusterIds.join('\n'),
    String(req.validity_duration),
    req.metadata ? JSON.stringify(req.metadata) : '',
  ];
}

/** The namespace the call's bearer token claims (claimedNamespace) when bearerKey did not read the token. */
function unverifiedClaim(authorization: string[]): string | undefined {
  const token = acceptedBearerToken(authorization);
  return token === undefined ? undefined : claimedNamespace(token);
}

/** IstioCertificateService/CreateCertificate: authenticate, parse, authorize, check TTL, sign, answer. */
export function createCertificateHandler(deps: CertificateServiceDeps): CertificateHandler {
  const { authority, metrics, logger } = deps;
  return (call, callback) => {
    const started = process.hrtime.bigint();
    metrics.csrCount.inc();
    metrics.inFlight.inc();
    const clusterIds = firstString(call.metadata, 'clusterid');
    const cluster = deps.clusterLabel?.(clusterIds);
    const outcomeLabels = (outcome: string) => (cluster === undefined ? { outcome } : { outcome, cluster });
    // What the computation learned (for the audit record); shared with identical concurrent calls.
    let ctx: CallContext = {};

    const finish = (issued: IssuedCertificate | undefined, err: unknown) => {
      if (ctx.caller) deps.onAuthenticated?.(call.getPeer());
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.inFlight.dec();
      metrics.issueDuration.observe(seconds);
      const record: AuditRecord = {
        event: issued ? 'issued' : 'denied',
        identity: ctx.caller?.identity,
        namespace: ctx.caller?.namespace,
        serviceAccount: ctx.caller?.serviceAccount,
        pod: ctx.caller?.podName,
        impersonatedIdentity: ctx.impersonatedIdentity,
        // issue #18: every record names the cluster: the header's, else the local one (--cluster-id).
        clusterId: (clusterIds[0] || deps.authOptions.clusterId || '').slice(0, 128),
        requestedTtlSeconds: ctx.requestedTtl !== undefined && ctx.requestedTtl > 0n ? Number(ctx.requestedTtl) : undefined,
        code: 'OK',
        durationMs: Math.round(seconds * 1e6) / 1e3,
      };
      if (issued && deps.shuttingDown?.()) {
        err = new RequestError(grpc.status.UNAVAILABLE, 'unavailable', SHUTTING_DOWN);
        issued = undefined;
        record.event = 'denied';
      }
      if (issued) {
        Object.assign(record, {
          grantedTtlSeconds: Math.round(issued.grantedMs / 1000),
          serial: issued.serialHex,
          // The not-after the certificate carries (whole seconds), so the record matches the leaf.
          notAfter: wholeSeconds(issued.notAfter).toISOString(),
          signerSki: issued.signerKeyId,
        });
        try {
          // No certificate leaves without its audit record.
          deps.audit.record(record);
          metrics.successCount.inc();
          metrics.requests.inc(outcomeLabels('issued'));
          metrics.issuedTtl.observe(issued.grantedMs / 1000);
          if (issued.clamped) {
            metrics.ttlClamped.inc();
            logger.debug({ identity: ctx.caller?.identity, requestedMs: issued.requestedMs, grantedMs: issued.grantedMs }, 'TTL clamped to the signing certificate expiry');
          }
          if (issued.credentialCapped) {
            logger.debug({ identity: ctx.caller?.identity, requestedMs: issued.requestedMs, grantedMs: issued.grantedMs }, 'TTL capped: a renewal by client certificate alone ends with it (--client-cert-max-ttl)');
          }
          callback(null, { cert_chain: issued.certChain });
          return;
        } catch (auditErr) {
          err = auditErr;
          Object.assign(record, { event: 'denied', grantedTtlSeconds: undefined, serial: undefined, notAfter: undefined });
        }
      }
      const failure = classifyError(err);
      metrics.requests.inc(outcomeLabels(failure.outcome));
      if (failure.signError) metrics.signErrorCount.inc({ error: failure.signError });
      if (failure.authentication) metrics.authnFailureCount.inc();
      record.code = grpc.status[failure.code];
      record.reason = failure.message;
      if (failure.unexpected) logger.error({ err }, 'request failed unexpectedly');
      try {
        deps.audit.record(record, failure.unexpected ? 'request failed unexpectedly' : 'certificate denied');
      } catch {
        // A denial whose record cannot be written is still a denial; AuditLog has logged the failure.
      }
      callback({ code: failure.code, details: failure.message });
    };

    const handle = async (ctx: CallContext): Promise<IssuedCertificate> => {
      // The requested TTL goes into every audit record, also of calls refused before the TTL check;
      // a malformed value is reported below, in its turn.
      try {
        ctx.requestedTtl = readValidityDuration(call.request.validity_duration);
      } catch {
        ctx.requestedTtl = undefined;
      }
      const creds = { authorization, clusterId: clusterIds, peerCertificate, peerChain: peerCertificate ? deps.peerChain?.(call.getPeer()) : undefined, bearer };
      const caller = await authenticateCall(deps.authenticators, creds, deps.authOptions);
      ctx.caller = caller;
      const metadata = readRequestMetadata(call.request.metadata);
      let identity = caller.identity;
      if (metadata.impersonatedIdentity) {
        ctx.impersonatedIdentity = metadata.impersonatedIdentity.slice(0, 512);
        if (!deps.impersonation) throw new AuthError('unauthenticated', 'impersonation refused: impersonation is not enabled on this CA (no --trusted-node-accounts)');
        identity = deps.impersonation.authorize(caller, metadata.impersonatedIdentity);
      }
      if (typeof call.request.csr !== 'string' || call.request.csr.length === 0) {
        throw new RequestError(grpc.status.INVALID_ARGUMENT, 'invalid_csr', 'CSR error: the request carries no CSR (field csr is empty)');
      }
      const csrPem = call.request.csr;
      // Bounded before any parsing: the CSR readers' cost grows with its size (issue #19).
      const maxCsrBytes = deps.maxCsrBytes ?? DEFAULT_MAX_CSR_BYTES;
      if (csrPem.length > maxCsrBytes) {
        throw new RequestError(
          grpc.status.INVALID_ARGUMENT,
          'invalid_csr',
          `CSR error: the csr field is ${csrPem.length} bytes; at most ${maxCsrBytes} are accepted (--max-csr-bytes)`,
        );
      }
      const ttl = readValidityDuration(call.request.validity_duration);
      ctx.requestedTtl = ttl;
      const impersonating = ctx.impersonatedIdentity !== undefined;
      const share = shareKey(caller, impersonating);
      if (!deps.admission.tryAdmitCaller(share.key)) {
        throw new RequestError(
          grpc.status.RESOURCE_EXHAUSTED,
          'overloaded',
          `CA overloaded: ${share.who} already has ${deps.admission.callerPending(share.key)} requests pending, its share of --max-pending (--max-pending-share); retry with backoff`,
        );
      }
      // Parsing (signature check) and signing are the CPU-bound part: one job on the admission
      // queue, priority namespaces first.
      try {
        return await deps.admission.run(isPriority(), () => {
          if (deps.shuttingDown?.()) throw new RequestError(grpc.status.UNAVAILABLE, 'unavailable', SHUTTING_DOWN);
          const csr = readCsrPem(csrPem);
          authorizeSansFor(csr.sans, identity, impersonating);
          // issueCertificate: synchronous with a file key, a Promise with a token key (issue #17).
          return authority.issueCertificate({ identity, csr, requestedTtlSeconds: ttl, notAfterLimit: caller.renewalNotAfter });
        });
      } finally {
        deps.admission.releaseCaller(share.key);
      }
    };

    const authorization = firstString(call.metadata, 'authorization');
    // grpc-js exposes the client certificate only when the handshake verified it (--client-cert-auth).
    const peerCertificate = call.getAuthContext?.()?.sslPeerCertificate?.raw;
    // issue #14: the token is hashed once (its verified-token-cache key, handed on to authentication);
    // a token already verified (an agent's renewal) has its claimed namespace in the cache, so only
    // the others' payloads are decoded here. Either way the same namespace, for the order only.
    // A fresh token's payload is decoded only when its claim is needed before the JWT authenticator
    // has verified it (the bound is reached, tryAdmit); after verification the authenticator has put
    // the claim of the payload it decoded into `bearer`.
    const bearer = bearerKey(deps.authenticators, authorization);
    const isPriority = (): boolean => deps.admission.isPriority(bearer ? (bearer.namespace ??= { value: claimedNamespace(bearer.token) }).value : unverifiedClaim(authorization));
    if (!deps.admission.tryAdmit(isPriority)) {
      finish(
        undefined,
        new RequestError(grpc.status.RESOURCE_EXHAUSTED, 'overloaded', `CA overloaded: ${deps.admission.pendingCount} requests pending; retry with backoff`),
      );
      return;
    }
    // Identical concurrent calls (same credentials, CSR, TTL and metadata: an agent's retry while the
    // first is still queued) share one computation, so the same key is signed once.
    const shared = deps.admission.share(requestKey(authorization, clusterIds, peerCertificate, call.request), () => {
      const own: CallContext = {};
      return { ctx: own, result: handle(own) };
    });
    ctx = shared.ctx;
    shared.result.then(
      (issued) => {
        deps.admission.release();
        finish(issued, undefined);
      },
      (err: unknown) => {
        deps.admission.release();
        finish(undefined, err);
      },
    );
  };
}
