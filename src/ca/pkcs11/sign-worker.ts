/**
 * A thread that makes one PKCS#11 signature at a time (C_SignInit + C_Sign) for the main thread.
 * Both calls can block (SoftHSM's C_SignInit waits for a file lock; a network HSM waits on the
 * network), and a blocked call cannot be cancelled: on this thread it only stalls this thread,
 * while the main thread answers UNAVAILABLE when the per-signature timeout passes. The module is
 * initialised once per process by the main thread; this thread only calls into it, with the
 * session and key handles the main thread sends.
 */
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import type * as P11 from 'pkcs11js';

export interface SignRequest {
  session: Uint8Array;
  key: Uint8Array;
  mechanism: number;
  input: Uint8Array;
}
export type SignReply = { signature: Uint8Array } | { code: number | undefined; message: string };

const p = createRequire(import.meta.url)('pkcs11js') as typeof P11;
const lib = new p.PKCS11();
lib.load((workerData as { modulePath: string }).modulePath);
// Structured clone turns Buffers into Uint8Arrays: pkcs11js wants Buffers.
const buf = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

parentPort!.on('message', (m: SignRequest) => {
  let reply: SignReply;
  try {
    const session = buf(m.session);
    lib.C_SignInit(session, { mechanism: m.mechanism }, buf(m.key));
    reply = { signature: lib.C_Sign(session, buf(m.input), Buffer.alloc(512)) };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    reply = { code: typeof code === 'number' ? code : undefined, message: (err as Error).message };
  }
  parentPort!.postMessage(reply);
});
