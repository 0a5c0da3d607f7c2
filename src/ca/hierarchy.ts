import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import {
  caCertificate,
  encodeName,
  encodePem,
  generateKeyPair,
  inspectCertificate,
  keyIdentifier,
  privateKeyPem,
  randomSerial,
  signatureAlgorithmForKey,
  signCertificate,
  spkiDer,
  type ExternalKey,
  type KeySpec,
  type Signer,
} from '../pki/index.js';

export interface CaMaterial {
  certPem: string;
  keyPem: string;
}

export interface RootOptions {
  key: KeySpec;
  ttlMs: number;
  organization: string;
  commonName?: string;
  /** Make commonName distinct to this CA with distinctCaName (the defaults of `svid-ca cacerts`). */
  distinctName?: boolean | undefined;
  now?: Date;
}

/**
 * A CA commonName that no other run repeats: `base`, the creation date (UTC, YYYY-MM-DD) and the
 * first 8 hex digits of the key's subject key identifier (SHA-1 of the public key bits, RFC 5280
 * 4.2.1.2 method 1, as the certificate's SKI extension carries it), e.g.
 * `svid-ca root CA 2026-11-30 3f2a91c0`. Two CAs made by separate runs get different subjects, so
 * operators and verifiers tell them apart while both are in one bundle during a rotation; the
 * suffix is the start of the SKI that `svid-ca cacerts verify` and `openssl x509 -text` print.
 */
export function distinctCaName(base: string, publicKeyDer: Buffer, now: Date): string {
  return `${base} ${now.toISOString().slice(0, 10)} ${keyIdentifier(publicKeyDer).toString('hex').slice(0, 8)}`;
}

/** A self-signed root CA with a fresh key. */
export function createRootCa(o: RootOptions): CaMaterial {
  const { privateKey } = generateKeyPair(o.key);
  return { certPem: rootCertificateForKey(privateKeyPem(privateKey), o), keyPem: privateKeyPem(privateKey) };
}

/** A self-signed root for an existing key: used to re-issue a root that keeps its key (old leaves still verify). */
export function rootCertificateForKey(keyPem: string, o: Omit<RootOptions, 'key'> & { subjectDer?: Buffer }): string {
  const privateKey = createPrivateKey(keyPem);
  const algorithm = signatureAlgorithmForKey(privateKey);
  if (!algorithm) throw new Error('unsupported root key type');
  return rootCertificate(spkiDer(privateKey), (subjectDer) => ({ subjectDer, privateKey, algorithm }), o);
}

/**
 * rootCertificateForKey for a key outside this process (issue #17: the self-signed root's key on a
 * PKCS#11 token): `publicKey` goes into the certificate and `key` signs it (its blocking call, bounded
 * by the token's per-signature timeout). Throws what the key throws (CaUnavailableError when the token does not sign).
 */
export function rootCertificateForExternalKey(key: ExternalKey, publicKey: KeyObject, o: Omit<RootOptions, 'key'> & { subjectDer?: Buffer }): string {
  const algorithm = signatureAlgorithmForKey(publicKey);
  if (!algorithm) throw new Error('unsupported root key type');
  return rootCertificate(spkiDer(publicKey), (subjectDer) => ({ subjectDer, algorithm, external: key }), o);
}

function rootCertificate(publicKeyDer: Buffer, signer: (subjectDer: Buffer) => Signer, o: Omit<RootOptions, 'key'> & { subjectDer?: Buffer }): string {
  const now = o.now ?? new Date();
  const commonName = o.distinctName && o.commonName !== undefined ? distinctCaName(o.commonName, publicKeyDer, now) : o.commonName;
  const subjectDer = o.subjectDer ?? encodeName({ organization: o.organization, commonName });
  const der = signCertificate(
    caCertificate({
      serialNumber: randomSerial(),
      subjectDer,
      publicKeyDer,
      notBefore: now,
      notAfter: new Date(now.getTime() + o.ttlMs),
    }),
    signer(subjectDer),
  );
  return encodePem('CERTIFICATE', der);
}

export interface IntermediateOptions {
  root: CaMaterial;
  key: KeySpec;
  ttlMs: number;
  organization: string;
  commonName: string;
  /** Make commonName distinct to this CA with distinctCaName (the defaults of `svid-ca cacerts`). */
  distinctName?: boolean | undefined;
  now?: Date;
}

/** The four files of an Istio-layout cacerts folder. */
export interface CacertsFiles {
  'ca-cert.pem': string;
  'ca-key.pem': string;
  'cert-chain.pem': string;
  'root-cert.pem': string;
}

/** An intermediate signed by `root`, as an Istio cacerts folder (cert-chain = intermediate + root, as Istio's Makefile writes it). */
export function createIntermediateCa(o: IntermediateOptions): CacertsFiles {
  const { privateKey } = generateKeyPair(o.key);
  const files = intermediateCertificateFiles({ ...o, publicKeyDer: spkiDer(privateKey) });
  return { 'ca-cert.pem': files['ca-cert.pem'], 'ca-key.pem': privateKeyPem(privateKey), 'cert-chain.pem': files['cert-chain.pem'], 'root-cert.pem': files['root-cert.pem'] };
}

/**
 * The certificate files of an intermediate whose key exists already (issue #17: generated in a
 * PKCS#11 token): ca-cert.pem for `publicKeyDer` signed by `root`, cert-chain.pem, root-cert.pem.
 */
export function intermediateCertificateFiles(o: Omit<IntermediateOptions, 'key'> & { publicKeyDer: Buffer }): Omit<CacertsFiles, 'ca-key.pem'> {
  const rootKey = createPrivateKey(o.root.keyPem);
  const rootX509 = new X509Certificate(o.root.certPem);
  const algorithm = signatureAlgorithmForKey(rootKey);
  if (!algorithm) throw new Error('unsupported root key type');
  const rootFacts = inspectCertificate(rootX509.raw);
  const now = o.now ?? new Date();
  const rootNotAfter = new Date(rootX509.validTo);
  const wanted = new Date(now.getTime() + o.ttlMs);
  const der = signCertificate(
    caCertificate({
      serialNumber: randomSerial(),
      subjectDer: encodeName({ organization: o.organization, commonName: o.distinctName ? distinctCaName(o.commonName, o.publicKeyDer, now) : o.commonName }),
      publicKeyDer: o.publicKeyDer,
      notBefore: now,
      notAfter: wanted > rootNotAfter ? rootNotAfter : wanted,
      issuerKeyId: rootFacts.subjectKeyId ?? keyIdentifier(spkiDer(rootX509.publicKey)),
      pathLen: 0,
    }),
    { subjectDer: rootFacts.subjectDer, privateKey: rootKey, algorithm },
  );
  const certPem = encodePem('CERTIFICATE', der);
  const rootPem = encodePem('CERTIFICATE', rootX509.raw);
  return { 'ca-cert.pem': certPem, 'cert-chain.pem': certPem + rootPem, 'root-cert.pem': rootPem };
}
