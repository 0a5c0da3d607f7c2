/**
 * `serve --self-signed` (built CLI) logs what it uses: no cacerts path in 'starting svid-ca' (it reads none; the
 * self-signed root's folder instead), and the "ignoring --workers" warning only when the operator gave --workers
 * (flag or SVID_CA_WORKERS), not for the default (one process per core).
 */
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from './helpers/pki.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';
import { createTestIssuer } from './helpers/server.js';

const work = tempDir('svid-ca-self-signed-msg-');
afterAll(() => removeDir(work));
const procs: CliProcess[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.child.kill('SIGKILL');
});

const IGNORING_WORKERS = '--self-signed runs one process (one root and one rotator): ignoring --workers';

/** Starts `serve --self-signed` with `extra` args and env, waits until ready, stops it; returns its log records. */
async function selfSignedLog(extra: string[], env: Record<string, string> = {}, dir?: string): Promise<Record<string, unknown>[]> {
  const issuer = await createTestIssuer(tempDir('svid-ca-self-signed-jwks-'));
  const [grpcPort, monPort] = [await freePort(), await freePort()];
  const dirArgs = dir ? ['--self-signed-dir', dir] : [];
  const proc = startCli(['serve', '--self-signed', ...dirArgs, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, ...extra], env);
  procs.push(proc);
  await waitForStatus(`http://127.0.0.1:${monPort}/readyz`, 200, 30_000);
  proc.child.kill('SIGTERM');
  expect(await proc.exited).toBe(0);
  return proc.stdout
    .join('')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const starting = (records: Record<string, unknown>[]) => records.find((r) => r.msg === 'starting svid-ca')!.settings as Record<string, unknown>;

describe('serve --self-signed: the log says what is used', () => {
  it('without --workers: no "ignoring --workers" warning, no cacerts path; the root folder is named', async () => {
    const dir = join(work, 'root');
    const records = await selfSignedLog([], {}, dir);
    expect(records.filter((r) => r.msg === IGNORING_WORKERS)).toEqual([]);
    expect(starting(records)).not.toHaveProperty('cacerts');
    expect(starting(records).selfSignedDir).toBe(dir);
    expect(JSON.stringify(records)).not.toContain('/etc/cacerts');
  }, 60_000);

  it('memory only: the settings say so', async () => {
    const records = await selfSignedLog([]);
    expect(starting(records).selfSignedDir).toBe('(memory only)');
  }, 60_000);

  it('with --workers 2 or SVID_CA_WORKERS=2: one warning naming the count', async () => {
    for (const [args, env] of [[['--workers', '2'], {}], [[], { SVID_CA_WORKERS: '2' }]] as const) {
      const warned = (await selfSignedLog([...args], { ...env })).filter((r) => r.msg === IGNORING_WORKERS);
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: 40, workers: 2 });
    }
  }, 120_000);
});
