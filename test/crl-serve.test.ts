/**
 * Issue #16, items 2, 5 and 6 on the running server: ca-crl.pem added, changed and removed through
 * Kubernetes-style `..data` swaps is reloaded without a restart and its metric series follow; a
 * rotation whose only fault is the CRL is refused as a CRL problem; a stale CRL is used with a
 * warning; a client certificate under a revoked serial cannot renew (real gRPC over TLS).
 */
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Authority, loadCacerts } from '../src/ca/index.js';
import type { CaClient } from '../src/client/index.js';
import { runCacertsCommand } from '../src/operator/index.js';
import { buildCsrPem, generateKeyPair, parseCsrPem, privateKeyPem } from '../src/pki/index.js';
import { loadServices } from '../src/server/index.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { opensslCa, opensslCrl, opensslCrlVerdict, probeLeaves, STDEXT } from './helpers/openssl-ca.js';
import { removeDir, tempDir, writeCacerts, type TestCa } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestServer } from './helpers/server.js';
import { until } from './helpers/until.js';

const DAY = 86_400_000;
const ID = 'spiffe://cluster.local/ns/vm/sa/legacy';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

const work = tempDir('svid-ca-crl-serve-');
afterAll(() => removeDir(work));
const root = opensslCa(work, 'crl root', STDEXT);
const intA = opensslCa(work, 'intermediate A', STDEXT, root);
const intB = opensslCa(work, 'intermediate B', STDEXT, root);
const retired = opensslCa(work, 'retired intermediate', STDEXT, root);

async function setup(files: Record<string, string>, extra: Partial<Parameters<typeof startTestServer>[0]> = {}) {
  const issuer = await createTestIssuer();
  const dir = tempDir('svid-ca-crl-cacerts-');
  const volume = new SecretVolume(dir);
  volume.write(files);
  const server = await startTestServer({ cacerts: dir, issuer, reloadIntervalMs: 500, ...extra });
  cleanups.push(() => removeDir(dir), () => server.close());
  return { issuer, dir, volume, server };
}


const metrics = async (server: TestServer) => (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
const crlSeries = (text: string) => text.split('\n').filter((l) => l.startsWith('svid_ca_crl_')).sort();
const issuerLabel = (ca: TestCa) => `issuer="${(ca.cert.subject ?? '').split('\n').join(', ')}"`;

describe('ca-crl.pem on a running server', () => {
  it('added, changed and removed by ..data swaps: reloaded without a restart, metric series appear, change and disappear', async () => {
    const { volume, server } = await setup(istioFiles(intA, [root]));
    expect(crlSeries(await metrics(server))).toEqual([]);

    // A CRL at every level (issue #16): the root's and intermediate A's own.
    const crl1 = opensslCrl(work, root, [retired.cert], { number: 1 }) + opensslCrl(work, intA, [], { number: 1 });
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': crl1 });
    const added = await until('the CRL series', async () => {
      const m = await metrics(server);
      return m.includes(`svid_ca_crl_revoked_certificates{${issuerLabel(root)}} 1`) ? m : undefined;
    });
    const next = Number(new RegExp(`svid_ca_crl_next_update_timestamp_seconds\\{${issuerLabel(root)}\\} (\\d+)`).exec(added)![1]);
    expect(next).toBeGreaterThan(Date.now() / 1000 + 29 * 86400);
    expect(added).toMatch(new RegExp(`svid_ca_crl_this_update_timestamp_seconds\\{${issuerLabel(root)}\\} \\d+`));
    expect(server.logs.records().filter((r) => r.msg === 'signing bundle reloaded').at(-1)!.crls).toEqual(['CRL (issuer "O=svid-ca test, CN=crl root", number 1)', 'CRL (issuer "O=svid-ca test, CN=intermediate A", number 1)']);

    // Changed: the root's CRL now revokes two certificates, and intermediate A's CRL is renewed.
    const crl2 = opensslCrl(work, root, [retired.cert, intB.cert], { number: 2 }) + opensslCrl(work, intA, [], { number: 2 });
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': crl2 });
    await until('the changed series', async () => {
      const m = await metrics(server);
      return m.includes(`svid_ca_crl_revoked_certificates{${issuerLabel(root)}} 2`) && m.includes(`svid_ca_crl_revoked_certificates{${issuerLabel(intA)}} 0`) ? m : undefined;
    });

    // Removed: the file is gone from the Secret, so its series go at that reload.
    volume.write(istioFiles(intA, [root]));
    const removed = await until('the series to disappear', async () => {
      const m = await metrics(server);
      return crlSeries(m).length === 0 ? m : undefined;
    });
    expect(removed).toMatch(/svid_ca_bundle_reloads_total\{result="success"\} 3/);
    expect(server.service.authority.bundle.crlPem).toBe('');
    expect(server.logs.records().filter((r) => r.msg === 'signing bundle reloaded')).toHaveLength(3);
  });

  it('a rotation of the intermediate whose only fault is the CRL is refused and says exactly that; fixing the CRL completes it', async () => {
    const rootCrl = opensslCrl(work, root, [retired.cert], { number: 1 });
    const intACrl = opensslCrl(work, intA, [], { number: 5 });
    const { volume, server, issuer, dir } = await setup({ ...istioFiles(intA, [root]), 'ca-crl.pem': rootCrl + intACrl });
    // The new intermediate, with the old ca-crl.pem carried over: intermediate A's CRL has no issuer in the bundle any more.
    const staged = writeCacerts(tempDir('svid-ca-crl-next-'), { signer: intB, roots: [root] });
    cleanups.push(() => removeDir(staged));
    volume.write({ ...istioFiles(intB, [root]), 'ca-crl.pem': rootCrl + intACrl });
    const refused = await until('the refusal', () => server.logs.records().find((r) => r.msg === 'cacerts reload refused; still serving with the current bundle'));
    expect(refused.crl).toBe(true);
    expect(String(refused.file)).toMatch(/ca-crl\.pem$/);
    expect(String(refused.problem)).toContain('CRL #2 (issuer "O=svid-ca test, CN=intermediate A", number 5) is issued by no certificate of cert-chain.pem or root-cert.pem');
    expect(String(refused.problem)).toContain('the certificates and key of this bundle pass every other check; only the CRL is refused');
    expect(await metrics(server)).toMatch(/svid_ca_bundle_reloads_total\{result="failure"\} 1/);
    expect(server.service.authority.bundle.signingCert.x509.subject).toBe(intA.cert.subject);
    // The offline check of the same folder says the same.
    const lines: string[] = [];
    expect(runCacertsCommand(['verify', dir], (l) => lines.push(l))).toBe(1);
    expect(lines.join('\n')).toMatch(/^REJECTED: .*ca-crl\.pem: CRL #2 .*only the CRL is refused/m);
    // Issuance goes on with intermediate A meanwhile.
    const token = await issuer.token({ namespace: 'vm', serviceAccount: 'legacy' });
    const client = clientFor(server, root.certPem);
    cleanups.push(() => client.close());
    const { res } = await call(client, { csr: csrFor(generateKeyPair('ec-p256').privateKey), validity_duration: '3600' }, { authorization: `Bearer ${token}` });
    expect(new X509Certificate(res!.cert_chain[0]!).issuer).toBe(intA.cert.subject);

    // The root's CRL alone is refused too, as a CRL problem: clients would find no CRL of intermediate B.
    volume.write({ ...istioFiles(intB, [root]), 'ca-crl.pem': rootCrl });
    const missing = await until('the second refusal', () => server.logs.records().filter((r) => r.msg === 'cacerts reload refused; still serving with the current bundle')[1]);
    expect(missing.crl).toBe(true);
    expect(String(missing.problem)).toMatch(/^certificate "O=svid-ca test, CN=intermediate B" \(SKI [0-9a-f]+\) has no CRL in this file: .*only the CRL is refused/);
    expect(server.service.authority.bundle.signingCert.x509.subject).toBe(intA.cert.subject);
    // OpenSSL agrees on a real leaf under intermediate B: error 3 without B's CRL, accepted with it.
    const leafUnderB = probeLeaves(intB).workload;
    const intBCrl = opensslCrl(work, intB, [], { number: 1 });
    expect(opensslCrlVerdict(leafUnderB, [intB.certPem], root.certPem, rootCrl)).toMatch(/error 3 at 0 depth lookup: unable to get certificate CRL/);
    expect(opensslCrlVerdict(leafUnderB, [intB.certPem], root.certPem, rootCrl + intBCrl)).toBeUndefined();

    volume.write({ ...istioFiles(intB, [root]), 'ca-crl.pem': rootCrl + intBCrl });
    await until('the rotation', () => (server.service.authority.bundle.signingCert.x509.subject === intB.cert.subject ? true : undefined));
    const m = await metrics(server);
    expect(crlSeries(m).filter((l) => l.includes(issuerLabel(intA)))).toEqual([]);
    expect(m).toContain(`svid_ca_crl_revoked_certificates{${issuerLabel(root)}} 1`);
  });

  it('a change of ca-crl.pem alone keeps the serving certificate (same serial over TLS, "serving certificate kept"); a new signer renews it', async () => {
    const crl1 = opensslCrl(work, root, [], { number: 1 }) + opensslCrl(work, intA, [], { number: 1 });
    const { volume, server } = await setup({ ...istioFiles(intA, [root]), 'ca-crl.pem': crl1 });
    const servedSerial = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: server.service.grpcPort, servername: 'localhost', ca: root.certPem, ALPNProtocols: ['h2'] }, () => {
          const serial = socket.getPeerCertificate().serialNumber;
          socket.destroy();
          resolve(serial);
        });
        socket.on('error', reject);
      });
    const records = () => server.logs.records();
    const sameSerial = (logged: unknown, served: string) => String(logged).replace(/^0+/, '').toLowerCase() === served.replace(/^0+/, '').toLowerCase();
    const before = await servedSerial();
    const renewedBefore = records().filter((r) => r.msg === 'serving certificate renewed').length;

    // Only the CRLs change (both renewed, one revoking a certificate): the same signing certificate, chain and roots.
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': opensslCrl(work, root, [retired.cert], { number: 2 }) + opensslCrl(work, intA, [], { number: 2 }) });
    const kept = await until('the CRL-only reload', () => records().find((r) => r.msg === 'serving certificate kept'));
    expect(records().filter((r) => r.msg === 'signing bundle reloaded').at(-1)!.crls).toEqual(['CRL (issuer "O=svid-ca test, CN=crl root", number 2)', 'CRL (issuer "O=svid-ca test, CN=intermediate A", number 2)']);
    expect(sameSerial(kept.serial, before)).toBe(true);
    expect(records().filter((r) => r.msg === 'serving certificate renewed')).toHaveLength(renewedBefore);
    expect(await servedSerial()).toBe(before);

    // A new signing certificate (intermediate B) does renew it, for that reason.
    volume.write({ ...istioFiles(intB, [root]), 'ca-crl.pem': opensslCrl(work, root, [retired.cert], { number: 3 }) + opensslCrl(work, intB, [], { number: 1 }) });
    const renewed = await until('the renewal', () => records().filter((r) => r.msg === 'serving certificate renewed')[renewedBefore]);
    expect(renewed.reason).toBe('signing bundle changed');
    const after = await servedSerial();
    expect(after).not.toBe(before);
    expect(sameSerial(renewed.serial, after)).toBe(true);
  }, 60_000);

  it('a stale CRL (past nextUpdate) is used: the server starts, warns, and the metric shows nextUpdate in the past', async () => {
    const stale = opensslCrl(work, root, [retired.cert], { lastUpdate: new Date(Date.now() - 40 * DAY), nextUpdate: new Date(Date.now() - DAY) }) + opensslCrl(work, intA, []);
    const { server } = await setup({ ...istioFiles(intA, [root]), 'ca-crl.pem': stale });
    const warning = server.logs.records().find((r) => r.msg === 'a CRL of ca-crl.pem is past its nextUpdate: it is still used and published, but clients may treat it as stale; renew it (svid-ca cacerts crl) and apply it');
    expect(warning).toMatchObject({ level: 40, issuer: 'O=svid-ca test, CN=crl root' });
    const next = Number(new RegExp(`svid_ca_crl_next_update_timestamp_seconds\\{${issuerLabel(root)}\\} (\\d+)`).exec(await metrics(server))![1]);
    expect(next).toBeLessThan(Date.now() / 1000);
    expect(server.service.authority.bundle.crlPem).toBe(stale);
    expect(server.service.authority.bundle.crls).toHaveLength(2);
  });
});

const csrFor = (privateKey: ReturnType<typeof generateKeyPair>['privateKey']) => buildCsrPem({ privateKey, sans: [{ type: 'uri', value: ID }], subjectOrganization: '' });

/** An SVID for ID issued by `signer` under `root` (through svid-ca's own Authority), and the chain a client presents. */
async function svid(signer: TestCa): Promise<{ keyPem: string; chainPem: string; leaf: X509Certificate }> {
  const dir = writeCacerts(tempDir('svid-ca-crl-svid-'), { signer, roots: [root] });
  try {
    const authority = new Authority(loadCacerts(dir), { defaultTtlMs: 3_600_000, maxTtlMs: 3_600_000 });
    const { privateKey } = generateKeyPair('ec-p256');
    const issued = await authority.issueCertificate({ identity: ID, csr: parseCsrPem(csrFor(privateKey)), requestedTtlSeconds: 3600n });
    return { keyPem: privateKeyPem(privateKey), chainPem: issued.certChain.slice(0, -1).join(''), leaf: new X509Certificate(issued.certChain[0]!) };
  } finally {
    removeDir(dir);
  }
}

describe('client-certificate renewal (--client-cert-auth) and the CRLs', () => {
  it('a certificate whose chain holds a revoked serial is UNAUTHENTICATED with the reason; OpenSSL agrees; others renew', async () => {
    const { volume, server } = await setup(istioFiles(intA, [root]), { clientCertAuth: true });
    const clients: CaClient[] = [];
    cleanups.push(() => clients.forEach((c) => c.close()));
    const renew = (cert: { keyPem: string; chainPem: string }) => {
      const { ca } = loadServices();
      const c = new ca(server.address, grpc.credentials.createSsl(Buffer.from(root.certPem), Buffer.from(cert.keyPem), Buffer.from(cert.chainPem))) as unknown as CaClient;
      clients.push(c);
      return call(c, { csr: csrFor(generateKeyPair('ec-p256').privateKey), validity_duration: '3600', metadata: { fields: {} } });
    };
    const stolen = await svid(intA);
    const honest = await svid(intA);
    const underRetired = await svid(retired);
    // Before any CRL, all three renew (the retired intermediate still chains to the root).
    for (const c of [stolen, honest, underRetired]) expect((await renew(c)).err).toBeUndefined();

    const crl = opensslCrl(work, root, [retired.cert], { number: 1 }) + opensslCrl(work, intA, [stolen.leaf], { number: 1 });
    expect(opensslCrlVerdict(stolen.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!, [intA.certPem], root.certPem, crl)).toMatch(/certificate revoked/);
    expect(opensslCrlVerdict(underRetired.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]!, [retired.certPem], root.certPem, crl + opensslCrl(work, retired, []))).toMatch(/certificate revoked/);
    volume.write({ ...istioFiles(intA, [root]), 'ca-crl.pem': crl });
    await until('the CRLs to load', () => (server.service.authority.bundle.crls.length === 2 ? true : undefined));

    const refusedLeaf = await renew(stolen);
    expect(refusedLeaf.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    const serial = stolen.leaf.serialNumber.toLowerCase().replace(/^(00)+(?=..)/, '');
    expect(refusedLeaf.err?.details).toContain(`client certificate not accepted: its chain holds a revoked certificate: certificate "(empty subject)" serial ${serial} is revoked by CRL (issuer "O=svid-ca test, CN=intermediate A", number 1)`);
    const refusedIntermediate = await renew(underRetired);
    expect(refusedIntermediate.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(refusedIntermediate.err?.details).toContain('certificate "O=svid-ca test, CN=retired intermediate" serial');
    expect(refusedIntermediate.err?.details).toContain('is revoked by CRL (issuer "O=svid-ca test, CN=crl root", number 1) (reason keyCompromise');
    expect((await renew(honest)).err).toBeUndefined();
  });
});
