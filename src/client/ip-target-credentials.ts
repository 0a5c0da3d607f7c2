import * as grpc from '@grpc/grpc-js';
import { connect, createSecureContext } from 'node:tls';

type SecureConnector = ReturnType<grpc.ChannelCredentials['_createSecureConnector']>;

/**
 * TLS channel credentials for a CA dialled by IP address (`--ca 127.0.0.1:15012`): the root bundle `rootPem`
 * (PEM) verifies the serving certificate, and its iPAddress SAN must hold `ip` (Node's checkServerIdentity
 * with the connection's host, RFC 6125 / RFC 5280). Unlike grpc-js' createSsl, which always passes the
 * target's host as the TLS server name, no server name is set: RFC 6066 forbids an IP in SNI, Node does not
 * send one, and passing it made Node print a DEP0123 DeprecationWarning on every `svid-ca request`.
 * ALPN h2 as createSsl. Handshake errors reject the connection as grpc-js' own connector does.
 */
export class IpTargetCredentials extends grpc.ChannelCredentials {
  private readonly secureContext;

  constructor(
    rootPem: string,
    private readonly ip: string,
  ) {
    super();
    this.secureContext = createSecureContext({ ca: rootPem });
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(_target: unknown, _options: unknown, callCredentials?: grpc.CallCredentials): SecureConnector {
    const credentials = callCredentials ?? grpc.credentials.createEmpty();
    const { secureContext, ip } = this;
    return {
      connect: (socket) =>
        new Promise((resolve, reject) => {
          const tlsSocket = connect({ socket, secureContext, host: ip, ALPNProtocols: ['h2'] }, () => {
            if (!tlsSocket.authorized) reject(tlsSocket.authorizationError);
            else resolve({ socket: tlsSocket, secure: true });
          });
          tlsSocket.on('error', reject);
        }),
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => credentials,
      destroy: () => {},
    };
  }
}
