/**
 * Path validation of a signing bundle for what it is about to issue (issue #11): a probe workload
 * SVID (the trust domain's SPIFFE ID, serverAuth+clientAuth) and a probe serving certificate
 * (every serving DNS name), built with the real leaf profiles and signed by the real signer, must
 * validate from leaf to each root they chain to, as RFC 5280 clients (Go crypto/x509, OpenSSL)
 * validate them. pkijs' CertificateChainValidationEngine does the RFC 5280 work (signatures,
 * validity, names chaining, CA flags and keyCertSign, policies, URI/DNS name constraints); the
 * rules it lacks are added here and only here:
 *   - pathLenConstraint (pkijs ignores it),
 *   - extended key usage nesting (pkijs ignores EKU; OpenSSL and Go reject a leaf whose purpose an
 *     issuing CA's EKU does not list),
 *   - the trust anchor's name constraints (pkijs skips the root; OpenSSL and Go apply them),
 *   - critical extensions clients do not process (pkijs reports them only as "not a CA").
 * Every refusal is one line naming the certificate (subject and SKI), the rule, and the fix.
 */
import { generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { randomSerial, signCertificate, type Signer } from './certificate.js';
import { BundleError } from './errors.js';
import { KeyUsageBit } from './extensions.js';
import type { CertificateFacts } from './inspect.js';
import { spkiDer } from './keys.js';
import { OID } from './oids.js';
import { CLOCK_SKEW_GRACE_MS, servingLeaf, workloadLeaf } from './profiles.js';
import type { PathJob, PathJobResult } from './path-validation-worker.js';
import { subjectText } from './verify.js';

/** The names svid-ca will put in the certificates it issues: what the probe leaves carry. */
export interface ProbeNames {
  /** SPIFFE trust domain (--trust-domain); the probe SVID is spiffe://<trustDomain>/ns/istio-system/sa/svid-ca-probe. */
  trustDomain: string;
  /** DNS SANs of the serving certificate (--serving-dns). */
  servingDns: string[];
}

/** A certificate of a path, with the file it came from (named in refusals). */
export interface PathCertificate {
  x509: X509Certificate;
  der: Buffer;
  facts: CertificateFacts;
  file: string;
}

/** The window in which every certificate of every validated path is valid: readiness re-checks only this. */
export interface PathValidity {
  /** Latest notBefore over the validated paths. */
  notBefore: Date;
  /** Earliest notAfter over the validated paths. */
  notAfter: Date;
}

/**
 * Critical extensions both OpenSSL and Go process (RFC 5280 4.2). Any other critical extension
 * makes them reject the chain ("unhandled critical extension").
 */
const PROCESSED_CRITICAL = new Set<string>([
  OID.keyUsage,
  OID.basicConstraints,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.extKeyUsage,
  OID.certificatePolicies,
  OID.policyMappings,
  OID.policyConstraints,
  OID.inhibitAnyPolicy,
]);

const EKU_NAMES: Record<string, string> = { [OID.serverAuth]: 'serverAuth', [OID.clientAuth]: 'clientAuth' };
const ekuName = (oid: string) => EKU_NAMES[oid] ?? oid;

/** `certificate "O=x, CN=y" (SKI ab12...)`: how every refusal names a certificate. */
export function certificateLabel(c: { x509: X509Certificate; facts: CertificateFacts }): string {
  const ski = c.facts.subjectKeyId?.toString('hex') ?? 'none';
  return `certificate "${subjectText(c.x509) || '(empty subject)'}" (SKI ${ski})`;
}

const selfIssued = (c: PathCertificate) => c.x509.checkIssued(c.x509);

/** The rules pkijs lacks, plus the CA rules with a named certificate; throws on the first broken one. */
function checkRules(path: PathCertificate[]): void {
  for (const [i, c] of path.entries()) {
    const who = i === 0 ? `the signing ${certificateLabel(c)}` : certificateLabel(c);
    const unknown = c.facts.criticalExtensions.find((oid) => !PROCESSED_CRITICAL.has(oid));
    if (unknown) {
      throw new BundleError(c.file, `${who} has critical extension ${unknown}, which OpenSSL and Go do not process: they reject every chain through it (unhandled critical extension); reissue it without that extension or with it non-critical`);
    }
    if (!c.facts.isCa) {
      throw new BundleError(c.file, `${who} is not a CA (BasicConstraints CA:TRUE is missing): clients reject every certificate it issues; reissue it with basicConstraints=critical,CA:TRUE`);
    }
    const ku = c.facts.keyUsageBits;
    if (ku && !ku.includes(KeyUsageBit.keyCertSign)) {
      throw new BundleError(c.file, `${who} lacks the keyCertSign key usage: clients reject every certificate it issues (key usage does not include certificate signing); reissue it with keyUsage keyCertSign`);
    }
    // RFC 5280 6.1.4 (l)/(m): non-self-issued intermediates below this CA, the leaf excluded.
    const below = path.slice(0, i).filter((x) => !selfIssued(x)).length;
    if (c.facts.pathLenConstraint !== undefined && below > c.facts.pathLenConstraint) {
      throw new BundleError(
        c.file,
        `${who} has pathLenConstraint ${c.facts.pathLenConstraint} but ${below} intermediate CA${below === 1 ? '' : 's'} below it: clients reject every chain (path length constraint exceeded); reissue it with pathlen of at least ${below} (or none), or sign with it directly`,
      );
    }
    const eku = c.facts.extKeyUsage;
    if (eku) {
      const missing = [OID.serverAuth, OID.clientAuth].filter((p) => !eku.includes(p));
      if (missing.length > 0) {
        throw new BundleError(
          c.file,
          `${who} limits extended key usage to ${eku.map(ekuName).join(', ') || '(nothing)'}: every SVID carries serverAuth and clientAuth and clients reject it (unsuitable certificate purpose: ${missing.map(ekuName).join(', ')} not allowed); reissue it without extendedKeyUsage or with both serverAuth and clientAuth`,
        );
      }
    }
  }
}

let probeKey: KeyObject | undefined;
/** One probe public key per process: the probe leaves are never used, only validated. */
function probePublicKeyDer(): Buffer {
  probeKey ??= generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey;
  return spkiDer(probeKey);
}

/** The SPIFFE ID the probe SVID carries. */
export const probeSpiffeId = (trustDomain: string) => `spiffe://${trustDomain}/ns/istio-system/sa/svid-ca-probe`;

function probeLeaves(signer: Signer, signerFacts: CertificateFacts, names: ProbeNames, now: Date, notAfter: Date): PathJob['leaves'] {
  const common = {
    publicKeyDer: probePublicKeyDer(),
    notBefore: new Date(now.getTime() - CLOCK_SKEW_GRACE_MS),
    notAfter: new Date(Math.min(now.getTime() + 3_600_000, notAfter.getTime())),
    issuerKeyId: signerFacts.subjectKeyId,
  };
  return [
    { kind: `workload SVID (${probeSpiffeId(names.trustDomain)})`, der: signCertificate(workloadLeaf({ ...common, serialNumber: randomSerial(), spiffeId: probeSpiffeId(names.trustDomain) }), signer) },
    { kind: `serving certificate (DNS ${names.servingDns.join(', ')})`, der: signCertificate(servingLeaf({ ...common, serialNumber: randomSerial(), dnsNames: names.servingDns }), signer) },
  ];
}

const WORKER_TIMEOUT_MS = 30_000;
/**
 * The worker script beside this module. Run from source (the test runner), Node >= 22.6 strips the
 * types of the .ts file itself; an older Node uses the build (`npm test` builds first).
 */
function workerUrl(): URL {
  if (!import.meta.url.endsWith('.ts')) return new URL('./path-validation-worker.js', import.meta.url);
  const strips = Boolean((process.features as { typescript?: unknown }).typescript);
  return new URL(strips ? './path-validation-worker.ts' : '../../dist/pki/path-validation-worker.js', import.meta.url);
}

/** The name of the path-validation worker thread (15 characters: Linux's thread name limit). */
export const PATH_VALIDATION_THREAD = 'svid-ca-pathval';

/**
 * One worker per process, for synchronous callers only (runPathJobsSync), started on first use and
 * kept (unref'd: it never holds the process open), so that reloads neither pay a thread start nor
 * leave a V8 heap behind each time.
 */
let validator: { worker: Worker; port: MessagePort } | undefined;

function validatorPort(): MessagePort {
  if (!validator) {
    const { port1, port2 } = new MessageChannel();
    // Named (the OS thread too, as Linux shows it in /proc/<pid>/task/*/comm): the thread is
    // visible, and a serving process that loads asynchronously can be shown to have none.
    const worker = new Worker(workerUrl(), { name: PATH_VALIDATION_THREAD, workerData: { port: port2 }, transferList: [port2] });
    worker.unref();
    port1.unref();
    worker.once('exit', () => {
      if (validator?.worker === worker) validator = undefined;
    });
    validator = { worker, port: port1 };
  }
  return validator.port;
}

const failed = (message: string): PathJobResult => ({ ok: false, path: -1, leaf: '', constrainedBy: undefined, message });

/** Runs the pkijs job in the worker and waits for it (Atomics.wait): bundle loading stays synchronous. */
function runJob(job: PathJob): PathJobResult {
  const shared = new Int32Array(new SharedArrayBuffer(4));
  const port = validatorPort();
  port.postMessage({ job, shared });
  if (Atomics.wait(shared, 0, 0, WORKER_TIMEOUT_MS) === 'timed-out') {
    // A stuck worker is replaced; its late answer must not be read as the next job's.
    void validator?.worker.terminate();
    port.close();
    validator = undefined;
    return failed(`path validation did not finish within ${WORKER_TIMEOUT_MS / 1000}s`);
  }
  const reply = receiveMessageOnPort(port);
  return (reply?.message as PathJobResult | undefined) ?? failed('path validation worker gave no answer');
}

/**
 * A computation that needs pkijs path validation: it yields each PathJob and is resumed with the
 * job's result. Written once, driven two ways: runPathJobsSync (a worker thread, blocking) for
 * synchronous callers, runPathJobsAsync (this thread's event loop, no worker) for asynchronous ones.
 */
export type PathJobSteps<T> = Generator<PathJob, T, PathJobResult>;

/** Drives `steps` to its end, each job run in the path-validation worker thread (blocking). */
export function runPathJobsSync<T>(steps: PathJobSteps<T>): T {
  let step = steps.next();
  while (!step.done) step = steps.next(runJob(step.value));
  return step.value;
}

/**
 * Drives `steps` to its end, each job awaited on this thread's event loop: no worker thread is
 * started (a serving process saves its memory). A job gets the same 30 s as in the thread, then
 * counts as failed. Rejects with what `steps` throws.
 */
export async function runPathJobsAsync<T>(steps: PathJobSteps<T>): Promise<T> {
  let step = steps.next();
  if (step.done) return step.value;
  const { runPathJob } = await import('./path-validation-worker.js');
  while (!step.done) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<PathJobResult>((resolve) => {
      timer = setTimeout(() => resolve(failed(`path validation did not finish within ${WORKER_TIMEOUT_MS / 1000}s`)), WORKER_TIMEOUT_MS);
    });
    const result = await Promise.race([runPathJob(step.value), timeout]);
    clearTimeout(timer);
    step = steps.next(result);
  }
  return step.value;
}

/**
 * Validates `paths` (each signing certificate -> ... -> a root of the root bundle, as files hold
 * them) for the certificates svid-ca will issue under `names`, at time `now`. Returns the window in
 * which all of it stays valid. Throws BundleError (file of the certificate at fault, one line:
 * certificate subject and SKI, rule, fix) on the first rule broken.
 */
export function validateIssuancePaths(paths: PathCertificate[][], signer: Signer, names: ProbeNames, now: Date): PathValidity {
  return runPathJobsSync(issuancePathSteps(paths, signer, names, now));
}

/** validateIssuancePaths as PathJobSteps: the one place its checks are written. */
export function* issuancePathSteps(paths: PathCertificate[][], signer: Signer, names: ProbeNames, now: Date): PathJobSteps<PathValidity> {
  for (const path of paths) checkRules(path);
  const all = paths.flat();
  const notBefore = new Date(Math.max(...all.map((c) => new Date(c.x509.validFrom).getTime())));
  const notAfter = new Date(Math.min(...all.map((c) => new Date(c.x509.validTo).getTime())));
  const signerCert = paths[0]![0]!;
  const leaves = probeLeaves(signer, signerCert.facts, names, now, notAfter);
  const result = yield { now: now.getTime(), paths: paths.map((p) => p.map((c) => new Uint8Array(c.der))), leaves };
  if (result.ok) return { notBefore, notAfter };
  if (result.path < 0) throw new BundleError(signerCert.file, `path validation failed: ${result.message}`);
  const path = paths[result.path]!;
  if (result.constrainedBy !== undefined) {
    const ca = path[result.constrainedBy]!;
    throw new BundleError(
      ca.file,
      `${certificateLabel(ca)} has name constraints that the ${result.leaf} breaks (${result.message}): clients reject every such certificate; reissue it without nameConstraints or permitting the trust domain and serving DNS names (--trust-domain, --serving-dns)`,
    );
  }
  const root = path[path.length - 1]!;
  throw new BundleError(root.file, `the ${result.leaf} does not validate to root ${certificateLabel(root)} as RFC 5280 clients check it (${result.message}); fix the chain`);
}
