// The side-by-side report of bench/compare-go.mjs: per scenario and server the median of its rounds, and the
// svid-ca / Go CA ratios taken round by round (each pair ran back to back, so the ratio survives a machine whose
// speed drifts between rounds). Pure functions, tested in test/compare-go.test.ts.

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const spread = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });

/** The figures compared, in table order: [key of a run, column title, digits]. */
export const FIGURES = [
  ['issuedPerSec', 'certs/s', 0],
  ['serverCpuUsPerCert', 'server CPU us/cert', 0],
  ['p50ms', 'p50 ms', 1],
  ['p99ms', 'p99 ms', 1],
  ['peakRssMiB', 'peak RSS MiB (VmRSS sum)', 0],
  ['peakOwnMiB', 'peak MiB, shared pages once', 0],
];

/**
 * runs: [{ scenario, server: 'svid-ca' | 'go-ca', round, ...figures }] -> { scenario: { 'svid-ca': {figure:
 * {median,min,max}}, 'go-ca': ..., ratio: {figure: {median,min,max}} (svid-ca / go-ca of the same round), rounds } }.
 * A round that lacks either server is left out of the ratios.
 */
export function summarize(runs) {
  const out = {};
  for (const scenario of [...new Set(runs.map((r) => r.scenario))]) {
    const of = (server) => runs.filter((r) => r.scenario === scenario && r.server === server);
    const entry = { rounds: 0, ratio: {} };
    for (const server of ['svid-ca', 'go-ca']) entry[server] = Object.fromEntries(FIGURES.map(([k]) => [k, spread(of(server).map((r) => r[k]))]));
    const pairs = of('svid-ca').map((a) => [a, of('go-ca').find((b) => b.round === a.round)]).filter(([, b]) => b);
    entry.rounds = pairs.length;
    for (const [k] of FIGURES) entry.ratio[k] = spread(pairs.map(([a, b]) => a[k] / b[k]));
    out[scenario] = entry;
  }
  return out;
}

const fmt = (x, digits) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

/** Markdown: one row per scenario and server (median of the rounds, min-max after it), then the ratio row. */
export function sideBySideTable(summary) {
  const head = ['scenario', 'server', 'rounds', ...FIGURES.map(([, t]) => t)];
  const rows = [];
  for (const [scenario, e] of Object.entries(summary)) {
    for (const server of ['svid-ca', 'go-ca']) {
      rows.push([scenario, server, String(e.rounds), ...FIGURES.map(([k, , d]) => `${fmt(e[server][k].median, d)} (${fmt(e[server][k].min, d)}-${fmt(e[server][k].max, d)})`)]);
    }
    rows.push([scenario, 'svid-ca / go-ca', String(e.rounds), ...FIGURES.map(([k]) => `${fmt(e.ratio[k].median, 2)} (${fmt(e.ratio[k].min, 2)}-${fmt(e.ratio[k].max, 2)})`)]);
  }
  const lines = [head, ...rows].map((cols) => `| ${cols.join(' | ')} |`);
  lines.splice(1, 0, `|${head.map(() => '---').join('|')}|`);
  return lines.join('\n');
}
