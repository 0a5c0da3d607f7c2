/**
 * crl-safety2, end to end with the built command and real files: the fix that plan-rotation and verify --previous
 * print (`cacerts crl --from current/ca-crl.pem --out next/ca-crl.pem`) keeps the revocations of BOTH CRLs of the
 * issuer (the one in use and the fresh one in --out), as OpenSSL shows; a --from that cannot be read is an error
 * and nothing is written.
 */
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { cliInDir, crlFolderInUse } from './helpers/cli-in-dir.js';
import { removeDir, tempDir } from './helpers/pki.js';

const work = tempDir('svid-ca-crl-merge-');
afterAll(() => removeDir(work));

const cli = cliInDir(work);
const { svidCa, ok, openssl, at } = cli;

describe('cacerts crl --from onto an --out that already holds a CRL of the issuer', () => {
  // In use: root CRL #2 revoking "retired", and current's own CRL; rootVerdict: openssl verify -crl_check under root1.
  const { retiredSerial: retired, currentSerial: current, rootVerdict } = crlFolderInUse(cli);
  ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'next', '--cluster', 'east');

  it('the printed fix revokes the union (number = higher + 1) and says what came from where; OpenSSL sees both revocations', () => {
    // The mistake of the trial: a fresh root CRL #1 in next/ revoking the current signer (keyCompromise).
    ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'next/ca-crl.pem', '--revoke', 'current/ca-cert.pem', '--reason', 'keyCompromise');
    ok('cacerts', 'crl', '--issuer', 'next', '--out', 'next/ca-crl.pem');
    expect(rootVerdict('current/ca-cert.pem', 'next/ca-crl.pem')).toMatch(/certificate revoked/);
    expect(rootVerdict('retired/ca-cert.pem', 'next/ca-crl.pem')).toMatch(/: OK/);
    const refused = svidCa('cacerts', 'verify', 'next', '--previous', 'current');
    expect(refused.status).toBe(1);
    // crl-safety2 4b: no OK line before the refusals; the verdict comes last.
    expect(refused.out).not.toContain('OK: svid-ca serve would accept');
    expect(refused.out.trim().split('\n').at(-1)).toBe('NOT OK: serve would load next, but against current its CRLs are REFUSED (above)');
    const fix = /renew it from the CRL in use: (svid-ca cacerts crl .*)$/m.exec(refused.out)?.[1];
    expect(fix).toBe('svid-ca cacerts crl --issuer <that CA\'s folder> --from current/ca-crl.pem --out next/ca-crl.pem');

    const made = ok('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'current/ca-crl.pem', '--out', 'next/ca-crl.pem');
    expect(made).toContain('(renewed from number 2)');
    expect(made).toMatch(/merged the two CRLs of ".*": number 1 in --out next\/ca-crl\.pem and number 2 in --from current\/ca-crl\.pem; the new CRL revokes every serial of both:/);
    expect(made).toContain(`  serial ${current} (keyCompromise): from --out next/ca-crl.pem`);
    expect(made).toContain(`  serial ${retired}: from --from current/ca-crl.pem`);
    const text = openssl('crl', '-in', at('next/ca-crl.pem'), '-noout', '-text');
    expect(text).toMatch(/X509v3 CRL Number: \n\s+3\n/);
    expect(text).toMatch(new RegExp(`Serial Number: ${current.toUpperCase()}\\n\\s+Revocation Date: .*\\n\\s+CRL entry extensions:\\n\\s+X509v3 CRL Reason Code: \\n\\s+Key Compromise`));
    expect(text).toContain(`Serial Number: ${retired.toUpperCase()}`);
    // Both stay revoked as OpenSSL checks every level, and the folder now continues the one in use.
    expect(openssl('verify', '-crl_check_all', '-CAfile', at('offline/root1/root-cert.pem'), '-CRLfile', at('next/ca-crl.pem'), at('current/ca-cert.pem'))).toMatch(/certificate revoked/);
    expect(rootVerdict('retired/ca-cert.pem', 'next/ca-crl.pem')).toMatch(/certificate revoked/);
    const passed = svidCa('cacerts', 'verify', 'next', '--previous', 'current');
    expect(passed.status).toBe(0);
    expect(passed.out.trim().split('\n').at(-1)).toBe('OK: svid-ca serve would accept next; its CRLs continue those of current');
  });

  it('a --from that cannot be read is an error (exit 2) and nothing is written', () => {
    const before = readFileSync(at('next/ca-crl.pem'), 'utf8');
    const typo = svidCa('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'current.bak/nonexist.pem', '--out', 'next/ca-crl.pem');
    expect(typo.status).toBe(2);
    expect(typo.out).toMatch(/^svid-ca: --from: cannot read current\.bak\/nonexist\.pem \(.*\); if the folder in use has no ca-crl\.pem, leave out --from$/m);
    expect(readFileSync(at('next/ca-crl.pem'), 'utf8')).toBe(before);
    expect(svidCa('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'nowhere/ca-crl.pem', '--out', 'fresh-crl.pem').status).toBe(2);
    expect(existsSync(at('fresh-crl.pem'))).toBe(false);
  });

  it('cacerts crl warns (exit 0) when the file it wrote makes the cacerts folder it sits in one that verify rejects', () => {
    // (a) the intermediate's own CRL added to a copied ca-crl.pem that still holds the retired intermediate's CRL.
    ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'copied', '--cluster', 'west');
    copyFileSync(at('current/ca-crl.pem'), at('copied/ca-crl.pem'));
    ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'copied/ca-crl.pem');
    const copied = ok('cacerts', 'crl', '--issuer', 'copied', '--out', 'copied/ca-crl.pem');
    const rejected = svidCa('cacerts', 'verify', 'copied');
    expect(rejected.status).toBe(1);
    const why = /^REJECTED: (.*)$/m.exec(rejected.out)![1]!;
    expect(why).toContain('is issued by no certificate of cert-chain.pem or root-cert.pem');
    expect(copied).toContain(`warning: as it is now, copied would be refused by svid-ca serve and cacerts verify: ${why}`);
    // OpenSSL agrees the carried CRL is no CRL of the folder's CAs.
    expect(openssl('crl', '-verify', '-in', at('current/ca-crl.pem'), '-CAfile', at('copied/ca-cert.pem'), '-noout')).not.toMatch(/^verify OK/m);

    // (b) a CRL that revokes the signer of the folder it is written into.
    ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'premature', '--cluster', 'north');
    ok('cacerts', 'crl', '--issuer', 'premature', '--out', 'premature/ca-crl.pem');
    const premature = ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'premature/ca-crl.pem', '--revoke', 'premature/ca-cert.pem');
    expect(openssl('verify', '-crl_check_all', '-CAfile', at('offline/root1/root-cert.pem'), '-CRLfile', at('premature/ca-crl.pem'), at('premature/ca-cert.pem'))).toMatch(/certificate revoked/);
    const refused = svidCa('cacerts', 'verify', 'premature');
    expect(refused.status).toBe(1);
    const reason = /^REJECTED: (.*)$/m.exec(refused.out)![1]!;
    expect(reason).toContain('which is the signing certificate: svid-ca will not sign under a revoked certificate');
    expect(premature).toContain(`warning: as it is now, premature would be refused by svid-ca serve and cacerts verify: ${reason}`);

    // A folder verify accepts gets no such warning.
    const fine = ok('cacerts', 'crl', '--issuer', 'current', '--out', 'current/ca-crl.pem');
    expect(fine).not.toContain('warning:');
  });

  it("the next folder's ca-crl.pem applied too early to the current folder: refused for revoking its signer, not with --drop-issuer of the new intermediate's CRL", () => {
    ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'early', '--cluster', 'early');
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']) copyFileSync(at(`current/${f}`), at(`early/${f}`));
    copyFileSync(at('next/ca-crl.pem'), at('early/ca-crl.pem'));
    // The fixture is bad as OpenSSL sees it: the root's CRL in it revokes the signer of "early" (current's certificate).
    expect(rootVerdict('early/ca-cert.pem', 'early/ca-crl.pem')).toMatch(/certificate revoked/);
    const refused = svidCa('cacerts', 'verify', 'early');
    expect(refused.status).toBe(1);
    expect(refused.out).toMatch(new RegExp(`^REJECTED: early/ca-crl.pem: certificate ".*" serial ${current} is revoked by CRL \\(issuer ".*", number 3\\) \\(reason keyCompromise, since .*\\), which is the signing certificate: svid-ca will not sign under a revoked certificate`, 'm'));
    expect(refused.out).not.toContain('--drop-issuer');
  });
});
