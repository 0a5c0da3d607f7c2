// What the cryptography of one EC P-256 certificate costs when other work has run between two certificates, as in a
// serving process (issue #14): `node bench/crypto-cache.mjs [MiB ...]` (default 1 4 16). For each size, 3,000
// certificates' worth of node:crypto work (import a never-seen P-256 public key from JWK, as src/pki/fast-csr.ts
// does, verify a signature with it, sign with the intermediate's key made once), timed per certificate with
// process.cpuUsage: hot (back to back), then with MiB of memory touched (one byte per 64-byte line) before each
// certificate, then hot again; and hot with the RS256 verify of a service-account token added (a key made once).
// Runs under any runtime that has node:crypto (`bun bench/crypto-cache.mjs` for Bun).
// --go also builds and runs bench/crypto-go, the same work in Go's standard library (crypto/x509 + crypto/ecdsa +
// crypto/rsa, as bench/go-ca does per request), in the same run: the two lines side by side are what the
// cryptography of a certificate costs each CA before any other work (needs `go` on PATH only).
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const withGo = process.argv.includes('--go');
const sizes = process.argv.slice(2).filter((a) => a !== '--go').map(Number);
const N = 3_000;
const signer = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const data = crypto.randomBytes(300);
const keys = [];
const signatures = [];
for (let i = 0; i < N; i++) {
  const k = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  keys.push(k.publicKey.export({ format: 'jwk' }));
  signatures.push(crypto.sign('sha256', data, k.privateKey));
}
const tokenKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const tokenSignature = crypto.sign('sha256', data, tokenKey.privateKey);

function run(junk, withToken = false) {
  let us = 0;
  for (let i = 0; i < N; i++) {
    if (junk) for (let at = 0; at < junk.length; at += 64) junk[at]++;
    const before = process.cpuUsage();
    const publicKey = crypto.createPublicKey({ key: keys[i], format: 'jwk' });
    if (!crypto.verify('sha256', data, publicKey, signatures[i])) throw new Error('signature does not verify');
    crypto.sign('sha256', data, signer.privateKey);
    if (withToken && !crypto.verify('sha256', data, tokenKey.publicKey, tokenSignature)) throw new Error('token signature does not verify');
    const used = process.cpuUsage(before);
    us += used.user + used.system;
  }
  return (us / N).toFixed(1);
}

const runtime = globalThis.Bun ? `Bun ${globalThis.Bun.version}` : `Node ${process.version}`;
const library = process.versions.boringssl ? 'BoringSSL' : `OpenSSL ${process.versions.openssl}`;
run(undefined); // warm-up
for (const mib of sizes.length ? sizes : [1, 4, 16]) {
  const junk = new Uint8Array(mib * 1024 * 1024);
  process.stdout.write(`${runtime} (${library}): import + verify + sign per certificate: hot ${run(undefined)} us, after touching ${mib} MiB ${run(junk)} us, hot again ${run(undefined)} us; with the RS256 token verify: hot ${run(undefined, true)} us\n`);
}

if (withGo) {
  const { buildGo, goVersion } = await import('./go-ca-server.mjs');
  if (!goVersion) throw new Error('--go: Go is not installed (no `go` on PATH)');
  const dir = mkdtempSync(join(tmpdir(), 'crypto-go-'));
  try {
    buildGo('crypto-go', join(dir, 'crypto-go'));
    process.stdout.write(execFileSync(join(dir, 'crypto-go'), sizes.length ? sizes.map(String) : [], { encoding: 'utf8' }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
