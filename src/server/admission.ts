/** FIFO with O(1) push and shift. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

interface Job {
  run(): void;
}

export interface AdmissionOptions {
  /** Calls admitted and not yet answered; beyond it new calls get RESOURCE_EXHAUSTED at once. */
  maxPending: number;
  /** Namespaces whose callers go first and may use a reserve above maxPending (gateways, ztunnel). */
  priorityNamespaces: readonly string[];
  /** Longest slice of signing work done in one event-loop turn, so health checks and new calls interleave. */
  sliceMs?: number;
  /**
   * Percent of maxPending that one caller (an identity, or one node agent's pod when it impersonates)
   * may hold past authentication (--max-pending-share, default 10): one token cannot take the whole
   * queue from everyone else, whatever it varies between its requests.
   */
  maxPendingShare?: number | undefined;
}

/** Default --max-pending-share: 10% of --max-pending per caller. */
export const DEFAULT_MAX_PENDING_SHARE = 10;

/**
 * Admission control for restart storms: a bound on pending calls (the excess is refused at once with
 * RESOURCE_EXHAUSTED, which istio-agent retries with backoff, instead of queueing without bound), a
 * signing queue that serves priority namespaces first in short slices, and one computation for
 * concurrent identical requests.
 */
export class Admission {
  private pending = 0;
  private readonly high = new Fifo<Job>();
  private readonly low = new Fifo<Job>();
  private draining = false;
  /** Computations in flight by their request's first identifying part, each with all its parts (see share). */
  private readonly inFlight = new Map<string, { parts: readonly string[]; value: { result: Promise<unknown> } }[]>();
  private readonly priority: Set<string>;
  private readonly reserve: number;
  private readonly perCaller = new Map<string, number>();
  /** Calls one caller may have pending past authentication. */
  readonly callerLimit: number;

  constructor(private readonly options: AdmissionOptions) {
    this.priority = new Set(options.priorityNamespaces);
    // Priority callers may go 10% past the bound, so a storm of others cannot lock gateways out.
    this.reserve = Math.max(1, Math.ceil(options.maxPending / 10));
    this.callerLimit = Math.max(1, Math.ceil((options.maxPending * (options.maxPendingShare ?? DEFAULT_MAX_PENDING_SHARE)) / 100));
  }

  get pendingCount(): number {
    return this.pending;
  }

  isPriority(namespace: string | undefined): boolean {
    return namespace !== undefined && this.priority.has(namespace);
  }

  /**
   * Takes a pending slot; false when the CA is full (the caller answers RESOURCE_EXHAUSTED). Whether
   * the caller is a priority one matters only once maxPending calls are pending (the reserve), so a
   * function is called only then (issue #14: the token's payload is not decoded below the bound).
   */
  tryAdmit(priority: boolean | (() => boolean)): boolean {
    if (this.pending >= this.options.maxPending) {
      const reserved = typeof priority === 'function' ? priority() : priority;
      if (!reserved || this.pending >= this.options.maxPending + this.reserve) return false;
    }
    this.pending++;
    return true;
  }

  release(): void {
    if (this.pending > 0) this.pending--;
  }

  /** Calls `caller` holds now (past authentication, not yet answered). */
  callerPending(caller: string): number {
    return this.perCaller.get(caller) ?? 0;
  }

  /**
   * Takes one of `caller`'s share of slots; false when it already holds callerLimit (the call is
   * answered RESOURCE_EXHAUSTED). Every true must be matched by one releaseCaller.
   */
  tryAdmitCaller(caller: string): boolean {
    const held = this.perCaller.get(caller) ?? 0;
    if (held >= this.callerLimit) return false;
    this.perCaller.set(caller, held + 1);
    return true;
  }

  releaseCaller(caller: string): void {
    const held = this.perCaller.get(caller) ?? 0;
    if (held <= 1) this.perCaller.delete(caller);
    else this.perCaller.set(caller, held - 1);
  }

  /**
   * Concurrent computations of the same request share one: the first call's `start()` runs, later
   * calls whose `parts` are all equal get its value until its `result` settles. The first part
   * indexes the map (callers put the most distinctive first: the CSR), so no key joining every part
   * is built and hashed per call (~2.8 us for a token and a CSR); the rest are compared on a match.
   */
  share<T extends { result: Promise<unknown> }>(parts: readonly string[], start: () => T): T {
    const index = parts[0] ?? '';
    const bucket = this.inFlight.get(index);
    const existing = bucket?.find((e) => sameParts(e.parts, parts));
    if (existing) return existing.value as T;
    const started = start();
    const entry = { parts, value: started };
    if (bucket) bucket.push(entry);
    else this.inFlight.set(index, [entry]);
    const forget = () => {
      const current = this.inFlight.get(index);
      const at = current ? current.indexOf(entry) : -1;
      if (at < 0) return;
      if (current!.length === 1) this.inFlight.delete(index);
      else current!.splice(at, 1);
    };
    started.result.then(forget, forget);
    return started;
  }

  /** Runs `work` on the signing queue, priority first. */
  run<T>(priority: boolean, work: () => T): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => {
      (priority ? this.high : this.low).push({
        run: () => {
          try {
            resolve(work());
          } catch (err) {
            reject(err);
          }
        },
      });
    });
    this.schedule();
    return promise;
  }

  private schedule(): void {
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => this.drain());
  }

  private drain(): void {
    const deadline = performance.now() + (this.options.sliceMs ?? 5);
    let job: Job | undefined;
    do {
      job = this.high.shift() ?? this.low.shift();
      job?.run();
    } while (job && performance.now() < deadline);
    this.draining = false;
    if (this.high.length + this.low.length > 0) this.schedule();
  }
}

function sameParts(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
