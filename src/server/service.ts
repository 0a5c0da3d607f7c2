import type { Server as HttpServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { ClientCertAuthenticator, ImpersonationAuthorizer, parseNodeAccounts, TokenReviewAuthenticator, type Authenticator, type KeySetReload } from '../auth/index.js';
import { buildClusters, type Clusters } from './clusters.js';
import type { KubeOptions, KubernetesIntegration } from '../kube/index.js';
import { Authority, loadCacertsWithFilesAsync, SelfSignedRoot, type Grace, type SelfSignedOptions, type SigningKeyConfig } from '../ca/index.js';
import { AuditLog, CaMetrics, keepMetrics, startMonitoringServer, type Logger } from '../observability/index.js';
import { openTokenKey, type BundleFeed } from './bundle-owner.js';
import { BundleLifecycle, describeBundle, warnAboutSigner } from './lifecycle.js';
import type { SigningBundle } from '../pki/index.js';
import { createCertificateHandler } from './certificate-service.js';
import { Admission, type AdmissionOptions } from './admission.js';
import { HealthService } from './health.js';
import { CREATE_CERTIFICATE_PATH, loadServices, type IstioCertificateRequest, type IstioCertificateResponse } from './proto.js';
import { ClientCaProvider, ServingTls } from './tls.js';
import { ListenError, probeListen } from './listen.js';
import { CallDrain } from './drain.js';
import { installUnaryFastPath, type FastPathStats } from './unary-fast-path.js';
import { frameCertificateResponse } from './response-frame.js';
import { DEFAULT_TRANSPORT_LIMITS, HardenedServerCredentials, installTransportLimits, TransportGuard, type TransportLimits } from './transport-limits.js';

interface Listen {
  host: string;
  port: number;
}

/** What the service needs to run; the CLI's ServeConfig satisfies it. */
export interface ServiceOptions {
  cacerts: string;
  listen: Listen;
  /** Undefined in a worker process: the primary serves monitoring for all workers. */
  monitoringListen: Listen | undefined;
  /**
   * Called whenever readiness or its detail changes (worker processes report both to the primary,
   * which serves /readyz for all of them). `detail`: the /readyz lines after the verdict (issue #18:
   * each cluster's authenticator state; empty for a single-cluster CA).
   */
  onReadiness?: ((ready: boolean, detail: string[]) => void) | undefined;
  trustDomain: string;
  defaultTtlMs: number;
  maxTtlMs: number;
  servingDns: string[];
  servingCertTtlMs: number;
  jwt: { issuer: string; audience: string; jwksFile?: string | undefined; jwksUri?: string | undefined; jwksCooldownMs?: number | undefined } | undefined;
  clusterId: string | undefined;
  maxRequestBytes?: number;
  reloadIntervalMs?: number;
  allowRootReplacement?: boolean;
  servingCertGrace?: Grace;
  signerExpiryWarningMs?: number;
  selfSigned?: SelfSignedOptionsInput | undefined;
  /** Kubernetes integration: TokenReview, impersonation, root ConfigMaps, istiod-tls (src/kube). */
  kubernetes?: KubeOptions | undefined;
  /** --client-cert-auth: request client certificates, verified against the current root bundle. */
  clientCertAuth?: boolean | undefined;
  /** --audit-log: also append audit records to this file; issuance stops while it cannot be written. */
  auditLog?: string | undefined;
  /** Admission control (--max-pending, --priority-namespaces). */
  admission?: Partial<AdmissionOptions> | undefined;
  /** Connection limits (--max-connections, --max-concurrent-streams, --idle-timeout). */
  limits?: Partial<ConnectionLimits> | undefined;
  /** --jwks-refresh-interval: refetch a --jwks-uri this often (a shorter Cache-Control max-age wins). */
  jwksRefreshIntervalMs?: number | undefined;
  /** --max-csr-bytes (default DEFAULT_MAX_CSR_BYTES). */
  maxCsrBytes?: number | undefined;
  /** --max-pending-share, percent (default DEFAULT_MAX_PENDING_SHARE). */
  maxPendingSharePercent?: number | undefined;
  /** --client-cert-max-ttl, ms (default DEFAULT_CLIENT_CERT_MAX_TTL_MS). */
  clientCertMaxTtlMs?: number | undefined;
  /** issue #19: limits before authentication (--handshake-timeout, --max-handshakes, --max-buffered-request-bytes, ...). */
  transport?: Partial<TransportLimits> | undefined;
  /** --signing-key and the --pkcs11-* flags (issue #17): the signing key is on a PKCS#11 token. */
  signingKey?: SigningKeyConfig | undefined;
  /** issue #18: --jwt-issuers-file, instead of `jwt`. */
  jwtIssuersFile?: string | undefined;
  /** issue #18: --jwt-audience, the default audiences of an issuers-file entry (default istio-ca). */
  jwtAudience?: string | undefined;
  /** Log the same cacerts refusal again at most this often, ms (default 10 minutes; tests shorten it). */
  refusalLogIntervalMs?: number | undefined;
  /** issue #14: --grpc-fast-path, CreateCertificate served on node:http2 streams beside grpc-js (default true). */
  grpcFastPath?: boolean | undefined;
}

export interface ConnectionLimits {
  maxConnections: number;
  maxConcurrentStreams: number;
  idleTimeoutMs: number;
}

/** Defaults sized for istio-agent: one long-lived HTTP/2 connection per agent with a ping every 30 s. */
/** 2,048 pending calls drain in about half a second at the measured issuance rate; past that, agents back off. */
export const DEFAULT_ADMISSION: AdmissionOptions = { maxPending: 2048, priorityNamespaces: ['istio-system'] };

export const DEFAULT_LIMITS: ConnectionLimits = { maxConnections: 20_000, maxConcurrentStreams: 128, idleTimeoutMs: 15 * 60_000 };

/** Self-signed mode settings; the root's Organization is the trust domain, as istiod writes it. */
export type SelfSignedOptionsInput = Omit<SelfSignedOptions, 'organization'>;

export interface RunningService {
  authority: Authority;
  lifecycle: BundleLifecycle;
  metrics: CaMetrics;
  health: HealthService;
  servingTls: ServingTls;
  /** The Kubernetes parts, when options.kubernetes asked for any. */
  kube: KubernetesIntegration | undefined;
  grpcPort: number;
  /** 0 when this process serves no monitoring listener (a worker). */
  monitoringPort: number;
  isReady(): boolean;
  /** See the implementation: readiness off, `delayMs` still answering, GOAWAY, drain within `graceMs`. */
  close(graceMs?: number, delayMs?: number): Promise<void>;
  /** issue #19: the connection and request accounting of the gRPC listener. */
  transport: TransportGuard;
  /** issue #14: the CreateCertificate fast path's counts; undefined with --no-grpc-fast-path. */
  fastPath: FastPathStats | undefined;
}

/** The transport limits: --max-connections and --max-concurrent-streams with the issue #19 flags. */
function transportLimits(limits: ConnectionLimits, options: ServiceOptions): TransportLimits {
  return { ...DEFAULT_TRANSPORT_LIMITS, maxConnections: limits.maxConnections, maxConcurrentStreams: limits.maxConcurrentStreams, ...options.transport };
}

/**
 * Counts and logs a load of the token issuer's JWKS (svid_ca_jwks_reloads_total{result}) and records whether it
 * failed (svid_ca_jwks_last_reload_failed, 1 or 0). A key source reports a load that changed nothing as nothing,
 * so the gauge keeps the latest outcome: 1 across re-reads of the same bad file, 0 across unchanged good ones.
 */
function reportJwksReload(reload: KeySetReload, metrics: CaMetrics, logger: Logger): void {
  metrics.jwksReloads.inc({ result: reload.result });
  metrics.jwksLastReloadFailed.set(reload.result === 'failure' ? 1 : 0);
  if (reload.result === 'failure') {
    logger.error({ jwks: reload.source, problem: reload.error.message }, 'JWKS reload failed; keeping the current keys');
    return;
  }
  const changed = reload.added.length > 0 || reload.removed.length > 0;
  const fields = { jwks: reload.source, keys: reload.keys, added: reload.added, removed: reload.removed, skipped: reload.skipped.length > 0 ? reload.skipped : undefined };
  if (changed || reload.skipped.length > 0) logger.info(fields, 'JWKS loaded');
  else logger.debug(fields, 'JWKS unchanged');
}

function grpcAddress(l: Listen): string {
  return l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

/** A worker of --workers: the primary owns the bundle's lifecycle (see bundle-owner.ts). */
export type WorkerService = Omit<RunningService, 'lifecycle'>;

/**
 * Loads the bundle, issues the serving certificate, and starts the gRPC and monitoring listeners.
 * With options.feed (a --workers worker) the bundle and serving certificate come from the primary
 * instead: no folder is read, no reloader or renewal runs here, and the per-server metrics are left
 * to the primary.
 */
export async function startService(options: ServiceOptions & { feed?: undefined }, logger: Logger): Promise<RunningService>;
export async function startService(options: ServiceOptions & { feed: BundleFeed }, logger: Logger): Promise<WorkerService>;
export async function startService(options: ServiceOptions & { feed?: BundleFeed | undefined }, logger: Logger): Promise<RunningService | WorkerService> {
  const feed = options.feed;
  // issue #17: a worker checked the primary's texts with its own token source (the feed's); else opened here.
  const tokenKey = feed ? feed.tokenKey : openTokenKey(options.signingKey, logger);
  let selfSigned: SelfSignedRoot | undefined;
  let bundle: SigningBundle;
  try {
    // With --signing-key the self-signed root's key is on the token (issue #17).
    selfSigned = options.selfSigned && !feed
      ? new SelfSignedRoot({ ...options.selfSigned, organization: options.trustDomain, servingDns: options.servingDns, tokenKey }, (event) =>
          logger.info({ dir: options.selfSigned?.dir ?? '(memory only)', signingKey: tokenKey?.describe() }, `self-signed root ${event}`),
        )
      : undefined;
    // Loaded asynchronously: pkijs runs on this event loop, and the process keeps no path-validation thread (issue #14).
    bundle = feed ? feed.bundle : selfSigned ? await selfSigned.bundleAsync() : (await loadCacertsWithFilesAsync(options.cacerts, new Date(), { trustDomain: options.trustDomain, servingDns: options.servingDns }, tokenKey)).bundle;
  } catch (err) {
    tokenKey?.close();
    throw err;
  }
  const authority = new Authority(bundle, { defaultTtlMs: options.defaultTtlMs, maxTtlMs: options.maxTtlMs });
  if (!feed) {
    logger.info({ cacerts: selfSigned ? '(self-signed)' : options.cacerts, ...describeBundle(bundle), signingKey: tokenKey?.describe() }, 'signing bundle loaded');
    warnAboutSigner(logger, bundle, options.maxTtlMs, options.signerExpiryWarningMs ?? 720 * 3_600_000);
  }

  const metrics = new CaMetrics();
  let servingTls: ServingTls | undefined;
  const lifecycle = feed ? undefined : new BundleLifecycle(authority, { ...options, tokenKey }, metrics, logger, () => servingTls, selfSigned);
  if (lifecycle) {
    lifecycle.recordBundle(bundle);
    metrics.lastReload.set(Date.now() / 1000);
  } else {
    keepMetrics(metrics, 'per-process');
  }
  const serving = lifecycle ? lifecycle.serving.current : feed!.serving;
  // --client-cert-auth: the listener asks for (does not require) a client certificate, verified
  // against the current root bundle; a bundle change rebuilds the secure context.
  const clientCa = options.clientCertAuth ? new ClientCaProvider(authority.bundle.rootsPem) : null;
  if (clientCa) authority.on('bundle', (b) => clientCa.update(b.rootsPem));
  servingTls = new ServingTls(serving, clientCa);
  if (lifecycle) {
    const s = lifecycle.serving.current;
    logger.info({ dnsNames: options.servingDns, notAfter: s.notAfter.toISOString(), serial: s.serialHex }, 'serving certificate issued');
  }
  feed?.onUpdate((u) => {
    if (u.bundle) authority.replaceBundle(u.bundle);
    if (u.serving) servingTls!.update(u.serving);
  });

  // Loaded only when asked for: @kubernetes/client-node is large.
  const kube: KubernetesIntegration | undefined = options.kubernetes
    ? (await import('../kube/index.js')).startKubernetes(options.kubernetes, {
        authority,
        registry: metrics.registry,
        logger,
        onRemoteReload: (result) => metrics.remoteKubeconfigReloads.inc({ result }),
      })
    : undefined;

  // Fixed order: client certificate, JWT, TokenReview; the first that yields a caller wins.
  const authenticators: Authenticator[] = [];
  if (options.clientCertAuth) authenticators.push(new ClientCertAuthenticator({ trustDomain: options.trustDomain, maxTtlMs: options.clientCertMaxTtlMs, revocation: authority }));
  // issue #18: the token issuers (one per cluster) and the API server of each cluster.
  const clusters: Clusters = buildClusters(options, kube, metrics, logger, (reload) => reportJwksReload(reload, metrics, logger));
  if (clusters.jwt) authenticators.push(clusters.jwt);
  const tokenReview = options.kubernetes?.tokenReview;
  if (tokenReview && kube?.tokenReviewer) {
    // The local cluster's trust domain follows its issuers-file entry too (--trust-domain without one).
    const localCluster = options.clusterId ?? '';
    const local = new TokenReviewAuthenticator({ ...tokenReview, reviewer: kube.tokenReviewer, trustDomain: () => clusters.trustDomainOf(localCluster) });
    authenticators.push(kube.remotes ? clusters.tokenReview(local, tokenReview) : local);
  }
  const impersonation = kube?.pods
    ? new ImpersonationAuthorizer({
        trustedNodeAccounts: parseNodeAccounts(options.kubernetes?.trustedNodeAccounts ?? []),
        pods: kube.remotes ? clusters.pods(kube.pods) : kube.pods,
        trustDomain: options.trustDomain,
      })
    : undefined;

  const audit = new AuditLog(logger, options.auditLog);
  const admission = new Admission({ ...DEFAULT_ADMISSION, ...options.admission, maxPendingShare: options.maxPendingSharePercent ?? options.admission?.maxPendingShare });
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const transport = new TransportGuard(transportLimits(limits, options), metrics);
  const services = loadServices();
  const health = new HealthService();
  const maxRequestBytes = options.maxRequestBytes ?? 64 * 1024;
  const server = new grpc.Server({
    // Larger messages are refused by grpc-js (and the fast path) with RESOURCE_EXHAUSTED before they reach the handler.
    'grpc.max_receive_message_length': maxRequestBytes,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    'grpc.max_connection_idle_ms': limits.idleTimeoutMs,
    // istio-agent pings every 30 s; allow that (even between calls) without a GOAWAY for too many pings.
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    // channelz bookkeeping runs on every call (~1% of the CPU under load) and nothing here serves it.
    'grpc.enable_channelz': 0,
  });
  const drain = new CallDrain();
  const createCertificate = drain.wrap(createCertificateHandler({
    authority,
    authenticators,
    authOptions: clusters.authOptions,
    clusterLabel: clusters.authOptions.clusters ? (header) => clusters.label(header) : undefined,
    impersonation,
    metrics,
    logger,
    audit,
    admission,
    maxCsrBytes: options.maxCsrBytes,
    shuttingDown: () => drain.expired,
    onAuthenticated: (peer) => transport.markAuthenticated(peer),
    peerChain: (peer) => transport.peerCertificateChain(peer),
  }));
  server.addService(services.ca.service, { CreateCertificate: createCertificate });
  server.addService(services.health.service, health.handlers);
  const grpcPort = await new Promise<number>((resolve, reject) => {
    const credentials = new HardenedServerCredentials(servingTls.credentials, transport.limits);
    server.bindAsync(grpcAddress(options.listen), credentials, (err, port) => (err ? reject(err) : resolve(port)));
  }).catch(async (err: Error) => {
    // grpc-js says only "No address added out of total 1 resolved": find out why, naming the flag.
    await probeListen('--listen', options.listen);
    throw new ListenError('--listen', options.listen, err);
  });
  let fastPath: FastPathStats | undefined;
  try {
    // issue #14: before the transport limits, whose 'stream' listener must run after the one that answers.
    if (options.grpcFastPath ?? true) {
      const method = services.ca.service.CreateCertificate!;
      fastPath = installUnaryFastPath(server, {
        path: CREATE_CERTIFICATE_PATH,
        handler: createCertificate,
        maxReceiveMessageBytes: maxRequestBytes,
        deserialize: (message) => method.requestDeserialize(message) as IstioCertificateRequest,
        serialize: (response: IstioCertificateResponse) => method.responseSerialize(response),
        frame: frameCertificateResponse,
      });
    }
    installTransportLimits(server, transport);
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  let accepting = true;
  const isReady = () => accepting && authority.isReady();
  let reported: string | undefined;
  const refreshHealth = () => {
    const ready = isReady();
    health.set(ready);
    if (!options.onReadiness) return;
    const detail = clusters.describe();
    const state = JSON.stringify([ready, detail]);
    if (state !== reported) {
      reported = state;
      options.onReadiness(ready, detail);
    }
  };
  refreshHealth();
  const readinessTimer = setInterval(refreshHealth, 1000);
  readinessTimer.unref();
  authority.on('bundle', refreshHealth);

  let monitoring: { server: HttpServer; port: number } | undefined;
  const m = options.monitoringListen;
  try {
    if (m) monitoring = await startMonitoringServer({ host: m.host, port: m.port, registry: metrics.registry, isReady, readinessDetail: () => clusters.describe() });
  } catch (err) {
    server.forceShutdown();
    throw m ? new ListenError('--monitoring-listen', m, err) : err;
  }
  lifecycle?.start();
  logger.info(
    { grpc: grpcAddress({ ...options.listen, port: grpcPort }), monitoring: m && monitoring ? grpcAddress({ host: m.host, port: monitoring.port }) : '(primary process)' },
    'svid-ca serving',
  );

  return {
    authority,
    lifecycle,
    metrics,
    health,
    servingTls,
    kube,
    grpcPort,
    monitoringPort: monitoring?.port ?? 0,
    isReady,
    transport,
    fastPath,
    /**
     * Graceful stop, in the order Kubernetes needs (issue #13): readiness NOT_SERVING at once (gRPC
     * health and /readyz) while still answering for `delayMs` (--shutdown-delay), so the endpoint is
     * removed before the listener goes; then GOAWAY on every connection (grpc-js tryShutdown: agents
     * reconnect to another replica) and the listener closed; then wait for the calls in flight, and
     * only those: when the last is answered the sessions are closed. `graceMs` (--shutdown-grace)
     * bounds the whole, delay included; calls still unanswered at its end get UNAVAILABLE, and no
     * certificate is issued after that.
     */
    async close(graceMs = 5000, delayMs = 0) {
      const deadline = Date.now() + graceMs;
      accepting = false;
      refreshHealth();
      clearInterval(readinessTimer);
      lifecycle?.stop();
      clusters.close();
      const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));
      if (delayMs > 0) {
        logger.info({ shutdownDelay: `${delayMs / 1000}s` }, 'not ready; still answering during --shutdown-delay so the endpoint is removed first');
        await sleep(Math.min(delayMs, graceMs));
      }
      health.close();
      const sessionsClosed = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      const done = await Promise.race([drain.idle().then(() => true), sleep(deadline - Date.now()).then(() => false)]);
      if (!done) logger.warn({ calls: drain.expire() }, 'shutdown grace over: calls still in flight answered UNAVAILABLE');
      // Answers are written; give their bytes a moment to leave before the sessions are cut.
      await Promise.race([sessionsClosed, sleep(Math.min(1000, Math.max(deadline - Date.now(), 100)))]);
      server.forceShutdown();
      await kube?.close();
      tokenKey?.close();
      audit.close();
      if (monitoring) {
        const closed = new Promise<void>((resolve) => monitoring!.server.close(() => resolve()));
        monitoring.server.closeAllConnections();
        await closed;
      }
    },
  };
}
