/**
 * Admission.share keyed by a request's parts (issue #14: the CSR indexes, the other parts are compared
 * on a match, no joined key string): calls share a computation only when every part is equal, and a
 * settled computation is forgotten whatever else shares its first part.
 */
import { describe, expect, it } from 'vitest';
import { Admission } from '../src/server/admission.js';

function deferred() {
  let resolve!: (v: string) => void;
  const result = new Promise<string>((r) => (resolve = r));
  return { result, resolve };
}

describe('Admission.share', () => {
  it('shares only when every part is equal, and forgets each computation when it settles', async () => {
    const admission = new Admission({ maxPending: 10, priorityNamespaces: [] });
    let started = 0;
    const made: ReturnType<typeof deferred>[] = [];
    const start = () => {
      started++;
      const d = deferred();
      made.push(d);
      return d;
    };
    const a = admission.share(['csr', 'Bearer a', '', 'c1', '0', ''], start);
    const sameAsA = admission.share(['csr', 'Bearer a', '', 'c1', '0', ''], start);
    const otherToken = admission.share(['csr', 'Bearer b', '', 'c1', '0', ''], start);
    const otherTtl = admission.share(['csr', 'Bearer a', '', 'c1', '60', ''], start);
    // Parts that would join to the same text must still differ.
    const shifted = admission.share(['csr', 'Bearer a\0', '', 'c1', '0', ''], start);
    expect(sameAsA).toBe(a);
    expect(new Set([a, otherToken, otherTtl, shifted]).size).toBe(4);
    expect(started).toBe(4);

    made[1]!.resolve('b');
    await otherToken.result;
    await Promise.resolve();
    // a is still pending and still shared; the settled one is not.
    expect(admission.share(['csr', 'Bearer a', '', 'c1', '0', ''], start)).toBe(a);
    const again = admission.share(['csr', 'Bearer b', '', 'c1', '0', ''], start);
    expect(again).not.toBe(otherToken);
    expect(started).toBe(5);

    for (const d of made) d.resolve('x');
    await Promise.all(made.map((d) => d.result));
    await Promise.resolve();
    expect(admission.share(['csr', 'Bearer a', '', 'c1', '0', ''], start)).not.toBe(a);
    expect(started).toBe(6);
  });
});
