// The load generator: its own process (forked by run.mjs, talking over IPC). It pre-generates
// distinct requests in worker threads, opens one HTTP/2 connection per caller (raw node:http2 over
// TLS, as an agent holds one channel), and then only writes pre-framed gRPC messages.
//
// Messages from run.mjs: {type:'prepare', ...} -> {type:'ready'}; {type:'run', ...} ->
// {type:'started'}, {type:'finished'} (as soon as the last call ends, so run.mjs reads the server's
// CPU then), {type:'result', ...}; {type:'status'} at any time -> {type:'status', inflight, oldest}
// (the calls still open, for run.mjs's report when a wait runs out).
import { X509Certificate } from 'node:crypto';
import http2 from 'node:http2';
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CREATE_CERTIFICATE_PATH, responseType } from './proto.mjs';

const STATUS_NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
// istio-agent's CA client retry policy: these codes, up to 5 calls, 100 ms exponential backoff.
const RETRYABLE = new Set([1, 2, 4, 8, 10, 13, 14, 'transport']);
const MAX_CALLS = 5;
const BACKOFF_MS = 100;
// Every wait here is bounded: a call the server has not answered (status or reset) this long after its
// grpc-timeout (30 s, which the server enforces) is cancelled and counted as NO_ANSWER, with what was
// seen of it kept for the report; a connection not up within CONNECT_TIMEOUT_MS is given up.
const GRPC_TIMEOUT_MS = 30_000;
const CALL_TIMEOUT_MS = GRPC_TIMEOUT_MS + 10_000;
const CONNECT_TIMEOUT_MS = 10_000;

/** Calls sent and not yet closed: id -> what is known of each (for 'status' and NO_ANSWER reports). */
const inflight = new Map();
let callIds = 0;
/** Up to 10 calls abandoned as NO_ANSWER in this run, as describeCall gives them. */
let unanswered = [];

function describeCall(e) {
  return { path: e.path, request: e.index, streamId: e.stream?.id, ageMs: Math.round(performance.now() - e.start), responseHeaders: e.headers, bytesReceived: e.bytes, sessionClosed: e.session.closed || e.session.destroyed };
}

/** What this load generator is waiting for now: the number of open calls and the 10 oldest. */
function status() {
  const all = [...inflight.values()];
  return { type: 'status', inflight: all.length, oldest: all.slice(0, 10).map(describeCall) };
}

let requests = [];

// The transport scenario: grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""),
// framed for gRPC; the answer is HealthCheckResponse{status: SERVING} (field 1 varint 1).
const HEALTH_PATH = '/grpc.health.v1.Health/Check';
const HEALTH_FRAME = Buffer.from([0, 0, 0, 0, 0]);
const SERVING = Buffer.from([0x08, 0x01]);

async function prepare(msg) {
  if (msg.health) {
    requests = Array.from({ length: msg.count }, () => ({ frame: HEALTH_FRAME, path: HEALTH_PATH }));
    return;
  }
  const workers = Math.max(1, Math.min(cpus().length, 4));
  const per = Math.ceil(msg.count / workers);
  const parts = await Promise.all(
    Array.from({ length: workers }, (_, w) => {
      const start = w * per;
      const count = Math.max(0, Math.min(per, msg.count - start));
      return new Promise((resolve, reject) => {
        const worker = new Worker(new URL('./generate.mjs', import.meta.url), { workerData: { ...msg.generator, start: start + msg.offset, count } });
        worker.once('message', (items) => {
          resolve(items);
          worker.terminate();
        });
        worker.once('error', reject);
      });
    }),
  );
  requests = parts.flat().map((r) => ({ frame: Buffer.from(r.frame), authorization: r.authorization, identity: r.identity }));
}

/**
 * The loopback address caller `c` connects from when a run asks for distinct sources (the storm): 127.1.x.y, one per
 * caller (up to 64,000), as pods connect from their own IPs. The whole of 127.0.0.0/8 is the loopback on Linux. From
 * one address, svid-ca's --max-handshakes-per-source (64) refuses most of 1,000 simultaneous handshakes.
 */
const sourceAddress = (c) => `127.1.${Math.floor(c / 250)}.${(c % 250) + 1}`;

function connect(target, localAddress) {
  return new Promise((resolve) => {
    const session = http2.connect(`https://127.0.0.1:${target.port}`, { ca: target.rootPem, servername: target.serverName, ...(localAddress ? { localAddress } : {}) });
    session.on('error', () => {});
    const timer = setTimeout(() => session.destroy(), CONNECT_TIMEOUT_MS);
    const done = () => {
      clearTimeout(timer);
      resolve(session);
    };
    session.once('connect', done);
    session.once('close', done);
  });
}

/**
 * One CreateCertificate call: resolves with the gRPC status ('transport' when the stream ended without
 * one, 'no_answer' when nothing ended it within CALL_TIMEOUT_MS) and, when asked, the response body.
 */
function call(session, req, keepBody, index) {
  return new Promise((resolve) => {
    let status;
    const body = keepBody ? [] : undefined;
    let stream;
    try {
      stream = session.request(
        req.path
          ? { ':method': 'POST', ':path': req.path, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '30S' }
          : {
              ':method': 'POST',
              ':path': CREATE_CERTIFICATE_PATH,
              'content-type': 'application/grpc',
              te: 'trailers',
              'grpc-timeout': '30S',
              authorization: req.authorization,
              clusterid: 'Kubernetes',
            },
      );
    } catch {
      resolve({ code: 'transport' });
      return;
    }
    const id = callIds++;
    const entry = { path: req.path ?? CREATE_CERTIFICATE_PATH, index, start: performance.now(), session, stream, headers: false, bytes: 0, abandoned: false };
    inflight.set(id, entry);
    const timer = setTimeout(() => {
      entry.abandoned = true;
      if (unanswered.length < 10) unanswered.push(describeCall(entry));
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }, CALL_TIMEOUT_MS);
    stream.on('response', (h) => {
      entry.headers = true;
      if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
    });
    stream.on('trailers', (t) => {
      if (t['grpc-status'] !== undefined) status = Number(t['grpc-status']);
    });
    stream.on('data', (d) => {
      entry.bytes += d.length;
      body?.push(d);
    });
    stream.on('error', () => {});
    stream.on('close', () => {
      clearTimeout(timer);
      inflight.delete(id);
      resolve({ code: entry.abandoned ? 'no_answer' : (status ?? 'transport'), body: body && Buffer.concat(body) });
    });
    stream.end(req.frame);
  });
}

/** The leaf of a sampled response must name the request's identity and verify under the signing certificate. */
function checkResponse(body, identity, signerPublicKey) {
  if (identity === undefined) return body.length === 7 && body.readUInt32BE(1) === 2 && body.subarray(5).equals(SERVING);
  try {
    const len = body.readUInt32BE(1);
    const res = responseType.decode(body.subarray(5, 5 + len));
    const leaf = new X509Certificate(res.certChain[0]);
    return res.certChain.length >= 2 && leaf.subjectAltName === `URI:${identity}` && leaf.verify(signerPublicKey);
  } catch {
    return false;
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function run(msg) {
  const target = msg.target;
  const source = (c) => (msg.distinctSources ? sourceAddress(c) : undefined);
  const sessions = await Promise.all(Array.from({ length: msg.callers }, (_, c) => connect(target, source(c))));
  const signerPublicKey = new X509Certificate(target.signerPem).publicKey;
  const latencies = new Float64Array(requests.length);
  let done = 0;
  // `from`/`to` (bench/compare-go.mjs): run only requests [from, to) of the pool, e.g. a warm-up slice first.
  let next = msg.from ?? 0;
  const end = Math.min(msg.to ?? requests.length, requests.length);
  let retries = 0;
  let exhausted = false;
  unanswered = [];
  const codes = {};
  const samples = [];
  const sampleEvery = Math.max(1, Math.floor(requests.length / 200));

  process.send({ type: 'started' });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = msg.durationMs ? t0 + msg.durationMs : Infinity;
  const caller = async (c) => {
    for (;;) {
      if (performance.now() >= deadline) return;
      // `cycle` (the cpu-attack scenario's attacker) sends its requests round and round until the deadline.
      const i = msg.cycle ? next++ % requests.length : next++;
      if (i >= end) {
        exhausted = msg.durationMs !== undefined;
        return;
      }
      const req = requests[i];
      const keep = i % sampleEvery === 0;
      const start = performance.now();
      let result;
      for (let attempt = 1; ; attempt++) {
        if (sessions[c].destroyed || sessions[c].closed) sessions[c] = await connect(target, source(c));
        result = await call(sessions[c], req, keep, i);
        if (result.code === 0 || !msg.retry || attempt >= MAX_CALLS || !RETRYABLE.has(result.code)) break;
        retries++;
        await new Promise((r) => setTimeout(r, BACKOFF_MS * 2 ** (attempt - 1)));
      }
      const name = typeof result.code === 'number' ? STATUS_NAMES[result.code] ?? String(result.code) : result.code;
      codes[name] = (codes[name] ?? 0) + 1;
      if (result.code === 0) {
        latencies[done++] = performance.now() - start;
        if (keep) samples.push({ body: result.body, identity: req.identity });
      }
    }
  };
  await Promise.all(sessions.map((_, c) => caller(c)));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  process.send({ type: 'finished' });

  for (const s of sessions) s.close();
  let badResponses = 0;
  for (const s of samples) if (!checkResponse(s.body, s.identity, signerPublicKey)) badResponses++;
  const sorted = latencies.subarray(0, done).sort();
  return {
    type: 'result',
    requests: Object.values(codes).reduce((a, b) => a + b, 0),
    issued: codes.OK ?? 0,
    codes,
    retries,
    exhausted,
    elapsedMs,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    loadgenCpuSeconds: (cpu.user + cpu.system) / 1e6,
    sampled: samples.length,
    badResponses,
    unanswered,
  };
}

process.on('message', async (msg) => {
  if (msg.type === 'prepare') {
    await prepare(msg);
    process.send({ type: 'ready', count: requests.length });
  } else if (msg.type === 'run') {
    process.send(await run(msg));
  } else if (msg.type === 'status') {
    process.send(status());
  } else if (msg.type === 'exit') {
    process.exit(0);
  }
});
