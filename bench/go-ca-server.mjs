// Building and starting bench/go-ca (our grpc-go + crypto/x509 CA, Debian's Go packages in GOPATH mode) and starting any
// benchmark peer that announces its port in one JSON line (bench/bare-ca.mjs too): shared by
// bench/compare-go.mjs and bench/floor.mjs, so both measure the same Go CA started the same way.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const GOPATH = process.env.GOPATH || '/usr/share/gocode';
export const INSTALL_HINT = 'apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-golang-x-net-dev';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `go version`'s line, or undefined without Go on the PATH. */
export const goVersion = (() => {
  try {
    return execFileSync('go', ['version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
})();

/** Why the Go CA cannot be built here (with the packages to install), or undefined when it can. */
export function goMissing() {
  if (!goVersion) return `Go is not installed (no \`go\` on PATH). On Debian 12: ${INSTALL_HINT}`;
  if (!existsSync(join(GOPATH, 'src', 'google.golang.org', 'grpc'))) return `grpc-go is not in GOPATH ${GOPATH}. On Debian 12: ${INSTALL_HINT}`;
  return undefined;
}

/** Builds bench/go-ca into `bin` (GO111MODULE=off, GOPATH above); build output goes to our stderr. */
export function buildGoCa(bin) {
  buildGo('go-ca', bin);
}

/** Builds the Go program in bench/`folder` into `bin` (GO111MODULE=off, GOPATH above); build output goes to our stderr. */
export function buildGo(folder, bin) {
  execFileSync('go', ['build', '-o', bin, '.'], {
    cwd: join(ROOT, 'bench', folder),
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, GO111MODULE: 'off', GOPATH, GOFLAGS: '', GOCACHE: process.env.GOCACHE || join(tmpdir(), 'svid-ca-go-cache') },
  });
}

/**
 * A benchmark peer that prints one JSON line `{ "grpc": "HOST:PORT", ... }` on stdout when it serves (bench/go-ca,
 * bench/bare-ca.mjs): spawns `bin args`, waits up to 30 s for that line, and resolves { child, grpcPort }; rejects
 * naming `name` when the process exits first or stays silent.
 */
export async function startPeer(name, bin, args) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = await Promise.race([
    new Promise((resolve) => createInterface({ input: child.stdout }).once('line', resolve)),
    new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before serving`)))),
    sleep(30_000).then(() => Promise.reject(new Error(`${name} did not say it serves within 30 s`))),
  ]);
  child.stdout.resume();
  return { child, grpcPort: Number(JSON.parse(first).grpc.split(':').pop()) };
}

/** The Go CA on loopback with `cacertsDir` and the dev JWT issuer of `env` (ensureDevEnvironment's): { child, grpcPort }. */
export function startGoCa(bin, cacertsDir, env) {
  return startPeer('go-ca', bin, ['-listen', '127.0.0.1:0', '-cacerts', cacertsDir, '-jwks', env.jwksFile, '-issuer', env.issuer, '-audience', 'istio-ca', '-trust-domain', 'cluster.local']);
}
