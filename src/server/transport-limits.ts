/**
 * Bounds on the work and memory a caller can cause before it has authenticated (issue #19 items
 * 1, 2 and 9): TLS handshake timeout and AEAD-only suites, half-open sockets counted apart from
 * established connections, per-source connection caps, few streams and a small flow-control window
 * on a connection until a call on it has authenticated, a deadline for a request message to arrive
 * completely, and a per-connection and a global budget of request bytes received but not yet
 * complete.
 *
 * grpc-js has no options for most of this, so two things here reach past its public surface (and
 * elsewhere only unary-fast-path.ts, issue #14, for grpc-js's 'stream' listener):
 *  - the HTTP/2 servers grpc-js created (`Server.http2Servers`, an internal field) to watch their
 *    sockets and streams with Node's own events ('connection', 'secureConnection', 'session',
 *    'stream'); grpc-js keeps handling every stream as before;
 *  - `ServerCredentials._getConstructorOptions()` / `_getSecureContextOptions()` / `_addWatcher()`
 *    (declared in grpc-js's typings, underscore-named) to hand Node's http2.createSecureServer the
 *    TLS and HTTP/2 settings grpc-js does not expose.
 * @grpc/grpc-js is pinned to an exact version; test/transport-limits.test.ts fails if an upgrade
 * moves either (installTransportLimits also refuses to start without the HTTP/2 servers).
 */
import * as http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { CaMetrics } from '../observability/index.js';

/** grpc-js's secure-context watcher (declared in its server-credentials typings, not re-exported). */
type SecureContextWatcher = (context: SecureContextOptions | null) => void;

export interface TransportLimits {
  /** --max-connections: established (TLS done) connections at once; more are closed at once. */
  maxConnections: number;
  /** --max-concurrent-streams: HTTP/2 streams per connection once a call on it has authenticated. */
  maxConcurrentStreams: number;
  /** --handshake-timeout, ms: a socket that has not finished its TLS handshake by then is closed. */
  handshakeTimeoutMs: number;
  /** --max-handshakes: sockets still in their TCP/TLS handshake at once (all sources); more are closed at once. */
  maxHandshakes: number;
  /** --max-handshakes-per-source: the same, per source IP address. */
  maxHandshakesPerSource: number;
  /** --max-connections-per-source: established connections per source IP address. */
  maxConnectionsPerSource: number;
  /** --unauthenticated-streams: concurrent streams on a connection that has not yet carried an authenticated call. */
  unauthenticatedStreams: number;
  /** --unauthenticated-window, bytes: HTTP/2 initial stream window on such a connection. */
  unauthenticatedWindowBytes: number;
  /** --request-receive-timeout, ms: a request must arrive completely (END_STREAM) this soon after its stream opens. */
  requestReceiveTimeoutMs: number;
  /** --max-connection-request-bytes: request bytes received and not yet complete, per connection. */
  maxConnectionRequestBytes: number;
  /** --max-source-request-bytes: the same across all connections from one source IP address. */
  maxSourceRequestBytes: number;
  /** --max-buffered-request-bytes: the same across all connections of this process; connections without an authenticated call get 3/4 of it. */
  maxBufferedRequestBytes: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  maxConnections: 20_000,
  maxConcurrentStreams: 128,
  handshakeTimeoutMs: 5_000,
  maxHandshakes: 1_024,
  maxHandshakesPerSource: 64,
  maxConnectionsPerSource: 1_000,
  unauthenticatedStreams: 8,
  unauthenticatedWindowBytes: 16_384,
  requestReceiveTimeoutMs: 10_000,
  maxConnectionRequestBytes: 1024 * 1024,
  maxSourceRequestBytes: 8 * 1024 * 1024,
  maxBufferedRequestBytes: 64 * 1024 * 1024,
};

/** The share of --max-buffered-request-bytes connections without an authenticated call may use together. */
const UNAUTHENTICATED_SHARE = 0.75;

/** HTTP/2's default initial window (RFC 9113 6.5.2), given back once a connection has authenticated. */
const DEFAULT_WINDOW = 65_535;

/**
 * TLS 1.2 suites offered: ECDHE with AEAD only (AES-GCM, ChaCha20-Poly1305), Go's crypto/tls
 * default list that istiod serves with; no CBC, no SHA-1 MAC, no static RSA. TLS 1.3's suites are
 * all AEAD and listed so that they stay enabled.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Why a socket or stream was refused: the `reason` label of svid_ca_transport_refused_total. */
export type RefusalReason =
  | 'max_connections'
  | 'max_connections_per_source'
  | 'max_handshakes'
  | 'max_handshakes_per_source'
  | 'handshake_timeout'
  | 'request_receive_timeout'
  | 'connection_request_bytes'
  | 'source_request_bytes'
  | 'buffered_request_bytes';

type BudgetReason = Extract<RefusalReason, `${string}_request_bytes`>;

export const REFUSAL_REASONS: readonly RefusalReason[] = [
  'max_connections',
  'max_connections_per_source',
  'max_handshakes',
  'max_handshakes_per_source',
  'handshake_timeout',
  'request_receive_timeout',
  'connection_request_bytes',
  'source_request_bytes',
  'buffered_request_bytes',
];

/**
 * Server credentials that add svid-ca's TLS and HTTP/2 settings to another's (the certificate
 * provider credentials of ServingTls): handshake timeout, AEAD-only suites, and the initial
 * (unauthenticated) HTTP/2 SETTINGS. grpc-js merges `_getConstructorOptions()` into the options of
 * http2.createSecureServer after its own, so `settings` here replaces grpc-js's.
 *
 * The suites are also added to every secure-context update: grpc-js applies those with
 * setSecureContext(), which rebuilds the context from the options it is given.
 */
export class HardenedServerCredentials extends grpc.ServerCredentials {
  private readonly wrapped = new Map<SecureContextWatcher, SecureContextWatcher>();

  constructor(
    private readonly inner: grpc.ServerCredentials,
    private readonly limits: Pick<TransportLimits, 'handshakeTimeoutMs' | 'unauthenticatedStreams' | 'unauthenticatedWindowBytes'>,
  ) {
    super({});
  }

  private static withSuites(options: SecureContextOptions | null): SecureContextOptions | null {
    return options && { ...options, ciphers: TLS_CIPHERS, minVersion: 'TLSv1.2' };
  }

  override _isSecure(): boolean {
    return this.inner._isSecure();
  }

  override _getConstructorOptions(): http2.SecureServerOptions | null {
    const base = this.inner._getConstructorOptions();
    if (!base) return null;
    return {
      ...base,
      ciphers: TLS_CIPHERS,
      minVersion: 'TLSv1.2',
      handshakeTimeout: this.limits.handshakeTimeoutMs,
      settings: { maxConcurrentStreams: this.limits.unauthenticatedStreams, initialWindowSize: this.limits.unauthenticatedWindowBytes },
    };
  }

  override _getSecureContextOptions(): SecureContextOptions | null {
    return HardenedServerCredentials.withSuites(this.inner._getSecureContextOptions());
  }

  override _addWatcher(watcher: SecureContextWatcher): void {
    const w: SecureContextWatcher = (options) => watcher(HardenedServerCredentials.withSuites(options));
    this.wrapped.set(watcher, w);
    this.inner._addWatcher(w);
  }

  override _removeWatcher(watcher: SecureContextWatcher): void {
    const w = this.wrapped.get(watcher);
    if (!w) return;
    this.wrapped.delete(watcher);
    this.inner._removeWatcher(w);
  }

  override _getInterceptors(): grpc.ServerInterceptor[] {
    return this.inner._getInterceptors();
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

interface Connection {
  source: string;
  socket: Socket;
  established: boolean;
  authenticated: boolean;
  session: http2.ServerHttp2Session | undefined;
  /** Request bytes received on this connection's streams whose request is not complete yet. */
  pendingBytes: number;
}

interface SourceCount {
  handshaking: number;
  established: number;
  /** Request bytes received and not yet complete on all connections from this source. */
  pendingBytes: number;
}

/** The key grpc-js's call.getPeer() gives for a connection: "address:port". */
const peerKey = (s: { remoteAddress?: string | undefined; remotePort?: number | undefined }) => `${s.remoteAddress}:${s.remotePort}`;

/**
 * Status sent on a stream refused by these limits (a trailers-only gRPC response), then
 * RST_STREAM NO_ERROR so the client stops sending (RFC 9113 8.1).
 */
function refuseStream(stream: http2.ServerHttp2Stream, code: grpc.status, message: string): void {
  if (stream.destroyed || stream.closed) return;
  try {
    if (!stream.headersSent) {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) },
        { endStream: true },
      );
    }
    stream.close(http2.constants.NGHTTP2_NO_ERROR);
  } catch {
    stream.destroy();
  }
}

/**
 * Per-process connection and request accounting for the gRPC listener. Counts are per process: with
 * --workers N each worker applies them to the connections it holds.
 */
export class TransportGuard {
  private readonly connections = new Map<string, Connection>();
  private readonly sources = new Map<string, SourceCount>();
  /** Connections whose handshake is not done yet. */
  private readonly inHandshake = new Set<Connection>();
  private handshaking = 0;
  private established = 0;
  private bufferedBytes = 0;

  constructor(
    readonly limits: TransportLimits,
    private readonly metrics: CaMetrics | undefined,
  ) {
    for (const reason of REFUSAL_REASONS) metrics?.transportRefused.inc({ reason }, 0);
  }

  /** Sockets still in their handshake and established connections, and request bytes buffered now. */
  stats(): { handshaking: number; established: number; bufferedRequestBytes: number } {
    return { handshaking: this.handshaking, established: this.established, bufferedRequestBytes: this.bufferedBytes };
  }

  /** Watches one of grpc-js's HTTP/2 servers. */
  attach(server: http2.Http2SecureServer): void {
    server.prependListener('secureConnection', clearFailedClientCertificateError);
    // Before grpc-js's and TLS's own listeners: a refused socket is closed before its handshake starts.
    server.prependListener('connection', (socket: Socket) => this.onSocket(socket));
    server.on('secureConnection', (socket: TLSSocket) => this.onEstablished(socket));
    server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') this.refused('handshake_timeout');
    });
    server.on('session', (session: http2.ServerHttp2Session) => {
      const c = session.socket && (this.connections.get(peerKey(session.socket)) ?? this.adopt(session.socket as TLSSocket));
      if (c) c.session = session;
    });
    // After grpc-js's listener (or the CreateCertificate fast path's, which wraps it): the stream is taken; these only watch it and may end it.
    server.on('stream', (stream: http2.ServerHttp2Stream) => this.onStream(stream));
  }

  /**
   * A call on the connection `peer` (grpc-js's call.getPeer()) has authenticated: the connection
   * gets the full stream limit and HTTP/2's default window. Unknown peers are ignored.
   */
  markAuthenticated(peer: string): void {
    const c = this.connections.get(peer);
    if (!c || c.authenticated) return;
    c.authenticated = true;
    try {
      c.session?.settings({ maxConcurrentStreams: this.limits.maxConcurrentStreams, initialWindowSize: Math.max(DEFAULT_WINDOW, this.limits.unauthenticatedWindowBytes) });
    } catch {
      // The session is closing; nothing to upgrade.
    }
  }

  /**
   * The certificates the client of connection `peer` (call.getPeer()) presented and the handshake
   * verified, leaf first (issue #16: client-certificate renewal checks each against the CRLs);
   * undefined for an unknown peer or one without a certificate.
   */
  peerCertificateChain(peer: string): Buffer[] | undefined {
    // The HTTP/2 session's socket is the TLS one ('connection' gave the plain TCP socket).
    const c = this.connections.get(peer);
    const socket = (c?.session?.socket ?? c?.socket) as TLSSocket | undefined;
    let cert = socket?.getPeerCertificate?.(true);
    const chain: Buffer[] = [];
    while (cert?.raw && !chain.some((c) => c.equals(cert!.raw)) && chain.length < 10) {
      chain.push(cert.raw);
      cert = cert.issuerCertificate;
    }
    return chain.length > 0 ? chain : undefined;
  }

  /** Whether a call on `peer` has authenticated on that connection before (tests, diagnostics). */
  isAuthenticated(peer: string): boolean {
    return this.connections.get(peer)?.authenticated === true;
  }

  private refused(reason: RefusalReason): void {
    this.metrics?.transportRefused.inc({ reason });
  }

  private source(address: string): SourceCount {
    let s = this.sources.get(address);
    if (!s) {
      s = { handshaking: 0, established: 0, pendingBytes: 0 };
      this.sources.set(address, s);
    }
    return s;
  }

  private updateGauges(): void {
    this.metrics?.transportConnections.set({ state: 'handshaking' }, this.handshaking);
    this.metrics?.transportConnections.set({ state: 'established' }, this.established);
  }

  /**
   * Established connections, plus those whose client has started its TLS handshake (sent a byte):
   * those are about to be established (with TLS 1.3 the client counts itself connected before the
   * server has read its Finished). Sockets that never sent a byte are not counted here; they are
   * bounded by --max-handshakes and --handshake-timeout.
   */
  private occupying(source?: string): number {
    let n = source === undefined ? this.established : (this.sources.get(source)?.established ?? 0);
    for (const c of this.inHandshake) if (c.socket.bytesRead > 0 && (source === undefined || c.source === source)) n++;
    return n;
  }

  private onSocket(socket: Socket): void {
    const address = socket.remoteAddress ?? 'unknown';
    const src = this.source(address);
    const reason: RefusalReason | undefined =
      this.occupying() >= this.limits.maxConnections
        ? 'max_connections'
        : this.occupying(address) >= this.limits.maxConnectionsPerSource
          ? 'max_connections_per_source'
          : this.handshaking >= this.limits.maxHandshakes
            ? 'max_handshakes'
            : src.handshaking >= this.limits.maxHandshakesPerSource
              ? 'max_handshakes_per_source'
              : undefined;
    if (reason) {
      this.refused(reason);
      if (src.handshaking === 0 && src.established === 0) this.sources.delete(address);
      socket.destroy();
      return;
    }
    const key = peerKey(socket);
    const c: Connection = { source: address, socket, established: false, authenticated: false, session: undefined, pendingBytes: 0 };
    this.connections.set(key, c);
    this.inHandshake.add(c);
    this.handshaking++;
    src.handshaking++;
    this.updateGauges();
    socket.once('close', () => {
      this.inHandshake.delete(c);
      if (c.established) {
        this.established--;
        src.established--;
      } else {
        this.handshaking--;
        src.handshaking--;
      }
      if (this.connections.get(key) === c) this.connections.delete(key);
      if (src.handshaking === 0 && src.established === 0) this.sources.delete(address);
      this.updateGauges();
    });
  }

  /**
   * A connection accepted before attach() (grpc-js starts listening before bindAsync's callback):
   * counted as established from now on, so that it is accounted and can be upgraded like any other.
   */
  private adopt(socket: TLSSocket): Connection | undefined {
    if (!socket.remoteAddress || socket.destroyed) return undefined;
    const key = peerKey(socket);
    const src = this.source(socket.remoteAddress);
    const c: Connection = { source: socket.remoteAddress, socket, established: true, authenticated: false, session: undefined, pendingBytes: 0 };
    this.connections.set(key, c);
    this.established++;
    src.established++;
    this.updateGauges();
    socket.once('close', () => {
      this.established--;
      src.established--;
      if (this.connections.get(key) === c) this.connections.delete(key);
      if (src.handshaking === 0 && src.established === 0) this.sources.delete(c.source);
      this.updateGauges();
    });
    return c;
  }

  private onEstablished(socket: TLSSocket): void {
    const c = this.connections.get(peerKey(socket));
    if (!c) {
      this.adopt(socket);
      return;
    }
    if (c.established) return;
    const src = this.source(c.source);
    // Checked again: connections may have been established while this one shook hands.
    const reason: RefusalReason | undefined =
      this.established >= this.limits.maxConnections
        ? 'max_connections'
        : src.established >= this.limits.maxConnectionsPerSource
          ? 'max_connections_per_source'
          : undefined;
    if (reason) {
      this.refused(reason);
      socket.destroy();
      return;
    }
    c.established = true;
    this.inHandshake.delete(c);
    this.handshaking--;
    src.handshaking--;
    this.established++;
    src.established++;
    this.updateGauges();
  }

  /** Which request-byte budget, if any, is spent for connection `c` (from source `src`). */
  private spentBudget(c: Connection, src: SourceCount, strict: boolean): BudgetReason | undefined {
    const over = (used: number, max: number) => (strict ? used > max : used >= max);
    // The last quarter of the process budget is kept for connections that have authenticated, so
    // anonymous callers alone cannot keep agents with a connection from renewing.
    const global = c.authenticated ? this.limits.maxBufferedRequestBytes : Math.floor(this.limits.maxBufferedRequestBytes * UNAUTHENTICATED_SHARE);
    if (over(this.bufferedBytes, global)) return 'buffered_request_bytes';
    if (over(src.pendingBytes, this.limits.maxSourceRequestBytes)) return 'source_request_bytes';
    if (over(c.pendingBytes, this.limits.maxConnectionRequestBytes)) return 'connection_request_bytes';
    return undefined;
  }

  private onStream(stream: http2.ServerHttp2Stream): void {
    const socket = stream.session?.socket as TLSSocket | undefined;
    const c = socket ? (this.connections.get(peerKey(socket)) ?? this.adopt(socket)) : undefined;
    if (!c) return;
    c.session ??= stream.session as http2.ServerHttp2Session | undefined;
    const src = this.source(c.source);
    const refuse = (reason: RefusalReason, code: grpc.status, message: string) => {
      this.refused(reason);
      release();
      refuseStream(stream, code, message);
    };
    let pending = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const release = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.bufferedBytes -= pending;
      src.pendingBytes -= pending;
      c.pendingBytes -= pending;
      pending = 0;
      this.metrics?.transportBufferedBytes.set(this.bufferedBytes);
    };
    // A new stream when a budget is already spent: refused at once.
    const spent = this.spentBudget(c, src, false);
    if (spent) {
      refuse(spent, grpc.status.RESOURCE_EXHAUSTED, BUDGET_MESSAGES[spent]);
      return;
    }
    timer = setTimeout(
      () => refuse('request_receive_timeout', grpc.status.DEADLINE_EXCEEDED, `request not received completely within ${this.limits.requestReceiveTimeoutMs} ms; send the whole request at once`),
      this.limits.requestReceiveTimeoutMs,
    );
    timer.unref();
    // grpc-js has paused the stream and resumes it when it reads; this listener does not change that.
    stream.on('data', (chunk: Buffer) => {
      if (done) return;
      pending += chunk.length;
      c.pendingBytes += chunk.length;
      src.pendingBytes += chunk.length;
      this.bufferedBytes += chunk.length;
      this.metrics?.transportBufferedBytes.set(this.bufferedBytes);
      const over = this.spentBudget(c, src, true);
      if (over) refuse(over, grpc.status.RESOURCE_EXHAUSTED, BUDGET_MESSAGES[over]);
    });
    // The request is complete (END_STREAM), or the stream is gone: its bytes are no longer ours to count.
    // Each comes once per stream and release runs once: `on` spares a `once` wrapper per event (issue #14).
    stream.on('end', release);
    stream.on('close', release);
  }
}

/** What a caller refused by a request-byte budget is told. */
const BUDGET_MESSAGES: Record<BudgetReason, string> = {
  buffered_request_bytes: 'CA overloaded: too many request bytes in flight; retry with backoff',
  source_request_bytes: 'too many incomplete requests from this address; finish sending them first',
  connection_request_bytes: 'too many incomplete requests on this connection; finish sending them first',
};

/**
 * Issue #19 item 8. When a client certificate's chain fails its signature check (a forged
 * intermediate claiming our root as issuer), OpenSSL 3.5 under Node 24 leaves that error on the
 * thread's error queue although the listener accepts unverified certificates (requestCert without
 * rejectUnauthorized; the call then falls through to its token). The next read on the socket then
 * fails with "provider signature failure" and the connection ends with GOAWAY INTERNAL_ERROR.
 * Reading the peer certificate through Node's X509 API clears the queue (it does so on return), so
 * this runs first on every handshake that did not verify. Guarded by test/kube-client-cert.test.ts.
 */
function clearFailedClientCertificateError(socket: TLSSocket): void {
  if (socket.authorized) return;
  try {
    socket.getPeerX509Certificate();
  } catch {
    // Nothing to read; the queue is cleared either way.
  }
}

/**
 * The HTTP/2 servers grpc-js bound for `server` (call after bindAsync): its internal field
 * `Server.http2Servers`, read here and nowhere else. Throws when grpc-js no longer keeps them there,
 * naming `what` would silently not apply.
 */
export function grpcHttp2Servers(server: grpc.Server, what: string): http2.Http2SecureServer[] {
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2SecureServer, unknown> }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    throw new Error(`cannot apply ${what}: @grpc/grpc-js internals changed (Server.http2Servers); pin the version svid-ca was tested with`);
  }
  return [...servers.keys()];
}

/**
 * Attaches `guard` to every HTTP/2 server grpc-js bound for `server` (call after bindAsync).
 * Throws when grpc-js no longer keeps them where this expects: the limits would silently not apply.
 */
export function installTransportLimits(server: grpc.Server, guard: TransportGuard): void {
  for (const http2Server of grpcHttp2Servers(server, 'the connection limits')) guard.attach(http2Server);
}
