// The cacerts folder a benchmark scenario signs with: the dev EC P-256 one, or a fresh RSA-2048 root and
// intermediate (as bench/run.mjs makes). Shared by bench/compare-go.mjs and bench/floor.mjs.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const { createIntermediateCa, createRootCa } = await import('../dist/ca/index.js');

/** `signer` 'rsa-2048': a new RSA-2048 root + intermediate in `dir`/rsa-cacerts; else the dev environment's cacerts. */
export function benchCacerts(signer, dir, env) {
  if (signer !== 'rsa-2048') return env.cacertsDir;
  const cacerts = join(dir, 'rsa-cacerts');
  const root = createRootCa({ key: 'rsa-2048', ttlMs: 30 * 86_400_000, organization: 'svid-ca bench', commonName: 'bench RSA root' });
  const files = createIntermediateCa({ root, key: 'rsa-2048', ttlMs: 7 * 86_400_000, organization: 'svid-ca bench', commonName: 'bench RSA intermediate' });
  mkdirSync(cacerts, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(cacerts, name), text, { mode: 0o600 });
  return cacerts;
}
