/**
 * What the image would run, without a Docker engine: the Dockerfile's runtime stage is read (its COPY lines,
 * its `npm ci` line, ENV, WORKDIR, ENTRYPOINT and CMD) and repeated in a temp folder, so the test and the
 * Dockerfile cannot drift. dist/ comes from the normal build (`npm test` runs it as pretest). Then the server is
 * started from that folder the way the image starts it, becomes ready, and exits 0 on SIGTERM.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestIssuer } from './helpers/server.js';
import { freePort } from './helpers/process.js';

const ROOT = join(import.meta.dirname, '..');
const NPM_CI_TIMEOUT_MS = 240_000;
const READY_TIMEOUT_MS = 60_000;

interface Instruction {
  op: string;
  /** Text after the keyword, continuation lines joined. */
  rest: string;
}

interface Stage {
  name: string | undefined;
  base: string;
  instructions: Instruction[];
}

/** Stages of a Dockerfile: comments dropped, `\` continuations joined, keywords upper-cased. */
function parseDockerfile(text: string): Stage[] {
  const lines: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw) && pending === '') continue;
    if (/^\s*#/.test(raw)) continue; // a comment inside a continued instruction
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full) lines.push(full);
  }
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\S+)\s*(.*)$/.exec(line)!;
    const op = m[1]!.toUpperCase();
    const rest = m[2]!;
    if (op === 'FROM') {
      const from = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      stages.push({ base: from[1]!, name: from[2], instructions: [] });
    } else if (op !== 'ARG' || stages.length > 0) {
      stages.at(-1)!.instructions.push({ op, rest });
    }
  }
  return stages;
}

/** Exec form (`["a", "b"]`) or shell-split words of an instruction's arguments. */
function words(rest: string): string[] {
  if (rest.trimStart().startsWith('[')) return JSON.parse(rest) as string[];
  return rest.split(/\s+/).filter(Boolean);
}

function workdirOf(stage: Stage): string {
  let dir = '/';
  for (const i of stage.instructions) if (i.op === 'WORKDIR') dir = posix.resolve(dir, i.rest.trim());
  return dir;
}

interface CopyStep {
  /** Absolute host path. */
  from: string;
  /** Path inside the runtime stage (absolute). */
  to: string;
  fromContext: boolean;
}

/**
 * The runtime stage's COPY lines as host paths. `--from=<stage>` sources must lie under that stage's WORKDIR,
 * which is a copy of the repository (the build stage copies the sources there and builds in place).
 */
function copySteps(stages: Stage[], runtime: Stage): CopyStep[] {
  const steps: CopyStep[] = [];
  let workdir = '/';
  for (const ins of runtime.instructions) {
    if (ins.op === 'WORKDIR') workdir = posix.resolve(workdir, ins.rest.trim());
    if (ins.op === 'ADD') throw new Error(`the runtime stage uses ADD (${ins.rest}); use COPY so this test can follow it`);
    if (ins.op !== 'COPY') continue;
    const w = words(ins.rest);
    const opts = w.filter((x) => x.startsWith('--'));
    const paths = w.filter((x) => !x.startsWith('--'));
    const dest = paths.pop()!;
    const fromStageName = opts.find((o) => o.startsWith('--from='))?.slice('--from='.length);
    const destAbs = posix.resolve(workdir, dest);
    const destIsDir = dest.endsWith('/') || paths.length > 1;
    for (const src of paths) {
      let host: string;
      if (fromStageName !== undefined) {
        const stage = stages.find((s) => s.name === fromStageName);
        if (!stage) throw new Error(`COPY --from=${fromStageName}: no stage of that name (an image cannot be followed here)`);
        const stageDir = workdirOf(stage);
        const abs = posix.resolve(stageDir, src);
        if (!abs.startsWith(stageDir + '/')) throw new Error(`COPY --from=${fromStageName} ${src}: outside the stage's WORKDIR ${stageDir}`);
        host = join(ROOT, posix.relative(stageDir, abs));
      } else {
        host = join(ROOT, posix.normalize(src));
      }
      const isDir = existsSync(host) && statSync(host).isDirectory();
      const to = isDir ? destAbs : destIsDir ? posix.join(destAbs, basename(host)) : destAbs;
      steps.push({ from: host, to, fromContext: fromStageName === undefined });
    }
  }
  return steps;
}


function httpStatus(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Dockerfile', () => {
  const stages = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  const runtime = stages.at(-1)!;
  const runtimeOps = (op: string) => ops(runtime, op);

  it('builds in one stage and runs from a slim Node 24 LTS stage as a numeric non-root user', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    // Production runs on Node.js 24 LTS (OpenSSL 3.5); package.json's engines must admit the image's major.
    for (const s of stages) expect(s.base).toMatch(/^node:24-[a-z]+-slim$/);
    const engines = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    expect(engines).toMatch(/^>=(22|23|24)(\.\d+)*$/);
    const build = stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /\bnpm run build\b/.test(i.rest)));
    expect(build, 'a stage runs `npm run build`').toBeDefined();
    expect(build!.instructions.some((i) => i.op === 'RUN' && /\bnpm ci\b(?!.*--omit=dev)/.test(i.rest)), 'the build stage installs all dependencies').toBe(true);
    const user = runtimeOps('USER').at(-1)?.rest.trim();
    expect(user).toMatch(/^[1-9]\d*(:\d+)?$/);
    expect(runtimeOps('EXPOSE').flatMap((i) => words(i.rest)).sort()).toEqual(['15012', '15014']);
    expect(stages.flatMap((s) => s.instructions).filter((i) => i.op === 'HEALTHCHECK')).toEqual([]);
    expect(words(runtimeOps('ENTRYPOINT').at(-1)!.rest)).toEqual(['node', '/app/dist/cli.js']);
    expect(words(runtimeOps('CMD').at(-1)!.rest)).toEqual(['serve']);
    expect(workdirOf(runtime)).toBe('/app');
  });

  it('keeps dev keys and local builds out of the build context', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const must of ['certs-dev', 'node_modules', 'dist', '.git']) expect(ignored).toContain(must);
    // Everything the stages copy from the context must not be ignored.
    for (const s of stages) {
      for (const i of s.instructions.filter((x) => x.op === 'COPY' && !x.rest.includes('--from='))) {
        const paths = words(i.rest).filter((x) => !x.startsWith('--')).slice(0, -1);
        for (const p of paths) expect(ignored, `COPY ${p}`).not.toContain(posix.normalize(p).split('/')[0]);
      }
    }
  });
});

describe('production install from the Dockerfile runtime stage (no Docker: the same steps in a temp folder)', () => {
  const stages = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  const runtime = stages.at(-1)!;
  const imageWorkdir = workdirOf(runtime);
  let tmp: string;
  let app: string;
  let child: ChildProcess | undefined;
  let output = '';

  /** A path inside the image, as a path in the temp folder. */
  const inImage = (p: string) => join(app, posix.relative(imageWorkdir, posix.resolve(imageWorkdir, p)));

  beforeAll(() => {
    if (!existsSync(join(ROOT, 'dist', 'cli.js'))) {
      throw new Error('dist/cli.js is missing: run `npm run build` first (`npm test` runs it as pretest)');
    }
    tmp = mkdtempSync(join(tmpdir(), 'svid-ca-prod-'));
    app = join(tmp, 'app');
    mkdirSync(app);
  });

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child!.once('exit', r));
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('copies what the runtime stage copies and installs production dependencies only', async () => {
    const steps = copySteps(stages, runtime);
    expect(steps.map((s) => posix.relative(imageWorkdir, s.to)).sort()).toEqual(['dist', 'package-lock.json', 'package.json', 'proto'].sort());
    for (const s of steps) {
      expect(existsSync(s.from), `${s.from} (COPY source)`).toBe(true);
      cpSync(s.from, inImage(s.to), { recursive: true });
    }

    const run = ops(runtime, 'RUN').map((i) => i.rest);
    const install = run.flatMap((r) => r.split(/&&|;/).map((c) => c.trim())).filter((c) => /^npm ci\b/.test(c));
    expect(install, 'the runtime stage runs exactly one `npm ci`').toHaveLength(1);
    const npmArgs = words(install[0]!).slice(1);
    expect(npmArgs).toContain('--omit=dev');
    await new Promise<void>((resolve, reject) => {
      execFile('npm', npmArgs, { cwd: app, timeout: NPM_CI_TIMEOUT_MS, env: { ...process.env, ...imageEnv(runtime) } }, (err, stdout, stderr) =>
        err ? reject(new Error(`npm ${npmArgs.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(),
      );
    });
    const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies)) expect(existsSync(join(app, 'node_modules', dep, 'package.json')), `dependency ${dep}`).toBe(true);
    // The lockfile marks packages needed only for development (`"dev": true`); none of them may be installed.
    // (A devDependency such as @types/node can also be a production dependency of a dependency; then it is not dev.)
    const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.entries(lock.packages).filter(([path, p]) => path.startsWith('node_modules/') && p.dev === true).map(([path]) => path);
    expect(devOnly).toContain('node_modules/typescript');
    expect(devOnly).toContain('node_modules/vitest');
    expect(devOnly.filter((path) => existsSync(join(app, path))), 'dev-only packages in the production install').toEqual([]);
  }, NPM_CI_TIMEOUT_MS + 30_000);

  it('starts with the image entrypoint, becomes ready on /readyz, and exits 0 on SIGTERM', async () => {
    expect(existsSync(join(app, 'node_modules')), 'the install step ran').toBe(true);
    const entrypoint = words(ops(runtime, 'ENTRYPOINT').at(-1)!.rest);
    const cmd = words(ops(runtime, 'CMD').at(-1)!.rest);
    expect(entrypoint[0]).toBe('node');
    const script = inImage(entrypoint[1]!);
    const monitoringPort = await freePort();
    // A production-style bundle (the dev CA is refused under the image's NODE_ENV=production), made
    // with the installed copy's own operator commands, and a JWT issuer's JWKS file.
    const installed = (...args: string[]) =>
      new Promise<void>((resolve, reject) =>
        execFile(process.execPath, [script, ...args], { cwd: app }, (err, _out, stderr) => (err ? reject(new Error(`${args.join(' ')}: ${stderr}`)) : resolve())),
      );
    await installed('cacerts', 'init-root', '--out', join(tmp, 'root'));
    await installed('cacerts', 'init-intermediate', '--root', join(tmp, 'root'), '--out', join(tmp, 'cacerts'));
    const issuer = await createTestIssuer(tmp);
    const argv = [
      script,
      ...entrypoint.slice(2),
      ...cmd,
      '--cacerts',
      join(tmp, 'cacerts'),
      '--jwt-issuer',
      issuer.issuer,
      '--jwks-file',
      issuer.jwksFile,
      '--listen',
      '127.0.0.1:0',
      '--monitoring-listen',
      `127.0.0.1:${monitoringPort}`,
    ];
    const proc = spawn(process.execPath, argv, { cwd: app, env: { ...process.env, ...imageEnv(runtime) }, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    proc.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    proc.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));

    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = 'no answer';
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`svid-ca exited with ${proc.exitCode} before it was ready:\n${output}`);
      const res = await httpStatus(monitoringPort, '/readyz').catch((e: Error) => ({ status: 0, body: e.message }));
      if (res.status === 200) break;
      last = `${res.status} ${res.body}`;
      if (Date.now() > deadline) throw new Error(`/readyz not 200 within ${READY_TIMEOUT_MS / 1000} s (last: ${last}):\n${output}`);
      await sleep(250);
    }
    expect((await httpStatus(monitoringPort, '/healthz')).status).toBe(200);
    const metrics = await httpStatus(monitoringPort, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('citadel_server_csr_count');
    // The JSON log line the service writes once both listeners are up.
    expect(output).toMatch(/"msg":"svid-ca serving"/);

    proc.kill('SIGTERM');
    const result = await exited;
    expect(result, output).toEqual({ code: 0, signal: null });
  }, READY_TIMEOUT_MS + 40_000);
});

function ops(stage: Stage, op: string): Instruction[] {
  return stage.instructions.filter((i) => i.op === op);
}

/** ENV lines of a stage (`ENV A=b C=d` and the legacy `ENV A b`). */
function imageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of ops(stage, 'ENV')) {
    if (i.rest.includes('=')) {
      for (const m of i.rest.matchAll(/(\w+)=("([^"]*)"|\S*)/g)) env[m[1]!] = m[3] ?? m[2]!;
    } else {
      const [k, ...v] = i.rest.split(/\s+/);
      env[k!] = v.join(' ');
    }
  }
  return env;
}
