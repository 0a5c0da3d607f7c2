// bench/compare-go.mjs (svid-ca beside a Go CA): without Go it says so and exits 0 before touching anything
// (the bench is not part of CI, and CI machines have no Go); its report pairs the two servers round by round.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

type Figures = Record<string, number>;
type Summary = Record<string, Record<string, unknown> & { rounds: number; ratio: Record<string, { median: number; min: number; max: number }> }>;
const report = (await import(pathToFileURL(join(import.meta.dirname, '..', 'bench', 'compare-go-report.mjs')).href)) as {
  summarize: (runs: Figures[]) => Summary;
  sideBySideTable: (s: Summary) => string;
};

describe('bench/compare-go.mjs', () => {
  it('skips with a message naming the Debian packages when Go is not on PATH', () => {
    // A PATH that holds only node: no `go` anywhere on it.
    const bin = mkdtempSync(join(tmpdir(), 'svid-ca-nogo-'));
    try {
      symlinkSync(process.execPath, join(bin, 'node'));
      const out = execFileSync(join(bin, 'node'), [join(import.meta.dirname, '..', 'bench', 'compare-go.mjs'), '--rounds', '1'], {
        env: { PATH: bin },
        encoding: 'utf8',
        timeout: 20_000,
      });
      expect(out).toContain('compare-go: skipped: Go is not installed');
      expect(out).toContain('golang-go golang-google-grpc-dev');
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it('reports medians per server and svid-ca / Go CA ratios of the same round', () => {
    const run = (server: string, round: number, issuedPerSec: number, serverCpuUsPerCert: number) => ({ scenario: 'ec-p256', server, round, issuedPerSec, serverCpuUsPerCert, p50ms: 10, p99ms: 40, peakRssMiB: 400, peakOwnMiB: 300 });
    // Round 2 ran on a slower machine: both servers slower, the ratio the same as in round 1.
    const runs = [run('svid-ca', 1, 6000, 250), run('go-ca', 1, 5000, 300), run('go-ca', 2, 2500, 600), run('svid-ca', 2, 3000, 500), run('svid-ca', 3, 6600, 240)];
    const summary = report.summarize(runs as unknown as Figures[]);
    const ec = summary['ec-p256']!;
    expect(ec.rounds).toBe(2); // round 3 has no Go CA run to pair with
    expect(ec.ratio.issuedPerSec).toEqual({ median: 1.2, min: 1.2, max: 1.2 });
    expect(ec.ratio.serverCpuUsPerCert!.median).toBeCloseTo(250 / 300, 10);
    expect((ec['svid-ca'] as Record<string, { median: number }>).issuedPerSec!.median).toBe(6000);

    const lines = report.sideBySideTable(summary).split('\n');
    expect(lines[0]).toBe('| scenario | server | rounds | certs/s | server CPU us/cert | p50 ms | p99 ms | peak RSS MiB (VmRSS sum) | peak MiB, shared pages once |');
    expect(lines).toHaveLength(2 + 3); // header, rule, svid-ca, go-ca, ratio
    expect(lines[2]).toBe('| ec-p256 | svid-ca | 2 | 6000 (3000-6600) | 250 (240-500) | 10.0 (10.0-10.0) | 40.0 (40.0-40.0) | 400 (400-400) | 300 (300-300) |');
    expect(lines[4]).toMatch(/^\| ec-p256 \| svid-ca \/ go-ca \| 2 \| 1\.20 \(1\.20-1\.20\) \| 0\.83 \(0\.83-0\.83\) \|/);
  });
});
