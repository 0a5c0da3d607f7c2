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

  constructor(initial: KeyAndChain, clientCa: ClientCaProvider | null = null) {
    this.identity = toUpdate(initial);
    // grpc-js 1.14 names the factory's parameters (ca, identity) but hands them to a constructor
    // taking (identity, ca): the first argument is the identity. With a CA provider the listener
    // requests (requestCert) but does not require (false) a client certificate; without one
    // (null) client certificates are not requested.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this, clientCa, false);
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

/**
 * The roots client certificates are verified against (--client-cert-auth): the current root bundle.
 * update() rebuilds the listener's secure context, so new handshakes use the new bundle.
 */
export class ClientCaProvider implements grpc.experimental.CertificateProvider {
  private ca: grpc.experimental.CaCertificateUpdate;
  private readonly caListeners = new Set<CaListener>();

  constructor(rootsPem: string) {
    this.ca = { caCertificate: Buffer.from(rootsPem) };
  }

  update(rootsPem: string): void {
    this.ca = { caCertificate: Buffer.from(rootsPem) };
    for (const l of this.caListeners) l(this.ca);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    // Same ordering concern as ServingTls.addIdentityCertificateListener.
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener(this.ca);
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(_listener: IdentityListener): void {}
  removeIdentityCertificateListener(_listener: IdentityListener): void {}
}

function toUpdate(k: KeyAndChain): grpc.experimental.IdentityCertificateUpdate {
  return { privateKey: Buffer.from(k.keyPem), certificate: Buffer.from(k.certChainPem) };
}
