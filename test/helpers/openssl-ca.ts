/**
 * CA certificates made by the openssl CLI, with any extension text an operator (or a bug report)
 * would write: the fixtures of issue #11 are built exactly as the reproductions describe them, not
 * with svid-ca's own encoder. Probe leaves are signed with svid-ca's leaf profiles by the fixture's
 * signer and judged by `openssl verify -x509_strict -purpose sslclient|sslserver`.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  encodePem,
  generateKeyPair,
  inspectCertificate,
  randomSerial,
  servingLeaf,
  signatureAlgorithmForKey,
  signCertificate,
  spkiDer,
  workloadLeaf,
} from '../../src/pki/index.js';
import { tempDir, type TestCa } from './pki.js';

/** The STDEXT: a well-formed CA. */
export const STDEXT = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature', 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid'];

let counter = 0;
const openssl = (args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/**
 * A CA certificate made by openssl: self-signed when `issuer` is undefined, else signed by it.
 * `ext` lines go verbatim into the extension section (e.g. STDEXT plus 'extendedKeyUsage=serverAuth').
 */
export function opensslCa(work: string, cn: string, ext: string[], issuer?: TestCa, opts: { days?: number; key?: 'ec' | 'rsa' } = {}): TestCa {
  const n = `${++counter}`;
  const key = join(work, `${n}.key`);
  const csr = join(work, `${n}.csr`);
  const cert = join(work, `${n}.crt`);
  const extFile = join(work, `${n}.ext`);
  writeFileSync(extFile, `[v3]\n${ext.join('\n')}\n`);
  if (opts.key === 'rsa') openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key]);
  else openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  openssl(['req', '-new', '-key', key, '-subj', `/O=svid-ca test/CN=${cn}`, '-out', csr]);
  const sign = issuer
    ? (() => {
        const ik = join(work, `${n}.issuer.key`);
        const ic = join(work, `${n}.issuer.crt`);
        writeFileSync(ik, issuer.keyPem);
        writeFileSync(ic, issuer.certPem);
        return ['-CA', ic, '-CAkey', ik, '-set_serial', `0x${randomSerial().toString('hex')}`];
      })()
    : ['-signkey', key];
  openssl(['x509', '-req', '-in', csr, ...sign, '-days', String(opts.days ?? 365), '-extfile', extFile, '-extensions', 'v3', '-out', cert]);
  const certPem = openssl(['x509', '-in', cert]);
  const keyPem = openssl(['pkey', '-in', key]);
  return { certPem, keyPem, cert: new X509Certificate(certPem) };
}

export const PROBE_SPIFFE_ID = 'spiffe://cluster.local/ns/default/sa/probe';
export const PROBE_DNS = ['svid-ca.istio-system.svc', 'localhost'];

/** Leaves as svid-ca issues them (workload SVID and serving certificate profiles), signed by `signer`. */
export function probeLeaves(signer: TestCa, spiffeId = PROBE_SPIFFE_ID, dnsNames = PROBE_DNS): { workload: string; serving: string } {
  const signerKey = createPrivateKey(signer.keyPem);
  const facts = inspectCertificate(signer.cert.raw);
  const s = { subjectDer: facts.subjectDer, privateKey: signerKey, algorithm: signatureAlgorithmForKey(signerKey)! };
  const now = Date.now();
  const common = {
    publicKeyDer: spkiDer(generateKeyPair('ec-p256').privateKey),
    notBefore: new Date(now - 120_000),
    notAfter: new Date(Math.min(now + 3_600_000, new Date(signer.cert.validTo).getTime())),
    issuerKeyId: facts.subjectKeyId,
  };
  return {
    workload: encodePem('CERTIFICATE', signCertificate(workloadLeaf({ ...common, serialNumber: randomSerial(), spiffeId }), s)),
    serving: encodePem('CERTIFICATE', signCertificate(servingLeaf({ ...common, serialNumber: randomSerial(), dnsNames }), s)),
  };
}

/**
 * OpenSSL's verdict on what a bundle would issue: the workload probe with -purpose sslclient and
 * sslserver, the serving probe with sslserver, each with -x509_strict, from the leaf through
 * `untrusted` to `rootsPem`. Returns undefined when all pass, else OpenSSL's output.
 */
export function opensslVerdict(signer: TestCa, untrusted: string[], rootsPem: string, spiffeId = PROBE_SPIFFE_ID, dnsNames = PROBE_DNS): string | undefined {
  const dir = tempDir('svid-ca-ossl-verdict-');
  const { workload, serving } = probeLeaves(signer, spiffeId, dnsNames);
  writeFileSync(join(dir, 'roots.pem'), rootsPem);
  writeFileSync(join(dir, 'untrusted.pem'), untrusted.join('') || '\n');
  writeFileSync(join(dir, 'workload.pem'), workload);
  writeFileSync(join(dir, 'serving.pem'), serving);
  const checks: [string, string][] = [
    ['workload.pem', 'sslclient'],
    ['workload.pem', 'sslserver'],
    ['serving.pem', 'sslserver'],
  ];
  for (const [leaf, purpose] of checks) {
    const args = ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', join(dir, 'roots.pem')];
    if (untrusted.length > 0) args.push('-untrusted', join(dir, 'untrusted.pem'));
    args.push(join(dir, leaf));
    try {
      openssl(args);
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return `${leaf} -purpose ${purpose}: ${e.stdout ?? ''}${e.stderr ?? ''}`.trim();
    }
  }
  return undefined;
}

export { tempDir };
