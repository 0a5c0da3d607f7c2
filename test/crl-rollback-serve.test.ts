/**
 * crl-safety on the running server: a `..data` swap whose ca-crl.pem holds an older CRL of an issuer (lower CRL
 * number), or a different CRL under the same number, is refused as a CRL problem naming the issuer and both numbers;
 * the CRL in use keeps serving (and still revokes what it revoked); a higher number is then accepted, and removing
 * ca-crl.pem altogether stays the way to clear the CRLs.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { opensslCa, opensslCrl, opensslCrlVerdict, probeLeaves, STDEXT } from './helpers/openssl-ca.js';
import { removeDir, tempDir } from './helpers/pki.js';
import { createTestIssuer, fetchText, startTestServer, type TestServer } from './helpers/server.js';
import { until } from './helpers/until.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
const work = tempDir('svid-ca-crl-rollback-');
afterAll(() => removeDir(work));
const root = opensslCa(work, 'crl root', STDEXT);
const intA = opensslCa(work, 'intermediate A', STDEXT, root);
const retired = opensslCa(work, 'retired intermediate', STDEXT, root);
const other = opensslCa(work, 'other intermediate', STDEXT, root);

const metrics = async (server: TestServer) => (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
const REFUSED = 'cacerts reload refused; still serving with the current bundle';
/** How every reload refusal of a CRL ends (src/ca/reloader.ts). */
const AND_ONLY_THE_CRL = '; the certificates and key of this bundle pass every other check; only the CRL is refused: fix ca-crl.pem or remove it';

describe('a CRL rollback through a ..data swap', () => {
  it('an older CRL (lower number) and a changed CRL under the same number are refused naming issuer and numbers; a higher number and removal are accepted', async () => {
    const inUse = opensslCrl(work, root, [retired.cert], { number: 2 }) + opensslCrl(work, intA, [], { number: 1 });
    const dir = tempDir('svid-ca-crl-rollback-cacerts-');
    const volume = new SecretVolume(dir);
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': inUse });
    const server = await startTestServer({ cacerts: dir, issuer: await createTestIssuer(), reloadIntervalMs: 500 });
    cleanups.push(() => removeDir(dir), () => server.close());
    const refusals = () => server.logs.records().filter((r) => r.msg === REFUSED);

    // The rollback: the root's CRL number 1, which does not revoke "retired" (OpenSSL: its leaves pass again).
    const older = opensslCrl(work, root, [], { number: 1 }) + opensslCrl(work, intA, [], { number: 1 });
    const underRetired = probeLeaves(retired).workload;
    const retiredCrl = opensslCrl(work, retired, []);
    expect(opensslCrlVerdict(underRetired, [retired.certPem], root.certPem, inUse + retiredCrl)).toMatch(/certificate revoked/);
    expect(opensslCrlVerdict(underRetired, [retired.certPem], root.certPem, older + retiredCrl)).toBeUndefined();
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': older });
    const refused = await until('the rollback refusal', () => refusals()[0]);
    expect(refused.crl).toBe(true);
    expect(String(refused.file)).toMatch(/ca-crl\.pem$/);
    // The change in the words of `cacerts verify --previous` / `plan-rotation` (describeCrlChange), then what to do.
    expect(String(refused.problem)).toBe(
      'the CRL of "O=svid-ca test, CN=crl root" goes back from number 2 to number 1: CRL numbers only increase (RFC 5280 5.2.3), so this is an older CRL' +
        `; renew it from the CRL in use with svid-ca cacerts crl --issuer <its CA's folder> --from <the ca-crl.pem in use> --out <this file>${AND_ONLY_THE_CRL}`,
    );
    expect(server.service.authority.bundle.crlPem).toBe(inUse);
    expect(server.service.authority.bundle.crls.find((c) => c.issuer === 'O=svid-ca test, CN=crl root')!.revoked).toHaveLength(1);
    // Counted as a failed reload: at least once (the poll, every 500 ms here, retries the same refused bundle and
    // counts each attempt), never as a success.
    const reloads = await metrics(server);
    expect(Number(/svid_ca_bundle_reloads_total\{result="failure"\} (\d+)/.exec(reloads)?.[1])).toBeGreaterThanOrEqual(1);
    expect(reloads).toMatch(/svid_ca_bundle_reloads_total\{result="success"\} 0/);

    // The same number with other contents (another serial revoked): refused too.
    const sameNumber = opensslCrl(work, root, [retired.cert, other.cert], { number: 2 }) + opensslCrl(work, intA, [], { number: 1 });
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': sameNumber });
    const same = await until('the same-number refusal', () => refusals().find((r) => String(r.problem).includes('keeps number')));
    expect(String(same.problem)).toBe(
      'the CRL of "O=svid-ca test, CN=crl root" keeps number 2 but revokes other serials: a changed CRL takes the next number' +
        `; renew it from the CRL in use with svid-ca cacerts crl --issuer <its CA's folder> --from <the ca-crl.pem in use> --out <this file>${AND_ONLY_THE_CRL}`,
    );
    expect(server.service.authority.bundle.crlPem).toBe(inUse);

    // Both CRLs at once (the root's back to number 1, the intermediate's number 1 revoking another serial): the
    // refusal names both, so that fixing one is not met by a second refusal.
    const both = opensslCrl(work, root, [], { number: 1 }) + opensslCrl(work, intA, [other.cert], { number: 1 });
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': both });
    const twice = await until('the two-CRL refusal', () => refusals().find((r) => String(r.problem).includes('renew them')));
    expect(String(twice.problem)).toContain('the CRL of "O=svid-ca test, CN=crl root" goes back from number 2 to number 1: CRL numbers only increase (RFC 5280 5.2.3), so this is an older CRL; ');
    expect(String(twice.problem)).toMatch(/the CRL of "[^"]+" keeps number 1 but revokes other serials: a changed CRL takes the next number; /);
    expect(String(twice.problem)).toMatch(/; renew them from the CRL in use with svid-ca cacerts crl /);
    expect(server.service.authority.bundle.crlPem).toBe(inUse);

    // The same serials re-signed under the same numbers (a later thisUpdate) are no change: accepted.
    const resigned = opensslCrl(work, root, [retired.cert], { number: 2 }) + opensslCrl(work, intA, [], { number: 1 });
    expect(resigned).not.toBe(inUse);
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': resigned });
    await until('the re-signed CRLs', () => (server.service.authority.bundle.crlPem === resigned ? true : undefined));
    // A renewal (number 3) is accepted; so is removing ca-crl.pem (clearing the CRLs is not a rollback of one).
    const renewed = opensslCrl(work, root, [retired.cert, other.cert], { number: 3 }) + opensslCrl(work, intA, [], { number: 2 });
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': renewed });
    await until('the renewal', () => (server.service.authority.bundle.crlPem === renewed ? true : undefined));
    volume.write(istioFiles(intA, [root]));
    await until('the removal', () => (server.service.authority.bundle.crlPem === '' ? true : undefined));
  }, 90_000);
});
