import { X509Certificate } from 'node:crypto';
import type { Authority } from '../ca/index.js';
import { inspectCertificate } from '../pki/index.js';
import { parseWorkloadSpiffeId } from './impersonation.js';
import { AuthError, type Authenticator, type CallCredentials, type Caller } from './types.js';

export interface ClientCertAuthenticatorOptions {
  trustDomain: string;
  /** --client-cert-max-ttl, ms: the longest lifetime a renewal by certificate alone gets. */
  maxTtlMs?: number | undefined;
  clock?: () => Date;
  /** issue #16: the CRLs of the current bundle, through the authority's public face. */
  revocation?: Pick<Authority, 'revokedIn'> | undefined;
}

/** Default --client-cert-max-ttl: Istio's default workload lifetime. */
export const DEFAULT_CLIENT_CERT_MAX_TTL_MS = 24 * 3_600_000;

/**
 * Renewal over mTLS without a token (VMs with PROV_CERT, agents holding a valid SVID). The TLS
 * listener has already verified the presented chain against the current root bundle (grpc-js hands
 * a peer certificate to the handler only when the handshake authorized it). Because connections
 * are long-lived, the leaf's validity period is checked again on every call.
 *
 * A certificate that does not qualify falls through to the token authenticators when the call
 * also carries a token; without one the call fails with the reason.
 */
export class ClientCertAuthenticator implements Authenticator {
  readonly name = 'client-cert';

  constructor(private readonly options: ClientCertAuthenticatorOptions) {}

  async authenticate(creds: CallCredentials): Promise<Caller | undefined> {
    const der = creds.peerCertificate;
    if (!der) return undefined;
    const hasToken = creds.authorization.length > 0;
    const reject = (reason: string): undefined => {
      if (hasToken) return undefined;
      throw new AuthError('unauthenticated', `client certificate not accepted: ${reason}`);
    };
    let cert: X509Certificate;
    let facts: ReturnType<typeof inspectCertificate>;
    try {
      cert = new X509Certificate(der);
      facts = inspectCertificate(der);
    } catch {
      return reject('it cannot be parsed');
    }
    const now = (this.options.clock ?? (() => new Date()))();
    if (now < new Date(cert.validFrom)) return reject(`it is not valid before ${new Date(cert.validFrom).toISOString()}`);
    if (now >= new Date(cert.validTo)) return reject(`it expired at ${new Date(cert.validTo).toISOString()}`);
    if (facts.isCa) return reject('it is a CA certificate');
    if (facts.uriSans.length !== 1) return reject(`it must carry exactly one URI SAN (a SPIFFE ID), it has ${facts.uriSans.length}`);
    const uri = facts.uriSans[0]!;
    const id = parseWorkloadSpiffeId(uri);
    if (!id || id.trustDomain !== this.options.trustDomain) {
      return reject(`its URI SAN is not a SPIFFE ID of trust domain ${this.options.trustDomain} (spiffe://${this.options.trustDomain}/ns/<ns>/sa/<sa>)`);
    }
    // issue #16: a certificate of the presented chain revoked by the CRL of its issuer (ca-crl.pem).
    const revoked = this.options.revocation?.revokedIn(creds.peerChain ?? [der]);
    if (revoked) return reject(`its chain holds a revoked certificate: ${revoked}`);
    // A renewal on this certificate alone ends with it (as istio-csr bounds it), and --client-cert-max-ttl from now.
    const notAfter = new Date(cert.validTo);
    const capped = new Date(now.getTime() + (this.options.maxTtlMs ?? DEFAULT_CLIENT_CERT_MAX_TTL_MS));
    const renewalNotAfter = capped < notAfter ? capped : notAfter;
    return { identity: uri, namespace: id.namespace, serviceAccount: id.serviceAccount, authenticator: this.name, renewalNotAfter };
  }
}
