/**
 * Issue #16, item 7, end to end with the built command: `svid-ca cacerts crl` makes a CRL, renews
 * it with an increasing number (earlier revocations kept), takes a serial off with --unrevoke; keeps
 * one ca-crl.pem with a CRL per CA (root + intermediate), renewing each in place, others byte for byte;
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
    const ca = (dir: string) => ({ certPem: readFileSync(join(dir, 'ca-cert.pem'), 'utf8'), keyPem: readFileSync(join(dir, 'ca-key.pem'), 'utf8'), cert: new X509Certificate(readFileSync(join(dir, 'ca-cert.pem'))) });
    const rootPem = readFileSync(join(root, 'root-cert.pem'), 'utf8');

    // The root's CRL alone is refused (issue #16 levels): clients check a CRL at every level once one is given.
    const rootOnly = readFileSync(crlFile, 'utf8');
    expect(opensslCrlVerdict(probeLeaves(ca(cacerts)).workload, [ca(cacerts).certPem], rootPem, rootOnly)).toMatch(/error 3 at 0 depth lookup: unable to get certificate CRL/);
    const alone = svidCa('cacerts', 'verify', cacerts);
    expect(alone.status).toBe(1);
    expect(alone.stdout + alone.stderr).toMatch(/REJECTED: .*ca-crl\.pem: certificate "O=svid-ca, CN=svid-ca intermediate east [0-9-]+ [0-9a-f]{8}" \(SKI [0-9a-f]+\) has no CRL in this file/);

    // The intermediate's CRL (Istio layout folder as --issuer) is added to the same file, after the root's, which is kept byte for byte.
    const added = svidCa('cacerts', 'crl', '--issuer', cacerts, '--out', crlFile);
    expect(added.stderr).toBe('');
    expect(added.status).toBe(0);
    expect(added.stdout).toMatch(/CRL \(issuer "O=svid-ca, CN=svid-ca intermediate east [^"]+", number 1\) \(added\); kept the 1 CRL\(s\) of other issuers in it/);
    const blocksOf = (file: string) => readFileSync(file, 'utf8').match(/-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----\n/g) ?? [];
    const blockFile = (pem: string) => {
      const f = join(work, `block-${Math.random().toString(16).slice(2)}.pem`);
      writeFileSync(f, pem);
      return f;
    };
    let [rootBlock, intBlock] = blocksOf(crlFile);
    expect(rootBlock).toBe(rootOnly);
    expect(openssl('crl', '-verify', '-in', blockFile(intBlock!), '-CAfile', join(cacerts, 'ca-cert.pem'), '-noout')).toMatch(/^verify OK/m);
    expect(openssl('crl', '-in', blockFile(intBlock!), '-noout', '-crlnumber')).toContain('crlNumber=0x01');
    expect(svidCa('cacerts', 'verify', cacerts).status).toBe(0);

    // Renew each in place: only that issuer's block changes (number + 1), the other is kept byte for byte, the order too.
    const intRenewed = svidCa('cacerts', 'crl', '--issuer', cacerts, '--out', crlFile);
    expect(intRenewed.status).toBe(0);
    expect(intRenewed.stdout).toContain('(renewed from number 1); kept the 1 CRL(s) of other issuers in it');
    let blocks = blocksOf(crlFile);
    expect(blocks).toHaveLength(2);
    expect(blocks[0]).toBe(rootBlock);
    expect(openssl('crl', '-in', blockFile(blocks[1]!), '-noout', '-crlnumber')).toContain('crlNumber=0x02');
    intBlock = blocks[1];
    const rootRenewed = svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile);
    expect(rootRenewed.status).toBe(0);
    expect(rootRenewed.stdout).toContain('(renewed from number 3)');
    blocks = blocksOf(crlFile);
    expect(blocks[1]).toBe(intBlock);
    expect(openssl('crl', '-in', blockFile(blocks[0]!), '-noout', '-crlnumber')).toContain('crlNumber=0x04');
    expect(openssl('crl', '-in', blockFile(blocks[0]!), '-noout', '-text')).toContain(`Serial Number: ${oldSerial}`);
    expect(openssl('crl', '-verify', '-in', blockFile(blocks[0]!), '-CAfile', join(root, 'root-cert.pem'), '-noout')).toMatch(/^verify OK/m);
    rootBlock = blocks[0];

    // A file with two CRLs of one issuer is not renewed: which one is meant is unknown.
    const twice = join(work, 'twice-crl.pem');
    writeFileSync(twice, rootBlock! + intBlock! + rootBlock!);
    const dup = svidCa('cacerts', 'crl', '--issuer', root, '--out', twice);
    expect(dup.status).toBe(2);
    expect(dup.stderr).toMatch(/--out: .*twice-crl\.pem holds 2 CRLs of O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8} \(CRL #1, #3\); a CA has one CRL in ca-crl\.pem/);
    expect(readFileSync(twice, 'utf8')).toBe(rootBlock! + intBlock! + rootBlock!);

    // Both levels, the way a sidecar checks: an SVID of the current intermediate verifies; one of the revoked one does not.
    const crls = readFileSync(crlFile, 'utf8');
    expect(opensslCrlVerdict(probeLeaves(ca(cacerts)).workload, [ca(cacerts).certPem], rootPem, crls)).toBeUndefined();
    // (-crl_check_all wants a CRL at every level: the revoked intermediate's own, empty one too.)
    const oldCrl = join(work, 'old-crl.pem');
    expect(svidCa('cacerts', 'crl', '--issuer', old, '--out', oldCrl).status).toBe(0);
    expect(opensslCrlVerdict(probeLeaves(ca(old)).workload, [ca(old).certPem], rootPem, crls + readFileSync(oldCrl, 'utf8'))).toMatch(/certificate revoked/);

    const verified = svidCa('cacerts', 'verify', cacerts);
    expect(verified.status).toBe(0);
    expect(verified.stdout).toMatch(/crl +issuer O=svid-ca, CN=svid-ca intermediate east [0-9-]+ [0-9a-f]{8}, number 2\n/);
    expect(verified.stdout).toMatch(new RegExp(`crl +issuer O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8}, number 4\\n.*this update .* next update .*\\n.*revoked serial ${oldSerial.toLowerCase()} \\(keyCompromise\\)`));
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
      expect(metrics.split('\n').filter((l) => l.startsWith('svid_ca_crl_revoked_certificates{'))).toEqual([
        expect.stringMatching(/^svid_ca_crl_revoked_certificates\{issuer="O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8}"\} 1$/),
        expect.stringMatching(/^svid_ca_crl_revoked_certificates\{issuer="O=svid-ca, CN=svid-ca intermediate east [0-9-]+ [0-9a-f]{8}"\} 0$/),
      ]);
      expect(metrics.split('\n').filter((l) => l.startsWith('svid_ca_crl_next_update_timestamp_seconds{'))).toHaveLength(2);
    } finally {
      serve.child.kill('SIGTERM');
      expect(await serve.exited).toBe(0);
    }

    // A CRL that revokes the signer: serve exits 1 naming ca-crl.pem, and cacerts verify exits 1.
    expect(svidCa('cacerts', 'crl', '--issuer', root, '--out', crlFile, '--revoke', join(cacerts, 'ca-cert.pem')).status).toBe(0);
    const refused = svidCa('serve', '--cacerts', cacerts, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0');
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/ca-crl\.pem: certificate "O=svid-ca, CN=svid-ca intermediate east [0-9-]+ [0-9a-f]{8}" serial [0-9a-f]+ is revoked by CRL \(issuer "O=svid-ca, CN=svid-ca root CA [0-9-]+ [0-9a-f]{8}", number 5\)/);
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
    // The root's CRL beside it: ca-crl.pem holds a CRL at every level.
    expect(run('crl', '--issuer', join(dir, 'root'), '--out', crlFile).status).toBe(0);
    const verified = run('verify', join(dir, 'cacerts'), '--signing-key', uri, ...token);
    expect(verified.status).toBe(0);
    expect(verified.stdout).toMatch(/crl +issuer O=svid-ca, CN=svid-ca intermediate cluster1 [0-9-]+ [0-9a-f]{8}, number 1/);
  }, 90_000);
});
