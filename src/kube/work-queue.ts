/**
 * A keyed work queue: a key queued while it is being worked on is worked on again afterwards,
 * never twice at once; failures come back after an exponential, per-key backoff.
 */
export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  private readonly again = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private workers = 0;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly work: (key: string) => Promise<void>,
    private readonly onError: (key: string, err: unknown, retryInMs: number) => void,
    private readonly concurrency = 4,
    private readonly maxBackoffMs = 30_000,
  ) {}

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.again.add(key);
      return;
    }
    this.queued.add(key);
    this.pump();
  }

  /** Resolves when nothing is queued or running (retries waiting on a timer do not count). */
  idle(): Promise<void> {
    if (this.queued.size === 0 && this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    this.queued.clear();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private pump(): void {
    while (this.workers < this.concurrency && this.queued.size > 0) {
      const key = this.queued.values().next().value as string;
      this.queued.delete(key);
      this.active.add(key);
      this.workers++;
      void this.run(key);
    }
    if (this.queued.size === 0 && this.active.size === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async run(key: string): Promise<void> {
    try {
      await this.work(key);
      this.failures.delete(key);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min(250 * 2 ** (n - 1), this.maxBackoffMs);
      this.onError(key, err, delay);
      if (!this.stopped) {
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.add(key);
        }, delay);
        t.unref();
        this.timers.add(t);
      }
    } finally {
      this.active.delete(key);
      this.workers--;
      if (this.again.delete(key)) this.add(key);
      this.pump();
    }
  }
}
