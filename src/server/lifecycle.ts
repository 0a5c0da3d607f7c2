import { formatGoDuration } from '../duration.js';
import { CacertsReloader, CRL_FILE, DEFAULT_PROBE_NAMES, SelfSignedRoot, ServingCertificateManager, type Authority, type Grace, type Pkcs11SigningKeySource, type ReloadResult } from '../ca/index.js';
import type { CaMetrics, Logger, TrackedCertificate } from '../observability/index.js';
import { BundleError, crlLabel, subjectText, type LoadedCertificate, type SigningBundle } from '../pki/index.js';
import type { ServingTls } from './tls.js';

export interface LifecycleOptions {
  cacerts: string;
  maxTtlMs: number;
  servingDns: string[];
  servingCertTtlMs: number;
  servingCertGrace?: Grace | undefined;
  reloadIntervalMs?: number | undefined;
  allowRootReplacement?: boolean | undefined;
  signerExpiryWarningMs?: number | undefined;
  /** --trust-domain: reloads validate the paths for SVIDs of this trust domain (issue #11). */
  trustDomain?: string | undefined;
  /** Told every reload result after it is logged and counted (the primary of --workers forwards bundles). */
  onReload?: ((r: ReloadResult) => void) | undefined;
  /** The signing key on a PKCS#11 token (issue #17): each reload finds and checks it again. */
  tokenKey?: Pkcs11SigningKeySource | undefined;
  /** Log the same cacerts refusal again at most this often, ms (default REFUSAL_LOG_INTERVAL_MS, 10 minutes). */
  refusalLogIntervalMs?: number | undefined;
}

const subjectOf = (c: LoadedCertificate) => subjectText(c.x509);
/** A serial as OpenSSL, Node and the audit log print it: without the DER sign byte. */
const printedSerial = (hex: string) => (hex.length > 2 && hex.startsWith('00') ? hex.slice(2) : hex);
/** X.509 times have whole seconds: the not-after the certificate really carries. */
export const wholeSeconds = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

/** The certificates of a bundle by role, for the expiry metrics. */
export function trackedCertificates(bundle: SigningBundle): TrackedCertificate[] {
  const track = (role: TrackedCertificate['role'], c: LoadedCertificate): TrackedCertificate => ({
    role,
    subject: subjectOf(c),
    serial: printedSerial(c.facts.serialHex),
    notAfter: new Date(c.x509.validTo),
  });
  const rootDers = bundle.roots.map((r) => r.der);
  const intermediates = bundle.chainCerts.filter((c) => !c.der.equals(bundle.signingCert.der) && !rootDers.some((d) => d.equals(c.der)));
  const unique = new Map<string, TrackedCertificate>();
  for (const t of [...bundle.roots.map((c) => track('root', c)), ...intermediates.map((c) => track('intermediate', c)), track('signer', bundle.signingCert)]) {
    unique.set(`${t.role}/${t.serial}/${t.subject}`, t);
  }
  return [...unique.values()];
}

/** Expiry gauges (svid-ca's and istiod's) and the clamping flag for a bundle. */
export function recordBundleMetrics(metrics: CaMetrics, bundle: SigningBundle, maxTtlMs: number): void {
  const firstRoot = bundle.roots[0];
  const firstChain = bundle.chainCerts[0];
  metrics.setBundleCertificates(
    trackedCertificates(bundle),
    firstRoot ? new Date(firstRoot.x509.validTo) : undefined,
    firstChain ? new Date(firstChain.x509.validTo) : undefined,
  );
  metrics.setSigner(bundle.notAfter, maxTtlMs);
  metrics.setCrls(bundle.crls.map((c) => ({ issuer: c.issuer, thisUpdate: c.thisUpdate, nextUpdate: c.nextUpdate, revoked: c.revoked.length })));
}

/** The bundle as the 'signing bundle loaded' line shows it. */
export function describeBundle(bundle: SigningBundle) {
  return {
    layout: bundle.layout,
    signer: subjectOf(bundle.signingCert),
    signerSki: bundle.signingCert.facts.subjectKeyId?.toString('hex'),
    signerNotAfter: bundle.notAfter.toISOString(),
    algorithm: bundle.signer.algorithm.name,
    roots: bundle.roots.map(subjectOf),
    chainLength: bundle.chainPems.length,
    crls: bundle.crls.length > 0 ? bundle.crls.map(crlLabel) : undefined,
  };
}

const DEFAULTS = { reloadIntervalMs: 10_000, signerExpiryWarningMs: 720 * 3_600_000, grace: { fraction: 0.5 } as Grace };

/** The expiry warnings an operator needs at start and after each reload. */
export function warnAboutSigner(logger: Logger, bundle: SigningBundle, maxTtlMs: number, warningMs: number, now = Date.now()): void {
  const left = bundle.notAfter.getTime() - now;
  const fields = { signerNotAfter: bundle.notAfter.toISOString(), signerTimeLeft: formatGoDuration(left) };
  if (left < maxTtlMs) logger.warn({ ...fields, maxTtl: formatGoDuration(maxTtlMs) }, 'the signing certificate expires sooner than --max-ttl from now: leaves will be clamped to its expiry');
  if (left < warningMs) logger.warn({ ...fields, warning: formatGoDuration(warningMs) }, 'the signing certificate expires within --signer-expiry-warning: rotate the intermediate');
  // A certificate above the signer that expires first ends the signing path: leaves are clamped to it
  // and issuance stops then (issue #11), which the signer's own dates above do not show.
  const pathEnd = bundle.validity.notAfter;
  if (pathEnd < bundle.notAfter && pathEnd.getTime() - now < Math.max(maxTtlMs, warningMs)) {
    logger.warn(
      { pathNotAfter: pathEnd.toISOString(), pathTimeLeft: formatGoDuration(pathEnd.getTime() - now), signerNotAfter: fields.signerNotAfter },
      'an intermediate or root above the signing certificate expires first: leaves are clamped to it and svid-ca stops issuing then; rotate it',
    );
  }
  for (const w of bundle.warnings) logger.warn({}, w);
  // issue #16: a stale CRL is still used and published; clients decide what a stale CRL means.
  for (const crl of bundle.crls) {
    if (crl.nextUpdate && crl.nextUpdate.getTime() <= now) {
      logger.warn(
        { crl: crlLabel(crl), issuer: crl.issuer, number: crl.number, nextUpdate: crl.nextUpdate.toISOString() },
        'a CRL of ca-crl.pem is past its nextUpdate: it is still used and published, but clients may treat it as stale; renew it (svid-ca cacerts crl) and apply it',
      );
    }
  }
}

/**
 * Everything that changes the signing material while svid-ca runs: cacerts hot reload (or the
 * self-signed root rotator), and the serving certificate, re-issued after each change and renewed
 * before it expires.
 */
export class BundleLifecycle {
  readonly serving: ServingCertificateManager;
  private reloader: CacertsReloader | undefined;

  constructor(
    private readonly authority: Authority,
    private readonly options: LifecycleOptions,
    private readonly metrics: CaMetrics,
    private readonly logger: Logger,
    private readonly tls: () => ServingTls | undefined,
    private readonly selfSigned: SelfSignedRoot | undefined,
  ) {
    this.serving = new ServingCertificateManager(authority, {
      dnsNames: options.servingDns,
      ttlMs: options.servingCertTtlMs,
      grace: options.servingCertGrace ?? DEFAULTS.grace,
    });
    this.recordServing();
    this.serving.on('renewed', (cert, reason) => {
      this.tls()?.update(cert);
      this.recordServing();
      logger.info({ reason, notAfter: cert.notAfter.toISOString(), serial: cert.serialHex, renewAt: this.serving.renewAt().toISOString() }, 'serving certificate renewed');
    });
    this.serving.on('error', (err) => logger.error({ err: err.message }, 'serving certificate renewal failed; retrying'));
    this.serving.on('limitedBySigner', (cert) => {
      this.metrics.servingLimitedBySigner.set(1);
      logger.error(
        { signerNotAfter: cert.notAfter.toISOString(), servingNotAfter: cert.notAfter.toISOString(), serial: cert.serialHex },
        `the serving certificate cannot be renewed past the signing certificate, which expires at ${cert.notAfter.toISOString()}: mount a new cacerts bundle before then, or TLS to svid-ca fails and no workload gets a certificate`,
      );
    });
    authority.on('bundle', (bundle) => {
      this.metrics.lastReload.set(Date.now() / 1000);
      this.recordBundle(bundle);
      if (!this.serving.renewIfSignerChanged('signing bundle changed')) {
        logger.info({ reason: 'the signing certificate, chain and root bundle did not change', serial: this.serving.current.serialHex }, 'serving certificate kept');
      }
    });
  }

  start(): void {
    this.serving.start();
    if (this.selfSigned) {
      this.selfSigned.startRotation(this.authority, (err) => this.logger.error({ err: err.message }, 'self-signed root rotation failed'));
      return;
    }
    this.reloader = new CacertsReloader(
      this.authority,
      {
        dir: this.options.cacerts,
        pollIntervalMs: this.options.reloadIntervalMs ?? DEFAULTS.reloadIntervalMs,
        allowRootReplacement: this.options.allowRootReplacement ?? false,
        names: { trustDomain: this.options.trustDomain ?? DEFAULT_PROBE_NAMES.trustDomain, servingDns: this.options.servingDns },
        tokenKey: this.options.tokenKey,
        refusalLogIntervalMs: this.options.refusalLogIntervalMs,
      },
      { onResult: (r) => this.onReload(r) },
    );
    this.reloader.start();
  }

  /** Checks the cacerts folder now (tests and the poll call this). */
  checkNow(): ReloadResult | undefined {
    return this.reloader?.check();
  }

  stop(): void {
    this.reloader?.stop();
    this.serving.stop();
    this.selfSigned?.stop();
  }

  recordBundle(bundle: SigningBundle): void {
    recordBundleMetrics(this.metrics, bundle, this.options.maxTtlMs);
  }

  private recordServing(): void {
    const c = this.serving.current;
    if (!c.limitedBySigner) this.metrics.servingLimitedBySigner.set(0);
    this.metrics.setServingCertificate({ role: 'serving', subject: this.options.servingDns.join(','), serial: c.serialHex, notAfter: wholeSeconds(c.notAfter) });
  }

  private onReload(r: ReloadResult): void {
    if (r.result === 'success') {
      this.metrics.bundleReloads.inc({ result: 'success' });
      this.logger.info(
        { cacerts: this.options.cacerts, signer: subjectOf(r.bundle.signingCert), signerSki: r.bundle.signingCert.facts.subjectKeyId?.toString('hex'), signerNotAfter: r.bundle.notAfter.toISOString(), rootsAdded: r.roots.added, rootsRemoved: r.roots.removed, crls: r.bundle.crls.map(crlLabel) },
        'signing bundle reloaded',
      );
      warnAboutSigner(this.logger, r.bundle, this.options.maxTtlMs, this.options.signerExpiryWarningMs ?? DEFAULTS.signerExpiryWarningMs);
    } else if (r.result === 'failure') {
      // Every retry is an attempt and counts (SvidCaBundleReloadFailing keeps firing while the files stay broken);
      // the log line comes once per content and problem, then once per refusalLogIntervalMs.
      this.metrics.bundleReloads.inc({ result: 'failure' });
      const e = r.error;
      const { log, count, firstAt } = r.refusal;
      if (log) {
        this.logger.error(
          {
            // issue #16: a CRL problem says so (`crl: true`, the file is ca-crl.pem), apart from certificate problems.
            ...(e instanceof BundleError ? { file: e.file, problem: e.problem, crl: e.file.endsWith(CRL_FILE) || undefined } : { err: e.message }),
            ...(count > 1 ? { refusals: count, firstRefusedAt: firstAt.toISOString() } : {}) },
          'cacerts reload refused; still serving with the current bundle',
        );
      }
    }
    this.options.onReload?.(r);
  }
}
