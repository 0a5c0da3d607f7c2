import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { BundleError, inspectCertificate, runPathJobsAsync, runPathJobsSync, signingBundleSteps, type ExternalSigningKey, type KeySpec, type PathJobSteps, type ProbeNames, type SigningBundle } from '../pki/index.js';
import type { Authority } from './authority.js';
import { DEFAULT_PROBE_NAMES } from './cacerts.js';
import { createRootCa, rootCertificateForExternalKey, rootCertificateForKey } from './hierarchy.js';
import { TOKEN_KEY_SPECS, type Pkcs11SigningKeySource, type TokenKeySpec } from './pkcs11/index.js';

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
  /**
   * issue #17: the root's key on a PKCS#11 token (--signing-key with --self-signed): found, or
   * generated as `key` when the token holds none; `dir` then holds the certificates only.
   */
  tokenKey?: Pkcs11SigningKeySource | undefined;
}

export interface SelfSignedRootMaterial {
  certPem: string;
  /** The root's private key, PEM; '' when the key is on a token (options.tokenKey). */
  keyPem: string;
}

function write(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/**
 * A signing bundle of a self-signed root, validated (issue #11) for the certificates issued under
 * `names`; with `external` (issue #17) the root's key is on a token and keyName names it.
 */
export function bundleFromRoot(m: SelfSignedRootMaterial, now = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES, external?: ExternalSigningKey & { name: string }): SigningBundle {
  return runPathJobsSync(rootBundleSteps(m, now, names, external));
}

function rootBundleSteps(m: SelfSignedRootMaterial, now: Date, names: ProbeNames, external?: ExternalSigningKey & { name: string }): PathJobSteps<SigningBundle> {
  return signingBundleSteps(
    {
      layout: 'self-signed',
      signingCert: { name: 'self-signed root', text: m.certPem },
      signingKey: { name: external?.name ?? 'self-signed root key', text: m.keyPem },
      chain: [],
      roots: { name: 'self-signed root', text: m.certPem },
    },
    now,
    names,
    external,
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
    const has = (f: string) => dir !== undefined && existsSync(join(dir, f));
    if (options.tokenKey) {
      if (has('ca-key.pem')) throw new BundleError(join(dir!, 'ca-key.pem'), 'the self-signed root key is on the token (--signing-key): remove ca-key.pem from --self-signed-dir');
      if (has('ca-cert.pem')) {
        this.material = { certPem: readFileSync(join(dir!, 'ca-cert.pem'), 'utf8'), keyPem: '' };
        this.onEvent('loaded', this.material);
      } else {
        const spec = options.key as TokenKeySpec;
        if (!TOKEN_KEY_SPECS.includes(spec)) throw new BundleError('--self-signed-key', `${options.key} cannot be generated in a token; use one of ${TOKEN_KEY_SPECS.join(', ')}`);
        const { publicKey, key } = options.tokenKey.keyForNewCertificate(spec);
        this.material = { certPem: rootCertificateForExternalKey(key, publicKey, { ttlMs: options.ttlMs, organization: options.organization }), keyPem: '' };
        this.persist();
        this.onEvent('created', this.material);
      }
    } else if (has('ca-key.pem') && has('ca-cert.pem')) {
      this.material = { certPem: readFileSync(join(dir!, 'ca-cert.pem'), 'utf8'), keyPem: readFileSync(join(dir!, 'ca-key.pem'), 'utf8') };
      this.onEvent('loaded', this.material);
    } else {
      this.material = createRootCa({ key: options.key, ttlMs: options.ttlMs, organization: options.organization });
      this.persist();
      this.onEvent('created', this.material);
    }
  }

  /** The bundle of the current root; with a token key, the key is found and checked against it (a probe signature, within the timeout). */
  bundle(now = new Date()): SigningBundle {
    return this.#bundleOf(this.material, now);
  }

  /** bundle() for asynchronous callers (serve's start): pkijs on this event loop, no worker thread (issue #14). */
  bundleAsync(now = new Date()): Promise<SigningBundle> {
    return runPathJobsAsync(this.#bundleSteps(this.material, now));
  }

  #bundleOf(m: SelfSignedRootMaterial, now: Date): SigningBundle {
    return runPathJobsSync(this.#bundleSteps(m, now));
  }

  /** The one way a root's bundle is checked, run by either driver: the token key first (issue #17), then the paths. */
  *#bundleSteps(m: SelfSignedRootMaterial, now: Date): PathJobSteps<SigningBundle> {
    const names = { trustDomain: this.options.organization, servingDns: this.options.servingDns ?? DEFAULT_PROBE_NAMES.servingDns };
    const token = this.options.tokenKey;
    if (!token) return yield* rootBundleSteps(m, now, names);
    const checked = token.load(new X509Certificate(m.certPem));
    const bundle = yield* rootBundleSteps(m, now, names, { ...checked, name: token.describe() });
    bundle.warnings.push(...checked.warnings);
    return bundle;
  }

  private persist(): void {
    const dir = this.options.dir;
    if (!dir) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (this.material.keyPem) write(join(dir, 'ca-key.pem'), this.material.keyPem, 0o600);
    write(join(dir, 'ca-cert.pem'), this.material.certPem, 0o644);
    write(join(dir, 'root-cert.pem'), this.material.certPem, 0o644);
  }

  /**
   * Re-issues the root with the same key if it is inside the grace period. Returns true when it did.
   * With the key on a token the new root is signed through the current bundle's signer (the token
   * key, within the per-signature timeout); a token that does not answer throws CaUnavailableError
   * before anything is written or swapped, and the next check tries again.
   */
  rotateIfDue(authority: Authority, now = new Date()): boolean {
    if (!rootNeedsRotation(this.material.certPem, this.options.gracePercentile, now)) return false;
    // Same key and the same subject bytes: leaves issued under the old root still verify.
    const current = new X509Certificate(this.material.certPem);
    const subjectDer = inspectCertificate(current.raw).subjectDer;
    const root = { ttlMs: this.options.ttlMs, organization: this.options.organization, subjectDer, now };
    const external = authority.bundle.signer.external;
    const certPem = this.material.keyPem ? rootCertificateForKey(this.material.keyPem, root) : rootCertificateForExternalKey(external!, current.publicKey, root);
    const next = { certPem, keyPem: this.material.keyPem };
    // Checked (and, with a token, probed) before it is written or served.
    const bundle = this.#bundleOf(next, now);
    this.material = next;
    this.persist();
    authority.replaceBundle(bundle);
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
