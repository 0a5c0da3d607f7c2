// Checks the alerting rules, their promtool unit tests, the PrometheusRule/ServiceMonitor manifests and the
// Grafana dashboard in deploy/prometheus/. Runs the real promtool (Debian: `apt-get install prometheus`).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { CaMetrics } from '../src/observability/index.js';
import { anchorsOf } from './helpers/markdown.js';
import { runTool } from './helpers/tools.js';

const ROOT = resolve(import.meta.dirname, '..');
const DIR = join(ROOT, 'deploy/prometheus');
const RULES = 'deploy/prometheus/svid-ca-rules.yaml';
const RULE_TESTS = 'deploy/prometheus/rules.test.yaml';

/** Alerts the observability issue asks for, by the name the rules file gives them. */
const REQUIRED_ALERTS = [
  'SvidCaRootExpiresWithin30Days',
  'SvidCaIntermediateExpiresWithin30Days',
  'SvidCaIntermediateExpiresWithin7Days',
  'SvidCaSignerExpiresBeforeMaxTtl',
  'SvidCaServingCertificateExpiresWithin1Hour',
  'SvidCaBundleReloadFailing',
  'SvidCaIssuanceErrorRatioHigh',
  'SvidCaAuthenticationFailuresSpike',
  'SvidCaNoSuccessfulIssuance',
  'SvidCaTargetDown',
  // The JWKS and serving-certificate alerts docs/monitoring.md used to list as suggestions.
  'SvidCaJwksReloadFailing',
  'SvidCaServingCertificateLimitedBySigner',
];

/** A runbook link is `docs/<page>.md#<anchor>`, and the page has a heading with that anchor. */
function runbookProblem(url: string | undefined): string | undefined {
  const m = /^(docs\/[a-z-]+\.md)#([a-z0-9-]+)$/.exec(url ?? '');
  if (!m) return `"${url}" is not docs/<page>.md#<anchor>`;
  const file = join(ROOT, m[1]!);
  if (!existsSync(file)) return `${m[1]} does not exist`;
  return anchorsOf(file).includes(m[2]!) ? undefined : `${m[1]} has no heading #${m[2]}`;
}

/** Series Prometheus itself attaches to every scrape target. */
const PROMETHEUS_BUILTINS = ['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'scrape_samples_post_metric_relabeling', 'scrape_series_added'];

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Group {
  name: string;
  rules: Rule[];
}

const readYaml = (name: string): any => parse(readFileSync(join(DIR, name), 'utf8'));

/** promtool from PATH or $PROMTOOL (test/helpers/tools.ts); a missing promtool fails with how to install it. */
function promtool(args: string[]): { status: number | null; output: string } {
  const r = runTool('promtool', args, { cwd: ROOT });
  return { status: r.status, output: `promtool ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}` };
}

const plainGroups = (): Group[] => readYaml('svid-ca-rules.yaml').groups;
const alerts = (): Rule[] => plainGroups().flatMap((g) => g.rules.filter((r) => r.alert !== undefined));

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/**
 * Metric names a PromQL expression reads. Not a parser: strips strings, label matchers, ranges and grouping
 * label lists, then keeps identifiers that are not function calls or keywords. Enough for our own queries;
 * their syntax is checked separately by promtool.
 */
function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+\S+/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const before = s[m.index - 1] ?? ' ';
    if (/[0-9.$]/.test(before)) continue; // exponent of a number (1e3) or a Grafana variable
    if (/^\s*\(/.test(s.slice(m.index + m[0].length))) continue; // function call
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

/** Metric names svid-ca exports: the `name: '...'` strings of metrics.ts plus what its registry really holds. */
async function knownMetricNames(): Promise<{ known: Set<string>; declared: string[] }> {
  const source = readFileSync(join(ROOT, 'src/observability/metrics.ts'), 'utf8');
  const declared = [...source.matchAll(/name: '([a-z_:][a-z0-9_:]*)'/g)].map((m) => m[1]!);
  const histograms = new Set([...source.matchAll(/new Histogram\(\{\s*name: '([^']+)'/g)].map((m) => m[1]!));
  const known = new Set<string>(PROMETHEUS_BUILTINS);
  const add = (name: string, histogram: boolean) => {
    known.add(name);
    if (histogram) for (const suffix of ['_bucket', '_sum', '_count']) known.add(name + suffix);
  };
  for (const name of declared) add(name, histograms.has(name));
  // Default process/Node.js metrics (svid_ca_process_*, svid_ca_nodejs_*) are only visible in a real registry.
  // prom-client types `type` as a numeric enum it never exports; at runtime it is the string 'histogram'.
  for (const m of await new CaMetrics().registry.getMetricsAsJSON()) add(m.name, String(m.type) === 'histogram');
  return { known, declared };
}

describe('Prometheus alerting rules (deploy/prometheus)', () => {
  it('promtool check rules accepts svid-ca-rules.yaml', () => {
    const r = promtool(['check', 'rules', RULES]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('promtool test rules passes rules.test.yaml', () => {
    const r = promtool(['test', 'rules', RULE_TESTS]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain('SUCCESS');
  });

  it('the promtool unit tests cover every alert with a firing and a non-firing case', () => {
    const cases = (readYaml('rules.test.yaml').tests as any[]).flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of alerts()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${alert}: no case where it fires`).toBe(true);
      expect(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${alert}: no case where it stays quiet`).toBe(true);
    }
  });

  it('has every alert the issue asks for', () => {
    const names = alerts().map((a) => a.alert);
    expect(names).toEqual(expect.arrayContaining(REQUIRED_ALERTS));
    expect(new Set(names).size, 'duplicate alert names').toBe(names.length);
  });

  it('gives every alert a severity, summary, description with the value, and a runbook in docs/', () => {
    expect(alerts().length).toBeGreaterThanOrEqual(REQUIRED_ALERTS.length);
    for (const a of alerts()) {
      const where = `alert ${a.alert}`;
      expect(['warning', 'critical'], `${where}: labels.severity`).toContain(a.labels?.severity);
      expect(a.annotations?.summary?.trim(), `${where}: annotations.summary`).toBeTruthy();
      const description = a.annotations?.description ?? '';
      expect(description.trim(), `${where}: annotations.description`).toBeTruthy();
      expect(runbookProblem(a.annotations?.runbook_url), `${where}: annotations.runbook_url`).toBeUndefined();
      // `up == 0` and absent() have no value worth printing; every other alert says how bad it is.
      if (!/^(absent\(|up\{[^}]*\} == 0$)/.test(a.expr)) expect(description, `${where}: description shows the value`).toMatch(/\$value|\.Value/);
      if (a.expr.includes('svid_ca_cert_expiry_timestamp_seconds')) {
        expect(description, `${where}: description names the certificate`).toMatch(/\$labels\.subject/);
        expect(description, `${where}: description names the serial`).toMatch(/\$labels\.serial/);
      }
    }
  });

  it('reads only metrics svid-ca exports (or Prometheus built-ins) in alert expressions', async () => {
    const { known } = await knownMetricNames();
    for (const a of alerts()) {
      const names = metricNames(a.expr);
      expect(names.length, `alert ${a.alert}: no metric found in ${a.expr}`).toBeGreaterThan(0);
      for (const n of names) expect(known.has(n), `alert ${a.alert} reads unknown metric ${n}`).toBe(true);
    }
  });

  it('docs/monitoring.md has a row for every alert, with its severity', () => {
    const manual = readFileSync(join(ROOT, 'docs/monitoring.md'), 'utf8');
    for (const a of alerts()) {
      const row = manual.split('\n').find((line) => line.startsWith(`| \`${a.alert}\` |`));
      expect(row, `docs/monitoring.md: no row for ${a.alert} in the alerts table`).toBeDefined();
      expect(row!.split('|')[2]!.trim(), `docs/monitoring.md: severity of ${a.alert}`).toBe(a.labels?.severity);
    }
  });

  it('prometheus-rule.yaml is a PrometheusRule with exactly the groups of svid-ca-rules.yaml', () => {
    const resource = readYaml('prometheus-rule.yaml');
    expect(resource.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(resource.kind).toBe('PrometheusRule');
    expect(resource.metadata.namespace).toBe('istio-system');
    expect(resource.metadata.labels['app.kubernetes.io/name']).toBe('svid-ca');
    expect(
      resource.spec.groups,
      'prometheus-rule.yaml is out of date: run `node deploy/prometheus/generate-prometheus-rule.mjs`',
    ).toStrictEqual(plainGroups());
  });
});

describe('ServiceMonitor (deploy/prometheus/service-monitor.yaml)', () => {
  it('scrapes the http-monitoring port of Service svid-ca in istio-system every 15s', () => {
    const sm = readYaml('service-monitor.yaml');
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(sm.kind).toBe('ServiceMonitor');
    expect(sm.metadata.namespace).toBe('istio-system');
    expect(sm.metadata.labels['app.kubernetes.io/name']).toBe('svid-ca');
    expect(sm.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'svid-ca' });
    expect(sm.spec.namespaceSelector.matchNames).toEqual(['istio-system']);
    expect(sm.spec.endpoints).toEqual([expect.objectContaining({ port: 'http-monitoring', path: '/metrics', interval: '15s' })]);
    // The alerts match job=~".*svid-ca.*"; jobLabel makes the job the value of this Service label.
    expect(sm.spec.jobLabel).toBe('app.kubernetes.io/name');
  });
});

describe('Grafana dashboard (deploy/prometheus/grafana-dashboard.json)', () => {
  const dashboard = JSON.parse(readFileSync(join(DIR, 'grafana-dashboard.json'), 'utf8'));
  const panels: any[] = dashboard.panels.flatMap((p: any) => [p, ...(p.panels ?? [])]).filter((p: any) => p.type !== 'row');
  const targets = panels.flatMap((p) => (p.targets ?? []).map((t: any) => ({ panel: p.title as string, expr: t.expr as string })));
  const scratch = mkdtempSync(join(tmpdir(), 'svid-ca-dashboard-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('uses a Prometheus datasource template variable in every panel and query', () => {
    const variable = dashboard.templating.list.find((v: any) => v.type === 'datasource');
    expect(variable, 'a templating variable of type datasource').toBeDefined();
    expect(variable.query).toBe('prometheus');
    const ref = `\${${variable.name}}`;
    for (const p of panels) {
      expect(p.datasource?.uid, `panel ${p.title}`).toBe(ref);
      for (const t of p.targets ?? []) expect(t.datasource?.uid, `panel ${p.title} query ${t.refId}`).toBe(ref);
    }
  });

  it('has the panels the issue asks for', () => {
    const exprs = targets.map((t) => t.expr).join('\n');
    expect(exprs).toMatch(/sum by \(outcome\) \(rate\(svid_ca_requests_total/);
    for (const q of ['0.5', '0.9', '0.99']) expect(exprs).toContain(`histogram_quantile(${q}, sum by (le) (rate(svid_ca_issue_duration_seconds_bucket`);
    expect(exprs).toContain('svid_ca_requests_in_flight');
    expect(exprs).toMatch(/svid_ca_cert_expiry_timestamp_seconds\{[^}]*\} - time\(\)\) \/ 86400/);
    expect(exprs).toContain('svid_ca_ttl_clamped_total');
    expect(exprs).toContain('svid_ca_bundle_reloads_total');
  });

  it('queries only metrics svid-ca exports (metrics.ts) or Prometheus built-ins', async () => {
    const { known, declared } = await knownMetricNames();
    // The source scan must find the metrics, and they must be what the registry really exports.
    expect(declared).toEqual(expect.arrayContaining(['svid_ca_requests_total', 'svid_ca_issue_duration_seconds', 'citadel_server_csr_count']));
    expect(targets.length).toBeGreaterThan(0);
    for (const { panel, expr } of targets) {
      const names = metricNames(expr);
      expect(names.length, `panel ${panel}: no metric found in ${expr}`).toBeGreaterThan(0);
      for (const n of names) expect(known.has(n), `panel ${panel} queries unknown metric ${n}: ${expr}`).toBe(true);
    }
  });

  it('has queries promtool accepts as PromQL (Grafana variables substituted)', () => {
    const grafana = (expr: string) => expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '1m').replace(/\$\{?\w+\}?/g, '.*');
    const rules = targets.map((t, i) => ({ record: `dashboard:query_${i}`, expr: grafana(t.expr) }));
    const file = join(scratch, 'dashboard-queries.yaml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = promtool(['check', 'rules', file]);
    expect(r.status, r.output).toBe(0);
  });
});
