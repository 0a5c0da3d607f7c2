import type { Server as HttpServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { ClientCertAuthenticator, ImpersonationAuthorizer, JwtAuthenticator, parseNodeAccounts, TokenReviewAuthenticator, type Authenticator } from '../auth/index.js';
import type { KubeOptions, KubernetesIntegration } from '../kube/index.js';
import { Authority, loadCacerts, SelfSignedRoot, type Grace, type SelfSignedOptions } from '../ca/index.js';
import { AuditLog, CaMetrics, startMonitoringServer, type Logger } from '../observability/index.js';
import { BundleLifecycle, warnAboutSigner } from './lifecycle.js';
import { subjectText, type SigningBundle, type LoadedCertificate } from '../pki/index.js';
import { createCertificateHandler } from './certificate-service.js';
import { Admission, type AdmissionOptions } from './admission.js';
import { HealthService } from './health.js';
import { loadServices } from './proto.js';
import { ClientCaProvider, ServingTls } from './tls.js';
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
  /** Called whenever readiness changes (worker processes report it to the primary). */
  onReadiness?: ((ready: boolean) => void) | undefined;
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
  /** issue #19: limits before authentication (--handshake-timeout, --max-handshakes, --max-buffered-request-bytes, ...). */
  transport?: Partial<TransportLimits> | undefined;
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
  close(graceMs?: number): Promise<void>;
  /** issue #19: the connection and request accounting of the gRPC listener. */
  transport: TransportGuard;
}

const subjectOf = (c: LoadedCertificate) => subjectText(c.x509);

function describeBundle(bundle: SigningBundle) {
  return {
    layout: bundle.layout,
    signer: subjectOf(bundle.signingCert),
    signerSki: bundle.signingCert.facts.subjectKeyId?.toString('hex'),
    signerNotAfter: bundle.notAfter.toISOString(),
    algorithm: bundle.signer.algorithm.name,
    roots: bundle.roots.map(subjectOf),
    chainLength: bundle.chainPems.length,
  };
}

/** The transport limits: --max-connections and --max-concurrent-streams with the issue #19 flags. */
function transportLimits(limits: ConnectionLimits, options: ServiceOptions): TransportLimits {
  return { ...DEFAULT_TRANSPORT_LIMITS, maxConnections: limits.maxConnections, maxConcurrentStreams: limits.maxConcurrentStreams, ...options.transport };
}

function grpcAddress(l: Listen): string {
  return l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

/** Loads the bundle, issues the serving certificate, and starts the gRPC and monitoring listeners. */
export async function startService(options: ServiceOptions, logger: Logger): Promise<RunningService> {
  const selfSigned = options.selfSigned
    ? new SelfSignedRoot({ ...options.selfSigned, organization: options.trustDomain }, (event) =>
        logger.info({ dir: options.selfSigned?.dir ?? '(memory only)' }, `self-signed root ${event}`),
      )
    : undefined;
  const bundle = selfSigned ? selfSigned.bundle() : loadCacerts(options.cacerts);
  const authority = new Authority(bundle, { defaultTtlMs: options.defaultTtlMs, maxTtlMs: options.maxTtlMs });
  logger.info({ cacerts: selfSigned ? '(self-signed)' : options.cacerts, ...describeBundle(bundle) }, 'signing bundle loaded');
  warnAboutSigner(logger, bundle, options.maxTtlMs, options.signerExpiryWarningMs ?? 720 * 3_600_000);

  const metrics = new CaMetrics();
  let servingTls: ServingTls | undefined;
  const lifecycle = new BundleLifecycle(authority, options, metrics, logger, () => servingTls, selfSigned);
  lifecycle.recordBundle(bundle);
  metrics.lastReload.set(Date.now() / 1000);
  const serving = lifecycle.serving.current;
  // --client-cert-auth: the listener asks for (does not require) a client certificate, verified
  // against the current root bundle; a bundle change rebuilds the secure context.
  const clientCa = options.clientCertAuth ? new ClientCaProvider(authority.bundle.rootsPem) : null;
  if (clientCa) authority.on('bundle', (b) => clientCa.update(b.rootsPem));
  servingTls = new ServingTls(serving, clientCa);
  logger.info({ dnsNames: options.servingDns, notAfter: serving.notAfter.toISOString(), serial: serving.serialHex }, 'serving certificate issued');

  // Loaded only when asked for: @kubernetes/client-node is large.
  const kube: KubernetesIntegration | undefined = options.kubernetes
    ? (await import('../kube/index.js')).startKubernetes(options.kubernetes, { authority, registry: metrics.registry, logger })
    : undefined;

  // Fixed order: client certificate, JWT, TokenReview; the first that yields a caller wins.
  const authenticators: Authenticator[] = [];
  if (options.clientCertAuth) authenticators.push(new ClientCertAuthenticator({ trustDomain: options.trustDomain }));
  if (options.jwt) {
    authenticators.push(new JwtAuthenticator({ ...options.jwt, trustDomain: options.trustDomain }));
  }
  const tokenReview = options.kubernetes?.tokenReview;
  if (tokenReview && kube?.tokenReviewer) {
    authenticators.push(new TokenReviewAuthenticator({ ...tokenReview, reviewer: kube.tokenReviewer, trustDomain: options.trustDomain }));
  }
  const impersonation = kube?.pods
    ? new ImpersonationAuthorizer({ trustedNodeAccounts: parseNodeAccounts(options.kubernetes?.trustedNodeAccounts ?? []), pods: kube.pods, trustDomain: options.trustDomain })
    : undefined;

  const audit = new AuditLog(logger, options.auditLog);
  const admission = new Admission({ ...DEFAULT_ADMISSION, ...options.admission });
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const transport = new TransportGuard(transportLimits(limits, options), metrics);
  const services = loadServices();
  const health = new HealthService();
  const server = new grpc.Server({
    // Larger messages are refused by grpc-js with RESOURCE_EXHAUSTED before they reach the handler.
    'grpc.max_receive_message_length': options.maxRequestBytes ?? 64 * 1024,
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
  server.addService(services.ca.service, {
    CreateCertificate: createCertificateHandler({
      authority,
      authenticators,
      authOptions: { clusterId: options.clusterId },
      impersonation,
      metrics,
      logger,
      audit,
      admission,
      onAuthenticated: (peer) => transport.markAuthenticated(peer),
    }),
  });
  server.addService(services.health.service, health.handlers);
  const grpcPort = await new Promise<number>((resolve, reject) => {
    const credentials = new HardenedServerCredentials(servingTls.credentials, transport.limits);
    server.bindAsync(grpcAddress(options.listen), credentials, (err, port) => (err ? reject(err) : resolve(port)));
  });
  try {
    installTransportLimits(server, transport);
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  let accepting = true;
  const isReady = () => accepting && authority.isReady();
  let reported: boolean | undefined;
  const refreshHealth = () => {
    const ready = isReady();
    health.set(ready);
    if (ready !== reported) {
      reported = ready;
      options.onReadiness?.(ready);
    }
  };
  refreshHealth();
  const readinessTimer = setInterval(refreshHealth, 1000);
  readinessTimer.unref();
  authority.on('bundle', refreshHealth);

  let monitoring: { server: HttpServer; port: number } | undefined;
  const m = options.monitoringListen;
  try {
    if (m) monitoring = await startMonitoringServer({ host: m.host, port: m.port, registry: metrics.registry, isReady });
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  lifecycle.start();
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
    async close(graceMs = 5000) {
      accepting = false;
      refreshHealth();
      clearInterval(readinessTimer);
      lifecycle.stop();
      health.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await kube?.close();
      audit.close();
      if (monitoring) {
        const closed = new Promise<void>((resolve) => monitoring!.server.close(() => resolve()));
        monitoring.server.closeAllConnections();
        await closed;
      }
    },
  };
}
