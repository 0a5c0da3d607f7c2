// svid-ca beside a Go CA, same load, same run: `npm run build && node bench/compare-go.mjs [--rounds 3] [--duration 10]
// [--warmup 2] [--only ec-p256,rsa-2048] [--callers 64] [--pool-rate N] [--json FILE]`.
//
// Builds bench/go-ca (grpc-go + crypto/x509, Debian's Go packages in GOPATH mode), then for each scenario
// pre-generates ONE pool of distinct requests (key, CSR, token per pod, as `npm run bench` does) in one load
// generator (bench/loadgen.mjs) and runs it against svid-ca and the Go CA in turn, `--rounds` times, the order
// flipped every round (svid-ca first, then Go first, ...). Each run starts a fresh server (no cache carries over),
// warms it up with the pool's first slice (--warmup seconds, as the Go-client baseline did; JIT for Node, the
// heap for Go), then sends the rest of the same requests in the same order from the same callers for the same
// duration, and measures certs/s, server CPU per certificate (summed over the server's processes), p50/p99
// latency and peak memory.
// It prints the medians and the svid-ca / Go CA ratios of the same rounds. Without Go it says so and exits 0.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { GOPATH, goVersion, goMissing, buildGoCa, startGoCa } = await import('./go-ca-server.mjs');
export { INSTALL_HINT } from './go-ca-server.mjs';
const missing = goMissing();
if (missing) {
  process.stdout.write(`compare-go: skipped: ${missing}\n`);
  process.exit(0);
}

const { benchCacerts } = await import('./bench-cacerts.mjs');
const { ensureDevEnvironment } = await import('../dist/dev/index.js');
const { forkMessenger } = await import('./messenger.mjs');
const { productionNodeFlags } = await import('./node-flags.mjs');
const { cpuSeconds, memoryKiB, ownMemoryKiB } = await import('./proc-stats.mjs');
const { startSvidCa, stopServer } = await import('./svid-ca-server.mjs');
const { summarize, sideBySideTable } = await import('./compare-go-report.mjs');

const args = process.argv.slice(2);
const opt = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const ROUNDS = Number(opt('--rounds', '3'));
const DURATION_MS = Number(opt('--duration', '10')) * 1000;
const WARMUP_MS = Number(opt('--warmup', '2')) * 1000;
const CALLERS = Number(opt('--callers', '64'));
const only = opt('--only', 'ec-p256,rsa-2048').split(',');
const poolRateArg = args.includes('--pool-rate') ? Number(opt('--pool-rate')) : undefined;
const jsonFile = opt('--json');
const SCENARIOS = [
  { name: 'ec-p256', signer: 'dev', csrKey: 'ec-p256', poolRate: poolRateArg ?? 3_000 },
  { name: 'rsa-2048', signer: 'rsa-2048', csrKey: 'rsa-2048', poolRate: poolRateArg ?? 2_000 },
].filter((s) => only.includes(s.name));

const log = (...a) => process.stderr.write(`[compare-go] ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const serverNodeArgs = productionNodeFlags();
const RUNTIME_LINE = `runtime: svid-ca on Node ${process.version} with OpenSSL ${process.versions.openssl}, node flags ${serverNodeArgs.join(' ') || '(none)'}, default --workers; Go CA: ${goVersion}, grpc-go from ${GOPATH}; ${cpus().length} cores; ${CALLERS} callers, ${WARMUP_MS / 1000} s warm-up + ${DURATION_MS / 1000} s per run, ${ROUNDS} rounds`;

/**
 * One run against one server: a warm-up with requests [0, warm) of the pool (not measured), then the measured
 * run with the rest; the figures of bench/run.mjs for it.
 */
async function measure(lg, server, pid, target, warm) {
  if (WARMUP_MS > 0) {
    lg.child.send({ type: 'run', callers: CALLERS, durationMs: WARMUP_MS, retry: false, from: 0, to: warm, target: { ...target, port: server.grpcPort } });
    await lg.next('started', 60_000);
    await lg.next('finished', WARMUP_MS + 100_000);
    await lg.next('result', 60_000);
  }
  let rssMax = 0;
  let ownMax = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      rssMax = Math.max(rssMax, memoryKiB(pid, 'VmRSS'));
      ownMax = Math.max(ownMax, ownMemoryKiB(pid));
      await sleep(50);
    }
  })();
  lg.child.send({ type: 'run', callers: CALLERS, durationMs: DURATION_MS, retry: false, from: warm, target: { ...target, port: server.grpcPort } });
  await lg.next('started', 60_000);
  const cpu0 = cpuSeconds(pid);
  await lg.next('finished', DURATION_MS + 100_000);
  const cpu1 = cpuSeconds(pid);
  sampling = false;
  await sampler;
  const r = await lg.next('result', 60_000);
  const seconds = r.elapsedMs / 1000;
  return {
    requests: r.requests,
    issued: r.issued,
    errors: Object.fromEntries(Object.entries({ ...r.codes, ...(r.badResponses ? { BAD_RESPONSE: r.badResponses } : {}) }).filter(([k]) => k !== 'OK')),
    poolExhausted: r.exhausted,
    seconds: Number(seconds.toFixed(2)),
    issuedPerSec: Math.round(r.issued / seconds),
    serverCpuUsPerCert: Math.round(((cpu1 - cpu0) * 1e6) / Math.max(1, r.issued)),
    serverCores: Number(((cpu1 - cpu0) / seconds).toFixed(2)),
    p50ms: Number(r.p50.toFixed(1)),
    p99ms: Number(r.p99.toFixed(1)),
    peakRssMiB: Math.round(rssMax / 1024),
    peakOwnMiB: Math.round(ownMax / 1024),
    sampledResponsesChecked: r.sampled,
    loadavg: Number(loadavg()[0].toFixed(1)),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'svid-ca-compare-go-'));
const runs = [];
try {
  log(RUNTIME_LINE);
  const bin = join(dir, 'go-ca');
  log(`building bench/go-ca with ${goVersion} (GO111MODULE=off, GOPATH=${GOPATH})`);
  buildGoCa(bin);
  const env = await ensureDevEnvironment(join(dir, 'dev'));
  const jwks = JSON.parse(readFileSync(env.jwksFile, 'utf8'));
  for (const s of SCENARIOS) {
    const cacerts = benchCacerts(s.signer, dir, env);
    const target = { rootPem: readFileSync(join(cacerts, 'root-cert.pem'), 'utf8'), signerPem: readFileSync(join(cacerts, 'ca-cert.pem'), 'utf8'), serverName: 'localhost' };
    const warm = Math.ceil((WARMUP_MS / 1000) * s.poolRate);
    const count = warm + Math.ceil((DURATION_MS / 1000) * s.poolRate);
    const lg = forkMessenger(join(ROOT, 'bench', 'loadgen.mjs'));
    try {
      const t = performance.now();
      lg.child.send({
        type: 'prepare',
        count,
        offset: 0,
        health: false,
        generator: { csrKey: s.csrKey, keyPoolSize: s.csrKey === 'rsa-2048' ? 64 : 0, trustDomain: 'cluster.local', validitySeconds: 86_400, identities: 0, issuedAt: Math.floor(Date.now() / 1000), jwt: { signingKeyPem: readFileSync(env.signingKeyFile, 'utf8'), kid: jwks.keys[0].kid, alg: jwks.keys[0].alg ?? 'RS256', issuer: env.issuer } },
      });
      await lg.next('ready', 600_000);
      log(`${s.name}: ${count} distinct requests pre-generated in ${((performance.now() - t) / 1000).toFixed(1)} s; the same pool goes to both servers`);
      for (let round = 1; round <= ROUNDS; round++) {
        for (const name of round % 2 ? ['svid-ca', 'go-ca'] : ['go-ca', 'svid-ca']) {
          const server = name === 'svid-ca' ? await startSvidCa(dir, serverNodeArgs, s.signer === 'rsa-2048' ? ['--cacerts', cacerts] : []) : await startGoCa(bin, cacerts, env);
          try {
            await sleep(300);
            const m = await measure(lg, server, server.child.pid, target, warm);
            runs.push({ scenario: s.name, server: name, round, ...m });
            log(`${s.name} round ${round} ${name}: ${m.issuedPerSec}/s, ${m.serverCpuUsPerCert} us/cert, p50 ${m.p50ms} ms, p99 ${m.p99ms} ms, ${m.peakOwnMiB} MiB, errors ${JSON.stringify(m.errors)}, load ${m.loadavg}`);
          } finally {
            await stopServer(server);
          }
        }
      }
    } finally {
      if (lg.child.connected) lg.child.send({ type: 'exit' });
    }
  }
  const summary = summarize(runs);
  process.stdout.write(`\n${RUNTIME_LINE}\n\n${sideBySideTable(summary)}\n\n`);
  const failed = runs.filter((r) => Object.keys(r.errors).length > 0);
  for (const r of failed) process.stdout.write(`${r.scenario} round ${r.round} ${r.server}: errors ${JSON.stringify(r.errors)}\n`);
  if (failed.length) process.exitCode = 1;
  process.stdout.write(`load average (1 min) during the runs: ${Math.min(...runs.map((r) => r.loadavg))}-${Math.max(...runs.map((r) => r.loadavg))}${runs.some((r) => r.poolExhausted) ? '; some runs used up the pool before the duration ended (raise --pool-rate)' : ''}\n`);
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), runtime: RUNTIME_LINE, runs, summary }, null, 2) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
