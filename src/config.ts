import { DEFAULT_LOG_BUFFER_BYTES, LOG_LEVELS } from './observability/index.js';
import { ConfigError, parseFlags, type FlagSource, type FlagSpec, type HostPort } from './flags.js';
import { formatGoDuration, parseDuration } from './duration.js';
import { parseGrace, type Grace, type SigningKeyConfig } from './ca/index.js';
import { KEY_SPECS, type KeySpec } from './pki/index.js';
import { parseNodeAccounts } from './auth/index.js';
// Type only: loading @kubernetes/client-node is left to `serve` with a Kubernetes flag.
import type { KubeOptions } from './kube/index.js';
import type { TransportLimits } from './server/index.js';

export { ConfigError } from './flags.js';

/** `svid-ca serve` flags. Names are part of the interface: add freely, never rename. */
export const SERVE_FLAGS: readonly FlagSpec[] = [
  { name: 'cacerts', kind: 'string', default: '/etc/cacerts', help: 'cacerts folder: Istio layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) or Kubernetes TLS layout (tls.crt, tls.key, ca.crt)' },
  { name: 'listen', kind: 'hostport', default: '0.0.0.0:15012', help: 'gRPC over TLS (ALPN h2, TLS >= 1.2)' },
  { name: 'monitoring-listen', kind: 'hostport', default: '0.0.0.0:15014', help: 'plain HTTP /healthz, /readyz, /metrics' },
  { name: 'trust-domain', kind: 'string', default: 'cluster.local', help: 'SPIFFE trust domain of issued identities' },
  { name: 'default-ttl', kind: 'duration', default: '24h', istioEnv: 'DEFAULT_WORKLOAD_CERT_TTL', help: 'lifetime when validity_duration <= 0' },
  { name: 'max-ttl', kind: 'duration', default: '2160h', istioEnv: 'MAX_WORKLOAD_CERT_TTL', help: 'longest lifetime a caller may ask for; above it: INVALID_ARGUMENT' },
  { name: 'serving-dns', kind: 'list', default: 'svid-ca.istio-system.svc,localhost', help: "DNS SANs of svid-ca's own serving certificate (the host of the agents' CA_ADDR); an IP address becomes an IP SAN" },
  { name: 'serving-cert-ttl', kind: 'duration', default: '24h', help: "lifetime of svid-ca's own serving certificate (clamped to the signer)" },
  { name: 'jwt-issuer', kind: 'string', help: 'issuer (iss) of Kubernetes service-account tokens, e.g. https://kubernetes.default.svc.cluster.local' },
  { name: 'jwks-file', kind: 'string', help: "file holding the token issuer's JWKS (kubectl get --raw /openid/v1/jwks)" },
  { name: 'jwks-uri', kind: 'string', help: "URL of the token issuer's JWKS" },
  { name: 'jwt-audience', kind: 'string', default: 'istio-ca', help: 'audience the token must carry' },
  { name: 'cluster-id', kind: 'string', help: 'when set, a non-empty clusterid header naming another cluster is UNAUTHENTICATED' },
  { name: 'log-level', kind: 'string', default: 'info', help: `one of ${LOG_LEVELS.join(', ')}` },
  { name: 'reload-interval', kind: 'duration', default: '10s', help: 'poll the cacerts folder and --jwks-file this often, besides watching them' },
  { name: 'allow-root-replacement', kind: 'boolean', help: 'accept a reload whose root bundle shares no root with the current one (breaks workloads that trust only the old root)' },
  { name: 'serving-cert-grace', kind: 'string', default: '50%', help: 'renew the serving certificate when less than this remains: a percentage of its life or a duration' },
  { name: 'signer-expiry-warning', kind: 'duration', default: '720h', help: 'warn when the signing certificate expires within this' },
  { name: 'self-signed', kind: 'boolean', help: 'no cacerts: make and use a self-signed root (bootstrapping only)' },
  { name: 'self-signed-dir', kind: 'string', help: 'persist the self-signed root here (key mode 0600); in memory only when unset' },
  { name: 'self-signed-ttl', kind: 'duration', default: '87600h', istioEnv: 'CITADEL_SELF_SIGNED_CA_CERT_TTL', help: 'lifetime of the self-signed root' },
  { name: 'self-signed-key', kind: 'string', default: 'ec-p256', help: 'key of the self-signed root: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096' },
  { name: 'root-grace-percentile', kind: 'int', default: '20', istioEnv: 'CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE', help: 're-issue the self-signed root (same key) when less than this percentage of its life remains' },
  { name: 'root-check-interval', kind: 'duration', default: '1h', istioEnv: 'CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL', help: 'how often the self-signed root is checked for re-issue' },
  { name: 'kubeconfig', kind: 'string', help: 'kubeconfig file for the Kubernetes API (default: the in-cluster service account)' },
  { name: 'token-review', kind: 'boolean', help: 'authenticate bearer tokens with the Kubernetes TokenReview API (audience --jwt-audience)' },
  { name: 'token-review-cache-ttl', kind: 'duration', default: '60s', help: "keep a token's positive TokenReview this long at most (and never past its exp)" },
  { name: 'token-review-concurrency', kind: 'int', default: '32', help: 'TokenReviews in flight at most; further calls wait' },
  { name: 'client-cert-auth', kind: 'boolean', help: 'accept a valid SVID of the trust domain presented as TLS client certificate as the identity (renewal without a token)' },
  { name: 'trusted-node-accounts', kind: 'list', help: 'ns/sa,... allowed to impersonate workloads on their own node (ztunnel), e.g. istio-system/ztunnel' },
  { name: 'publish-root-configmap', kind: 'boolean', help: 'keep ConfigMap istio-ca-root-cert equal to the root bundle in every namespace (leader only)' },
  { name: 'root-configmap-namespace-selector', kind: 'string', help: 'label selector: publish istio-ca-root-cert only in matching namespaces' },
  { name: 'leader-election-namespace', kind: 'string', help: "namespace of the svid-ca Lease (default: the pod's namespace, else istio-system)" },
  { name: 'istiod-cert-secret', kind: 'string', help: "ns/name of a kubernetes.io/tls Secret to keep istiod's serving certificate in, e.g. istio-system/istiod-tls (leader only)" },
  { name: 'istiod-dns', kind: 'list', default: 'istiod.istio-system.svc', help: "DNS SANs of istiod's serving certificate" },
  { name: 'istiod-cert-ttl', kind: 'duration', default: '24h', help: "lifetime of istiod's serving certificate (renewed at half-life)" },
  { name: 'audit-log', kind: 'string', help: 'also append one JSON audit line per decision to this file; no certificate is issued while it cannot be written' },
  { name: 'max-request-bytes', kind: 'int', default: '65536', help: 'largest gRPC request accepted; larger: RESOURCE_EXHAUSTED' },
  { name: 'max-connections', kind: 'int', default: '20000', help: 'established connections on the gRPC listener (and sockets that have started TLS), per process; more are closed at once' },
  { name: 'max-concurrent-streams', kind: 'int', default: '128', help: 'concurrent HTTP/2 streams (calls) per connection' },
  { name: 'idle-timeout', kind: 'duration', default: '15m', help: 'close a connection with no call for this long (agents reconnect on their next renewal)' },
  { name: 'shutdown-grace', kind: 'duration', default: '25s', help: "on SIGTERM or SIGINT (Ctrl+C), the whole graceful stop (--shutdown-delay, then calls in flight finish) takes at most this long (inside Kubernetes' 30 s)" },
  { name: 'max-pending', kind: 'int', default: '2048', help: 'calls admitted and not yet answered, per process; more get RESOURCE_EXHAUSTED at once (agents retry with backoff)' },
  { name: 'priority-namespaces', kind: 'list', default: 'istio-system', help: 'namespaces whose callers (gateways, ztunnel) are signed first in a storm' },
  { name: 'workers', kind: 'int', default: '0', help: 'server processes sharing the gRPC port (node:cluster); 0 = one per core. The primary serves monitoring for all' },
  { name: 'dev', kind: 'boolean', help: 'development mode: create and use the dev CA and JWT issuer in certs-dev/, listen on loopback' },
  { name: 'dev-dir', kind: 'string', help: 'where the dev CA lives (default: certs-dev/ of the package)' },
  // issue #12: the token issuer's key set is followed exactly
  { name: 'jwks-refresh-interval', kind: 'duration', default: '5m', help: "refetch --jwks-uri this often (a shorter Cache-Control max-age in the answer wins); a removed key verifies no token after the next fetch" },
  // issue #19: bounded work per caller, renewals by client certificate that end.
  { name: 'max-csr-bytes', kind: 'int', default: '8192', help: 'longest csr field (PEM characters) read at all; longer: INVALID_ARGUMENT' },
  { name: 'max-pending-share', kind: 'int', default: '10', help: 'percent of --max-pending one identity (or one node agent impersonating) may hold; beyond: RESOURCE_EXHAUSTED' },
  { name: 'client-cert-max-ttl', kind: 'duration', default: '24h', help: "longest lifetime of a renewal by client certificate alone; it never passes the presented certificate's NotAfter" },
  // issue #13: operations that cannot hurt
  { name: 'shutdown-delay', kind: 'duration', default: '5s', help: 'on SIGTERM or SIGINT (Ctrl+C), report not ready but keep answering this long before closing the listener (Kubernetes removes the endpoint first); part of --shutdown-grace' },
  // issue #19: bounded work before authentication (src/server/transport-limits.ts)
  { name: 'handshake-timeout', kind: 'duration', default: '5s', help: 'close a socket that has not completed its TLS handshake within this' },
  { name: 'max-handshakes', kind: 'int', default: '1024', help: 'sockets still in their TCP/TLS handshake at once; more are closed at once (not counted in --max-connections)' },
  { name: 'max-handshakes-per-source', kind: 'int', default: '64', help: 'the same, per source IP address' },
  { name: 'max-connections-per-source', kind: 'int', default: '1000', help: 'established connections per source IP address; more are closed at once' },
  { name: 'unauthenticated-streams', kind: 'int', default: '8', help: 'concurrent streams on a connection until a call on it has authenticated (then --max-concurrent-streams)' },
  { name: 'unauthenticated-window', kind: 'int', default: '16384', help: 'HTTP/2 initial stream window (bytes) on a connection until a call on it has authenticated (then 65535)' },
  { name: 'request-receive-timeout', kind: 'duration', default: '10s', help: 'a request must arrive completely within this after its stream opens; else DEADLINE_EXCEEDED' },
  { name: 'max-connection-request-bytes', kind: 'int', default: '1048576', help: 'request bytes received but not yet complete, per connection; more: RESOURCE_EXHAUSTED' },
  { name: 'max-source-request-bytes', kind: 'int', default: '8388608', help: 'request bytes received but not yet complete, all connections from one source IP address; more: RESOURCE_EXHAUSTED' },
  { name: 'max-buffered-request-bytes', kind: 'int', default: '67108864', help: 'request bytes received but not yet complete, all connections of a process; more: RESOURCE_EXHAUSTED' },
  // issue #17: the intermediate's private key on a PKCS#11 token
  { name: 'signing-key', kind: 'string', help: 'PKCS#11 URI (RFC 7512) of the signing key, e.g. pkcs11:token=svid-ca;object=intermediate-2026; the cacerts folder then holds no key. With --self-signed: the root key, generated as --self-signed-key when the token holds none (give object= and id=)' },
  { name: 'signing-key-file', kind: 'string', help: 'file holding the --signing-key URI, read again on every cacerts reload (rotate the key object with the certificate)' },
  { name: 'pkcs11-module', kind: 'string', help: "the token vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so" },
  { name: 'pkcs11-pin-file', kind: 'string', help: 'file holding the token user PIN (or pin-source=file:/path in the URI); never a flag value' },
  { name: 'pkcs11-sessions', kind: 'int', default: '4', help: 'PKCS#11 sessions (and signing threads) per process: concurrent signatures at most (about wanted signatures/s x token latency)' },
  { name: 'pkcs11-sign-timeout', kind: 'duration', default: '5s', help: 'a token signature or key lookup taking longer fails (leaves: UNAVAILABLE; serving certificate, istiod-tls, reload probes, self-signed root re-issue: refused and retried) and the token is reconnected; 0 signs on the main thread without a timeout (only for modules that cannot block, e.g. SoftHSM)' },
  // issue #18: one CA for several clusters (tokens routed by issuer and clusterid)
  { name: 'jwt-issuers-file', kind: 'string', help: 'YAML or JSON list of token issuers, one or more per cluster: {clusterId, issuer, jwksFile | jwksUri, audiences, trustDomain}; reloaded on change; instead of --jwt-issuer/--jwks-file/--jwks-uri' },
  { name: 'remote-kubeconfig-dir', kind: 'string', help: "folder of remote clusters' kubeconfigs (file name less .yaml/.yml/.kubeconfig = cluster ID, as istiod's remote secrets); TokenReview and pod lookups of a call go to its clusterid's API server; followed without restart" },
  // issue #16 (publication): the CRL ConfigMaps and the ClusterTrustBundle
  { name: 'publish-crl-configmap', kind: 'boolean', help: "keep ConfigMap istio-ca-crl (key ca-crl.pem) equal to the cacerts folder's ca-crl.pem in every namespace, empty when there is none (leader only; --root-configmap-namespace-selector applies)" },
  { name: 'publish-cluster-trust-bundle', kind: 'boolean', help: 'keep ClusterTrustBundle istio.io:istiod-ca:root-cert (signer istio.io/istiod-ca) equal to the root bundle (leader only; certificates.k8s.io v1beta1, else v1alpha1)' },
  // issue #14: CreateCertificate on node:http2 streams beside grpc-js
  { name: 'grpc-fast-path', kind: 'boolean', default: 'true', help: 'answer CreateCertificate directly on the HTTP/2 stream (same gRPC wire behaviour as grpc-js; measured 16-18 us less server CPU per certificate); every other call stays with grpc-js. Turn off (--no-grpc-fast-path, SVID_CA_GRPC_FAST_PATH=false) to rule it out when a client sees a protocol error, or if startup says grpc-js internals changed' },
  // issue #14: the stdout log's buffer for a reader that stops reading
  { name: 'log-buffer-bytes', kind: 'int', default: String(DEFAULT_LOG_BUFFER_BYTES), help: 'stdout log lines waiting for their reader, at most (bytes, per process); when the reader (log collector, pipe) falls this far behind, further lines are dropped and counted (svid_ca_log_lines_dropped_total) until it catches up. The --audit-log file is written synchronously and still gets every record' },
];

export interface JwtConfig {
  issuer: string;
  audience: string;
  jwksFile?: string | undefined;
  jwksUri?: string | undefined;
}

export interface SelfSignedConfig {
  dir: string | undefined;
  ttlMs: number;
  key: KeySpec;
  gracePercentile: number;
  checkIntervalMs: number;
}

export interface ServeConfig {
  cacerts: string;
  listen: HostPort;
  monitoringListen: HostPort;
  trustDomain: string;
  defaultTtlMs: number;
  maxTtlMs: number;
  servingDns: string[];
  servingCertTtlMs: number;
  jwt: JwtConfig | undefined;
  clusterId: string | undefined;
  reloadIntervalMs: number;
  allowRootReplacement: boolean;
  servingCertGrace: Grace;
  signerExpiryWarningMs: number;
  selfSigned: SelfSignedConfig | undefined;
  /** Kubernetes integration (src/kube); undefined when no flag asks for it. */
  kubernetes: KubeOptions | undefined;
  clientCertAuth: boolean;
  auditLog: string | undefined;
  maxRequestBytes: number;
  limits: { maxConnections: number; maxConcurrentStreams: number; idleTimeoutMs: number };
  shutdownGraceMs: number;
  admission: { maxPending: number; priorityNamespaces: string[] };
  workers: number;
  logLevel: string;
  dev: boolean;
  devDir: string | undefined;
  /** Where each setting came from, for the startup log. */
  sources: Record<string, string>;
  /** --jwks-refresh-interval (issue #12). */
  jwksRefreshIntervalMs: number;
  maxCsrBytes: number;
  maxPendingSharePercent: number;
  clientCertMaxTtlMs: number;
  /** --shutdown-delay: not ready but still answering, before the listener closes; inside shutdownGraceMs. */
  shutdownDelayMs: number;
  /** issue #19: limits before authentication (the --max-connections/--max-concurrent-streams pair stays in limits). */
  transport: Omit<TransportLimits, 'maxConnections' | 'maxConcurrentStreams'>;
  /** --signing-key / --signing-key-file and the --pkcs11-* flags (issue #17); undefined: the key is in the cacerts folder. */
  signingKey: SigningKeyConfig | undefined;
  /** issue #18: --jwt-issuers-file (instead of the single-issuer flags). */
  jwtIssuersFile: string | undefined;
  /** issue #18: --jwt-audience, the default audiences of an issuers-file entry. */
  jwtAudience: string;
  /** issue #14: --grpc-fast-path. */
  grpcFastPath: boolean;
  /** issue #14: --log-buffer-bytes, the stdout log lines waiting for their reader at most (bytes). */
  logBufferBytes: number;
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;

export function parseServeConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ServeConfig {
  const { values, sources } = parseFlags(SERVE_FLAGS, argv, env, { envPrefix: 'SVID_CA_' });
  const str = (n: string) => values.get(n) as string | undefined;
  const ms = (n: string) => values.get(n) as number;
  const cfg: ServeConfig = {
    cacerts: str('cacerts')!,
    listen: values.get('listen') as HostPort,
    monitoringListen: values.get('monitoring-listen') as HostPort,
    trustDomain: str('trust-domain')!,
    defaultTtlMs: ms('default-ttl'),
    maxTtlMs: ms('max-ttl'),
    servingDns: values.get('serving-dns') as string[],
    servingCertTtlMs: ms('serving-cert-ttl'),
    jwt: undefined,
    clusterId: str('cluster-id'),
    reloadIntervalMs: ms('reload-interval'),
    allowRootReplacement: values.get('allow-root-replacement') as boolean,
    servingCertGrace: { fraction: 0.5 },
    signerExpiryWarningMs: ms('signer-expiry-warning'),
    selfSigned: undefined,
    kubernetes: undefined,
    clientCertAuth: values.get('client-cert-auth') === true,
    auditLog: str('audit-log'),
    maxRequestBytes: values.get('max-request-bytes') as number,
    limits: {
      maxConnections: values.get('max-connections') as number,
      maxConcurrentStreams: values.get('max-concurrent-streams') as number,
      idleTimeoutMs: ms('idle-timeout'),
    },
    shutdownGraceMs: ms('shutdown-grace'),
    workers: values.get('workers') as number,
    admission: { maxPending: values.get('max-pending') as number, priorityNamespaces: values.get('priority-namespaces') as string[] },
    logLevel: str('log-level')!,
    dev: values.get('dev') as boolean,
    devDir: str('dev-dir'),
    jwksRefreshIntervalMs: ms('jwks-refresh-interval'),
    shutdownDelayMs: ms('shutdown-delay'),
    sources: Object.fromEntries(
      [...sources].map(([k, v]) => [k, v.variable ? `${v.source} ${v.variable}` : (v.source satisfies FlagSource)]),
    ),
    maxCsrBytes: values.get('max-csr-bytes') as number,
    maxPendingSharePercent: values.get('max-pending-share') as number,
    clientCertMaxTtlMs: ms('client-cert-max-ttl'),
    transport: transportConfig(values),
    signingKey: signingKeyConfig(values),
    jwtIssuersFile: str('jwt-issuers-file') || undefined,
    jwtAudience: str('jwt-audience')!,
    grpcFastPath: values.get('grpc-fast-path') as boolean,
    logBufferBytes: values.get('log-buffer-bytes') as number,
  };
  if (!TRUST_DOMAIN.test(cfg.trustDomain)) throw new ConfigError(`--trust-domain: invalid value "${cfg.trustDomain}" (lower-case letters, digits, '.', '-', '_')`);
  if (!LOG_LEVELS.includes(cfg.logLevel as never)) throw new ConfigError(`--log-level: invalid value "${cfg.logLevel}" (want one of ${LOG_LEVELS.join(', ')})`);
  if (cfg.maxTtlMs < 1000) throw new ConfigError('--max-ttl: must be at least 1s');
  if (cfg.defaultTtlMs < 1000) throw new ConfigError('--default-ttl: must be at least 1s');
  if (cfg.defaultTtlMs > cfg.maxTtlMs) {
    throw new ConfigError(`--default-ttl: ${formatGoDuration(cfg.defaultTtlMs)} is greater than --max-ttl ${formatGoDuration(cfg.maxTtlMs)}`);
  }
  if (cfg.servingCertTtlMs < 1000) throw new ConfigError('--serving-cert-ttl: must be at least 1s');
  if (cfg.servingDns.length === 0) throw new ConfigError('--serving-dns: at least one DNS name is required');
  if (cfg.maxRequestBytes < 1024 || cfg.maxRequestBytes > 16 * 1024 * 1024) throw new ConfigError('--max-request-bytes: must be between 1024 and 16777216');
  if (cfg.admission.maxPending < 1) throw new ConfigError('--max-pending: must be at least 1');
  if (cfg.limits.maxConnections < 1) throw new ConfigError('--max-connections: must be at least 1');
  if (cfg.limits.maxConcurrentStreams < 1) throw new ConfigError('--max-concurrent-streams: must be at least 1');
  if (cfg.limits.idleTimeoutMs < 10_000) throw new ConfigError('--idle-timeout: must be at least 10s (agents ping every 30s)');
  if (cfg.shutdownDelayMs >= cfg.shutdownGraceMs) {
    throw new ConfigError(`--shutdown-delay: ${formatGoDuration(cfg.shutdownDelayMs)} must be shorter than --shutdown-grace ${formatGoDuration(cfg.shutdownGraceMs)} (the delay is part of the grace)`);
  }
  if (cfg.reloadIntervalMs < 1000) throw new ConfigError('--reload-interval: must be at least 1s');
  if (cfg.jwksRefreshIntervalMs < 1000) throw new ConfigError('--jwks-refresh-interval: must be at least 1s');
  if (cfg.maxCsrBytes < 1024 || cfg.maxCsrBytes > cfg.maxRequestBytes) throw new ConfigError('--max-csr-bytes: must be between 1024 and --max-request-bytes');
  if (cfg.maxPendingSharePercent < 1 || cfg.maxPendingSharePercent > 100) throw new ConfigError('--max-pending-share: must be a percentage from 1 to 100');
  if (cfg.clientCertMaxTtlMs < 60_000) throw new ConfigError('--client-cert-max-ttl: must be at least 1m');
  if (cfg.logBufferBytes < 65536) throw new ConfigError('--log-buffer-bytes: must be at least 65536');
  const grace = parseGrace(str('serving-cert-grace')!, parseDuration);
  if (!grace) throw new ConfigError(`--serving-cert-grace: invalid value "${str('serving-cert-grace')}" (want a percentage such as 50% or a duration such as 6h)`);
  cfg.servingCertGrace = grace;
  if (values.get('self-signed')) {
    const key = str('self-signed-key')!;
    if (!KEY_SPECS.includes(key as KeySpec)) throw new ConfigError(`--self-signed-key: invalid value "${key}" (want one of ${KEY_SPECS.join(', ')})`);
    const pct = values.get('root-grace-percentile') as number;
    if (pct < 1 || pct > 99) throw new ConfigError(`--root-grace-percentile: invalid value "${pct}" (want 1 to 99)`);
    cfg.selfSigned = { dir: str('self-signed-dir'), ttlMs: ms('self-signed-ttl'), key: key as KeySpec, gracePercentile: pct, checkIntervalMs: ms('root-check-interval') };
  }
  const jwksFile = str('jwks-file');
  const jwksUri = str('jwks-uri');
  const issuer = str('jwt-issuer');
  if (cfg.jwtIssuersFile) {
    const single = (['jwt-issuer', 'jwks-file', 'jwks-uri'] as const).find((f) => str(f));
    if (single) throw new ConfigError(`--jwt-issuers-file and --${single}: give one, not both (the single-issuer flags are a one-entry issuers file)`);
  }
  if (jwksFile && jwksUri) throw new ConfigError('--jwks-file and --jwks-uri: give one, not both');
  if ((jwksFile || jwksUri) && !issuer) throw new ConfigError('--jwt-issuer: required with --jwks-file or --jwks-uri');
  if (issuer && !jwksFile && !jwksUri) throw new ConfigError('--jwt-issuer: needs --jwks-file or --jwks-uri to verify tokens');
  if (jwksUri) {
    let url: URL;
    try {
      url = new URL(jwksUri);
    } catch {
      throw new ConfigError(`--jwks-uri: invalid value "${jwksUri}" (want an https:// URL)`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(`--jwks-uri: invalid value "${jwksUri}" (want an https:// URL)`);
  }
  if (issuer) cfg.jwt = { issuer, audience: str('jwt-audience')!, jwksFile, jwksUri };
  // issue #17: with --self-signed, --signing-key names the root's key on the token; there is no cacerts reload to re-read a file.
  if (cfg.signingKey?.uriFile && cfg.selfSigned) throw new ConfigError('--signing-key-file: not with --self-signed (nothing reloads the URI); give --signing-key');
  cfg.kubernetes = kubernetesConfig(values, str('jwt-audience')!);
  return cfg;
}

/** issue #19: the transport-limit flags, checked. */
function transportConfig(values: Map<string, unknown>): ServeConfig['transport'] {
  const int = (n: string) => values.get(n) as number;
  const t: ServeConfig['transport'] = {
    handshakeTimeoutMs: int('handshake-timeout'),
    maxHandshakes: int('max-handshakes'),
    maxHandshakesPerSource: int('max-handshakes-per-source'),
    maxConnectionsPerSource: int('max-connections-per-source'),
    unauthenticatedStreams: int('unauthenticated-streams'),
    unauthenticatedWindowBytes: int('unauthenticated-window'),
    requestReceiveTimeoutMs: int('request-receive-timeout'),
    maxConnectionRequestBytes: int('max-connection-request-bytes'),
    maxSourceRequestBytes: int('max-source-request-bytes'),
    maxBufferedRequestBytes: int('max-buffered-request-bytes'),
  };
  if (t.handshakeTimeoutMs < 100 || t.handshakeTimeoutMs > 120_000) throw new ConfigError('--handshake-timeout: must be between 100ms and 2m');
  for (const [flag, v] of [['max-handshakes', t.maxHandshakes], ['max-handshakes-per-source', t.maxHandshakesPerSource], ['max-connections-per-source', t.maxConnectionsPerSource], ['unauthenticated-streams', t.unauthenticatedStreams]] as const) {
    if (v < 1) throw new ConfigError(`--${flag}: must be at least 1`);
  }
  if (t.unauthenticatedWindowBytes < 1024 || t.unauthenticatedWindowBytes > 2 ** 31 - 1) throw new ConfigError('--unauthenticated-window: must be between 1024 and 2147483647 bytes');
  if (t.requestReceiveTimeoutMs < 1000) throw new ConfigError('--request-receive-timeout: must be at least 1s');
  if (t.maxConnectionRequestBytes < 1024) throw new ConfigError('--max-connection-request-bytes: must be at least 1024');
  if (t.maxSourceRequestBytes < t.maxConnectionRequestBytes) throw new ConfigError('--max-source-request-bytes: must be at least --max-connection-request-bytes');
  if (t.maxBufferedRequestBytes < t.maxSourceRequestBytes) throw new ConfigError('--max-buffered-request-bytes: must be at least --max-source-request-bytes');
  return t;
}

/** The issue #17 flags, checked; undefined when the key is in the cacerts folder. The URI itself is parsed at load. */
function signingKeyConfig(values: Map<string, unknown>): SigningKeyConfig | undefined {
  const str = (n: string) => (values.get(n) as string | undefined) || undefined;
  const uri = str('signing-key');
  const uriFile = str('signing-key-file');
  if (uri && uriFile) throw new ConfigError('--signing-key and --signing-key-file: give one, not both');
  if (!uri && !uriFile) {
    for (const flag of ['pkcs11-module', 'pkcs11-pin-file']) if (str(flag)) throw new ConfigError(`--${flag}: only meaningful with --signing-key or --signing-key-file`);
    return undefined;
  }
  const sessions = values.get('pkcs11-sessions') as number;
  if (sessions < 1 || sessions > 1024) throw new ConfigError('--pkcs11-sessions: must be between 1 and 1024');
  const signTimeoutMs = values.get('pkcs11-sign-timeout') as number;
  if (signTimeoutMs !== 0 && signTimeoutMs < 100) throw new ConfigError('--pkcs11-sign-timeout: must be 0 (no timeout) or at least 100ms');
  return { uri, uriFile, modulePath: str('pkcs11-module'), pinFile: str('pkcs11-pin-file'), sessions, signTimeoutMs };
}

/** The Kubernetes flags, checked; undefined when none of them asks for the API server. */
function kubernetesConfig(values: Map<string, unknown>, audience: string): KubeOptions | undefined {
  const str = (n: string) => (values.get(n) as string | undefined) || undefined;
  const trusted = (values.get('trusted-node-accounts') as string[] | undefined) ?? [];
  try {
    parseNodeAccounts(trusted);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const concurrency = values.get('token-review-concurrency') as number;
  if (concurrency < 1) throw new ConfigError('--token-review-concurrency: must be at least 1');
  const selector = str('root-configmap-namespace-selector');
  const publish = values.get('publish-root-configmap') === true;
  const publishCrl = values.get('publish-crl-configmap') === true;
  if (selector && !publish && !publishCrl) throw new ConfigError('--root-configmap-namespace-selector: only meaningful with --publish-root-configmap or --publish-crl-configmap');
  const secret = str('istiod-cert-secret');
  let istiodCert: KubeOptions['istiodCert'];
  if (secret) {
    const [namespace, name, ...rest] = secret.split('/');
    if (rest.length > 0 || !namespace || !name) throw new ConfigError(`--istiod-cert-secret: invalid value "${secret}" (want namespace/name, e.g. istio-system/istiod-tls)`);
    const dnsNames = values.get('istiod-dns') as string[];
    if (dnsNames.length === 0) throw new ConfigError('--istiod-dns: at least one DNS name is required');
    const ttlMs = values.get('istiod-cert-ttl') as number;
    if (ttlMs < 60_000) throw new ConfigError('--istiod-cert-ttl: must be at least 1m');
    istiodCert = { namespace, name, dnsNames, ttlMs };
  }
  const options: KubeOptions = {
    kubeconfig: str('kubeconfig'),
    tokenReview: values.get('token-review') === true ? { audiences: [audience], cacheTtlMs: values.get('token-review-cache-ttl') as number, concurrency } : undefined,
    trustedNodeAccounts: trusted,
    publishRootConfigMap: publish ? { namespaceSelector: selector } : undefined,
    leaderElectionNamespace: str('leader-election-namespace'),
    istiodCert,
    remoteKubeconfigDir: str('remote-kubeconfig-dir'),
    remotePollIntervalMs: values.get('reload-interval') as number,
    publishCrlConfigMap: publishCrl ? { namespaceSelector: selector } : undefined,
    publishClusterTrustBundle: values.get('publish-cluster-trust-bundle') === true ? {} : undefined,
  };
  if (options.remoteKubeconfigDir && !options.tokenReview && trusted.length === 0) {
    throw new ConfigError('--remote-kubeconfig-dir: only meaningful with --token-review or --trusted-node-accounts (what the remote API servers are asked)');
  }
  const needed = options.tokenReview || trusted.length > 0 || options.publishRootConfigMap || options.istiodCert || options.publishCrlConfigMap || options.publishClusterTrustBundle;
  return needed ? options : undefined;
}

/** Checks that need the final config (after --dev filled in its defaults). */
export function requireAuthenticator(cfg: ServeConfig): void {
  if (!cfg.jwt && !cfg.jwtIssuersFile && !cfg.kubernetes?.tokenReview && !cfg.clientCertAuth) {
    throw new ConfigError('--jwt-issuer: no authenticator configured; set --jwt-issuer with --jwks-file or --jwks-uri, or --token-review, or --client-cert-auth');
  }
}
