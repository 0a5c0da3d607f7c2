import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BundleError, verifySigningBundle, type BundleFiles, type NamedText, type ProbeNames, type SigningBundle } from '../pki/index.js';

/** The two layouts Istio accepts in a cacerts folder. Kubernetes TLS wins when tls.crt exists, as in istiod. */
export const ISTIO_FILES = { cert: 'ca-cert.pem', key: 'ca-key.pem', chain: 'cert-chain.pem', root: 'root-cert.pem' } as const;
export const TLS_FILES = { cert: 'tls.crt', key: 'tls.key', root: 'ca.crt' } as const;

function read(dir: string, file: string): NamedText {
  const path = join(dir, file);
  try {
    return { name: path, text: readFileSync(path, 'utf8') };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BundleError(path, code === 'ENOENT' ? 'file is missing' : `cannot be read (${code ?? (err as Error).message})`);
  }
}

/** Reads the files of a cacerts folder (following Kubernetes' ..data symlinks) in the layout it holds. */
export function readCacertsFiles(dir: string): BundleFiles {
  if (!existsSync(dir)) throw new BundleError(dir, 'cacerts folder does not exist');
  if (existsSync(join(dir, TLS_FILES.cert))) {
    const cert = read(dir, TLS_FILES.cert);
    const roots = read(dir, TLS_FILES.root);
    return { layout: 'kubernetes-tls', signingCert: cert, signingKey: read(dir, TLS_FILES.key), chain: [cert, roots], roots };
  }
  const present = Object.values(ISTIO_FILES).filter((f) => existsSync(join(dir, f)));
  if (present.length === 0) {
    throw new BundleError(dir, `no signing bundle found: expected ${Object.values(ISTIO_FILES).join(', ')} (Istio layout) or ${Object.values(TLS_FILES).join(', ')} (Kubernetes TLS layout)`);
  }
  return {
    layout: 'istio',
    signingCert: read(dir, ISTIO_FILES.cert),
    signingKey: read(dir, ISTIO_FILES.key),
    chain: [read(dir, ISTIO_FILES.chain)],
    roots: read(dir, ISTIO_FILES.root),
  };
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

/** The names `serve` issues under by default (--trust-domain, --serving-dns): the probe names when none are given. */
export const DEFAULT_PROBE_NAMES: ProbeNames = { trustDomain: 'cluster.local', servingDns: ['svid-ca.istio-system.svc', 'localhost'] };

/**
 * Reads and fully verifies the bundle in `dir` at `now` for certificates issued under `names`
 * (pass serve's --trust-domain and --serving-dns). Throws BundleError naming the file and the problem.
 */
export function loadCacerts(dir: string, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES): SigningBundle {
  return loadCacertsWithFiles(dir, now, names).bundle;
}

/**
 * loadCacerts, also returning the file texts the bundle was verified from (the primary of
 * --workers hands exactly these to its workers, which check them again with bundleFromFiles).
 */
export function loadCacertsWithFiles(dir: string, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES): { bundle: SigningBundle; files: BundleFiles } {
  const files = readCacertsFiles(dir);
  const bundle = bundleFromFiles(files, now, names);
  const warning = keyModeWarning(files.signingKey.name);
  if (warning) bundle.warnings.push(warning);
  return { bundle, files };
}

/** The checks of loadCacerts on texts already read (no file I/O): the one place both paths verify. */
export function bundleFromFiles(files: BundleFiles, now: Date = new Date(), names: ProbeNames = DEFAULT_PROBE_NAMES): SigningBundle {
  return verifySigningBundle(files, now, names);
}
