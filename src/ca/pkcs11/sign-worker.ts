/**
 * A thread that makes one PKCS#11 signature at a time (C_SignInit + C_Sign) for the main thread.
 * Both calls can block (SoftHSM's C_SignInit waits for a file lock; a network HSM waits on the
 * network), and a blocked call cannot be cancelled: on this thread it only stalls this thread,
 * while the main thread answers UNAVAILABLE when the per-signature timeout passes. The module is
 * initialised once per process by the main thread; this thread only calls into it, with the
 * session and key handles the main thread sends.
 *
 * It also reads keys (readKey: C_FindObjects and C_GetAttributeValue block as C_SignInit does),
 * for a reload or a key looked up again after a session rebuild.
 *
 * Two ways to answer: a message (the issuance path awaits it), and, when the request carries a
 * SharedArrayBuffer, the answer written there with Atomics.notify (the blocking path: serving
 * certificate, istiod-tls, probes, root re-issue wait for it with Atomics.wait and a timeout,
 * because their callers are synchronous). The message is sent in both cases, tagged with the
 * request's sequence number so a late answer is never taken for a later request's.
 */
import { createRequire } from 'node:module';
import { serialize } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import type * as P11 from 'pkcs11js';
import { readKey } from './read-key.js';
import { NO_CODE, SHARED_BODY_BYTES, SHARED_HEADER_BYTES, STATE_FAILED, STATE_SIGNED, STATE_STARTED, type SignReply, type SignRequest, type ThreadReady } from './thread-protocol.js';

/** The binding and the module; a thread that cannot load them answers every request with that error (never silence: a blocking caller waits on it). */
function loadModule(): { p: typeof P11; lib: P11.PKCS11 } | Error {
  try {
    const p = createRequire(import.meta.url)('pkcs11js') as typeof P11;
    const lib = new p.PKCS11();
    lib.load((workerData as { modulePath: string }).modulePath);
    return { p, lib };
  } catch (err) {
    return new Error(`the signing thread cannot load the PKCS#11 module (${(err as Error).message})`);
  }
}
const loaded = loadModule();
// Structured clone turns Buffers into Uint8Arrays: pkcs11js wants Buffers.
const buf = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

function writeShared(shared: SharedArrayBuffer, reply: SignReply): void {
  const header = new Int32Array(shared, 0, 3);
  const body = new Uint8Array(shared, SHARED_HEADER_BYTES, SHARED_BODY_BYTES);
  const failed = 'code' in reply;
  const bytes = failed ? Buffer.from(reply.message, 'utf8').subarray(0, SHARED_BODY_BYTES) : serialize('signature' in reply ? reply.signature : reply.reading);
  body.set(bytes.subarray(0, SHARED_BODY_BYTES));
  header[1] = Math.min(bytes.length, SHARED_BODY_BYTES);
  // Cryptoki codes are unsigned 32-bit: stored as their Int32 bit pattern.
  header[2] = !failed ? 0 : reply.code === undefined ? NO_CODE : reply.code | 0;
  Atomics.store(header, 0, failed ? STATE_FAILED : STATE_SIGNED);
  Atomics.notify(header, 0);
}

parentPort!.on('message', (m: SignRequest) => {
  if (m.shared) {
    const header = new Int32Array(m.shared, 0, 3);
    Atomics.store(header, 0, STATE_STARTED);
    Atomics.notify(header, 0);
  }
  let reply: SignReply;
  try {
    if (loaded instanceof Error) throw loaded;
    const { p, lib } = loaded;
    const session = buf(m.session);
    if (m.op === 'read-key') {
      reply = { seq: m.seq, reading: readKey(lib, p, session, { object: m.object, id: m.id ? Buffer.from(m.id) : undefined }) };
    } else {
      lib.C_SignInit(session, { mechanism: m.mechanism }, buf(m.key));
      reply = { seq: m.seq, signature: lib.C_Sign(session, buf(m.input), Buffer.alloc(512)) };
    }
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    reply = { seq: m.seq, code: typeof code === 'number' ? code : undefined, message: (err as Error).message };
  }
  if (m.shared) writeShared(m.shared, reply);
  parentPort!.postMessage(reply);
});
parentPort!.postMessage({ ready: true } satisfies ThreadReady);
