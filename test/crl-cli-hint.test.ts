/**
 * `svid-ca cacerts crl` ends its report with where the CRL goes. Written anywhere else, it says to put it in
 * the cacerts folder as ca-crl.pem; written as ca-crl.pem already (--out DIR/ca-crl.pem, the runbooks' form),
 * it does not tell the operator to do what is done. Built command, real folders; openssl checks the CRL.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from './helpers/pki.js';
import { runTool } from './helpers/tools.js';

const work = tempDir('svid-ca-crl-hint-');
afterAll(() => removeDir(work));
const svidCa = (...args: string[]) => spawnSync(process.execPath, ['dist/cli.js', ...args], { encoding: 'utf8', timeout: 30_000 });
const PUT_IT = 'put it in the cacerts folder as ca-crl.pem';

describe('svid-ca cacerts crl: the closing hint', () => {
  it('names ca-crl.pem only when --out is another file', () => {
    const root = join(work, 'root');
    const cacerts = join(work, 'cacerts');
    expect(svidCa('cacerts', 'init-root', '--out', root).status).toBe(0);
    expect(svidCa('cacerts', 'init-intermediate', '--root', root, '--out', cacerts).status).toBe(0);

    const elsewhere = svidCa('cacerts', 'crl', '--issuer', root, '--out', join(work, 'root-crl.pem'));
    expect(elsewhere.status).toBe(0);
    expect(elsewhere.stdout).toContain(PUT_IT);

    const inPlace = svidCa('cacerts', 'crl', '--issuer', root, '--out', join(cacerts, 'ca-crl.pem'));
    expect(inPlace.stderr).toBe('');
    expect(inPlace.status).toBe(0);
    expect(inPlace.stdout).not.toContain(PUT_IT);
    // The folder lacks the intermediate's CRL (the signing certificate): the warning names it, and the rule stays.
    const intermediate = /subject=\s*(.*)$/m.exec(runTool('openssl', ['x509', '-in', join(cacerts, 'ca-cert.pem'), '-noout', '-subject', '-nameopt', 'sep_comma_plus_space']).stdout)![1]!.trim();
    expect(inPlace.stdout).toContain(`certificate "${intermediate}" (SKI `);
    expect(inPlace.stdout).toContain('has no CRL in this file');
    expect(inPlace.stdout).toContain('it must hold a CRL of every CA of the chain');
    expect(inPlace.stdout).not.toContain('holds a CRL of every CA of the chain');
    const verified = runTool('openssl', ['crl', '-verify', '-in', join(cacerts, 'ca-crl.pem'), '-CAfile', join(root, 'root-cert.pem'), '-noout']);
    expect(`${verified.stdout}${verified.stderr}`).toMatch(/^verify OK/m);

    // The intermediate's CRL added to the same file: every CA has one, so only verify and apply remain.
    const complete = svidCa('cacerts', 'crl', '--issuer', cacerts, '--out', join(cacerts, 'ca-crl.pem'));
    expect(complete.stderr).toBe('');
    expect(complete.status).toBe(0);
    expect(complete.stdout).toContain(`${join(cacerts, 'ca-crl.pem')} holds a CRL of every CA of the chain: check the folder with svid-ca cacerts verify, and apply it`);
    expect(complete.stdout).not.toContain('it must hold a CRL of every CA of the chain');
    expect(complete.stdout).not.toContain('warning:');
    // openssl agrees: a leaf-level check of the intermediate against both CRLs (crl_check_all) passes.
    const chainCheck = runTool('openssl', ['verify', '-crl_check_all', '-CRLfile', join(cacerts, 'ca-crl.pem'), '-CAfile', join(root, 'root-cert.pem'), join(cacerts, 'ca-cert.pem')]);
    expect(`${chainCheck.stdout}${chainCheck.stderr}`).toMatch(/: OK$/m);
  }, 60_000);
});
