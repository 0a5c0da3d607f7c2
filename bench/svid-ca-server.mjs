// Starting and stopping the built svid-ca (dist/cli.js serve --dev) for a benchmark: shared by bench/run.mjs and
// bench/compare-go.mjs, so both measure the same server started the same way.
import { spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `node <nodeArgs> dist/cli.js serve --dev --dev-dir <dir>/dev` on loopback ports of its own, plus
 * `serveArgs`, logging to a file in `dir`; resolves when it (and with --workers its primary) says it serves:
 * { child, grpcPort, monitoringPort, logFile }. Throws with the log's tail when it does not start within 30 s.
 * `runtime`: the JavaScript runtime's binary (default: the node running the benchmark).
 */
export async function startSvidCa(dir, nodeArgs, serveArgs, serverEnv = process.env, runtime = process.execPath) {
  const logFile = join(dir, `server-${Date.now()}.log`);
  const fd = openSync(logFile, 'w');
  // --shutdown-delay 0s: the default 5 s (not ready, still answering, while Kubernetes removes the endpoint)
  // outlasts stopServer's 5 s before SIGKILL, and a killed server writes no --cpu-prof profile.
  const base = ['serve', '--dev', '--dev-dir', join(dir, 'dev'), '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0', '--shutdown-delay', '0s'];
  const child = spawn(runtime, [...nodeArgs, join(ROOT, 'dist', 'cli.js'), ...base, ...serveArgs], {
    stdio: ['ignore', fd, fd],
    env: serverEnv,
  });
  for (let i = 0; i < 300; i++) {
    await sleep(100);
    const lines = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.startsWith('{'));
    const line = lines.find((l) => l.includes('"svid-ca serving"'));
    // With --workers the primary serves monitoring and says where.
    const primary = lines.find((l) => l.includes('"svid-ca primary serving monitoring for its workers"'));
    const ready = line && (primary || !line.includes('(primary process)'));
    if (ready) {
      const rec = JSON.parse(line);
      const mon = primary ? JSON.parse(primary).monitoring : rec.monitoring;
      return { child, grpcPort: Number(rec.grpc.split(':').pop()), monitoringPort: Number(mon.split(':').pop()), logFile };
    }
    if (child.exitCode !== null) break;
  }
  child.kill('SIGKILL');
  throw new Error(`svid-ca did not start; see ${logFile}:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
}

/** SIGTERM, then SIGKILL after 5 s; resolves when the server's process has exited. */
export function stopServer(server) {
  return new Promise((resolve) => {
    if (server.child.exitCode !== null) return resolve();
    const t = setTimeout(() => server.child.kill('SIGKILL'), 5_000);
    server.child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    server.child.kill('SIGTERM');
  });
}
