import { createRequire } from 'node:module';
import type * as P11 from 'pkcs11js';
import { SignThread, SignTimedOut } from './sign-thread.js';
import type { ThreadOp } from './thread-protocol.js';
import { readKey, type KeyReading, type KeySelector } from './read-key.js';
import { BundleError } from '../../pki/index.js';
import { CaUnavailableError } from '../authority.js';
import type { Pkcs11Uri } from './uri.js';

/**
 * One PKCS#11 token in this process: the module, its initialisation, a pool of logged-in sessions,
 * and the recovery ladder (error codes of PKCS#11 v2.40 §5.1; behaviour measured against SoftHSM 2.6):
 *   1. session-level errors (session closed or invalid, not logged in, stale object handle):
 *      rebuild the session, the login and the key handle, and retry the signature once;
 *   2. device-level errors (device removed or failing, token absent) or step 1 failing: the token
 *      is unavailable (calls get UNAVAILABLE, readiness NOT_SERVING); in the background, wait for
 *      the signatures in flight, C_Finalize + C_Initialize, log in again, find the key, with backoff.
 * A wrong PIN is never retried (tokens count failures and lock the user PIN).
 */

type Binding = typeof P11;
const requireCjs = createRequire(import.meta.url);
let binding: Binding | undefined;
/** pkcs11js is a native addon: loaded only when a --signing-key asks for it. */
function loadBinding(): Binding {
  binding ??= requireCjs('pkcs11js') as Binding;
  return binding;
}

export type TokenLog = (level: 'info' | 'warn' | 'error', fields: Record<string, unknown>, message: string) => void;

export interface TokenOptions {
  modulePath: string;
  uri: Pkcs11Uri;
  pin: string;
  /** Where the PIN came from, for errors (never the PIN itself). */
  pinFile: string;
  /** Sessions in the pool: concurrent signatures at most. */
  sessions: number;
  /** A signature (or the wait for a session) that takes longer fails with UNAVAILABLE; 0: sign on the calling thread, no timeout. */
  signTimeoutMs: number;
  log: TokenLog;
}

/** Key types `cacerts init-intermediate --key-uri` generates in a token. */
export type TokenKeySpec = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072';
export const TOKEN_KEY_SPECS: readonly TokenKeySpec[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072'];

export type { KeySelector } from './read-key.js';

/** What the token tells about a private key. */
export interface FoundKey {
  handle: Buffer;
  keyType: 'ec' | 'rsa';
  /** The SubjectPublicKeyInfo inputs: an EC point with its curve parameters, or an RSA modulus and exponent. */
  publicKey: { kind: 'ec'; params: Buffer; point: Buffer | undefined } | { kind: 'rsa'; modulus: Buffer; exponent: Buffer };
  sensitive: boolean;
  extractable: boolean;
}

const errorCode = (err: unknown): number | undefined => {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
};

/** The CKR_ name of a Cryptoki error, for messages (pkcs11js's message is that name, sometimes with ":code"). */
export function ckrName(err: unknown): string {
  const message = (err as Error).message ?? String(err);
  return message.split(':')[0]!.trim() || message;
}

export class Pkcs11Token {
  readonly #p: Binding;
  readonly #lib: P11.PKCS11;
  readonly #o: TokenOptions;
  #slot: Buffer;
  #free: Buffer[] = [];
  #open = 0;
  #waiters: Array<(session: Buffer | Error) => void> = [];
  #available = true;
  #recovering = false;
  #closed = false;
  #inFlight = 0;
  /** Bumped whenever sessions were rebuilt or the library re-initialised: key handles found before are re-looked up. */
  generation = 0;
  /** The key the recovery checks before it reports the token available again. */
  #watchedKey: KeySelector | undefined;
  #recoveryTimer: NodeJS.Timeout | undefined;
  /** Signing threads not in use (at most one per session in use). */
  #idleThreads: SignThread[] = [];

  /** Loads the module, initialises it, finds the token and logs in. Throws BundleError naming the flag or file to fix. */
  constructor(o: TokenOptions) {
    this.#o = o;
    this.#p = loadBinding();
    this.#lib = new this.#p.PKCS11();
    try {
      this.#lib.load(o.modulePath);
    } catch (err) {
      throw new BundleError(o.modulePath, `cannot load the PKCS#11 module given by --pkcs11-module (${(err as Error).message})`);
    }
    this.#initialize();
    this.#slot = this.#findSlot();
    this.#checkMechanisms();
    this.#release(this.#openSession());
  }

  get description(): string {
    return this.#o.uri.redacted;
  }

  isAvailable(): boolean {
    return this.#available && !this.#closed;
  }

  /** Same module and token selector: the token can serve a reloaded URI. */
  sameToken(modulePath: string, uri: Pkcs11Uri): boolean {
    const a = this.#o.uri;
    return modulePath === this.#o.modulePath && a.token === uri.token && a.serial === uri.serial && a.slotId === uri.slotId;
  }

  get constants(): Binding {
    return this.#p;
  }

  #initialize(): void {
    try {
      // Without CKF_OS_LOCKING_OK, SoftHSM (and others) disable their mutexes: concurrent sessions crash.
      this.#lib.C_Initialize({ flags: this.#p.CKF_OS_LOCKING_OK });
    } catch (err) {
      if (errorCode(err) !== this.#p.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        throw new BundleError(this.#o.modulePath, `the PKCS#11 module failed to initialise (${ckrName(err)})`);
      }
    }
  }

  #findSlot(): Buffer {
    const u = this.#o.uri;
    let slots: Buffer[];
    try {
      slots = this.#lib.C_GetSlotList(true);
    } catch (err) {
      throw new BundleError(u.redacted, `cannot list the module's tokens (${ckrName(err)})`);
    }
    const seen: string[] = [];
    for (const slot of slots) {
      const info = this.#lib.C_GetTokenInfo(slot);
      // Token labels and serials are space-padded to 32 and 16 bytes.
      const label = info.label.trimEnd();
      seen.push(label);
      if (u.token !== undefined && label === u.token) return slot;
      if (u.serial !== undefined && info.serialNumber.trimEnd() === u.serial) return slot;
      if (u.slotId !== undefined && slot.readUIntLE(0, Math.min(slot.length, 6)) === u.slotId) return slot;
    }
    throw new BundleError(u.redacted, `no token matches (tokens present: ${seen.length > 0 ? seen.map((l) => `"${l}"`).join(', ') : 'none'})`);
  }

  #checkMechanisms(): void {
    const mechanisms = new Set(this.#lib.C_GetMechanismList(this.#slot));
    if (!mechanisms.has(this.#p.CKM_ECDSA) && !mechanisms.has(this.#p.CKM_SHA256_RSA_PKCS)) {
      throw new BundleError(this.#o.uri.redacted, 'the token offers neither CKM_ECDSA nor CKM_SHA256_RSA_PKCS: it cannot sign certificates');
    }
  }

  #login(session: Buffer): void {
    try {
      this.#lib.C_Login(session, this.#p.CKU_USER, this.#o.pin);
    } catch (err) {
      const code = errorCode(err);
      // Login is per process and token: another session already logged in.
      if (code === this.#p.CKR_USER_ALREADY_LOGGED_IN) return;
      if (code === this.#p.CKR_PIN_INCORRECT || code === this.#p.CKR_PIN_LOCKED || code === this.#p.CKR_PIN_EXPIRED || code === this.#p.CKR_PIN_LEN_RANGE) {
        throw new PinRefusedError(
          this.#o.pinFile,
          `the token refused the user PIN (${ckrName(err)}); fix the PIN file. svid-ca does not retry: tokens lock the PIN after repeated failures`,
        );
      }
      throw err;
    }
  }

  /** A new logged-in session. Throws the Cryptoki error (PinRefusedError for a PIN problem). */
  #openSession(): Buffer {
    const session = this.#lib.C_OpenSession(this.#slot, this.#p.CKF_SERIAL_SESSION);
    this.#open++;
    try {
      this.#login(session);
    } catch (err) {
      this.#discard(session);
      throw err;
    }
    return session;
  }

  #discard(session: Buffer): void {
    this.#open--;
    try {
      this.#lib.C_CloseSession(session);
    } catch {
      // already gone with the token
    }
  }

  #release(session: Buffer): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(session);
    else this.#free.push(session);
  }

  /** A session for one operation, opened if the pool is not full, else the next one released (bounded by the timeout). */
  #acquire(): Promise<Buffer> {
    const free = this.#free.pop();
    if (free) return Promise.resolve(free);
    if (this.#open < this.#o.sessions) return Promise.resolve(this.#openSession());
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new CaUnavailableError(`no PKCS#11 session became free within ${this.#o.signTimeoutMs} ms (--pkcs11-sessions ${this.#o.sessions})`));
      }, this.#o.signTimeoutMs);
      const waiter = (s: Buffer | Error) => {
        clearTimeout(timer);
        if (s instanceof Error) reject(s);
        else resolve(s);
      };
      this.#waiters.push(waiter);
    });
  }

  /** Step 1 errors: the session or handle went stale, the token itself may be fine. */
  #sessionLevel(err: unknown): boolean {
    const p = this.#p;
    const code = errorCode(err);
    return (
      code === p.CKR_SESSION_HANDLE_INVALID ||
      code === p.CKR_SESSION_CLOSED ||
      code === p.CKR_USER_NOT_LOGGED_IN ||
      code === p.CKR_OBJECT_HANDLE_INVALID ||
      code === p.CKR_KEY_HANDLE_INVALID
    );
  }

  /**
   * Step 1 of the ladder: a session-level error rarely hits one session alone (C_CloseAllSessions, a
   * token or HSM session reset end them all), so the idle sessions are closed too and the retry opens
   * a new one; key handles are looked up again (generation).
   */
  #rebuildSessions(): void {
    for (const idle of this.#free.splice(0)) this.#discard(idle);
    this.generation++;
  }

  /** Finds exactly one private key; throws BundleError when there is none or more than one. */
  findKey(selector: KeySelector, session?: Buffer): FoundKey {
    // A token that stopped answering is not asked again here (a reload, a re-issue) until the recovery finds it back.
    this.#throwIfUnavailable();
    const own = session ?? this.#free.pop() ?? this.#openSession();
    let lost = false;
    try {
      // C_FindObjects and C_GetAttributeValue block like C_SignInit: on a signing thread, within the timeout.
      const reading =
        this.#o.signTimeoutMs === 0
          ? readKey(this.#lib, this.#p, own, selector)
          : (this.#onThread({ op: 'read-key', session: own, object: selector.object, id: selector.id }, 'answer a key lookup') as KeyReading);
      return this.#foundKey(reading, selector);
    } catch (err) {
      lost = err instanceof TokenTimeout;
      throw err;
    } finally {
      if (!session && !lost) this.#release(own);
    }
  }

  /**
   * Runs `op` on a signing thread and waits for it at most the per-signature timeout. On timeout the
   * thread and the session stay with the call and are written off, the token is marked unavailable,
   * and TokenTimeout (a CaUnavailableError) is thrown: the caller must not release or close the session.
   */
  #onThread(op: ThreadOp, what: string): unknown {
    const thread = this.#idleThreads.pop() ?? new SignThread(this.#o.modulePath);
    try {
      const out = thread.runBlocking(op, this.#o.signTimeoutMs);
      this.#idleThreads.push(thread);
      return out;
    } catch (err) {
      if (!(err instanceof SignTimedOut)) {
        this.#idleThreads.push(thread);
        throw err;
      }
      this.#open--;
      this.#inFlight++;
      void thread.exited.then(() => this.#inFlight--);
      thread.stop();
      this.fail(`the token did not ${what} within ${this.#o.signTimeoutMs} ms`);
      throw new TokenTimeout(`the PKCS#11 token did not ${what} within ${this.#o.signTimeoutMs} ms`);
    }
  }

  #findKeyOn(session: Buffer, selector: KeySelector): FoundKey {
    return this.#foundKey(readKey(this.#lib, this.#p, session, selector), selector);
  }

  /** The reading of readKey as a FoundKey; BundleError when no key, more than one, or one of another type matches. */
  #foundKey(r: KeyReading, selector: KeySelector): FoundKey {
    const p = this.#p;
    const what = [selector.object !== undefined ? `object=${selector.object}` : '', selector.id ? `id=${selector.id.toString('hex')}` : ''].filter(Boolean).join(' ');
    if (r.handles.length === 0) throw new BundleError(this.#o.uri.redacted, `no private key ${what} on the token (logged in as user)`);
    if (r.handles.length > 1) throw new BundleError(this.#o.uri.redacted, `more than one private key matches ${what}; add id= (or a unique object=) to the URI`);
    const common = { handle: r.handles[0]!, sensitive: r.sensitive === true, extractable: r.extractable === true };
    if (r.keyType === p.CKK_EC) return { ...common, keyType: 'ec', publicKey: { kind: 'ec', params: r.ecParams!, point: r.ecPoint } };
    if (r.keyType === p.CKK_RSA) return { ...common, keyType: 'rsa', publicKey: { kind: 'rsa', modulus: r.modulus!, exponent: r.exponent! } };
    throw new BundleError(this.#o.uri.redacted, `the key ${what} is neither EC nor RSA (CKA_KEY_TYPE ${r.keyType}); svid-ca signs with EC P-256/P-384 or RSA`);
  }

  /** How many private keys match (0, 1 or 2 meaning "more than one"): to refuse overwriting one at generation. */
  countKeys(selector: KeySelector): number {
    const session = this.#free.pop() ?? this.#openSession();
    try {
      const p = this.#p;
      const template: P11.Template = [{ type: p.CKA_CLASS, value: p.CKO_PRIVATE_KEY }];
      if (selector.object !== undefined) template.push({ type: p.CKA_LABEL, value: selector.object });
      if (selector.id !== undefined) template.push({ type: p.CKA_ID, value: selector.id });
      this.#lib.C_FindObjectsInit(session, template);
      try {
        return this.#lib.C_FindObjects(session, 2).length;
      } finally {
        this.#lib.C_FindObjectsFinal(session);
      }
    } finally {
      this.#release(session);
    }
  }

  /**
   * Generates a key pair inside the token (`cacerts init-intermediate --key-uri`): the private key
   * sensitive, not extractable, signing only; the public key object beside it with the same
   * CKA_LABEL and CKA_ID (reference §6). Returns the private key as findKey describes it.
   */
  generateKeyPair(spec: TokenKeySpec, selector: Required<KeySelector>): FoundKey {
    const p = this.#p;
    const session = this.#lib.C_OpenSession(this.#slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
    this.#open++;
    try {
      this.#login(session);
      const common = [
        { type: p.CKA_TOKEN, value: true },
        { type: p.CKA_LABEL, value: selector.object },
        { type: p.CKA_ID, value: selector.id },
      ];
      const ec = spec.startsWith('ec-');
      const publicTemplate: P11.Template = [...common, { type: p.CKA_VERIFY, value: true }];
      if (ec) publicTemplate.push({ type: p.CKA_EC_PARAMS, value: Buffer.from(spec === 'ec-p256' ? '06082a8648ce3d030107' : '06052b81040022', 'hex') });
      else publicTemplate.push({ type: p.CKA_MODULUS_BITS, value: spec === 'rsa-2048' ? 2048 : 3072 }, { type: p.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
      const privateTemplate: P11.Template = [
        ...common,
        { type: p.CKA_PRIVATE, value: true },
        { type: p.CKA_SENSITIVE, value: true },
        { type: p.CKA_EXTRACTABLE, value: false },
        { type: p.CKA_SIGN, value: true },
      ];
      this.#lib.C_GenerateKeyPair(session, { mechanism: ec ? p.CKM_EC_KEY_PAIR_GEN : p.CKM_RSA_PKCS_KEY_PAIR_GEN }, publicTemplate, privateTemplate);
      return this.#findKeyOn(session, selector);
    } finally {
      this.#discard(session);
    }
  }

  /** The key the background recovery must find before the token counts as answering again. */
  watchKey(selector: KeySelector): void {
    this.#watchedKey = selector;
  }

  /**
   * One signature: a pooled session held from C_SignInit to the end of C_Sign, both made on a
   * signing thread and raced with the per-signature timeout, so that no call waits past it even
   * when the module blocks. `handle` gives the key handle valid for the current generation.
   * Throws CaUnavailableError (the caller answers UNAVAILABLE) when the token does not sign.
   */
  async sign(mechanism: number, input: Buffer, handle: (session: Buffer) => Buffer): Promise<Buffer> {
    // --pkcs11-sign-timeout 0: no timeout, no thread hop (for in-process modules that cannot block).
    if (this.#o.signTimeoutMs === 0) return this.signSync(mechanism, input, handle);
    for (let attempt = 0; ; attempt++) {
      this.#throwIfUnavailable();
      let session: Buffer;
      try {
        session = await this.#acquire();
      } catch (err) {
        throw this.#deviceFailure(err);
      }
      const thread = this.#idleThreads.pop() ?? new SignThread(this.#o.modulePath);
      // A new thread's start-up is not the token's time: the timeout runs from the call into the module.
      try {
        await thread.ready;
      } catch (err) {
        this.#release(session);
        throw new CaUnavailableError(`a PKCS#11 signing thread failed to start (${(err as Error).message})`);
      }
      let lost = false;
      try {
        const call = thread.sign(session, handle(session), mechanism, input);
        this.#inFlight++;
        call.then(
          () => this.#inFlight--,
          () => this.#inFlight--,
        );
        const result = await this.#withTimeout(call, () => {
          // The call keeps its thread and its session: both are written off.
          lost = true;
        });
        this.#release(session);
        this.#idleThreads.push(thread);
        return result;
      } catch (err) {
        if (lost) {
          this.#open--;
          thread.stop();
          this.fail(`a signature took longer than ${this.#o.signTimeoutMs} ms`);
          throw new CaUnavailableError(`the PKCS#11 token did not sign within ${this.#o.signTimeoutMs} ms`);
        }
        this.#idleThreads.push(thread);
        // The key lookup of handle() timed out: its session stays with the stalled call.
        if (err instanceof TokenTimeout) throw err;
        if (!(err instanceof CaUnavailableError) && attempt === 0 && this.#sessionLevel(err)) {
          this.#discard(session);
          this.#rebuildSessions();
          continue;
        }
        this.#discard(session);
        throw this.#deviceFailure(err);
      }
    }
  }

  /**
   * A blocking signature, for the signatures whose callers are synchronous (serving certificate,
   * istiod-tls, bundle probes, self-signed root re-issue, CA certificates and CSRs of the CLI):
   * same pool and ladder as sign(), and, unless --pkcs11-sign-timeout is 0, made on a signing
   * thread that this thread waits for at most the per-signature timeout (Atomics.wait): a token
   * that stops answering stalls the caller that long once, then the token is unavailable and
   * later calls fail at once. Throws CaUnavailableError when the token does not sign.
   */
  signSync(mechanism: number, input: Buffer, handle: (session: Buffer) => Buffer): Buffer {
    for (let attempt = 0; ; attempt++) {
      this.#throwIfUnavailable();
      let session: Buffer | undefined;
      try {
        session = this.#free.pop() ?? this.#openSession();
        const key = handle(session);
        let out: Buffer;
        if (this.#o.signTimeoutMs === 0) {
          this.#lib.C_SignInit(session, { mechanism }, key);
          out = this.#lib.C_Sign(session, input, Buffer.alloc(512));
        } else {
          out = this.#onThread({ op: 'sign', session, key, mechanism, input }, 'sign') as Buffer;
        }
        this.#release(session);
        return out;
      } catch (err) {
        // Timed out: the session stays with the stalled call (written off by #onThread).
        if (err instanceof TokenTimeout) throw err;
        if (session) this.#discard(session);
        if (!(err instanceof CaUnavailableError) && attempt === 0 && this.#sessionLevel(err)) {
          this.#rebuildSessions();
          continue;
        }
        throw this.#deviceFailure(err);
      }
    }
  }

  #throwIfUnavailable(): void {
    if (this.#closed) throw new CaUnavailableError('the PKCS#11 token is closed (svid-ca is stopping)');
    if (!this.#available) throw new CaUnavailableError(`the PKCS#11 token ${this.#o.uri.redacted} does not answer; svid-ca is reconnecting`);
  }

  /** Anything past step 1: report, start the recovery, and give the caller an UNAVAILABLE error. */
  #deviceFailure(err: unknown): Error {
    if (err instanceof CaUnavailableError || err instanceof PinRefusedError) return err;
    const reason = err instanceof BundleError ? err.problem : ckrName(err);
    this.fail(reason);
    return new CaUnavailableError(`the PKCS#11 token failed to sign (${reason}); svid-ca is reconnecting`);
  }

  #withTimeout<T>(call: Promise<T>, onTimeout: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        onTimeout();
        reject(new CaUnavailableError('timeout'));
      }, this.#o.signTimeoutMs);
      call.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  /** Marks the token unavailable (readiness NOT_SERVING) and starts the background recovery once. */
  fail(reason: string): void {
    if (this.#closed || !this.#available) return;
    this.#available = false;
    this.#o.log('error', { signingKey: this.#o.uri.redacted, problem: reason }, 'PKCS#11 token unavailable: calls get UNAVAILABLE until it answers again');
    for (const w of this.#waiters.splice(0)) w(new CaUnavailableError(`the PKCS#11 token does not answer (${reason})`));
    this.#scheduleRecovery(0, 1);
  }

  #scheduleRecovery(delayMs: number, attempt: number): void {
    if (this.#closed || this.#recovering) return;
    this.#recoveryTimer = setTimeout(() => this.#recover(attempt), delayMs);
    this.#recoveryTimer.unref();
  }

  /** Step 2 of the ladder: drain, C_Finalize + C_Initialize, find the token, log in, find the key. */
  #recover(attempt: number): void {
    if (this.#closed) return;
    // C_Finalize under a signature still running on a signing thread is undefined behaviour: wait for it.
    if (this.#inFlight > 0) {
      this.#scheduleRecovery(100, attempt);
      return;
    }
    this.#recovering = true;
    try {
      this.#free = [];
      this.#open = 0;
      try {
        this.#lib.C_Finalize();
      } catch {
        // not initialised any more, or the device is gone: initialise afresh below
      }
      this.#initialize();
      this.#slot = this.#findSlot();
      const session = this.#openSession();
      if (this.#watchedKey) this.#findKeyOn(session, this.#watchedKey);
      this.generation++;
      this.#release(session);
      this.#available = true;
      this.#recovering = false;
      this.#o.log('info', { signingKey: this.#o.uri.redacted, attempts: attempt }, 'PKCS#11 token answers again; serving');
    } catch (err) {
      this.#recovering = false;
      if (err instanceof PinRefusedError) {
        this.#o.log('error', { signingKey: this.#o.uri.redacted, problem: err.problem }, 'PKCS#11 token refused the PIN during recovery; not retrying (restart with the right PIN)');
        return;
      }
      const backoffMs = Math.min(500 * 2 ** Math.min(attempt - 1, 5), 10_000);
      if (attempt === 1 || attempt % 10 === 0) {
        this.#o.log('warn', { signingKey: this.#o.uri.redacted, problem: err instanceof BundleError ? err.problem : ckrName(err), attempt, retryInMs: backoffMs }, 'PKCS#11 token still unavailable');
      }
      this.#scheduleRecovery(backoffMs, attempt + 1);
    }
  }

  /** Closes the sessions and finalises the module (after the signatures in flight, if any, are written off). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#recoveryTimer);
    for (const w of this.#waiters.splice(0)) w(new CaUnavailableError('svid-ca is stopping'));
    for (const t of this.#idleThreads.splice(0)) t.stop();
    if (this.#inFlight > 0) return;
    try {
      this.#lib.C_Finalize();
    } catch {
      // nothing left to release
    }
  }
}

/** The token refused the PIN: a startup error (exit 1), never retried. */
export class PinRefusedError extends BundleError {
  constructor(file: string, problem: string) {
    super(file, problem);
    this.name = 'PinRefusedError';
  }
}

/** The token did not answer within the per-signature timeout (calls get UNAVAILABLE). */
export class TokenTimeout extends CaUnavailableError {
  constructor(message: string) {
    super(message);
    this.name = 'TokenTimeout';
  }
}
