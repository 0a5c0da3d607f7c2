/**
 * A `ca-crl.pem` beside a Kubernetes TLS-layout cacerts folder (tls.crt, tls.key, ca.crt) is not read (istiod
 * ignores it too): svid-ca says so, once at load in the log (warn) and in `cacerts verify`'s report, naming the
 * file. The CRL itself is a good one (openssl checks it against its issuer), so the warning is about the layout.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { opensslCa, opensslCrl, STDEXT } from './helpers/openssl-ca.js';
import { removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { createTestIssuer, startTestServer } from './helpers/server.js';

const work = tempDir('svid-ca-tls-crl-');
afterAll(() => removeDir(work));
const root = opensslCa(work, 'tls layout root', STDEXT);
const signer = opensslCa(work, 'tls layout intermediate', STDEXT, root);

const IGNORED = 'is ignored: the Kubernetes TLS layout (tls.crt, tls.key, ca.crt) carries no CRL; put the CRLs in an Istio-layout folder (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem, ca-crl.pem; see docs/cacerts.md)';

/** A TLS-layout folder with a good CRL of the intermediate as ca-crl.pem (checked by openssl against it). */
function tlsFolderWithCrl(name: string): { dir: string; crlFile: string } {
  const dir = writeCacerts(join(work, name), { signer, roots: [root], layout: 'kubernetes-tls' });
  const crlFile = join(dir, 'ca-crl.pem');
  writeFileSync(crlFile, opensslCrl(work, signer, [root.cert]));
  writeFileSync(join(dir, 'issuer.pem'), signer.certPem);
  const checked = spawnSync('sh', ['-c', 'openssl crl -in "$1" -CAfile "$2" -noout 2>&1', 'sh', crlFile, join(dir, 'issuer.pem')], { encoding: 'utf8' });
  expect(checked.stdout).toContain('verify OK');
  return { dir, crlFile };
}

describe('ca-crl.pem beside a Kubernetes TLS-layout folder', () => {
  it('serve: one warn line at load naming the file; the bundle is used without a CRL', async () => {
    const { dir, crlFile } = tlsFolderWithCrl('serve');
    const server = await startTestServer({ cacerts: dir, issuer: await createTestIssuer(tempDir('svid-ca-tls-crl-jwks-')) });
    try {
      const records = server.logs.records();
      const warned = records.filter((r) => r.level === 40 && typeof r.msg === 'string' && r.msg.includes('carries no CRL'));
      expect(warned.map((r) => r.msg)).toEqual([`${crlFile} ${IGNORED}`]);
      const loaded = records.find((r) => r.msg === 'signing bundle loaded')!;
      expect(loaded.layout).toBe('kubernetes-tls');
      expect(loaded.crls).toBeUndefined();
    } finally {
      await server.close();
    }
  }, 60_000);

  it('cacerts verify (built CLI): the report warns naming the file and still accepts the folder (exit 0)', () => {
    const { dir, crlFile } = tlsFolderWithCrl('verify');
    const r = spawnSync(process.execPath, ['dist/cli.js', 'cacerts', 'verify', dir], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n')).toContain(`warning: ${crlFile} ${IGNORED}`);
    expect(r.stdout).toContain('OK: svid-ca serve would accept');
  });

  it('no warning without ca-crl.pem, nor for the Istio layout with one', () => {
    const plain = writeCacerts(join(work, 'plain'), { signer, roots: [root], layout: 'kubernetes-tls' });
    const istio = writeCacerts(join(work, 'istio'), { signer, roots: [root] });
    writeFileSync(join(istio, 'ca-crl.pem'), opensslCrl(work, signer, []) + opensslCrl(work, root, []));
    for (const dir of [plain, istio]) {
      const r = spawnSync(process.execPath, ['dist/cli.js', 'cacerts', 'verify', dir], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, r.stdout).toBe(0);
      expect(r.stdout).not.toContain('carries no CRL');
    }
  });
});
