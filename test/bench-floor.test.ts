// bench/floor.mjs end to end, short: every server it starts answers real CreateCertificate calls over gRPC/TLS
// (the load generator checks sampled leaves against the signer), and the report has a row per server. Behaviour
// only: no figure is asserted.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

describe('bench/floor.mjs', () => {
  it('runs svid-ca, the bare node:http2 CA and its crypto-only and echo modes on one pool, and reports each', () => {
    // PATH with node, openssl and getconf only: the Go CA is left out and the report says why.
    const bin = mkdtempSync(join(tmpdir(), 'svid-ca-floor-bin-'));
    try {
      symlinkSync(process.execPath, join(bin, 'node'));
      for (const tool of ['openssl', 'getconf']) symlinkSync(`/usr/bin/${tool}`, join(bin, tool));
      const out = execFileSync(
        join(bin, 'node'),
        [join(import.meta.dirname, '..', 'bench', 'floor.mjs'), '--rounds', '1', '--duration', '1', '--warmup', '0', '--only', 'renewals', '--pool-rate', '400', '--callers', '8'],
        { env: { PATH: bin }, encoding: 'utf8', timeout: 150_000, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      for (const server of ['svid-ca', 'svid-ca-1', 'bare', 'crypto-only', 'echo']) expect(out).toMatch(new RegExp(`^\\| ${server} \\| \\d+ \\(`, 'm'));
      expect(out).not.toMatch(/^\| go-ca /m);
      // A run of svid-ca or the bare CA with any error or bad leaf would have made the command exit 1 (execFileSync throws).
      expect(out).not.toContain('errors {');
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  }, 180_000);
});
