import { EventEmitter } from 'node:events';
import { V1MicroTime, type CoordinationV1Api, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../observability/index.js';
import { describeKubeError, isConflict, isNotFound } from './errors.js';
import { DEFAULT_LEASE_TIMING, type LeaseTiming } from './options.js';
import { withTimeout } from './timeout.js';

export interface LeaderElectorOptions {
  api: CoordinationV1Api;
  namespace: string;
  name: string;
  identity: string;
  timing?: Partial<LeaseTiming> | undefined;
  logger: Logger;
}

/**
 * Lease-based leader election (coordination.k8s.io/v1), client-go's algorithm: a holder renews
 * every retry period; others take over when the record has not changed for the lease duration
 * as measured on their own clock (so clock skew between pods does not matter); a leader that
 * cannot renew within the renew deadline steps down. Updates carry the resourceVersion, so two
 * candidates cannot both win. On stop the lease is released so a successor need not wait.
 */
export class LeaderElector extends EventEmitter<{ started: []; stopped: [] }> {
  private readonly timing: LeaseTiming;
  private leading = false;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private lastRenew = 0;
  private observedRecord = '';
  private observedAt = 0;
  private tick: Promise<void> = Promise.resolve();

  constructor(private readonly o: LeaderElectorOptions) {
    super();
    this.timing = { ...DEFAULT_LEASE_TIMING, ...o.timing };
  }

  get identity(): string {
    return this.o.identity;
  }

  isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.tick;
    if (this.leading) {
      await this.release();
      this.setLeading(false);
    }
  }

  private schedule(ms: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.tick = this.step().finally(() => this.schedule(this.timing.retryPeriodMs));
    }, ms);
    this.timer.unref();
  }

  private async step(): Promise<void> {
    let ok = false;
    try {
      ok = await this.tryAcquireOrRenew();
    } catch (err) {
      this.o.logger.warn({ lease: this.ref(), problem: describeKubeError(err).message }, 'leader election: lease update failed');
    }
    if (!this.running) return;
    const now = Date.now();
    if (ok) {
      this.lastRenew = now;
      if (!this.leading) this.setLeading(true);
    } else if (this.leading && now - this.lastRenew > this.timing.renewDeadlineMs) {
      this.o.logger.warn({ lease: this.ref() }, 'leader election: could not renew the lease in time; stepping down');
      this.setLeading(false);
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.o.logger.info({ lease: this.ref(), identity: this.o.identity }, leading ? 'became leader' : 'stopped leading');
    this.emit(leading ? 'started' : 'stopped');
  }

  private ref(): string {
    return `${this.o.namespace}/${this.o.name}`;
  }

  private durationSeconds(): number {
    return Math.max(1, Math.ceil(this.timing.leaseDurationMs / 1000));
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { api, namespace, name, identity } = this.o;
    const timeout = withTimeout(this.timing.renewDeadlineMs);
    const now = new V1MicroTime(Date.now());
    let lease: V1Lease;
    try {
      lease = await api.readNamespacedLease({ name, namespace }, timeout);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await api.createNamespacedLease(
          {
            namespace,
            body: {
              apiVersion: 'coordination.k8s.io/v1',
              kind: 'Lease',
              metadata: { name, namespace },
              spec: { holderIdentity: identity, leaseDurationSeconds: this.durationSeconds(), acquireTime: now, renewTime: now, leaseTransitions: 0 },
            },
          },
          timeout,
        );
        return true;
      } catch (e) {
        if (isConflict(e)) return false;
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const record = `${holder}|${String(spec.renewTime ?? '')}|${spec.leaseTransitions ?? 0}`;
    const clock = Date.now();
    if (record !== this.observedRecord) {
      this.observedRecord = record;
      this.observedAt = clock;
    }
    const durationMs = (spec.leaseDurationSeconds ?? this.durationSeconds()) * 1000;
    if (holder !== '' && holder !== identity && this.observedAt + durationMs > clock) return false;
    const mine = holder === identity;
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds: this.durationSeconds(),
      renewTime: now,
      acquireTime: mine && spec.acquireTime ? spec.acquireTime : now,
      leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
    };
    try {
      await api.replaceNamespacedLease({ name, namespace, body: lease }, timeout);
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  /** Gives the lease up (holder cleared, 1 s duration), as client-go's ReleaseOnCancel. */
  private async release(): Promise<void> {
    const { api, namespace, name, identity } = this.o;
    try {
      const lease = await api.readNamespacedLease({ name, namespace }, withTimeout(this.timing.renewDeadlineMs));
      if (lease.spec?.holderIdentity !== identity) return;
      const now = new V1MicroTime(Date.now());
      lease.spec = { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: now, acquireTime: now };
      await api.replaceNamespacedLease({ name, namespace, body: lease }, withTimeout(this.timing.renewDeadlineMs));
    } catch (err) {
      this.o.logger.warn({ lease: this.ref(), problem: describeKubeError(err).message }, 'leader election: could not release the lease');
    }
  }
}
