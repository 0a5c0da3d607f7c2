import { Authority, bundleFromFiles, DEFAULT_PROBE_NAMES, loadCacertsWithFiles, type ReloadResult } from '../ca/index.js';
import { CaMetrics, keepMetrics, type Logger } from '../observability/index.js';
import { BundleError, type BundleFiles, type ProbeNames, type SigningBundle } from '../pki/index.js';
import { BundleLifecycle, describeBundle, warnAboutSigner, type LifecycleOptions } from './lifecycle.js';
import type { KeyAndChain } from './tls.js';

/**
 * How a --workers server reads as one server (issue #13). The primary owns the signing bundle: it
 * loads and checks the cacerts folder once, runs the one reloader and issues the one serving
 * certificate, and owns the metrics about them (reload counter, expiry gauges), so a rotation is
 * counted once and /metrics shows one serving certificate. Workers receive the bundle's file texts
 * over IPC and check them again with the pure bundleFromFiles (no file I/O in a worker, and a key
 * cannot cross IPC as an object), plus the serving key and chain to present. Issuing the serving
 * certificate in the primary (rather than letting each worker issue its own and report expiry facts
 * up) keeps one certificate, one serial and one renewal timer, with the same code as one process.
 */
export type BundleMessage =
  | { svidCa: 'want-bundle' }
  | { svidCa: 'bundle'; files?: BundleFiles | undefined; serving?: KeyAndChain | undefined };

export function isBundleMessage(m: unknown): m is BundleMessage {
  const tag = typeof m === 'object' && m !== null ? (m as { svidCa?: unknown }).svidCa : undefined;
  return tag === 'want-bundle' || tag === 'bundle';
}

/** What a worker's startService uses instead of loading the folder itself. */
export interface BundleFeed {
  bundle: SigningBundle;
  serving: KeyAndChain;
  /** Later bundles (already checked) and serving certificates from the primary. */
  onUpdate(listener: (u: { bundle?: SigningBundle | undefined; serving?: KeyAndChain | undefined }) => void): void;
}

export type PrimaryBundleOptions = LifecycleOptions & { defaultTtlMs: number; maxTtlMs: number };

/** The primary's side: loads once (throws BundleError like loadCacerts), reloads, renews, tells workers. */
export class PrimaryBundle {
  readonly metrics = new CaMetrics({ defaultMetrics: false });
  private files: BundleFiles;
  private readonly lifecycle: BundleLifecycle;
  private readonly listeners: ((m: BundleMessage) => void)[] = [];

  constructor(options: PrimaryBundleOptions, logger: Logger) {
    const { bundle, files } = loadCacertsWithFiles(options.cacerts, new Date(), { trustDomain: options.trustDomain ?? DEFAULT_PROBE_NAMES.trustDomain, servingDns: options.servingDns });
    this.files = files;
    const authority = new Authority(bundle, { defaultTtlMs: options.defaultTtlMs, maxTtlMs: options.maxTtlMs });
    logger.info(
      { cacerts: options.cacerts, ...describeBundle(bundle) },
      'signing bundle loaded',
    );
    warnAboutSigner(logger, bundle, options.maxTtlMs, options.signerExpiryWarningMs ?? 720 * 3_600_000);
    keepMetrics(this.metrics, 'per-server');
    const onReload = (r: ReloadResult) => {
      options.onReload?.(r);
      if (r.result !== 'success') return;
      this.files = r.files;
      this.broadcast({ svidCa: 'bundle', files: r.files });
    };
    this.lifecycle = new BundleLifecycle(authority, { ...options, onReload }, this.metrics, logger, () => undefined, undefined);
    this.lifecycle.recordBundle(bundle);
    this.metrics.lastReload.set(Date.now() / 1000);
    this.lifecycle.serving.on('renewed', (cert) => this.broadcast({ svidCa: 'bundle', serving: keyAndChain(cert) }));
    const serving = this.lifecycle.serving.current;
    logger.info({ dnsNames: options.servingDns, notAfter: serving.notAfter.toISOString(), serial: serving.serialHex }, 'serving certificate issued');
  }

  /** Everything a (new) worker needs. */
  current(): BundleMessage {
    return { svidCa: 'bundle', files: this.files, serving: keyAndChain(this.lifecycle.serving.current) };
  }

  onChange(listener: (m: BundleMessage) => void): void {
    this.listeners.push(listener);
  }

  start(): void {
    this.lifecycle.start();
  }

  stop(): void {
    this.lifecycle.stop();
  }

  private broadcast(m: BundleMessage): void {
    for (const l of this.listeners) l(m);
  }
}

const keyAndChain = (c: KeyAndChain): KeyAndChain => ({ keyPem: c.keyPem, certChainPem: c.certChainPem });

/**
 * The worker's side: asks the primary for the bundle, checks it (BundleError if it does not pass,
 * which fails the worker's start), and passes later updates on; an update that fails the check here
 * is logged and ignored (the worker keeps its current bundle, as a refused reload does).
 */
export function receiveBundleFeed(logger: Logger, names: ProbeNames, timeoutMs = 30_000): Promise<BundleFeed> {
  return new Promise((resolve, reject) => {
    const listeners: Parameters<BundleFeed['onUpdate']>[0][] = [];
    let first = true;
    const timer = setTimeout(() => reject(new Error('the primary did not send the signing bundle')), timeoutMs);
    process.on('message', (m: unknown) => {
      if (!isBundleMessage(m) || m.svidCa !== 'bundle') return;
      if (first) {
        first = false;
        clearTimeout(timer);
        try {
          resolve({ bundle: bundleFromFiles(m.files!, new Date(), names), serving: m.serving!, onUpdate: (l) => listeners.push(l) });
        } catch (err) {
          reject(err);
        }
        return;
      }
      let bundle: SigningBundle | undefined;
      try {
        bundle = m.files ? bundleFromFiles(m.files, new Date(), names) : undefined;
      } catch (err) {
        logger.error(err instanceof BundleError ? { file: err.file, problem: err.problem } : { err: (err as Error).message }, 'bundle from the primary refused; still serving with the current bundle');
        return;
      }
      for (const l of listeners) l({ bundle, serving: m.serving });
    });
    process.send?.({ svidCa: 'want-bundle' } satisfies BundleMessage);
  });
}
