import { EventEmitter } from 'node:events';
import type { Authority, ServingCertificate } from './authority.js';

const RETRY_AFTER_FAILURE_MS = 10_000;

/** How early the serving certificate is renewed: a fraction of its life, or a fixed duration before expiry. */
export type Grace = { fraction: number } | { ms: number };

export function parseGrace(text: string, parseDuration: (t: string) => number | undefined): Grace | undefined {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
  if (pct) {
    const fraction = Number(pct[1]) / 100;
    return fraction > 0 && fraction < 1 ? { fraction } : undefined;
  }
  const ms = parseDuration(text);
  return ms !== undefined && ms > 0 ? { ms } : undefined;
}

export interface ServingManagerOptions {
  dnsNames: string[];
  ttlMs: number;
  grace: Grace;
}

/**
 * svid-ca's own serving certificate: issued from the current signer, re-issued after every bundle
 * change, and renewed on its own when less than the grace remains. Emits 'renewed' with the new
 * certificate; the TLS listener applies it to new handshakes.
 */
export class ServingCertificateManager extends EventEmitter<{ renewed: [ServingCertificate, string]; error: [Error] }> {
  #current: ServingCertificate;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly authority: Authority,
    private readonly options: ServingManagerOptions,
  ) {
    super();
    this.#current = authority.issueServing(options.dnsNames, options.ttlMs);
  }

  get current(): ServingCertificate {
    return this.#current;
  }

  /** When the current certificate is due for renewal. */
  renewAt(cert: ServingCertificate = this.#current): Date {
    const life = cert.notAfter.getTime() - cert.notBefore.getTime();
    const graceMs = 'fraction' in this.options.grace ? life * this.options.grace.fraction : this.options.grace.ms;
    return new Date(cert.notAfter.getTime() - Math.min(graceMs, life));
  }

  start(): void {
    this.scheduleRenewal();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Issues a new serving certificate now (after a reload, or when due). */
  renew(reason: string): void {
    if (this.stopped) return;
    try {
      this.#current = this.authority.issueServing(this.options.dnsNames, this.options.ttlMs);
      this.emit('renewed', this.#current, reason);
      this.scheduleRenewal();
    } catch (err) {
      this.emit('error', err as Error);
      this.scheduleRenewal(RETRY_AFTER_FAILURE_MS);
    }
  }

  private scheduleRenewal(retryMs?: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const delay = retryMs ?? Math.max(this.renewAt().getTime() - Date.now(), 0);
    this.timer = setTimeout(() => this.renew('renewal before expiry'), Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }
}
