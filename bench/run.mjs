// svid-ca benchmark: `npm run bench [-- --quick] [-- --json FILE] [-- --only ec-p256,rsa-2048,renewals,cpu-attack,storm] [-- --profile DIR]
// [-- --pool-rate N] [-- --workers N] [-- --pkcs11-sessions N]` (requests pre-generated per second of run; a run that uses them all up ends early and says so).
//
// Starts the built svid-ca (dist/cli.js) in a child process per scenario, drives it from a separate
// load-generator process (loadgen.mjs) with distinct pre-generated CSRs and tokens over raw
// node:http2, and prints one table: requests, errors by code, issued/s, latency percentiles, server
// CPU (from /proc/<pid>/stat), peak RSS (sampled total and VmHWM sum), and efficiency against this machine's own
// `openssl speed` limit for one CSR verify + one sign on all cores, measured in the same run.
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createIntermediateCa, createRootCa } from '../dist/ca/index.js';
import { ensureDevEnvironment } from '../dist/dev/index.js';
import { forkMessenger } from './messenger.mjs';
import { cpuSeconds, memoryKiB, ownMemoryKiB } from './proc-stats.mjs';
import { startSvidCa, stopServer } from './svid-ca-server.mjs';
import { productionNodeFlags } from './node-flags.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const jsonFile = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const profileDir = args.includes('--profile') ? args[args.indexOf('--profile') + 1] : undefined;
const poolRateArg = args.includes('--pool-rate') ? Number(args[args.indexOf('--pool-rate') + 1]) : undefined;
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : undefined;
// The server's node flags: production's (the Dockerfile's NODE_OPTIONS) unless --node-args gives others
// (e.g. "--max-semi-space-size=16 --trace-gc"; "" for none), and where to keep each scenario's server log.
const serverNodeArgs = args.includes('--node-args') ? args[args.indexOf('--node-args') + 1].split(' ').filter(Boolean) : productionNodeFlags();
const keepLogsDir = args.includes('--keep-logs') ? args[args.indexOf('--keep-logs') + 1] : undefined;
// svid-ca's --workers (default: its own default, one per core).
const workersArg = args.includes('--workers') ? args[args.indexOf('--workers') + 1] : undefined;
// The ec-p256-pkcs11 row's --pkcs11-sessions (default: svid-ca's own, 4), to see how the session pool relates to throughput.
const pkcs11SessionsArg = args.includes('--pkcs11-sessions') ? args[args.indexOf('--pkcs11-sessions') + 1] : undefined;
const CORES = cpus().length;
// Each per-certificate row (and transport) first sends --warmup seconds of its own distinct requests (default 2; 1
// with --quick; 0 for none), not measured: its figures are the server's steady state, as bench/floor.mjs and
// bench/compare-go.mjs measure and as issue #14 measured ("15 s after 2 s warm-up"). Without it a row counts the
// fresh server's JIT compilation (TurboFan on its background threads) against ~15 s of certificates. The storm
// (a cold burst by design) and cpu-attack (the attacker runs from the start) have none.
const WARMUP_MS = Number(args.includes('--warmup') ? args[args.indexOf('--warmup') + 1] : QUICK ? 1 : 2) * 1000;

const SCENARIOS = [
  { name: 'ec-p256', title: 'EC P-256 signer, P-256 CSRs, 64 callers', signer: 'dev', csrKey: 'ec-p256', callers: 64, durationMs: QUICK ? 5_000 : 30_000, poolRate: poolRateArg ?? 3_000 },
  { name: 'ec-p256-pkcs11', title: 'EC P-256 signer key on a SoftHSM2 token (PKCS#11, default --pkcs11-sessions 4), P-256 CSRs, 64 callers', signer: 'pkcs11', csrKey: 'ec-p256', callers: 64, durationMs: QUICK ? 5_000 : 30_000, poolRate: poolRateArg ?? 3_000 },
  { name: 'rsa-2048', title: 'RSA-2048 signer, RSA-2048 CSRs, 64 callers', signer: 'rsa-2048', csrKey: 'rsa-2048', callers: 64, durationMs: QUICK ? 5_000 : 30_000, poolRate: poolRateArg ?? 2_000 },
  // Steady-state renewals: 1,000 workloads renewing over and over, each with its own token (the
  // server's verified-token cache answers all but the first of each), a fresh key and CSR every time.
  { name: 'renewals', title: 'EC P-256, 64 callers, 1,000 workloads renewing (tokens reused, fresh key per CSR)', signer: 'dev', csrKey: 'ec-p256', callers: 64, identities: 1_000, durationMs: QUICK ? 5_000 : 30_000, poolRate: poolRateArg ?? 3_000 },
  // Not a certificate: the cost of one unary call through grpc-js over TLS and HTTP/2 with a handler that does nothing, the floor under every row above.
  { name: 'transport', title: 'grpc.health.v1 Health/Check on the same TLS connections (transport floor), 64 callers', signer: 'dev', health: true, callers: 64, durationMs: QUICK ? 3_000 : 10_000, poolRate: 10_000 },
  // Issue #19: the renewals load beside one stolen token sending 3,300-extension CSRs (~23 KB) from 256 connections.
  { name: 'cpu-attack', title: 'renewals (64 callers, 1,000 workloads) beside one token sending 3,300-extension CSRs from 256 connections', signer: 'dev', csrKey: 'ec-p256', callers: 64, identities: 1_000, durationMs: QUICK ? 5_000 : 30_000, poolRate: poolRateArg ?? 3_000, attackers: 256 },
  { name: 'storm', title: `storm: ${QUICK ? '1,000' : '10,000'} identities at once, ${QUICK ? 100 : 1000} callers, agent retries`, signer: 'dev', csrKey: 'ec-p256', callers: QUICK ? 100 : 1000, count: QUICK ? 1_000 : 10_000, retry: true, distinctSources: true },
].filter((s) => !only || only.includes(s.name));

const log = (...a) => process.stderr.write(`[bench] ${a.join(' ')}\n`);
// What the figures were measured on: the server and the load generator run on this same node binary; `openssl
// speed` runs the machine's openssl CLI, which may be another OpenSSL than the one inside node.
const OPENSSL_CLI = execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim();
const RUNTIME_LINE = `runtime: Node ${process.version} with OpenSSL ${process.versions.openssl} (server, load generator, node:crypto); server node flags: ${serverNodeArgs.join(' ') || '(none)'}; openssl speed: ${OPENSSL_CLI}; ${CORES} cores; ${WARMUP_MS > 0 ? `${WARMUP_MS / 1000} s warm-up per row before it is measured (not the storm or cpu-attack)` : 'no warm-up (--warmup 0)'}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `openssl speed -multi <cores>`: sign/s and verify/s of the algorithm on all cores. */
function opensslSpeed(alg) {
  const out = execFileSync('openssl', ['speed', '-seconds', QUICK ? '1' : '3', '-multi', String(CORES), alg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const line = out.split('\n').reverse().find((l) => (alg.startsWith('rsa') ? /^rsa\s+\d+ bits/.test(l.trim()) : /ecdsa \(nistp256\)/.test(l)));
  const nums = line.trim().split(/\s+/).slice(-2).map(Number);
  return { sign: nums[0], verify: nums[1] };
}

/** Issuances per second the CPU allows: one CSR verify + one sign each, all cores. */
const limitOf = (s) => 1 / (1 / s.sign + 1 / s.verify);

/**
 * What node:crypto (OpenSSL 3) costs per certificate on one core, measured in this process: the
 * cryptography every issuance must do whatever the ASN.1 and transport cost. A CSR brings a key
 * never seen before, so it is imported (JWK, as src/pki/fast-csr.ts does) and used once; the leaf
 * is signed with a key made once; the token is an RS256 JWT (kube-apiserver's default).
 */
function cryptoFloor() {
  const n = QUICK ? 500 : 2_000;
  const data = Buffer.alloc(400, 7);
  const csrKeys = Array.from({ length: n }, () => generateKeyPairSync('ec', { namedCurve: 'P-256' }));
  const csrJwks = csrKeys.map((k) => k.publicKey.export({ format: 'jwk' }));
  const csrSigs = csrKeys.map((k) => sign('sha256', data, k.privateKey));
  const signer = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaSig = sign('sha256', data, rsa.privateKey);
  const usPer = (f) => {
    f(0);
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) f(i);
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / n;
  };
  const importUs = usPer((i) => createPublicKey({ key: csrJwks[i], format: 'jwk' }));
  const importVerifyUs = usPer((i) => verify('sha256', data, createPublicKey({ key: csrJwks[i], format: 'jwk' }), csrSigs[i]));
  const signUs = usPer(() => sign('sha256', data, signer));
  const tokenUs = usPer(() => verify('sha256', data, rsa.publicKey, rsaSig));
  const r = (x) => Math.round(x);
  return { csrKeyImportUs: r(importUs), csrVerifyUs: r(importVerifyUs - importUs), leafSignUs: r(signUs), rs256VerifyUs: r(tokenUs), totalUs: r(importVerifyUs + signUs + tokenUs) };
}

function startServer(dir, extraArgs, serverEnv = process.env) {
  const nodeArgs = [...serverNodeArgs, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
  return startSvidCa(dir, nodeArgs, [...(workersArg ? ['--workers', workersArg] : []), ...extraArgs], serverEnv);
}

/** One probe as kubelet makes it: a new connection, GET, time to the full answer. */
function probe(port, path) {
  const start = performance.now();
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 5_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ ms: performance.now() - start, ok: res.statusCode === 200 }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ ms: performance.now() - start, ok: false }));
  });
}

// loadgen.mjs cancels a call its server has not answered 10 s after the call's 30 s grpc-timeout.
const LOADGEN_CALL_TIMEOUT_MS = 40_000;

/** The server's gauges that say what it still holds (in-flight calls, queues, transport state), or why they could not be read. */
function serverGauges(monitoringPort) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: monitoringPort, path: '/metrics', agent: false, timeout: 5_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve(text.split('\n').filter((l) => !l.startsWith('#') && /in_flight|inflight|pending|queue|transport/.test(l)).join('\n')));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (err) => resolve(`(server metrics unreadable: ${err.message})`));
  });
}

function forkLoadgen() {
  return forkMessenger(join(ROOT, 'bench', 'loadgen.mjs'));
}

/**
 * Issue #17: the dev intermediate's key imported into a fresh SoftHSM2 token (own SOFTHSM2_CONF),
 * the cacerts folder without its key, and the serve flags that sign through the token.
 */
function softHsmSigner(dir, devCacerts) {
  const base = join(dir, 'softhsm');
  const cacerts = join(base, 'cacerts');
  mkdirSync(join(base, 'tokens'), { recursive: true });
  mkdirSync(cacerts, { recursive: true });
  const conf = join(base, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${join(base, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const util = (a) => execFileSync('softhsm2-util', a, { env, stdio: ['ignore', 'ignore', 'inherit'] });
  util(['--init-token', '--free', '--label', 'svid-ca', '--so-pin', '5678', '--pin', '1234']);
  util(['--import', join(devCacerts, 'ca-key.pem'), '--token', 'svid-ca', '--label', 'intermediate', '--id', 'a1', '--pin', '1234']);
  for (const f of ['ca-cert.pem', 'cert-chain.pem', 'root-cert.pem']) copyFileSync(join(devCacerts, f), join(cacerts, f));
  writeFileSync(join(base, 'pin'), '1234\n', { mode: 0o600 });
  const extra = ['--cacerts', cacerts, '--signing-key', 'pkcs11:token=svid-ca;object=intermediate', '--pkcs11-module', '/usr/lib/softhsm/libsofthsm2.so', '--pkcs11-pin-file', join(base, 'pin')];
  if (pkcs11SessionsArg) extra.push('--pkcs11-sessions', pkcs11SessionsArg);
  return { extra, env };
}

async function runScenario(s, dir, env, speed) {
  log(`${s.name}: ${s.title}`);
  let extra = [];
  let rootPem = readFileSync(join(env.cacertsDir, 'root-cert.pem'), 'utf8');
  let signerPem = readFileSync(join(env.cacertsDir, 'ca-cert.pem'), 'utf8');
  if (s.signer === 'rsa-2048') {
    const cacerts = join(dir, 'rsa-cacerts');
    const root = createRootCa({ key: 'rsa-2048', ttlMs: 30 * 86_400_000, organization: 'svid-ca bench', commonName: 'bench RSA root' });
    const files = createIntermediateCa({ root, key: 'rsa-2048', ttlMs: 7 * 86_400_000, organization: 'svid-ca bench', commonName: 'bench RSA intermediate' });
    mkdirSync(cacerts, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(cacerts, name), text, { mode: 0o600 });
    extra = ['--cacerts', cacerts];
    rootPem = files['root-cert.pem'];
    signerPem = files['ca-cert.pem'];
  }
  let serverEnv = process.env;
  if (s.signer === 'pkcs11') ({ extra, env: serverEnv } = softHsmSigner(dir, env.cacertsDir));
  const warm = s.count === undefined && !s.attackers ? Math.ceil((WARMUP_MS / 1000) * s.poolRate) : 0;
  const count = s.count ?? warm + Math.ceil((s.durationMs / 1000) * s.poolRate);
  const jwks = JSON.parse(readFileSync(env.jwksFile, 'utf8'));
  const lg = forkLoadgen();
  const t = performance.now();
  lg.child.send({
    type: 'prepare',
    count,
    offset: 0,
    health: !!s.health,
    generator: {
      csrKey: s.csrKey,
      keyPoolSize: s.csrKey === 'rsa-2048' ? 64 : 0,
      trustDomain: 'cluster.local',
      validitySeconds: 86_400,
      identities: s.identities ?? 0,
      issuedAt: Math.floor(Date.now() / 1000),
      jwt: { signingKeyPem: readFileSync(env.signingKeyFile, 'utf8'), kid: jwks.keys[0].kid, alg: jwks.keys[0].alg ?? 'RS256', issuer: env.issuer },
    },
  });
  await lg.next('ready', 600_000);
  log(`${s.name}: ${count} ${s.health ? 'health checks' : 'distinct requests'} pre-generated in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  // The attacker: its own load generator, one identity, hostile CSRs (generate.mjs `attack`).
  const attacker = s.attackers ? forkLoadgen() : undefined;
  if (attacker) {
    const generator = { csrKey: 'ec-p256', keyPoolSize: 0, trustDomain: 'cluster.local', validitySeconds: 86_400, identities: 0, attack: true, issuedAt: Math.floor(Date.now() / 1000), jwt: { signingKeyPem: readFileSync(env.signingKeyFile, 'utf8'), kid: jwks.keys[0].kid, alg: jwks.keys[0].alg ?? 'RS256', issuer: env.issuer } };
    // 1,000 distinct hostile requests (~30 MB), sent round and round: none is in flight twice at once.
    attacker.child.send({ type: 'prepare', count: 1_000, offset: 0, health: false, generator });
    await attacker.next('ready', 600_000);
  }

  const server = await startServer(dir, extra, serverEnv);
  try {
    const pid = server.child.pid;
    let probes = [];
    let rssMax = 0;
    let ownMax = 0;
    let probing = true;
    const prober = (async () => {
      while (probing) {
        const [h, r] = await Promise.all([probe(server.monitoringPort, '/healthz'), probe(server.monitoringPort, '/readyz')]);
        probes.push(h, r);
        rssMax = Math.max(rssMax, memoryKiB(pid, 'VmRSS'));
        ownMax = Math.max(ownMax, ownMemoryKiB(pid));
        await sleep(50);
      }
    })();
    await sleep(300);
    probes = [];
    const target = { port: server.grpcPort, rootPem, serverName: 'localhost', signerPem };
    // Every wait is bounded. Connecting all callers: 60 s. The run: its duration (a storm's requests:
    // 60 s), then each caller's last call, which loadgen.mjs gives up on after LOADGEN_CALL_TIMEOUT_MS
    // per attempt (up to 5 attempts with retries), plus a minute's margin.
    const explain = async () => `server ${s.name} (log ${server.logFile}), gauges now:\n${await serverGauges(server.monitoringPort)}`;
    const runMs = (s.durationMs ?? 60_000) + (s.retry ? 5 : 1) * LOADGEN_CALL_TIMEOUT_MS + 60_000;
    let attackResult;
    if (attacker) {
      attacker.child.send({ type: 'run', callers: s.attackers, durationMs: s.durationMs, retry: false, cycle: true, target });
      await attacker.next('started', 60_000, explain);
      attackResult = attacker.next('result', runMs, explain);
      attackResult.catch(() => {});
    }
    if (warm > 0) {
      // The warm-up slice [0, warm) of the pool, then the measured run from `warm` on.
      lg.child.send({ type: 'run', callers: s.callers, durationMs: WARMUP_MS, retry: false, from: 0, to: warm, target });
      await lg.next('started', 60_000, explain);
      await lg.next('finished', WARMUP_MS + 2 * LOADGEN_CALL_TIMEOUT_MS, explain);
      const warmResult = await lg.next('result', 60_000, explain);
      const warmErrors = Object.entries(warmResult.codes).filter(([k]) => k !== 'OK');
      if (warmErrors.length || warmResult.badResponses) throw new Error(`${s.name}: the warm-up had errors: ${JSON.stringify(warmResult.codes)}, ${warmResult.badResponses} bad responses`);
    }
    lg.child.send({ type: 'run', callers: s.callers, durationMs: s.durationMs, retry: !!s.retry, distinctSources: !!s.distinctSources, from: warm, target });
    await lg.next('started', 60_000, explain);
    const cpu0 = cpuSeconds(pid);
    await lg.next('finished', runMs, explain);
    const cpu1 = cpuSeconds(pid);
    probing = false;
    // Calls the server never answered (neither status nor reset) within their grpc-timeout and 10 s more:
    // said loudly, with the server's gauges read while it still runs, and the bench exits non-zero.
    const result = await lg.next('result', 60_000, explain);
    const attack = await attackResult;
    for (const [who, r] of [['load generator', result], ['attacker', attack]]) {
      if (!r?.codes.no_answer) continue;
      process.exitCode = 1;
      log(`${s.name}: FAILED: the server never answered ${r.codes.no_answer} calls of the ${who} (cancelled ${LOADGEN_CALL_TIMEOUT_MS / 1000} s after sending); first ones: ${JSON.stringify(r.unanswered)}`);
      log(`${s.name}: ${await explain()}`);
    }
    await prober;
    lg.child.send({ type: 'exit' });
    attacker?.child.send({ type: 'exit' });
    const seconds = result.elapsedMs / 1000;
    const issuedPerSec = result.issued / seconds;
    const errors = Object.fromEntries(Object.entries(result.codes).filter(([k]) => k !== 'OK'));
    if (result.badResponses > 0) errors.BAD_RESPONSE = result.badResponses;
    const sp = s.csrKey === 'rsa-2048' ? speed.rsa2048 : speed.ecdsap256;
    return {
      scenario: s.name,
      title: s.title,
      requests: result.requests,
      issued: result.issued,
      errors,
      retries: result.retries,
      seconds: Number(seconds.toFixed(2)),
      poolExhausted: result.exhausted,
      issuedPerSec: Math.round(issuedPerSec),
      p50ms: Number(result.p50.toFixed(1)),
      p90ms: Number(result.p90.toFixed(1)),
      p99ms: Number(result.p99.toFixed(1)),
      maxMs: Number(result.max.toFixed(1)),
      serverCores: Number(((cpu1 - cpu0) / seconds).toFixed(2)),
      serverCpuUsPerCert: Math.round(((cpu1 - cpu0) * 1e6) / Math.max(1, result.issued)),
      loadgenCores: Number((result.loadgenCpuSeconds / seconds).toFixed(2)),
      // Two views of peak memory: the largest total RSS sampled every 50 ms across the server's
      // processes at one moment, and the sum of each process's own high-water mark (an upper bound:
      // the processes need not peak together).
      peakRssMiB: Math.round(rssMax / 1024),
      hwmSumMiB: Math.round(memoryKiB(pid, 'VmHWM') / 1024),
      peakOwnMiB: Math.round(ownMax / 1024),
      probeMaxMs: Number(Math.max(...probes.map((p) => p.ms)).toFixed(1)),
      probeFailures: probes.filter((p) => !p.ok).length,
      opensslLimitPerSec: Math.round(limitOf(sp)),
      efficiency: s.health ? null : Number((issuedPerSec / limitOf(sp)).toFixed(3)),
      sampledResponsesChecked: result.sampled,
      // The honest figures above were measured beside this attacker: its calls by gRPC status.
      ...(attack ? { attackerCodes: attack.codes } : {}),
    };
  } finally {
    await stopServer(server);
    if (keepLogsDir) {
      mkdirSync(keepLogsDir, { recursive: true });
      copyFileSync(server.logFile, join(keepLogsDir, `${s.name}.log`));
    }
    if (lg.child.exitCode === null) lg.child.kill();
    if (attacker && attacker.child.exitCode === null) attacker.child.kill();
  }
}

/** The performance issue's targets, judged on this run's rows (skipped for scenarios not run or --quick ones). */
function verdicts(rows) {
  const by = Object.fromEntries(rows.map((r) => [r.scenario, r]));
  const out = [];
  const judge = (what, ok, figure) => out.push(`${ok ? 'met    ' : 'NOT met'}  ${what}: ${figure}`);
  // Issue #14 (Node 24): server CPU per certificate.
  const ec = by['ec-p256'];
  const renewals = by.renewals;
  const rsa = by['rsa-2048'];
  if (renewals) judge('renewals <= 200 us of server CPU per certificate', renewals.serverCpuUsPerCert <= 200, `${renewals.serverCpuUsPerCert} us`);
  if (ec) judge('ec-p256 <= 250 us of server CPU per certificate', ec.serverCpuUsPerCert <= 250, `${ec.serverCpuUsPerCert} us`);
  if (rsa) judge('rsa-2048 <= 450 us of server CPU per certificate', rsa.serverCpuUsPerCert <= 450, `${rsa.serverCpuUsPerCert} us`);
  // The earlier performance issue's rates (they depend on the cores the server gets, not only on svid-ca).
  if (ec) {
    judge('ec-p256 >= 6,000 issued/s with zero errors', ec.issuedPerSec >= 6000 && Object.keys(ec.errors).length === 0, `${ec.issuedPerSec}/s, errors ${JSON.stringify(ec.errors)}`);
    judge('ec-p256 p99 <= 50 ms', ec.p99ms <= 50, `${ec.p99ms} ms`);
  }
  if (rsa) judge('rsa-2048 >= 3,000 issued/s', rsa.issuedPerSec >= 3000, `${rsa.issuedPerSec}/s`);
  const storm = by.storm;
  if (storm) {
    judge('storm: every request issued within 5 s', storm.issued === storm.requests && storm.seconds <= 5, `${storm.issued} of ${storm.requests} in ${storm.seconds} s`);
    judge('storm: under 512 MiB summed over the processes, shared pages once', storm.peakOwnMiB < 512, `${storm.peakOwnMiB} MiB (VmRSS sum ${storm.peakRssMiB}, HWM sum ${storm.hwmSumMiB})`);
    judge('storm: /healthz and /readyz within 100 ms', storm.probeMaxMs <= 100 && storm.probeFailures === 0, `max ${storm.probeMaxMs} ms, ${storm.probeFailures} failures`);
  }
  return out;
}

function table(rows) {
  const head = ['scenario', 'requests', 'errors', 'issued/s', 'p50 ms', 'p90 ms', 'p99 ms', 'server cores', 'server us/cert', 'loadgen cores', 'peak RSS MiB (sampled / HWM sum)', 'peak MiB, shared pages once', 'probe max ms', 'efficiency'];
  const body = rows.map((r) => [
    r.scenario + (r.poolExhausted ? ' (pool used up)' : ''),
    String(r.requests),
    Object.keys(r.errors).length ? Object.entries(r.errors).map(([k, v]) => `${k}:${v}`).join(' ') : '0',
    String(r.issuedPerSec),
    String(r.p50ms),
    String(r.p90ms),
    String(r.p99ms),
    String(r.serverCores),
    String(r.serverCpuUsPerCert),
    String(r.loadgenCores),
    `${r.peakRssMiB} / ${r.hwmSumMiB}`,
    String(r.peakOwnMiB),
    String(r.probeMaxMs),
    r.efficiency === null ? 'n/a (no certificate)' : `${(r.efficiency * 100).toFixed(1)}% of ${r.opensslLimitPerSec}/s`,
  ]);
  const lines = [head, ...body].map((cols) => `| ${cols.join(' | ')} |`);
  lines.splice(1, 0, `|${head.map(() => '---').join('|')}|`);
  return lines.join('\n');
}

const dir = mkdtempSync(join(tmpdir(), 'svid-ca-bench-'));
try {
  const env = await ensureDevEnvironment(join(dir, 'dev'));
  log(RUNTIME_LINE);
  log(`openssl speed on ${CORES} cores (${QUICK ? 1 : 3} s per operation)...`);
  const speed = { ecdsap256: opensslSpeed('ecdsap256') };
  if (SCENARIOS.some((s) => s.csrKey === 'rsa-2048')) speed.rsa2048 = opensslSpeed('rsa2048');
  for (const [k, v] of Object.entries(speed)) log(`openssl ${k}: sign ${v.sign}/s, verify ${v.verify}/s -> ${Math.round(limitOf(v))} issuances/s`);
  const floor = cryptoFloor();
  const floorLine = `node:crypto per EC P-256 certificate, one core: CSR key import ${floor.csrKeyImportUs} us + CSR verify ${floor.csrVerifyUs} us + leaf sign ${floor.leafSignUs} us + RS256 token verify ${floor.rs256VerifyUs} us = ${floor.totalUs} us`;
  log(floorLine);
  const rows = [];
  for (const s of SCENARIOS) rows.push(await runScenario(s, dir, env, speed));
  // A --quick run is a smoke test (5 s, a tenth of the storm): its figures are not the targets' measure.
  const targets = QUICK ? undefined : verdicts(rows);
  const out = { date: new Date().toISOString(), node: process.version, nodeOpenssl: process.versions.openssl, serverNodeArgs, opensslCli: OPENSSL_CLI, cores: CORES, quick: QUICK, warmupSeconds: WARMUP_MS / 1000, openssl: speed, cryptoFloor: floor, scenarios: rows, targets };
  process.stdout.write(`\n${RUNTIME_LINE}\n\n${table(rows)}\n\n${floorLine}\n`);
  if (targets) process.stdout.write(`\nTargets of the performance issue, this run:\n${targets.join('\n')}\n\n`);
  else process.stdout.write('\n');
  for (const r of rows) {
    process.stdout.write(`${r.scenario}: ${r.title}; ${r.issued} ${r.efficiency === null ? 'answered SERVING' : 'issued'} in ${r.seconds} s, ${r.retries} retries, ${r.sampledResponsesChecked} sampled responses checked, max latency ${r.maxMs} ms, probe failures ${r.probeFailures}${r.attackerCodes ? `; attacker calls: ${JSON.stringify(r.attackerCodes)}` : ''}\n`);
  }
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify(out, null, 2) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
