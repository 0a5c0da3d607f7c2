/**
 * A stdout log reader that stops reading (a blocked pipe, a stuck log collector) must not grow the CA's
 * memory without limit (issue #14): the real `serve --workers 2` with its stdout a pipe this test does not
 * read, driven over gRPC/TLS far past a small --log-buffer-bytes. Each worker holds at most that many bytes
 * of lines; the lines beyond are dropped and counted in svid_ca_log_lines_dropped_total (summed over the
 * workers on the primary's /metrics), stderr says when dropping starts and when the reader caught up, the CA keeps issuing,
 * and once the pipe is read again lines flow. Every audit line is either read or counted as dropped, and
 * the --audit-log file holds every record.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { makeCacerts, opensslVerify, removeDir, tempDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, type TestServer } from './helpers/server.js';
import { freePort, waitForStatus } from './helpers/process.js';
import { until } from './helpers/until.js';

const work = tempDir('svid-ca-log-buffer-');
afterAll(() => removeDir(work));

const metric = (body: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1]);
const BUFFER = 65536;

describe('serve with a stdout log reader that stops reading', () => {
  it('bounds the buffered lines, counts the dropped ones, keeps issuing, and resumes when read again', async () => {
    const issuer = await createTestIssuer(work);
    const cacerts = makeCacerts({ dir: join(work, 'cacerts') });
    const [listen, monitoring] = [await freePort(), await freePort()];
    const auditFile = join(work, 'audit.jsonl');
    const child = spawn(
      process.execPath,
      ['dist/cli.js', 'serve', '--cacerts', cacerts.dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', `127.0.0.1:${listen}`, '--monitoring-listen', `127.0.0.1:${monitoring}`, '--workers', '2', '--log-buffer-bytes', String(BUFFER), '--audit-log', auditFile],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    // 'close': exited and its stdout read to the end.
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const base = `http://127.0.0.1:${monitoring}`;
    try {
      // The pipe is never read from here on (no 'data' listener: the parent's side holds one buffer, then the kernel's fills).
      await waitForStatus(`${base}/readyz`, 200, 60_000);
      expect(metric((await fetchText(`${base}/metrics`)).body, 'svid_ca_log_lines_dropped_total')).toBe(0);

      const client = clientFor({ address: `localhost:${listen}` } as TestServer, cacerts.root.certPem);
      const id = 'spiffe://cluster.local/ns/demo/sa/web';
      const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
      const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] });
      let calls = 0;
      const issue = async (n: number) => {
        for (let done = 0; done < n; done += 32) {
          const results = await Promise.all(Array.from({ length: Math.min(32, n - done) }, () => call(client, { csr }, { authorization: `Bearer ${token}` })));
          for (const r of results) expect(r.err?.message).toBeUndefined();
          calls += results.length;
        }
      };
      // Far past the pipe's buffers and both workers' bounds; dropping must have started well before the end.
      let dropped = 0;
      while (calls < 20_000) {
        await issue(500);
        dropped = metric((await fetchText(`${base}/metrics`)).body, 'svid_ca_log_lines_dropped_total');
        if (dropped >= 1000) break;
      }
      expect(dropped).toBeGreaterThanOrEqual(1000);
      expect(stderr).toContain('"msg":"stdout log reader is behind: dropping log lines until it catches up (the --audit-log file still gets every record)"');
      expect(stderr).not.toContain('stdout log lines flow again');
      // One notice per worker that dropped (the calls share one connection, so one worker or both).
      const droppingWorkers = (stderr.match(/"msg":"stdout log reader is behind/g) ?? []).length;
      expect(droppingWorkers).toBeGreaterThanOrEqual(1);
      // Still answering while its log is blocked: a certificate a real verifier accepts.
      const last = await call(client, { csr }, { authorization: `Bearer ${token}` });
      calls++;
      expect(last.err).toBeUndefined();
      expect(opensslVerify(cacerts.root.certPem, last.res!.cert_chain.slice(1, -1), last.res!.cert_chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');

      // Reading again: what waited is delivered, and the next lines are taken.
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
      await until('stdout to deliver its buffered lines', () => (out.length > 0 ? true : undefined), 30_000);
      await until(
        'each worker that dropped lines to say they flow again',
        async () => {
          await issue(32);
          return (out.match(/stdout log lines flow again after some were dropped/g) ?? []).length === droppingWorkers ? true : undefined;
        },
        60_000,
      );
      expect(stderr.match(/"msg":"stdout log lines flow again after some were dropped"/g)).toHaveLength(droppingWorkers);
      // The stdout log marks each gap with the process that had it (its pid), as stderr does.
      const gapLines = await until('the gap lines complete in stdout', () => {
        const lines = out.match(/^\{[^\n]*"msg":"stdout log lines flow again after some were dropped"\}$/gm) ?? [];
        return lines.length === droppingWorkers ? lines : undefined;
      });
      for (const l of gapLines) expect(JSON.parse(l).pid).toEqual(expect.any(Number));
      expect(stderr.match(/"msg":"stdout log reader is behind/g)).toHaveLength(droppingWorkers);
      const finalDropped = metric((await fetchText(`${base}/metrics`)).body, 'svid_ca_log_lines_dropped_total');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      expect(await exited, stderr).toBe(0);
      clearTimeout(timer);
      client.close();

      // Every audit line was either read or counted as dropped: the buffer never kept more than it could write.
      const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; droppedLines?: number; audit?: unknown });
      const read = lines.filter((l) => l.msg === 'certificate issued').length;
      expect(read + finalDropped).toBe(calls);
      expect(lines.filter((l) => l.droppedLines !== undefined).reduce((a, l) => a + l.droppedLines!, 0)).toBe(finalDropped);
      // The durable audit trail has them all.
      const audit = readFileSync(auditFile, 'utf8').split('\n').filter(Boolean);
      expect(audit.filter((l) => JSON.parse(l).event === 'issued')).toHaveLength(calls);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }, 300_000);
});

describe('the stdout log destination', () => {
  it('writes every line byte for byte, multi-byte UTF-8 and lines across its 64 KB slabs included', () => {
    // The built logger in a child process (its stdout is the destination), 3,000 lines of growing length.
    const script = `
      const { createLogger } = await import('./dist/observability/index.js');
      const logger = createLogger('info');
      for (let i = 0; i < 3000; i++) logger.info({ i, text: 'é中😀\\ud800'.repeat(i % 50) + 'x'.repeat(i % 7000) }, 'line');
      logger.flush(() => {});`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { i: number; text: string });
    expect(lines).toHaveLength(3000);
    lines.forEach((l, i) => {
      expect(l.i).toBe(i);
      expect(l.text).toBe('é中😀\ud800'.repeat(i % 50) + 'x'.repeat(i % 7000));
    });
  }, 120_000);
});
