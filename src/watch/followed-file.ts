import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { FolderWatcher } from './folder-watcher.js';

export interface FollowedFileOptions {
  /** The file to follow; its folder is watched, so Kubernetes' `..data` symlink swap is seen. */
  path: string;
  /** Poll the file this often besides watching its folder (--reload-interval), milliseconds. */
  pollIntervalMs: number;
  debounceMs?: number | undefined;
}

/** What the owner of a followed file does with it; `R` is its report of one (re)load. */
export interface FollowedFileHandlers<R> {
  /** The error to report when the file cannot be read (errno `code` in it, never the content). */
  unreadable(err: NodeJS.ErrnoException): Error;
  /** Uses new content; throws the error to report to refuse it (what is in use is then kept). */
  apply(text: string): R;
  /** Reports a refused or unreadable file; called once per distinct failing state, not per re-read. */
  failed(error: Error): R;
}

/**
 * A configuration file (a JWKS file, --jwt-issuers-file) followed as the cacerts folder is: its folder is
 * watched (FolderWatcher: fs.watch plus a poll), and on every check the file is re-read and its SHA-256
 * compared with the content in use. Same content (good or bad) is not reported again; new content is
 * applied, or refused and reported once. The owner reads and applies the first content itself (at startup a
 * bad file must throw), then calls follow(text).
 */
export class FollowedFile<R> {
  private digest = '';
  private readonly watcher: FolderWatcher;

  constructor(
    private readonly options: FollowedFileOptions,
    private readonly handlers: FollowedFileHandlers<R>,
  ) {
    this.watcher = new FolderWatcher({ dir: dirname(options.path), pollIntervalMs: options.pollIntervalMs, debounceMs: options.debounceMs }, () => this.check());
  }

  /** The file's text (UTF-8). Throws `handlers.unreadable(err)` when it cannot be read. */
  read(): string {
    try {
      return readFileSync(this.options.path, 'utf8');
    } catch (err) {
      throw this.handlers.unreadable(err as NodeJS.ErrnoException);
    }
  }

  /** Records `text` as the content in use and starts following the file. */
  follow(text: string): void {
    this.digest = sha256(text);
    this.watcher.start();
  }

  /** Re-reads the file: undefined when nothing changed (or stopped), else what `apply` or `failed` returned. */
  check(): R | undefined {
    if (this.watcher.isStopped) return undefined;
    let text: string;
    try {
      text = this.read();
    } catch (err) {
      return this.fail(`unreadable:${(err as Error).message}`, err as Error);
    }
    const digest = sha256(text);
    if (digest === this.digest) return undefined;
    let result: R;
    try {
      result = this.handlers.apply(text);
    } catch (err) {
      return this.fail(digest, err as Error);
    }
    this.digest = digest;
    return result;
  }

  stop(): void {
    this.watcher.stop();
  }

  private fail(state: string, error: Error): R | undefined {
    if (state === this.digest) return undefined;
    this.digest = state;
    return this.handlers.failed(error);
  }
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
