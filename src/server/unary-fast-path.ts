/**
 * Issue #14: CreateCertificate served directly on Node's HTTP/2 streams, beside grpc-js.
 *
 * grpc-js runs every call through its interceptor chain, stream decoder, read queue and Promise-based
 * decompression; for a unary call of a few hundred bytes that machinery costs ~45 us of CPU (measured
 * against a bare node:http2 answer; serving CreateCertificate here measured 16-18 us less per certificate,
 * since what a real call needs is kept). Here the 'stream' listener grpc-js put on each of its HTTP/2
 * servers is wrapped: a stream for CreateCertificate that grpc-js would answer in the ordinary way
 * (content-type application/grpc*, no message encoding other than identity, a readable grpc-timeout or
 * none) is served by `serveUnary` below, which speaks the same gRPC-over-HTTP/2 as grpc-js 1.14
 * (server-interceptors.js and server.js handleUnary: same headers, trailers, status codes and
 * messages); every other stream (health, unknown paths, wrong content-type, compressed requests, bad
 * grpc-timeout) goes to grpc-js's own listener unchanged, so grpc-js keeps answering those cases
 * itself. The server's lifecycle (bind, GOAWAY on shutdown, idle timeout, keepalive) stays grpc-js's:
 * the fast path only answers streams on grpc-js's sessions, and counts them for grpc-js's idle timeout.
 *
 * What this reaches past grpc-js's public surface, and only here (besides Server.http2Servers, read in
 * transport-limits.ts): the listener grpc-js registers for 'stream' (`bound _streamHandler`), and
 * `Server.onStreamOpened` (its idle-timeout accounting). @grpc/grpc-js is pinned to an exact version;
 * installUnaryFastPath refuses to start when either is not what it expects
 * (test/unary-fast-path.test.ts).
 */
import type * as http2 from 'node:http2';
import { TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { CertificateCall } from './certificate-service.js';
import { headerMetadata } from './header-metadata.js';
import type { IstioCertificateRequest, IstioCertificateResponse } from './proto.js';
import { grpcHttp2Servers } from './transport-limits.js';

/** A unary handler as CallDrain.wrap returns it for CreateCertificate. */
type UnaryHandler = (call: CertificateCall, callback: (err: { code: grpc.status; details: string } | null, value?: IstioCertificateResponse | null) => void) => void;

export interface UnaryFastPathOptions {
  /** The one method served here, e.g. CREATE_CERTIFICATE_PATH. */
  path: string;
  handler: UnaryHandler;
  /** grpc.max_receive_message_length of the server (--max-request-bytes): a longer message is RESOURCE_EXHAUSTED. */
  maxReceiveMessageBytes: number;
  /** The method's requestDeserialize / responseSerialize (from @grpc/proto-loader, as grpc-js uses them). */
  deserialize(message: Buffer): IstioCertificateRequest;
  serialize(response: IstioCertificateResponse): Buffer;
  /**
   * issue #14: the whole gRPC message (prefix and protobuf) for `response` in one Buffer, byte for byte
   * what framing serialize(response) gives, or undefined where it does not apply (then serialize is
   * used, with its errors); never throws.
   */
  frame?(response: IstioCertificateResponse): Buffer | undefined;
}

/** What the fast path has taken (tests, diagnostics). */
export interface FastPathStats {
  /** Streams answered here rather than by grpc-js, since start. */
  streams: number;
}

/** An empty message (length 0 in its prefix). */
const EMPTY = Buffer.alloc(0);

/** grpc-js's parse of grpc-timeout (server-interceptors.js DEADLINE_REGEX and units, in ms). */
const DEADLINE = /(\d{1,8})\s*([HMSmun])/;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** grpc-js's response headers of a call that answers with a message. */
const RESPONSE_HEADERS = {
  ':status': 200,
  'content-type': 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
} as const;

/** grpc-js's trailers of a call answered with a message. */
const OK_TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' } as const;

/** grpc-js's GRPC_NODE_DEBUG_SEND_ERROR_DETAILS, read the way grpc-js reads it (once, at load). */
const SEND_ERROR_DETAILS = (process.env.GRPC_NODE_DEBUG_SEND_ERROR_DETAILS ?? 'false') === 'true';

/** What installUnaryFastPath needs of grpc-js's Server object (internal; checked at install). */
interface GrpcServerInternals {
  onStreamOpened(stream: http2.ServerHttp2Stream): void;
}

/** The fast path's 'error' listener: each error is followed by 'close', which ends the call. */
const ignoreError = (): void => {};

type StreamListener = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => void;

/**
 * Serves `options.path` on every HTTP/2 server grpc-js bound for `server` (call after bindAsync and
 * before installTransportLimits, so that the limits' 'stream' listener still runs after this one).
 * Throws, naming --grpc-fast-path, when grpc-js's internals are not the ones this was written for.
 */
export function installUnaryFastPath(server: grpc.Server, options: UnaryFastPathOptions): FastPathStats {
  const internals = server as unknown as Partial<GrpcServerInternals>;
  const changed = (what: string) =>
    new Error(`cannot serve CreateCertificate on the fast path: @grpc/grpc-js internals changed (${what}); pin the version svid-ca was tested with, or start with --no-grpc-fast-path`);
  if (typeof internals.onStreamOpened !== 'function') throw changed('Server.onStreamOpened');
  const onStreamOpened = internals.onStreamOpened.bind(server);
  const http2Servers = grpcHttp2Servers(server, 'the CreateCertificate fast path');
  // Checked on every server before any is changed: all or nothing.
  const grpcListeners = http2Servers.map((s) => {
    const listeners = s.listeners('stream');
    if (listeners.length !== 1 || listeners[0]!.name !== 'bound _streamHandler') throw changed("the HTTP/2 server's 'stream' listener");
    return listeners[0] as StreamListener;
  });
  const stats: FastPathStats = { streams: 0 };
  http2Servers.forEach((http2Server, i) => {
    const grpcListener = grpcListeners[i]!;
    http2Server.removeListener('stream', grpcListener);
    http2Server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      const timeoutMs = fastPathTimeout(headers, options.path);
      if (timeoutMs === undefined) {
        grpcListener(stream, headers, ...rest);
        return;
      }
      // As grpc-js's _streamHandler: an 'error' listener (each error is followed by 'close'), idle accounting.
      stream.on('error', ignoreError);
      onStreamOpened(stream);
      stats.streams++;
      serveUnary(stream, headers, timeoutMs, options);
    });
  });
  return stats;
}

/**
 * Whether a stream is one the fast path answers exactly as grpc-js would: the path, a gRPC
 * content-type (else grpc-js answers HTTP 415), no message encoding but identity (grpc-js inflates
 * gzip/deflate), a grpc-timeout grpc-js can read (else it answers INTERNAL). Returns the timeout in
 * ms (Infinity without one), or undefined for a stream grpc-js keeps.
 */
function fastPathTimeout(headers: http2.IncomingHttpHeaders, path: string): number | undefined {
  if (headers[':path'] !== path) return undefined;
  const contentType = headers['content-type'];
  if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) return undefined;
  const encoding = headers['grpc-encoding'];
  if (encoding !== undefined && encoding !== 'identity') return undefined;
  const timeout = headers['grpc-timeout'];
  if (timeout === undefined) return Infinity;
  const match = typeof timeout === 'string' ? DEADLINE.exec(timeout) : null;
  if (!match) return undefined;
  return (Number(match[1]) * UNIT_MS[match[2]!]!) | 0;
}

/**
 * One unary call on `stream`, as grpc-js 1.14 answers it: the 5-byte-prefixed message(s) decoded
 * as they arrive (a length over the limit: RESOURCE_EXHAUSTED "Received message larger than max (N
 * vs M)"; the compressed flag with identity encoding read as uncompressed, as grpc-js does; a second
 * message: UNIMPLEMENTED; none by END_STREAM: UNIMPLEMENTED; undecodable: INTERNAL), the handler run
 * at END_STREAM, then headers + one DATA frame + trailers (grpc-status 0, grpc-message OK), or an
 * error as a trailers-only response. grpc-timeout expiring first: DEADLINE_EXCEEDED "Deadline
 * exceeded". A stream closed by the client (RST_STREAM) or by the transport limits before the answer
 * gets nothing more; a handler already running finishes as under grpc-js (its answer is dropped).
 */
function serveUnary(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, timeoutMs: number, options: UnaryFastPathOptions): void {
  let finished = false;
  let request: IstioCertificateRequest | undefined;
  let deadlineTimer: NodeJS.Timeout | undefined;
  // The message decoder's state: how much of the 5-byte prefix is read (its length octets summed into
  // `remaining`), then the message's bytes: the first piece, and the rest only when a message spans
  // chunks (issue #14: no Buffer for the prefix nor array per message when it comes in one chunk).
  let prefixRead = 0;
  let first: Buffer | undefined;
  let more: Buffer[] | undefined;
  let remaining = 0;

  const finish = () => {
    finished = true;
    clearTimeout(deadlineTimer);
  };
  const gone = () => stream.destroyed || stream.closed || stream.headersSent;
  const sendStatus = (code: grpc.status, details: string) => {
    if (finished) return;
    finish();
    if (gone()) return;
    stream.respond({ 'grpc-status': String(code), 'grpc-message': encodeURI(details), ':status': 200, 'content-type': 'application/grpc+proto' }, { endStream: true });
  };
  const sendMessage = (response: IstioCertificateResponse) => {
    if (finished) return;
    let framed = options.frame?.(response);
    if (!framed) {
      let body: Buffer;
      try {
        body = options.serialize(response);
      } catch (err) {
        sendStatus(grpc.status.INTERNAL, SEND_ERROR_DETAILS ? `Error serializing response: ${(err as Error).message}` : 'Error serializing response');
        return;
      }
      framed = Buffer.allocUnsafe(body.length + 5);
      framed[0] = 0;
      framed.writeUInt32BE(body.length, 1);
      body.copy(framed, 5);
    }
    finish();
    if (gone()) return;
    stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    // 'wantTrailers', 'close' and 'end' come once per stream: `on` rather than `once` spares a wrapper per listener.
    stream.on('wantTrailers', () => stream.sendTrailers(OK_TRAILERS));
    stream.end(framed);
  };

  const onMessage = (message: Buffer) => {
    let decoded: IstioCertificateRequest;
    try {
      decoded = options.deserialize(message);
    } catch (err) {
      sendStatus(grpc.status.INTERNAL, SEND_ERROR_DETAILS ? `Error deserializing request: ${(err as Error).message}` : 'Error deserializing request');
      return;
    }
    if (request) {
      sendStatus(grpc.status.UNIMPLEMENTED, `Received a second request message for server streaming method ${options.path}`);
      return;
    }
    request = decoded;
  };
  const onData = (chunk: Buffer) => {
    let at = 0;
    while (at < chunk.length && !finished) {
      if (prefixRead < 5) {
        // Octet 0 is the compressed flag, read as is with identity encoding (as grpc-js does); octets
        // 1-4 the message length, big-endian unsigned.
        if (prefixRead === 0) remaining = 0;
        else remaining = remaining * 256 + chunk[at]!;
        prefixRead++;
        at++;
        if (prefixRead < 5) continue;
        if (remaining > options.maxReceiveMessageBytes) {
          sendStatus(grpc.status.RESOURCE_EXHAUSTED, `Received message larger than max (${remaining} vs ${options.maxReceiveMessageBytes})`);
          return;
        }
        first = undefined;
        more = undefined;
      }
      const n = Math.min(remaining, chunk.length - at);
      if (n > 0) {
        const piece = chunk.subarray(at, at + n);
        if (first === undefined) first = piece;
        else (more ??= [first]).push(piece);
      }
      remaining -= n;
      at += n;
      if (remaining === 0) {
        prefixRead = 0;
        onMessage(more ? Buffer.concat(more) : (first ?? EMPTY));
      }
    }
  };
  const onEnd = () => {
    if (finished) return;
    if (!request) {
      sendStatus(grpc.status.UNIMPLEMENTED, `Received no request message for server streaming method ${options.path}`);
      return;
    }
    const call: CertificateCall = {
      request,
      metadata: headerMetadata(headers),
      getPeer: () => peerOf(stream),
      getAuthContext: () => authContextOf(stream),
    };
    try {
      options.handler(call, (err, value) => {
        if (err) sendStatus(Number.isInteger(err.code) ? err.code : grpc.status.UNKNOWN, typeof err.details === 'string' ? err.details : 'Unknown Error');
        else sendMessage(value as IstioCertificateResponse);
      });
    } catch (err) {
      sendStatus(grpc.status.UNKNOWN, SEND_ERROR_DETAILS ? `Server method handler threw error ${(err as Error).message}` : 'Unknown error');
    }
  };

  stream.on('close', finish);
  if (timeoutMs !== Infinity) deadlineTimer = setTimeout(() => sendStatus(grpc.status.DEADLINE_EXCEEDED, 'Deadline exceeded'), timeoutMs);
  stream.on('data', (chunk: Buffer) => {
    if (!finished) onData(chunk);
  });
  stream.on('end', onEnd);
}

/** grpc-js's call.getPeer(): "address:port" of the connection, "unknown" without one. */
function peerOf(stream: http2.ServerHttp2Stream): string {
  const socket = stream.session?.socket;
  if (!socket?.remoteAddress) return 'unknown';
  return socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : socket.remoteAddress;
}

/** grpc-js's call.getAuthContext(): the client certificate only when the handshake verified it. */
function authContextOf(stream: http2.ServerHttp2Stream): { sslPeerCertificate?: { raw?: Buffer } | undefined } {
  const socket = stream.session?.socket;
  if (!(socket instanceof TLSSocket) || !socket.authorized) return {};
  const peerCertificate = socket.getPeerCertificate();
  return { sslPeerCertificate: peerCertificate.raw ? peerCertificate : undefined };
}
