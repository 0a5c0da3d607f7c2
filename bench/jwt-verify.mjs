#!/usr/bin/env node
/**
 * Per-token cost of local JWT verification (issue #14 item 2): N distinct RS256 tokens shaped like
 * Kubernetes service-account tokens, verified one after the other by the built JwtAuthenticator with
 * its verified-token cache off, in one process. Prints wall and CPU microseconds per token.
 *
 *   npm run build && node bench/jwt-verify.mjs [--tokens 20000] [--rounds 3]
 */
import { createSign, generateKeyPairSync, createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { JwtAuthenticator } from '../dist/auth/index.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.tokens);
const ROUNDS = Number(values.rounds);
const ISSUER = 'https://kubernetes.default.svc.cluster.local';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = publicKey.export({ format: 'jwk' });
const kid = createHash('sha256').update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n })).digest('base64url');
const dir = mkdtempSync(join(tmpdir(), 'svid-ca-jwt-bench-'));
const jwksFile = join(dir, 'jwks.json');
writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...jwk, kid, alg: 'RS256', use: 'sig' }] }));

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const header = b64({ alg: 'RS256', kid });
const now = Math.floor(Date.now() / 1000);
const tokens = [];
for (let i = 0; i < N; i++) {
  const ns = `ns-${i % 97}`;
  const sa = `sa-${i}`;
  const payload = b64({
    aud: ['istio-ca'], exp: now + 3600, iat: now, nbf: now, iss: ISSUER, sub: `system:serviceaccount:${ns}:${sa}`,
    'kubernetes.io': { namespace: ns, pod: { name: `${sa}-pod`, uid: crypto.randomUUID() }, serviceaccount: { name: sa, uid: crypto.randomUUID() } },
  });
  const input = `${header}.${payload}`;
  tokens.push(`${input}.${createSign('RSA-SHA256').update(input).sign(privateKey).toString('base64url')}`);
}

const auth = new JwtAuthenticator({ issuer: ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile, verifiedTokenCacheSize: 0 });
const creds = tokens.map((t) => ({ authorization: [`Bearer ${t}`], clusterId: [] }));
// Warm-up: JIT and key import.
for (let i = 0; i < Math.min(2000, N); i++) await auth.authenticate(creds[i]);
console.log(`node ${process.versions.node}, OpenSSL ${process.versions.openssl}; ${N} distinct RS256 tokens, cache off`);
for (let r = 0; r < ROUNDS; r++) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const caller = await auth.authenticate(creds[i]);
    if (!caller) throw new Error('not verified');
  }
  const wallUs = Number(process.hrtime.bigint() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  console.log(`round ${r + 1}: ${(wallUs / N).toFixed(1)} us/token wall, ${((cpu.user + cpu.system) / N).toFixed(1)} us/token CPU`);
}
auth.close?.();
rmSync(dir, { recursive: true, force: true });
