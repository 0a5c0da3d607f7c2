/**
 * Polls `fn` every `pollMs` until it returns something other than undefined, and returns that; throws
 * "timed out after N ms waiting for <what>" after `timeoutMs`. For tests that wait on a server's log, metrics or
 * answers after a change (a ..data swap, a reload, a rotation).
 */
export async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, pollMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
