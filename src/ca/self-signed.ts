import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { inspectCertificate, runPathJobsAsync, runPathJobsSync, signingBundleSteps, type KeySpec, type PathJobSteps, type ProbeNames, type SigningBundle } from '../pki/index.js';
import type { Authority } from './authority.js';
import { DEFAULT_PROBE_NAMES } from './cacerts.js';
import { createRootCa, rootCertificateForKey } from './hierarchy.js';

export interface SelfSignedOptions {
  /** Where the root persists (ca-cert.pem, ca-key.pem 0600, root-cert.pem); in memory only when unset. */
  dir: string | undefined;
  ttlMs: number;
  key: KeySpec;
  organization: string;
  /** Re-issue when less than this percentage of the root's life remains (istiod: 20). */
  gracePercentile: number;
  checkIntervalMs: number;
  /** DNS SANs of the serving certificate, validated with each (re-)issued root; serve's defaults when unset. */
  servingDns?: string[] | undefined;
}

export interface SelfSignedRootMaterial {
  certPem: string;
  keyPem: string;
}

function write(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/** A signing bundle of a self-signed root, validated (issue #11) for the certificates issued under `names`. */
export function bundleFromRoot(m: SelfSignedRootMaterial, now = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES): SigningBundle {
  return runPathJobsSync(rootBundleSteps(m, now, names));
}

function rootBundleSteps(m: SelfSignedRootMaterial, now: Date, names: ProbeNames): PathJobSteps<SigningBundle> {
  return signingBundleSteps(
    {
      layout: 'self-signed',
      signingCert: { name: 'self-signed root', text: m.certPem },
      signingKey: { name: 'self-signed root key', text: m.keyPem },
      chain: [],
      roots: { name: 'self-signed root', text: m.certPem },
    },
    now,
    names,
  );
}

/** istiod's rule: rotate when (NotAfter - now) - pct% x lifetime <= 0. */
export function rootNeedsRotation(certPem: string, gracePercentile: number, now = new Date()): boolean {
  const c = new X509Certificate(certPem);
  const nb = new Date(c.validFrom).getTime();
  const na = new Date(c.validTo).getTime();
  return na - now.getTime() - (gracePercentile / 100) * (na - nb) <= 0;
}

/**
 * Self-signed mode, for bootstrapping: svid-ca makes its own root and signs with it directly, and
 * re-issues that root with the same key before it expires (old leaves still verify: same key, same
 * subject), as istiod's self-signed root rotator does.
 */
export class SelfSignedRoot {
  private timer: NodeJS.Timeout | undefined;
  material: SelfSignedRootMaterial;

  constructor(
    private readonly options: SelfSignedOptions,
    private readonly onEvent: (event: 'created' | 'loaded' | 'rotated', m: SelfSignedRootMaterial) => void = () => {},
  ) {
    const dir = options.dir;
    if (dir && existsSync(join(dir, 'ca-key.pem')) && existsSync(join(dir, 'ca-cert.pem'))) {
      this.material = { certPem: readFileSync(join(dir, 'ca-cert.pem'), 'utf8'), keyPem: readFileSync(join(dir, 'ca-key.pem'), 'utf8') };
      this.onEvent('loaded', this.material);
    } else {
      this.material = createRootCa({ key: options.key, ttlMs: options.ttlMs, organization: options.organization });
      this.persist();
      this.onEvent('created', this.material);
    }
  }

  bundle(now = new Date()): SigningBundle {
    return bundleFromRoot(this.material, now, this.names());
  }

  /** bundle() for asynchronous callers (serve's start): pkijs on this event loop, no worker thread (issue #14). */
  bundleAsync(now = new Date()): Promise<SigningBundle> {
    return runPathJobsAsync(rootBundleSteps(this.material, now, this.names()));
  }

  private names(): ProbeNames {
    return { trustDomain: this.options.organization, servingDns: this.options.servingDns ?? DEFAULT_PROBE_NAMES.servingDns };
  }

  private persist(): void {
    const dir = this.options.dir;
    if (!dir) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    write(join(dir, 'ca-key.pem'), this.material.keyPem, 0o600);
    write(join(dir, 'ca-cert.pem'), this.material.certPem, 0o644);
    write(join(dir, 'root-cert.pem'), this.material.certPem, 0o644);
  }

  /** Re-issues the root with the same key if it is inside the grace period. Returns true when it did. */
  rotateIfDue(authority: Authority, now = new Date()): boolean {
    if (!rootNeedsRotation(this.material.certPem, this.options.gracePercentile, now)) return false;
    // Same key and the same subject bytes: leaves issued under the old root still verify.
    const subjectDer = inspectCertificate(new X509Certificate(this.material.certPem).raw).subjectDer;
    const certPem = rootCertificateForKey(this.material.keyPem, { ttlMs: this.options.ttlMs, organization: this.options.organization, subjectDer, now });
    this.material = { certPem, keyPem: this.material.keyPem };
    this.persist();
    authority.replaceBundle(this.bundle(now));
    this.onEvent('rotated', this.material);
    return true;
  }

  startRotation(authority: Authority, onError: (err: Error) => void): void {
    if (this.options.checkIntervalMs <= 0) return;
    this.timer = setInterval(() => {
      try {
        this.rotateIfDue(authority);
      } catch (err) {
        onError(err as Error);
      }
    }, this.options.checkIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
