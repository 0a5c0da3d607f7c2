/** The helpers' waits end: `within` (test/helpers/deadline.ts) fails loudly, naming what did not happen. */
import { describe, expect, it } from 'vitest';
import { within } from './helpers/deadline.js';

describe('within', () => {
  it('passes the value through when the promise settles in time', async () => {
    expect(await within(Promise.resolve(7), 1000, 'seven')).toBe(7);
    await expect(within(Promise.reject(new Error('its own error')), 1000, 'x')).rejects.toThrow('its own error');
  });

  it('rejects naming what it waited for, and runs the clean-up, when the promise never settles', async () => {
    let cleanedUp = false;
    const never = new Promise<never>(() => {});
    await expect(within(never, 50, 'the server to exit', () => (cleanedUp = true))).rejects.toThrow('timed out after 50 ms waiting for the server to exit');
    expect(cleanedUp).toBe(true);
  });
});
