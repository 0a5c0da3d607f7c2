// svid-ca soak test: `npm run soak [-- --duration 10m] [-- --callers 16] [-- --reload-every 15s] [-- --node-args "..."]`.
// --attack (issue #19): attackers beside the honest callers, without a token: --attack-connections
// TLS connections (default 150) from --attack-sources loopback addresses (default 4), each holding
// as many streams as the server allows that announce a 65,000-byte request and send all but its last
// byte (a new one --attack-reopen after the server ends one, default 1s), plus 210 plain TCP sockets
// that never start TLS; reports honest p50/p99 and the server's peak RSS.
// Runs the built server (one process) under steady issuance with a mix of bad requests and periodic
// cacerts reloads (Kubernetes-style ..data swaps), samples RSS and open descriptors, and fails on
// growth beyond a bound, on any lost request (deadline), or on any unexpected status code.
import { fork, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { createCaClient } from '../dist/client/index.js';
import { createIntermediateCa, createRootCa } from '../dist/ca/index.js';
import { ensureDevEnvironment, mintDevToken } from '../dist/dev/index.js';
import { parseDuration } from '../dist/duration.js';
import { productionNodeFlags } from './node-flags.mjs';
import { buildCsrPem, generateKeyPair } from '../dist/pki/index.js';

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const durationMs = parseDuration(arg('--duration', '10m'));
const reloadEveryMs = parseDuration(arg('--reload-every', '15s'));
const callers = Number(arg('--callers', '16'));
const attack = args.includes('--attack');
const attackConnections = Number(arg('--attack-connections', '150'));
const attackSources = Number(arg('--attack-sources', '4'));
// How soon an attacker opens a new stream after the server ended one: 1 s holds streams as in the
// issue; 50 ms churns (each refused stream is re-sent at once).
const attackReopenMs = parseDuration(arg('--attack-reopen', '1s'));
const sampleEveryMs = Math.max(1000, Math.min(10_000, Math.floor(durationMs / 30)));
// Node flags for the server. The default caps V8's young generation: on Node 24 V8 grows it under steady
// allocation (measured in a 60 s soak: heap total 55 -> 174 MiB while the heap in use stayed 32-72 MiB, RSS +107 MiB,
// still growing at 120 s), which is heap sizing, not a leak, and would hide a leak's growth or fail on none.
// With 16 MiB semi-spaces the same soak settles (RSS +26 MiB, same throughput). The default is production's
// flags (the Dockerfile's NODE_OPTIONS, which caps the semi-spaces so); `--node-args ""` soaks with none.
const serverNodeArgs = args.includes('--node-args') ? arg('--node-args', '').split(' ').filter(Boolean) : productionNodeFlags();
if (!durationMs || !reloadEveryMs) throw new Error('usage: soak [--duration 10m] [--reload-every 15s] [--callers 16]');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => process.stdout.write(s + '\n');
// Every wait ends: a promise that outlives its bound rejects naming what did not happen (the soak then fails).
const within = (promise, ms, what) => {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};
const EXIT_TIMEOUT_MS = 15_000;
// The whole run is bounded too: the duration plus start-up, drain and shutdown.
const watchdogMs = durationMs + 180_000;
const watchdog = setTimeout(() => fail(`the soak did not finish within ${Math.round(watchdogMs / 1000)} s`), watchdogMs);
watchdog.unref();
let server;
function fail(why) {
  log(`SOAK FAILED: ${why}`);
  server?.kill('SIGKILL');
  try { rmSync(work, { recursive: true, force: true }); } catch { /* not made yet */ }
  process.exit(1);
}
// A soak that throws (or is killed by the watchdog) never leaves its server running.
process.on('exit', () => { if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL'); });
process.on('unhandledRejection', (err) => fail(err instanceof Error ? err.message : String(err)));

const work = mkdtempSync(join(tmpdir(), 'svid-ca-soak-'));
const freePort = () => new Promise((resolve) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); }); });

// A cacerts volume with two intermediates under one root, swapped like the kubelet does.
const root = createRootCa({ key: 'ec-p256', ttlMs: 3650 * 86_400_000, organization: 'soak' });
const intermediates = [1, 2].map((n) => createIntermediateCa({ root, key: 'ec-p256', ttlMs: 365 * 86_400_000, organization: 'soak', commonName: `soak intermediate ${n}` }));
const vol = join(work, 'cacerts');
mkdirSync(vol);
let generation = 0;
function publish(files) {
  const stamp = `..gen_${++generation}`;
  mkdirSync(join(vol, stamp));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(vol, stamp, name), text, { mode: name.endsWith('key.pem') ? 0o600 : 0o644 });
  let old;
  try { old = readlinkSync(join(vol, '..data')); } catch { old = undefined; }
  symlinkSync(stamp, join(vol, '..data_tmp'));
  renameSync(join(vol, '..data_tmp'), join(vol, '..data'));
  for (const name of Object.keys(files)) { try { symlinkSync(join('..data', name), join(vol, name)); } catch { /* linked */ } }
  if (old) rmSync(join(vol, old), { recursive: true, force: true });
}
publish(intermediates[0]);

const dev = await ensureDevEnvironment(join(work, 'dev'));
const [grpcPort, monPort] = [await freePort(), await freePort()];
server = spawn(process.execPath, [...serverNodeArgs, 'dist/cli.js', 'serve', '--workers', '1', '--cacerts', vol, '--jwt-issuer', dev.issuer, '--jwks-file', dev.jwksFile,
  '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`, '--reload-interval', '2s', '--max-ttl', '48h', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
for (let i = 0; ; i++) {
  try { if ((await fetch(`http://127.0.0.1:${monPort}/readyz`, { signal: AbortSignal.timeout(2000) })).status === 200) break; } catch { /* starting */ }
  if (i > 200) fail('svid-ca did not become ready within 20 s');
  if (server.exitCode !== null || server.signalCode !== null) fail(`svid-ca exited during start-up (${server.exitCode ?? server.signalCode})`);
  await sleep(100);
}

const identities = Array.from({ length: 50 }, (_, i) => ({ ns: `ns${i % 5}`, sa: `sa${i}` }));
const tokens = await Promise.all(identities.map((x) => mintDevToken(dev, { namespace: x.ns, serviceAccount: x.sa, ttlSeconds: Math.ceil(durationMs / 1000) + 3600 })));
const keys = Array.from({ length: 64 }, () => generateKeyPair('ec-p256').privateKey);
const client = createCaClient({ address: `localhost:${grpcPort}`, rootPem: root.certPem });

// The request mix and the status each kind must get.
const kinds = [
  { name: 'valid', weight: 80, expect: 'OK' },
  { name: 'bad token', weight: 5, expect: 'UNAUTHENTICATED' },
  { name: 'foreign SAN', weight: 5, expect: 'PERMISSION_DENIED' },
  { name: 'garbage CSR', weight: 5, expect: 'INVALID_ARGUMENT' },
  { name: 'TTL over max', weight: 5, expect: 'INVALID_ARGUMENT' },
];
const pick = () => { let r = Math.random() * 100; for (const k of kinds) if ((r -= k.weight) < 0) return k; return kinds[0]; };
const counts = new Map();
const unexpected = [];
let lost = 0;
const latencies = [];

function oneCall() {
  const kind = pick();
  const i = Math.floor(Math.random() * identities.length);
  const id = `spiffe://cluster.local/ns/${identities[i].ns}/sa/${identities[i].sa}`;
  const key = keys[Math.floor(Math.random() * keys.length)];
  const csr = kind.name === 'garbage CSR' ? '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'
    : buildCsrPem({ privateKey: key, sans: [{ type: 'uri', value: kind.name === 'foreign SAN' ? `${id}-other` : id }] });
  const token = kind.name === 'bad token' ? `${tokens[i].slice(0, -4)}AAAA` : tokens[i];
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const t0 = performance.now();
  return new Promise((resolve) => {
    client.CreateCertificate({ csr, validity_duration: kind.name === 'TTL over max' ? String(72 * 3600) : '3600' }, md, { deadline: Date.now() + 10_000 }, (err) => {
      const code = err ? grpc.status[err.code] : 'OK';
      latencies.push(performance.now() - t0);
      counts.set(code, (counts.get(code) ?? 0) + 1);
      if (err?.code === grpc.status.DEADLINE_EXCEEDED) lost++;
      else if (code !== kind.expect) unexpected.push(`${kind.name}: got ${code} ${err?.details ?? ''}`);
      resolve();
    });
  });
}

// Attackers (--attack): no token, as any pod in the mesh could; their own process (bench/attacker.mjs),
// so that their work does not slow the honest callers' event loop.
let attacker;
let attackStats = { streamsOpened: 0, streamEnds: {}, socketsOpened: 0 };
if (attack) {
  attacker = fork(new URL('./attacker.mjs', import.meta.url), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  attacker.send({ port: grpcPort, rootPem: root.certPem, connections: attackConnections, sources: attackSources, reopenMs: attackReopenMs });
  attacker.on('message', (m) => { attackStats = m; });
}

const start = Date.now();
let running = true;
const loops = Array.from({ length: callers }, async () => { while (running) await oneCall(); });
let nextReload = start + reloadEveryMs;
let reloads = 0;
const samples = [];
const fdCount = () => readdirSync(`/proc/${server.pid}/fd`).length;
const rssMiB = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))[1]) / 1024;
log(`soak: ${Math.round(durationMs / 1000)} s, ${callers} callers, reload every ${Math.round(reloadEveryMs / 1000)} s, sample every ${sampleEveryMs / 1000} s; server on Node ${process.version} ${serverNodeArgs.join(' ') || '(no node flags)'}`);
log('t(s)   issued  denied  reloads  RSS(MiB)  fds');
while (Date.now() - start < durationMs) {
  await sleep(Math.min(sampleEveryMs, Math.max(0, nextReload - Date.now())) || 1);
  if (Date.now() >= nextReload) {
    publish(intermediates[++reloads % 2]);
    nextReload += reloadEveryMs;
  }
  if (samples.length === 0 || Date.now() - samples.at(-1).t * 1000 - start >= sampleEveryMs) {
    const s = { t: Math.round((Date.now() - start) / 1000), issued: counts.get('OK') ?? 0, denied: [...counts].filter(([c]) => c !== 'OK').reduce((a, [, n]) => a + n, 0), rss: rssMiB(), fds: fdCount() };
    samples.push(s);
    log(`${String(s.t).padEnd(6)} ${String(s.issued).padEnd(7)} ${String(s.denied).padEnd(7)} ${String(reloads).padEnd(8)} ${s.rss.toFixed(1).padEnd(9)} ${s.fds}`);
  }
}
running = false;
// Each call has a 10 s deadline, so the loops end within it.
await within(Promise.all(loops), 30_000, 'the callers to finish their last calls');
if (attacker) {
  attacker.send('stop');
  await within(new Promise((r) => attacker.once('exit', r)), 15_000, 'the attacker process to exit');
}
client.close();
await sleep(3000); // the last swap is picked up within the 2 s reload interval
const metrics = await (await fetch(`http://127.0.0.1:${monPort}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
if (attack) for (const line of metrics.split('\n')) if (/^svid_ca_transport_refused_total\{.*\} [1-9]|^svid_ca_nodejs_(heap_size_(used|total)|external_memory)_bytes /.test(line)) log(line);
const reloadOk = Number(/svid_ca_bundle_reloads_total\{result="success"\} (\d+)/.exec(metrics)?.[1] ?? 0);
// A server that ignores SIGTERM fails the soak (and is killed) instead of hanging CI.
const exited = new Promise((r) => server.once('exit', (c, signal) => r(c ?? signal)));
server.kill('SIGTERM');
let exitProblem;
const exitCode = await within(exited, EXIT_TIMEOUT_MS, 'svid-ca to exit after SIGTERM').catch((err) => {
  server.kill('SIGKILL');
  exitProblem = `${err.message} (killed)`;
});
rmSync(work, { recursive: true, force: true });

// Growth: the steady state after warm-up (first fifth) against the end.
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const warm = samples.slice(Math.max(1, Math.floor(samples.length / 5)), Math.max(2, Math.floor(samples.length / 5) + 3));
const end = samples.slice(-3);
const rssGrowth = median(end.map((s) => s.rss)) - median(warm.map((s) => s.rss));
const fdGrowth = median(end.map((s) => s.fds)) - median(warm.map((s) => s.fds));
const RSS_BOUND_MIB = 64;
const FD_BOUND = 32;
const problems = [];
if (unexpected.length) problems.push(`${unexpected.length} unexpected status codes, e.g. ${unexpected.slice(0, 3).join('; ')}`);
if (lost) problems.push(`${lost} requests lost (deadline exceeded)`);
// Under --attack the attackers' own sockets and churn move RSS and descriptors: the bound is then
// the peak RSS, 512 MiB (the storm's bound; the Deployment's memory limit is above it: SECURITY.md, "Before authentication").
const ATTACK_RSS_PEAK_BOUND_MIB = 512;
const rssPeak = Math.max(...samples.map((x) => x.rss));
if (attack && rssPeak > ATTACK_RSS_PEAK_BOUND_MIB) problems.push(`server RSS peaked at ${rssPeak.toFixed(1)} MiB under attack (bound ${ATTACK_RSS_PEAK_BOUND_MIB})`);
if (!attack && rssGrowth > RSS_BOUND_MIB) problems.push(`RSS grew ${rssGrowth.toFixed(1)} MiB after warm-up (bound ${RSS_BOUND_MIB})`);
if (!attack && fdGrowth > FD_BOUND) problems.push(`open descriptors grew by ${fdGrowth} (bound ${FD_BOUND})`);
if (reloads > 0 && reloadOk < reloads) problems.push(`${reloads} bundle swaps but ${reloadOk} successful reloads`);
if (exitProblem) problems.push(exitProblem);
else if (exitCode !== 0) problems.push(`svid-ca exited ${exitCode} on SIGTERM`);
const sorted = [...latencies].sort((a, b) => a - b);
const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0);
log(`\nhonest callers: ${sorted.length} calls, p50 ${pct(50).toFixed(1)} ms, p99 ${pct(99).toFixed(1)} ms; server RSS peak ${rssPeak.toFixed(1)} MiB`);
if (attack) {
  log(`attack: ${attackConnections} connections from ${attackSources} addresses (streams re-opened ${attackReopenMs} ms after each end) + 210 idle TCP sockets; ${attackStats.streamsOpened} held streams opened, ended by the server with ${Object.entries(attackStats.streamEnds).map(([c, n]) => `${c} ${n}`).join(', ')}; ${attackStats.socketsOpened} idle sockets opened`);
}
log(`\nresult: ${[...counts].map(([c, n]) => `${c} ${n}`).join(', ')}; reloads ${reloadOk}/${reloads}; RSS growth ${rssGrowth.toFixed(1)} MiB; fd growth ${fdGrowth}`);
if (problems.length) {
  log(`SOAK FAILED: ${problems.join('; ')}`);
  process.exit(1);
}
log('SOAK PASSED');
