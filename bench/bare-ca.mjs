// A benchmark peer for bench/floor.mjs (issue #14), not a product: CreateCertificate on a bare node:http2 TLS
// server (no grpc-js), one process. `node bench/bare-ca.mjs --config FILE --listen HOST:PORT [--crypto-only |
// --echo]`; FILE is JSON { cacertsDir, jwksFile, issuer, servingCert, servingKey } (bench/floor.mjs writes it).
// Prints one JSON line with its address when it serves; stops on SIGTERM.
//
// Default: svid-ca's own building blocks (dist/) and nothing around them: the JWT authenticator with its
// verified-token cache, the CSR reader (key import, signature check, SANs), the SAN rule, the Authority's leaf
// (TTL policy, leaf encoder, ECDSA signature), the protobuf codec; answered with headers, one DATA frame and
// trailers as grpc-js answers. Left out: grpc-js, transport limits, admission queue, deduplication, metrics,
// audit line, drain, workers.
// --crypto-only: per call only the protobuf decode and the cryptography of a certificate with bare node:crypto
// (the token's RS256 signature unless this token was verified before, as a verified-token cache would; the CSR
// read: key import + signature check; one ECDSA signature over a leaf-sized TBS), answered with the first
// call's response.
// --echo: the first call's response to every later call, nothing read or signed: node:http2 + TLS alone for
// CreateCertificate's message shapes.
import crypto from 'node:crypto';
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..');
const { Authority, loadCacerts } = await import(join(ROOT, 'dist', 'ca', 'index.js'));
const { JwtAuthenticator, authorizeSans } = await import(join(ROOT, 'dist', 'auth', 'index.js'));
const { readCsrPem } = await import(join(ROOT, 'dist', 'pki', 'index.js'));
const { loadServices, CREATE_CERTIFICATE_PATH } = await import(join(ROOT, 'dist', 'server', 'proto.js'));

const args = process.argv.slice(2);
const opt = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const config = JSON.parse(readFileSync(opt('--config'), 'utf8'));
const [host, port] = opt('--listen', '127.0.0.1:0').split(':');
const MODE = args.includes('--echo') ? 'echo' : args.includes('--crypto-only') ? 'crypto-only' : 'pipeline';

const authority = new Authority(loadCacerts(config.cacertsDir), { defaultTtlMs: 86_400_000, maxTtlMs: 90 * 86_400_000 });
const jwt = new JwtAuthenticator({ issuer: config.issuer, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: config.jwksFile });
const method = loadServices().ca.service.CreateCertificate;
const HEADERS = { ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-accept-encoding': 'identity,deflate,gzip' };
const TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' };
// --crypto-only's keys and tokens already verified; --echo's and --crypto-only's fixed answer.
const bare = {
  tokenKey: crypto.createPublicKey({ key: JSON.parse(readFileSync(config.jwksFile, 'utf8')).keys[0], format: 'jwk' }),
  signingKey: crypto.createPrivateKey(readFileSync(join(config.cacertsDir, 'ca-key.pem'))),
  tbs: crypto.randomBytes(420),
  seen: new Set(),
};
let fixedAnswer;

function fail(stream, code, message) {
  if (!stream.destroyed) stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-status': String(code), 'grpc-message': encodeURI(message) }, { endStream: true });
}

function answer(stream, framed) {
  if (stream.destroyed) return;
  stream.respond(HEADERS, { waitForTrailers: true });
  stream.once('wantTrailers', () => stream.sendTrailers(TRAILERS));
  stream.end(framed);
}

function cryptoOnly(headers, message) {
  const request = method.requestDeserialize(message);
  const token = String(headers.authorization ?? '').slice('Bearer '.length);
  if (!bare.seen.has(token)) {
    const dot = token.lastIndexOf('.');
    if (!crypto.verify('sha256', Buffer.from(token.slice(0, dot)), bare.tokenKey, Buffer.from(token.slice(dot + 1), 'base64url'))) throw new Error('token signature does not verify');
    if (bare.seen.size >= 10_000) bare.seen.clear();
    bare.seen.add(token);
  }
  readCsrPem(request.csr);
  crypto.sign('sha256', bare.tbs, bare.signingKey);
}

async function createCertificate(stream, headers, message) {
  if (fixedAnswer && MODE === 'echo') return answer(stream, fixedAnswer);
  if (fixedAnswer && MODE === 'crypto-only') {
    cryptoOnly(headers, message);
    return answer(stream, fixedAnswer);
  }
  const request = method.requestDeserialize(message);
  const caller = await jwt.authenticate({ authorization: [String(headers.authorization ?? '')], clusterId: [] });
  if (!caller) return fail(stream, 16, 'no credentials');
  const csr = readCsrPem(request.csr);
  authorizeSans(csr.sans, caller.identity);
  const issued = await authority.issueCertificate({ identity: caller.identity, csr, requestedTtlSeconds: BigInt(request.validity_duration ?? 0) });
  const body = method.responseSerialize({ cert_chain: issued.certChain });
  const framed = Buffer.allocUnsafe(body.length + 5);
  framed[0] = 0;
  framed.writeUInt32BE(body.length, 1);
  body.copy(framed, 5);
  if (MODE !== 'pipeline') fixedAnswer = framed;
  answer(stream, framed);
}

const server = http2.createSecureServer({ cert: readFileSync(config.servingCert), key: readFileSync(config.servingKey) });
server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  if (headers[':path'] !== CREATE_CERTIFICATE_PATH) return fail(stream, 12, 'unimplemented');
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    createCertificate(stream, headers, all.subarray(5, 5 + all.readUInt32BE(1))).catch((err) => fail(stream, err?.name === 'AuthError' ? 16 : 3, String(err?.message ?? err)));
  });
});
server.listen(Number(port), host, () => process.stdout.write(JSON.stringify({ msg: 'bare-ca serving', mode: MODE, grpc: `${host}:${server.address().port}` }) + '\n'));
process.on('SIGTERM', () => {
  jwt.close();
  server.close();
  setTimeout(() => process.exit(0), 200).unref();
});
