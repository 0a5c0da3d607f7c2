import { EventEmitter } from 'node:events';
import type { SigningBundle } from '../pki/index.js';
import type { Authority, ServingCertificate } from './authority.js';

const RETRY_AFTER_FAILURE_MS = 10_000;
/** Renewals on the clock come at most this often (or a quarter of the lifetime, when shorter). */
const MIN_RENEWAL_INTERVAL_MS = 60_000;

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
 *
 * A certificate whose NotAfter is the signer's (the signer expires within --serving-cert-ttl) is not
 * renewed on the clock: a new one would end at the same instant, so renewing would only spin (issue
 * #19: ~300 renewals a second). It emits 'limitedBySigner' once per signer instead, and the bundle
 * change that brings a new signer renews it. Clock renewals come at most once per minute.
 */
export class ServingCertificateManager extends EventEmitter<{ renewed: [ServingCertificate, string]; error: [Error]; limitedBySigner: [ServingCertificate] }> {
  #current: ServingCertificate;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastRenewalMs = Date.now();
  /** The signer NotAfter (ms) 'limitedBySigner' was last emitted for. */
  private reportedLimitMs: number | undefined;
  /** The bundle the current certificate was issued from: its signer, chain and root bundle are what it carries. */
  private issuedFrom: SigningBundle;

  constructor(
    private readonly authority: Authority,
    private readonly options: ServingManagerOptions,
  ) {
    super();
    this.issuedFrom = authority.bundle;
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

  /**
   * After the authority's bundle changed: renews (with `reason`) unless the new bundle has the same signing
   * certificate, chain and root bundle as the one the current certificate came from, as after a change of
   * ca-crl.pem alone (issue #16): the certificate and its chain are then exactly what a renewal would serve.
   * Returns whether it renewed (or tried to).
   */
  renewIfSignerChanged(reason: string): boolean {
    if (sameSigningChain(this.issuedFrom, this.authority.bundle)) return false;
    this.renew(reason);
    return true;
  }

  /** Issues a new serving certificate now (after a reload, or when due). */
  renew(reason: string): void {
    if (this.stopped) return;
    try {
      const from = this.authority.bundle;
      this.#current = this.authority.issueServing(this.options.dnsNames, this.options.ttlMs);
      this.issuedFrom = from;
      this.lastRenewalMs = Date.now();
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
    if (retryMs === undefined && this.#current.limitedBySigner) {
      if (this.reportedLimitMs !== this.#current.notAfter.getTime()) {
        this.reportedLimitMs = this.#current.notAfter.getTime();
        this.emit('limitedBySigner', this.#current);
      }
      return;
    }
    const minInterval = Math.min(MIN_RENEWAL_INTERVAL_MS, this.options.ttlMs / 4);
    const due = Math.max(this.renewAt().getTime(), this.lastRenewalMs + minInterval);
    const delay = retryMs ?? Math.max(due - Date.now(), 0);
    this.timer = setTimeout(() => this.renew('renewal before expiry'), Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }
}

/** The same signing certificate (DER), chain and root bundle: what a serving certificate is signed by and carries. */
function sameSigningChain(a: SigningBundle, b: SigningBundle): boolean {
  return a.signingCert.der.equals(b.signingCert.der) && a.rootsPem === b.rootsPem && a.chainPems.length === b.chainPems.length && a.chainPems.every((p, i) => p === b.chainPems[i]);
}
