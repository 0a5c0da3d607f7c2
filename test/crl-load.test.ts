/**
 * Issue #16, items 1 and 8: `ca-crl.pem` in the Istio layout, checked with the bundle. Every CRL here
 * is made by `openssl ca -gencrl`, and every verdict of svid-ca is set beside OpenSSL's
 * (`openssl crl -verify`, `openssl verify -x509_strict -crl_check_all` on the real chain a client
 * gets): what svid-ca refuses, OpenSSL refuses too.
 */
import { X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authority, loadCacerts } from '../src/ca/index.js';
import { BundleError } from '../src/pki/index.js';
import { opensslCa, opensslCrl, opensslCrlVerdict, probeLeaves, STDEXT } from './helpers/openssl-ca.js';
import { removeDir, tempDir, writeCacerts, type TestCa } from './helpers/pki.js';

const DAY = 86_400_000;
let work: string;
let root: TestCa;
let signer: TestCa;
let other: TestCa;

/** `openssl crl -verify` of `crlPem` against `caPem`: OpenSSL's words ("verify OK" or "verify failure"; it exits 0 either way). */
function opensslCrlVerify(crlPem: string, caPem: string): string {
  const dir = tempDir('svid-ca-crl-verify-');
  try {
    writeFileSync(join(dir, 'crl.pem'), crlPem);
    writeFileSync(join(dir, 'ca.pem'), caPem);
    const r = spawnSync('openssl', ['crl', '-verify', '-in', join(dir, 'crl.pem'), '-CAfile', join(dir, 'ca.pem'), '-noout'], { encoding: 'utf8' });
    return `${r.stdout}${r.stderr}`;
  } finally {
    removeDir(dir);
  }
}

/** A cacerts folder (Istio layout) for `signerCa` under `roots`, with `crlPem` as ca-crl.pem. */
function folder(crlPem: string | undefined, signerCa = signer, roots = [root], intermediates: TestCa[] = []): string {
  const dir = writeCacerts(tempDir('svid-ca-crl-'), { signer: signerCa, roots, intermediates });
  if (crlPem !== undefined) writeFileSync(join(dir, 'ca-crl.pem'), crlPem);
  return dir;
}

function refusal(dir: string): BundleError {
  try {
    loadCacerts(dir);
  } catch (err) {
    if (err instanceof BundleError) return err;
    throw err;
  }
  throw new Error(`${dir} was accepted`);
}

beforeAll(() => {
  work = tempDir('svid-ca-crl-work-');
  root = opensslCa(work, 'crl root', STDEXT);
  signer = opensslCa(work, 'crl signer', STDEXT, root);
  other = opensslCa(work, 'retired intermediate', STDEXT, root);
});

afterAll(() => removeDir(work));

describe('ca-crl.pem (Istio layout)', () => {
  it('a valid CRL of the root is accepted, published verbatim and parsed (issuer, number, revoked serial)', () => {
    const crl = opensslCrl(work, root, [other.cert], { number: 7 });
    expect(opensslCrlVerify(crl, root.certPem)).toMatch(/^verify OK/m);
    const signerCrl = opensslCrl(work, signer, []);
    const dir = folder(crl + signerCrl);
    const bundle = loadCacerts(dir);
    expect(bundle.crlPem).toBe(crl + signerCrl);
    expect(bundle.crls).toHaveLength(2);
    expect(bundle.crls[0]).toMatchObject({ issuer: 'O=svid-ca test, CN=crl root', number: '7' });
    expect(bundle.crls[0]!.revoked.map((r) => r.serialHex)).toEqual([other.cert.serialNumber.toLowerCase().replace(/^(00)+(?=..)/, '')]);
    expect(bundle.crls[0]!.revoked[0]!.reason).toBe('keyCompromise');
    // OpenSSL agrees: an SVID under the signer verifies with CRL checking on every level.
    expect(opensslCrlVerdict(probeLeaves(signer).workload, [signer.certPem], root.certPem, crl + signerCrl)).toBeUndefined();
    removeDir(dir);
  });

  it('no ca-crl.pem, and the Kubernetes TLS layout (which has no CRL file): crlPem is empty', () => {
    const dir = folder(undefined);
    expect(loadCacerts(dir)).toMatchObject({ crlPem: '', crls: [] });
    const tls = writeCacerts(tempDir('svid-ca-crl-tls-'), { signer, roots: [root], layout: 'kubernetes-tls' });
    // A ca-crl.pem beside tls.crt is not read: istiod reads the CRL only in the Istio layout.
    writeFileSync(join(tls, 'ca-crl.pem'), 'not a CRL');
    expect(loadCacerts(tls)).toMatchObject({ layout: 'kubernetes-tls', crlPem: '', crls: [] });
    removeDir(dir);
    removeDir(tls);
  });

  it('a CRL with a bad signature is refused, naming ca-crl.pem, the CRL and the reason', () => {
    // Signed by a root with the same subject but another key: the name matches, the signature does not.
    const impostor = opensslCa(work, 'crl root', STDEXT);
    const crl = opensslCrl(work, impostor, [], { number: 3 });
    expect(opensslCrlVerify(crl, root.certPem)).toMatch(/^verify failure/m);
    const dir = folder(crl + opensslCrl(work, signer, []));
    const err = refusal(dir);
    expect(err.file).toBe(join(dir, 'ca-crl.pem'));
    expect(err.problem).toContain('CRL #1 (issuer "O=svid-ca test, CN=crl root", number 3) has a signature that does not verify');
    expect(err.problem).toContain('only the CRL is refused');
    removeDir(dir);
  });

  it('a CRL whose issuer lacks cRLSign is refused; OpenSSL refuses it too', () => {
    const noCrlSign = opensslCa(work, 'root without crlsign', ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,digitalSignature', 'subjectKeyIdentifier=hash']);
    const sub = opensslCa(work, 'signer under it', STDEXT, noCrlSign);
    const crl = opensslCrl(work, noCrlSign, []);
    const subCrl = opensslCrl(work, sub, []);
    expect(opensslCrlVerdict(probeLeaves(sub).workload, [sub.certPem], noCrlSign.certPem, crl + subCrl)).toMatch(/CRL signing/i);
    // Without the CRL the same bundle is accepted: the refusal is the CRL's alone.
    const plain = folder(undefined, sub, [noCrlSign]);
    expect(() => loadCacerts(plain)).not.toThrow();
    const dir = folder(crl + subCrl, sub, [noCrlSign]);
    expect(refusal(dir).problem).toMatch(/keyUsage lacks cRLSign.*only the CRL is refused/);
    removeDir(dir);
    removeDir(plain);
  });

  it('a CRL whose thisUpdate is in the future is refused; OpenSSL says it is not yet valid', () => {
    const crl = opensslCrl(work, root, [], { lastUpdate: new Date(Date.now() + 2 * DAY), nextUpdate: new Date(Date.now() + 30 * DAY) });
    const signerCrl = opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(probeLeaves(signer).workload, [signer.certPem], root.certPem, crl + signerCrl)).toMatch(/CRL is not yet valid/);
    const dir = folder(crl + signerCrl);
    expect(refusal(dir).problem).toMatch(/has thisUpdate .* in the future/);
    removeDir(dir);
  });

  it('a CRL revoking the signing certificate is refused: svid-ca will not sign under it, and OpenSSL rejects what it would sign', () => {
    const crl = opensslCrl(work, root, [signer.cert], { number: 2 });
    const signerCrl = opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(probeLeaves(signer).workload, [signer.certPem], root.certPem, crl + signerCrl)).toMatch(/certificate revoked/);
    const dir = folder(crl + signerCrl);
    const err = refusal(dir);
    expect(err.problem).toContain(`serial ${signer.cert.serialNumber.toLowerCase().replace(/^(00)+(?=..)/, '')} is revoked by CRL (issuer "O=svid-ca test, CN=crl root", number 2)`);
    expect(err.problem).toContain('which is the signing certificate: svid-ca will not sign under a revoked certificate');
    removeDir(dir);
  });

  it('a CRL revoking an upper intermediate of the path is refused; OpenSSL agrees', () => {
    const upper = opensslCa(work, 'upper', STDEXT, root);
    const lower = opensslCa(work, 'lower', STDEXT, upper);
    const crl = opensslCrl(work, root, [upper.cert]);
    const crls = crl + opensslCrl(work, upper, []) + opensslCrl(work, lower, []);
    expect(opensslCrlVerdict(probeLeaves(lower).workload, [lower.certPem, upper.certPem], root.certPem, crls)).toMatch(/certificate revoked/);
    const dir = folder(crls, lower, [root], [upper]);
    expect(refusal(dir).problem).toContain('which is a certificate on the signing path');
    removeDir(dir);
  });

  it('a CRL past its nextUpdate is used (clients decide what stale means): accepted, and OpenSSL calls it expired', () => {
    const crl = opensslCrl(work, root, [other.cert], { lastUpdate: new Date(Date.now() - 40 * DAY), nextUpdate: new Date(Date.now() - DAY) });
    const signerCrl = opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(probeLeaves(signer).workload, [signer.certPem], root.certPem, crl + signerCrl)).toMatch(/CRL has expired/);
    const dir = folder(crl + signerCrl);
    const bundle = loadCacerts(dir);
    expect(bundle.crls[0]!.nextUpdate!.getTime()).toBeLessThan(Date.now());
    expect(bundle.crlPem).toBe(crl + signerCrl);
    removeDir(dir);
  });

  it('two CRLs of one file: both kept; a certificate of a chain revoked by either is named by Authority.revokedIn', () => {
    const rootCrl = opensslCrl(work, root, [other.cert], { number: 4 });
    const leaf = probeLeaves(signer).workload;
    const leafCert = new X509Certificate(leaf);
    const signerCrl = opensslCrl(work, signer, [leafCert], { number: 9, reason: 'superseded' });
    expect(opensslCrlVerdict(leaf, [signer.certPem], root.certPem, rootCrl + signerCrl)).toMatch(/certificate revoked/);
    const dir = folder(rootCrl + signerCrl);
    const authority = new Authority(loadCacerts(dir), { defaultTtlMs: 3_600_000, maxTtlMs: 3_600_000 });
    expect(authority.bundle.crls.map((c) => c.number)).toEqual(['4', '9']);
    expect(authority.revokedIn([leafCert.raw])).toMatch(/is revoked by CRL \(issuer "O=svid-ca test, CN=crl signer", number 9\) \(reason superseded/);
    expect(authority.revokedIn([Buffer.from(new X509Certificate(probeLeaves(signer).workload).raw)])).toBeUndefined();
    // The retired intermediate presented in a chain is found by the root's CRL.
    expect(authority.revokedIn([other.cert.raw])).toContain('number 4');
    removeDir(dir);
  });

  it('a file that is not a CRL, and a CRL by a CA outside the bundle, are refused as CRL problems', () => {
    const garbage = folder('-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n');
    expect(refusal(garbage).problem).toMatch(/^CRL #1 cannot be parsed/);
    const stranger = opensslCa(work, 'stranger', STDEXT);
    const dir = folder(opensslCrl(work, stranger, []));
    expect(refusal(dir).problem).toMatch(/is issued by no certificate of cert-chain.pem or root-cert.pem.*only the CRL is refused/);
    removeDir(garbage);
    removeDir(dir);
  });

  it('two CRLs of one issuer are refused, naming both by position and number', () => {
    const older = opensslCrl(work, root, [], { number: 4 });
    const newer = opensslCrl(work, root, [other.cert], { number: 5 });
    const dir = folder(older + opensslCrl(work, signer, []) + newer);
    expect(refusal(dir).problem).toBe(
      'CRL #1 and CRL #3 (issuer "O=svid-ca test, CN=crl root", numbers 4 and 5) have the same issuer; keep only the newest CRL of each issuer; the certificates and key of this bundle pass every other check; only the CRL is refused: fix ca-crl.pem or remove it',
    );
    removeDir(dir);
  });

  it('a CRL set without the CRL of the signing intermediate is refused; OpenSSL says error 3 "unable to get certificate CRL"', () => {
    const rootCrl = opensslCrl(work, root, [other.cert]);
    const leaf = probeLeaves(signer).workload;
    // The bug an operator trial found: a root-only ca-crl.pem makes every client reject every leaf.
    expect(opensslCrlVerdict(leaf, [signer.certPem], root.certPem, rootCrl)).toMatch(/error 3 at 0 depth lookup: unable to get certificate CRL/);
    const dir = folder(rootCrl);
    const err = refusal(dir);
    // The SKI as OpenSSL prints it: the message names the certificate as operators find it.
    const skiText = spawnSync('openssl', ['x509', '-noout', '-ext', 'subjectKeyIdentifier'], { input: signer.certPem, encoding: 'utf8' }).stdout;
    const ski = skiText.split('\n')[1]!.trim().replace(/:/g, '').toLowerCase();
    expect(ski).toMatch(/^[0-9a-f]{40}$/);
    expect(err.file).toBe(join(dir, 'ca-crl.pem'));
    expect(err.problem).toMatch(new RegExp(`^certificate "O=svid-ca test, CN=crl signer" \\(SKI ${ski}\\) has no CRL in this file: once a CRL is given, clients`));
    expect(err.problem).toContain('istiod refuses the same folder ("missing CRL signed by certificates")');
    expect(err.problem).toContain("svid-ca cacerts crl --issuer <that CA's folder> --out <this file>");
    expect(err.problem).toContain('only the CRL is refused');
    // With the signer's CRL added (revoking nothing) both accept.
    const complete = rootCrl + opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(leaf, [signer.certPem], root.certPem, complete)).toBeUndefined();
    writeFileSync(join(dir, 'ca-crl.pem'), complete);
    expect(loadCacerts(dir).crls).toHaveLength(2);
    removeDir(dir);
  });

  it("a CRL set without the root's CRL, or without an upper intermediate's, is refused; OpenSSL refuses both", () => {
    const signerOnly = opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(probeLeaves(signer).workload, [signer.certPem], root.certPem, signerOnly)).toMatch(/unable to get certificate CRL/);
    const dir = folder(signerOnly);
    expect(refusal(dir).problem).toMatch(/^certificate "O=svid-ca test, CN=crl root" \(SKI [0-9a-f]+\) has no CRL in this file/);
    const upper = opensslCa(work, 'upper two', STDEXT, root);
    const lower = opensslCa(work, 'lower two', STDEXT, upper);
    const noUpper = opensslCrl(work, root, []) + opensslCrl(work, lower, []);
    const leaf = probeLeaves(lower).workload;
    expect(opensslCrlVerdict(leaf, [lower.certPem, upper.certPem], root.certPem, noUpper)).toMatch(/error 3 at 1 depth lookup: unable to get certificate CRL/);
    const three = folder(noUpper, lower, [root], [upper]);
    expect(refusal(three).problem).toMatch(/^certificate "O=svid-ca test, CN=upper two" \(SKI [0-9a-f]+\) has no CRL in this file/);
    // The upper intermediate carried in ca-cert.pem (cert-chain.pem empty) is on the path all the same.
    const inSignerFile = folder(noUpper, lower, [root]);
    writeFileSync(join(inSignerFile, 'ca-cert.pem'), lower.certPem + upper.certPem);
    writeFileSync(join(inSignerFile, 'cert-chain.pem'), '');
    expect(refusal(inSignerFile).problem).toMatch(/^certificate "O=svid-ca test, CN=upper two" \(SKI [0-9a-f]+\) has no CRL in this file/);
    removeDir(inSignerFile);
    const all = noUpper + opensslCrl(work, upper, []);
    expect(opensslCrlVerdict(leaf, [lower.certPem, upper.certPem], root.certPem, all)).toBeUndefined();
    writeFileSync(join(three, 'ca-crl.pem'), all);
    expect(loadCacerts(three).crls).toHaveLength(3);
    removeDir(dir);
    removeDir(three);
  });

  it('the root and the signing certificate need their CRL even when cert-chain.pem leaves them out (istiod checks cert-chain.pem only; clients check every level)', () => {
    const leaf = probeLeaves(signer).workload;
    // cert-chain.pem without the root: only the signer's CRL is given. istiod would accept it; clients reject every leaf.
    const signerOnly = opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(leaf, [signer.certPem], root.certPem, signerOnly)).toMatch(/error 3 at 1 depth lookup: unable to get certificate CRL/);
    const noRoot = folder(signerOnly);
    writeFileSync(join(noRoot, 'cert-chain.pem'), signer.certPem);
    expect(refusal(noRoot).problem).toMatch(/^certificate "O=svid-ca test, CN=crl root" \(SKI [0-9a-f]+\) has no CRL in this file/);
    // An empty cert-chain.pem: the signing certificate still needs its CRL.
    const rootOnly = opensslCrl(work, root, []);
    expect(opensslCrlVerdict(leaf, [signer.certPem], root.certPem, rootOnly)).toMatch(/error 3 at 0 depth lookup: unable to get certificate CRL/);
    const emptyChain = folder(rootOnly);
    writeFileSync(join(emptyChain, 'cert-chain.pem'), '');
    expect(refusal(emptyChain).problem).toMatch(/^certificate "O=svid-ca test, CN=crl signer" \(SKI [0-9a-f]+\) has no CRL in this file/);
    // Both complete: accepted by both.
    expect(opensslCrlVerdict(leaf, [signer.certPem], root.certPem, rootOnly + signerOnly)).toBeUndefined();
    writeFileSync(join(noRoot, 'ca-crl.pem'), rootOnly + signerOnly);
    writeFileSync(join(emptyChain, 'ca-crl.pem'), rootOnly + signerOnly);
    expect(loadCacerts(noRoot).crls).toHaveLength(2);
    expect(loadCacerts(emptyChain).crls).toHaveLength(2);
    removeDir(noRoot);
    removeDir(emptyChain);
  });

  it("every certificate of cert-chain.pem needs its CRL, as istiod requires, even one off the signing path", () => {
    // cert-chain.pem with an extra intermediate the signer does not chain through: OpenSSL never looks at it,
    // istiod refuses the folder ("missing CRL signed by certificates"), and so does svid-ca.
    const crls = opensslCrl(work, root, []) + opensslCrl(work, signer, []);
    expect(opensslCrlVerdict(probeLeaves(signer).workload, [signer.certPem], root.certPem, crls)).toBeUndefined();
    const dir = folder(crls);
    writeFileSync(join(dir, 'cert-chain.pem'), signer.certPem + other.certPem + root.certPem);
    expect(refusal(dir).problem).toMatch(/^certificate "O=svid-ca test, CN=retired intermediate" \(SKI [0-9a-f]+\) has no CRL in this file/);
    writeFileSync(join(dir, 'ca-crl.pem'), crls + opensslCrl(work, other, []));
    expect(loadCacerts(dir).crls).toHaveLength(3);
    removeDir(dir);
  });

  it('an empty ca-crl.pem (no CRL at all) asks for no CRL: accepted, nothing published', () => {
    const dir = folder('\n');
    expect(loadCacerts(dir)).toMatchObject({ crlPem: '', crls: [] });
    removeDir(dir);
  });
});
