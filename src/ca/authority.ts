import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  encodePem,
  generateKeyPair,
  privateKeyPem,
  randomSerial,
  servingLeaf,
  signCertificate,
  spkiDer,
  WorkloadLeafEncoder,
  describeRevocation,
  revocationOf,
  type FastLeafFields,
  type ParsedCsr,
  type SigningBundle,
} from '../pki/index.js';
import { backdatedNotBefore, grantValidity, type TtlPolicy } from './ttl.js';

/** Serial as OpenSSL and Node print it: hex without the DER sign byte. */
const serialHex = (serial: Buffer): string => (serial.length > 1 && serial[0] === 0 ? serial.subarray(1) : serial).toString('hex');

/**
 * What is worked out once per signing bundle: the leaf encoder (its constant DER parts) and the
 * signer's NotBefore; a replaced bundle's entry goes with it.
 */
interface PerBundle {
  encoder: WorkloadLeafEncoder;
  signerNotBefore: Date;
  /**
   * The latest notAfter a leaf may carry: the signer's, or earlier when an intermediate or root of
   * a validated path expires first (issue #11: clients reject the chain from then on, and readiness
   * turns NOT_SERVING then, so a leaf claiming more would outlive every chain it can be used in).
   */
  pathNotAfter: Date;
  /** The signer's subject key identifier in hex (IssuedCertificate.signerKeyId), made once rather than per leaf. */
  signerKeyId: string | undefined;
}
const perBundle = new WeakMap<SigningBundle, PerBundle>();
function perBundleFor(bundle: SigningBundle): PerBundle {
  let entry = perBundle.get(bundle);
  if (!entry) {
    entry = {
      encoder: new WorkloadLeafEncoder(bundle.signer, bundle.signingCert.facts.subjectKeyId),
      signerNotBefore: new Date(bundle.signingCert.x509.validFrom),
      pathNotAfter: bundle.validity.notAfter < bundle.notAfter ? bundle.validity.notAfter : bundle.notAfter,
      signerKeyId: bundle.signingCert.facts.subjectKeyId?.toString('hex'),
    };
    perBundle.set(bundle, entry);
  }
  return entry;
}

/** The CA cannot sign right now (no valid signer); callers should retry, so this maps to UNAVAILABLE. */
export class CaUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaUnavailableError';
  }
}

export interface IssueRequest {
  identity: string;
  csr: ParsedCsr;
  /** validity_duration from the request, int64 seconds. */
  requestedTtlSeconds: bigint;
  /** The caller's credential bound (Caller.renewalNotAfter): NotAfter never passes it. */
  notAfterLimit?: Date | undefined;
}

export interface IssuedCertificate {
  /** [leaf, chain certificates one per element, root bundle], each ending in one newline. */
  certChain: string[];
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  requestedMs: number | undefined;
  grantedMs: number;
  clamped: boolean;
  /** NotAfter was cut to the caller's credential bound (IssueRequest.notAfterLimit). */
  credentialCapped: boolean;
  signerKeyId: string | undefined;
}

export interface ServingCertificate {
  keyPem: string;
  /** Leaf followed by the signing chain, ready for a TLS server. */
  certChainPem: string;
  notBefore: Date;
  notAfter: Date;
  serialHex: string;
  /** NotAfter is the signer's NotAfter (the asked lifetime did not fit): renewing cannot extend it until the bundle changes. */
  limitedBySigner: boolean;
}

/**
 * The authority: the current signing bundle and the TTL policy. The bundle is replaced as a
 * whole, so a request that took a snapshot finishes with the bundle it started with.
 */
export class Authority extends EventEmitter<{ bundle: [SigningBundle] }> {
  #bundle: SigningBundle;

  constructor(
    bundle: SigningBundle,
    readonly policy: TtlPolicy,
    private readonly clock: () => Date = () => new Date(),
  ) {
    super();
    this.#bundle = bundle;
  }

  get bundle(): SigningBundle {
    return this.#bundle;
  }

  replaceBundle(bundle: SigningBundle): void {
    this.#bundle = bundle;
    this.emit('bundle', bundle);
  }

  /**
   * Ready while every certificate of the validated paths (signer, intermediates, roots) is within
   * its validity period: the window precomputed at load, so each readiness tick is two comparisons.
   */
  isReady(now: Date = this.clock()): boolean {
    const { notBefore, notAfter } = this.#bundle.validity;
    return now >= notBefore && now < notAfter && now < this.#bundle.notAfter && this.signingKeyAnswers();
  }

  /** issue #17: false while the signing key's token does not answer (always true for an in-memory key). */
  signingKeyAnswers(): boolean {
    return this.#bundle.signer.external?.isAvailable() ?? true;
  }

  private usableBundle(now: Date): SigningBundle {
    const bundle = this.#bundle;
    if (now >= bundle.notAfter) {
      throw new CaUnavailableError(`the signing certificate expired at ${bundle.notAfter.toISOString()}; waiting for a new cacerts bundle`);
    }
    // issue #11: a certificate above the signer (intermediate or root) out of its validity makes
    // every issued chain fail in clients; sign nothing then, as for an expired signer.
    if (now >= bundle.validity.notAfter || now < bundle.validity.notBefore) {
      throw new CaUnavailableError(
        `a certificate of the signing path is not valid now (the path is valid from ${bundle.validity.notBefore.toISOString()} until ${bundle.validity.notAfter.toISOString()}); waiting for a new cacerts bundle`,
      );
    }
    return bundle;
  }

  /**
   * issue #16: why `chainDer` (DER certificates, leaf first, as a client presented them) is revoked
   * by the current bundle's CRLs (RFC 5280 5: a serial on the CRL of the certificate's issuer), or
   * undefined when none is. An unparsable certificate is not judged here (the caller refuses it).
   */
  revokedIn(chainDer: readonly Buffer[]): string | undefined {
    const crls = this.#bundle.crls;
    if (crls.length === 0) return undefined;
    for (const der of chainDer) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(der);
      } catch {
        continue;
      }
      const hit = revocationOf(cert, crls);
      if (hit) return describeRevocation(cert, hit);
    }
    return undefined;
  }

  /**
   * Signs a workload leaf for `identity` over the CSR's public key; authorization happens before
   * this. The one way to issue: synchronous with an in-memory key (the fast path); a Promise with a
   * key on a PKCS#11 token (issue #17), signed off the event loop within the per-signature timeout
   * (CaUnavailableError when the token does not answer). Callers `await` it. There is no
   * synchronous variant: with a token key one would block the event loop for a whole signature.
   * Throws CaUnavailableError when no certificate of the signing path may sign now.
   */
  issueCertificate(req: IssueRequest): IssuedCertificate | Promise<IssuedCertificate> {
    const external = this.#bundle.signer.external;
    if (!external) return this.#issue(req, (encoder, fields) => encoder.issue(fields)) as IssuedCertificate;
    return this.#issue(req, (encoder, fields) => encoder.issueExternal(fields, external));
  }

  #issue(req: IssueRequest, sign: (encoder: WorkloadLeafEncoder, fields: FastLeafFields) => Buffer | Promise<Buffer>): IssuedCertificate | Promise<IssuedCertificate> {
    const now = this.clock();
    const bundle = this.usableBundle(now);
    const { encoder, signerNotBefore, pathNotAfter, signerKeyId } = perBundleFor(bundle);
    const validity = grantValidity(this.policy, req.requestedTtlSeconds, pathNotAfter, now, { signerNotBefore, notAfterLimit: req.notAfterLimit });
    const serial = randomSerial();
    // The workload profile through the fast encoder (byte-identical to signCertificate(workloadLeaf(...)), see test/fast-path.test.ts).
    const der = sign(encoder, {
      spiffeId: req.identity,
      serialNumber: serial,
      publicKeyDer: req.csr.publicKeyDer,
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
    });
    const answer = (der: Buffer): IssuedCertificate => ({
      certChain: [encodePem('CERTIFICATE', der), ...bundle.chainPems, bundle.rootsPem],
      serialHex: serialHex(serial),
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
      requestedMs: validity.requestedMs,
      grantedMs: validity.grantedMs,
      clamped: validity.clamped,
      credentialCapped: validity.credentialCapped,
      signerKeyId,
    });
    return der instanceof Promise ? der.then(answer) : answer(der);
  }

  /** A serving certificate for svid-ca's own TLS listener: a fresh EC P-256 key, held in memory only. */
  issueServing(dnsNames: string[], ttlMs: number): ServingCertificate {
    const now = this.clock();
    const bundle = this.usableBundle(now);
    const { privateKey } = generateKeyPair('ec-p256');
    const notAfterWanted = new Date(now.getTime() + ttlMs);
    const notAfter = notAfterWanted > bundle.notAfter ? bundle.notAfter : notAfterWanted;
    const notBefore = backdatedNotBefore(now, perBundleFor(bundle).signerNotBefore);
    const serial = randomSerial();
    const der = signCertificate(
      servingLeaf({
        dnsNames,
        serialNumber: serial,
        publicKeyDer: spkiDer(privateKey),
        notBefore,
        notAfter,
        issuerKeyId: bundle.signingCert.facts.subjectKeyId,
      }),
      bundle.signer,
    );
    return {
      keyPem: privateKeyPem(privateKey),
      certChainPem: [encodePem('CERTIFICATE', der), ...bundle.chainPems].join(''),
      notBefore,
      notAfter,
      serialHex: serialHex(serial),
      limitedBySigner: notAfterWanted >= bundle.notAfter,
    };
  }
}
