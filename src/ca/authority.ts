import { EventEmitter } from 'node:events';
import {
  encodePem,
  generateKeyPair,
  privateKeyPem,
  randomSerial,
  servingLeaf,
  signCertificate,
  spkiDer,
  CLOCK_SKEW_GRACE_MS,
  WorkloadLeafEncoder,
  type ParsedCsr,
  type SigningBundle,
} from '../pki/index.js';
import { grantValidity, type TtlPolicy } from './ttl.js';

/** Serial as OpenSSL and Node print it: hex without the DER sign byte. */
const serialHex = (serial: Buffer): string => (serial.length > 1 && serial[0] === 0 ? serial.subarray(1) : serial).toString('hex');

/**
 * One leaf encoder per signing bundle (its constant DER parts are encoded once); a replaced
 * bundle's encoder goes with it.
 */
const leafEncoders = new WeakMap<SigningBundle, WorkloadLeafEncoder>();
function leafEncoderFor(bundle: SigningBundle): WorkloadLeafEncoder {
  let encoder = leafEncoders.get(bundle);
  if (!encoder) {
    encoder = new WorkloadLeafEncoder(bundle.signer, bundle.signingCert.facts.subjectKeyId);
    leafEncoders.set(bundle, encoder);
  }
  return encoder;
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
  signerKeyId: string | undefined;
}

export interface ServingCertificate {
  keyPem: string;
  /** Leaf followed by the signing chain, ready for a TLS server. */
  certChainPem: string;
  notBefore: Date;
  notAfter: Date;
  serialHex: string;
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
    return now >= notBefore && now < notAfter && now < this.#bundle.notAfter;
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

  /** Signs a workload leaf for `identity` over the CSR's public key. Authorization happens before this. */
  issue(req: IssueRequest): IssuedCertificate {
    const now = this.clock();
    const bundle = this.usableBundle(now);
    const validity = grantValidity(this.policy, req.requestedTtlSeconds, bundle.notAfter, now);
    const serial = randomSerial();
    const keyId = bundle.signingCert.facts.subjectKeyId;
    // The workload profile through the fast encoder (byte-identical to signCertificate(workloadLeaf(...)), see test/fast-path.test.ts).
    const der = leafEncoderFor(bundle).issue({
      spiffeId: req.identity,
      serialNumber: serial,
      publicKeyDer: req.csr.publicKeyDer,
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
    });
    return {
      certChain: [encodePem('CERTIFICATE', der), ...bundle.chainPems, bundle.rootsPem],
      serialHex: serialHex(serial),
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
      requestedMs: validity.requestedMs,
      grantedMs: validity.grantedMs,
      clamped: validity.clamped,
      signerKeyId: keyId?.toString('hex'),
    };
  }

  /** A serving certificate for svid-ca's own TLS listener: a fresh EC P-256 key, held in memory only. */
  issueServing(dnsNames: string[], ttlMs: number): ServingCertificate {
    const now = this.clock();
    const bundle = this.usableBundle(now);
    const { privateKey } = generateKeyPair('ec-p256');
    const notAfterWanted = new Date(now.getTime() + ttlMs);
    const notAfter = notAfterWanted > bundle.notAfter ? bundle.notAfter : notAfterWanted;
    const notBefore = new Date(now.getTime() - CLOCK_SKEW_GRACE_MS);
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
    };
  }
}
