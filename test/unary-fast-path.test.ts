/**
 * Issue #14: the CreateCertificate fast path (src/server/unary-fast-path.ts) answers on the wire
 * exactly as grpc-js does. Two real servers over TLS, one with the fast path and one without
 * (--no-grpc-fast-path); a raw node:http2 client (not grpc-js) sends the same request to both, and
 * each answer (HTTP status, headers, trailers, gRPC status and message, RST code) must be equal and be
 * the one named here. A grpc-js client gets a chain that `openssl verify` accepts on the fast path.
 */
import * as http2 from 'node:http2';
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { CREATE_CERTIFICATE_PATH, loadServices } from '../src/server/index.js';
import { installUnaryFastPath } from '../src/server/unary-fast-path.js';
import { makeCacerts, opensslVerify, removeDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';
import { within } from './helpers/deadline.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const MAX_REQUEST_BYTES = 16 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let issuer: TestIssuer;
let pki: ReturnType<typeof makeCacerts>;
let fast: TestServer;
let slow: TestServer;
let token: string;

beforeAll(async () => {
  issuer = await createTestIssuer();
  pki = makeCacerts();
  fast = await startTestServer({ cacerts: pki.dir, issuer, maxRequestBytes: MAX_REQUEST_BYTES, grpcFastPath: true });
  slow = await startTestServer({ cacerts: pki.dir, issuer, maxRequestBytes: MAX_REQUEST_BYTES, grpcFastPath: false });
  token = await issuer.token({ namespace: 'demo', serviceAccount: 'web', pod: 'web-1' });
});

afterAll(async () => {
  await fast?.close();
  await slow?.close();
  removeDir(pki.dir);
});

const csr = () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] });
const method = () => loadServices().ca.service.CreateCertificate!;

/** A gRPC message: the 5-byte prefix (compressed flag, big-endian length) and `body`. */
function frame(body: Buffer, compressedFlag = 0): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = compressedFlag;
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}
const requestBody = () => method().requestSerialize({ csr: csr(), validity_duration: '3600' });

interface Answer {
  headers: Record<string, unknown>;
  trailers: Record<string, unknown> | undefined;
  dataBytes: number;
  rstCode: number | undefined;
  /** Whether the server's transport limits count the connection as authenticated afterwards (onAuthenticated(getPeer())). */
  authenticated: boolean;
}

interface RawRequest {
  headers?: Record<string, string>;
  /** Request headers left out. */
  omit?: string[];
  /** Written in order; END_STREAM after the last unless `hold`. */
  chunks: Buffer[];
  hold?: boolean;
  /** Reset the stream (RST_STREAM CANCEL) this many ms after the chunks are written. */
  resetAfterMs?: number;
}

const VARYING = new Set(['date']);
function keep(h: http2.IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(Object.entries(h).filter(([k]) => !VARYING.has(k)));
}

/** One request on a fresh raw HTTP/2 connection over TLS (the root verifies the server); how the server answered. */
async function raw(server: TestServer, r: RawRequest): Promise<Answer> {
  const session = http2.connect(`https://localhost:${server.service.grpcPort}`, { ca: pki.root.certPem });
  session.on('error', () => undefined);
  try {
    await once(session, 'remoteSettings');
    const headers: Record<string, string> = {
      ':method': 'POST',
      ':path': CREATE_CERTIFICATE_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${token}`,
      ...r.headers,
    };
    for (const name of r.omit ?? []) delete headers[name];
    const stream = session.request(headers);
    stream.on('error', () => undefined);
    const answer: Answer = { headers: {}, trailers: undefined, dataBytes: 0, rstCode: undefined, authenticated: false };
    stream.on('response', (h) => {
      answer.headers = keep(h);
      // A held request has its answer: end our side so the stream closes (else it waits for --request-receive-timeout).
      if (r.hold && h['grpc-status'] !== undefined) stream.end();
    });
    stream.on('trailers', (h) => (answer.trailers = keep(h)));
    stream.on('data', (d: Buffer) => (answer.dataBytes += d.length));
    const closed = once(stream, 'close');
    r.chunks.forEach((c, i) => (i === r.chunks.length - 1 && !r.hold ? stream.end(c) : stream.write(c)));
    if (r.chunks.length === 0 && !r.hold) stream.end();
    if (r.resetAfterMs !== undefined) {
      await sleep(r.resetAfterMs);
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }
    await within(closed, 15_000, 'the stream to close');
    answer.rstCode = stream.rstCode;
    await sleep(20);
    answer.authenticated = server.service.transport.isAuthenticated(`${session.socket.localAddress}:${session.socket.localPort}`);
    return answer;
  } finally {
    session.destroy();
  }
}

/** The same raw request to both servers: equal answers, returned for the case's own assertions. */
async function sameOnBoth(r: RawRequest): Promise<Answer> {
  const [a, b] = await Promise.all([raw(fast, r), raw(slow, r)]);
  // A certificate's bytes differ between calls; its presence must not.
  expect({ ...a, dataBytes: a.dataBytes > 0 }).toEqual({ ...b, dataBytes: b.dataBytes > 0 });
  return a;
}

const status = (a: Answer) => ({ status: Number((a.trailers ?? a.headers)['grpc-status']), message: decodeURIComponent(String((a.trailers ?? a.headers)['grpc-message'] ?? '')) });

describe('the fast path answers as grpc-js does (raw HTTP/2 client, fast path on vs off)', () => {
  it('is in use on the default server and not on the other', async () => {
    const before = fast.service.fastPath!.streams;
    const ok = await sameOnBoth({ chunks: [frame(requestBody())] });
    expect(fast.service.fastPath!.streams).toBe(before + 1);
    expect(slow.service.fastPath).toBeUndefined();
    expect(status(ok)).toEqual({ status: grpc.status.OK, message: 'OK' });
    expect(ok.headers).toMatchObject({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-encoding': 'identity', 'grpc-accept-encoding': 'identity,deflate,gzip' });
    expect(ok.dataBytes).toBeGreaterThan(5);
    expect(ok.authenticated).toBe(true);
  });

  it('a wrong content-type: HTTP 415, no gRPC status', async () => {
    const a = await sameOnBoth({ headers: { 'content-type': 'text/plain' }, chunks: [frame(requestBody())] });
    expect(a.headers[':status']).toBe(415);
    expect(a.headers['grpc-status']).toBeUndefined();
  });

  it('no te header: served (grpc-js does not require it)', async () => {
    const a = await sameOnBoth({ omit: ['te'], chunks: [frame(requestBody())] });
    expect(status(a)).toEqual({ status: grpc.status.OK, message: 'OK' });
  });

  it('grpc-timeout expiring before the request is complete: DEADLINE_EXCEEDED, trailers-only', async () => {
    const a = await sameOnBoth({ headers: { 'grpc-timeout': '200m' }, chunks: [frame(requestBody()).subarray(0, 40)], hold: true });
    expect(a.trailers).toBeUndefined();
    expect(status(a)).toEqual({ status: grpc.status.DEADLINE_EXCEEDED, message: 'Deadline exceeded' });
  });

  it('an unreadable grpc-timeout: INTERNAL naming it', async () => {
    const a = await sameOnBoth({ headers: { 'grpc-timeout': 'soon' }, chunks: [frame(requestBody())] });
    expect(status(a)).toEqual({ status: grpc.status.INTERNAL, message: 'Invalid grpc-timeout value "soon"' });
  });

  it('the compressed flag without grpc-encoding: read as identity (issued)', async () => {
    const a = await sameOnBoth({ chunks: [frame(requestBody(), 1)] });
    expect(status(a)).toEqual({ status: grpc.status.OK, message: 'OK' });
  });

  it('the compressed flag with grpc-encoding gzip and bytes that are not gzip: INTERNAL', async () => {
    const a = await sameOnBoth({ headers: { 'grpc-encoding': 'gzip' }, chunks: [frame(requestBody(), 1)] });
    expect(status(a)).toEqual({ status: grpc.status.INTERNAL, message: 'Failed to decompress message' });
  });

  it('a message longer than --max-request-bytes: RESOURCE_EXHAUSTED from its prefix alone', async () => {
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(MAX_REQUEST_BYTES + 1, 1);
    const a = await sameOnBoth({ chunks: [prefix], hold: true });
    expect(status(a)).toEqual({ status: grpc.status.RESOURCE_EXHAUSTED, message: `Received message larger than max (${MAX_REQUEST_BYTES + 1} vs ${MAX_REQUEST_BYTES})` });
  });

  it('two messages in a unary call: UNIMPLEMENTED', async () => {
    const a = await sameOnBoth({ chunks: [Buffer.concat([frame(requestBody()), frame(requestBody())])] });
    expect(status(a)).toEqual({ status: grpc.status.UNIMPLEMENTED, message: `Received a second request message for server streaming method ${CREATE_CERTIFICATE_PATH}` });
  });

  it('a message split across DATA frames is reassembled (issued)', async () => {
    const whole = frame(requestBody());
    const a = await sameOnBoth({ chunks: [whole.subarray(0, 3), whole.subarray(3, 100), whole.subarray(100)] });
    expect(status(a)).toEqual({ status: grpc.status.OK, message: 'OK' });
  });

  it('a prefix one octet per DATA frame, then the message in pieces, is reassembled (issued)', async () => {
    const whole = frame(requestBody());
    const chunks = [...[0, 1, 2, 3, 4].map((i) => whole.subarray(i, i + 1)), whole.subarray(5, 6), whole.subarray(6, 200), whole.subarray(200)];
    const a = await sameOnBoth({ chunks });
    expect(status(a)).toEqual({ status: grpc.status.OK, message: 'OK' });
  });

  it('a message of zero bytes is an empty request (no CSR): the same refusal from both', async () => {
    const a = await sameOnBoth({ chunks: [frame(Buffer.alloc(0))] });
    expect(status(a).status).not.toBe(grpc.status.OK);
  });

  it('a truncated message and END_STREAM: UNIMPLEMENTED (no request message)', async () => {
    const a = await sameOnBoth({ chunks: [frame(requestBody()).subarray(0, 60)] });
    expect(status(a)).toEqual({ status: grpc.status.UNIMPLEMENTED, message: `Received no request message for server streaming method ${CREATE_CERTIFICATE_PATH}` });
  });

  it('bytes that are not an IstioCertificateRequest: INTERNAL', async () => {
    const a = await sameOnBoth({ chunks: [frame(Buffer.from([0x0a, 0xff, 0xff, 0xff]))] });
    expect(status(a)).toEqual({ status: grpc.status.INTERNAL, message: 'Error deserializing request' });
  });

  it('a handler refusal (no token) is a trailers-only UNAUTHENTICATED with the same message', async () => {
    const a = await sameOnBoth({ headers: { authorization: '' }, chunks: [frame(requestBody())] });
    expect(a.trailers).toBeUndefined();
    expect(status(a).status).toBe(grpc.status.UNAUTHENTICATED);
    expect(status(a).message).toMatch(/^request authenticate failure: /);
  });

  it('client RST_STREAM mid-call: nothing is sent back, the call is released, the server serves on', async () => {
    const a = await sameOnBoth({ chunks: [frame(requestBody())], resetAfterMs: 0 });
    expect(a.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(a.trailers).toBeUndefined();
    for (const s of [fast, slow]) {
      // The call leaves the in-flight gauge (the admission queue released it) and the next call is answered.
      for (let i = 0; i < 100 && (await s.service.metrics.inFlight.get()).values[0]!.value !== 0; i++) await sleep(50);
      expect((await s.service.metrics.inFlight.get()).values[0]!.value).toBe(0);
      expect(status(await raw(s, { chunks: [frame(requestBody())] }))).toEqual({ status: grpc.status.OK, message: 'OK' });
    }
  });

  it('another path on the same server stays with grpc-js: UNIMPLEMENTED', async () => {
    const a = await sameOnBoth({ headers: { ':path': '/istio.v1.auth.IstioCertificateService/Nope' }, chunks: [frame(requestBody())] });
    expect(status(a)).toEqual({ status: grpc.status.UNIMPLEMENTED, message: 'The server does not implement the method /istio.v1.auth.IstioCertificateService/Nope' });
  });
});

describe('a grpc-js client on the fast path', () => {
  it('gets a chain openssl verifies', async () => {
    const before = fast.service.fastPath!.streams;
    const client = clientFor(fast, pki.root.certPem);
    try {
      const { res, err } = await call(client, { csr: csr(), validity_duration: '3600' }, { authorization: `Bearer ${token}` });
      expect(err).toBeUndefined();
      expect(fast.service.fastPath!.streams).toBe(before + 1);
      const chain = res!.cert_chain;
      expect(opensslVerify(pki.root.certPem, [pki.signer.certPem], chain[0]!, ['-x509_strict', '-purpose', 'sslclient'])).toContain('OK');
    } finally {
      client.close();
    }
  });
});

describe('installUnaryFastPath refuses grpc-js internals it does not know', () => {
  const noop = () => undefined;
  const options = { path: CREATE_CERTIFICATE_PATH, handler: noop, maxReceiveMessageBytes: 1024, deserialize: () => ({ csr: '', validity_duration: '0', metadata: null }), serialize: () => Buffer.alloc(0) };

  it('without bound HTTP/2 servers', () => {
    expect(() => installUnaryFastPath(new grpc.Server(), options)).toThrow(/grpc-js internals changed \(Server\.http2Servers\)/);
  });

  it("when the HTTP/2 server's 'stream' listener is not grpc-js's alone", async () => {
    const server = new grpc.Server({ 'grpc.enable_channelz': 0 });
    await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    try {
      const [h2] = [...(server as unknown as { http2Servers: Map<http2.Http2Server, unknown> }).http2Servers.keys()];
      h2!.on('stream', noop);
      expect(() => installUnaryFastPath(server, options)).toThrow(/grpc-js internals changed \(the HTTP\/2 server's 'stream' listener\); .*--no-grpc-fast-path/);
      // All or nothing: grpc-js's listener is still in place.
      expect(h2!.listeners('stream')[0]!.name).toBe('bound _streamHandler');
    } finally {
      server.forceShutdown();
    }
  });
});
