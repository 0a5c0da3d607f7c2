import * as grpc from '@grpc/grpc-js';

export interface KeyAndChain {
  keyPem: string;
  certChainPem: string;
}

type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

/**
 * The gRPC listener's TLS identity, through grpc-js's certificate-provider credentials: update()
 * swaps the certificate for new handshakes (http2 setSecureContext) while open connections keep
 * theirs. ALPN h2 comes from Node's http2 secure server, which current grpc-go clients require.
 */
export class ServingTls implements grpc.experimental.CertificateProvider {
  readonly credentials: grpc.ServerCredentials;
  private identity: grpc.experimental.IdentityCertificateUpdate;
  private readonly identityListeners = new Set<IdentityListener>();

  constructor(initial: KeyAndChain) {
    this.identity = toUpdate(initial);
    // grpc-js 1.14 names the factory's parameters (ca, identity) but hands them to a constructor
    // taking (identity, ca): the first argument is the identity. null for the other: client
    // certificates are not requested.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this, null, false);
  }

  update(next: KeyAndChain): void {
    this.identity = toUpdate(next);
    for (const l of this.identityListeners) l(this.identity);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    // Deliver the current identity after grpc-js has registered its watcher: it subscribes to us
    // before adding the watcher, so a synchronous call here would be lost.
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) listener(this.identity);
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }

  addCaCertificateListener(_listener: CaListener): void {}
  removeCaCertificateListener(_listener: CaListener): void {}
}

function toUpdate(k: KeyAndChain): grpc.experimental.IdentityCertificateUpdate {
  return { privateKey: Buffer.from(k.keyPem), certificate: Buffer.from(k.certChainPem) };
}
