import { Authority, bundleFromFilesAsync, DEFAULT_PROBE_NAMES, loadCacertsWithFilesAsync, Pkcs11SigningKeySource, type ReloadResult, type SigningKeyConfig } from '../ca/index.js';
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

/**
 * The PKCS#11 key source of --signing-key (issue #17), logging through `logger`; undefined for a key
 * in the cacerts folder. Each process opens its own (node:cluster workers are fresh processes, and
 * PKCS#11 state never crosses a process boundary: /work/shared/reference/pkcs11-signing.md §4).
 */
export function openTokenKey(config: SigningKeyConfig | undefined, logger: Logger): Pkcs11SigningKeySource | undefined {
  return config ? new Pkcs11SigningKeySource(config, (level, fields, message) => logger[level](fields, message)) : undefined;
}

/** What a worker's startService uses instead of loading the folder itself. */
export interface BundleFeed {
  bundle: SigningBundle;
  /** The worker's own token key source (issue #17) the bundles were checked with; closed with the service. */
  tokenKey?: Pkcs11SigningKeySource | undefined;
  serving: KeyAndChain;
  /** Later bundles (already checked) and serving certificates from the primary. */
  onUpdate(listener: (u: { bundle?: SigningBundle | undefined; serving?: KeyAndChain | undefined }) => void): void;
}

export type PrimaryBundleOptions = LifecycleOptions & { defaultTtlMs: number; maxTtlMs: number; signingKey?: SigningKeyConfig | undefined };

/** The primary's side: loads once (PrimaryBundle.load), reloads, renews, tells workers. */
export class PrimaryBundle {
  readonly metrics = new CaMetrics({ defaultMetrics: false });
  private files: BundleFiles;
  private readonly lifecycle: BundleLifecycle;
  private readonly listeners: ((m: BundleMessage) => void)[] = [];
  /** issue #17: the primary's own token session (it checks the key at start and on reload, and signs the serving certificate). */
  private readonly tokenKey: Pkcs11SigningKeySource | undefined;

  /**
   * Loads and checks the cacerts folder (rejects with BundleError like loadCacerts), asynchronously:
   * pkijs runs on this event loop, and the primary keeps no path-validation thread (issue #14).
   */
  static async load(options: PrimaryBundleOptions, logger: Logger): Promise<PrimaryBundle> {
    const tokenKey = openTokenKey(options.signingKey, logger);
    try {
      const loaded = await loadCacertsWithFilesAsync(options.cacerts, new Date(), { trustDomain: options.trustDomain ?? DEFAULT_PROBE_NAMES.trustDomain, servingDns: options.servingDns }, tokenKey);
      return new PrimaryBundle(options, logger, loaded, tokenKey);
    } catch (err) {
      tokenKey?.close();
      throw err;
    }
  }

  private constructor(options: PrimaryBundleOptions, logger: Logger, { bundle, files }: { bundle: SigningBundle; files: BundleFiles }, tokenKey: Pkcs11SigningKeySource | undefined) {
    this.tokenKey = tokenKey;
    this.files = files;
    const authority = new Authority(bundle, { defaultTtlMs: options.defaultTtlMs, maxTtlMs: options.maxTtlMs });
    logger.info(
      { cacerts: options.cacerts, ...describeBundle(bundle), signingKey: tokenKey?.describe() },
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
    this.lifecycle = new BundleLifecycle(authority, { ...options, onReload, tokenKey }, this.metrics, logger, () => undefined, undefined);
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
    this.tokenKey?.close();
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
export function receiveBundleFeed(logger: Logger, names: ProbeNames, signingKey?: SigningKeyConfig, timeoutMs = 30_000): Promise<BundleFeed> {
  return new Promise((resolve, reject) => {
    const listeners: Parameters<BundleFeed['onUpdate']>[0][] = [];
    let first = true;
    // issue #17: this worker's own token session; the texts from the primary are checked against the token here too.
    const tokenKey = openTokenKey(signingKey, logger);
    const fail = (err: unknown) => {
      tokenKey?.close();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error('the primary did not send the signing bundle')), timeoutMs);
    // Checked asynchronously (pkijs on this event loop: no path-validation thread in a worker, issue #14),
    // one message at a time and in the order sent, so a later bundle never lands before an earlier one.
    let queue = Promise.resolve();
    const receive = async (m: Extract<BundleMessage, { svidCa: 'bundle' }>) => {
      if (first) {
        first = false;
        clearTimeout(timer);
        try {
          const bundle = await bundleFromFilesAsync(m.files!, new Date(), names, tokenKey);
          if (tokenKey) logger.info({ signingKey: tokenKey.describe(), pid: process.pid }, 'signing key checked on this worker\'s own token session');
          resolve({ bundle, tokenKey, serving: m.serving!, onUpdate: (l) => listeners.push(l) });
        } catch (err) {
          fail(err);
        }
        return;
      }
      let bundle: SigningBundle | undefined;
      try {
        bundle = m.files ? await bundleFromFilesAsync(m.files, new Date(), names, tokenKey) : undefined;
      } catch (err) {
        logger.error(err instanceof BundleError ? { file: err.file, problem: err.problem } : { err: (err as Error).message }, 'bundle from the primary refused; still serving with the current bundle');
        return;
      }
      for (const l of listeners) l({ bundle, serving: m.serving });
    };
    process.on('message', (m: unknown) => {
      if (!isBundleMessage(m) || m.svidCa !== 'bundle') return;
      // A listener that throws fails loudly, as it did when this ran in the message handler itself.
      queue = queue.then(() => receive(m)).catch((err: unknown) => process.nextTick(() => { throw err; }));
    });
    process.send?.({ svidCa: 'want-bundle' } satisfies BundleMessage);
  });
}
