import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import type { Authority } from '../ca/index.js';
import type { Logger } from '../observability/index.js';
import { inspectCertificate, splitCertificatePem } from '../pki/index.js';
import { describeKubeError, isNotFound } from './errors.js';
import type { IstiodCertOptions } from './options.js';
import { withTimeout } from './timeout.js';

/** Even a fresh certificate is looked at this often, so a deleted or edited Secret is restored. */
const RECHECK_MS = 60_000;
const CALL_TIMEOUT_MS = 10_000;

export interface IstiodCertManagerOptions extends IstiodCertOptions {
  core: CoreV1Api;
  authority: Pick<Authority, 'bundle' | 'issueServing'>;
  isLeader: () => boolean;
  logger: Logger;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8'));

/**
 * Keeps istiod's serving certificate (Secret istiod-tls, type kubernetes.io/tls: tls.crt with the
 * chain, tls.key, ca.crt = root bundle) issued by svid-ca, so istiod can run with
 * ENABLE_CA_SERVER=false. The Secret is left alone while it is valid for the current signer and
 * roots and younger than half its life; otherwise a new key and certificate are written. Leader only.
 */
export class IstiodCertManager {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private failures = 0;
  private inCheck = false;
  private rerun = false;
  private checking: Promise<void> = Promise.resolve();

  constructor(private readonly o: IstiodCertManagerOptions) {}

  /** Checks now (on start, on becoming leader, after a bundle change). */
  kick(): void {
    this.running = true;
    // A check in progress may have read the old bundle: run again right after it, never beside it.
    if (this.inCheck) this.rerun = true;
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.checking;
  }

  /** Waits for the check in progress, if any (tests). */
  settled(): Promise<void> {
    return this.checking;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.inCheck = true;
      this.checking = this.check()
        .then(
          (nextMs) => {
            this.failures = 0;
            return nextMs;
          },
          (err: unknown) => {
            this.failures++;
            const retry = Math.min(1000 * 2 ** (this.failures - 1), RECHECK_MS);
            this.o.logger.warn({ secret: this.ref(), problem: describeKubeError(err).message, retryInMs: retry }, 'istiod serving certificate: update failed; retrying');
            return retry;
          },
        )
        .then((nextMs) => {
          this.inCheck = false;
          if (this.rerun) {
            this.rerun = false;
            this.schedule(0);
          } else if (nextMs !== undefined) this.schedule(nextMs);
        });
    }, ms);
    this.timer.unref();
  }

  private ref(): string {
    return `${this.o.namespace}/${this.o.name}`;
  }

  /** Returns when to look again, or undefined when not leader. */
  private async check(): Promise<number | undefined> {
    if (!this.o.isLeader()) return undefined;
    const { core, namespace, name, logger } = this.o;
    const timeout = withTimeout(CALL_TIMEOUT_MS);
    let existing: V1Secret | undefined;
    try {
      existing = await core.readNamespacedSecret({ name, namespace }, timeout);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const now = Date.now();
    const verdict = existing ? this.assess(existing, now) : { renewAt: undefined, why: 'it does not exist' };
    if (verdict.renewAt !== undefined) return Math.max(1000, Math.min(verdict.renewAt - now, RECHECK_MS));

    const bundle = this.o.authority.bundle;
    const serving = this.o.authority.issueServing(this.o.dnsNames, this.o.ttlMs);
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: {
        ...existing?.metadata,
        name,
        namespace,
        labels: { ...existing?.metadata?.labels, 'app.kubernetes.io/managed-by': 'svid-ca' },
      },
      data: { 'tls.crt': b64(serving.certChainPem), 'tls.key': b64(serving.keyPem), 'ca.crt': b64(bundle.rootsPem) },
    };
    if (existing) {
      if (existing.type && existing.type !== 'kubernetes.io/tls') {
        throw new Error(`Secret ${this.ref()} has type ${existing.type}; a Secret's type cannot change, delete it so svid-ca can create a kubernetes.io/tls one`);
      }
      await core.replaceNamespacedSecret({ name, namespace, body }, timeout);
    } else {
      await core.createNamespacedSecret({ namespace, body }, timeout);
    }
    logger.info(
      { secret: this.ref(), reason: verdict.why, dnsNames: this.o.dnsNames, serial: serving.serialHex, notAfter: serving.notAfter.toISOString() },
      'istiod serving certificate written',
    );
    const renewAt = this.renewAt(serving.notBefore.getTime(), serving.notAfter.getTime());
    return Math.max(1000, Math.min(renewAt - Date.now(), RECHECK_MS));
  }

  /**
   * Half-life, measured on the intended lifetime: notBefore is backdated for clock skew, so the
   * midpoint of notBefore..notAfter would come too early for short lifetimes.
   */
  private renewAt(from: number, to: number): number {
    return to - Math.min(this.o.ttlMs, to - from) / 2;
  }

  /** When the Secret's certificate should be renewed, or why it must be replaced now. */
  private assess(secret: V1Secret, now: number): { renewAt: number | undefined; why: string } {
    const replace = (why: string) => ({ renewAt: undefined, why });
    const bundle = this.o.authority.bundle;
    const chainPem = unb64(secret.data?.['tls.crt']);
    const keyPem = unb64(secret.data?.['tls.key']);
    const caPem = unb64(secret.data?.['ca.crt']);
    if (secret.type !== 'kubernetes.io/tls') return replace(`its type is ${secret.type ?? 'unset'}`);
    if (!chainPem || !keyPem) return replace('tls.crt or tls.key is missing');
    if (caPem !== bundle.rootsPem) return replace('ca.crt is not the current root bundle');
    try {
      const leafPem = splitCertificatePem(chainPem)[0];
      if (!leafPem) return replace('tls.crt holds no certificate');
      const leaf = new X509Certificate(leafPem);
      const signer = bundle.signingCert.x509;
      if (!leaf.checkIssued(signer) || !leaf.verify(signer.publicKey)) return replace('it was not issued by the current signing certificate');
      const der = (k: ReturnType<typeof createPublicKey>) => k.export({ type: 'spki', format: 'der' });
      if (!der(createPublicKey(createPrivateKey(keyPem))).equals(der(leaf.publicKey))) return replace('tls.key does not match tls.crt');
      const dns = inspectCertificate(leaf.raw).dnsSans;
      const want = this.o.dnsNames;
      if (dns.length !== want.length || want.some((d) => !dns.includes(d))) return replace('its DNS names differ from --istiod-dns');
      const from = new Date(leaf.validFrom).getTime();
      const to = new Date(leaf.validTo).getTime();
      // It ends with the signing certificate: a new one would end there too, so renewing would only
      // rewrite the Secret over and over (issue #19). The next bundle replaces it (not issued by the new signer).
      if (to >= bundle.notAfter.getTime()) return { renewAt: Infinity, why: 'current (it ends with the signing certificate)' };
      const renewAt = this.renewAt(from, to);
      if (now >= renewAt) return replace('it is past half of its lifetime');
      return { renewAt, why: 'current' };
    } catch {
      return replace('its certificate or key cannot be parsed');
    }
  }
}
