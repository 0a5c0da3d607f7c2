import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { BundleError, decodePem, runPathJobsAsync, runPathJobsSync, signingBundleSteps, type BundleFiles, type NamedText, type PathJobSteps, type ProbeNames, type SigningBundle } from '../pki/index.js';
import type { Pkcs11SigningKeySource } from './pkcs11/index.js';

/** The two layouts Istio accepts in a cacerts folder. Kubernetes TLS wins when tls.crt exists, as in istiod. */
export const ISTIO_FILES = { cert: 'ca-cert.pem', key: 'ca-key.pem', chain: 'cert-chain.pem', root: 'root-cert.pem' } as const;
export const TLS_FILES = { cert: 'tls.crt', key: 'tls.key', root: 'ca.crt' } as const;
/** Optional in the Istio layout, as istiod reads it (issue #16); the Kubernetes TLS layout has no CRL file. */
export const CRL_FILE = 'ca-crl.pem';

/** ca-crl.pem when the folder holds it (a symlink left dangling by a `..data` swap counts as absent). */
const optionalCrl = (dir: string): NamedText | undefined => (existsSync(join(dir, CRL_FILE)) ? read(dir, CRL_FILE) : undefined);

function read(dir: string, file: string): NamedText {
  const path = join(dir, file);
  try {
    return { name: path, text: readFileSync(path, 'utf8') };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BundleError(path, code === 'ENOENT' ? 'file is missing' : `cannot be read (${code ?? (err as Error).message})`);
  }
}

/**
 * The key file of a folder whose certificate was read: a missing key most often means the key is in a PKCS#11
 * token (issue #17) and --signing-key was left out, so the message says so.
 */
function readKey(dir: string, file: string): NamedText {
  try {
    return read(dir, file);
  } catch (err) {
    if (!(err instanceof BundleError) || existsSync(err.file)) throw err;
    throw new BundleError(err.file, `${err.problem} (if the key is in a PKCS#11 token, give --signing-key URI)`);
  }
}

/** Reads the files of a cacerts folder (following Kubernetes' ..data symlinks) in the layout it holds. */
export function readCacertsFiles(dir: string, keyOnToken?: string): BundleFiles {
  if (keyOnToken !== undefined) return readCertificateFiles(dir, keyOnToken);
  if (!existsSync(dir)) throw new BundleError(dir, 'cacerts folder does not exist');
  if (existsSync(join(dir, TLS_FILES.cert))) {
    const cert = read(dir, TLS_FILES.cert);
    const roots = read(dir, TLS_FILES.root);
    return { layout: 'kubernetes-tls', signingCert: cert, signingKey: readKey(dir, TLS_FILES.key), chain: [cert, roots], roots };
  }
  const present = Object.values(ISTIO_FILES).filter((f) => existsSync(join(dir, f)));
  if (present.length === 0) {
    throw new BundleError(dir, `no signing bundle found: expected ${Object.values(ISTIO_FILES).join(', ')} (Istio layout) or ${Object.values(TLS_FILES).join(', ')} (Kubernetes TLS layout)`);
  }
  return {
    layout: 'istio',
    signingCert: read(dir, ISTIO_FILES.cert),
    signingKey: readKey(dir, ISTIO_FILES.key),
    chain: [read(dir, ISTIO_FILES.chain)],
    roots: read(dir, ISTIO_FILES.root),
    crl: optionalCrl(dir),
  };
}

/**
 * The cacerts folder when the key is on a token (issue #17): the certificates only. A key file next
 * to them is refused, naming it: two keys for one certificate leave the operator unsure which signs.
 */
function readCertificateFiles(dir: string, keyRef: string): BundleFiles {
  for (const keyFile of [ISTIO_FILES.key, TLS_FILES.key]) {
    if (existsSync(join(dir, keyFile))) {
      throw new BundleError(join(dir, keyFile), `the signing key is on the token (--signing-key ${keyRef}): remove ${keyFile} from the cacerts folder`);
    }
  }
  const noKey = { name: keyRef, text: '' };
  if (!existsSync(dir)) throw new BundleError(dir, 'cacerts folder does not exist');
  if (existsSync(join(dir, TLS_FILES.cert))) {
    const cert = read(dir, TLS_FILES.cert);
    const roots = read(dir, TLS_FILES.root);
    return { layout: 'kubernetes-tls', signingCert: cert, signingKey: noKey, chain: [cert, roots], roots };
  }
  return { layout: 'istio', signingCert: read(dir, ISTIO_FILES.cert), signingKey: noKey, chain: [read(dir, ISTIO_FILES.chain)], roots: read(dir, ISTIO_FILES.root), crl: optionalCrl(dir) };
}

/** The first certificate of the signing-certificate file (the one the key must match). */
function firstCertificate(file: NamedText): X509Certificate {
  const block = decodePem(file.text).find((b) => b.type === 'CERTIFICATE');
  try {
    if (block) return new X509Certificate(block.der);
  } catch (err) {
    throw new BundleError(file.name, `certificate #1 cannot be parsed (${(err as Error).message})`);
  }
  throw new BundleError(file.name, 'no PEM CERTIFICATE block found');
}

/** A private key readable beyond its owner is worth a warning (not a refusal: Kubernetes fsGroup setups use 0440). */
function keyModeWarning(keyPath: string): string | undefined {
  try {
    const mode = statSync(keyPath).mode & 0o777;
    if (mode & 0o077) {
      return `${keyPath} is readable by ${mode & 0o007 ? 'others' : 'its group'} (mode ${mode.toString(8).padStart(4, '0')}); the signing key should be 0400 or 0600 (0440 only with a pod fsGroup of its own)`;
    }
  } catch {
    // unreadable files are reported by the load itself
  }
  return undefined;
}

/**
 * A ca-crl.pem beside a Kubernetes TLS-layout folder is not read (that layout has no CRL file; istiod ignores it
 * too): worth a warning naming it, since an operator who put it there expects the CRLs to be served.
 */
function ignoredCrlWarning(dir: string, files: BundleFiles): string | undefined {
  const crlPath = join(dir, CRL_FILE);
  if (files.layout !== 'kubernetes-tls' || !existsSync(crlPath)) return undefined;
  return `${crlPath} is ignored: the Kubernetes TLS layout (tls.crt, tls.key, ca.crt) carries no CRL; put the CRLs in an Istio-layout folder (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem, ca-crl.pem; see docs/cacerts.md)`;
}

/** The names `serve` issues under by default (--trust-domain, --serving-dns): the probe names when none are given. */
export const DEFAULT_PROBE_NAMES: ProbeNames = { trustDomain: 'cluster.local', servingDns: ['svid-ca.istio-system.svc', 'localhost'] };

/**
 * Reads and fully verifies the bundle in `dir` at `now` for certificates issued under `names`
 * (pass serve's --trust-domain and --serving-dns). With `tokenKey` (issue #17) the folder holds the
 * certificates only and the key on the token is checked against ca-cert.pem. Throws BundleError
 * naming the file and the problem.
 */
export function loadCacerts(dir: string, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES, tokenKey?: Pkcs11SigningKeySource): SigningBundle {
  return loadCacertsWithFiles(dir, now, names, tokenKey).bundle;
}

/**
 * loadCacerts, also returning the file texts the bundle was verified from (the primary of
 * --workers hands exactly these to its workers, which check them again with bundleFromFiles).
 */
export function loadCacertsWithFiles(dir: string, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES, tokenKey?: Pkcs11SigningKeySource): { bundle: SigningBundle; files: BundleFiles } {
  return runPathJobsSync(cacertsSteps(dir, now, names, tokenKey));
}

/**
 * loadCacertsWithFiles for asynchronous callers (serve's start and reloads): the same checks, with
 * pkijs on this event loop instead of a worker thread (a serving process keeps no such thread).
 */
export function loadCacertsWithFilesAsync(dir: string, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES, tokenKey?: Pkcs11SigningKeySource): Promise<{ bundle: SigningBundle; files: BundleFiles }> {
  return runPathJobsAsync(cacertsSteps(dir, now, names, tokenKey));
}

/** loadCacertsWithFiles as PathJobSteps (pki): the one place it is written, for both drivers. */
export function* cacertsSteps(dir: string, now: Date, names: ProbeNames, tokenKey?: Pkcs11SigningKeySource): PathJobSteps<{ bundle: SigningBundle; files: BundleFiles }> {
  const files = readCacertsFiles(dir, tokenKey?.describe());
  const bundle = yield* bundleSteps(files, now, names, tokenKey);
  const warning = tokenKey ? undefined : keyModeWarning(files.signingKey.name);
  if (warning) bundle.warnings.push(warning);
  const ignoredCrl = ignoredCrlWarning(dir, files);
  if (ignoredCrl) bundle.warnings.push(ignoredCrl);
  return { bundle, files };
}

/**
 * The checks of loadCacerts on texts already read (no file I/O besides the token's URI file): the
 * one place both paths verify. With `tokenKey` (issue #17) the key the URI names is found on the
 * token and checked against the signing certificate (same public key, a probe signature verifies)
 * on every call; each process passes its own source (PKCS#11 state never crosses processes).
 */
export function bundleFromFiles(files: BundleFiles, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES, tokenKey?: Pkcs11SigningKeySource): SigningBundle {
  return runPathJobsSync(bundleSteps(files, now, names, tokenKey));
}

/** bundleFromFiles for asynchronous callers (a --workers worker checking the primary's texts): no worker thread. */
export function bundleFromFilesAsync(files: BundleFiles, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES, tokenKey?: Pkcs11SigningKeySource): Promise<SigningBundle> {
  return runPathJobsAsync(bundleSteps(files, now, names, tokenKey));
}

function* bundleSteps(files: BundleFiles, now: Date, names: ProbeNames, tokenKey?: Pkcs11SigningKeySource): PathJobSteps<SigningBundle> {
  if (!tokenKey) return yield* signingBundleSteps(files, now, names);
  const key = tokenKey.load(firstCertificate(files.signingCert));
  const bundle = yield* signingBundleSteps(files, now, names, key);
  bundle.warnings.push(...key.warnings);
  return bundle;
}
