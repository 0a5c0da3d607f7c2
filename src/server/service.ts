import type { Server as HttpServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { JwtAuthenticator, type Authenticator } from '../auth/index.js';
import { Authority, loadCacerts } from '../ca/index.js';
import { CaMetrics, startMonitoringServer, type Logger, type TrackedCertificate } from '../observability/index.js';
import type { SigningBundle, LoadedCertificate } from '../pki/index.js';
import { createCertificateHandler } from './certificate-service.js';
import { HealthService } from './health.js';
import { loadServices } from './proto.js';
import { ServingTls } from './tls.js';

interface Listen {
  host: string;
  port: number;
}

/** What the service needs to run; the CLI's ServeConfig satisfies it. */
export interface ServiceOptions {
  cacerts: string;
  listen: Listen;
  monitoringListen: Listen;
  trustDomain: string;
  defaultTtlMs: number;
  maxTtlMs: number;
  servingDns: string[];
  servingCertTtlMs: number;
  jwt: { issuer: string; audience: string; jwksFile?: string | undefined; jwksUri?: string | undefined } | undefined;
  clusterId: string | undefined;
  maxRequestBytes?: number;
}

export interface RunningService {
  authority: Authority;
  metrics: CaMetrics;
  health: HealthService;
  servingTls: ServingTls;
  grpcPort: number;
  monitoringPort: number;
  isReady(): boolean;
  close(graceMs?: number): Promise<void>;
}

const subjectOf = (c: LoadedCertificate) => (c.x509.subject ?? '').replace(/\n/g, ', ');

/** The certificates of a bundle by role, for the expiry metrics. */
export function trackedCertificates(bundle: SigningBundle): TrackedCertificate[] {
  const track = (role: TrackedCertificate['role'], c: LoadedCertificate): TrackedCertificate => ({
    role,
    subject: subjectOf(c),
    serial: c.facts.serialHex,
    notAfter: new Date(c.x509.validTo),
  });
  const rootDers = bundle.roots.map((r) => r.der);
  const intermediates = bundle.chainCerts.filter(
    (c) => !c.der.equals(bundle.signingCert.der) && !rootDers.some((d) => d.equals(c.der)),
  );
  const unique = new Map<string, TrackedCertificate>();
  for (const t of [...bundle.roots.map((c) => track('root', c)), ...intermediates.map((c) => track('intermediate', c)), track('signer', bundle.signingCert)]) {
    unique.set(`${t.role}/${t.serial}/${t.subject}`, t);
  }
  return [...unique.values()];
}

export function recordBundleMetrics(metrics: CaMetrics, bundle: SigningBundle, maxTtlMs: number, now = new Date()): void {
  const firstRoot = bundle.roots[0];
  const firstChain = bundle.chainCerts[0];
  metrics.setBundleCertificates(
    trackedCertificates(bundle),
    firstRoot ? new Date(firstRoot.x509.validTo) : undefined,
    firstChain ? new Date(firstChain.x509.validTo) : undefined,
  );
  metrics.signerBeforeMaxTtl.set(bundle.notAfter.getTime() - now.getTime() < maxTtlMs ? 1 : 0);
}

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

function grpcAddress(l: Listen): string {
  return l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

/** Loads the bundle, issues the serving certificate, and starts the gRPC and monitoring listeners. */
export async function startService(options: ServiceOptions, logger: Logger): Promise<RunningService> {
  const bundle = loadCacerts(options.cacerts);
  const authority = new Authority(bundle, { defaultTtlMs: options.defaultTtlMs, maxTtlMs: options.maxTtlMs });
  logger.info({ cacerts: options.cacerts, ...describeBundle(bundle) }, 'signing bundle loaded');
  for (const w of bundle.warnings) logger.warn({ cacerts: options.cacerts }, w);
  if (bundle.notAfter.getTime() - Date.now() < options.maxTtlMs) {
    logger.warn({ signerNotAfter: bundle.notAfter.toISOString() }, 'the signing certificate expires sooner than --max-ttl from now: leaves will be clamped to its expiry');
  }

  const metrics = new CaMetrics();
  recordBundleMetrics(metrics, bundle, options.maxTtlMs);
  metrics.lastReload.set(Date.now() / 1000);

  const serving = authority.issueServing(options.servingDns, options.servingCertTtlMs);
  const servingTls = new ServingTls(serving);
  metrics.setServingCertificate({ role: 'serving', subject: options.servingDns.join(','), serial: serving.serialHex, notAfter: serving.notAfter });
  logger.info({ dnsNames: options.servingDns, notAfter: serving.notAfter.toISOString(), serial: serving.serialHex }, 'serving certificate issued');

  const authenticators: Authenticator[] = [];
  if (options.jwt) {
    authenticators.push(new JwtAuthenticator({ ...options.jwt, trustDomain: options.trustDomain }));
  }

  const services = loadServices();
  const health = new HealthService();
  const server = new grpc.Server({
    'grpc.max_receive_message_length': options.maxRequestBytes ?? 64 * 1024,
    // istio-agent pings every 30 s; allow that without a GOAWAY for too many pings.
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  });
  server.addService(services.ca.service, {
    CreateCertificate: createCertificateHandler({
      authority,
      authenticators,
      authOptions: { clusterId: options.clusterId },
      metrics,
      logger,
    }),
  });
  server.addService(services.health.service, health.handlers);
  const grpcPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync(grpcAddress(options.listen), servingTls.credentials, (err, port) => (err ? reject(err) : resolve(port)));
  });
  let accepting = true;
  const isReady = () => accepting && authority.isReady();
  const refreshHealth = () => health.set(isReady());
  refreshHealth();
  const readinessTimer = setInterval(refreshHealth, 1000);
  readinessTimer.unref();
  authority.on('bundle', refreshHealth);

  let monitoring: { server: HttpServer; port: number };
  try {
    monitoring = await startMonitoringServer({ ...options.monitoringListen, registry: metrics.registry, isReady });
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  logger.info({ grpc: grpcAddress({ ...options.listen, port: grpcPort }), monitoring: grpcAddress({ ...options.monitoringListen, port: monitoring.port }) }, 'svid-ca serving');

  return {
    authority,
    metrics,
    health,
    servingTls,
    grpcPort,
    monitoringPort: monitoring.port,
    isReady,
    async close(graceMs = 5000) {
      accepting = false;
      refreshHealth();
      clearInterval(readinessTimer);
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
      const closed = new Promise<void>((resolve) => monitoring.server.close(() => resolve()));
      monitoring.server.closeAllConnections();
      await closed;
    },
  };
}
