/**
 * Every command shown in README.md and docs/ runs as printed. Shell blocks carry a marker after the language:
 * - `sh runnable`: executed, in file order, by bash (-euo pipefail) in a fresh temporary folder with `svid-ca` (the
 *   built dist/cli.js) on the PATH, inside a private network namespace so that the printed loopback ports are
 *   free; servers a block starts in the background are stopped when the file's blocks end.
 * - `sh cluster`: needs a cluster, a registry or Istio, so it is checked, not run: bash syntax, every manifest
 *   path it names exists (and renders with `kubectl kustomize` when it is a kustomize folder), every `svid-ca`
 *   command and flag it uses exists.
 * - `sh repo`: run in a checkout of this repository; every npm script it names exists.
 * A shell block with no marker fails the test.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { SERVE_FLAGS } from '../src/config.js';
import { DEV_TOKEN_FLAGS, REQUEST_FLAGS } from '../src/commands.js';
import { CACERTS_FLAGS } from '../src/operator/index.js';
import { removeDir, tempDir } from './helpers/pki.js';

const ROOT = join(import.meta.dirname, '..');
const KUBECTL = process.env.KUBECTL ?? '/usr/bin/kubectl';
const SHELLS = new Set(['sh', 'bash', 'shell', 'console', 'zsh']);
const MARKERS = ['runnable', 'cluster', 'repo'] as const;
type Marker = (typeof MARKERS)[number];

interface Block {
  file: string;
  line: number;
  lang: string;
  marker: string | undefined;
  code: string;
}

/** Fenced code blocks of a Markdown file, with the fence's indentation taken off each line. */
function codeBlocks(file: string): Block[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)\s*([\w-]*)/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang, marker] = open as unknown as [string, string, string, string, string];
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !lines[j]!.trimStart().startsWith(fence); j++) body.push(lines[j]!.startsWith(indent) ? lines[j]!.slice(indent.length) : lines[j]!);
    blocks.push({ file: relative(ROOT, file), line: i + 1, lang, marker: marker || undefined, code: body.join('\n') });
    i = j;
  }
  return blocks;
}

const DOC_FILES = [join(ROOT, 'README.md'), ...readdirSync(join(ROOT, 'docs')).filter((n) => n.endsWith('.md')).map((n) => join(ROOT, 'docs', n))];
const shellBlocks = DOC_FILES.flatMap(codeBlocks).filter((b) => SHELLS.has(b.lang));
const withMarker = (m: Marker) => shellBlocks.filter((b) => b.marker === m);

const work = tempDir('svid-ca-docs-');
afterAll(() => removeDir(work));

/** A folder with an `svid-ca` shim for the built CLI, as `npm link` would put on the PATH. */
function shimDir(): string {
  const bin = join(work, 'bin');
  if (!existsSync(join(bin, 'svid-ca'))) {
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'svid-ca'), `#!/bin/sh\nexec "${process.execPath}" "${join(ROOT, 'dist', 'cli.js')}" "$@"\n`);
    chmodSync(join(bin, 'svid-ca'), 0o755);
  }
  return bin;
}

/** One bash script of a file's runnable blocks, each announcing itself on stderr, background jobs stopped at the end. */
function scriptOf(blocks: Block[]): string {
  return [
    'set -euo pipefail',
    // Servers a block left in the background: SIGTERM, then wait for them to drain and exit.
    "trap 'jobs -p | xargs -r kill 2>/dev/null || true; wait' EXIT",
    // Killed by the test's timeout: still run the EXIT trap, so no server outlives the test.
    "trap 'exit 143' TERM",
    ...blocks.map((b) => `echo "--- ${b.file}:${b.line}" >&2\n${b.code}`),
  ].join('\n');
}

/** Runs blocks as one script in a fresh folder `name` under the work folder, in a private network namespace. */
function runBlocks(blocks: Block[], name: string): SpawnSyncReturns<string> {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'doc-blocks.sh'), scriptOf(blocks));
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${shimDir()}:${process.env.PATH ?? ''}` };
  delete env.NODE_ENV;
  // A private network namespace: the blocks use the ports they print (15012, 15014) without meeting other servers.
  return spawnSync('unshare', ['--map-root-user', '--net', '--', 'bash', '-c', 'PATH="$PATH:/usr/sbin:/sbin" ip link set lo up && exec bash doc-blocks.sh'], { cwd: dir, env, encoding: 'utf8', timeout: 120_000 });
}

/** What is wrong with cluster blocks: bash syntax, manifest paths, svid-ca commands and flags. */
function clusterProblems(blocks: Block[]): string[] {
  const commandFlags: Record<string, readonly { name: string }[]> = {
    serve: SERVE_FLAGS,
    'dev-token': DEV_TOKEN_FLAGS,
    request: REQUEST_FLAGS,
    ...Object.fromEntries(Object.entries(CACERTS_FLAGS).map(([sub, specs]) => [`cacerts ${sub}`, specs])),
  };
  const problems: string[] = [];
  const rendered = new Set<string>();
  for (const b of blocks) {
    const where = `${b.file}:${b.line}`;
    const syntax = spawnSync('bash', ['-n'], { input: b.code, encoding: 'utf8' });
    if (syntax.status !== 0) problems.push(`${where}: ${syntax.stderr.trim()}`);
    const code = b.code.replace(/\\\n\s*/g, ' ');
    for (const m of code.matchAll(/(?:kubectl (?:apply|delete|diff) -k|kubectl kustomize)\s+(\S+)/g)) {
      const path = m[1]!;
      if (!path.startsWith('deploy/')) continue; // the reader's own overlay
      if (!existsSync(join(ROOT, path, 'kustomization.yaml'))) problems.push(`${where}: ${path} is not a kustomize folder`);
      else if (!rendered.has(path)) {
        execFileSync(KUBECTL, ['kustomize', join(ROOT, path)], { stdio: ['ignore', 'pipe', 'pipe'] });
        rendered.add(path);
      }
    }
    for (const m of code.matchAll(/\s-f\s+(deploy\/\S+)/g)) {
      const path = join(ROOT, m[1]!);
      if (!existsSync(path) || !statSync(path).isFile()) problems.push(`${where}: ${m[1]} does not exist`);
      else if (parseAllDocuments(readFileSync(path, 'utf8')).some((d) => d.errors.length > 0)) problems.push(`${where}: ${m[1]} is not valid YAML`);
    }
    for (const line of code.split('\n')) {
      // svid-ca in command position (a line's start, or after |, ;, &&, or $( ), not inside a name such as svid-ca.istio-system.svc.
      const m = /(?:^|[;&|(])\s*svid-ca\s+(cacerts\s+[\w-]+|[\w-]+)(.*)$/.exec(line.replace(/\s#.*$/, ''));
      if (!m) continue;
      const command = m[1]!.replace(/\s+/g, ' ');
      const flags = commandFlags[command];
      if (!flags) {
        problems.push(`${where}: svid-ca ${command} is not a command`);
        continue;
      }
      for (const f of m[2]!.matchAll(/\s--([\w-]+)/g)) if (!flags.some((s) => s.name === f[1])) problems.push(`${where}: svid-ca ${command} has no flag --${f[1]}`);
    }
  }
  return problems;
}

describe('shell blocks in README.md and docs/', () => {
  it('each carry a marker: runnable, cluster or repo', () => {
    const unmarked = shellBlocks.filter((b) => !MARKERS.includes(b.marker as Marker)).map((b) => `${b.file}:${b.line} (\`\`\`${b.lang} ${b.marker ?? ''})`);
    expect(unmarked).toEqual([]);
    expect(withMarker('runnable').length).toBeGreaterThan(5);
  });

  const runnableFiles = [...new Set(withMarker('runnable').map((b) => b.file))];
  it.each(runnableFiles)('%s: the runnable blocks run as printed against the built CLI', (file) => {
    const run = runBlocks(withMarker('runnable').filter((b) => b.file === file), file.replace(/[/.]/g, '_'));
    const tail = (s: string | null) => (s ?? '').split('\n').slice(-40).join('\n');
    expect(run.error, `unshare -n (needs root or unprivileged user namespaces) and ip: ${run.error?.message}`).toBeUndefined();
    expect(run.status, `${file}: a block failed (the last "---" line names it)\nstdout:\n${tail(run.stdout)}\nstderr:\n${tail(run.stderr)}`).toBe(0);
  }, 150_000);

  it('a runnable block whose command fails fails its file, and background servers are stopped', () => {
    const block = (code: string): Block => ({ file: 'made-up.md', line: 1, lang: 'sh', marker: 'runnable', code });
    const run = runBlocks([block('sleep 300 &'), block('svid-ca cacerts verify nowhere'), block('echo not reached')], 'failing');
    expect(run.status).not.toBe(0);
    expect(run.stdout).toContain('REJECTED');
    expect(run.stdout).not.toContain('not reached');
    expect(run.stderr).toContain('--- made-up.md:1');
  }, 30_000);

  it('cluster blocks are valid bash, name manifests that exist and render, and svid-ca commands and flags that exist', () => {
    expect(clusterProblems(withMarker('cluster'))).toEqual([]);
    expect(withMarker('cluster').length).toBeGreaterThan(5);
  }, 60_000);

  it('the cluster check finds a missing manifest, an unknown command or flag, and bad syntax', () => {
    const bad = (code: string): Block => ({ file: 'made-up.md', line: 1, lang: 'sh', marker: 'cluster', code });
    expect(clusterProblems([bad('kubectl apply -f deploy/istio/mtls/09-nothing.yaml')])).toEqual([expect.stringContaining('does not exist')]);
    expect(clusterProblems([bad('kubectl apply -k deploy/nowhere')])).toEqual([expect.stringContaining('is not a kustomize folder')]);
    expect(clusterProblems([bad('svid-ca cacerts verify current --when now')])).toEqual([expect.stringContaining('has no flag --when')]);
    expect(clusterProblems([bad('svid-ca sign --out x')])).toEqual([expect.stringContaining('is not a command')]);
    expect(clusterProblems([bad('if then fi (')])).toHaveLength(1);
  });

  it("the overlay shown in docs/kubernetes.md renders on top of deploy/kubernetes and sets the Deployment's image", () => {
    const overlay = DOC_FILES.flatMap(codeBlocks).find((b) => b.lang === 'yaml' && b.code.startsWith('# my-overlay/kustomization.yaml'));
    expect(overlay, 'docs/kubernetes.md shows my-overlay/kustomization.yaml').toBeDefined();
    // Laid out as the overlay expects: my-overlay/ next to a deploy/ folder.
    const dir = join(work, 'overlay');
    mkdirSync(join(dir, 'my-overlay'), { recursive: true });
    if (!existsSync(join(dir, 'deploy'))) symlinkSync(join(ROOT, 'deploy'), join(dir, 'deploy'));
    writeFileSync(join(dir, 'my-overlay', 'kustomization.yaml'), overlay!.code);
    const out = execFileSync(KUBECTL, ['kustomize', join(dir, 'my-overlay')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const deployment = parseAllDocuments(out).map((d) => d.toJS() as { kind: string; spec?: { template: { spec: { containers: { image: string }[] } } } }).find((o) => o.kind === 'Deployment');
    expect(deployment?.spec?.template.spec.containers[0]?.image).toBe('registry.example.com/svid-ca:0.1.0');
  }, 60_000);

  it('repo blocks name npm scripts that exist', () => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const problems: string[] = [];
    for (const b of withMarker('repo')) {
      for (const m of b.code.matchAll(/\bnpm (?:run (?:--silent )?(\S+)|(start|test))\b/g)) {
        const name = m[1] ?? m[2]!;
        if (!scripts[name]) problems.push(`${b.file}:${b.line}: npm script "${name}" does not exist`);
      }
    }
    expect(problems).toEqual([]);
  });
});
