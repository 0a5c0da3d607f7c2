/**
 * A reader that closes the pipe early (`svid-ca cacerts crl ... | head -1`) is not an error: the built CLI
 * drops the rest of its report, finishes its work and exits with its own status (0 here), with nothing on
 * stderr, where it used to die on an EPIPE stack trace. Real pipes through bash: the reader is `head -1`
 * (closes after the first line) or `true` (closed before the first write, so every run hits EPIPE).
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCacerts, removeDir, tempDir } from './helpers/pki.js';
import { createTestIssuer, startTestServer, type TestServer } from './helpers/server.js';
import { freePort, waitForStatus } from './helpers/process.js';

const work = tempDir('svid-ca-epipe-');
afterAll(() => removeDir(work));

/**
 * Runs `node dist/cli.js ARGS | READER` in bash; the CLI's exit status and stderr, the reader's output.
 * With `stderrToo`, stderr goes into the same pipe (`2>&1 | READER`) and `stderr` is empty.
 */
function throughPipe(args: string[], reader: 'head -1' | 'true', stderrToo = false): Promise<{ status: number; stderr: string; read: string }> {
  const errFile = join(work, `stderr-${Math.random().toString(36).slice(2)}`);
  writeFileSync(errFile, '');
  const script = `"$0" dist/cli.js "$@" ${stderrToo ? '2>&1' : `2>"${errFile}"`} | ${reader}; echo "\${PIPESTATUS[0]}"`;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      const lines = out.trimEnd().split('\n');
      resolve({ status: Number(lines.pop()), read: lines.join('\n'), stderr: readFileSync(errFile, 'utf8') });
    });
  });
}

describe('the CLI stops quietly when the reader of its output goes away (EPIPE)', () => {
  const cli = (...args: string[]) => ['dist/cli.js', ...args];
  const root = join(work, 'root');
  const cacerts = join(work, 'cacerts');
  let server: TestServer | undefined;
  let tokenFile = '';
  let rootPem = '';

  beforeAll(async () => {
    expect(spawnSync(process.execPath, cli('cacerts', 'init-root', '--out', root)).status).toBe(0);
    expect(spawnSync(process.execPath, cli('cacerts', 'init-intermediate', '--root', root, '--out', cacerts)).status).toBe(0);
    const issuer = await createTestIssuer(work);
    const served = makeCacerts({ dir: join(work, 'served') });
    rootPem = served.root.certPem;
    writeFileSync(join(work, 'served-root.pem'), rootPem);
    server = await startTestServer({ cacerts: served.dir, issuer });
    tokenFile = join(work, 'token');
    writeFileSync(tokenFile, await issuer.token({ namespace: 'default', serviceAccount: 'app' }));
  }, 60_000);
  afterAll(() => server?.close());

  const commands: Record<string, () => string[]> = {
    'cacerts crl': () => ['cacerts', 'crl', '--issuer', root, '--out', join(work, 'crl.pem'), '--revoke', join(cacerts, 'ca-cert.pem')],
    'cacerts verify': () => ['cacerts', 'verify', cacerts],
    'cacerts plan-rotation': () => ['cacerts', 'plan-rotation', cacerts, cacerts],
    help: () => ['help'],
    'cacerts help': () => ['cacerts', 'help', 'crl'],
    request: () => ['request', '--ca', server!.address, '--root', join(work, 'served-root.pem'), '--token', tokenFile, '--out', join(work, 'workload')],
  };

  for (const [name, args] of Object.entries(commands)) {
    it(`${name}: exit 0, nothing on stderr, whether the reader closes after the first line or before`, async () => {
      for (const reader of ['true', 'head -1', 'head -1', 'head -1'] as const) {
        const r = await throughPipe(args(), reader);
        expect(r.stderr, `${name} | ${reader}`).toBe('');
        expect(r.status, `${name} | ${reader}`).toBe(0);
        if (reader === 'head -1') expect(r.read.split('\n')).toHaveLength(1);
      }
    }, 120_000);
  }

  it('the work is done although the report was cut: cacerts crl wrote its CRL, request its certificate', async () => {
    const crlFile = join(work, 'crl-cut.pem');
    expect((await throughPipe(['cacerts', 'crl', '--issuer', root, '--out', crlFile], 'true')).status).toBe(0);
    expect(readFileSync(crlFile, 'utf8')).toContain('-----BEGIN X509 CRL-----');
    const out = join(work, 'workload-cut');
    expect((await throughPipe(['request', '--ca', server!.address, '--root', join(work, 'served-root.pem'), '--token', tokenFile, '--out', out], 'true')).status).toBe(0);
    expect(readFileSync(join(out, 'cert-chain.pem'), 'utf8')).toContain('-----BEGIN CERTIFICATE-----');
  }, 60_000);

  it("a command that fails keeps its own exit status (cacerts verify of a refused folder: 1), still nothing on stderr", async () => {
    const r = await throughPipe(['cacerts', 'verify', root], 'true'); // an init-root folder is not a cacerts folder
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('');
  }, 60_000);

  it('stderr into a closed pipe (2>&1 | true) keeps the exit status of a refused command (2) instead of 1', async () => {
    const refused: Record<string, string[]> = {
      'help bogus': ['help', 'bogus'],
      'cacerts crl with a wrong --revoke': ['cacerts', 'crl', '--issuer', root, '--out', join(work, 'crl-refused.pem'), '--revoke', join(work, 'no-such-cert.pem')],
      'cacerts verify --bogus': ['cacerts', 'verify', '--bogus'],
      'init-root refusing to overwrite a key': ['cacerts', 'init-root', '--out', root],
      'serve with an unknown flag': ['serve', '--bogus'],
    };
    for (const [name, args] of Object.entries(refused)) {
      // Without the pipe the command exits 2 and says why on stderr: the baseline the pipe must not change.
      const direct = spawnSync(process.execPath, cli(...args), { encoding: 'utf8' });
      expect(direct.status, name).toBe(2);
      expect(direct.stderr, name).toMatch(/^svid-ca: /);
      for (const reader of ['true', 'true', 'head -1'] as const) {
        expect((await throughPipe(args, reader, true)).status, `${name} 2>&1 | ${reader}`).toBe(2);
      }
    }
  }, 120_000);
});

/**
 * `serve`'s stdout is its JSON log. pino's fatal() flushes synchronously, and sonic-boom 4.2.1's flushSync
 * retries a failed write every 100 ms forever unless the error is EAGAIN: into a closed pipe (EPIPE) a startup
 * failure hung instead of exiting 1. A running serve whose log reader goes away keeps serving and drops its
 * log lines (the audit file of --audit-log, if any, still gets them).
 */
describe('serve with its stdout (the log) into a closed pipe', () => {
  let issuer: Awaited<ReturnType<typeof createTestIssuer>>;
  let served = '';
  let rootFile = '';
  let tokenFile = '';

  beforeAll(async () => {
    issuer = await createTestIssuer(work);
    const c = makeCacerts({ dir: join(work, 'serve-cacerts') });
    served = c.dir;
    rootFile = join(work, 'serve-root.pem');
    writeFileSync(rootFile, c.root.certPem);
    tokenFile = join(work, 'serve-token');
    writeFileSync(tokenFile, await issuer.token({ namespace: 'default', serviceAccount: 'app' }));
  }, 60_000);

  it('a startup failure exits 1 (not a hang) with stderr into the same pipe or into /dev/null, one process or several', async () => {
    for (const workers of [['--workers', '1'], []]) {
      for (const redirect of ['2>&1', '2>/dev/null']) {
        const args = ['serve', '--cacerts', join(work, 'no-such-cacerts'), '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0', ...workers];
        const script = `timeout 30 "$0" dist/cli.js "$@" ${redirect} | true; echo "\${PIPESTATUS[0]}"`;
        const r = spawnSync('bash', ['-c', script, process.execPath, ...args], { encoding: 'utf8', timeout: 60_000 });
        // 124 would be timeout(1) killing a hung serve.
        expect(Number(r.stdout.trim()), `${workers.join(' ') || 'default workers'} ${redirect} | true`).toBe(1);
      }
    }
  }, 240_000);

  it('a running serve whose log reader goes away keeps serving (log lines dropped), does not spin, and stops 0 on SIGTERM', async () => {
    const monitoring = await freePort();
    const listen = await freePort();
    const child = spawn(
      process.execPath,
      ['dist/cli.js', 'serve', '--cacerts', served, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', `127.0.0.1:${listen}`, '--monitoring-listen', `127.0.0.1:${monitoring}`, '--workers', '1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      // The first log line shows the pipe works; then the reader closes its end (a real pipe, closed).
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      child.stdout.destroy();
      await waitForStatus(`http://127.0.0.1:${monitoring}/readyz`, 200, 60_000);
      for (let i = 0; i < 3; i++) {
        // Each call logs its audit line into the closed pipe.
        const r = spawnSync(process.execPath, ['dist/cli.js', 'request', '--ca', `localhost:${listen}`, '--root', rootFile, '--token', tokenFile, '--out', join(work, `serve-out-${i}`)], { encoding: 'utf8', timeout: 60_000 });
        expect(r.stderr, `call ${i}`).toBe('');
        expect(r.status, `call ${i}`).toBe(0);
      }
      // Not spinning on the broken pipe: idle for 3 s, it uses far less than 3 s of CPU.
      const cpu = () => readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ').slice(11, 13).reduce((a, b) => a + Number(b), 0);
      const before = cpu();
      await new Promise((r) => setTimeout(r, 3000));
      expect((cpu() - before) / 100, 'CPU seconds used while idle for 3 s').toBeLessThan(1.5);
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      expect(await exited, stderr).toBe(0);
      clearTimeout(timer);
      expect(stderr).toBe('');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }, 180_000);
});
