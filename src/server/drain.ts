import * as grpc from '@grpc/grpc-js';

/**
 * The unary calls a server has admitted and not yet answered, so that shutdown can wait for exactly
 * those (not for idle HTTP/2 sessions) and answer every one of them: OK when it finishes within the
 * grace, UNAVAILABLE (which istio-agent retries, on another replica after the GOAWAY) when it does not.
 * Once `expire()` ran, `expired` is true and the handler must not issue any more (a certificate
 * audited as issued must reach its caller): see CertificateServiceDeps.shuttingDown.
 */
export class CallDrain {
  private readonly pending = new Set<(err: grpc.ServiceError | null) => void>();
  private idleWaiters: (() => void)[] = [];
  #expired = false;

  get expired(): boolean {
    return this.#expired;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Wraps a unary handler: its callback is answered at most once, by the handler or by expire().
   * Any call shape: grpc-js's handleUnaryCall and the CreateCertificate fast path's handler.
   */
  wrap<C, Res, E extends { code: grpc.status; details: string }>(handler: (call: C, callback: (err: E | null, value?: Res | null) => void) => void): (call: C, callback: (err: E | grpc.ServiceError | null, value?: Res | null) => void) => void {
    return (call, callback) => {
      let answered = false;
      const answer = (err: E | grpc.ServiceError | null, value?: Res | null) => {
        if (answered) return;
        answered = true;
        this.pending.delete(abort);
        callback(err, value);
        if (this.pending.size === 0) this.wakeIdle();
      };
      const abort = (err: grpc.ServiceError | null) => answer(err);
      this.pending.add(abort);
      handler(call, answer);
    };
  }

  /** Resolves when no call is pending (at once if none is). */
  idle(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The grace is over: answer every pending call UNAVAILABLE now; later results are not issued. */
  expire(details = 'svid-ca is shutting down; retry (another replica will answer)'): number {
    this.#expired = true;
    const aborted = [...this.pending];
    const err = Object.assign(new Error(details), { code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() });
    for (const abort of aborted) abort(err);
    return aborted.length;
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
