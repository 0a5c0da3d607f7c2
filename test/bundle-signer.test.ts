/**
 * Issue #20's two surviving bundle mutations, each with a fixture that only that check catches:
 * a CA:TRUE signing certificate whose keyUsage lacks keyCertSign (made by openssl, shown bad by
 * openssl), and a chain file that lacks the signing certificate (svid-ca must put it first, or
 * no client can build a path).
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Authority, loadCacerts } from '../src/ca/index.js';
import { buildCsrPem, decodePem, generateKeyPair, parseCsrPem } from '../src/pki/index.js';
import { opensslCa, opensslVerdict, STDEXT } from './helpers/openssl-ca.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { createTestIssuer, fetchText, startTestServer } from './helpers/server.js';

const work = tempDir('svid-ca-bundle-signer-');
afterAll(() => removeDir(work));

const NO_KEY_CERT_SIGN = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,cRLSign,digitalSignature', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid'];
const KCS = /lacks the keyCertSign key usage/;

describe('a CA:TRUE signing certificate without keyCertSign', () => {
  const root = opensslCa(work, 'kcs root', STDEXT);
  const good = opensslCa(work, 'kcs good signer', STDEXT, root);
  const bad = opensslCa(work, 'kcs signer without keyCertSign', NO_KEY_CERT_SIGN, root);

  it('is bad by openssl, and good is good', () => {
    expect(opensslVerdict(good, [good.certPem], root.certPem)).toBeUndefined();
    expect(opensslVerdict(bad, [bad.certPem], root.certPem)).toMatch(/key usage does not include certificate signing/);
  });

  it('is refused at start (serve exits 1 with one line) and by cacerts verify', async () => {
    const dir = writeCacerts(join(work, 'kcs-start'), { signer: bad, roots: [root] });
    expect(() => loadCacerts(dir)).toThrow(KCS);
    const v = spawnSync(process.execPath, ['dist/cli.js', 'cacerts', 'verify', dir], { encoding: 'utf8', timeout: 30_000 });
    expect(v.status).toBe(1);
    expect(v.stdout).toMatch(KCS);
    const issuer = await createTestIssuer();
    const s = spawnSync(
      process.execPath,
      ['dist/cli.js', 'serve', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(s.status).toBe(1);
    const lines = s.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(KCS);
  });

  it('is refused at reload: the current bundle keeps serving and /readyz stays ready', async () => {
    const issuer = await createTestIssuer();
    const dir = join(work, 'kcs-volume');
    const volume = new SecretVolume(dir);
    volume.write(istioFiles(good, [root]));
    const server = await startTestServer({ cacerts: dir, issuer, reloadIntervalMs: 3_600_000 });
    try {
      volume.write(istioFiles(bad, [root]));
      const r = server.service.lifecycle.checkNow();
      expect(r?.result).toBe('failure');
      expect(r?.result === 'failure' && r.error.message).toMatch(KCS);
      expect(server.service.authority.bundle.signingCert.x509.fingerprint256).toBe(good.cert.fingerprint256);
      expect((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/readyz`)).status).toBe(200);
      expect((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body).toMatch(/svid_ca_bundle_reloads_total\{result="failure"\} [1-9]/);
    } finally {
      await server.close();
    }
  });
});

describe('a chain file that lacks the signing certificate', () => {
  it('still gets the signer first in every response: the issued chain verifies with openssl', () => {
    const root = makeRoot({ cn: 'lacks-signer root' });
    const mid = makeIntermediate(root, { cn: 'lacks-signer mid' });
    const signer = makeIntermediate(mid, { cn: 'lacks-signer signer' });
    const dir = writeCacerts(join(work, 'lacks-signer'), { signer, intermediates: [mid], roots: [root] });
    writeFileSync(join(dir, 'cert-chain.pem'), mid.certPem + root.certPem);
    const bundle = loadCacerts(dir);
    const { privateKey } = generateKeyPair('ec-p256');
    const csr = parseCsrPem(buildCsrPem({ privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/default/sa/web' }] }));
    const issued = new Authority(bundle, { defaultTtlMs: 3_600_000, maxTtlMs: 3_600_000 }).issue({ identity: 'spiffe://cluster.local/ns/default/sa/web', csr, requestedTtlSeconds: 3600n });
    const chain = issued.certChain;
    expect(new X509Certificate(decodePem(chain[1]!)[0]!.der).fingerprint256).toBe(signer.cert.fingerprint256);
    expect(opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
  });
});
