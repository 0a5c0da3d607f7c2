/**
 * The pkijs half of path validation (see path-validation.ts). pkijs' CertificateChainValidationEngine
 * is asynchronous (WebCrypto): an asynchronous caller (serve's start, reloads, a --workers worker
 * checking the primary's texts) imports runPathJob and awaits it on its own event loop; a
 * synchronous caller (the cacerts CLI, tests) runs this file as a worker thread and blocks on it.
 * Self-contained on purpose (node: and pkijs only): under the test runner this file runs from
 * source with Node's type stripping.
 *
 * As a worker, workerData: { port: MessagePort }. For each { job: PathJob, shared: Int32Array }
 * received on `port` it posts one PathJobResult back, then sets shared[0] = 1 and notifies the
 * waiting thread. Imported anywhere else, it only exports.
 */
import { webcrypto } from 'node:crypto';
import { MessagePort, workerData } from 'node:worker_threads';
import * as pkijs from 'pkijs';

/** One validation job: each path is signer -> ... -> root (DER); each leaf is signed by the signer. */
export interface PathJob {
  now: number;
  paths: Uint8Array[][];
  leaves: { kind: string; der: Uint8Array }[];
}

/**
 * ok, or the first failure: which path and leaf, and either the CA (index in the path) whose name
 * constraints the leaf's names break, or pkijs' own message for the whole path.
 */
export type PathJobResult =
  | { ok: true }
  | { ok: false; path: number; leaf: string; constrainedBy: number | undefined; message: string }
  | { ok: false; path: -1; leaf: ''; constrainedBy: undefined; message: string };

const NAME_CONSTRAINTS = '2.5.29.30';

const parse = (der: Uint8Array) => pkijs.Certificate.fromBER(der);

function nameConstraintsOf(cert: pkijs.Certificate): pkijs.NameConstraints | undefined {
  const ext = (cert.extensions ?? []).find((e) => e.extnID === NAME_CONSTRAINTS);
  return ext?.parsedValue instanceof pkijs.NameConstraints ? ext.parsedValue : undefined;
}

async function validate(trusted: pkijs.Certificate, certs: pkijs.Certificate[], now: Date, anchorConstraints: pkijs.NameConstraints | undefined) {
  const engine = new pkijs.CertificateChainValidationEngine({ trustedCerts: [trusted], certs, checkDate: now });
  return engine.verify({
    initialPermittedSubtreesSet: anchorConstraints?.permittedSubtrees ?? [],
    initialExcludedSubtreesSet: anchorConstraints?.excludedSubtrees ?? [],
  });
}

pkijs.setEngine('node', new pkijs.CryptoEngine({ name: 'node', crypto: webcrypto as never }));

async function run(job: PathJob): Promise<PathJobResult> {
  const now = new Date(job.now);
  for (const [p, ders] of job.paths.entries()) {
    const path = ders.map(parse);
    const signer = path[0]!;
    const root = path[path.length - 1]!;
    for (const leafJob of job.leaves) {
      // Name constraints of every CA in the path, the root included (OpenSSL and Go apply the
      // trust anchor's too; pkijs alone would not), each judged on its own so the refusal names it.
      for (const [i, ca] of path.entries()) {
        const nc = nameConstraintsOf(ca);
        if (!nc) continue;
        const r = await validate(signer, [parse(leafJob.der)], now, nc);
        if (!r.result) return { ok: false, path: p, leaf: leafJob.kind, constrainedBy: i, message: r.resultMessage };
      }
      // The whole path as an RFC 5280 client builds and checks it: signatures, validity, names
      // chaining, CA flags and keyCertSign, policies, name constraints (the root's as initial input).
      const r = await validate(parse(ders[ders.length - 1]!), [...ders.slice(0, -1).map(parse), parse(leafJob.der)], now, nameConstraintsOf(root));
      if (!r.result) return { ok: false, path: p, leaf: leafJob.kind, constrainedBy: undefined, message: r.resultMessage };
    }
  }
  return { ok: true };
}

/** Runs one job on the calling thread's event loop; never rejects (a thrown error is a path -1 failure). */
export function runPathJob(job: PathJob): Promise<PathJobResult> {
  return run(job).catch((err: unknown): PathJobResult => ({ ok: false, path: -1, leaf: '', constrainedBy: undefined, message: (err as Error)?.message ?? String(err) }));
}

const port = (workerData as { port?: unknown } | null)?.port;
// One job at a time: the caller blocks in Atomics.wait until shared[0] is set.
if (port instanceof MessagePort) {
  port.on('message', ({ job, shared }: { job: PathJob; shared: Int32Array }) => {
    void runPathJob(job).then((result) => {
      port.postMessage(result);
      Atomics.store(shared, 0, 1);
      Atomics.notify(shared, 0);
    });
  });
}
