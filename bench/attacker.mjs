// The attacker of `npm run soak -- --attack` (issue #19), forked by soak.mjs. No token, as any pod in
// the mesh could: `connections` TLS connections from `sources` loopback addresses (127.0.1.x), each
// holding every stream the server allows with a CreateCertificate request that announces 65,000 bytes
// and sends all but the last one (a new stream `reopenMs` after the server ends one), plus 210 plain
// TCP sockets from 127.0.2.1 that never start TLS (re-opened when closed). On 'stop' it closes all and
// sends its counts back.
import http2 from 'node:http2';
import { connect as tcpConnect } from 'node:net';

const STATUS = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
const IDLE_SOCKETS = 210;
const stats = { streamsOpened: 0, streamEnds: {}, socketsOpened: 0 };
const open = new Set();
let running = true;
let target;

const frame = Buffer.alloc(5 + 64_999, 0x41);
frame[0] = 0;
frame.writeUInt32BE(65_000, 1);

function holdStream(session) {
  if (!running || session.destroyed || session.closed) return;
  let stream;
  try {
    stream = session.request({ ':method': 'POST', ':path': '/istio.v1.auth.IstioCertificateService/CreateCertificate', 'content-type': 'application/grpc', te: 'trailers' });
  } catch {
    return;
  }
  stats.streamsOpened++;
  let status = 'reset';
  const take = (h) => {
    if (h['grpc-status'] !== undefined) status = STATUS[Number(h['grpc-status'])] ?? String(h['grpc-status']);
  };
  stream.on('error', () => {});
  stream.on('response', take);
  stream.on('trailers', take);
  stream.on('close', () => {
    stats.streamEnds[status] = (stats.streamEnds[status] ?? 0) + 1;
    setTimeout(() => holdStream(session), target.reopenMs);
  });
  stream.resume();
  stream.write(frame);
}

function connection(n) {
  if (!running) return;
  const session = http2.connect(`https://localhost:${target.port}`, { ca: target.rootPem, host: '127.0.0.1', localAddress: `127.0.1.${1 + (n % target.sources)}` });
  open.add(session);
  session.on('error', () => {});
  // As many streams as the server's SETTINGS allow.
  session.once('remoteSettings', (s) => {
    for (let i = 0; i < (s.maxConcurrentStreams ?? 8); i++) holdStream(session);
  });
  session.once('close', () => {
    open.delete(session);
    setTimeout(() => connection(n), 200);
  });
}

function idleSocket() {
  if (!running) return;
  const socket = tcpConnect({ port: target.port, host: '127.0.0.1', localAddress: '127.0.2.1' });
  stats.socketsOpened++;
  open.add(socket);
  socket.on('error', () => {});
  socket.once('close', () => {
    open.delete(socket);
    setTimeout(idleSocket, 200);
  });
}

process.on('message', (m) => {
  if (m === 'stop') {
    running = false;
    for (const o of open) o.destroy();
    process.send(stats, () => process.exit(0));
    return;
  }
  target = m;
  for (let n = 0; n < target.connections; n++) connection(n);
  for (let n = 0; n < IDLE_SOCKETS; n++) idleSocket();
});
