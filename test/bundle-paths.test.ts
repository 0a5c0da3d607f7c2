/**
 * Issue #11: a signing bundle is accepted only if real clients accept what it signs. Every fixture
 * is made with the openssl CLI exactly as the issue's reproductions describe it, judged by
 * `openssl verify -x509_strict -purpose sslclient|sslserver` on probe leaves, and svid-ca's
 * verdict must agree with OpenSSL's: in-process, at start (`serve` exits 1 with one line), in
 * `cacerts verify` (exit 1, the same line) and at reload (refused, the old bundle keeps serving,
 * /readyz stays ready). One server process serves every reload case.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authority, loadCacerts } from '../src/ca/index.js';
import { BundleError, buildCsrPem, decodePem, generateKeyPair, parseCsrPem } from '../src/pki/index.js';
import { loadServices } from '../src/server/proto.js';
import { warnAboutSigner } from '../src/server/lifecycle.js';
import type { Logger } from '../src/observability/index.js';
import { opensslCa, opensslVerdict, STDEXT } from './helpers/openssl-ca.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts, type TestCa } from './helpers/pki.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';

const run = promisify(execFile);
const work = tempDir('svid-ca-bundle-paths-');

/** STDEXT with its basicConstraints or keyUsage line replaced, or with lines added. */
const ext = {
  pathlen0: ['basicConstraints=critical,CA:TRUE,pathlen:0', ...STDEXT.slice(1)],
  ekuServerOnly: [...STDEXT, 'extendedKeyUsage=serverAuth'],
  ekuBoth: [...STDEXT, 'extendedKeyUsage=serverAuth,clientAuth'],
  ncUriOther: [...STDEXT, 'nameConstraints=critical,permitted;URI:example.org'],
  ncUriTrustDomain: [...STDEXT, 'nameConstraints=critical,permitted;URI:cluster.local'],
  ncDnsOther: [...STDEXT, 'nameConstraints=critical,permitted;DNS:example.org'],
  ncUriExcluded: [...STDEXT, 'nameConstraints=critical,excluded;URI:cluster.local'],
  unknownCritical: [...STDEXT, '1.2.3.4=critical,ASN1:UTF8String:svid-ca test'],
  noKeyCertSign: [STDEXT[0]!, 'keyUsage=critical,cRLSign,digitalSignature', ...STDEXT.slice(2)],
  ncDirNameOther: [...STDEXT, 'nameConstraints=critical,permitted;dirName:dir_sect', '[dir_sect]', 'O=another organization'],
};

type Position = 'root' | 'upper intermediate' | 'signer';
const FILE_OF: Record<Position, string> = { root: 'root-cert.pem', 'upper intermediate': 'cert-chain.pem', signer: 'ca-cert.pem' };

interface Fixture {
  files: Record<string, string>;
  signer: TestCa;
  /** Certificates between leaf and root, for openssl's -untrusted. */
  untrusted: string[];
  rootsPem: string;
  /** undefined: accepted. Otherwise the file at fault, the rule, and the CN of the certificate named. */
  refused?: { file: string; rule: RegExp; cn: string };
  /** The response chain expected after the leaf (each element one PEM; the root bundle last). */
  response?: string[];
}

const istio = (signer: TestCa, chain: TestCa[], roots: TestCa[]) => ({
  'ca-cert.pem': signer.certPem,
  'ca-key.pem': signer.keyPem,
  'cert-chain.pem': chain.map((c) => c.certPem).join(''),
  'root-cert.pem': roots.map((r) => r.certPem).join(''),
});

/** The rule's extensions on one certificate of root -> [upper intermediate] -> signer; the others are STDEXT. */
function placed(rule: keyof typeof ext, at: Position, refused?: RegExp): Fixture {
  const cn = `${rule} on the ${at}`;
  const root = opensslCa(work, at === 'root' ? cn : `root for ${cn}`, at === 'root' ? ext[rule] : STDEXT, undefined, { days: 3650 });
  const upper = at === 'upper intermediate' ? opensslCa(work, cn, ext[rule], root) : undefined;
  const signer = opensslCa(work, at === 'signer' ? cn : `signer for ${cn}`, at === 'signer' ? ext[rule] : STDEXT, upper ?? root);
  const chain = upper ? [signer, upper, root] : [signer, root];
  return {
    files: istio(signer, chain, [root]),
    signer,
    untrusted: chain.slice(0, -1).map((c) => c.certPem),
    rootsPem: root.certPem,
    refused: refused && { file: FILE_OF[at], rule: refused, cn },
    response: [...chain.map((c) => c.certPem), root.certPem],
  };
}

const PATHLEN = /has pathLenConstraint 0 but 1 intermediate CA below it: clients reject every chain \(path length constraint exceeded\)/;
const EKU = /limits extended key usage to serverAuth: .*clientAuth not allowed/;
const NC = /has name constraints that the (workload SVID|serving certificate) .*breaks/;
const CRITICAL = /has critical extension 1\.2\.3\.4, which OpenSSL and Go do not process/;
const KEY_CERT_SIGN = /lacks the keyCertSign key usage/;

const fixtures: Record<string, () => Fixture> = {
  'STDEXT root -> signer (good)': () => placed('ekuBoth', 'root'),
  // 1. Path length, at each position (on the signer it limits nothing below a leaf).
  'case 1: pathlen:0 on the upper intermediate': () => placed('pathlen0', 'upper intermediate', PATHLEN),
  'pathlen:0 on the root': () => placed('pathlen0', 'root', PATHLEN),
  'pathlen:0 on the signer (good)': () => placed('pathlen0', 'signer'),
  // 2. Extended key usage nesting.
  'case 2: extendedKeyUsage=serverAuth on the signer': () => placed('ekuServerOnly', 'signer', EKU),
  'extendedKeyUsage=serverAuth on the upper intermediate': () => placed('ekuServerOnly', 'upper intermediate', EKU),
  'extendedKeyUsage=serverAuth on the root': () => placed('ekuServerOnly', 'root', EKU),
  'extendedKeyUsage=serverAuth,clientAuth on the signer (good)': () => placed('ekuBoth', 'signer'),
  // 3. Name constraints: URI and DNS, permitted and excluded.
  'case 3: permitted URI:example.org on the signer': () => placed('ncUriOther', 'signer', NC),
  'permitted URI:example.org on the upper intermediate': () => placed('ncUriOther', 'upper intermediate', NC),
  'permitted URI:example.org on the root': () => placed('ncUriOther', 'root', NC),
  'permitted URI:cluster.local on the signer (good)': () => placed('ncUriTrustDomain', 'signer'),
  'permitted URI:cluster.local on the root (good)': () => placed('ncUriTrustDomain', 'root'),
  'permitted DNS:example.org on the signer (serving names)': () => placed('ncDnsOther', 'signer', NC),
  'excluded URI:cluster.local on the upper intermediate': () => placed('ncUriExcluded', 'upper intermediate', NC),
  // Unknown critical extensions.
  'unknown critical extension on the signer': () => placed('unknownCritical', 'signer', CRITICAL),
  'unknown critical extension on the upper intermediate': () => placed('unknownCritical', 'upper intermediate', CRITICAL),
  'unknown critical extension on the root': () => placed('unknownCritical', 'root', CRITICAL),
  // CA:TRUE without keyCertSign (issue #20's surviving mutation, at every position).
  'CA:TRUE without keyCertSign on the signer': () => placed('noKeyCertSign', 'signer', KEY_CERT_SIGN),
  'CA:TRUE without keyCertSign on the upper intermediate': () => placed('noKeyCertSign', 'upper intermediate', KEY_CERT_SIGN),
  'CA:TRUE without keyCertSign on the root': () => placed('noKeyCertSign', 'root', KEY_CERT_SIGN),
  // A rule only pkijs' own RFC 5280 run sees (the signing certificate's subject outside the root's
  // permitted directory names; the probe leaves have empty subjects): refused naming the path's root.
  'permitted dirName:O=another organization on the root': () => placed('ncDirNameOther', 'root', /does not validate to root .* as RFC 5280 clients check it \(Failed to meet "permitted sub-trees" name constraint\)/),
  // The Kubernetes TLS layout: tls.crt = signer + upper intermediate, ca.crt = root.
  'Kubernetes TLS layout, pathlen:0 on the upper intermediate': () => {
    const f = placed('pathlen0', 'upper intermediate', PATHLEN);
    const [signerPem, upperPem] = f.untrusted as [string, string];
    const files = { 'tls.crt': signerPem + upperPem, 'tls.key': f.signer.keyPem, 'ca.crt': f.rootsPem };
    return { ...f, files, refused: { ...f.refused!, file: 'tls.crt' } };
  },
  // 4. The root signs directly, empty chain file, root bundle with another root: istiod's layout, accepted.
  'case 4: root signer, empty cert-chain.pem (good)': () => {
    const rootA = opensslCa(work, 'case 4 root A', STDEXT, undefined, { days: 3650 });
    const other = opensslCa(work, 'case 4 other root', STDEXT, undefined, { days: 3650 });
    const files = { ...istio(rootA, [], [rootA, other]), 'cert-chain.pem': '' };
    return { files, signer: rootA, untrusted: [], rootsPem: rootA.certPem + other.certPem, response: [rootA.certPem + other.certPem] };
  },
  // 5. Chain file in reverse order: answered leaf to root, each certificate once.
  'case 5: cert-chain.pem root, int1, int2 (good)': () => {
    const rootA = opensslCa(work, 'case 5 root A', STDEXT, undefined, { days: 3650 });
    const int1 = opensslCa(work, 'case 5 int1', STDEXT, rootA);
    const int2 = opensslCa(work, 'case 5 int2', STDEXT, int1);
    return {
      files: istio(int2, [rootA, int1, int2], [rootA]),
      signer: int2,
      untrusted: [int2.certPem, int1.certPem],
      rootsPem: rootA.certPem,
      response: [int2.certPem, int1.certPem, rootA.certPem, rootA.certPem],
    };
  },
};

let issuer: TestIssuer;
let server: TestServer;
let volume: SecretVolume;
let health: { Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void; close(): void };
const base = makeRoot({ cn: 'reload base root' });
const baseSigner = makeIntermediate(base, { cn: 'reload base signer' });

beforeAll(async () => {
  issuer = await createTestIssuer();
  volume = new SecretVolume(join(work, 'volume'));
  volume.write(istio(baseSigner, [baseSigner, base], [base]));
  // A poll an hour apart: each reload here is forced with checkNow(), right after the swap.
  server = await startTestServer({ cacerts: join(work, 'volume'), issuer, reloadIntervalMs: 3_600_000, allowRootReplacement: true });
});
afterAll(async () => {
  health?.close();
  await server?.close();
  removeDir(work);
});

const readyz = async () => (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/readyz`)).status;
const metrics = async () => (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
const failures = async () => Number(/svid_ca_bundle_reloads_total\{result="failure"\} (\d+)/.exec(await metrics())?.[1] ?? 0);

function serveArgs(dir: string): string[] {
  return ['dist/cli.js', 'serve', '--cacerts', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0'];
}

async function runCli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, args, { encoding: 'utf8', timeout: 30_000 });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('svid-ca agrees with OpenSSL on every fixture: in-process, at start, in cacerts verify, at reload', () => {
  it.each(Object.keys(fixtures))('%s', async (name) => {
    const f = fixtures[name]!();
    const dir = join(work, name.replace(/[^a-z0-9]+/gi, '-'));
    mkdirSync(dir);
    for (const [file, text] of Object.entries(f.files)) writeFileSync(join(dir, file), text, { mode: file.includes('key') ? 0o600 : 0o644 });

    // OpenSSL's verdict on probe leaves, as a client would judge what the bundle issues.
    const verdict = opensslVerdict(f.signer, f.untrusted, f.rootsPem);
    expect(verdict === undefined, `openssl: ${verdict}`).toBe(f.refused === undefined);

    // In-process load: refused with the file, the certificate (subject and SKI) and the rule.
    let error: unknown;
    try {
      loadCacerts(dir);
    } catch (err) {
      error = err;
    }
    const verifyRun = runCli(['dist/cli.js', 'cacerts', 'verify', dir]);
    const serveRun = f.refused ? runCli(serveArgs(dir)) : undefined;
    if (f.refused) {
      expect(error, 'refused in-process').toBeInstanceOf(BundleError);
      const e = error as BundleError;
      expect(e.file).toBe(join(dir, f.refused.file));
      expect(e.problem).toMatch(f.refused.rule);
      expect(e.problem).toContain(`CN=${f.refused.cn}"`);
      expect(e.problem).toMatch(/\(SKI [0-9a-f]{40}\)/);
      expect(e.message.split('\n')).toHaveLength(1);
      // cacerts verify: exit 1, the same line.
      const v = await verifyRun;
      expect(v.status).toBe(1);
      expect(v.stdout).toContain(`REJECTED: ${e.message}`);
      // serve: exit 1 with exactly that one line.
      const s = await serveRun!;
      expect(s.status).toBe(1);
      expect(s.stderr.trim().split('\n')).toEqual([`svid-ca: ${e.message}`]);
    } else {
      expect(error, 'accepted in-process').toBeUndefined();
      const v = await verifyRun;
      expect(v.status, v.stdout).toBe(0);
      expect(v.stdout).toContain('OK: svid-ca serve would accept');
      expect(v.stdout).toContain('paths validated for SVIDs of trust domain cluster.local and serving DNS svid-ca.istio-system.svc, localhost');
      // Accepted name constraints still get the ztunnel (webpki) warning.
      if (name.includes('URI:cluster.local')) expect(v.stdout).toMatch(/warning: certificate .* carries name constraints; ztunnel/);
    }

    // Reload into the one running server.
    const before = server.service.authority.bundle;
    const failed = await failures();
    volume.write(f.files);
    const r = server.service.lifecycle.checkNow();
    if (f.refused) {
      expect(r?.result).toBe('failure');
      expect(r?.result === 'failure' && r.error.message).toBe((error as Error).message.replace(dir, join(work, 'volume')));
      expect(server.service.authority.bundle).toBe(before);
      expect(await readyz()).toBe(200);
      expect(await failures()).toBeGreaterThan(failed);
      const log = server.logs.records().filter((l) => l.msg === 'cacerts reload refused; still serving with the current bundle').at(-1);
      expect(String(log?.problem)).toMatch(f.refused.rule);
    } else {
      expect(r?.result, r?.result === 'failure' ? r.error.message : '').toBe('success');
      expect(await readyz()).toBe(200);
      // A real call: the response is leaf to root, each certificate once, and verifies with OpenSSL.
      const client = clientFor(server, f.rootsPem);
      try {
        const token = await issuer.token({ namespace: 'default', serviceAccount: 'web' });
        const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/default/sa/web' }] });
        const { res, err } = await call(client, { csr, validity_duration: '3600' }, { authorization: `Bearer ${token}` });
        expect(err).toBeUndefined();
        const chain = res!.cert_chain;
        expect(chain.slice(1)).toEqual(f.response);
        expect(chain.length).toBeGreaterThanOrEqual(2);
        const ders = chain.slice(0, -1).map((p) => new X509Certificate(decodePem(p)[0]!.der).fingerprint256);
        expect(new Set(ders).size).toBe(ders.length);
        for (const purpose of ['sslclient', 'sslserver']) {
          expect(opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!, ['-x509_strict', '-purpose', purpose])).toContain('OK');
        }
      } finally {
        client.close();
      }
    }
  });
});

describe('the probe names follow serve: --trust-domain and --serving-dns', () => {
  it('cacerts verify, cacerts bundle, serve and reload judge a name-constrained bundle for the names given', async () => {
    const f = placed('ncUriTrustDomain', 'signer');
    const dns = placed('ncDnsOther', 'signer');
    const dir = join(work, 'names-uri');
    const dnsDir = join(work, 'names-dns');
    for (const [d, fx] of [[dir, f], [dnsDir, dns]] as const) {
      mkdirSync(d);
      for (const [file, text] of Object.entries(fx.files)) writeFileSync(join(d, file), text);
    }
    // OpenSSL's view for the other trust domain and for DNS names inside example.org.
    expect(opensslVerdict(f.signer, f.untrusted, f.rootsPem, 'spiffe://example.org/ns/default/sa/probe')).toMatch(/permitted subtree violation/);
    expect(opensslVerdict(dns.signer, dns.untrusted, dns.rootsPem, undefined, ['ca.example.org'])).toBeUndefined();

    const other = await runCli(['dist/cli.js', 'cacerts', 'verify', dir, '--trust-domain', 'example.org']);
    expect(other.status).toBe(1);
    expect(other.stdout).toMatch(/REJECTED: .*ca-cert\.pem: certificate .* has name constraints that the workload SVID \(spiffe:\/\/example\.org\/ns\/istio-system\/sa\/svid-ca-probe\) breaks/);
    expect((await runCli(['dist/cli.js', 'cacerts', 'verify', dir])).status).toBe(0);
    expect((await runCli(['dist/cli.js', 'cacerts', 'verify', dnsDir])).status).toBe(1);
    expect((await runCli(['dist/cli.js', 'cacerts', 'verify', dnsDir, '--serving-dns', 'ca.example.org'])).status).toBe(0);
    const bundled = await runCli(['dist/cli.js', 'cacerts', 'bundle', dir, dir, '--out', join(work, 'names-bundle'), '--signer', 'new', '--trust-domain', 'example.org']);
    expect(bundled.status).toBe(1);
    expect(bundled.stdout).toMatch(/REJECTED: .*name constraints/);
    expect(existsSync(join(work, 'names-bundle'))).toBe(false);

    const serve = await runCli([...serveArgs(dir), '--trust-domain', 'example.org']);
    expect(serve.status).toBe(1);
    expect(serve.stderr).toMatch(/^svid-ca: .*ca-cert\.pem: certificate .* has name constraints that the workload SVID \(spiffe:\/\/example\.org\//);

    // A server of another trust domain refuses the same files at reload.
    const vol = new SecretVolume(join(work, 'names-volume'));
    vol.write(istio(baseSigner, [baseSigner, base], [base]));
    const s = await startTestServer({ cacerts: join(work, 'names-volume'), issuer, trustDomain: 'example.org', reloadIntervalMs: 3_600_000, allowRootReplacement: true });
    try {
      vol.write(f.files);
      const r = s.service.lifecycle.checkNow();
      expect(r?.result === 'failure' && r.error.message).toMatch(/name constraints that the workload SVID \(spiffe:\/\/example\.org\//);
      expect((await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/readyz`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe('a chain file that lacks the signing certificate (issue #20)', () => {
  it('still gets the signer first in every response: the issued chain verifies with openssl', async () => {
    const root = makeRoot({ cn: 'lacks-signer root' });
    const mid = makeIntermediate(root, { cn: 'lacks-signer mid' });
    const signer = makeIntermediate(mid, { cn: 'lacks-signer signer' });
    const dir = writeCacerts(join(work, 'lacks-signer'), { signer, intermediates: [mid], roots: [root] });
    writeFileSync(join(dir, 'cert-chain.pem'), mid.certPem + root.certPem);
    const bundle = loadCacerts(dir);
    const csr = parseCsrPem(buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/default/sa/web' }] }));
    const chain = (await new Authority(bundle, { defaultTtlMs: 3_600_000, maxTtlMs: 3_600_000 }).issueCertificate({ identity: 'spiffe://cluster.local/ns/default/sa/web', csr, requestedTtlSeconds: 3600n })).certChain;
    expect(chain.slice(1)).toEqual([signer.certPem, mid.certPem, root.certPem, root.certPem]);
    expect(opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
  });
});

describe('readiness tells the truth', () => {
  it('an intermediate of the path that expires while running turns /readyz and gRPC health NOT_SERVING', async () => {
    const root = makeRoot({ cn: 'readiness root', notBefore: new Date(Date.now() - 86_400_000) });
    const upper = makeIntermediate(root, { cn: 'readiness upper expired', notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 60_000) });
    const signer = makeIntermediate(upper, { cn: 'readiness signer valid', notBefore: new Date(Date.now() - 7200_000) });
    const dir = writeCacerts(join(work, 'readiness'), { signer, intermediates: [upper], roots: [root] });
    // Loaded as seen from before the upper intermediate expired: it was valid then, it is not now.
    const expiring = loadCacerts(dir, new Date(Date.now() - 3600_000));
    expect(expiring.validity.notAfter.getTime()).toBe(new Date(upper.cert.validTo).getTime());
    expect(() => loadCacerts(dir)).toThrow(/readiness upper expired.*expired at/);

    const { health: Health } = loadServices();
    health = new Health(server.address, grpc.credentials.createSsl(Buffer.from(server.service.authority.bundle.rootsPem))) as unknown as typeof health;
    const check = () => new Promise<string | undefined>((r) => health.Check({ service: '' }, (_err, res) => r(res?.status)));
    const good = server.service.authority.bundle;
    expect(server.service.isReady()).toBe(true);
    // Connected before the swap: a new TLS connection would fail, as the serving certificate then
    // chains through the expired intermediate (which is the point); these stay open.
    const client = clientFor(server, server.service.authority.bundle.rootsPem);
    const token = await issuer.token({ namespace: 'default', serviceAccount: 'web' });
    const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/default/sa/web' }] });
    const sign = () => call(client, { csr, validity_duration: '3600' }, { authorization: `Bearer ${token}` });
    expect((await sign()).err).toBeUndefined();
    expect(await check()).toBe('SERVING');
    server.service.authority.replaceBundle(expiring);
    expect(server.service.isReady()).toBe(false);
    expect(await readyz()).toBe(503);
    expect(await check()).toBe('NOT_SERVING');
    // And it signs nothing clients would reject: UNAVAILABLE, as for an expired signer.
    const denied = await sign();
    expect(denied.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(denied.err?.details).toMatch(/a certificate of the signing path is not valid now/);
    server.service.authority.replaceBundle(good);
    expect(await readyz()).toBe(200);
    expect(await check()).toBe('SERVING');
    expect((await sign()).err).toBeUndefined();
    client.close();
  });
});

describe('a leaf never outlives its signing path', () => {
  it('an upper intermediate expiring before the signer clamps the issued leaf to its notAfter', async () => {
    const root = makeRoot({ cn: 'path-end root', notBefore: new Date(Date.now() - 86_400_000) });
    const upper = makeIntermediate(root, { cn: 'path-end upper (30 min left)', notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() + 1800_000) });
    const signer = makeIntermediate(upper, { cn: 'path-end signer (1 year)', notBefore: new Date(Date.now() - 7200_000) });
    const bundle = loadCacerts(writeCacerts(join(work, 'path-end'), { signer, intermediates: [upper], roots: [root] }));
    // Said at load and reload (the signer's own dates are a year away).
    const warned: string[] = [];
    warnAboutSigner({ warn: (_o: object, msg: string) => warned.push(msg) } as unknown as Logger, bundle, 90 * 86_400_000, 30 * 86_400_000);
    expect(warned).toContain('an intermediate or root above the signing certificate expires first: leaves are clamped to it and svid-ca stops issuing then; rotate it');
    const good = server.service.authority.bundle;
    server.service.authority.replaceBundle(bundle);
    const client = clientFor(server, good.rootsPem + bundle.rootsPem);
    try {
      const token = await issuer.token({ namespace: 'default', serviceAccount: 'web' });
      const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: 'spiffe://cluster.local/ns/default/sa/web' }] });
      const { res, err } = await call(client, { csr, validity_duration: '7200' }, { authorization: `Bearer ${token}` });
      expect(err).toBeUndefined();
      const leaf = new X509Certificate(decodePem(res!.cert_chain[0]!)[0]!.der);
      // What a client sees one minute after the upper intermediate expires: the chain no longer verifies.
      const after = String(Math.floor(new Date(upper.cert.validTo).getTime() / 1000) + 60);
      expect(() => opensslVerify(root.certPem, [signer.certPem, upper.certPem], res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient', '-attime', after])).toThrow(/certificate has expired/);
      // So the leaf must not claim to be valid then.
      expect(new Date(leaf.validTo).getTime()).toBeLessThanOrEqual(new Date(upper.cert.validTo).getTime());
    } finally {
      client.close();
      server.service.authority.replaceBundle(good);
    }
  });
});

describe('case 6: every encrypted private key form gets the clear message', () => {
  const signerRoot = makeRoot({ cn: 'case 6 root' });
  const signer = makeIntermediate(signerRoot, { cn: 'case 6 signer' });
  const keyFile = join(work, 'case6-plain.key');
  const rsaFile = join(work, 'case6-rsa.key');
  const openssl = async (args: string[]) => (await run('openssl', args, { encoding: 'utf8' })).stdout;
  const forms: Record<string, () => Promise<string>> = {
    'openssl ec -aes256 (traditional PEM, Proc-Type: 4,ENCRYPTED)': () => openssl(['ec', '-in', keyFile, '-aes256', '-passout', 'pass:x']),
    'openssl rsa -traditional -aes128 (Proc-Type: 4,ENCRYPTED)': async () => {
      await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', rsaFile]);
      return openssl(['rsa', '-in', rsaFile, '-traditional', '-aes128', '-passout', 'pass:x']);
    },
    'openssl pkcs8 -topk8 (ENCRYPTED PRIVATE KEY)': () => openssl(['pkcs8', '-topk8', '-in', keyFile, '-v2', 'aes-256-cbc', '-passout', 'pass:x']),
  };

  it.each(Object.keys(forms))('%s', async (name) => {
    writeFileSync(keyFile, signer.keyPem);
    const encrypted = await forms[name]!();
    expect(encrypted).toMatch(name.includes('Proc-Type') ? /Proc-Type: 4,ENCRYPTED/ : /BEGIN ENCRYPTED PRIVATE KEY/);
    const dir = writeCacerts(join(work, `case6-${Object.keys(forms).indexOf(name)}`), { signer, roots: [signerRoot], keyPem: encrypted });
    expect(() => loadCacerts(dir)).toThrow(`${join(dir, 'ca-key.pem')}: the private key is encrypted; svid-ca needs an unencrypted PKCS#1, SEC1 or PKCS#8 key`);
    const v = await runCli(['dist/cli.js', 'cacerts', 'verify', dir]);
    expect(v.status).toBe(1);
    expect(v.stdout).toContain('the private key is encrypted');
  });
});
