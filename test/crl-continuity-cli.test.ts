/**
 * crl-safety, end to end with the built command and real files: a root CRL started afresh in `next/` (the old
 * runbook) goes back in number and un-revokes a serial: OpenSSL shows it, plan-rotation and verify --previous
 * refuse it naming issuer, numbers, serials and the fix; `cacerts crl --from` continues the CRL in use (number up,
 * revocations kept); a retired intermediate's CRL is dropped with `--drop-issuer`, the command the refusal names;
 * plan-rotation warns when NEXT loses CRLs and its step1/step3 kubectl commands carry ca-crl.pem; `cacerts bundle`
 * carries the signing side's CRL and says so.
 */
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { opensslCrlVerdict, probeLeaves } from './helpers/openssl-ca.js';
import { cliInDir, crlFolderInUse } from './helpers/cli-in-dir.js';
import { removeDir, tempDir } from './helpers/pki.js';

const work = tempDir('svid-ca-crl-continuity-');
afterAll(() => removeDir(work));

const cli = cliInDir(work);
const { svidCa, ok, openssl, at } = cli;
const ca = (dir: string) => ({ certPem: readFileSync(at(`${dir}/ca-cert.pem`), 'utf8'), keyPem: readFileSync(at(`${dir}/ca-key.pem`), 'utf8'), cert: new X509Certificate(readFileSync(at(`${dir}/ca-cert.pem`))) });
const subjectOf = (file: string) => new X509Certificate(readFileSync(at(file))).subject.split('\n').join(', ');

describe('CRL continuity across rotations', () => {
  // The folder in use: `current` signs, its ca-crl.pem holds the root's CRL number 2 (revoking "retired") and its own.
  // revokedByRoot: what openssl says of a certificate under root1 with the CRLs of a file (-crl_check: the root's CRL).
  const { retiredSerial, currentSerial, rootVerdict: revokedByRoot } = crlFolderInUse(cli);
  const rootSubject = new X509Certificate(readFileSync(at('offline/root1/root-cert.pem'))).subject.split('\n').join(', ');

  it('a root CRL started afresh in next/ un-revokes and goes back in number: OpenSSL shows it; plan-rotation and verify --previous refuse it', () => {
    expect(revokedByRoot('retired/ca-cert.pem', 'current/ca-crl.pem')).toMatch(/certificate revoked/);
    ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'bad-next', '--cluster', 'east');
    expect(ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'bad-next/ca-crl.pem', '--revoke', 'current/ca-cert.pem', '--reason', 'keyCompromise')).toContain(
      `note: a new CRL (number 1) of ${rootSubject}, while current/ca-crl.pem (number 2) holds a CRL of it: if that one is in use, renew it instead with --from current/ca-crl.pem, or its revocations are lost and the number goes back`,
    );
    // crl-safety2: a brand-new intermediate's first CRL has no CRL anywhere beside it: no note.
    expect(ok('cacerts', 'crl', '--issuer', 'bad-next', '--out', 'bad-next/ca-crl.pem')).not.toContain('note:');
    // The fixture is bad as OpenSSL sees it: "retired" passes the CRL check again, and the number is back at 1.
    expect(revokedByRoot('retired/ca-cert.pem', 'bad-next/ca-crl.pem')).toMatch(/: OK/);
    expect(openssl('crl', '-in', at('bad-next/ca-crl.pem'), '-noout', '-crlnumber')).toContain('crlNumber=0x01');
    // serve alone would accept the folder: the refusal is the comparison with the folder in use.
    expect(svidCa('cacerts', 'verify', 'bad-next').status).toBe(0);

    const plan = svidCa('cacerts', 'plan-rotation', 'current', 'bad-next');
    expect(plan.status).toBe(1);
    const refusals = plan.out.split('\n').filter((l) => l.startsWith('REFUSED: '));
    expect(refusals).toHaveLength(2);
    expect(refusals[0]).toBe(
      `REFUSED: the CRL of "${rootSubject}" goes back from number 2 to number 1: CRL numbers only increase (RFC 5280 5.2.3), so this is an older CRL; renew it from the CRL in use: svid-ca cacerts crl --issuer <that CA's folder> --from current/ca-crl.pem --out bad-next/ca-crl.pem`,
    );
    expect(refusals[1]).toContain(`the CRL of "${rootSubject}" (number 2 in use, number 1 next) no longer revokes serial ${retiredSerial}: those certificates would be trusted again`);
    expect(plan.out).not.toMatch(/^1\. /m);
    const verified = svidCa('cacerts', 'verify', 'bad-next', '--previous', 'current');
    expect(verified.status).toBe(1);
    expect(verified.out).toContain(refusals[0]);
  });

  it('the runbook with --from continues the CRL in use: number 3, both serials; OpenSSL agrees; plan-rotation passes and warns of the dropped CRL', () => {
    ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'next', '--cluster', 'east', '--cn', 'east intermediate 2027');
    const made = ok('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'current/ca-crl.pem', '--out', 'next/ca-crl.pem', '--revoke', 'current/ca-cert.pem', '--reason', 'keyCompromise');
    expect(made).toContain('--from current/ca-crl.pem: continuing CRL (issuer');
    expect(made).toContain('(renewed from number 2)');
    ok('cacerts', 'crl', '--issuer', 'next', '--out', 'next/ca-crl.pem');
    expect(openssl('crl', '-in', at('next/ca-crl.pem'), '-noout', '-crlnumber')).toContain('crlNumber=0x03');
    expect(openssl('crl', '-verify', '-in', at('next/ca-crl.pem'), '-CAfile', at('offline/root1/root-cert.pem'), '-noout')).toMatch(/^verify OK/m);
    expect(revokedByRoot('retired/ca-cert.pem', 'next/ca-crl.pem')).toMatch(/certificate revoked/);
    expect(revokedByRoot('current/ca-cert.pem', 'next/ca-crl.pem')).toMatch(/certificate revoked/);
    // A fresh leaf under the new intermediate passes with CRL checking at every level.
    const rootPem = readFileSync(at('next/root-cert.pem'), 'utf8');
    expect(opensslCrlVerdict(probeLeaves(ca('next')).workload, [ca('next').certPem], rootPem, readFileSync(at('next/ca-crl.pem'), 'utf8'))).toBeUndefined();

    const plan = svidCa('cacerts', 'plan-rotation', 'current', 'next');
    expect(plan.status).toBe(0);
    expect(plan.out).not.toContain('REFUSED');
    expect(plan.out).toContain(`warning: there is no CRL of "${subjectOf('current/ca-cert.pem')}" (number 1, revoking nothing) any more: clients lose it (next no longer has that CA`);
    expect(svidCa('cacerts', 'verify', 'next', '--previous', 'current').status).toBe(0);
    // Run again, --out already holds a newer CRL of the root than --from: the newer one is renewed (3 -> 4), never the older.
    expect(ok('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'current/ca-crl.pem', '--out', 'next/ca-crl.pem')).toContain('(renewed from number 3)');
    expect(openssl('crl', '-in', at('next/ca-crl.pem'), '-noout', '-crlnumber')).toContain('crlNumber=0x04');
    // A --from that is not a CRL file is refused as --from, and nothing is written.
    const before = readFileSync(at('next/ca-crl.pem'), 'utf8');
    const notCrl = svidCa('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'current/ca-cert.pem', '--out', 'next/ca-crl.pem');
    expect(notCrl.status).toBe(2);
    expect(notCrl.out).toMatch(/^svid-ca: --from: current\/ca-cert\.pem is not one CRL of .* \(it holds a PEM CERTIFICATE block; a CRL file holds only X509 CRL blocks\); give the ca-crl\.pem in use of this issuer$/m);
    expect(readFileSync(at('next/ca-crl.pem'), 'utf8')).toBe(before);
    // crl-safety2: --from a missing file is an error (a typo must not start the CRL afresh); nothing is written.
    const missing = svidCa('cacerts', 'crl', '--issuer', 'offline/root1', '--from', 'nowhere/ca-crl.pem', '--out', 'fresh-crl.pem');
    expect(missing.status).toBe(2);
    expect(missing.out).toContain('--from: cannot read nowhere/ca-crl.pem');
    expect(existsSync(at('fresh-crl.pem'))).toBe(false);
    expect(currentSerial).not.toBe(retiredSerial);
  });

  it('the CRL of an intermediate the folder no longer uses: verify names --drop-issuer, which drops it (the others kept byte for byte)', () => {
    ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'copied', '--cluster', 'west');
    copyFileSync(at('current/ca-crl.pem'), at('copied/ca-crl.pem'));
    ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'copied/ca-crl.pem', '--revoke', 'current/ca-cert.pem');
    ok('cacerts', 'crl', '--issuer', 'copied', '--out', 'copied/ca-crl.pem');
    // OpenSSL: the carried CRL is not the CRL of any CA of the folder (it does not verify with the new intermediate's key).
    expect(openssl('crl', '-verify', '-in', at('current/ca-crl.pem'), '-CAfile', at('copied/ca-cert.pem'), '-noout')).not.toMatch(/^verify OK/m);
    const refused = svidCa('cacerts', 'verify', 'copied');
    expect(refused.status).toBe(1);
    const command = /drop it with (svid-ca cacerts crl --out \S+ --drop-issuer '[^']+')/.exec(refused.out)?.[1];
    expect(command).toBe(`svid-ca cacerts crl --out copied/ca-crl.pem --drop-issuer '${subjectOf('current/ca-cert.pem')}'`);
    const rootBlock = readFileSync(at('copied/ca-crl.pem'), 'utf8').match(/-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----\n/g)!;
    const dropped = ok('cacerts', 'crl', '--out', 'copied/ca-crl.pem', '--drop-issuer', subjectOf('current/ca-cert.pem'));
    expect(dropped).toContain(`dropped the CRL of "${subjectOf('current/ca-cert.pem')}" from copied/ca-crl.pem`);
    // (blocks: the root's renewed in place, the carried one of "current", then the new intermediate's own)
    expect(rootBlock).toHaveLength(3);
    expect(readFileSync(at('copied/ca-crl.pem'), 'utf8')).toBe(rootBlock[0]! + rootBlock[2]!);
    expect(svidCa('cacerts', 'verify', 'copied').status).toBe(0);
    // A drop that matches nothing names what the file holds, and writes nothing.
    const before = readFileSync(at('copied/ca-crl.pem'), 'utf8');
    const none = svidCa('cacerts', 'crl', '--out', 'copied/ca-crl.pem', '--drop-issuer', 'O=nobody, CN=nothing');
    expect(none.status).toBe(2);
    expect(none.out).toContain(`--drop-issuer: copied/ca-crl.pem holds no CRL of "O=nobody, CN=nothing" (it holds CRLs of: "${rootSubject}"`);
    expect(readFileSync(at('copied/ca-crl.pem'), 'utf8')).toBe(before);
  });

  it('root rotation: plan-rotation warns what clients lose and puts ca-crl.pem in step 1; bundle carries the CRL or says it does not', () => {
    ok('cacerts', 'init-root', '--out', 'offline/root2');
    ok('cacerts', 'init-intermediate', '--root', 'offline/root2', '--out', 'rooted', '--cluster', 'east');
    const plan = svidCa('cacerts', 'plan-rotation', 'current', 'rooted');
    expect(plan.status).toBe(0);
    expect(plan.out).toContain(`warning: there is no CRL of "${rootSubject}" (number 2, revoking serial ${retiredSerial}) any more: clients lose it`);
    expect(plan.out).toContain(`svid-ca cacerts bundle current rooted --signer old --out step1\n     kubectl create secret generic cacerts -n istio-system --from-file=step1/ca-cert.pem --from-file=step1/ca-key.pem --from-file=step1/cert-chain.pem --from-file=step1/root-cert.pem --from-file=step1/ca-crl.pem --dry-run=client -o yaml | kubectl apply -f -`);
    expect(plan.out).toMatch(/--from-file=step3\/root-cert\.pem --dry-run/);

    const step1 = ok('cacerts', 'bundle', 'current', 'rooted', '--signer', 'old', '--out', 'step1');
    expect(step1).toContain('ca-crl.pem: copied from current (the old intermediate\'s folder); include it when you apply step1');
    expect(readFileSync(at('step1/ca-crl.pem'), 'utf8')).toBe(readFileSync(at('current/ca-crl.pem'), 'utf8'));
    // The old intermediate's leaves still verify with CRL checking at every level against step1's files; "retired" stays revoked.
    expect(opensslCrlVerdict(probeLeaves(ca('current')).workload, [ca('current').certPem], readFileSync(at('step1/root-cert.pem'), 'utf8'), readFileSync(at('step1/ca-crl.pem'), 'utf8'))).toBeUndefined();
    expect(revokedByRoot('retired/ca-cert.pem', 'step1/ca-crl.pem')).toMatch(/certificate revoked/);
    const step3 = ok('cacerts', 'bundle', 'current', 'rooted', '--signer', 'new', '--out', 'step3');
    expect(step3).toContain('ca-crl.pem: none, as rooted has none (the one in current is not carried over');
    expect(existsSync(at('step3/ca-crl.pem'))).toBe(false);
    rmSync(at('step3'), { recursive: true });
  });
});
