import { createHash } from 'node:crypto';
import { BundleError, compareCrlSets, describeCrlChange, runPathJobsAsync, runPathJobsSync, subjectText, type BundleFiles, type PathJobSteps, type ProbeNames, type SigningBundle } from '../pki/index.js';
import type { Authority } from './authority.js';
import { cacertsSteps, DEFAULT_PROBE_NAMES, readCacertsFiles } from './cacerts.js';
import { FolderWatcher } from '../watch/index.js';
import type { Pkcs11SigningKeySource } from './pkcs11/index.js';

export interface ReloaderOptions {
  dir: string;
  /** Safety-net poll, in case a watch event is missed (network filesystems, a folder recreated). */
  pollIntervalMs: number;
  /** Quiet time after the last event before loading, so a multi-file write is seen whole. */
  debounceMs?: number;
  /** Accept a new root bundle sharing no root with the current one. */
  allowRootReplacement: boolean;
  /** The names serve issues under (--trust-domain, --serving-dns): every reload validates paths for them. */
  names?: ProbeNames | undefined;
  /** The signing key on a PKCS#11 token (issue #17): found and checked against ca-cert.pem on every load. */
  tokenKey?: Pkcs11SigningKeySource | undefined;
  /**
   * The same refusal (same file contents, same problem) is retried at every poll but reported for
   * logging once, then at most once per this many milliseconds (default REFUSAL_LOG_INTERVAL_MS).
   */
  refusalLogIntervalMs?: number | undefined;
}

/** How often the same refusal is logged again while its files stay as they are: 10 minutes. */
export const REFUSAL_LOG_INTERVAL_MS = 10 * 60_000;

/** Where a refusal stands among the refusals of the same content and problem. */
export interface Refusal {
  /** True when this refusal should be logged: new content or problem, or the same one last logged refusalLogIntervalMs ago or more. */
  log: boolean;
  /** Refusals of this content with this problem in a row, this one included (1 for a new one). */
  count: number;
  /** When this content was first refused with this problem. */
  firstAt: Date;
}

export interface RootChange {
  added: string[];
  removed: string[];
}

export type ReloadResult =
  | { result: 'unchanged' }
  | { result: 'success'; bundle: SigningBundle; roots: RootChange; files: BundleFiles }
  | { result: 'failure'; error: Error; refusal: Refusal };

export interface ReloadEvents {
  onResult(r: ReloadResult): void;
}

const rootKey = (b: SigningBundle) => new Map(b.roots.map((r) => [r.x509.fingerprint256, subjectText(r.x509)]));

/** Which roots a reload adds and removes, by certificate fingerprint. */
export function compareRoots(current: SigningBundle, next: SigningBundle): RootChange & { shared: number } {
  const a = rootKey(current);
  const b = rootKey(next);
  const added = [...b].filter(([fp]) => !a.has(fp)).map(([fp, s]) => `${s} (${fp.slice(0, 23)})`);
  const removed = [...a].filter(([fp]) => !b.has(fp)).map(([fp, s]) => `${s} (${fp.slice(0, 23)})`);
  const shared = [...b.keys()].filter((fp) => a.has(fp)).length;
  return { added, removed, shared };
}

/**
 * Watches a cacerts folder and swaps a fully checked new bundle into the authority. fs.watch on
 * the folder sees Kubernetes' atomic `..data` symlink swap; a poll backs it up. A bundle that
 * fails any check is never swapped in: the current one keeps serving, and it is tried again at the
 * next change and at every poll (it may become usable unchanged: a signer not valid yet, a token
 * that answers again). Each failure result carries its place in the run of refusals of the same
 * content and problem, so that the caller logs a run once and then at a low rate (Refusal.log).
 */
export class CacertsReloader {
  private readonly watcher: FolderWatcher;
  private lastDigest: string | undefined;
  private lastFailed = false;
  /** The current run of refusals of one content and problem (undefined after a success). */
  private refusal: { key: string; count: number; firstAt: Date; loggedAt: number } | undefined;
  /** The watcher's check in progress (pkijs awaited on this event loop), and whether another is due after it. */
  private checking: Promise<unknown> | undefined;
  private checkAgain = false;

  constructor(
    private readonly authority: Authority,
    private readonly options: ReloaderOptions,
    private readonly events: ReloadEvents,
  ) {
    this.lastDigest = this.digest();
    this.watcher = new FolderWatcher({ dir: options.dir, pollIntervalMs: options.pollIntervalMs, debounceMs: options.debounceMs }, () => this.checkInBackground());
  }

  start(): void {
    this.watcher.start();
  }

  stop(): void {
    this.watcher.stop();
  }

  /** A digest of the bundle files' contents, to tell a real change from a touch; undefined if unreadable. */
  private digest(): string | undefined {
    try {
      const files = this.readFiles();
      const h = createHash('sha256').update(files.layout);
      // A changed --signing-key-file is a change too.
      if (this.options.tokenKey) h.update(this.options.tokenKey.uriText()).update('\0');
      // ca-crl.pem (issue #16): added, changed or removed is a change like any other file's.
      for (const f of [files.signingCert, files.signingKey, ...files.chain, files.roots, ...(files.crl ? [files.crl] : [])]) h.update(f.name).update('\0').update(f.text).update('\0');
      return h.digest('hex');
    } catch (err) {
      return err instanceof BundleError ? `error:${err.message}` : undefined;
    }
  }

  private readFiles() {
    return readCacertsFiles(this.options.dir, this.options.tokenKey?.describe());
  }

  /** Loads and swaps if the files changed (or the last attempt failed). Returns what happened. Synchronous (tests): pkijs runs in a worker thread. */
  check(): ReloadResult {
    return runPathJobsSync(this.checkSteps());
  }

  /**
   * The watcher's and the poll's check: the same steps with pkijs awaited on this event loop, so a
   * serving process starts no path-validation thread. One at a time; a change seen meanwhile is
   * checked after it. A check() called while one is in flight finds the new digest already taken
   * and, unless the last check failed, answers 'unchanged': the one in flight reports the result.
   */
  private checkInBackground(): void {
    if (this.checking) {
      this.checkAgain = true;
      return;
    }
    this.checking = runPathJobsAsync(this.checkSteps()).finally(() => {
      this.checking = undefined;
      if (this.checkAgain) {
        this.checkAgain = false;
        this.checkInBackground();
      }
    });
  }

  private *checkSteps(): PathJobSteps<ReloadResult> {
    if (this.watcher.isStopped) return { result: 'unchanged' };
    const digest = this.digest();
    if (digest === this.lastDigest && !this.lastFailed) return { result: 'unchanged' };
    this.lastDigest = digest;
    const loaded = yield* this.load();
    this.lastFailed = loaded.result === 'failure';
    const outcome: ReloadResult = loaded.result === 'failure' ? { ...loaded, refusal: this.refused(digest, loaded.error) } : loaded;
    if (outcome.result === 'success') this.refusal = undefined;
    this.events.onResult(outcome);
    return outcome;
  }

  /**
   * Counts a refusal in the run of refusals of the same content (digest) and problem (message), and
   * says whether it is due to be logged: the first of a run, then once per refusalLogIntervalMs.
   */
  private refused(digest: string | undefined, error: Error): Refusal {
    const key = `${digest ?? 'unreadable'}\0${error.message}`;
    const now = Date.now();
    const r = this.refusal;
    if (!r || r.key !== key) {
      this.refusal = { key, count: 1, firstAt: new Date(now), loggedAt: now };
      return { log: true, count: 1, firstAt: this.refusal.firstAt };
    }
    r.count++;
    const log = now - r.loggedAt >= (this.options.refusalLogIntervalMs ?? REFUSAL_LOG_INTERVAL_MS);
    if (log) r.loggedAt = now;
    return { log, count: r.count, firstAt: r.firstAt };
  }

  private *load(): PathJobSteps<{ result: 'success'; bundle: SigningBundle; roots: RootChange; files: BundleFiles } | { result: 'failure'; error: Error }> {
    let next: SigningBundle;
    let files: BundleFiles;
    try {
      ({ bundle: next, files } = yield* cacertsSteps(this.options.dir, new Date(), this.options.names ?? DEFAULT_PROBE_NAMES, this.options.tokenKey));
    } catch (err) {
      return { result: 'failure', error: err as Error };
    }
    const roots = compareRoots(this.authority.bundle, next);
    if (roots.shared === 0 && !this.options.allowRootReplacement) {
      return {
        result: 'failure',
        error: new BundleError(
          next.roots.length > 0 ? this.readFiles().roots.name : this.options.dir,
          'the new root bundle shares no root with the current one: every workload that trusts only the old root would break. ' +
            'Add the new root next to the old one first (svid-ca cacerts plan-rotation), or restart with --allow-root-replacement',
        ),
      };
    }
    // A CRL older than the one in use (lower cRLNumber, or the same number with other contents) is a rollback: it
    // would un-revoke what the newer CRL revokes. Dropping a CRL altogether stays allowed (how a CRL is cleared).
    const rollbacks = compareCrlSets(this.authority.bundle.crls, next.crls).filter((c) => c.kind === 'rollback' || c.kind === 'sameNumber');
    if (rollbacks.length > 0) {
      // Each change in the words of `cacerts plan-rotation` and `cacerts verify --previous` (describeCrlChange),
      // all of them: an operator who fixed only the first would be refused again at the next reload.
      return {
        result: 'failure',
        error: new BundleError(
          files.crl?.name ?? this.options.dir,
          `${rollbacks.map(describeCrlChange).join('; ')}; renew ${rollbacks.length > 1 ? 'them' : 'it'} from the CRL in use with svid-ca cacerts crl --issuer <its CA's folder> --from <the ca-crl.pem in use> --out <this file>; the certificates and key of this bundle pass every other check; only the CRL is refused: fix ca-crl.pem or remove it`,
        ),
      };
    }
    this.authority.replaceBundle(next);
    return { result: 'success', bundle: next, roots, files };
  }
}
