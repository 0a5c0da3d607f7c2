/**
 * `svid-ca request` says what to fix in one line naming the flag, where it used to print grpc-js's raw
 * "14 UNAVAILABLE: No connection established ... try running Node.js with --use-system-ca. Resolution note: "
 * or a bare ENOENT: a --root that the serving certificate does not chain to (and the name checked), a
 * --server-name the certificate does not carry, nothing listening at --ca, an unreadable --token or --root
 * (all exit 2, as serve's flag errors). A call the server refused keeps its gRPC status (exit 1).
 * Real server on loopback (test/helpers/server.ts), the built CLI as a process.
 */
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCacerts, removeDir, tempDir } from './helpers/pki.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';
import { runTool } from './helpers/tools.js';
import { createTestIssuer, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';

const work = tempDir('svid-ca-request-errors-');
afterAll(() => removeDir(work));

/** Runs the built CLI's `request` with ARGS; exit status and output. */
function request(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/cli.js', 'request', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The one line on stderr; fails on more (the details belong in the message, not a stack). */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).toHaveLength(1);
  return lines[0]!;
}

describe('svid-ca request: errors name the flag to fix', () => {
  let server: TestServer | undefined;
  let issuer: TestIssuer;
  const rootFile = join(work, 'root.pem');
  const otherRootFile = join(work, 'other-root.pem');
  const tokenFile = join(work, 'token');
  const out = join(work, 'out');

  beforeAll(async () => {
    issuer = await createTestIssuer(work);
    const served = makeCacerts({ dir: join(work, 'served') });
    writeFileSync(rootFile, served.root.certPem);
    writeFileSync(otherRootFile, makeCacerts({ dir: join(work, 'other') }).root.certPem);
    server = await startTestServer({ cacerts: served.dir, issuer });
    writeFileSync(tokenFile, await issuer.token({ namespace: 'default', serviceAccount: 'app' }));
  }, 60_000);
  afterAll(() => server?.close());

  it('the right flags still get a certificate (baseline of the cases below)', async () => {
    const r = await request(['--ca', server!.address, '--root', rootFile, '--token', tokenFile, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('identity: spiffe://cluster.local/ns/default/sa/app');
  }, 60_000);

  it('a --root the serving certificate does not chain to: names --root, the file and the name checked; exit 2', async () => {
    const r = await request(['--ca', server!.address, '--root', otherRootFile, '--token', tokenFile, '--out', out]);
    expect(r.status).toBe(2);
    const line = oneLine(r.stderr);
    expect(line).toMatch(/^svid-ca: --root: /);
    expect(line).toContain(`does not verify with --root ${otherRootFile}`);
    // OpenSSL's words for the verify failure, then its code, e.g. "self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN)".
    expect(line).toMatch(/\(name checked: localhost\): [a-z][a-z -]+ \([A-Z_]+\)$/);
    expect(line).not.toContain('--use-system-ca');
    expect(line).not.toContain('Resolution note');
  }, 60_000);

  it('a --server-name the serving certificate does not carry: names --server-name and the name; exit 2', async () => {
    const r = await request(['--ca', server!.address, '--root', rootFile, '--server-name', 'wrong.example', '--token', tokenFile, '--out', out]);
    expect(r.status).toBe(2);
    const line = oneLine(r.stderr);
    expect(line).toMatch(/^svid-ca: --server-name: /);
    expect(line).toContain('wrong.example');
    expect(line).toContain('svid-ca.istio-system.svc'); // the names it does carry
  }, 60_000);

  it('--ca IP:PORT: no DeprecationWarning (no IP as TLS server name), and a certificate without that IP SAN or another root is still refused', async () => {
    const port = server!.address.split(':').pop()!;
    // This serving certificate carries DNS:localhost only (openssl shows it), so 127.0.0.1 must not verify.
    // Asynchronously: the server runs in this process, so a synchronous s_client would block it.
    const text = await new Promise<string>((resolve, reject) => {
      const c = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-alpn', 'h2'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let o = '';
      c.stdout.on('data', (d: Buffer) => (o += d.toString('utf8')));
      c.on('error', reject);
      c.on('close', () => resolve(o));
    });
    const leaf = join(work, 'serving-leaf.pem');
    writeFileSync(leaf, /-----BEGIN CERTIFICATE-----[^]*?-----END CERTIFICATE-----/.exec(text)![0]);
    expect(execFileSync('openssl', ['x509', '-in', leaf, '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' })).not.toContain('IP Address:127.0.0.1');
    const noSan = await request(['--ca', `127.0.0.1:${port}`, '--root', rootFile, '--token', tokenFile, '--out', out]);
    expect(noSan.status).toBe(2);
    expect(oneLine(noSan.stderr)).toMatch(/^svid-ca: --server-name: the CA's serving certificate at 127\.0\.0\.1:\d+ does not carry the name 127\.0\.0\.1/);
    const otherRoot = await request(['--ca', `127.0.0.1:${port}`, '--root', otherRootFile, '--token', tokenFile, '--out', out]);
    expect(otherRoot.status).toBe(2);
    expect(oneLine(otherRoot.stderr)).toMatch(/^svid-ca: --root: /);
    // With --server-name the name is verified as before (grpc-js' own TLS path).
    const named = await request(['--ca', `127.0.0.1:${port}`, '--server-name', 'localhost', '--root', rootFile, '--token', tokenFile, '--out', out]);
    expect(named.stderr).toBe('');
    expect(named.status).toBe(0);
  }, 60_000);

  it('nothing listening at --ca: says so with the address; exit 2', async () => {
    const port = await freePort(); // bound, then released: nothing listens
    const r = await request(['--ca', `127.0.0.1:${port}`, '--root', rootFile, '--token', tokenFile, '--out', out]);
    expect(r.status).toBe(2);
    expect(oneLine(r.stderr)).toBe(`svid-ca: --ca: nothing listens at 127.0.0.1:${port} (connection refused)`);
  }, 60_000);

  it('a --ca port that does not answer TLS (the plain-HTTP monitoring port): says so; exit 2', async () => {
    const address = `127.0.0.1:${server!.service.monitoringPort}`;
    const r = await request(['--ca', address, '--server-name', 'localhost', '--root', rootFile, '--token', tokenFile, '--out', out]);
    expect(r.status).toBe(2);
    expect(oneLine(r.stderr)).toMatch(new RegExp(`^svid-ca: --ca: ${address} does not answer TLS \\(.+\\): give svid-ca's gRPC port \\(--listen, default 15012\\), not the monitoring port$`));
  }, 60_000);

  it('an unreadable --token or --root file: cannot read PATH; exit 2', async () => {
    const missing = join(work, 'nope');
    const t = await request(['--ca', server!.address, '--root', rootFile, '--token', missing, '--out', out]);
    expect(t.status).toBe(2);
    expect(oneLine(t.stderr)).toBe(`svid-ca: --token: cannot read ${missing}: no such file`);
    const r = await request(['--ca', server!.address, '--root', missing, '--token', tokenFile, '--out', out]);
    expect(r.status).toBe(2);
    expect(oneLine(r.stderr)).toBe(`svid-ca: --root: cannot read ${missing}: no such file`);
    // A --root that is readable but holds no certificate (here: the token file) is said as such.
    const notPem = await request(['--ca', server!.address, '--root', tokenFile, '--token', tokenFile, '--out', out]);
    expect(notPem.status).toBe(2);
    expect(oneLine(notPem.stderr)).toBe(`svid-ca: --root: ${tokenFile} holds no PEM certificate (give the root bundle, e.g. the cacerts folder's root-cert.pem)`);
  }, 60_000);

  it('a --token file that holds no JWT (and no --identity to go without it): names --token and the file; exit 2', async () => {
    const garbage = join(work, 'token-garbage');
    writeFileSync(garbage, 'not-a-jwt\n');
    const r = await request(['--ca', server!.address, '--root', rootFile, '--token', garbage, '--out', out]);
    expect(r.status).toBe(2);
    expect(oneLine(r.stderr)).toBe(`svid-ca: --token: ${garbage} does not hold a service-account token (a JWT with sub system:serviceaccount:<ns>:<sa>): Invalid JWT; or give --identity`);
  }, 60_000);

  it('a --token file with characters a bearer token cannot carry: one line naming --token, never the token; exit 2', async () => {
    // grpc-js used to refuse the header in a 6-line error quoting "Bearer <the whole file>": a credential on stderr.
    const secret = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJlLXNlY3JldA';
    const cases: Array<[string, string, string]> = [
      ['newline', `${secret.slice(0, 30)}\n${secret.slice(30)}\n`, 'a line break at byte 31 of the file'],
      ['control', `${secret}\u0007tail`, `a control character at byte ${secret.length + 1} of the file`],
      // Leading white space is trimmed (as a trailing newline is) but counted: the position is the file's.
      ['non-ascii', `\n${secret}étail`, `a non-ASCII character at byte ${secret.length + 2} of the file`],
      ['space', `${secret} ${secret}`, `a space at byte ${secret.length + 1} of the file`],
      // Only alphabet characters, but padding before the end: the first such '=' is named.
      ['padding', `${secret}=.tail==`, `an '=' before the end at byte ${secret.length + 1} of the file`],
    ];
    for (const [name, content, what] of cases) {
      const file = join(work, `token-${name}`);
      writeFileSync(file, content);
      // With --identity the token is not parsed as a JWT: this is the path that reached grpc-js.
      const r = await request(['--ca', server!.address, '--root', rootFile, '--token', file, '--identity', 'spiffe://cluster.local/ns/default/sa/app', '--out', out]);
      expect(r.status, name).toBe(2);
      expect(oneLine(r.stderr)).toBe(`svid-ca: --token: ${file} holds ${what}, which a bearer token cannot carry (RFC 6750: letters, digits, - . _ ~ + / and trailing =; a JWT is base64url segments joined by dots)`);
      for (const part of [secret.slice(0, 20), secret.slice(30, 50), 'tail', 'Bearer']) expect(r.stderr, name).not.toContain(part);
      expect(r.stdout, name).toBe('');
    }
    const empty = join(work, 'token-empty');
    writeFileSync(empty, ' \n');
    const e = await request(['--ca', server!.address, '--root', rootFile, '--token', empty, '--identity', 'spiffe://cluster.local/ns/default/sa/app', '--out', out]);
    expect(e.status).toBe(2);
    expect(oneLine(e.stderr)).toBe(`svid-ca: --token: ${empty} is empty (give the file holding the service-account token)`);
  }, 120_000);

  it('a call the server refused keeps its gRPC status; exit 1', async () => {
    const wrongAudience = join(work, 'token-wrong-audience');
    writeFileSync(wrongAudience, await issuer.token({ namespace: 'default', serviceAccount: 'app', audience: 'not-istio-ca' }));
    const r = await request(['--ca', server!.address, '--root', rootFile, '--token', wrongAudience, '--out', out]);
    expect(r.status).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/^svid-ca: the CA at localhost:\d+ refused the call: 16 UNAUTHENTICATED: \S/);
  }, 60_000);
});

describe('svid-ca request against --self-signed: the root to give --root', () => {
  it('with --self-signed-dir DIR, DIR/root-cert.pem is the root: request verifies with it, and so does openssl', async () => {
    const issuer = await createTestIssuer(work);
    const dir = join(work, 'self-signed');
    const [grpcPort, monitoringPort] = [await freePort(), await freePort()];
    const serve = startCli(['serve', '--self-signed', '--self-signed-dir', dir, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile,
      '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monitoringPort}`, '--serving-dns', 'localhost', '--shutdown-delay', '0s']);
    try {
      await waitForStatus(`http://127.0.0.1:${monitoringPort}/readyz`, 200, 30_000);
      const tokenFile = join(work, 'token-self-signed');
      writeFileSync(tokenFile, await issuer.token({ namespace: 'demo', serviceAccount: 'web' }));
      const out = join(work, 'out-self-signed');
      const r = await request(['--ca', `localhost:${grpcPort}`, '--root', join(dir, 'root-cert.pem'), '--token', tokenFile, '--out', out]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const verdict = runTool('openssl', ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', join(dir, 'root-cert.pem'), '-untrusted', join(out, 'cert-chain.pem'), join(out, 'cert-chain.pem')]);
      expect(verdict.stdout.trim()).toBe(`${join(out, 'cert-chain.pem')}: OK`);
    } finally {
      serve.child.kill('SIGTERM');
      await serve.exited;
    }
  }, 90_000);
});
