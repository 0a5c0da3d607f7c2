import { createHash } from 'node:crypto';
import { BundleError, subjectText, type BundleFiles, type ProbeNames, type SigningBundle } from '../pki/index.js';
import type { Authority } from './authority.js';
import { loadCacertsWithFiles, readCacertsFiles } from './cacerts.js';
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
  private readonly watcher: FolderWatcher;
  private lastDigest: string | undefined;
  private lastFailed = false;

  constructor(
    private readonly authority: Authority,
    private readonly options: ReloaderOptions,
    private readonly events: ReloadEvents,
  ) {
    this.lastDigest = this.digest();
    this.watcher = new FolderWatcher({ dir: options.dir, pollIntervalMs: options.pollIntervalMs, debounceMs: options.debounceMs }, () => this.check());
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

  /** Loads and swaps if the files changed (or the last attempt failed). Returns what happened. */
  check(): ReloadResult {
    if (this.watcher.isStopped) return { result: 'unchanged' };
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
      ({ bundle: next, files } = loadCacertsWithFiles(this.options.dir, new Date(), this.options.names, this.options.tokenKey));
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
    this.authority.replaceBundle(next);
    return { result: 'success', bundle: next, roots, files };
  }
}
