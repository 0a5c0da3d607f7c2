/** Loading a cacerts folder: every good layout loads, every broken bundle is refused naming the file and the problem. */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCacerts } from '../src/ca/index.js';
import { BundleError } from '../src/pki/index.js';
import { makeIntermediate, makeRoot, opensslVerify, tempDir, writeCacerts, removeDir } from './helpers/pki.js';
import { createTestIssuer } from './helpers/server.js';

const dirs: string[] = [];
const fresh = () => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach(removeDir));

const root = makeRoot();
const signer = makeIntermediate(root);

function expectRefused(dir: string, file: string, problem: RegExp): void {
  let error: unknown;
  try {
    loadCacerts(dir);
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(BundleError);
  expect((error as BundleError).file).toBe(join(dir, file));
  expect((error as BundleError).problem).toMatch(problem);
}

describe('good bundles', () => {
  it('Istio layout', () => {
    const b = loadCacerts(writeCacerts(fresh(), { signer, roots: [root] }));
    expect(b.layout).toBe('istio');
    expect(b.path.map((c) => c.x509.fingerprint256)).toEqual([signer.cert.fingerprint256, root.cert.fingerprint256]);
    expect(b.rootsPem).toBe(root.certPem);
  });

  it('Kubernetes TLS layout wins when tls.crt exists', () => {
    const dir = writeCacerts(fresh(), { signer, roots: [root], layout: 'kubernetes-tls' });
    writeFileSync(join(dir, 'ca-cert.pem'), 'stale file that must be ignored');
    expect(loadCacerts(dir).layout).toBe('kubernetes-tls');
  });

  it('a two-level intermediate chain', () => {
    const mid = makeIntermediate(root, { cn: 'mid' });
    const leafCa = makeIntermediate(mid, { cn: 'cluster intermediate' });
    const b = loadCacerts(writeCacerts(fresh(), { signer: leafCa, intermediates: [mid], roots: [root] }));
    expect(b.path).toHaveLength(3);
    expect(b.chainPems).toEqual([leafCa.certPem, mid.certPem, root.certPem]);
  });

  it('a root used directly as the signer', () => {
    const b = loadCacerts(writeCacerts(fresh(), { signer: root, roots: [root] }));
    expect(b.path).toHaveLength(1);
  });

  it('a root bundle holding several roots', () => {
    const other = makeRoot({ cn: 'other root' });
    const b = loadCacerts(writeCacerts(fresh(), { signer, roots: [other, root] }));
    expect(b.roots).toHaveLength(2);
  });
});

describe('broken bundles are refused with the file and the problem', () => {
  it('missing folder', () => {
    expect(() => loadCacerts('/nonexistent/cacerts')).toThrow(/\/nonexistent\/cacerts: cacerts folder does not exist/);
  });

  it('empty folder', () => {
    const dir = fresh();
    expect(() => loadCacerts(dir)).toThrow(/no signing bundle found/);
  });

  it('partial bundle (no key)', () => {
    const dir = writeCacerts(fresh(), { signer, roots: [root] });
    rmSync(join(dir, 'ca-key.pem'));
    expectRefused(dir, 'ca-key.pem', /file is missing/);
  });

  it('key that does not match the certificate', () => {
    const other = makeIntermediate(root);
    expectRefused(writeCacerts(fresh(), { signer, roots: [root], keyPem: other.keyPem }), 'ca-key.pem', /does not match/);
  });

  it('signing certificate that is not a CA', () => {
    const notCa = makeIntermediate(root, { ca: false });
    expectRefused(writeCacerts(fresh(), { signer: notCa, roots: [root] }), 'ca-cert.pem', /not a CA/);
  });

  it('chain that does not reach a root of root-cert.pem', () => {
    const stranger = makeRoot({ cn: 'stranger' });
    const dir = writeCacerts(fresh(), { signer, roots: [stranger] });
    writeFileSync(join(dir, 'cert-chain.pem'), signer.certPem);
    expectRefused(dir, 'root-cert.pem', /does not chain to any root/);
  });

  it('expired signing certificate', () => {
    const expired = makeIntermediate(root, { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
    expectRefused(writeCacerts(fresh(), { signer: expired, roots: [root] }), 'ca-cert.pem', /expired at/);
  });

  it('half-written certificate file', () => {
    const dir = writeCacerts(fresh(), { signer, roots: [root] });
    writeFileSync(join(dir, 'ca-cert.pem'), signer.certPem.slice(0, 200));
    expectRefused(dir, 'ca-cert.pem', /no PEM CERTIFICATE block/);
  });

  it('encrypted key', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const enc = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }).toString();
    expectRefused(writeCacerts(fresh(), { signer, roots: [root], keyPem: enc }), 'ca-key.pem', /encrypted/);
  });

  it('TLS layout without ca.crt', () => {
    const dir = writeCacerts(fresh(), { signer, roots: [root], layout: 'kubernetes-tls' });
    rmSync(join(dir, 'ca.crt'));
    expectRefused(dir, 'ca.crt', /file is missing/);
  });

  it('a chain certificate between the signer and the root that is not a CA', () => {
    const notCaMiddle = makeIntermediate(root, { cn: 'not a CA', ca: false });
    const below = makeIntermediate(notCaMiddle, { cn: 'signer below a non-CA' });
    // OpenSSL refuses this path too.
    expect(() => opensslVerify(root.certPem, [notCaMiddle.certPem], below.certPem)).toThrow(/invalid CA certificate/);
    expectRefused(writeCacerts(fresh(), { signer: below, intermediates: [notCaMiddle], roots: [root] }), 'cert-chain.pem', /certificate "[^"]*not a CA[^"]*" \(SKI [0-9a-f]+\) is not a CA/);
  });
});

describe('svid-ca serve with a broken bundle', () => {
  it('refuses to start: exit 1 and one clear line naming the file', async () => {
    const issuer = await createTestIssuer(fresh());
    const dir = writeCacerts(fresh(), { signer, roots: [root], keyPem: makeIntermediate(root).keyPem });
    const r = spawnSync(
      process.execPath,
      ['dist/cli.js', 'serve', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0'],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([`svid-ca: ${join(dir, 'ca-key.pem')}: private key does not match the certificate in ${join(dir, 'ca-cert.pem')}`]);
  });
});
