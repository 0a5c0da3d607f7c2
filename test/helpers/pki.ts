/**
 * Test PKI: real CA hierarchies written as real cacerts folders, in either layout, with the
 * knobs needed to break them. Built with svid-ca's own pki (itself checked against OpenSSL).
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tool, toolMissing } from './tools.js';
import {
  caCertificate,
  encodeName,
  encodePem,
  generateKeyPair,
  inspectCertificate,
  keyIdentifier,
  privateKeyPem,
  randomSerial,
  signatureAlgorithmForKey,
  signCertificate,
  spkiDer,
  type KeySpec,
} from '../../src/pki/index.js';

export interface TestCa {
  certPem: string;
  keyPem: string;
  cert: X509Certificate;
}

const DAY = 86_400_000;

export function makeRoot(opts: { key?: KeySpec; cn?: string; notBefore?: Date; notAfter?: Date } = {}): TestCa {
  const { privateKey } = generateKeyPair(opts.key ?? 'ec-p256');
  const subjectDer = encodeName({ organization: 'svid-ca test', commonName: opts.cn ?? 'test root' });
  const now = new Date();
  const der = signCertificate(
    caCertificate({
      serialNumber: randomSerial(),
      subjectDer,
      publicKeyDer: spkiDer(privateKey),
      // An hour back, so that a leaf's 2-minute backdate is not clamped to its signer's NotBefore.
      notBefore: opts.notBefore ?? new Date(now.getTime() - 3_600_000),
      notAfter: opts.notAfter ?? new Date(now.getTime() + 3650 * DAY),
    }),
    { subjectDer, privateKey, algorithm: signatureAlgorithmForKey(privateKey)! },
  );
  const certPem = encodePem('CERTIFICATE', der);
  return { certPem, keyPem: privateKeyPem(privateKey), cert: new X509Certificate(der) };
}

export function makeIntermediate(
  issuer: TestCa,
  opts: { key?: KeySpec; cn?: string; notBefore?: Date; notAfter?: Date; ca?: boolean } = {},
): TestCa {
  const { privateKey } = generateKeyPair(opts.key ?? 'ec-p256');
  const issuerKey = createPrivateKey(issuer.keyPem);
  const facts = inspectCertificate(issuer.cert.raw);
  const now = new Date();
  const template = caCertificate({
    serialNumber: randomSerial(),
    subjectDer: encodeName({ organization: 'svid-ca test', commonName: opts.cn ?? 'test intermediate' }),
    publicKeyDer: spkiDer(privateKey),
    notBefore: opts.notBefore ?? new Date(now.getTime() - 3_600_000),
    notAfter: opts.notAfter ?? new Date(now.getTime() + 365 * DAY),
    issuerKeyId: facts.subjectKeyId ?? keyIdentifier(spkiDer(issuer.cert.publicKey)),
  });
  if (opts.ca === false) {
    // A certificate that is not a CA: BasicConstraints CA:false and no keyCertSign.
    template.extensions = template.extensions.filter((e) => e.oid !== '2.5.29.19' && e.oid !== '2.5.29.15');
  }
  const der = signCertificate(template, { subjectDer: facts.subjectDer, privateKey: issuerKey, algorithm: signatureAlgorithmForKey(issuerKey)! });
  return { certPem: encodePem('CERTIFICATE', der), keyPem: privateKeyPem(privateKey), cert: new X509Certificate(der) };
}

export function tempDir(prefix = 'svid-ca-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export type Layout = 'istio' | 'kubernetes-tls';

export interface CacertsSpec {
  signer: TestCa;
  /** Certificates between the signer and the root (exclusive), signer's issuer first. */
  intermediates?: TestCa[];
  roots: TestCa[];
  layout?: Layout;
  /** Override the key file content (mismatch tests). */
  keyPem?: string;
}

/** Writes a cacerts folder. Istio layout: cert-chain.pem = signer + intermediates + root, as Istio's Makefile. */
export function writeCacerts(dir: string, spec: CacertsSpec): string {
  mkdirSync(dir, { recursive: true });
  const chain = [spec.signer, ...(spec.intermediates ?? [])].map((c) => c.certPem).join('');
  const rootsPem = spec.roots.map((r) => r.certPem).join('');
  if ((spec.layout ?? 'istio') === 'istio') {
    writeFileSync(join(dir, 'ca-cert.pem'), spec.signer.certPem);
    writeFileSync(join(dir, 'ca-key.pem'), spec.keyPem ?? spec.signer.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'cert-chain.pem'), chain + spec.roots[0]!.certPem);
    writeFileSync(join(dir, 'root-cert.pem'), rootsPem);
  } else {
    writeFileSync(join(dir, 'tls.crt'), chain);
    writeFileSync(join(dir, 'tls.key'), spec.keyPem ?? spec.signer.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'ca.crt'), rootsPem);
  }
  return dir;
}

/** A fresh root + intermediate written as a cacerts folder. */
export function makeCacerts(opts: { layout?: Layout; rootKey?: KeySpec; signerKey?: KeySpec; dir?: string; signerNotAfter?: Date } = {}) {
  const root = makeRoot({ key: opts.rootKey ?? 'ec-p256' });
  const signer = makeIntermediate(root, { key: opts.signerKey ?? 'ec-p256', notAfter: opts.signerNotAfter });
  const dir = writeCacerts(opts.dir ?? tempDir(), { signer, roots: [root], layout: opts.layout });
  return { dir, root, signer };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** `openssl verify -CAfile root -untrusted chain leaf`; returns OpenSSL's output, throws with it on failure. */
export function opensslVerify(rootPem: string, chainPems: string[], leafPem: string, extraArgs: string[] = []): string {
  const dir = tempDir('svid-ca-verify-');
  try {
    writeFileSync(join(dir, 'root.pem'), rootPem);
    writeFileSync(join(dir, 'chain.pem'), chainPems.join('') || '\n');
    writeFileSync(join(dir, 'leaf.pem'), leafPem);
    const args = ['verify', ...extraArgs, '-CAfile', join(dir, 'root.pem')];
    if (chainPems.length > 0) args.push('-untrusted', join(dir, 'chain.pem'));
    args.push(join(dir, 'leaf.pem'));
    return execFileSync(tool('openssl'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: string };
    if (e.code === 'ENOENT' || e.code === 'EACCES') throw toolMissing('openssl', err);
    throw new Error(`openssl verify failed: ${e.stdout ?? ''}${e.stderr ?? ''}`);
  } finally {
    removeDir(dir);
  }
}

/** `openssl x509 -noout -text` of a PEM certificate. */
export function opensslText(pem: string): string {
  return execFileSync(tool('openssl'), ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
}
