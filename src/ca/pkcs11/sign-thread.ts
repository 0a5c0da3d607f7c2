import { Worker } from 'node:worker_threads';
import { deserialize } from 'node:v8';
import { NO_CODE, SHARED_BODY_BYTES, SHARED_HEADER_BYTES, STATE_PENDING, STATE_SIGNED, STATE_STARTED, type SignReply, type SignRequest, type ThreadOp, type ThreadReady } from './thread-protocol.js';

/**
 * How long a new thread may take to start (a Node isolate plus the module load: tens of ms, seconds on
 * a starved machine). Not counted in the per-signature timeout, which is about the token: measured
 * with 16 sessions on a loaded 2-core machine, thread start-ups alone passed a 5 s timeout.
 */
const STARTUP_MS = 30_000;

/** The signing thread did not answer within the timeout; it keeps the call (and its session) until the module returns. */
export class SignTimedOut extends Error {
  constructor() {
    super('the signing thread did not answer in time');
    this.name = 'SignTimedOut';
  }
}

/**
 * The signing thread's script: the compiled sign-worker.js beside this file. Under the test runner
 * this file runs from its .ts source, which a Worker cannot load with its imports: the built file
 * is used then (tests run after `npm run build`, as those that spawn dist/cli.js do).
 */
const WORKER_URL = import.meta.url.endsWith('.ts') ? new URL('../../../dist/ca/pkcs11/sign-worker.js', import.meta.url) : new URL('./sign-worker.js', import.meta.url);

/** One sign-worker.ts thread; one signature at a time. */
export class SignThread {
  readonly #worker: Worker;
  #seq = 0;
  #pending: { seq: number; resolve(b: Buffer): void; reject(e: Error): void } | undefined;
  /** Settles when the thread has ended (after stop(), once a call blocked in the module returns). */
  readonly exited: Promise<void>;
  /** Resolves once the thread has loaded the module and takes requests; rejects if it fails to start. */
  readonly ready: Promise<void>;
  #readyResolve: () => void = () => {};

  constructor(modulePath: string) {
    this.#worker = new Worker(WORKER_URL, { workerData: { modulePath } });
    this.#worker.unref();
    let readyReject: (e: Error) => void = () => {};
    this.ready = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve;
      readyReject = reject;
    });
    // Not awaited by every caller: a thread that fails to start must not be an unhandled rejection.
    this.ready.catch(() => {});
    this.#worker.on('message', (m: SignReply | ThreadReady) => {
      if ('ready' in m) return this.#readyResolve();
      const pending = this.#pending;
      // A late answer to an earlier request (a blocking call answered through shared memory) is not this one's.
      if (!pending || pending.seq !== m.seq) return;
      this.#pending = undefined;
      if ('signature' in m) pending.resolve(Buffer.from(m.signature));
      else if ('reading' in m) pending.reject(new Error('a key reading answered a signature'));
      else pending.reject(Object.assign(new Error(m.message), { code: m.code }));
    });
    const gone = (err: Error) => {
      readyReject(err);
      this.#pending?.reject(err);
      this.#pending = undefined;
    };
    this.#worker.on('error', gone);
    this.exited = new Promise((resolve) =>
      this.#worker.on('exit', () => {
        gone(new Error('the signing thread stopped'));
        resolve();
      }),
    );
  }

  sign(session: Buffer, key: Buffer, mechanism: number, input: Buffer): Promise<Buffer> {
    const seq = ++this.#seq;
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending = { seq, resolve, reject };
      this.#worker.postMessage({ op: 'sign', seq, session, key, mechanism, input } satisfies SignRequest);
    });
  }

  /**
   * An operation (a signature, or readKey) for a synchronous caller: blocks this (the calling)
   * thread with Atomics.wait for at most `timeoutMs`. Returns the answer (the signature Buffer, or
   * the KeyReading), throws the module's error (with its `code`), or throws SignTimedOut, after
   * which the thread must be written off (stop()).
   */
  runBlocking(op: ThreadOp, timeoutMs: number): unknown {
    const shared = new SharedArrayBuffer(SHARED_HEADER_BYTES + SHARED_BODY_BYTES);
    const header = new Int32Array(shared, 0, 3);
    this.#worker.postMessage({ ...op, seq: ++this.#seq, shared } satisfies SignRequest);
    // First the thread takes the request (a new thread starts first: not the token's time), then the token gets timeoutMs.
    Atomics.wait(header, 0, STATE_PENDING, STARTUP_MS);
    if (Atomics.load(header, 0) === STATE_PENDING) throw new SignTimedOut();
    Atomics.wait(header, 0, STATE_STARTED, timeoutMs);
    if (Atomics.load(header, 0) === STATE_STARTED) throw new SignTimedOut();
    const body = Buffer.from(new Uint8Array(shared, SHARED_HEADER_BYTES, header[1]!));
    if (Atomics.load(header, 0) === STATE_SIGNED) return deserialize(body);
    const code = header[2]!;
    throw Object.assign(new Error(body.toString('utf8')), { code: code === NO_CODE ? undefined : code >>> 0 });
  }

  /** Ends the thread; a thread blocked in the module ends when the call returns. */
  stop(): void {
    void this.#worker.terminate();
  }
}
