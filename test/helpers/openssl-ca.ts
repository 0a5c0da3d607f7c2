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

/** The issue's STDEXT: a well-formed CA. */
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

/** OpenSSL's time form for `openssl ca` (-crl_lastupdate, index.txt): YYMMDDHHMMSSZ, or YYYYMMDDHHMMSSZ from 2050. */
const caTime = (d: Date) => d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z').slice(d.getUTCFullYear() < 2050 ? 2 : 0);

/**
 * A CRL made by `openssl ca -gencrl` (issue #16), with a small openssl ca config in `work`: signed by
 * `issuer`, revoking `revoked` (reason `reason`, default keyCompromise), CRL number `number` (default 1),
 * thisUpdate/nextUpdate as given (default now / +30 days). Returns the PEM.
 */
export function opensslCrl(work: string, issuer: TestCa, revoked: X509Certificate[], opts: { lastUpdate?: Date; nextUpdate?: Date; number?: number; reason?: string } = {}): string {
  const n = `crl${++counter}`;
  const key = join(work, `${n}.key`);
  const cert = join(work, `${n}.crt`);
  const index = join(work, `${n}.index.txt`);
  const cnf = join(work, `${n}.cnf`);
  const out = join(work, `${n}.pem`);
  writeFileSync(key, issuer.keyPem);
  writeFileSync(cert, issuer.certPem);
  const revokedAt = caTime(new Date(Date.now() - 60_000));
  const line = (c: X509Certificate) => {
    const serial = c.serialNumber.length % 2 ? `0${c.serialNumber}` : c.serialNumber;
    return ['R', caTime(new Date(c.validTo)), `${revokedAt},${opts.reason ?? 'keyCompromise'}`, serial.toUpperCase(), 'unknown', `/${(c.subject ?? '').split('\n').join('/')}`].join('\t');
  };
  writeFileSync(index, revoked.map((c) => `${line(c)}\n`).join(''));
  writeFileSync(join(work, `${n}.crlnumber`), `${(opts.number ?? 1).toString(16).padStart(2, '0').toUpperCase()}\n`);
  writeFileSync(
    cnf,
    [
      '[ca]',
      'default_ca = CA_default',
      '[CA_default]',
      `database = ${index}`,
      `crlnumber = ${join(work, `${n}.crlnumber`)}`,
      'default_md = sha256',
      'default_crl_days = 30',
      'crl_extensions = crl_ext',
      '[crl_ext]',
      'authorityKeyIdentifier = keyid:always',
      '',
    ].join('\n'),
  );
  const args = ['ca', '-gencrl', '-config', cnf, '-keyfile', key, '-cert', cert, '-out', out];
  if (opts.lastUpdate) args.push('-crl_lastupdate', caTime(opts.lastUpdate));
  if (opts.nextUpdate) args.push('-crl_nextupdate', caTime(opts.nextUpdate));
  openssl(args);
  return openssl(['crl', '-in', out]);
}

/**
 * `openssl verify -x509_strict -crl_check_all` of `leafPem` through `untrusted` to `rootsPem` with
 * `crlsPem`: undefined when OpenSSL accepts the chain, else its output. The verdict sidecars and
 * ztunnel reach on the CRLs svid-ca publishes (issue #16).
 */
export function opensslCrlVerdict(leafPem: string, untrusted: string[], rootsPem: string, crlsPem: string, purpose = 'sslclient'): string | undefined {
  const dir = tempDir('svid-ca-ossl-crl-');
  writeFileSync(join(dir, 'roots.pem'), rootsPem);
  writeFileSync(join(dir, 'untrusted.pem'), untrusted.join('') || '\n');
  writeFileSync(join(dir, 'crls.pem'), crlsPem);
  writeFileSync(join(dir, 'leaf.pem'), leafPem);
  const args = ['verify', '-x509_strict', '-purpose', purpose, '-crl_check_all', '-CAfile', join(dir, 'roots.pem'), '-CRLfile', join(dir, 'crls.pem')];
  if (untrusted.length > 0) args.push('-untrusted', join(dir, 'untrusted.pem'));
  args.push(join(dir, 'leaf.pem'));
  try {
    openssl(args);
    return undefined;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.trim();
  }
}
