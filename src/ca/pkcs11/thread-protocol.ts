/** What the main thread and a signing thread (sign-worker.ts) send each other. */
import type { KeyReading } from './read-key.js';

export type ThreadOp =
  | { op: 'sign'; session: Uint8Array; key: Uint8Array; mechanism: number; input: Uint8Array }
  | { op: 'read-key'; session: Uint8Array; object?: string | undefined; id?: Uint8Array | undefined };
export type SignRequest = ThreadOp & { seq: number; shared?: SharedArrayBuffer | undefined };
/** The first message of a thread: the module is loaded, requests are taken from now on. */
export type ThreadReady = { ready: true };
export type SignReply = { seq: number } & ({ signature: Uint8Array } | { reading: KeyReading } | { code: number | undefined; message: string });

/** The shared answer: Int32 [state, length, code], then `length` bytes (the v8-serialized answer, or the error message in UTF-8). */
export const SHARED_HEADER_BYTES = 16;
export const SHARED_BODY_BYTES = 16_384;
export const STATE_PENDING = 0;
export const STATE_SIGNED = 1;
export const STATE_FAILED = 2;
/** The thread has taken the request and is calling into the module: the per-signature timeout runs from here. */
export const STATE_STARTED = 3;
/** Code slot value when the error carried no Cryptoki code. */
export const NO_CODE = -1;
