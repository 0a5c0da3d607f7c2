/**
 * Issue #16, item 7, end to end with the built command: `svid-ca cacerts crl` makes a CRL, renews
 * it with an increasing number (earlier revocations kept), takes a serial off with --unrevoke;
 * OpenSSL verifies each; `cacerts verify` and `plan-rotation` print the CRLs; `serve --workers 2`
 * serves with it (one series per CRL on the primary's /metrics) and `serve` exits 1 on a bad one.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { opensslCa, opensslCrlVerdict, probeLeaves, STDEXT } from './helpers/openssl-ca.js';
import { removeDir, tempDir } from './helpers/pki.js';
import { createTestIssuer } from './helpers/server.js';
import { createSoftHsm, SOFTHSM_MODULE } from './helpers/softhsm.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';

const work = tempDir('svid-ca-crl-cli-');
afterAll(() => removeDir(work));

const svidCa = (...args: string[]) => spawnSync(process.execPath, ['dist/cli.js', ...args], { encoding: 'utf8', timeout: 30_000 });
const openssl = (...args: string[]) => {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`;
};
const serialOf = (pem: string) => new X509Certificate(pem).serialNumber.toUpperCase().replace(/^(00)+(?=..)/, '');

describe('svid-ca cacerts crl', () => {
  it('makes, renews (number up, revocations kept) and trims a CRL that OpenSSL verifies; verify, plan-rotation and serve use it', async () => {
    const root = join(work, 'root');
    const cacerts = join(work, 'cacerts');
    const old = join(work, 'old');
    expect(svidCa('cacerts', 'init-root', '--out', root).status).toBe(0);
    expect(svidCa('cacerts', 'init-intermediate', '--root', root, '--out', old, '--cluster', 'old').status).toBe(0);
    expect(svidCa('cacerts', 'init-intermediate', '--root', root, '--out', cacerts, '--cluster', 'east').status).toBe(0);
    const crlFile = join(cacerts, 'ca-crl.pem');
    const oldSerial = serialOf(readFileSync(join(old, 'ca-cert.pem'), 'utf8'));

    const made = svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile, '--revoke', join(old, 'ca-cert.pem'), '--reason', 'keyCompromise');
    expect(made.stderr).toBe('');
    expect(made.status).toBe(0);
    expect(made.stdout).toContain('number 1');
    expect(openssl('crl', '-verify', '-in', crlFile, '-CAfile', join(root, 'root-cert.pem'), '-noout')).toMatch(/^verify OK/m);
    expect(openssl('crl', '-in', crlFile, '-noout', '-crlnumber')).toContain('crlNumber=0x01');
    expect(openssl('crl', '-in', crlFile, '-noout', '-text')).toMatch(new RegExp(`Serial Number: ${oldSerial}[\\s\\S]*Key Compromise`));

    // Renewed: number 2, the old revocation kept, a second one added (two --revoke flags).
    const other = join(work, 'other');
    expect(svidCa('cacerts', 'init-intermediate', '--root', root, '--out', other, '--cluster', 'other').status).toBe(0);
    const renewed = svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile, '--revoke', join(other, 'ca-cert.pem'), '--next-update', '48h');
    expect(renewed.status).toBe(0);
    expect(renewed.stdout).toContain('(renewed from number 1)');
    expect(openssl('crl', '-in', crlFile, '-noout', '-crlnumber')).toContain('crlNumber=0x02');
    const text = openssl('crl', '-in', crlFile, '-noout', '-text');
    expect(text).toContain(`Serial Number: ${oldSerial}`);
    expect(text).toContain(`Serial Number: ${serialOf(readFileSync(join(other, 'ca-cert.pem'), 'utf8'))}`);
    expect(openssl('crl', '-verify', '-in', crlFile, '-CAfile', join(root, 'root-cert.pem'), '-noout')).toMatch(/^verify OK/m);

    // --unrevoke takes one off (number 3); a certificate of another issuer cannot be revoked here.
    const trimmed = svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile, '--unrevoke', serialOf(readFileSync(join(other, 'ca-cert.pem'), 'utf8')));
    expect(trimmed.status).toBe(0);
    expect(openssl('crl', '-in', crlFile, '-noout', '-crlnumber')).toContain('crlNumber=0x03');
    expect(openssl('crl', '-in', crlFile, '-noout', '-text')).not.toContain(serialOf(readFileSync(join(other, 'ca-cert.pem'), 'utf8')));
    const foreign = svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile, '--revoke', join(cacerts, 'ca-key.pem'));
    expect(foreign.status).toBe(2);
    const notOurs = svidCa('cacerts', 'crl', '--issuer', cacerts, '--out', crlFile).stderr;
    expect(notOurs).toMatch(/--out: .* is not one CRL of .*intermediate east [0-9-]+ [0-9a-f]{8} to renew \(CRL #1 .* is not a CRL of --issuer\)/);
    expect(notOurs).not.toContain('cert-chain.pem');

    // The intermediate signs a CRL of its own (Istio layout folder as --issuer), which OpenSSL verifies.
    const intCrl = join(work, 'intermediate-crl.pem');
    expect(svidCa('cacerts', 'crl', '--issuer', cacerts, '--out', intCrl).status).toBe(0);
    expect(openssl('crl', '-verify', '-in', intCrl, '-CAfile', join(cacerts, 'ca-cert.pem'), '-noout')).toMatch(/^verify OK/m);
    // Both levels, the way a sidecar checks: an SVID of the current intermediate verifies; one of the revoked one does not.
    const crls = readFileSync(crlFile, 'utf8') + readFileSync(intCrl, 'utf8');
    // A file holding both is not renewed in place: each issuer's CRL is renewed in its own file.
    const both = join(work, 'both-crl.pem');
    writeFileSync(both, crls);
    const multi = svidCa('cacerts', 'crl', '--issuer', root, '--out', both);
    expect(multi.status).toBe(2);
    expect(multi.stderr).toContain("it holds 2 CRLs; renew a file that holds only this issuer's CRL: keep one file per issuer and concatenate them into ca-crl.pem");
    const ca = (dir: string) => ({ certPem: readFileSync(join(dir, 'ca-cert.pem'), 'utf8'), keyPem: readFileSync(join(dir, 'ca-key.pem'), 'utf8'), cert: new X509Certificate(readFileSync(join(dir, 'ca-cert.pem'))) });
    const rootPem = readFileSync(join(root, 'root-cert.pem'), 'utf8');
    expect(opensslCrlVerdict(probeLeaves(ca(cacerts)).workload, [ca(cacerts).certPem], rootPem, crls)).toBeUndefined();
    // (-crl_check_all wants a CRL at every level: the revoked intermediate's own, empty one too.)
    const oldCrl = join(work, 'old-crl.pem');
    expect(svidCa('cacerts', 'crl', '--issuer', old, '--out', oldCrl).status).toBe(0);
    expect(opensslCrlVerdict(probeLeaves(ca(old)).workload, [ca(old).certPem], rootPem, crls + readFileSync(oldCrl, 'utf8'))).toMatch(/certificate revoked/);

    const verified = svidCa('cacerts', 'verify', cacerts);
    expect(verified.status).toBe(0);
    expect(verified.stdout).toMatch(new RegExp(`crl +issuer O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8}, number 3\\n.*this update .* next update .*\\n.*revoked serial ${oldSerial.toLowerCase()} \\(keyCompromise\\)`));
    const plan = svidCa('cacerts', 'plan-rotation', old, cacerts);
    expect(plan.status).toBe(0);
    expect(plan.stdout).toContain('CRLs now: none');
    expect(plan.stdout).toMatch(/note: the next CRL revokes the current signer \(certificate "O=svid-ca, CN=svid-ca intermediate old [0-9-]+ [0-9a-f]{8}"/);
    expect(plan.stdout).toContain(`--from-file=${join(cacerts, 'ca-crl.pem')}`);
    expect(plan.stdout).toContain('rollback: do not apply the old folder again: its signer is the certificate this CRL revokes');
    expect(plan.stdout).not.toContain('rollback: apply the old folder again');

    // serve --workers 2 with it: one series per CRL on the primary's /metrics.
    const issuer = await createTestIssuer(tempDir());
    const port = await freePort();
    const serve = startCli(['serve', '--workers', '2', '--cacerts', cacerts, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', `127.0.0.1:${port}`]);
    try {
      await waitForStatus(`http://127.0.0.1:${port}/readyz`, 200, 60_000);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
      expect(metrics.split('\n').filter((l) => l.startsWith('svid_ca_crl_revoked_certificates{'))).toEqual([expect.stringMatching(/^svid_ca_crl_revoked_certificates\{issuer="O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8}"\} 1$/)]);
      expect(metrics.split('\n').filter((l) => l.startsWith('svid_ca_crl_next_update_timestamp_seconds{'))).toHaveLength(1);
    } finally {
      serve.child.kill('SIGTERM');
      expect(await serve.exited).toBe(0);
    }

    // A CRL that revokes the signer: serve exits 1 naming ca-crl.pem, and cacerts verify exits 1.
    expect(svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile, '--revoke', join(cacerts, 'ca-cert.pem')).status).toBe(0);
    const refused = svidCa('serve', '--cacerts', cacerts, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0');
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/ca-crl\.pem: certificate "O=svid-ca, CN=svid-ca intermediate east [0-9-]+ [0-9a-f]{8}" serial [0-9a-f]+ is revoked by CRL \(issuer "O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8}", number 4\)/);
    expect(svidCa('cacerts', 'verify', cacerts).status).toBe(1);
    writeFileSync(crlFile, '');
    expect(svidCa('cacerts', 'verify', cacerts).status).toBe(0);
  }, 180_000);

  it('signs with the key of an issuer folder in the Kubernetes TLS layout, and refuses a folder without a CA', () => {
    const dir = join(work, 'tls');
    const r = opensslCa(work, 'tls root', STDEXT);
    const i = opensslCa(work, 'tls intermediate', STDEXT, r);
    spawnSync('mkdir', ['-p', dir]);
    writeFileSync(join(dir, 'tls.crt'), i.certPem + r.certPem);
    writeFileSync(join(dir, 'tls.key'), i.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'ca.crt'), r.certPem);
    const out = join(work, 'tls-crl.pem');
    expect(svidCa('cacerts', 'crl', '--issuer', dir, '--out', out).status).toBe(0);
    writeFileSync(join(work, 'tls-int.pem'), i.certPem);
    expect(openssl('crl', '-verify', '-in', out, '-CAfile', join(work, 'tls-int.pem'), '-noout')).toMatch(/^verify OK/m);
    const none = svidCa('cacerts', 'crl', '--issuer', join(work, 'empty'), '--out', join(work, 'x.pem'));
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('holds no CA to sign with');
    expect(svidCa('cacerts', 'crl', '--issuer', dir, '--out', join(work, 'y.pem'), '--reason', 'because').stderr).toContain('--reason: invalid value "because"');
  }, 90_000);

  it('signs with an intermediate key held in a PKCS#11 token (SoftHSM2): --signing-key, the folder holding the certificates only', () => {
    const dir = join(work, 'token');
    const hsm = createSoftHsm(dir);
    const run = (...args: string[]) => spawnSync(process.execPath, ['dist/cli.js', 'cacerts', ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...hsm.env } });
    const token = ['--pkcs11-module', SOFTHSM_MODULE, '--pkcs11-pin-file', hsm.pinFile];
    const uri = 'pkcs11:token=svid-ca;object=intermediate-crl;id=%07';
    expect(run('init-root', '--out', join(dir, 'root')).status).toBe(0);
    expect(run('init-intermediate', '--key-uri', uri, ...token, '--root', join(dir, 'root'), '--out', join(dir, 'cacerts')).status).toBe(0);
    const crlFile = join(dir, 'cacerts', 'ca-crl.pem');
    const made = run('crl', '--issuer', join(dir, 'cacerts'), '--out', crlFile, '--signing-key', uri, ...token);
    expect(made.stdout + made.stderr).toContain('number 1');
    expect(made.status).toBe(0);
    expect(openssl('crl', '-verify', '-in', crlFile, '-CAfile', join(dir, 'cacerts', 'ca-cert.pem'), '-noout')).toMatch(/^verify OK/m);
    const verified = run('verify', join(dir, 'cacerts'), '--signing-key', uri, ...token);
    expect(verified.status).toBe(0);
    expect(verified.stdout).toMatch(/crl +issuer O=svid-ca, CN=svid-ca intermediate cluster1 [0-9-]+ [0-9a-f]{8}, number 1/);
  }, 90_000);
});
