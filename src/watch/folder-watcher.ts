import { watch, type FSWatcher } from 'node:fs';

export interface FolderWatcherOptions {
  /** The folder to watch: the one holding the files, so that Kubernetes' `..data` symlink swap is seen. */
  dir: string;
  /** Safety-net poll, milliseconds, in case a watch event is missed (network filesystems, a folder recreated). */
  pollIntervalMs: number;
  /** Quiet time after the last event before `onCheck` runs, so a multi-file write is seen whole (default 200 ms). */
  debounceMs?: number | undefined;
}

/**
 * Calls `onCheck` soon after anything changes in a folder (fs.watch, debounced) and at every poll
 * interval. It does not tell a real change from a touch: the caller compares digests of what it
 * reads. A missing folder is tolerated; the watch is re-established on the next poll. Shared by
 * the cacerts reloader (ca/) and the JWKS file (auth/). Timers are unref'd: they keep no process alive.
 */
export class FolderWatcher {
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly options: FolderWatcherOptions,
    private readonly onCheck: () => void,
  ) {}

  start(): void {
    this.ensureWatch();
    this.pollTimer = setInterval(() => {
      this.ensureWatch();
      this.onCheck();
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

  get isStopped(): boolean {
    return this.stopped;
  }

  /** (Re)establishes the folder watch; the folder may be missing for a while (a deleted mount). */
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
    this.debounceTimer = setTimeout(() => this.onCheck(), this.options.debounceMs ?? 200);
    this.debounceTimer.unref();
  }
}
