import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import type { ExternalKey, Signer } from './certificate.js';
import { BundleError } from './errors.js';
import { KeyUsageBit } from './extensions.js';
import { inspectCertificate, type CertificateFacts } from './inspect.js';
import { signatureAlgorithmForKey, spkiDer, describeKey, keyLabel } from './keys.js';
import { decodePem, encodePem } from './pem.js';
import { issuedBy as x509IssuedBy, subjectText } from './verify.js';

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
  roots: LoadedCertificate[];
  /** signing certificate -> ... -> root, as verified. */
  path: LoadedCertificate[];
  notAfter: Date;
  warnings: string[];
}

function loadCertificates(file: NamedText): LoadedCertificate[] {
  const blocks = decodePem(file.text).filter((b) => b.type === 'CERTIFICATE');
  if (blocks.length === 0) throw new BundleError(file.name, 'no PEM CERTIFICATE block found');
  return blocks.map((b, i) => {
    try {
      return { x509: new X509Certificate(b.der), der: b.der, facts: inspectCertificate(b.der) };
    } catch (err) {
      throw new BundleError(file.name, `certificate #${i + 1} cannot be parsed (${(err as Error).message})`);
    }
  });
}

function loadPrivateKey(file: NamedText): KeyObject {
  const block = decodePem(file.text)[0];
  if (!block) throw new BundleError(file.name, 'no PEM private key block found');
  if (block.type === 'ENCRYPTED PRIVATE KEY') throw new BundleError(file.name, 'the private key is encrypted; svid-ca needs an unencrypted PKCS#1, SEC1 or PKCS#8 key');
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

/** Issued-by check with a real signature verification (node:crypto), not only a name match. */
const issuedBy = (child: LoadedCertificate, parent: LoadedCertificate): boolean => x509IssuedBy(child.x509, parent.x509);

function checkValidity(cert: LoadedCertificate, file: string, now: Date): void {
  const notAfter = new Date(cert.x509.validTo);
  const notBefore = new Date(cert.x509.validFrom);
  if (now >= notAfter) throw new BundleError(file, `certificate "${describe(cert)}" expired at ${notAfter.toISOString()}`);
  if (now < notBefore) throw new BundleError(file, `certificate "${describe(cert)}" is not valid until ${notBefore.toISOString()}`);
}

/**
 * Parses and checks a cacerts bundle exactly as `serve` needs it: the key matches the signing
 * certificate, which is an unexpired CA with keyCertSign, and which chains through the chain
 * files to a root of the root bundle. Throws BundleError naming the file and the problem.
 */
export function verifySigningBundle(files: BundleFiles, now: Date = new Date(), external?: ExternalSigningKey): SigningBundle {
  const signingFileCerts = loadCertificates(files.signingCert);
  const signingCert = signingFileCerts[0]!;
  // With an external key (issue #17) files.signingKey only names it; its public half stands in for the file key.
  const privateKey = external ? createPublicKey({ key: external.publicKeyDer, format: 'der', type: 'spki' }) : loadPrivateKey(files.signingKey);
  const roots = loadCertificates(files.roots);
  const chainCerts = files.chain.flatMap((f) => loadCertificates(f));
  const warnings: string[] = [];

  if (!spkiDer(privateKey).equals(spkiDer(signingCert.x509.publicKey))) {
    throw new BundleError(files.signingKey.name, `private key does not match the certificate in ${files.signingCert.name}`);
  }
  const algorithm = signatureAlgorithmForKey(privateKey);
  if (!algorithm) {
    throw new BundleError(files.signingKey.name, `key type ${keyLabel(describeKey(privateKey))} cannot sign; use EC P-256/P-384 or RSA`);
  }
  if (!signingCert.facts.isCa) {
    throw new BundleError(files.signingCert.name, 'the signing certificate is not a CA (BasicConstraints CA:TRUE is missing)');
  }
  const ku = signingCert.facts.keyUsageBits;
  if (ku && !ku.includes(KeyUsageBit.keyCertSign)) {
    throw new BundleError(files.signingCert.name, 'the signing certificate lacks the keyCertSign key usage');
  }
  checkValidity(signingCert, files.signingCert.name, now);

  // Build the path signing -> intermediates -> root with real signature checks.
  const path: LoadedCertificate[] = [signingCert];
  const candidates = [...signingFileCerts.slice(1), ...chainCerts];
  let current = signingCert;
  for (let depth = 0; ; depth++) {
    const root = roots.find((r) => r.der.equals(current.der) || issuedBy(current, r));
    if (root) {
      if (!root.der.equals(current.der)) path.push(root);
      break;
    }
    const next = candidates.find((c) => !path.includes(c) && !c.der.equals(current.der) && issuedBy(current, c));
    if (!next || depth > 8) {
      const chainNames = [files.signingCert.name, ...files.chain.map((f) => f.name)].join(', ');
      throw new BundleError(
        files.roots.name,
        `the signing certificate "${describe(signingCert)}" does not chain to any root in this file (through ${chainNames})`,
      );
    }
    if (!next.facts.isCa) throw new BundleError(files.chain[0]?.name ?? files.signingCert.name, `chain certificate "${describe(next)}" is not a CA`);
    checkValidity(next, files.chain[0]?.name ?? files.signingCert.name, now);
    path.push(next);
    current = next;
  }
  const pathRoot = path[path.length - 1]!;
  if (pathRoot !== signingCert) checkValidity(pathRoot, files.roots.name, now);

  for (const c of path) {
    if (c.facts.hasNameConstraints) {
      warnings.push(`certificate "${describe(c)}" carries name constraints; ztunnel (webpki) rejects SPIFFE leaves under URI or DNS-only constraints`);
    }
  }

  // Response chain in istiod's shape: each certificate of the chain files, in file order. If the
  // chain does not start with the signing certificate, put it first: without it no client can
  // build a path, and istiod would silently return an unusable chain.
  const chainPems = chainCerts.map((c) => encodePem('CERTIFICATE', c.der));
  const signerIsRoot = path.length === 1;
  if (chainCerts.length === 0 && signerIsRoot) {
    // A root signing directly (self-signed mode): istiod answers [leaf, root bundle].
  } else if (!chainCerts[0]?.der.equals(signingCert.der)) {
    chainPems.unshift(encodePem('CERTIFICATE', signingCert.der));
    if (files.layout === 'istio') warnings.push(`${files.chain[0]?.name ?? 'cert-chain.pem'} does not start with the signing certificate; svid-ca puts it first in responses`);
  }

  return {
    layout: files.layout,
    signer: external ? { subjectDer: signingCert.facts.subjectDer, external: external.key, algorithm } : { subjectDer: signingCert.facts.subjectDer, privateKey, algorithm },
    signingCert,
    chainPems,
    chainCerts,
    rootsPem: files.roots.text.replace(/^\n+/, '').replace(/\n*$/, '\n'),
    roots,
    path,
    notAfter: new Date(signingCert.x509.validTo),
    warnings,
  };
}
