/**
 * issue #18 through the real command: --jwt-issuers-file with the single-issuer flags is a usage
 * error (exit 2 naming both), a bad file is one line naming the entry, and with --workers 2 every
 * worker follows the file (each worker runs its own watcher, as for --jwks-file).
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CaClient } from '../src/client/index.js';
import { parseServeConfig } from '../src/config.js';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { makeCacerts, removeDir, tempDir } from './helpers/pki.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';
import { call, clientFor, createTestIssuer, type TestIssuer, type TestServer } from './helpers/server.js';

const ISS_A = 'https://oidc.cluster-a.example';
const ISS_B = 'https://oidc.cluster-b.example';
let work: string;
let pki: ReturnType<typeof makeCacerts>;
let a: TestIssuer;
let b: TestIssuer;
let proc: CliProcess | undefined;

beforeAll(async () => {
  work = tempDir('svid-ca-multi-cli-');
  pki = makeCacerts();
  a = await createTestIssuer(tempDir('svid-ca-jwks-a-'));
  b = await createTestIssuer(tempDir('svid-ca-jwks-b-'));
});
afterEach(async () => {
  if (proc && proc.child.exitCode === null) {
    proc.child.kill('SIGTERM');
    await proc.exited;
  }
  proc = undefined;
});
afterAll(() => {
  removeDir(work);
  removeDir(pki.dir);
});

const entry = (clusterId: string, issuer: string, jwksFile: string, trustDomain: string) => ({ clusterId, issuer, jwksFile, trustDomain });

describe('usage', () => {
  it('--jwt-issuers-file with --jwt-issuer is exit 2 naming both flags', async () => {
    const volume = new SecretVolume(join(work, 'usage'));
    volume.write({ 'issuers.json': JSON.stringify([entry('a', ISS_A, a.jwksFile, 'a.mesh')]) });
    proc = startCli(['serve', '--cacerts', pki.dir, '--jwt-issuers-file', join(volume.dir, 'issuers.json'), '--jwt-issuer', ISS_A, '--jwks-file', a.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0']);
    expect(await proc.exited).toBe(2);
    expect(proc.stderr.join('')).toContain('--jwt-issuers-file and --jwt-issuer: give one, not both');
  });

  it('parses the flags: each single-issuer flag conflicts with the file; --remote-kubeconfig-dir needs something to ask', () => {
    const cfg = parseServeConfig(['--jwt-issuers-file', '/etc/issuers.yaml', '--token-review', '--remote-kubeconfig-dir', '/etc/remote'], {});
    expect(cfg.jwtIssuersFile).toBe('/etc/issuers.yaml');
    expect(cfg.kubernetes?.remoteKubeconfigDir).toBe('/etc/remote');
    expect(parseServeConfig([], { SVID_CA_JWT_ISSUERS_FILE: '/etc/i.json' }).jwtIssuersFile).toBe('/etc/i.json');
    for (const flag of ['--jwks-file', '--jwks-uri', '--jwt-issuer']) {
      expect(() => parseServeConfig(['--jwt-issuers-file', '/etc/i.yaml', flag, 'https://x.example/jwks'], {})).toThrow(`--jwt-issuers-file and ${flag}: give one, not both`);
    }
    expect(() => parseServeConfig(['--jwt-issuers-file', '/etc/i.yaml', '--remote-kubeconfig-dir', '/etc/remote'], {})).toThrow(
      '--remote-kubeconfig-dir: only meaningful with --token-review or --trusted-node-accounts',
    );
  });

  it('a bad issuers file at startup is one line naming the entry and field, exit 2', async () => {
    const volume = new SecretVolume(join(work, 'bad'));
    volume.write({ 'issuers.json': JSON.stringify([entry('a', ISS_A, a.jwksFile, 'a.mesh'), { clusterId: 'b', issuer: ISS_B }]) });
    proc = startCli(['serve', '--cacerts', pki.dir, '--jwt-issuers-file', join(volume.dir, 'issuers.json'), '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0']);
    expect(await proc.exited).toBe(2);
    expect(proc.stderr.join('')).toContain('entry #1: give exactly one of "jwksFile" and "jwksUri"');
  });
});

describe('--workers 2', () => {
  it('every worker serves both issuers and follows the file when an issuer is removed', async () => {
    const volume = new SecretVolume(join(work, 'workers'));
    const both = JSON.stringify({ issuers: [entry('cluster-a', ISS_A, a.jwksFile, 'a.mesh'), entry('cluster-b', ISS_B, b.jwksFile, 'b.mesh')] });
    volume.write({ 'issuers.json': both });
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    proc = startCli([
      'serve', '--workers', '2', '--cacerts', pki.dir, '--jwt-issuers-file', join(volume.dir, 'issuers.json'), '--cluster-id', 'cluster-a',
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--reload-interval', '1s',
    ]);
    await waitForStatus(`http://127.0.0.1:${monPort}/readyz`, 200, 30_000);
    // The primary serves /readyz for its workers: the cluster lines come from them (issue #18 item 3).
    const readyz = async () => (await fetch(`http://127.0.0.1:${monPort}/readyz`)).text();
    const lineA = `cluster "cluster-a": issuers ${ISS_A}; no API server; trust domain a.mesh`;
    const lineB = `cluster "cluster-b": issuers ${ISS_B}; no API server; trust domain b.mesh`;
    for (let i = 0; i < 50 && !(await readyz()).includes(lineB); i++) await new Promise((r) => setTimeout(r, 200));
    expect((await readyz()).split('\n')).toEqual(['ready', lineA, lineB, '']);
    const tokenB = await b.token({ namespace: 'shop', serviceAccount: 'web', issuer: ISS_B });
    const id = 'spiffe://b.mesh/ns/shop/sa/web';
    // Eight new connections: node:cluster hands them to both workers in turn.
    const eightCalls = async () => {
      const results = [];
      for (let i = 0; i < 8; i++) {
        const c: CaClient = clientFor({ address: `localhost:${grpcPort}` } as TestServer, pki.root.certPem);
        results.push(await call(c, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] }) }, { authorization: `Bearer ${tokenB}`, clusterid: 'cluster-b' }));
        c.close();
      }
      return results;
    };
    expect((await eightCalls()).map((r) => r.err?.message)).toEqual(Array(8).fill(undefined));
    expect(new Set(proc.stdout.join('').split('\n').filter((l) => l.includes('"msg":"certificate issued"')).map((l) => JSON.parse(l).worker)).size).toBe(2);

    volume.write({ 'issuers.json': JSON.stringify([entry('cluster-a', ISS_A, a.jwksFile, 'a.mesh')]) });
    for (let i = 0; i < 100 && (await eightCalls()).some((r) => r.err === undefined); i++) await new Promise((r) => setTimeout(r, 200));
    const refused = await eightCalls();
    expect(refused.map((r) => r.err?.details)).toEqual(
      Array(8).fill('request authenticate failure: client claims to be in cluster "cluster-b", which this CA does not serve (configured clusters: "cluster-a")'),
    );
    for (let i = 0; i < 50 && (await readyz()).includes(lineB); i++) await new Promise((r) => setTimeout(r, 200));
    expect((await readyz()).split('\n')).toEqual(['ready', lineA, '']);
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  }, 120_000);
});
