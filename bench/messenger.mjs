// run.mjs's side of the IPC with a load generator (loadgen.mjs): waiting for its messages, every wait bounded.
import { fork } from 'node:child_process';

/**
 * A load generator's process (`modulePath`, forked with an IPC channel) and `next(type, timeoutMs, explain)`: the next message of that type
 * (kept if it arrived before anyone asked), rejecting when the process exits first or when timeoutMs
 * passes; then the error says what the load generator still had open and `explain()` adds more.
 */
export function forkMessenger(modulePath) {
  const child = fork(modulePath, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiters = [];
  const early = [];
  child.on('message', (m) => {
    const i = waiters.findIndex((w) => w.type === m.type);
    if (i >= 0) waiters.splice(i, 1)[0].resolve(m);
    else early.push(m);
  });
  child.on('exit', (code, signal) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`the load generator exited (${signal ?? code}) while the bench waited for its '${w.type}' message`));
  });
  const wait = (type, timeoutMs) => {
    const j = early.findIndex((m) => m.type === type);
    if (j >= 0) return Promise.resolve(early.splice(j, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { type, resolve, reject };
      const timer = setTimeout(() => {
        const k = waiters.indexOf(w);
        if (k >= 0) waiters.splice(k, 1);
        reject(Object.assign(new Error(`no '${type}' message from the load generator within ${timeoutMs / 1000} s`), { timedOut: true }));
      }, timeoutMs);
      w.resolve = (m) => (clearTimeout(timer), resolve(m));
      w.reject = (e) => (clearTimeout(timer), reject(e));
      waiters.push(w);
    });
  };
  const next = async (type, timeoutMs, explain) => {
    try {
      return await wait(type, timeoutMs);
    } catch (err) {
      if (!err.timedOut) throw err;
      let open = '(the load generator did not answer a status request within 5 s)';
      if (child.connected) {
        child.send({ type: 'status' });
        open = await wait('status', 5_000).then((st) => `${st.inflight} calls open, oldest: ${JSON.stringify(st.oldest, null, 1)}`, () => open);
      }
      throw new Error(`${err.message}; load generator: ${open}${explain ? `\n${await explain()}` : ''}`);
    }
  };
  return { child, next };
}
