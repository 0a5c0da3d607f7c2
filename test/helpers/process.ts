/** Running the real svid-ca command as a child process, as an operator would. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { within } from './deadline.js';

/** How long a started command may take to exit once a test waits for it (`await proc.exited`). */
export const EXIT_TIMEOUT_MS = 30_000;

export async function freePort(): Promise<number> {
  const found = new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
  return within(found, 10_000, 'a free loopback port');
}

export interface CliProcess {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** The exit code; awaiting it fails after EXIT_TIMEOUT_MS (the process is then killed) instead of hanging. */
  exited: Promise<number | null>;
}

export function startCli(args: string[], env: Record<string, string> = {}, cwd = process.cwd()): CliProcess {
  const child = spawn(process.execPath, ['dist/cli.js', ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const out: CliProcess = {
    child,
    stdout: [],
    stderr: [],
    // A getter: the timer starts when a test waits for the exit, not when the process starts.
    get exited() {
      return within(exit, EXIT_TIMEOUT_MS, `svid-ca ${args.join(' ')} to exit (stderr: ${out.stderr.join('').slice(-500)})`, () => child.kill('SIGKILL'));
    },
  };
  child.stdout!.on('data', (d: Buffer) => out.stdout.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => out.stderr.push(d.toString()));
  return out;
}

/** Polls url until it answers `status`, or throws after timeoutMs. */
export async function waitForStatus(url: string, status = 200, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
      if (res.status === status) return;
    } catch {
      // not listening yet, or no answer within 5 s
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
