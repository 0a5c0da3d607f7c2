// Writes prometheus-rule.yaml (a Prometheus Operator PrometheusRule) from svid-ca-rules.yaml, so the two
// never drift: the groups are copied, not re-typed. Run after editing svid-ca-rules.yaml:
//   node deploy/prometheus/generate-prometheus-rule.mjs
// test/prometheus-rules.test.ts fails when the two files disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const plain = parse(readFileSync(join(here, 'svid-ca-rules.yaml'), 'utf8'));

const resource = {
  apiVersion: 'monitoring.coreos.com/v1',
  kind: 'PrometheusRule',
  metadata: {
    name: 'svid-ca',
    namespace: 'istio-system',
    labels: { 'app.kubernetes.io/name': 'svid-ca' },
  },
  spec: { groups: plain.groups },
};

const header = [
  '# GENERATED from svid-ca-rules.yaml by generate-prometheus-rule.mjs: edit that file, then rerun',
  '#   node deploy/prometheus/generate-prometheus-rule.mjs',
  "# Your Prometheus must select this rule: add the labels of its ruleSelector (kube-prometheus-stack: release: <name>).",
  '',
].join('\n');

// lineWidth 0: keep long PromQL and descriptions on one line instead of folding them.
writeFileSync(join(here, 'prometheus-rule.yaml'), header + stringify(resource, { lineWidth: 0 }));
