// bench/messenger.mjs: how run.mjs waits for its load generator. Guards the stall where a message that
// arrived before run.mjs asked for it was dropped (the IPC channel delivers back-to-back messages in one
// turn, before the code awaiting the first can ask for the second), and that every wait is bounded.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';

type Messenger = { child: ChildProcess; next: (type: string, timeoutMs: number, explain?: () => Promise<string>) => Promise<{ type: string }> };
const { forkMessenger } = (await import(pathToFileURL(join(import.meta.dirname, '..', 'bench', 'messenger.mjs')).href)) as { forkMessenger: (path: string) => Messenger };

const dir = mkdtempSync(join(tmpdir(), 'svid-ca-messenger-'));
/** A stand-in load generator: on 'run' it sends `sends` at once; it answers 'status' with two open calls; 'exit' ends it. */
function fakeLoadgen(name: string, sends: string[]): string {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(
    file,
    `process.on('message', (m) => {
  if (m.type === 'run') for (const type of ${JSON.stringify(sends)}) process.send({ type });
  else if (m.type === 'status') process.send({ type: 'status', inflight: 2, oldest: [{ request: 7, responseHeaders: true }] });
  else if (m.type === 'exit') process.exit(0);
  else if (m.type === 'crash') process.exit(3);
});
`,
  );
  return file;
}

const started: Messenger[] = [];
const fork = (file: string) => {
  const m = forkMessenger(file);
  started.push(m);
  return m;
};
afterEach(() => {
  for (const m of started.splice(0)) if (m.child.exitCode === null) m.child.kill();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bench messenger (run.mjs <-> loadgen.mjs)', () => {
  it("keeps 'finished' that arrives in the same turn as 'started'", async () => {
    const lg = fork(fakeLoadgen('both', ['started', 'finished', 'result']));
    lg.child.send({ type: 'run' });
    expect((await lg.next('started', 10_000)).type).toBe('started');
    expect((await lg.next('finished', 10_000)).type).toBe('finished');
    expect((await lg.next('result', 10_000)).type).toBe('result');
  });

  it('a wait that runs out fails naming the message, what the load generator still has open, and the explanation', async () => {
    const lg = fork(fakeLoadgen('silent', ['started']));
    lg.child.send({ type: 'run' });
    await lg.next('started', 10_000);
    const err = await lg.next('finished', 300, async () => 'svid_ca_requests_in_flight 2').catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/no 'finished' message from the load generator within 0\.3 s/);
    expect((err as Error).message).toContain('2 calls open');
    expect((err as Error).message).toContain('"request": 7');
    expect((err as Error).message).toContain('svid_ca_requests_in_flight 2');
  });

  it('fails at once when the load generator exits while it is waited for', async () => {
    const lg = fork(fakeLoadgen('crash', []));
    const waiting = lg.next('finished', 30_000);
    lg.child.send({ type: 'crash' });
    await expect(waiting).rejects.toThrow(/the load generator exited \(3\) while the bench waited for its 'finished' message/);
  });
});
