import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import type { ExternalKey, Signer } from './certificate.js';
import { checkEveryLevelHasCrl, checkPathsNotRevoked, loadableCrls, loadCrls, type LoadedCrl } from './crl.js';
import { BundleError } from './errors.js';
import { inspectCertificate, type CertificateFacts } from './inspect.js';
import { signatureAlgorithmForKey, spkiDer, describeKey, keyLabel } from './keys.js';
import { decodePem, encodePem } from './pem.js';
import { issuancePathSteps, runPathJobsSync, type PathJobSteps, type PathValidity, type ProbeNames } from './path-validation.js';
import { subjectText } from './verify.js';

export interface NamedText {
  /** Path or file name, used in error messages. */
  name: string;
  text: string;
}

export type BundleLayout = 'istio' | 'kubernetes-tls' | 'self-signed';

/** The files of a cacerts folder, already read. `chain` lists the chain files in istiod's order. */
export interface BundleFiles {
  layout: BundleLayout;
  signingCert: NamedText;
  signingKey: NamedText;
  chain: NamedText[];
  roots: NamedText;
  /** ca-crl.pem of the Istio layout when the folder has one (issue #16); the Kubernetes TLS layout has none. */
  crl?: NamedText | undefined;
}

export interface LoadedCertificate {
  x509: X509Certificate;
  der: Buffer;
  facts: CertificateFacts;
}

/** A verified signing bundle: everything needed to sign and to answer, immutable once built. */
export interface SigningBundle {
  layout: BundleLayout;
  signer: Signer;
  signingCert: LoadedCertificate;
  /** The certificates returned between the leaf and the root bundle, one PEM per element. */
  chainPems: string[];
  chainCerts: LoadedCertificate[];
  /** root-cert.pem (or ca.crt) verbatim: the last element of every response. */
  rootsPem: string;
  /** ca-crl.pem verbatim ('' when the folder has none; issue #16). */
  crlPem: string;
  /** The CRLs of ca-crl.pem, each checked against the certificate that signed it (issue #16). */
  crls: LoadedCrl[];
  roots: LoadedCertificate[];
  /** signing certificate -> ... -> root, as verified. */
  path: LoadedCertificate[];
  notAfter: Date;
  /** When every certificate of every validated path is valid: readiness is true only inside it. */
  validity: PathValidity;
  warnings: string[];
}

function loadCertificates(file: NamedText, options: { allowEmpty?: boolean } = {}): LoadedCertificate[] {
  const blocks = decodePem(file.text).filter((b) => b.type === 'CERTIFICATE');
  // An empty chain file is istiod's layout for a root that signs directly (issue #11 case 4).
  if (blocks.length === 0 && options.allowEmpty && file.text.trim() === '') return [];
  if (blocks.length === 0) throw new BundleError(file.name, 'no PEM CERTIFICATE block found');
  return blocks.map((b, i) => {
    try {
      return { x509: new X509Certificate(b.der), der: b.der, facts: inspectCertificate(b.der) };
    } catch (err) {
      throw new BundleError(file.name, `certificate #${i + 1} cannot be parsed (${(err as Error).message})`);
    }
  });
}

const ENCRYPTED_KEY = 'the private key is encrypted; svid-ca needs an unencrypted PKCS#1, SEC1 or PKCS#8 key (decrypt it: openssl pkey -in KEY -out ca-key.pem)';

function loadPrivateKey(file: NamedText): KeyObject {
  // Traditional (PEM-encrypted) keys carry RFC 1421 headers, which make the block unreadable as base64.
  if (/^Proc-Type:\s*4,\s*ENCRYPTED/m.test(file.text)) throw new BundleError(file.name, ENCRYPTED_KEY);
  const block = decodePem(file.text)[0];
  if (!block) throw new BundleError(file.name, 'no PEM private key block found');
  if (block.type === 'ENCRYPTED PRIVATE KEY') throw new BundleError(file.name, ENCRYPTED_KEY);
  try {
    return createPrivateKey(file.text);
  } catch {
    throw new BundleError(file.name, `PEM block ${block.type} is not a readable private key (PKCS#1, SEC1 or PKCS#8)`);
  }
}

/** A signing key outside the bundle files (issue #17): its SubjectPublicKeyInfo DER and the key that signs. */
export interface ExternalSigningKey {
  publicKeyDer: Buffer;
  key: ExternalKey;
}

const describe = (c: LoadedCertificate) => subjectText(c.x509) || '(empty subject)';

/**
 * Issued-by for path building: the names chain and the parent's key verifies the child's signature
 * (node:crypto). Unlike X509Certificate.checkIssued it ignores the parent's key usage, so that a CA
 * lacking keyCertSign is found on the path and refused by name (path-validation.ts), not reported
 * as "does not chain".
 */
function issuedBy(child: LoadedCertificate, parent: LoadedCertificate): boolean {
  try {
    return child.x509.issuer === parent.x509.subject && child.x509.verify(parent.x509.publicKey);
  } catch {
    return false;
  }
}

function checkValidity(cert: LoadedCertificate, file: string, now: Date): void {
  const notAfter = new Date(cert.x509.validTo);
  const notBefore = new Date(cert.x509.validFrom);
  if (now >= notAfter) throw new BundleError(file, `certificate "${describe(cert)}" expired at ${notAfter.toISOString()}`);
  if (now < notBefore) throw new BundleError(file, `certificate "${describe(cert)}" is not valid until ${notBefore.toISOString()}`);
}

/** signing certificate -> candidates -> `root`, each link a verified signature; undefined when there is none. */
function pathTo(root: LoadedCertificate, signingCert: LoadedCertificate, candidates: LoadedCertificate[]): LoadedCertificate[] | undefined {
  const path = [signingCert];
  let current = signingCert;
  for (let depth = 0; depth <= 8; depth++) {
    if (root.der.equals(current.der)) return path;
    if (issuedBy(current, root)) return [...path, root];
    const next = candidates.find((c) => !path.includes(c) && !c.der.equals(current.der) && issuedBy(current, c));
    if (!next) return undefined;
    path.push(next);
    current = next;
  }
  return undefined;
}

const unique = (certs: LoadedCertificate[]) => certs.filter((c, i) => certs.findIndex((d) => d.der.equals(c.der)) === i);

/**
 * Parses and checks a cacerts bundle exactly as `serve` needs it: the key matches the signing
 * certificate, which chains through the chain files to one or more roots of the root bundle; each
 * such path is unexpired, revoked by no CRL of `files.crl` (crl.ts: each CRL verified first) and validates, for a probe SVID of `names.trustDomain` and a probe serving
 * certificate for `names.servingDns`, as RFC 5280 clients validate it (path-validation.ts).
 * Throws BundleError naming the file and the problem (for path rules: the certificate, its SKI,
 * the rule and the fix). Synchronous: pkijs runs in a worker thread; an asynchronous caller drives
 * signingBundleSteps with runPathJobsAsync instead and starts no thread.
 */
export function verifySigningBundle(files: BundleFiles, now: Date, names: ProbeNames, external?: ExternalSigningKey): SigningBundle {
  return runPathJobsSync(signingBundleSteps(files, now, names, external));
}

/** verifySigningBundle as PathJobSteps (path-validation.ts): the one place its checks are written. */
export function* signingBundleSteps(files: BundleFiles, now: Date, names: ProbeNames, external?: ExternalSigningKey): PathJobSteps<SigningBundle> {
  const signingFileCerts = loadCertificates(files.signingCert);
  const signingCert = signingFileCerts[0]!;
  // With an external key (issue #17) files.signingKey only names it; its public half stands in for the file key.
  const privateKey = external ? createPublicKey({ key: external.publicKeyDer, format: 'der', type: 'spki' }) : loadPrivateKey(files.signingKey);
  const roots = unique(loadCertificates(files.roots));
  const chainCerts = files.chain.flatMap((f) => loadCertificates(f, { allowEmpty: true }));
  const warnings: string[] = [];

  if (!spkiDer(privateKey).equals(spkiDer(signingCert.x509.publicKey))) {
    throw new BundleError(files.signingKey.name, `private key does not match the certificate in ${files.signingCert.name}`);
  }
  const algorithm = signatureAlgorithmForKey(privateKey);
  if (!algorithm) {
    throw new BundleError(files.signingKey.name, `key type ${keyLabel(describeKey(privateKey))} cannot sign; use EC P-256, P-384 or P-521, or RSA`);
  }
  checkValidity(signingCert, files.signingCert.name, now);

  // Every root of the root bundle the signing certificate chains to, each path with real signature checks.
  const candidates = unique([...signingFileCerts.slice(1), ...chainCerts]);
  const paths = roots.map((r) => pathTo(r, signingCert, candidates)).filter((p): p is LoadedCertificate[] => p !== undefined);
  if (paths.length === 0) {
    const chainNames = [files.signingCert.name, ...files.chain.map((f) => f.name)].join(', ');
    throw new BundleError(files.roots.name, `the signing certificate "${describe(signingCert)}" does not chain to any root in this file (through ${chainNames})`);
  }
  const chainFile = files.chain[0]?.name ?? files.signingCert.name;
  const fileOf = (c: LoadedCertificate, i: number, path: LoadedCertificate[]) => (i === 0 ? files.signingCert.name : i === path.length - 1 ? files.roots.name : chainFile);
  const located = paths.map((path) => path.map((c, i) => ({ ...c, file: fileOf(c, i, path) })));
  for (const path of located) for (const c of path) checkValidity(c, c.file, now);
  // The probe leaves below are signed by this signer, so with a token key (issue #17) the token signs them too.
  const signer: Signer = external
    ? { subjectDer: signingCert.facts.subjectDer, external: external.key, algorithm }
    : { subjectDer: signingCert.facts.subjectDer, privateKey, algorithm };
  const validity = yield* issuancePathSteps(located, signer, names, now);
  const path = paths[0]!;
  // issue #16: checked last, so that a refusal here means every certificate check above passed.
  const crlIssuers = unique([...signingFileCerts, ...chainCerts, ...roots]);
  let crls: LoadedCrl[] = [];
  try {
    crls = files.crl ? loadCrls(files.crl, crlIssuers, now) : [];
  } catch (err) {
    // crl-safety2: the next folder's ca-crl.pem applied too early (a CRL revoking this signer beside the new
    // intermediate's CRL) is refused for the revocation, not with --drop-issuer of the new intermediate's CRL.
    if (err instanceof BundleError && files.crl) checkPathsNotRevoked(files.crl.name, paths, loadableCrls(files.crl, crlIssuers, now));
    throw err;
  }
  if (files.crl) checkPathsNotRevoked(files.crl.name, paths, crls);
  // Every CA a client walks through (each signing path: signer, intermediates, root) must have its CRL,
  // and every certificate of cert-chain.pem (istiod's rule, "missing CRL signed by certificates").
  if (files.crl) checkEveryLevelHasCrl(files.crl.name, unique([...paths.flat(), ...chainCerts]), crls);

  for (const c of unique(paths.flat())) {
    if (c.facts.hasNameConstraints) {
      warnings.push(`certificate "${describe(c)}" carries name constraints; ztunnel (webpki) rejects SPIFFE leaves under URI or DNS-only constraints`);
    }
  }

  // Response chain, leaf to root, each certificate once (issue #11 case 5): the signing certificate
  // and the path above it in order, the root only where the chain files carry it (as istiod returns
  // it), then any other chain-file certificates in file order. The signing certificate always comes
  // first, even when the chain file lacks it: without it no client can build a path. A root that
  // signs directly with an empty chain file answers [leaf, root bundle], as istiod does.
  const fileCerts = unique(chainCerts);
  const inFiles = (c: LoadedCertificate) => fileCerts.some((f) => f.der.equals(c.der));
  const signerIsRoot = path.length === 1;
  const ordered = signerIsRoot && !inFiles(signingCert) ? [] : [signingCert, ...path.slice(1, -1), ...path.slice(1).slice(-1).filter(inFiles)];
  const rest = fileCerts.filter((c) => !ordered.some((o) => o.der.equals(c.der)));
  const responseCerts = [...ordered, ...rest];
  const chainPems = responseCerts.map((c) => encodePem('CERTIFICATE', c.der));
  if (files.layout === 'istio' && ordered.length > 0 && !fileCerts.slice(0, ordered.length).every((c, i) => c.der.equals(ordered[i]!.der))) {
    warnings.push(`${chainFile} is not the signing certificate followed by its issuers in order; svid-ca answers leaf to root, each certificate once`);
  }

  return {
    layout: files.layout,
    signer,
    signingCert,
    chainPems,
    chainCerts,
    rootsPem: files.roots.text.replace(/^\n+/, '').replace(/\n*$/, '\n'),
    crlPem: crls.length > 0 ? files.crl!.text : '',
    crls,
    roots,
    path,
    notAfter: new Date(signingCert.x509.validTo),
    validity,
    warnings,
  };
}
