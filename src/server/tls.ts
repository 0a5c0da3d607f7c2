import * as grpc from '@grpc/grpc-js';

export interface KeyAndChain {
  keyPem: string;
  certChainPem: string;
}

type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

/** The latest value of a certificate provider and its grpc-js listeners. */
class Published<T> {
  private readonly listeners = new Set<(value: T) => void>();

  constructor(private value: T) {}

  set(value: T): void {
    this.value = value;
    for (const l of this.listeners) l(value);
  }

  add(listener: (value: T) => void): void {
    this.listeners.add(listener);
    // Deliver the current value after grpc-js has registered its watcher: it subscribes to the
    // provider before adding the watcher, so a synchronous call here would be lost.
    queueMicrotask(() => {
      if (this.listeners.has(listener)) listener(this.value);
    });
  }

  remove(listener: (value: T) => void): void {
    this.listeners.delete(listener);
  }
}

/**
 * The gRPC listener's TLS identity, through grpc-js's certificate-provider credentials: update()
 * swaps the certificate for new handshakes (http2 setSecureContext) while open connections keep
 * theirs. ALPN h2 comes from Node's http2 secure server, which current grpc-go clients require.
 */
export class ServingTls implements grpc.experimental.CertificateProvider {
  readonly credentials: grpc.ServerCredentials;
  private readonly identity: Published<grpc.experimental.IdentityCertificateUpdate>;

  constructor(initial: KeyAndChain, clientCa: ClientCaProvider | null = null) {
    this.identity = new Published<grpc.experimental.IdentityCertificateUpdate>(toUpdate(initial));
    // grpc-js 1.14 names the factory's parameters (ca, identity) but hands them to a constructor
    // taking (identity, ca): the first argument is the identity. With a CA provider the listener
    // requests (requestCert) but does not require (false) a client certificate; without one
    // (null) client certificates are not requested.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this, clientCa, false);
  }

  update(next: KeyAndChain): void {
    this.identity.set(toUpdate(next));
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identity.add(listener);
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identity.remove(listener);
  }

  addCaCertificateListener(_listener: CaListener): void {}
  removeCaCertificateListener(_listener: CaListener): void {}
}

/**
 * The roots client certificates are verified against (--client-cert-auth): the current root bundle.
 * update() rebuilds the listener's secure context, so new handshakes use the new bundle.
 */
export class ClientCaProvider implements grpc.experimental.CertificateProvider {
  private readonly ca: Published<grpc.experimental.CaCertificateUpdate>;

  constructor(rootsPem: string) {
    this.ca = new Published<grpc.experimental.CaCertificateUpdate>({ caCertificate: Buffer.from(rootsPem) });
  }

  update(rootsPem: string): void {
    this.ca.set({ caCertificate: Buffer.from(rootsPem) });
  }

  addCaCertificateListener(listener: CaListener): void {
    this.ca.add(listener);
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.ca.remove(listener);
  }

  addIdentityCertificateListener(_listener: IdentityListener): void {}
  removeIdentityCertificateListener(_listener: IdentityListener): void {}
}

function toUpdate(k: KeyAndChain): grpc.experimental.IdentityCertificateUpdate {
  return { privateKey: Buffer.from(k.keyPem), certificate: Buffer.from(k.certChainPem) };
}
