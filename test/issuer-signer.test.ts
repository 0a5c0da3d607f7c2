/**
 * ca/ loadIssuerSigner: the one signer of a CA folder for what svid-ca signs besides certificates (a CRL, by
 * `cacerts crl --issuer DIR`). Every folder kind it takes (an init-root folder, a cacerts folder in the Istio
 * and in the Kubernetes TLS layout) signs a CRL that OpenSSL verifies against the folder's certificate; a
 * folder it cannot use is refused naming the folder or file. (The key on a token: pkcs11-token.test.ts.)
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { IssuerFolderError, loadIssuerSigner } from '../src/ca/index.js';
import { signCrl } from '../src/pki/index.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts } from './helpers/pki.js';

const work = tempDir('svid-ca-issuer-signer-');
afterAll(() => removeDir(work));

/** `openssl crl -CAfile` on a CRL signed by `dir`'s signer; returns OpenSSL's output (stdout and stderr). */
function crlVerifiedByOpenssl(dir: string, caPem: string): string {
  const issuer = loadIssuerSigner(dir);
  const now = new Date();
  const pem = signCrl({ number: 1n, thisUpdate: now, nextUpdate: new Date(now.getTime() + 3_600_000), revoked: [{ serialHex: '0badc0ffee', revocationDate: now }] }, issuer.signer);
  const crlFile = join(dir, 'test-crl.pem');
  const caFile = join(dir, 'test-ca.pem');
  writeFileSync(crlFile, pem);
  writeFileSync(caFile, caPem);
  // The CRL's signature must be the issuer's: its algorithm identifier is the one the signer announces.
  expect(issuer.algorithmIdentifierDer.length).toBeGreaterThan(0);
  expect(issuer.certificate.subject).toContain('svid-ca test');
  return execFileSync('sh', ['-c', 'openssl crl -in "$1" -CAfile "$2" -noout 2>&1', 'sh', crlFile, caFile], { encoding: 'utf8' });
}

describe('loadIssuerSigner', () => {
  const root = makeRoot({ cn: 'issuer signer root' });
  const signer = makeIntermediate(root, { cn: 'issuer signer intermediate', key: 'rsa-2048' });

  it('an init-root folder (root-cert.pem, root-key.pem) signs a CRL OpenSSL verifies', () => {
    const dir = join(work, 'root');
    writeCacerts(dir, { signer: root, roots: [root] }); // makes ca-cert.pem too: take it away
    execFileSync('sh', ['-c', 'cd "$1" && rm ca-cert.pem ca-key.pem cert-chain.pem', 'sh', dir]);
    writeFileSync(join(dir, 'root-key.pem'), root.keyPem, { mode: 0o600 });
    expect(crlVerifiedByOpenssl(dir, root.certPem)).toContain('verify OK');
  });

  for (const layout of ['istio', 'kubernetes-tls'] as const) {
    it(`a cacerts folder in the ${layout} layout signs with the signing certificate's key (not the root's)`, () => {
      const dir = writeCacerts(join(work, layout), { signer, roots: [root], layout });
      expect(crlVerifiedByOpenssl(dir, signer.certPem + root.certPem)).toContain('verify OK');
      // Not the root's key: against the root alone OpenSSL does not verify the CRL.
      writeFileSync(join(dir, 'root-only.pem'), root.certPem);
      const againstRoot = execFileSync('sh', ['-c', 'openssl crl -in "$1" -CAfile "$2" -noout 2>&1; true', 'sh', join(dir, 'test-crl.pem'), join(dir, 'root-only.pem')], { encoding: 'utf8' });
      expect(againstRoot).not.toContain('verify OK');
      expect(loadIssuerSigner(dir).certificate.subject).toContain('issuer signer intermediate');
    });
  }

  it('refuses a folder with no CA, a key that does not match, and an unreadable certificate, naming the file', () => {
    const empty = join(work, 'empty');
    writeCacerts(empty, { signer, roots: [root] });
    execFileSync('sh', ['-c', 'cd "$1" && rm ca-cert.pem ca-key.pem root-cert.pem', 'sh', empty]);
    expect(() => loadIssuerSigner(empty)).toThrow(IssuerFolderError);
    expect(() => loadIssuerSigner(empty)).toThrow(`${empty} holds no CA to sign with`);

    const mismatched = writeCacerts(join(work, 'mismatch'), { signer, roots: [root], keyPem: root.keyPem });
    expect(() => loadIssuerSigner(mismatched)).toThrow(`${join(mismatched, 'ca-key.pem')} does not match ${join(mismatched, 'ca-cert.pem')}`);

    const garbled = writeCacerts(join(work, 'garbled'), { signer, roots: [root] });
    writeFileSync(join(garbled, 'ca-cert.pem'), 'not a certificate\n');
    expect(() => loadIssuerSigner(garbled)).toThrow(`${join(garbled, 'ca-cert.pem')} cannot be read as PEM`);
  });
});
