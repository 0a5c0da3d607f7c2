import cluster, { type Worker } from 'node:cluster';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Server as HttpServer } from 'node:http';
import { AggregatorRegistry, type PrometheusContentType, type Registry } from 'prom-client';
import { startMonitoringServer, type Logger } from '../observability/index.js';
import { ListenError } from './listen.js';
import { isBundleMessage, type PrimaryBundle } from './bundle-owner.js';

/**
 * Cores this process may use: the CPU affinity (availableParallelism) capped by a cgroup CPU quota,
 * so that a pod limited to 2 CPUs on a 64-core node runs 2 workers, not 64.
 */
export function usableCores(cgroupRoot = '/sys/fs/cgroup'): number {
  let cores = availableParallelism();
  const quota = (text: string, period: string) => {
    const q = Number(text);
    const p = Number(period);
    if (Number.isFinite(q) && q > 0 && Number.isFinite(p) && p > 0) cores = Math.min(cores, Math.max(1, Math.ceil(q / p)));
  };
  try {
    const [q, p] = readFileSync(join(cgroupRoot, 'cpu.max'), 'utf8').trim().split(/\s+/);
    if (q && q !== 'max' && p) quota(q, p);
  } catch {
    try {
      quota(readFileSync(join(cgroupRoot, 'cpu', 'cpu.cfs_quota_us'), 'utf8').trim(), readFileSync(join(cgroupRoot, 'cpu', 'cpu.cfs_period_us'), 'utf8').trim());
    } catch {
      // no cgroup CPU limit visible
    }
  }
  return cores;
}

/** What a worker process tells the primary (besides BundleMessage 'want-bundle'). */
export type WorkerMessage = { svidCa: 'ready'; ready: boolean; detail?: string[] } | { svidCa: 'failed'; message: string };

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  const tag = typeof m === 'object' && m !== null ? (m as { svidCa?: unknown }).svidCa : undefined;
  return tag === 'ready' || tag === 'failed';
}

/** In a worker: tell the primary whether this process can issue, and the /readyz detail lines it would show (issue #18). */
export function reportReadiness(ready: boolean, detail: string[] = []): void {
  process.send?.({ svidCa: 'ready', ready, detail } satisfies WorkerMessage);
}

/** In a worker that cannot start: the one line the primary prints for all of them (then exit 1). */
export function reportStartupFailure(message: string): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send({ svidCa: 'failed', message } satisfies WorkerMessage, undefined, {}, () => resolve());
  });
}

/** In a worker: let the primary's AggregatorRegistry collect this process's metrics. */
export function shareMetricsWithPrimary(registry: Registry): void {
  // prom-client 15 installs the worker's answer to the primary's metrics request only when an
  // AggregatorRegistry is constructed in the process.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}

export interface PrimaryOptions {
  workers: number;
  monitoringListen: { host: string; port: number };
  /** How long workers get to finish calls in flight after SIGTERM. */
  shutdownGraceMs: number;
  logger: Logger;
  /** The signing bundle, its reloads and the serving certificate, owned here for all workers. */
  bundle: PrimaryBundle;
}

export interface Primary {
  monitoringPort: number;
  /** Resolves when the first worker fails to start (the service cannot run), with its reason if it sent one. */
  startupFailure: Promise<{ code: number; message: string | undefined }>;
  stop(): Promise<void>;
}

/**
 * The primary of `--workers N`: forks N full servers that share the gRPC listener (node:cluster
 * hands connections out round-robin), serves /healthz, /readyz and /metrics for all of them (metrics
 * aggregated with prom-client's AggregatorRegistry), restarts a worker that dies, and on shutdown
 * passes SIGTERM on and waits for every worker's graceful exit. Signing never runs here, so the
 * health endpoints answer at once even in a storm.
 */
export async function runPrimary(o: PrimaryOptions): Promise<Primary> {
  const ready = new Map<number, boolean>();
  /** Each worker's /readyz detail lines (issue #18: cluster states), shown once each on the primary's /readyz. */
  const details = new Map<number, string[]>();
  const everReady = new Set<number>();
  let stopping = false;
  let failStartup: (failure: { code: number; message: string | undefined }) => void = () => {};
  const startupFailure = new Promise<{ code: number; message: string | undefined }>((resolve) => (failStartup = resolve));
  const restarts: number[] = [];
  let failureMessage: string | undefined;

  const fork = (): Worker => {
    const worker = cluster.fork();
    ready.set(worker.id, false);
    worker.on('message', (m: unknown) => {
      if (isBundleMessage(m) && m.svidCa === 'want-bundle') {
        worker.send(o.bundle.current());
        return;
      }
      if (!isWorkerMessage(m)) return;
      if (m.svidCa === 'failed') {
        failureMessage ??= m.message;
        return;
      }
      ready.set(worker.id, m.ready);
      details.set(worker.id, m.detail ?? []);
      if (m.ready) everReady.add(worker.id);
    });
    worker.on('exit', (code, signal) => {
      ready.delete(worker.id);
      details.delete(worker.id);
      if (stopping) return;
      if (!everReady.has(worker.id)) {
        o.logger.fatal({ worker: worker.id, code, signal, reason: failureMessage }, 'a worker failed to start; stopping');
        failStartup({ code: code || 1, message: failureMessage });
        return;
      }
      const now = Date.now();
      restarts.push(now);
      while (restarts.length && restarts[0]! < now - 60_000) restarts.shift();
      const delay = Math.min(1000 * restarts.length, 10_000);
      o.logger.error({ worker: worker.id, code, signal, restartInMs: delay }, 'worker exited; restarting it');
      setTimeout(() => {
        if (!stopping) fork();
      }, delay).unref();
    });
    return worker;
  };

  o.bundle.onChange((m) => {
    for (const w of Object.values(cluster.workers ?? {})) if (w?.isConnected()) w.send(m);
  });
  o.bundle.start();
  for (let i = 0; i < o.workers; i++) fork();
  const aggregator = new AggregatorRegistry<PrometheusContentType>();
  // Per-process metrics summed over the workers, then the per-server ones (bundle, serving
  // certificate, reloads) from the primary: disjoint metric names, so the texts concatenate.
  const collect = async () => (await aggregator.clusterMetrics()) + (await o.bundle.metrics.registry.metrics());
  const isReady = () => !stopping && ready.size > 0 && [...ready.values()].every(Boolean);
  const monitoring: { server: HttpServer; port: number } = await startMonitoringServer({
    ...o.monitoringListen,
    registry: aggregator,
    collect,
    isReady,
    // Workers agree but for a moment during a reload; then both lines show.
    readinessDetail: () => [...new Set([...details.keys()].sort((a, b) => a - b).flatMap((id) => details.get(id)!))],
  }).catch((err: unknown) => {
    throw new ListenError('--monitoring-listen', o.monitoringListen, err);
  });
  o.logger.info({ workers: o.workers, monitoring: `${o.monitoringListen.host}:${monitoring.port}` }, 'svid-ca primary serving monitoring for its workers');

  return {
    monitoringPort: monitoring.port,
    startupFailure,
    async stop() {
      stopping = true;
      o.bundle.stop();
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
      const exited = workers.map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
      for (const w of workers) w.process.kill('SIGTERM');
      const killer = setTimeout(() => workers.forEach((w) => w.isDead() || w.process.kill('SIGKILL')), o.shutdownGraceMs + 5000);
      await Promise.all(exited);
      clearTimeout(killer);
      const closed = new Promise<void>((resolve) => monitoring.server.close(() => resolve()));
      monitoring.server.closeAllConnections();
      await closed;
    },
  };
}
