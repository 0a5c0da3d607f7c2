/**
 * issue #18, part 1: --jwt-issuers-file. Two clusters' token issuers with their own keys and trust
 * domains, served by one svid-ca over real gRPC/TLS; tokens routed by iss, clusterid checked
 * against the issuer's cluster, chains verified by openssl; the file followed through Kubernetes
 * `..data` swaps, a bad file refused with the current issuers kept.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwtIssuers, parseIssuersFile } from '../src/auth/index.js';
import type { CaClient } from '../src/client/index.js';
import { buildCsrPem, decodePem, generateKeyPair } from '../src/pki/index.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { makeCacerts, opensslVerify, removeDir, tempDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';
import { waitFor } from './helpers/fake-kube-api.js';

const ISS_A = 'https://oidc.cluster-a.example';
const ISS_B = 'https://oidc.cluster-b.example';

const csrFor = (uri: string) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: uri }], subjectOrganization: '' });
const request = (uri: string) => ({ csr: csrFor(uri), validity_duration: '3600' });

function issuersYaml(entries: Array<{ clusterId: string; issuer: string; jwksFile: string; trustDomain?: string }>): string {
  return `# svid-ca --jwt-issuers-file\nissuers:\n${entries
    .map((e) => `  - clusterId: ${e.clusterId}\n    issuer: ${e.issuer}\n    jwksFile: ${e.jwksFile}\n${e.trustDomain ? `    trustDomain: ${e.trustDomain}\n` : ''}`)
    .join('')}`;
}

describe('--jwt-issuers-file: parsing', () => {
  const defaults = { trustDomain: 'cluster.local', audiences: ['istio-ca'] };
  it('accepts a top-level JSON array and a YAML {issuers: [...]} object, filling in audiences and trust domain', () => {
    const json = JSON.stringify([{ clusterId: 'a', issuer: ISS_A, jwksUri: 'https://a.example/jwks' }]);
    expect(parseIssuersFile(json, '/etc/issuers/issuers.json', defaults)).toEqual([
      { clusterId: 'a', issuer: ISS_A, jwksFile: undefined, jwksUri: 'https://a.example/jwks', audiences: ['istio-ca'], trustDomain: 'cluster.local' },
    ]);
    const yaml = 'issuers:\n  - clusterId: b\n    issuer: https://b\n    jwksFile: keys/b.json\n    audiences: [x, y]\n    trustDomain: b.mesh\n';
    expect(parseIssuersFile(yaml, '/etc/issuers/issuers.yaml', defaults)[0]).toMatchObject({ jwksFile: '/etc/issuers/keys/b.json', audiences: ['x', 'y'], trustDomain: 'b.mesh' });
  });

  it('names the entry index and the field of what is wrong', () => {
    const parse = (text: string) => () => parseIssuersFile(text, 'f.yaml', defaults);
    expect(parse('{"keys": []}')).toThrow('--jwt-issuers-file f.yaml: want a list of issuers');
    expect(parse('[]')).toThrow('the list of issuers is empty');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "https://x"}\n- {issuer: j, jwksUri: "https://x"}')).toThrow('entry #1: "clusterId" is required');
    expect(parse('- {clusterId: a, issuer: i}')).toThrow('entry #0: give exactly one of "jwksFile" and "jwksUri"');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "ftp://x"}')).toThrow('entry #0: "jwksUri" is not an https:// URL');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "https://x", trustDomain: "A B"}')).toThrow('entry #0: "trustDomain" is not a valid trust domain');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "https://x", audience: x}')).toThrow('entry #0: unknown field "audience"');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "https://x", audiences: []}')).toThrow('entry #0: "audiences" must be a non-empty list of strings');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "https://x"}\n- {clusterId: b, issuer: i, jwksUri: "https://y"}')).toThrow('entry #1: "issuer" "i" is already entry #0');
    expect(parse('- {clusterId: a, issuer: i, jwksUri: "https://x"}\n- {clusterId: a, issuer: j, jwksUri: "https://y", trustDomain: other}')).toThrow(
      'entry #1: "trustDomain" "other" differs from entry #0\'s "cluster.local" for the same cluster "a"',
    );
    expect(parse('issuers: [\n')).toThrow('not YAML or JSON');
  });
});

describe('--jwt-issuers-file: an unreadable jwksFile', () => {
  it('names the entry index and the field (as the docs promise), and a replace keeps the current issuers', async () => {
    const dir = tempDir('svid-ca-issuers-jwks-');
    try {
      const a = await createTestIssuer();
      const entry = (clusterId: string, issuer: string, jwksFile: string) => ({ clusterId, issuer, jwksFile, jwksUri: undefined, audiences: ['istio-ca'], trustDomain: 'cluster.local' });
      const missing = join(dir, 'nope.json');
      expect(() => new JwtIssuers([entry('a', ISS_A, a.jwksFile), entry('b', ISS_B, missing)], {})).toThrow(
        `entry #1: "jwksFile": JWKS file ${missing}: cannot be read (ENOENT)`,
      );
      const issuers = new JwtIssuers([entry('a', ISS_A, a.jwksFile)], {});
      try {
        expect(() => issuers.replace([entry('a', ISS_A, a.jwksFile), entry('b', ISS_B, missing)])).toThrow('entry #1: "jwksFile": ');
        expect(issuers.entries.map((e) => e.issuer)).toEqual([ISS_A]);
      } finally {
        issuers.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});

describe('--jwt-issuers-file: two clusters over gRPC/TLS', () => {
  let a: TestIssuer;
  let b: TestIssuer;
  let pki: ReturnType<typeof makeCacerts>;
  let volume: SecretVolume;
  let server: TestServer;
  let client: CaClient;
  let tokenA: string;
  let tokenB: string;
  const files = () => ({
    'issuers.yaml': issuersYaml([
      { clusterId: 'cluster-a', issuer: ISS_A, jwksFile: a.jwksFile, trustDomain: 'a.mesh' },
      { clusterId: 'cluster-b', issuer: ISS_B, jwksFile: b.jwksFile, trustDomain: 'b.mesh' },
    ]),
  });

  beforeAll(async () => {
    a = await createTestIssuer();
    b = await createTestIssuer();
    pki = makeCacerts();
    volume = new SecretVolume(join(tempDir('svid-ca-issuers-'), 'issuers'));
    volume.write(files());
    server = await startTestServer({ cacerts: pki.dir, issuer: a, jwt: undefined, jwtIssuersFile: join(volume.dir, 'issuers.yaml'), clusterId: 'cluster-a', reloadIntervalMs: 1000 });
    client = clientFor(server, pki.root.certPem);
    tokenA = await a.token({ namespace: 'shop', serviceAccount: 'web', issuer: ISS_A });
    tokenB = await b.token({ namespace: 'shop', serviceAccount: 'web', issuer: ISS_B });
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
    removeDir(pki.dir);
  });

  const issue = async (token: string, clusterid: string | undefined, uri: string) => {
    const md: Record<string, string> = { authorization: `Bearer ${token}` };
    if (clusterid !== undefined) md.clusterid = clusterid;
    return call(client, request(uri), md);
  };

  const expectIssued = (res: { cert_chain: string[] } | undefined, uri: string) => {
    const chain = res!.cert_chain;
    expect(opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    expect(new X509Certificate(decodePem(chain[0]!)[0]!.der).subjectAltName).toBe(`URI:${uri}`);
  };

  it("gives each cluster's service accounts their issuer's trust domain", async () => {
    const ra = await issue(tokenA, 'cluster-a', 'spiffe://a.mesh/ns/shop/sa/web');
    expect(ra.err).toBeUndefined();
    expectIssued(ra.res, 'spiffe://a.mesh/ns/shop/sa/web');
    const rb = await issue(tokenB, 'cluster-b', 'spiffe://b.mesh/ns/shop/sa/web');
    expect(rb.err).toBeUndefined();
    expectIssued(rb.res, 'spiffe://b.mesh/ns/shop/sa/web');
    // An empty clusterid is the local cluster, but the token's iss still picks its issuer.
    const rEmpty = await issue(tokenB, '', 'spiffe://b.mesh/ns/shop/sa/web');
    expect(rEmpty.err).toBeUndefined();
  });

  it("refuses a token of cluster A sent with cluster B's clusterid, naming both", async () => {
    const { err } = await issue(tokenA, 'cluster-b', 'spiffe://a.mesh/ns/shop/sa/web');
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('"cluster-a"');
    expect(err?.details).toContain('"cluster-b"');
  });

  it('refuses an unknown clusterid naming it, a foreign issuer, and a SPIFFE ID of the other trust domain', async () => {
    const unknown = await issue(tokenA, 'cluster-z', 'spiffe://a.mesh/ns/shop/sa/web');
    expect(unknown.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(unknown.err?.details).toContain('"cluster-z", which this CA does not serve');
    const foreign = await a.token({ namespace: 'shop', serviceAccount: 'web', issuer: 'https://evil.example' });
    const f = await issue(foreign, 'cluster-a', 'spiffe://a.mesh/ns/shop/sa/web');
    expect(f.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(f.err?.details).toContain('token issuer "https://evil.example" is not trusted');
    // A token signed by A's key but claiming B's issuer is verified with B's keys only: refused.
    const forged = await a.token({ namespace: 'shop', serviceAccount: 'web', issuer: ISS_B });
    const g = await issue(forged, 'cluster-b', 'spiffe://b.mesh/ns/shop/sa/web');
    expect(g.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    const cross = await issue(tokenB, 'cluster-b', 'spiffe://a.mesh/ns/shop/sa/web');
    expect(cross.err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(cross.err?.details).toContain('spiffe://b.mesh/ns/shop/sa/web');
  });

  it('svid-ca request --cluster-id sends the clusterid header (the default, Kubernetes, names no cluster here)', async () => {
    const work = tempDir('svid-ca-request-cluster-');
    try {
      writeFileSync(join(work, 'token-b'), tokenB);
      writeFileSync(join(work, 'root.pem'), pki.root.certPem);
      const run = (...extra: string[]) =>
        promisify(execFile)(process.execPath, ['dist/cli.js', 'request', '--ca', server.address, '--root', join(work, 'root.pem'), '--token', join(work, 'token-b'), '--trust-domain', 'b.mesh', '--out', join(work, 'out'), ...extra], { encoding: 'utf8', timeout: 30_000 }).then(
          (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
          (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
        );
      const ok = await run('--cluster-id', 'cluster-b');
      expect(ok.stderr).toBe('');
      expect(ok.stdout).toContain('identity: spiffe://b.mesh/ns/shop/sa/web');
      const wrong = await run('--cluster-id', 'cluster-a');
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toContain('is of cluster "cluster-b", but the client claims to be in cluster "cluster-a"');
      const byDefault = await run();
      expect(byDefault.stderr).toContain('client claims to be in cluster "Kubernetes", which this CA does not serve');
    } finally {
      removeDir(work);
    }
  });

  it('follows the file through ..data swaps: a bad file is refused and counted, the current issuers kept; a removed issuer stops', async () => {
    const metric = async (result: string) => Number(new RegExp(`svid_ca_jwt_issuers_reloads_total\\{result="${result}"\\} (\\d+)`).exec((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body)?.[1] ?? 0);
    expect(await metric('success')).toBe(1);
    volume.write({ 'issuers.yaml': 'issuers:\n  - clusterId: cluster-a\n    issuer: 42\n' });
    await waitFor('the bad issuers file to be refused', async () => (await metric('failure')) === 1);
    expect(server.logs.lines.join('\n')).toContain('entry #0: \\"issuer\\" must be a non-empty string');
    expect((await issue(tokenB, 'cluster-b', 'spiffe://b.mesh/ns/shop/sa/web')).err).toBeUndefined();

    volume.write({ 'issuers.yaml': issuersYaml([{ clusterId: 'cluster-a', issuer: ISS_A, jwksFile: a.jwksFile, trustDomain: 'a.mesh' }]) });
    await waitFor('the one-issuer file to be loaded', async () => (await metric('success')) === 2);
    const gone = await issue(tokenB, 'cluster-b', 'spiffe://b.mesh/ns/shop/sa/web');
    expect(gone.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(gone.err?.details).toContain('"cluster-b", which this CA does not serve');
    expect((await issue(tokenA, 'cluster-a', 'spiffe://a.mesh/ns/shop/sa/web')).err).toBeUndefined();

    // Back to two issuers, and B's JWKS file rotated to a new key: its old tokens stop, new ones verify.
    volume.write(files());
    await waitFor('both issuers to be back', async () => (await metric('success')) === 3);
    const b2 = await createTestIssuer();
    writeFileSync(b.jwksFile, (await import('node:fs')).readFileSync(b2.jwksFile, 'utf8'));
    const fresh = await b2.token({ namespace: 'shop', serviceAccount: 'web', issuer: ISS_B });
    await waitFor("B's rotated key to verify", async () => (await issue(fresh, 'cluster-b', 'spiffe://b.mesh/ns/shop/sa/web')).err === undefined);
  });

  it('/readyz lists each cluster with its issuer and trust domain', async () => {
    const { status, body } = await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/readyz`);
    expect(status).toBe(200);
    expect(body).toContain(`cluster "cluster-a": issuers ${ISS_A}; no API server; trust domain a.mesh`);
    expect(body).toContain(`cluster "cluster-b": issuers ${ISS_B}; no API server; trust domain b.mesh`);
  });

  it('labels svid_ca_requests_total by cluster (unknown clusterids as "unknown")', async () => {
    const body = (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
    expect(body).toMatch(/svid_ca_requests_total\{outcome="issued",cluster="cluster-b"\} [1-9]/);
    expect(body).toMatch(/svid_ca_requests_total\{outcome="unauthenticated",cluster="unknown"\} [1-9]/);
    expect(body).not.toContain('cluster="cluster-z"');
  });
});
