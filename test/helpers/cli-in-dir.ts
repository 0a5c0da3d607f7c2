import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

/**
 * The built CLI and openssl run in folder `work` (for tests that follow a runbook's commands there): `svidCa(...args)`
 * -> { status, out: stdout + stderr }; `ok(...args)` asserts exit 0 and returns the output; `openssl(...args)` ->
 * stdout + stderr; `at(path)` -> the path inside `work`; `serialOf(file)` -> the certificate's serial in lower-case
 * hex without leading zero bytes (as openssl crl -text prints it).
 */
export function cliInDir(work: string) {
  const svidCa = (...args: string[]) => {
    const r = spawnSync(process.execPath, [join(process.cwd(), 'dist/cli.js'), ...args], { encoding: 'utf8', timeout: 30_000, cwd: work });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  const ok = (...args: string[]) => {
    const r = svidCa(...args);
    expect(r.out + `\n(exit ${r.status})`).toMatch(/\(exit 0\)$/);
    return r.out;
  };
  const openssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { encoding: 'utf8', cwd: work });
    return `${r.stdout}${r.stderr}`;
  };
  const at = (p: string) => join(work, p);
  const serialOf = (file: string) => new X509Certificate(readFileSync(at(file))).serialNumber.toLowerCase().replace(/^(00)+(?=..)/, '');
  return { svidCa, ok, openssl, at, serialOf };
}

/**
 * The CRL runbook tests' folder in use, made with the built CLI in `cli`'s folder: root `offline/root1`; intermediates
 * `retired` and `current` under it; `current/ca-crl.pem` holding the root's CRL number 2 (revoking `retired`) and
 * `current`'s own CRL number 1. Returns the two intermediates' serials (serialOf) and `rootVerdict(certFile,
 * crlFile)`: what `openssl verify -crl_check` says of a certificate under root1 with the CRLs of `crlFile`.
 */
export function crlFolderInUse(cli: ReturnType<typeof cliInDir>) {
  const { ok, openssl, at, serialOf } = cli;
  ok('cacerts', 'init-root', '--out', 'offline/root1');
  ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'retired', '--cluster', 'retired');
  ok('cacerts', 'init-intermediate', '--root', 'offline/root1', '--out', 'current', '--cluster', 'current');
  ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'current/ca-crl.pem');
  ok('cacerts', 'crl', '--issuer', 'offline/root1', '--out', 'current/ca-crl.pem', '--revoke', 'retired/ca-cert.pem');
  ok('cacerts', 'crl', '--issuer', 'current', '--out', 'current/ca-crl.pem');
  const rootVerdict = (certFile: string, crlFile: string) => openssl('verify', '-crl_check', '-CAfile', at('offline/root1/root-cert.pem'), '-CRLfile', at(crlFile), at(certFile));
  return { retiredSerial: serialOf('retired/ca-cert.pem'), currentSerial: serialOf('current/ca-cert.pem'), rootVerdict };
}
