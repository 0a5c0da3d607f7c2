/**
 * Rotation without downtime, on real files (Kubernetes `..data` symlink swaps) against the real
 * server, with a real TLS client and `openssl verify` on what clients would hold at each step.
 */
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildCsrPem, decodePem, generateKeyPair } from '../src/pki/index.js';
import { SelfSignedRoot } from '../src/ca/index.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, type TestCa } from './helpers/pki.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestServer } from './helpers/server.js';
import { until } from './helpers/until.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const csr = () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function setup(files: Record<string, string>, extra: Parameters<typeof startTestServer>[0] extends infer T ? Partial<T> : never = {}) {
  const issuer = await createTestIssuer();
  const dir = tempDir('svid-ca-cacerts-');
  const volume = new SecretVolume(dir);
  volume.write(files);
  const server = await startTestServer({ cacerts: dir, issuer, reloadIntervalMs: 1000, ...extra });
  const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
  cleanups.push(() => removeDir(dir), () => server.close());
  return { issuer, dir, volume, server, token };
}

async function issueWith(server: TestServer, rootPem: string, token: string) {
  const client = clientFor(server, rootPem);
  try {
    return await call(client, { csr: csr(), validity_duration: '3600' }, { authorization: `Bearer ${token}` });
  } finally {
    client.close();
  }
}

const leafOf = (chain: string[]) => new X509Certificate(decodePem(chain[0]!)[0]!.der);

function servingCertificate(port: number, rootPem: string): Promise<DetailedPeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: rootPem, ALPNProtocols: ['h2'] }, () => {
      if (!socket.authorized) reject(new Error(`serving certificate not trusted: ${socket.authorizationError}`));
      resolve(socket.getPeerCertificate(true));
      socket.end();
    });
    socket.on('error', reject);
  });
}


describe('hot reload through a ..data symlink swap', () => {
  it('rotates the intermediate under load with zero failed requests; new leaves and the serving certificate follow within one reload interval', async () => {
    const root = makeRoot();
    const oldInt = makeIntermediate(root, { cn: 'intermediate 1' });
    const newInt = makeIntermediate(root, { cn: 'intermediate 2' });
    const { volume, server, token } = await setup(istioFiles(oldInt, [root]));
    const client = clientFor(server, root.certPem);
    cleanups.push(() => client.close());

    let stop = false;
    const failures: string[] = [];
    let issued = 0;
    const issuers = new Set<string>();
    const samples = new Map<string, string[]>();
    const worker = async () => {
      while (!stop) {
        const { res, err } = await call(client, { csr: csr(), validity_duration: '3600' }, { authorization: `Bearer ${token}` });
        if (err) failures.push(`${err.code} ${err.details}`);
        else {
          issued++;
          const issuer = leafOf(res!.cert_chain).issuer;
          issuers.add(issuer);
          samples.set(issuer, res!.cert_chain);
        }
      }
    };
    const workers = [worker(), worker(), worker(), worker()];
    await sleep(300);
    const swappedAt = Date.now();
    volume.write(istioFiles(newInt, [root]));
    const newIssuer = newInt.cert.subject;
    const seenAfter = await until('a leaf from the new intermediate', async () => {
      const { res } = await call(client, { csr: csr(), validity_duration: '3600' }, { authorization: `Bearer ${token}` });
      return res && leafOf(res.cert_chain).issuer === newIssuer ? Date.now() : undefined;
    });
    expect(seenAfter - swappedAt).toBeLessThan(1000 + 1500); // one reload interval, plus debounce and scheduling slack
    await sleep(300);
    stop = true;
    await Promise.all(workers);

    expect(failures).toEqual([]);
    expect(issued).toBeGreaterThan(10);
    expect(issuers).toEqual(new Set([oldInt.cert.subject, newInt.cert.subject]));
    // A chain from each intermediate verifies with OpenSSL (checked after the load, not inside it).
    for (const chain of samples.values()) opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!);
    const serving = await servingCertificate(server.service.grpcPort, root.certPem);
    expect(serving.issuerCertificate.fingerprint256).toBe(newInt.cert.fingerprint256);
    const metrics = (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
    expect(metrics).toMatch(/svid_ca_bundle_reloads_total\{result="success"\} 1/);
    expect(server.logs.records().some((r) => r.msg === 'signing bundle reloaded')).toBe(true);
  });
});

describe('a broken bundle is never swapped in', () => {
  const root = makeRoot();
  const good = makeIntermediate(root, { cn: 'good' });
  const cases: [string, () => Record<string, string>, RegExp][] = [
    ['half-written certificate', () => ({ ...istioFiles(good, [root]), 'ca-cert.pem': good.certPem.slice(0, 300) }), /no PEM CERTIFICATE block/],
    ['key that does not match', () => istioFiles(makeIntermediate(root), [root], good.keyPem), /does not match/],
    ['chain not verifying to the roots', () => ({ ...istioFiles(makeIntermediate(makeRoot({ cn: 'rogue' })), [root]) }), /does not chain/],
    ['expired signer', () => istioFiles(makeIntermediate(root, { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) }), [root]), /expired/],
    ['not a CA', () => istioFiles(makeIntermediate(root, { ca: false }), [root]), /not a CA/],
    ['missing key file', () => {
      const f = istioFiles(makeIntermediate(root), [root]);
      delete (f as Record<string, string | undefined>)['ca-key.pem'];
      return f;
    }, /missing/],
  ];
  it.each(cases)('%s: keeps serving with the old bundle, stays ready, logs the file and problem', async (_name, files, problem) => {
    const { volume, server, token } = await setup(istioFiles(good, [root]));
    volume.write(files());
    const refused = await until('the reload to be refused', () =>
      server.logs.records().find((r) => r.msg === 'cacerts reload refused; still serving with the current bundle'),
    );
    expect(String(refused.problem)).toMatch(problem);
    expect(String(refused.file)).toContain(server.options.cacerts);
    const { res, err } = await issueWith(server, root.certPem, token);
    expect(err).toBeUndefined();
    expect(leafOf(res!.cert_chain).issuer).toBe(good.cert.subject);
    expect((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/readyz`)).status).toBe(200);
    expect((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body).toMatch(/svid_ca_bundle_reloads_total\{result="failure"\} [1-9]/);
    // And a good bundle after the bad one is picked up.
    const next = makeIntermediate(root, { cn: 'fixed' });
    volume.write(istioFiles(next, [root]));
    await until('the fixed bundle', async () => {
      const r = await issueWith(server, root.certPem, token);
      return r.res && leafOf(r.res.cert_chain).issuer === next.cert.subject ? true : undefined;
    });
  });
});

describe('root rotation through a multi-root bundle', () => {
  it('old+new roots, then the new intermediate, then the new root only: every step verifies against what clients hold', async () => {
    const oldRoot = makeRoot({ cn: 'root 1' });
    const newRoot = makeRoot({ cn: 'root 2' });
    const oldInt = makeIntermediate(oldRoot, { cn: 'intermediate under root 1' });
    const newInt = makeIntermediate(newRoot, { cn: 'intermediate under root 2' });
    const { volume, server, token } = await setup(istioFiles(oldInt, [oldRoot]));
    const waitForRoots = (pem: string) =>
      until('the root bundle', async () => {
        const r = await issueWith(server, oldRoot.certPem + newRoot.certPem, token);
        return r.res?.cert_chain.at(-1) === pem ? r.res : undefined;
      });

    // Step 1: add the new root. Clients still hold only the old root; leaves still come from the old intermediate.
    volume.write(istioFiles(oldInt, [oldRoot, newRoot]));
    const step1 = await waitForRoots(oldRoot.certPem + newRoot.certPem);
    opensslVerify(oldRoot.certPem, step1.cert_chain.slice(1, -1), step1.cert_chain[0]!);
    const added = server.logs.records().find((r) => r.msg === 'signing bundle reloaded');
    expect(JSON.stringify(added?.rootsAdded)).toContain('root 2');

    // Step 2: switch to the new intermediate; clients hold old+new.
    volume.write({ ...istioFiles(newInt, [newRoot]), 'root-cert.pem': oldRoot.certPem + newRoot.certPem });
    const step2 = await until('the new intermediate', async () => {
      const r = await issueWith(server, oldRoot.certPem + newRoot.certPem, token);
      return r.res && leafOf(r.res.cert_chain).issuer === newInt.cert.subject ? r.res : undefined;
    });
    opensslVerify(oldRoot.certPem + newRoot.certPem, step2.cert_chain.slice(1, -1), step2.cert_chain[0]!);

    // Step 3: remove the old root; clients hold the new root only.
    volume.write(istioFiles(newInt, [newRoot]));
    const step3 = await waitForRoots(newRoot.certPem);
    opensslVerify(newRoot.certPem, step3.cert_chain.slice(1, -1), step3.cert_chain[0]!);
    const removed = server.logs.records().filter((r) => r.msg === 'signing bundle reloaded').at(-1);
    expect(JSON.stringify(removed?.rootsRemoved)).toContain('root 1');
  });

  it('refuses a full root swap unless --allow-root-replacement', async () => {
    const oldRoot = makeRoot({ cn: 'root A' });
    const newRoot = makeRoot({ cn: 'root B' });
    const { volume, server, token } = await setup(istioFiles(makeIntermediate(oldRoot), [oldRoot]));
    volume.write(istioFiles(makeIntermediate(newRoot), [newRoot]));
    const refused = await until('the refusal', () => server.logs.records().find((r) => r.msg === 'cacerts reload refused; still serving with the current bundle'));
    expect(String(refused.problem)).toMatch(/shares no root.*--allow-root-replacement/);
    expect((await issueWith(server, oldRoot.certPem, token)).err).toBeUndefined();

    const allowed = await setup(istioFiles(makeIntermediate(oldRoot), [oldRoot]), { allowRootReplacement: true });
    const newInt = makeIntermediate(newRoot);
    allowed.volume.write(istioFiles(newInt, [newRoot]));
    await until('the replaced root', async () => {
      const r = await issueWith(allowed.server, newRoot.certPem, allowed.token);
      return r.res?.cert_chain.at(-1) === newRoot.certPem ? true : undefined;
    });
  });
});

describe('serving certificate renewal', () => {
  it('renews on its own; a long-lived connection keeps working and new connections see the new certificate', async () => {
    const root = makeRoot();
    const int = makeIntermediate(root);
    const { server, token } = await setup(istioFiles(int, [root]), { servingCertTtlMs: 3000, servingCertGrace: { fraction: 0.5 } });
    const client = clientFor(server, root.certPem);
    cleanups.push(() => client.close());
    const first = await servingCertificate(server.service.grpcPort, root.certPem);
    expect((await call(client, { csr: csr() }, { authorization: `Bearer ${token}` })).err).toBeUndefined();
    const renewed = await until(
      'a renewed serving certificate',
      async () => {
        const now = await servingCertificate(server.service.grpcPort, root.certPem);
        return now.serialNumber !== first.serialNumber ? now : undefined;
      },
      6000,
    );
    expect(renewed.issuerCertificate.fingerprint256).toBe(int.cert.fingerprint256);
    // The same client (same HTTP/2 connection) keeps working across renewals.
    await sleep(1800);
    expect((await call(client, { csr: csr() }, { authorization: `Bearer ${token}` })).err).toBeUndefined();
    expect(server.logs.records().filter((r) => r.msg === 'serving certificate renewed').length).toBeGreaterThanOrEqual(2);
  });
});

describe('self-signed mode', () => {
  it('re-issues the root with the same key at the grace point; leaves issued before still verify', async () => {
    const dir = tempDir('svid-ca-selfsigned-');
    cleanups.push(() => removeDir(dir));
    const issuer = await createTestIssuer();
    const server = await startTestServer({
      cacerts: '/nonexistent',
      issuer,
      selfSigned: { dir, ttlMs: 10 * 86_400_000, key: 'ec-p256', gracePercentile: 20, checkIntervalMs: 0 },
    });
    cleanups.push(() => server.close());
    const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    const before = server.service.authority.bundle.rootsPem;
    const client = clientFor(server, before);
    const { res } = await call(client, { csr: csr(), validity_duration: String(Math.round(9.5 * 86_400)) }, { authorization: `Bearer ${token}` });
    client.close();
    expect(res!.cert_chain).toHaveLength(2); // [leaf, root], as istiod's self-signed CA answers
    const oldLeaf = res!.cert_chain[0]!;

    const selfSigned = new SelfSignedRoot({ dir, ttlMs: 10 * 86_400_000, key: 'ec-p256', organization: 'cluster.local', gracePercentile: 20, checkIntervalMs: 0 });
    expect(selfSigned.rotateIfDue(server.service.authority, new Date(Date.now() + 7 * 86_400_000))).toBe(false);
    expect(selfSigned.rotateIfDue(server.service.authority, new Date(Date.now() + 8.5 * 86_400_000))).toBe(true);
    const after = server.service.authority.bundle.rootsPem;
    expect(after).not.toBe(before);
    const [a, b] = [new X509Certificate(before), new X509Certificate(after)];
    expect(a.publicKey.export({ format: 'der', type: 'spki' }).equals(b.publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
    expect(b.subject).toBe(a.subject);
    // Checked at the moment of rotation: the new root is valid from then, the old leaf still is.
    opensslVerify(after, [], oldLeaf, ['-attime', String(Math.floor(Date.now() / 1000 + 8.6 * 86_400))]);
    const { statSync, readFileSync } = await import('node:fs');
    expect(statSync(join(dir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'root-cert.pem'), 'utf8')).toBe(after);
  });
});
