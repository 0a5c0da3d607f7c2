import { isIP } from 'node:net';
import { checkServerIdentity, connect, type PeerCertificate } from 'node:tls';

/**
 * Why a TLS connection to the CA cannot be made, in terms an operator can act on (which of --ca,
 * --root, --server-name to fix). grpc-js reports all of these as one string under 14 UNAVAILABLE
 * ("No connection established. Last error: ..."), so after such a failure we dial once more with
 * node:tls alone and read the structured errors: the socket's error code, the handshake's
 * authorizationError (an OpenSSL verify code) and the certificate's names.
 */
export type ConnectionProblem =
  /** Nothing accepted the TCP connection (ECONNREFUSED). */
  | { kind: 'refused' }
  /** The host name does not resolve (ENOTFOUND, EAI_AGAIN). */
  | { kind: 'unresolved'; code: string }
  /** The serving certificate does not chain to the given root bundle; `reason` is OpenSSL's text. */
  | { kind: 'untrusted'; reason: string; code: string }
  /** The serving certificate chains to the root but does not carry `name`; `names` are its SANs. */
  | { kind: 'name-mismatch'; names: string }
  /** No TCP connection or TLS handshake within the timeout. */
  | { kind: 'timeout'; ms: number }
  /** The port answered, but not with TLS (a plain-HTTP port, say); `reason` is OpenSSL's. */
  | { kind: 'not-tls'; reason: string }
  /** Any other socket or TLS error, with its message. */
  | { kind: 'other'; message: string };

/**
 * OpenSSL's text for the verify codes node:tls reports as `authorizationError` (X509_verify_cert_error_string);
 * any other code is shown as it is.
 */
const VERIFY_TEXT: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to verify the first certificate',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to get local issuer certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in certificate chain',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
  CERT_HAS_EXPIRED: 'certificate has expired',
  CERT_NOT_YET_VALID: 'certificate is not yet valid',
  CERT_SIGNATURE_FAILURE: 'certificate signature failure',
};

export interface ConnectionCheck {
  host: string;
  port: number;
  rootPem: string;
  /** The name the serving certificate must carry (--server-name, else the host). */
  name: string;
  timeoutMs?: number;
}

/**
 * Dials host:port over TLS (ALPN h2, as gRPC does) trusting only `rootPem`, and says what is wrong, or
 * undefined when the handshake succeeds and the certificate carries `name` (then the failure was elsewhere).
 * Verification follows what grpc-js does: chain to the given roots, then RFC 6125 name check
 * (node:tls checkServerIdentity). Never rejects; closes its socket; one connection, at most timeoutMs (10 s).
 */
export function diagnoseConnection(c: ConnectionCheck): Promise<ConnectionProblem | undefined> {
  const timeoutMs = c.timeoutMs ?? 10_000;
  return new Promise((resolve) => {
    const socket = connect({
      host: c.host,
      port: c.port,
      ca: c.rootPem,
      // SNI must be a DNS name, never an IP address (RFC 6066 section 3).
      ...(isIP(c.name) ? {} : { servername: c.name }),
      ALPNProtocols: ['h2'],
      // Both checked below, so that a chain problem and a name problem are told apart.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    const done = (problem: ConnectionProblem | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done({ kind: 'timeout', ms: timeoutMs }), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') done({ kind: 'refused' });
      else if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') done({ kind: 'unresolved', code: err.code });
      else if (err.code?.startsWith('ERR_SSL_')) done({ kind: 'not-tls', reason: (err as { reason?: string }).reason ?? err.code });
      else done({ kind: 'other', message: err.message });
    });
    socket.on('secureConnect', () => {
      // An OpenSSL verify code such as SELF_SIGNED_CERT_IN_CHAIN (typed Error, but a string at run time).
      const authError = socket.authorizationError as unknown;
      if (authError) {
        const code = typeof authError === 'string' ? authError : ((authError as { code?: string }).code ?? String(authError));
        return done({ kind: 'untrusted', reason: VERIFY_TEXT[code] ?? code, code });
      }
      const cert: PeerCertificate = socket.getPeerCertificate();
      const mismatch = checkServerIdentity(c.name, cert);
      done(mismatch ? { kind: 'name-mismatch', names: cert.subjectaltname ?? '(none)' } : undefined);
    });
  });
}
