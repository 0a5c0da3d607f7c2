// The floor under a certificate on this machine, side by side (issue #14): `npm run build && node bench/floor.mjs
// [--rounds 3] [--duration 8] [--warmup 2] [--callers 64] [--only ec-p256,renewals,rsa-2048] [--servers LIST]
// [--runtime BIN] [--pool-rate N]
// [--json FILE]`.
//
// The same pre-generated requests (bench/loadgen.mjs, raw node:http2, as `npm run bench`) go, in turn, to servers
// that each do less than the one before, so the difference between two rows is what the lower one leaves out:
//   svid-ca      svid-ca as in production: the image's node flags, default --workers (one per core)
//   svid-ca-1    the same with --workers 1 (one process, like every row below)
//   bare         bench/bare-ca.mjs: svid-ca's own building blocks (JWT authenticator with its verified-token cache,
//                CSR reader, SAN rule, Authority and leaf encoder, protobuf) on a bare node:http2 TLS server:
//                no grpc-js, transport limits, admission queue, deduplication, metrics, audit line, drain
//   crypto-only  bench/bare-ca.mjs --crypto-only: per call only the protobuf decode and the cryptography of a
//                certificate with bare node:crypto (token RS256 verify unless seen before, CSR key import and
//                signature check, one ECDSA signature), answered with a fixed response
//   echo         bench/bare-ca.mjs --echo: a fixed response, nothing read or signed: node:http2 + TLS alone for
//                CreateCertificate's message shapes
//   go-ca        bench/go-ca (grpc-go + crypto/x509; skipped without Go, see bench/compare-go.mjs)
// Rounds alternate the order (first to last, then last to first); each run starts a fresh server, warms it up
// with the pool's first slice (not measured), then sends the rest for --duration seconds. Per run: server CPU
// per answered call (user + system, summed over the server's processes; /proc), its system part, calls/s.
// Printed: per scenario and server the median of the rounds (range) and its ratio to svid-ca, round by round.
// ec-p256 sends a fresh token per request; renewals reuses 1,000 workloads' tokens; rsa-2048 signs with an RSA-2048
// intermediate for RSA-2048 CSRs, a fresh token per request (as `npm run bench`).
// --runtime BIN runs svid-ca and bench/bare-ca.mjs on another JavaScript runtime's binary (another Node, or Bun: its
// node flags are then left out); the load generator stays on the node running this script.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { ensureDevEnvironment } = await import('../dist/dev/index.js');
const { forkMessenger } = await import('./messenger.mjs');
const { productionNodeFlags } = await import('./node-flags.mjs');
const { cpuSeconds } = await import('./proc-stats.mjs');
const { startSvidCa, stopServer } = await import('./svid-ca-server.mjs');
const { goVersion, goMissing, buildGoCa, startGoCa, startPeer } = await import('./go-ca-server.mjs');
const { benchCacerts } = await import('./bench-cacerts.mjs');

const args = process.argv.slice(2);
const opt = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const ROUNDS = Number(opt('--rounds', '3'));
const DURATION_MS = Number(opt('--duration', '8')) * 1000;
const WARMUP_MS = Number(opt('--warmup', '2')) * 1000;
const CALLERS = Number(opt('--callers', '64'));
const poolRateArg = args.includes('--pool-rate') ? Number(opt('--pool-rate')) : undefined;
const only = opt('--only', 'ec-p256,renewals,rsa-2048').split(',');
const jsonFile = opt('--json');
const SCENARIOS = [
  { name: 'ec-p256', signer: 'dev', csrKey: 'ec-p256', identities: 0, poolRate: poolRateArg ?? 6_000 },
  { name: 'renewals', signer: 'dev', csrKey: 'ec-p256', identities: 1_000, poolRate: poolRateArg ?? 6_000 },
  { name: 'rsa-2048', signer: 'rsa-2048', csrKey: 'rsa-2048', identities: 0, poolRate: poolRateArg ?? 3_500 },
].filter((s) => only.includes(s.name));
const goSkip = goMissing();
const ALL_SERVERS = ['svid-ca', 'svid-ca-1', 'bare', 'crypto-only', 'echo', 'go-ca'];
const servers = opt('--servers', ALL_SERVERS.join(',')).split(',').filter((s) => s !== 'go-ca' || !goSkip);
const unknown = servers.filter((s) => !ALL_SERVERS.includes(s));
if (unknown.length) throw new Error(`--servers: unknown ${unknown.join(', ')} (known: ${ALL_SERVERS.join(', ')})`);

const log = (...a) => process.stderr.write(`[floor] ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const RUNTIME = opt('--runtime', process.execPath);
const runtimeVersion = RUNTIME === process.execPath ? `Node ${process.version} with OpenSSL ${process.versions.openssl}` : execFileSync(RUNTIME, ['-p', '`${process.release?.name ?? "?"} ${process.version}${globalThis.Bun ? ` (Bun ${Bun.version})` : ""} with ${process.versions.boringssl ? `BoringSSL ${process.versions.boringssl.slice(0, 12)}` : `OpenSSL ${process.versions.openssl}`}`'], { encoding: 'utf8' }).trim();
// Production's node flags for node; none for another runtime (Bun has no V8 flags).
const nodeArgs = /(^|\/)node[0-9]*$/.test(RUNTIME) ? productionNodeFlags() : [];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A localhost serving certificate from the intermediate of `c` (a cacerts folder), and the config file bench/bare-ca.mjs reads. */
function prepareBare(dir, env, c, name) {
  const at = (file) => join(dir, `${name}-${file}`);
  const key = at('bare-key.pem');
  const csr = at('bare.csr');
  const leaf = at('bare-leaf.pem');
  const ext = at('bare.ext');
  writeFileSync(ext, 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n');
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-subj', '/CN=localhost', '-out', csr], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', join(c, 'ca-cert.pem'), '-CAkey', join(c, 'ca-key.pem'), '-CAcreateserial', '-CAserial', at('bare.srl'), '-days', '2', '-extfile', ext, '-out', leaf], { stdio: 'ignore' });
  writeFileSync(at('bare-chain.pem'), readFileSync(leaf, 'utf8') + readFileSync(join(c, 'ca-cert.pem'), 'utf8'));
  const config = at('bare-ca.json');
  writeFileSync(config, JSON.stringify({ cacertsDir: c, jwksFile: env.jwksFile, issuer: env.issuer, servingCert: at('bare-chain.pem'), servingKey: key }));
  return config;
}

function startBare(config, mode) {
  return startPeer('bare-ca', RUNTIME, [...nodeArgs, join(ROOT, 'bench', 'bare-ca.mjs'), '--config', config, '--listen', '127.0.0.1:0', ...(mode ? [mode] : [])]);
}

function start(name, ctx) {
  const cacerts = ctx.cacerts === ctx.env.cacertsDir ? [] : ['--cacerts', ctx.cacerts];
  switch (name) {
    case 'svid-ca':
      return startSvidCa(ctx.dir, nodeArgs, cacerts, process.env, RUNTIME);
    case 'svid-ca-1':
      return startSvidCa(ctx.dir, nodeArgs, ['--workers', '1', ...cacerts], process.env, RUNTIME);
    case 'bare':
      return startBare(ctx.bareConfig);
    case 'crypto-only':
      return startBare(ctx.bareConfig, '--crypto-only');
    case 'echo':
      return startBare(ctx.bareConfig, '--echo');
    case 'go-ca':
      return startGoCa(ctx.goBin, ctx.cacerts, ctx.env);
  }
  throw new Error(name);
}

async function measure(lg, server, target, warm) {
  const run = async (from, to, durationMs) => {
    lg.child.send({ type: 'run', callers: CALLERS, durationMs, retry: false, from, to, target: { ...target, port: server.grpcPort } });
    await lg.next('started', 60_000);
    const before = [cpuSeconds(server.child.pid), cpuSeconds(server.child.pid, true)];
    await lg.next('finished', durationMs + 100_000);
    const after = [cpuSeconds(server.child.pid), cpuSeconds(server.child.pid, true)];
    return { r: await lg.next('result', 60_000), cpu: after[0] - before[0], sys: after[1] - before[1] };
  };
  if (WARMUP_MS > 0) await run(0, warm, WARMUP_MS);
  const { r, cpu, sys } = await run(warm, undefined, DURATION_MS);
  // Every answer with grpc-status 0 counts as a call; echo and crypto-only answer with a fixed certificate, which the
  // load generator's sampled check reports as a bad response (expected for them, an error for the others).
  const answered = r.codes.OK ?? 0;
  const errors = Object.fromEntries(Object.entries({ ...r.codes, ...(r.badResponses ? { BAD_RESPONSE: r.badResponses } : {}) }).filter(([k]) => k !== 'OK'));
  return { answered, errors, usPerCall: Math.round((cpu * 1e6) / Math.max(1, answered)), sysUsPerCall: Math.round((sys * 1e6) / Math.max(1, answered)), perSec: Math.round(answered / (r.elapsedMs / 1000)), poolExhausted: r.exhausted, loadavg: Number(loadavg()[0].toFixed(1)) };
}

const dir = mkdtempSync(join(tmpdir(), 'svid-ca-floor-'));
const runs = [];
try {
  const env = await ensureDevEnvironment(join(dir, 'dev'));
  const ctx = { dir, env, goBin: join(dir, 'go-ca') };
  if (servers.includes('go-ca')) buildGoCa(ctx.goBin);
  if (goSkip) log(`go-ca left out: ${goSkip}`);
  const RUNTIME_LINE = `runtime: ${runtimeVersion} (servers; load generator: Node ${process.version}), node flags ${nodeArgs.join(' ') || '(none)'}${servers.includes('go-ca') ? `; Go CA: ${goVersion}` : ''}; ${cpus().length} cores; ${CALLERS} callers, ${WARMUP_MS / 1000} s warm-up + ${DURATION_MS / 1000} s per run, ${ROUNDS} rounds`;
  log(RUNTIME_LINE);
  const jwks = JSON.parse(readFileSync(env.jwksFile, 'utf8'));
  for (const s of SCENARIOS) {
    ctx.cacerts = benchCacerts(s.signer, dir, env);
    ctx.bareConfig = prepareBare(dir, env, ctx.cacerts, s.name);
    const target = { rootPem: readFileSync(join(ctx.cacerts, 'root-cert.pem'), 'utf8'), signerPem: readFileSync(join(ctx.cacerts, 'ca-cert.pem'), 'utf8'), serverName: 'localhost' };
    const warm = Math.ceil((WARMUP_MS / 1000) * s.poolRate);
    const count = warm + Math.ceil((DURATION_MS / 1000) * s.poolRate);
    const lg = forkMessenger(join(ROOT, 'bench', 'loadgen.mjs'));
    try {
      lg.child.send({
        type: 'prepare',
        count,
        offset: 0,
        health: false,
        generator: { csrKey: s.csrKey, keyPoolSize: s.csrKey === 'rsa-2048' ? 64 : 0, trustDomain: 'cluster.local', validitySeconds: 86_400, identities: s.identities, issuedAt: Math.floor(Date.now() / 1000), jwt: { signingKeyPem: readFileSync(env.signingKeyFile, 'utf8'), kid: jwks.keys[0].kid, alg: jwks.keys[0].alg ?? 'RS256', issuer: env.issuer } },
      });
      await lg.next('ready', 600_000);
      log(`${s.name}: ${count} requests pre-generated; the same pool goes to every server`);
      for (let round = 1; round <= ROUNDS; round++) {
        for (const name of round % 2 ? servers : [...servers].reverse()) {
          const server = await start(name, ctx);
          try {
            await sleep(300);
            const m = await measure(lg, server, target, warm);
            runs.push({ scenario: s.name, server: name, round, ...m });
            log(`${s.name} round ${round} ${name}: ${m.usPerCall} us/call (system ${m.sysUsPerCall}), ${m.perSec}/s, errors ${JSON.stringify(m.errors)}, load ${m.loadavg}`);
          } finally {
            await stopServer(server);
          }
        }
      }
    } finally {
      if (lg.child.connected) lg.child.send({ type: 'exit' });
    }
  }
  const lines = [`\n${RUNTIME_LINE}\n`];
  for (const s of SCENARIOS) {
    lines.push(`\n${s.name}: server CPU per answered call, median of ${ROUNDS} rounds (range); ratio to svid-ca of the same round, median (range)\n`);
    lines.push('| server | us/call | of which system | calls/s | / svid-ca |', '|---|---|---|---|---|');
    const of = (name) => runs.filter((r) => r.scenario === s.name && r.server === name).sort((a, b) => a.round - b.round);
    const base = of('svid-ca');
    for (const name of servers) {
      const rs = of(name);
      const us = rs.map((r) => r.usPerCall);
      const ratios = base.length === rs.length ? rs.map((r, i) => r.usPerCall / base[i].usPerCall) : [];
      const range = (xs, d = 0) => `${median(xs).toFixed(d)} (${Math.min(...xs).toFixed(d)}-${Math.max(...xs).toFixed(d)})`;
      lines.push(`| ${name} | ${range(us)} | ${median(rs.map((r) => r.sysUsPerCall))} | ${median(rs.map((r) => r.perSec))} | ${ratios.length ? range(ratios, 2) : 'n/a'} |`);
    }
  }
  const failed = runs.filter((r) => !['echo', 'crypto-only'].includes(r.server) && Object.keys(r.errors).length > 0);
  for (const r of failed) lines.push(`${r.scenario} round ${r.round} ${r.server}: errors ${JSON.stringify(r.errors)}`);
  if (failed.length) process.exitCode = 1;
  const exhausted = runs.filter((r) => r.poolExhausted).map((r) => `${r.scenario} ${r.server} round ${r.round}`);
  lines.push(`\nload average (1 min) during the runs: ${Math.min(...runs.map((r) => r.loadavg))}-${Math.max(...runs.map((r) => r.loadavg))}`);
  if (exhausted.length) lines.push(`used up the pre-generated requests before --duration ended (their rows cover the shorter time; raise --pool-rate): ${exhausted.join(', ')}`);
  lines.push('echo and crypto-only answer every call with one fixed certificate chain, so the load generator reports their sampled answers as BAD_RESPONSE on stderr: expected for them, an error for every other server.');
  process.stdout.write(lines.join('\n') + '\n');
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify({ date: new Date().toISOString(), runtime: RUNTIME_LINE, runs }, null, 2) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
