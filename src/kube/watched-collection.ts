import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../observability/index.js';
import { describeKubeError } from './errors.js';

export interface WatchedCollectionOptions<T extends KubernetesObject> {
  /** For logs: "pods", "namespaces", ... */
  name: string;
  config: KubeConfig;
  /** The collection's API path, e.g. /api/v1/pods. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  logger: Logger;
  /** Told of every list or watch failure before the retry (e.g. a 404: the collection is not served). */
  onError?: ((err: unknown) => void) | undefined;
}

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;

type Handler<T> = (obj: T) => void;

/**
 * A list+watch cache of one collection (client-node's ListWatch), kept running: ListWatch stops on
 * any error, so this restarts it with exponential backoff; it resumes from the last resourceVersion
 * and relists when the API server says it is too old (410).
 */
export class WatchedCollection<T extends KubernetesObject> {
  private readonly informer: ListWatch<T>;
  private synced = false;
  private stopped = true;
  private backoffMs = MIN_BACKOFF_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly syncedListeners: Array<() => void> = [];

  constructor(private readonly o: WatchedCollectionOptions<T>) {
    const list = async () => {
      const result = await o.list();
      // ListWatch fills its cache synchronously after this promise resolves; the sync
      // notification must come after that.
      setImmediate(() => {
        this.backoffMs = MIN_BACKOFF_MS;
        const first = !this.synced;
        this.synced = true;
        if (first) o.logger.debug({ collection: o.name, items: result.items.length }, 'kubernetes cache synced');
        for (const l of this.syncedListeners) l();
      });
      return result;
    };
    this.informer = new ListWatch<T>(o.path, new Watch(o.config), list, false, o.labelSelector, o.fieldSelector);
    this.informer.on('error', (err) => this.restartLater(err));
  }

  /** Called after every successful (re)list, once the cache holds its items. */
  onSynced(listener: () => void): void {
    this.syncedListeners.push(listener);
  }

  onAdd(h: Handler<T>): void {
    this.informer.on('add', h);
  }
  onUpdate(h: Handler<T>): void {
    this.informer.on('update', h);
  }
  onDelete(h: Handler<T>): void {
    this.informer.on('delete', h);
  }

  isSynced(): boolean {
    return this.synced;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.informer.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.informer.list(namespace);
  }

  start(): void {
    this.stopped = false;
    this.informer.start().catch((err: unknown) => this.restartLater(err));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    await this.informer.stop();
  }

  private restartLater(err: unknown): void {
    if (this.stopped) return;
    this.o.onError?.(err);
    clearTimeout(this.retryTimer);
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.o.logger.warn({ collection: this.o.name, problem: describeKubeError(err).message, retryInMs: delay }, 'kubernetes watch failed; retrying');
    this.retryTimer = setTimeout(() => {
      if (!this.stopped) this.informer.start().catch((e: unknown) => this.restartLater(e));
    }, delay);
    this.retryTimer.unref();
  }
}
