import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { BundleError, subjectText, type BundleFiles, type SigningBundle } from '../pki/index.js';
import type { Authority } from './authority.js';
import { loadCacertsWithFiles, readCacertsFiles } from './cacerts.js';

export interface ReloaderOptions {
  dir: string;
  /** Safety-net poll, in case a watch event is missed (network filesystems, a folder recreated). */
  pollIntervalMs: number;
  /** Quiet time after the last event before loading, so a multi-file write is seen whole. */
  debounceMs?: number;
  /** Accept a new root bundle sharing no root with the current one. */
  allowRootReplacement: boolean;
}

export interface RootChange {
  added: string[];
  removed: string[];
}

export type ReloadResult =
  | { result: 'unchanged' }
  | { result: 'success'; bundle: SigningBundle; roots: RootChange; files: BundleFiles }
  | { result: 'failure'; error: Error };

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
 * fails any check is never swapped in: the current one keeps serving and the next change retries.
 */
export class CacertsReloader {
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private lastDigest: string | undefined;
  private lastFailed = false;
  private stopped = false;

  constructor(
    private readonly authority: Authority,
    private readonly options: ReloaderOptions,
    private readonly events: ReloadEvents,
  ) {
    this.lastDigest = this.digest();
  }

  start(): void {
    this.ensureWatch();
    this.pollTimer = setInterval(() => {
      this.ensureWatch();
      this.check();
    }, this.options.pollIntervalMs);
    this.pollTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = undefined;
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
  }

  /** (Re)establishes the folder watch; the folder may be missing for a while (issue: deleted mount). */
  private ensureWatch(): void {
    if (this.watcher || this.stopped) return;
    try {
      this.watcher = watch(this.options.dir, { persistent: false }, () => this.schedule());
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      this.watcher = undefined;
    }
  }

  private schedule(): void {
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => this.check(), this.options.debounceMs ?? 200);
    this.debounceTimer.unref();
  }

  /** A digest of the bundle files' contents, to tell a real change from a touch; undefined if unreadable. */
  private digest(): string | undefined {
    try {
      const files = readCacertsFiles(this.options.dir);
      const h = createHash('sha256').update(files.layout);
      for (const f of [files.signingCert, files.signingKey, ...files.chain, files.roots]) h.update(f.name).update('\0').update(f.text).update('\0');
      return h.digest('hex');
    } catch (err) {
      return err instanceof BundleError ? `error:${err.message}` : undefined;
    }
  }

  /** Loads and swaps if the files changed (or the last attempt failed). Returns what happened. */
  check(): ReloadResult {
    if (this.stopped) return { result: 'unchanged' };
    const digest = this.digest();
    if (digest === this.lastDigest && !this.lastFailed) return { result: 'unchanged' };
    this.lastDigest = digest;
    const outcome = this.load();
    this.lastFailed = outcome.result === 'failure';
    this.events.onResult(outcome);
    return outcome;
  }

  private load(): ReloadResult {
    let next: SigningBundle;
    let files: BundleFiles;
    try {
      ({ bundle: next, files } = loadCacertsWithFiles(this.options.dir));
    } catch (err) {
      return { result: 'failure', error: err as Error };
    }
    const roots = compareRoots(this.authority.bundle, next);
    if (roots.shared === 0 && !this.options.allowRootReplacement) {
      return {
        result: 'failure',
        error: new BundleError(
          next.roots.length > 0 ? readCacertsFiles(this.options.dir).roots.name : this.options.dir,
          'the new root bundle shares no root with the current one: every workload that trusts only the old root would break. ' +
            'Add the new root next to the old one first (svid-ca cacerts plan-rotation), or restart with --allow-root-replacement',
        ),
      };
    }
    this.authority.replaceBundle(next);
    return { result: 'success', bundle: next, roots, files };
  }
}
