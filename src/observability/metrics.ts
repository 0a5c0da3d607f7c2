import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { droppedLogLines } from './logger.js';

/** Request outcomes, a closed set so label values stay bounded. */
export type Outcome =
  | 'issued'
  | 'unauthenticated'
  | 'permission_denied'
  | 'invalid_csr'
  | 'invalid_ttl'
  | 'unavailable'
  | 'overloaded'
  | 'internal';

/** istiod's error label values for citadel_server_csr_sign_err_count. */
export type SignErrorLabel = 'CA_NOT_READY' | 'CSR_ERROR' | 'TTL_ERROR' | 'CERT_GEN_ERROR' | 'UNKNOWN';

export type CertificateRole = 'root' | 'intermediate' | 'signer' | 'serving';

export interface TrackedCertificate {
  role: CertificateRole;
  subject: string;
  serial: string;
  notAfter: Date;
}

/**
 * The CA's metrics. istiod's names are kept exactly (no `_total` suffix) so existing Istio
 * dashboards and alerts work unchanged; svid-ca's own carry the `svid_ca_` prefix.
 */
export class CaMetrics {
  readonly registry: Registry;
  readonly csrCount: Counter;
  readonly successCount: Counter;
  readonly authnFailureCount: Counter;
  readonly signErrorCount: Counter<'error'>;
  /** The `cluster` label is set only when several clusters are served (issue #18); a single-cluster CA's series keep only `outcome`. */
  readonly requests: Counter<'outcome' | 'cluster'>;
  readonly issueDuration: Histogram;
  readonly inFlight: Gauge;
  readonly issuedTtl: Histogram;
  readonly ttlClamped: Counter;
  readonly bundleReloads: Counter<'result'>;
  readonly lastReload: Gauge;
  readonly signerBeforeMaxTtl: Gauge;
  readonly certExpiry: Gauge<'role' | 'subject' | 'serial'>;
  readonly jwksReloads: Counter<'result'>;
  readonly servingLimitedBySigner: Gauge;
  // issue #19: transport limits before authentication
  readonly transportRefused: Counter<'reason'>;
  readonly transportConnections: Gauge<'state'>;
  readonly transportBufferedBytes: Gauge;
  // svid_ca_jwks_last_reload_failed: whether the latest JWKS load failed (alert SvidCaJwksReloadFailing)
  readonly jwksLastReloadFailed: Gauge;
  /** issue #18: loads of --jwt-issuers-file by result. */
  readonly jwtIssuersReloads: Counter<'result'>;
  /** issue #18: loads of --remote-kubeconfig-dir files by result. */
  readonly remoteKubeconfigReloads: Counter<'result'>;
  // issue #16: the CRLs of ca-crl.pem, one series per issuer, replaced at each accepted load
  readonly crlNextUpdate: Gauge<'issuer'>;
  readonly crlThisUpdate: Gauge<'issuer'>;
  readonly crlRevoked: Gauge<'issuer'>;
  /** issue #14: stdout log lines this process dropped, its reader being --log-buffer-bytes behind (read from logger.ts at scrape). */
  readonly logLinesDropped: Counter;
  private rootExpiry: number | undefined;
  private signer: { notAfterMs: number; maxTtlMs: number } | undefined;
  private chainExpiry: number | undefined;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [(this.registry = new Registry())];
    const self = this;
    this.csrCount = new Counter({ name: 'citadel_server_csr_count', help: 'The number of CSRs received by the CA server.', registers });
    this.successCount = new Counter({
      name: 'citadel_server_success_cert_issuance_count',
      help: 'The number of certificates issuances that have succeeded.',
      registers,
    });
    this.authnFailureCount = new Counter({
      name: 'citadel_server_authentication_failure_count',
      help: 'The number of authentication failures.',
      registers,
    });
    this.signErrorCount = new Counter({
      name: 'citadel_server_csr_sign_err_count',
      help: 'The number of errors occurred when signing the CSR.',
      labelNames: ['error'],
      registers,
    });
    new Gauge({
      aggregator: 'first',
      name: 'citadel_server_root_cert_expiry_timestamp',
      help: 'The unix timestamp, in seconds, when the CA root certificate will expire (first root of the bundle).',
      registers,
      collect() {
        if (self.rootExpiry !== undefined) this.set(self.rootExpiry);
      },
    });
    new Gauge({
      aggregator: 'min',
      name: 'citadel_server_root_cert_expiry_seconds',
      help: 'The time remaining, in seconds, before the CA root certificate will expire.',
      registers,
      collect() {
        if (self.rootExpiry !== undefined) this.set(self.rootExpiry - Date.now() / 1000);
      },
    });
    new Gauge({
      aggregator: 'first',
      name: 'citadel_server_cert_chain_expiry_timestamp',
      help: 'The unix timestamp, in seconds, when the CA certificate chain will expire (first certificate of the chain).',
      registers,
      collect() {
        if (self.chainExpiry !== undefined) this.set(self.chainExpiry);
      },
    });
    new Gauge({
      aggregator: 'min',
      name: 'citadel_server_cert_chain_expiry_seconds',
      help: 'The time remaining, in seconds, before the CA certificate chain will expire.',
      registers,
      collect() {
        if (self.chainExpiry !== undefined) this.set(self.chainExpiry - Date.now() / 1000);
      },
    });
    this.requests = new Counter({
      name: 'svid_ca_requests_total',
      help: 'CreateCertificate calls by outcome (and, serving several clusters, by the cluster of the clusterid header; "unknown" for one not served).',
      labelNames: ['outcome', 'cluster'],
      registers,
    });
    this.issueDuration = new Histogram({
      name: 'svid_ca_issue_duration_seconds',
      help: 'Time to answer a CreateCertificate call, from receipt to response.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.inFlight = new Gauge({ name: 'svid_ca_requests_in_flight', help: 'CreateCertificate calls being handled now.', registers });
    this.issuedTtl = new Histogram({
      name: 'svid_ca_issued_ttl_seconds',
      help: 'Lifetime granted to issued workload certificates.',
      buckets: [300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400, 90 * 86400],
      registers,
    });
    this.ttlClamped = new Counter({
      name: 'svid_ca_ttl_clamped_total',
      help: "Certificates whose lifetime was cut short by the signing certificate's expiry.",
      registers,
    });
    this.bundleReloads = new Counter({
      name: 'svid_ca_bundle_reloads_total',
      help: 'cacerts bundle reload attempts by result.',
      labelNames: ['result'],
      registers,
    });
    this.lastReload = new Gauge({
      aggregator: 'max',
      name: 'svid_ca_bundle_last_reload_timestamp_seconds',
      help: 'Unix time of the last successful cacerts bundle load.',
      registers,
    });
    this.signerBeforeMaxTtl = new Gauge({
      aggregator: 'max',
      name: 'svid_ca_signer_expires_before_max_ttl',
      help: '1 when the signing certificate expires sooner than the max TTL from now (leaves are being clamped), else 0.',
      registers,
      // Evaluated at scrape time: it must flip to 1 as time passes, not only when a bundle loads.
      collect() {
        if (self.signer) this.set(self.signer.notAfterMs - Date.now() < self.signer.maxTtlMs ? 1 : 0);
      },
    });
    this.certExpiry = new Gauge({
      aggregator: 'first',
      name: 'svid_ca_cert_expiry_timestamp_seconds',
      help: 'Unix time at which each certificate svid-ca depends on expires, by role (root, intermediate, signer, serving).',
      labelNames: ['role', 'subject', 'serial'],
      registers,
    });
    // issue #12: loads of the token issuer's JWKS (--jwks-file change, --jwks-uri fetch).
    this.jwksReloads = new Counter({
      name: 'svid_ca_jwks_reloads_total',
      help: "Loads of the token issuer's JWKS (file change or URL fetch) by result; on failure the last good key set stays in use.",
      labelNames: ['result'],
      registers,
    });
    for (const result of ['success', 'failure']) this.jwksReloads.inc({ result }, 0);
    this.servingLimitedBySigner = new Gauge({
      aggregator: 'max',
      name: 'svid_ca_serving_cert_limited_by_signer',
      help: "1 when svid-ca's serving certificate ends with the signing certificate (it expires within --serving-cert-ttl and renewal cannot extend it): mount a new cacerts bundle; else 0.",
      registers,
    });
    this.servingLimitedBySigner.set(0);
    // issue #19: transport limits before authentication (src/server/transport-limits.ts)
    this.transportRefused = new Counter({
      name: 'svid_ca_transport_refused_total',
      help: 'Sockets and streams closed or refused by the transport limits, by reason (max_connections, max_handshakes, handshake_timeout, request_receive_timeout, buffered_request_bytes, ...).',
      labelNames: ['reason'],
      registers,
    });
    this.transportConnections = new Gauge({
      aggregator: 'sum',
      name: 'svid_ca_transport_connections',
      help: 'Sockets on the gRPC listener by state: handshaking (TCP or TLS handshake not finished) or established.',
      labelNames: ['state'],
      registers,
    });
    this.transportBufferedBytes = new Gauge({
      aggregator: 'sum',
      name: 'svid_ca_transport_buffered_request_bytes',
      help: 'Request bytes received on streams whose request has not arrived completely yet (bounded by --max-buffered-request-bytes).',
      registers,
    });
    for (const state of ['handshaking', 'established']) this.transportConnections.set({ state }, 0);
    this.transportBufferedBytes.set(0);
    // Whether the most recent load of the issuer's JWKS failed. The counter above cannot say: a --jwks-file that
    // stays unparsable is counted once per content, so an alert on its increase would not stay firing.
    this.jwksLastReloadFailed = new Gauge({
      aggregator: 'max',
      name: 'svid_ca_jwks_last_reload_failed',
      help: "1 while the most recent load of the token issuer's JWKS (file read/parse or URL fetch) failed and the last good key set is in use; 0 after a successful load.",
      registers,
    });
    this.jwksLastReloadFailed.set(0);
    this.jwtIssuersReloads = new Counter({
      name: 'svid_ca_jwt_issuers_reloads_total',
      help: 'Loads of --jwt-issuers-file by result; a refused file keeps the current issuers.',
      labelNames: ['result'],
      registers,
    });
    this.remoteKubeconfigReloads = new Counter({
      name: 'svid_ca_remote_kubeconfig_reloads_total',
      help: 'Remote cluster kubeconfigs of --remote-kubeconfig-dir loaded (added, changed, removed: success) or refused (failure), by result.',
      labelNames: ['result'],
      registers,
    });
    // issue #16: per-server (the primary owns the bundle with --workers); a CRL without nextUpdate has no nextUpdate series.
    this.crlNextUpdate = new Gauge({
      aggregator: 'first',
      name: 'svid_ca_crl_next_update_timestamp_seconds',
      help: 'Unix time of the nextUpdate of each CRL of ca-crl.pem, by issuer (subject of the CA that signed it); past it the CRL is stale (still used).',
      labelNames: ['issuer'],
      registers,
    });
    this.crlThisUpdate = new Gauge({
      aggregator: 'first',
      name: 'svid_ca_crl_this_update_timestamp_seconds',
      help: 'Unix time of the thisUpdate of each CRL of ca-crl.pem, by issuer.',
      labelNames: ['issuer'],
      registers,
    });
    this.crlRevoked = new Gauge({
      aggregator: 'first',
      name: 'svid_ca_crl_revoked_certificates',
      help: 'Number of revoked certificates each CRL of ca-crl.pem lists, by issuer.',
      labelNames: ['issuer'],
      registers,
    });
    // issue #14: per process (each worker writes its own lines to the shared stdout), summed over the workers.
    this.logLinesDropped = new Counter({
      name: 'svid_ca_log_lines_dropped_total',
      help: 'stdout log lines dropped because the log reader (collector, pipe) was --log-buffer-bytes behind; the --audit-log file is not affected.',
      registers,
      collect() {
        this.reset();
        this.inc(droppedLogLines());
      },
    });
    for (const outcome of ['issued', 'unauthenticated', 'permission_denied', 'invalid_csr', 'invalid_ttl', 'unavailable', 'overloaded', 'internal']) {
      this.requests.inc({ outcome }, 0);
    }
    for (const result of ['success', 'failure']) this.bundleReloads.inc({ result }, 0);
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: 'svid_ca_' });
      // prom-client's *_total gauges break the naming rule promtool checks (a _total is a counter);
      // their per-type twins (svid_ca_nodejs_active_handles{type} ...) carry the same numbers.
      for (const name of ['svid_ca_nodejs_active_handles_total', 'svid_ca_nodejs_active_requests_total', 'svid_ca_nodejs_active_resources_total']) {
        this.registry.removeSingleMetric(name);
      }
    }
  }

  /** Records the certificates of the signing bundle (roots, chain, signer) replacing the previous ones. */
  setBundleCertificates(certs: TrackedCertificate[], firstRoot: Date | undefined, firstChain: Date | undefined): void {
    const serving = this.trackedServing;
    this.certExpiry.reset();
    for (const c of [...certs, ...serving]) this.setExpiry(c);
    this.rootExpiry = firstRoot ? firstRoot.getTime() / 1000 : undefined;
    this.chainExpiry = firstChain ? firstChain.getTime() / 1000 : undefined;
  }

  /**
   * The CRLs of the bundle just accepted (issue #16): series of CRLs no longer in ca-crl.pem go,
   * so a removed CRL's series disappear at the reload that removes it.
   */
  setCrls(crls: { issuer: string; thisUpdate: Date; nextUpdate: Date | undefined; revoked: number }[]): void {
    for (const g of [this.crlNextUpdate, this.crlThisUpdate, this.crlRevoked]) g.reset();
    for (const c of crls) {
      const labels = { issuer: c.issuer };
      this.crlThisUpdate.set(labels, c.thisUpdate.getTime() / 1000);
      this.crlRevoked.set(labels, c.revoked);
      if (c.nextUpdate) this.crlNextUpdate.set(labels, c.nextUpdate.getTime() / 1000);
    }
  }

  /** The signer whose expiry svid_ca_signer_expires_before_max_ttl compares with the max TTL. */
  setSigner(notAfter: Date, maxTtlMs: number): void {
    this.signer = { notAfterMs: notAfter.getTime(), maxTtlMs };
  }

  setServingCertificate(cert: TrackedCertificate): void {
    for (const old of this.trackedServing) this.certExpiry.remove({ role: old.role, subject: old.subject, serial: old.serial });
    this.trackedServing = [cert];
    this.setExpiry(cert);
  }

  private trackedServing: TrackedCertificate[] = [];

  private setExpiry(c: TrackedCertificate): void {
    this.certExpiry.set({ role: c.role, subject: c.subject, serial: c.serial }, c.notAfter.getTime() / 1000);
  }
}

/**
 * With --workers, facts about the server as a whole (the signing bundle, its reloads and the serving
 * certificate) are owned by the primary, which loads and reloads the bundle once; everything about
 * calls (counts, latency, in flight) and the Node.js process is per worker and summed by the
 * primary's AggregatorRegistry. These are the per-server metrics.
 */
export const PER_SERVER_METRICS: readonly string[] = [
  'citadel_server_root_cert_expiry_timestamp',
  'citadel_server_root_cert_expiry_seconds',
  'citadel_server_cert_chain_expiry_timestamp',
  'citadel_server_cert_chain_expiry_seconds',
  'svid_ca_bundle_reloads_total',
  'svid_ca_bundle_last_reload_timestamp_seconds',
  'svid_ca_signer_expires_before_max_ttl',
  'svid_ca_cert_expiry_timestamp_seconds',
  'svid_ca_crl_next_update_timestamp_seconds',
  'svid_ca_crl_this_update_timestamp_seconds',
  'svid_ca_crl_revoked_certificates',
];

/** Leaves in `metrics.registry` only the per-server metrics (the primary's) or only the others (a worker's). */
export function keepMetrics(metrics: CaMetrics, part: 'per-server' | 'per-process'): void {
  for (const m of metrics.registry.getMetricsAsArray()) {
    if (PER_SERVER_METRICS.includes(m.name) !== (part === 'per-server')) metrics.registry.removeSingleMetric(m.name);
  }
}
