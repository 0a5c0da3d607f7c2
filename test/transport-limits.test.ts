/**
 * Issue #19 items 1, 2 and 9, provoked as an attacker would against the real server on loopback:
 * raw HTTP/2 frames from node:http2 (streams that announce a 65,000-byte gRPC message, send all but
 * the last byte and hold), plain TCP sockets that never start TLS, TLS 1.2 clients offering only
 * CBC suites. Honest callers are real grpc-js clients beside them.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { CREATE_CERTIFICATE_PATH, TransportGuard, DEFAULT_TRANSPORT_LIMITS, type TransportLimits } from '../src/server/index.js';
import { installTransportLimits } from '../src/server/transport-limits.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const csr = () => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const root = makeRoot({ notBefore: new Date(Date.now() - 86_400_000) });
const signer = makeIntermediate(root);
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
const scratch = tempDir();
afterAll(() => removeDir(scratch));

let issuer: TestIssuer;
async function server(transport: Partial<TransportLimits> = {}, extra: Partial<Parameters<typeof startTestServer>[0]> = {}) {
  issuer ??= await createTestIssuer();
  const dir = writeCacerts(tempDir(), { signer, roots: [root] });
  const s = await startTestServer({ cacerts: dir, issuer, transport, ...extra });
  cleanups.push(() => removeDir(dir), () => s.close());
  return Object.assign(s, { token: await issuer.token({ namespace: 'demo', serviceAccount: 'web' }) });
}

/** An honest caller: a real grpc-js client with a valid token, on its own connection. */
async function honest(s: TestServer & { token: string }) {
  const c = clientFor(s, root.certPem);
  try {
    return await call(c, { csr: csr() }, { authorization: `Bearer ${s.token}` });
  } finally {
    c.close();
  }
}

/** A raw HTTP/2 connection to the gRPC port, from `localAddress` (any 127.x address on Linux loopback). */
async function attacker(s: TestServer, localAddress = '127.0.0.1'): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://localhost:${s.service.grpcPort}`, { ca: root.certPem, localAddress, host: '127.0.0.1', servername: 'localhost' } as http2.SecureClientSessionOptions);
  session.on('error', () => undefined);
  cleanups.push(() => session.destroy());
  await once(session, 'remoteSettings');
  return session;
}

interface StreamEnd {
  grpcStatus?: number;
  grpcMessage?: string;
  rstCode?: number;
}

/**
 * Opens a CreateCertificate stream whose gRPC frame announces `announce` bytes, writes `send` of
 * them (partial DATA frames) and holds it open; resolves with how the server ended the stream.
 */
function heldStream(session: http2.ClientHttp2Session, announce = 65_000, send = 64_999, headers: Record<string, string> = {}): { stream: http2.ClientHttp2Stream; ended: Promise<StreamEnd> } {
  const stream = session.request({ ':method': 'POST', ':path': CREATE_CERTIFICATE_PATH, 'content-type': 'application/grpc', te: 'trailers', ...headers });
  stream.on('error', () => undefined);
  if (announce > 0) {
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(announce, 1);
    stream.write(Buffer.concat([prefix, Buffer.alloc(send, 0x41)]));
  }
  const ended = new Promise<StreamEnd>((resolve) => {
    const out: StreamEnd = {};
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) {
        out.grpcStatus = Number(h['grpc-status']);
        out.grpcMessage = decodeURIComponent(String(h['grpc-message'] ?? ''));
      }
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('close', () => resolve({ ...out, rstCode: stream.rstCode }));
    stream.resume();
  });
  return { stream, ended };
}

/** One complete unary call on a raw session; resolves with its status. */
function unary(session: http2.ClientHttp2Session, body: Buffer, headers: Record<string, string> = {}): Promise<StreamEnd> {
  const { stream, ended } = heldStream(session, 0, 0, headers);
  stream.end(body);
  return ended;
}

/** Resolves with what happened to `p` within `ms`, or 'pending'. */
const within = <T,>(p: Promise<T>, ms: number) => Promise.race([p, sleep(ms).then(() => 'pending' as const)]);

/** The protobuf of IstioCertificateRequest{csr, validity_duration} (fields 1 and 2), gRPC-framed. */
function grpcRequest(csrPem: string, validity = 3600): Buffer {
  const csrBytes = Buffer.from(csrPem);
  const varint = (n: number) => {
    const out: number[] = [];
    while (n > 0x7f) {
      out.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    out.push(n);
    return Buffer.from(out);
  };
  const body = Buffer.concat([Buffer.from([0x0a]), varint(csrBytes.length), csrBytes, Buffer.from([0x10]), varint(validity)]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

describe('memory before authentication (issue #19 item 1)', () => {
  it('a stream that never finishes its request is ended with DEADLINE_EXCEEDED after --request-receive-timeout', async () => {
    const s = await server({ requestReceiveTimeoutMs: 1000 });
    const session = await attacker(s);
    const held = heldStream(session);
    const end = await within(held.ended, 8000);
    expect(end).not.toBe('pending');
    expect(end).toMatchObject({ grpcStatus: grpc.status.DEADLINE_EXCEEDED });
    expect((end as StreamEnd).grpcMessage).toMatch(/not received completely/);
    expect(s.service.transport.stats().bufferedRequestBytes).toBe(0);
    expect((await honest(s)).err).toBeUndefined();
  });

  it('the global budget of incomplete request bytes refuses streams past it with RESOURCE_EXHAUSTED; the server serves again once the attackers go', async () => {
    const budget = 256 * 1024;
    const s = await server({ maxBufferedRequestBytes: budget, maxConnectionRequestBytes: budget });
    // 12 connections x 8 streams x 65,000 announced bytes: ~6 MB wanted against a 256 KiB budget.
    const sessions = await Promise.all(Array.from({ length: 12 }, () => attacker(s)));
    const held = sessions.flatMap((session) => Array.from({ length: 8 }, () => heldStream(session)));
    await sleep(1500);
    const { bufferedRequestBytes } = s.service.transport.stats();
    // One DATA frame (16 KiB at most) past the budget is seen before its stream is refused.
    expect(bufferedRequestBytes).toBeLessThanOrEqual(budget + 16_384);
    const ends = await Promise.all(held.map((h) => within(h.ended, 200)));
    const exhausted = ends.filter((e) => e !== 'pending' && e.grpcStatus === grpc.status.RESOURCE_EXHAUSTED);
    expect(exhausted.length).toBeGreaterThan(0);
    expect((exhausted[0] as StreamEnd).grpcMessage).toMatch(/CA overloaded/);
    const metrics = await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/metrics`);
    expect(metrics.body).toMatch(/svid_ca_transport_refused_total\{reason="buffered_request_bytes"\} [1-9]/);
    for (const session of sessions) session.destroy();
    await sleep(300);
    expect(s.service.transport.stats().bufferedRequestBytes).toBe(0);
    // The budget is given back: the server keeps serving.
    expect((await honest(s)).err).toBeUndefined();
  });

  it('a quarter of the global budget is kept for connections that have authenticated: an agent on its connection is served while anonymous callers have spent the rest', async () => {
    const budget = 256 * 1024;
    const s = await server({ maxBufferedRequestBytes: budget, maxSourceRequestBytes: budget, maxConnectionRequestBytes: budget });
    // The agent authenticates on its connection first (from 127.0.0.8).
    const agent = await attacker(s, '127.0.0.8');
    expect(await unary(agent, grpcRequest(csr()), { authorization: `Bearer ${s.token}` })).toMatchObject({ grpcStatus: grpc.status.OK });
    // Anonymous connections from another address hold incomplete requests until refused.
    const sessions = await Promise.all(Array.from({ length: 8 }, () => attacker(s, '127.0.0.9')));
    const held = sessions.flatMap((session) => Array.from({ length: 8 }, () => heldStream(session)));
    await sleep(1500);
    const buffered = s.service.transport.stats().bufferedRequestBytes;
    expect(buffered).toBeGreaterThanOrEqual(budget * 0.75 - 65_000);
    expect(buffered).toBeLessThanOrEqual(budget * 0.75 + 16_384);
    // The quarter kept back serves the authenticated connection.
    expect(await unary(agent, grpcRequest(csr()), { authorization: `Bearer ${s.token}` })).toMatchObject({ grpcStatus: grpc.status.OK });
    expect((await Promise.all(held.map((h) => within(h.ended, 100)))).some((e) => e === 'pending')).toBe(true);
  });

  it('one source address cannot hold more than --max-source-request-bytes across its connections; other sources are served meanwhile', async () => {
    const perSource = 300 * 1024;
    const s = await server({ maxSourceRequestBytes: perSource });
    const sessions = await Promise.all(Array.from({ length: 4 }, () => attacker(s, '127.0.0.7')));
    const held = sessions.flatMap((session) => Array.from({ length: 8 }, () => heldStream(session)));
    await sleep(1500);
    const ends = await Promise.all(held.map((h) => within(h.ended, 200)));
    const refused = ends.filter((e) => e !== 'pending' && e.grpcStatus === grpc.status.RESOURCE_EXHAUSTED);
    expect(refused.length).toBeGreaterThan(0);
    expect((refused[0] as StreamEnd).grpcMessage).toMatch(/from this address/);
    expect(s.service.transport.stats().bufferedRequestBytes).toBeLessThanOrEqual(perSource + 16_384);
    // The honest caller (127.0.0.1) is served while the attacker holds its share.
    expect(ends.some((e) => e === 'pending')).toBe(true);
    expect((await honest(s)).err).toBeUndefined();
  });

  it('one connection cannot hold more than --max-connection-request-bytes of incomplete requests', async () => {
    const s = await server({ maxConnectionRequestBytes: 100 * 1024 });
    const session = await attacker(s);
    const held = Array.from({ length: 8 }, () => heldStream(session));
    await sleep(1500);
    const ends = await Promise.all(held.map((h) => within(h.ended, 200)));
    const refused = ends.filter((e) => e !== 'pending' && e.grpcStatus === grpc.status.RESOURCE_EXHAUSTED);
    expect(refused.length).toBeGreaterThan(0);
    expect((refused[0] as StreamEnd).grpcMessage).toMatch(/this connection/);
    expect(s.service.transport.stats().bufferedRequestBytes).toBeLessThanOrEqual(100 * 1024 + 16_384);
    expect((await honest(s)).err).toBeUndefined();
  });

  it('a connection without an authenticated call gets few streams and a small window; its first authenticated call lifts both', async () => {
    const s = await server({ unauthenticatedStreams: 4, unauthenticatedWindowBytes: 8192 }, { limits: { maxConcurrentStreams: 100 } });
    const session = await attacker(s);
    expect(session.remoteSettings).toMatchObject({ maxConcurrentStreams: 4, initialWindowSize: 8192 });
    // An unauthenticated call leaves the connection as it was.
    expect(await unary(session, grpcRequest(csr()))).toMatchObject({ grpcStatus: grpc.status.UNAUTHENTICATED });
    expect(session.remoteSettings.maxConcurrentStreams).toBe(4);
    // An authenticated one on the same connection upgrades it.
    const upgraded = once(session, 'remoteSettings');
    expect(await unary(session, grpcRequest(csr()), { authorization: `Bearer ${s.token}` })).toMatchObject({ grpcStatus: grpc.status.OK });
    const [settings] = (await within(upgraded, 5000)) as [http2.Settings];
    expect(settings).toMatchObject({ maxConcurrentStreams: 100, initialWindowSize: 65_535 });
  });
});

describe('sockets that never finish a handshake (issue #19 item 2)', () => {
  /** A plain TCP socket that never sends a byte; resolves when the server closes it. */
  function idleSocket(port: number, localAddress: string): { socket: Socket; closed: Promise<void> } {
    const socket = tcpConnect({ port, host: '127.0.0.1', localAddress });
    socket.on('error', () => undefined);
    cleanups.push(() => socket.destroy());
    return { socket, closed: once(socket, 'close').then(() => undefined) };
  }

  it('--handshake-timeout closes a socket that never starts TLS', async () => {
    const s = await server({ handshakeTimeoutMs: 500 });
    const idle = idleSocket(s.service.grpcPort, '127.0.0.2');
    expect(await within(idle.closed, 5000)).not.toBe('pending');
    const metrics = await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/metrics`);
    expect(metrics.body).toMatch(/svid_ca_transport_refused_total\{reason="handshake_timeout"\} [1-9]/);
  });

  it('idle sockets beyond --max-connections do not lock honest callers out: half-open sockets are counted apart and capped per source', async () => {
    // The 210 sockets against --max-connections 200, scaled down.
    const s = await server({ maxHandshakesPerSource: 3, handshakeTimeoutMs: 60_000 }, { limits: { maxConnections: 4 } });
    const idle = Array.from({ length: 6 }, () => idleSocket(s.service.grpcPort, '127.0.0.2'));
    await sleep(500);
    const closedNow = (await Promise.all(idle.map((i) => within(i.closed, 50)))).filter((r) => r !== 'pending').length;
    expect(closedNow).toBe(3);
    expect(s.service.transport.stats()).toMatchObject({ handshaking: 3, established: 0 });
    for (let i = 0; i < 3; i++) expect((await honest(s)).err).toBeUndefined();
    expect(await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/readyz`)).toMatchObject({ status: 200 });
  });

  it('--max-connections-per-source caps established connections from one address; other sources are served', async () => {
    const s = await server({ maxConnectionsPerSource: 2 });
    const open = (): Promise<TLSSocket | undefined> =>
      new Promise((resolve) => {
        // localAddress reaches net.connect (Node's typings omit it from tls.ConnectionOptions).
        const options = { host: '127.0.0.1', localAddress: '127.0.0.3', port: s.service.grpcPort, servername: 'localhost', ca: root.certPem, ALPNProtocols: ['h2'] };
        const sock = tlsConnect(options, () => {
          // The server may close it right after the handshake: wait a moment to see.
          setTimeout(() => resolve(sock.destroyed ? undefined : sock), 200);
        });
        cleanups.push(() => sock.destroy());
        sock.on('error', () => resolve(undefined));
        sock.on('close', () => resolve(undefined));
      });
    const held = [await open(), await open()];
    expect(held.every(Boolean)).toBe(true);
    expect(await open()).toBeUndefined();
    expect((await honest(s)).err).toBeUndefined();
  });

  it('--max-handshakes caps half-open sockets across all sources', async () => {
    const s = await server({ maxHandshakes: 4, handshakeTimeoutMs: 60_000 });
    const idle = ['127.0.0.4', '127.0.0.5', '127.0.0.6'].flatMap((a) => [idleSocket(s.service.grpcPort, a), idleSocket(s.service.grpcPort, a)]);
    await sleep(500);
    const closedNow = (await Promise.all(idle.map((i) => within(i.closed, 50)))).filter((r) => r !== 'pending').length;
    expect(closedNow).toBe(2);
    expect(s.service.transport.stats().handshaking).toBe(4);
    const metrics = await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/metrics`);
    expect(metrics.body).toMatch(/svid_ca_transport_refused_total\{reason="max_handshakes"\} 2/);
    expect(metrics.body).toMatch(/svid_ca_transport_connections\{state="handshaking"\} 4/);
  });
});

describe('TLS 1.2 suites (issue #19 item 9)', () => {
  const handshake = (port: number, opts: { ciphers?: string; maxVersion?: 'TLSv1.2' | 'TLSv1.3' }) =>
    new Promise<{ ok: boolean; cipher?: string; protocol?: string | null }>((resolve) => {
      const sock = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: root.certPem, ALPNProtocols: ['h2'], ...opts }, () => {
        resolve({ ok: true, cipher: sock.getCipher().name, protocol: sock.getProtocol() });
        sock.destroy();
      });
      sock.on('error', () => resolve({ ok: false }));
    });

  it('offers only AEAD suites with TLS 1.2 (also after the serving certificate is renewed); TLS 1.3 and GCM work', async () => {
    const s = await server();
    const port = s.service.grpcPort;
    const check = async () => {
      expect(await handshake(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256' })).toEqual({ ok: false });
      expect(await handshake(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' })).toMatchObject({ ok: true, protocol: 'TLSv1.2' });
      expect(await handshake(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' })).toMatchObject({ ok: true, protocol: 'TLSv1.2' });
      expect(await handshake(port, {})).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
    };
    await check();
    // OpenSSL's own client agrees: no CBC-SHA1 suite is negotiated.
    writeFileSync(join(scratch, 'root.pem'), root.certPem);
    const run = promisify(execFile);
    const cbc = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA', '-CAfile', join(scratch, 'root.pem')], { timeout: 10_000 }).then(
      (r) => r.stdout,
      (e: { stdout?: string }) => `failed ${e.stdout ?? ''}`,
    );
    expect(cbc).toMatch(/^failed|Cipher is \(NONE\)/m);
    s.service.lifecycle.serving.renew('test: new secure context');
    await sleep(200);
    await check();
  });
});

describe('grpc-js internals used by the transport limits (fails on a grpc-js upgrade that moves them)', () => {
  it('refuses to start when the HTTP/2 servers cannot be reached', () => {
    expect(() => installTransportLimits(new grpc.Server(), new TransportGuard(DEFAULT_TRANSPORT_LIMITS, undefined))).toThrow(/grpc-js internals changed/);
  });

  it('adopts connections accepted before the limits were attached (grpc-js listens before bindAsync calls back)', async () => {
    const h2 = http2.createSecureServer({ key: root.keyPem, cert: root.certPem, settings: { maxConcurrentStreams: 4 } });
    cleanups.push(() => new Promise<void>((r) => h2.close(() => r())));
    await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
    const port = (h2.address() as { port: number }).port;
    const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    session.on('error', () => undefined);
    cleanups.push(() => session.destroy());
    await once(session, 'remoteSettings');
    await sleep(100);
    const guard = new TransportGuard({ ...DEFAULT_TRANSPORT_LIMITS, requestReceiveTimeoutMs: 500, maxConcurrentStreams: 50 }, undefined);
    guard.attach(h2);
    const held = heldStream(session);
    expect(await within(held.ended, 5000)).toMatchObject({ grpcStatus: grpc.status.DEADLINE_EXCEEDED });
    expect(guard.stats()).toMatchObject({ established: 1, bufferedRequestBytes: 0 });
    const upgraded = once(session, 'remoteSettings');
    const local = session.socket as TLSSocket;
    guard.markAuthenticated(`${local.localAddress}:${local.localPort}`);
    expect(((await within(upgraded, 5000)) as [http2.Settings])[0]).toMatchObject({ maxConcurrentStreams: 50 });
    session.destroy();
    await sleep(200);
    expect(guard.stats().established).toBe(0);
  });

  it('sees the server\'s connections and sends the pre-authentication SETTINGS', async () => {
    const s = await server();
    const session = await attacker(s);
    expect(session.remoteSettings).toMatchObject({ maxConcurrentStreams: DEFAULT_TRANSPORT_LIMITS.unauthenticatedStreams, initialWindowSize: DEFAULT_TRANSPORT_LIMITS.unauthenticatedWindowBytes });
    expect(s.service.transport.stats().established).toBe(1);
  });
});
