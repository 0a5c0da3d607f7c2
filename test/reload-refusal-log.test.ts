/**
 * A refused cacerts bundle is retried at every --reload-interval (it may become usable without a
 * change, e.g. a signer whose notBefore is ahead), but the refusal is logged once per distinct
 * content and problem, then again at most once per refusalLogIntervalMs; every retry is still
 * counted in svid_ca_bundle_reloads_total{result="failure"}. Real files with `..data` swaps, the
 * real server and its /metrics.
 */
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { makeIntermediate, makeRoot, removeDir, tempDir, type TestCa } from './helpers/pki.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { createTestIssuer, fetchText, startTestServer, type TestServer } from './helpers/server.js';
import { tool } from './helpers/tools.js';
import { until } from './helpers/until.js';

const REFUSED = 'cacerts reload refused; still serving with the current bundle';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});


async function start(good: TestCa, root: TestCa, refusalLogIntervalMs?: number) {
  const issuer = await createTestIssuer();
  const dir = tempDir('svid-ca-refusal-');
  const volume = new SecretVolume(dir);
  volume.write(istioFiles(good, [root]));
  const server = await startTestServer({ cacerts: dir, issuer, reloadIntervalMs: 300, ...(refusalLogIntervalMs !== undefined ? { refusalLogIntervalMs } : {}) });
  cleanups.push(() => removeDir(dir), () => server.close());
  return { volume, server };
}

const refusals = (server: TestServer) => server.logs.records().filter((r) => r.msg === REFUSED);
async function failures(server: TestServer): Promise<number> {
  const body = (await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body;
  return Number(/^svid_ca_bundle_reloads_total\{result="failure"\} (\d+)/m.exec(body)?.[1] ?? NaN);
}

/** A bundle whose ca-key.pem is another key than ca-cert.pem's, shown so by openssl. */
function mismatched(root: TestCa): Record<string, string> {
  const files = istioFiles(makeIntermediate(root, { cn: 'mismatched' }), [root], makeIntermediate(root).keyPem);
  const certKey = execFileSync(tool('openssl'), ['x509', '-noout', '-pubkey'], { input: files['ca-cert.pem'], encoding: 'utf8' });
  const key = execFileSync(tool('openssl'), ['pkey', '-pubout'], { input: files['ca-key.pem'], encoding: 'utf8' });
  expect(certKey).not.toBe(key);
  return files;
}

describe('a refused cacerts bundle', () => {
  const root = makeRoot({ cn: 'refusal root' });
  const good = makeIntermediate(root, { cn: 'refusal good' });

  it('is logged once over several reload intervals, every retry counted; a changed broken bundle is logged at once; a good one is loaded', async () => {
    const { volume, server } = await start(good, root);
    volume.write(mismatched(root));
    await until('the first refusal', () => refusals(server)[0]);
    const atFirst = await failures(server);
    // Several polls (300 ms each) retry the same content: each retry counts, none logs again.
    await until('5 more counted retries', async () => ((await failures(server)) >= atFirst + 5 ? true : undefined));
    expect(refusals(server)).toHaveLength(1);
    expect(String(refusals(server)[0]!.problem)).toMatch(/does not match/);
    expect(refusals(server)[0]!.refusals).toBeUndefined();

    // Other broken content: logged at once (the watch sees the swap), with its own problem.
    const second = mismatched(root);
    volume.write(second);
    await until('a refusal of the changed content', () => refusals(server)[1]);
    const atSecond = await failures(server);
    await until('5 more counted retries', async () => ((await failures(server)) >= atSecond + 5 ? true : undefined));
    expect(refusals(server)).toHaveLength(2);

    // A good bundle after it is loaded, and the refusals stop.
    volume.write(istioFiles(makeIntermediate(root, { cn: 'refusal fixed' }), [root]));
    await until('the reload', () => server.logs.records().find((r) => r.msg === 'signing bundle reloaded'));
    const counted = await failures(server);
    await sleep(1000);
    expect(await failures(server)).toBe(counted);
    expect(refusals(server)).toHaveLength(2);
  });

  it('is logged again after refusalLogIntervalMs with the number of refusals since it was first refused', async () => {
    const { volume, server } = await start(good, root, 1500);
    volume.write(mismatched(root));
    const first = await until('the first refusal', () => refusals(server)[0]);
    const again = await until('the refusal logged again', () => refusals(server)[1]);
    expect(again.problem).toBe(first.problem);
    expect(again.file).toBe(first.file);
    expect(again.refusals).toBeGreaterThanOrEqual(2);
    expect(first.refusals).toBeUndefined();
    expect(Date.parse(String(again.firstRefusedAt))).toBeLessThanOrEqual(Date.parse(String(first.time)));
  });

  it('the same content back after a good bundle is logged again at once', async () => {
    const { volume, server } = await start(good, root);
    const broken = mismatched(root);
    volume.write(broken);
    await until('the first refusal', () => refusals(server)[0]);
    volume.write(istioFiles(makeIntermediate(root, { cn: 'refusal between' }), [root]));
    await until('the reload', () => server.logs.records().find((r) => r.msg === 'signing bundle reloaded'));
    volume.write(broken);
    await until('the same content refused and logged again', () => refusals(server)[1]);
  });
});
