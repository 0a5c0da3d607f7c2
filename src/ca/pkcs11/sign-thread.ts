import { Worker } from 'node:worker_threads';
import type { SignReply, SignRequest } from './sign-worker.js';

/** One sign-worker.ts thread; one signature at a time. */
export class SignThread {
  readonly #worker: Worker;
  #pending: { resolve(b: Buffer): void; reject(e: Error): void } | undefined;

  constructor(modulePath: string) {
    this.#worker = new Worker(new URL('./sign-worker.js', import.meta.url), { workerData: { modulePath } });
    this.#worker.unref();
    this.#worker.on('message', (m: SignReply) => {
      const pending = this.#pending;
      this.#pending = undefined;
      if ('signature' in m) pending?.resolve(Buffer.from(m.signature));
      else pending?.reject(Object.assign(new Error(m.message), { code: m.code }));
    });
    const gone = (err: Error) => {
      this.#pending?.reject(err);
      this.#pending = undefined;
    };
    this.#worker.on('error', gone);
    this.#worker.on('exit', () => gone(new Error('the signing thread stopped')));
  }

  sign(session: Buffer, key: Buffer, mechanism: number, input: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.#worker.postMessage({ session, key, mechanism, input } satisfies SignRequest);
    });
  }

  /** Ends the thread; a thread blocked in the module ends when the call returns. */
  stop(): void {
    void this.#worker.terminate();
  }
}
