/**
 * Every object under deploy/ against its upstream schema, offline: each folder with a kustomization.yaml is
 * rendered with the real `kubectl kustomize`, every other YAML document that is a Kubernetes object is read as
 * it is, and each object is validated with the kubernetes-models packages (core kinds, Istio, Prometheus
 * Operator) for types, enums and required fields, and with their TypeScript interfaces for unknown field names.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { unknownFields, validateAgainstSchemas, type K8sObject, type Located } from './helpers/k8s-schema.js';

const ROOT = join(import.meta.dirname, '..');
const DEPLOY = join(ROOT, 'deploy');
const KUBECTL = process.env.KUBECTL ?? '/usr/bin/kubectl';

function folders(dir: string): string[] {
  return [dir, ...readdirSync(dir).map((n) => join(dir, n)).filter((p) => statSync(p).isDirectory()).flatMap(folders)];
}

function docs(text: string, origin: string): K8sObject[] {
  return parseAllDocuments(text).flatMap((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${origin}: document ${i}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const v = doc.toJS() as K8sObject | null;
    return v === null ? [] : [v];
  });
}

const isObject = (o: K8sObject) => typeof o === 'object' && typeof o.apiVersion === 'string' && typeof o.kind === 'string' && o.kind !== 'Kustomization';

let objects: Located[] = [];
let kustomizeFolders: string[] = [];

beforeAll(() => {
  if (!existsSync(KUBECTL)) throw new Error(`kubectl not found at ${KUBECTL}: install kubectl or set KUBECTL=/path/to/kubectl`);
  kustomizeFolders = folders(DEPLOY).filter((d) => existsSync(join(d, 'kustomization.yaml')));
  for (const dir of kustomizeFolders) {
    const origin = `kubectl kustomize ${relative(ROOT, dir)}`;
    const out = execFileSync(KUBECTL, ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    objects.push(...docs(out, origin).map((object) => ({ object, origin })));
  }
  for (const dir of folders(DEPLOY)) {
    for (const name of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n) && n !== 'kustomization.yaml')) {
      const file = join(dir, name);
      const found = docs(readFileSync(file, 'utf8'), relative(ROOT, file)).filter(isObject);
      objects.push(...found.map((object) => ({ object, origin: relative(ROOT, file) })));
    }
  }
  objects = objects.filter((o) => isObject(o.object));
}, 60_000);

const find = (kind: string) => {
  const o = objects.find((x) => x.object.kind === kind);
  if (!o) throw new Error(`no ${kind} under deploy/`);
  return o;
};

describe('deploy/ against the upstream schemas', () => {
  it('renders every kustomize folder, including deploy/kubernetes and deploy/prometheus', () => {
    expect(kustomizeFolders.map((d) => relative(ROOT, d)).sort()).toEqual(expect.arrayContaining(['deploy/kubernetes', 'deploy/prometheus']));
    const kinds = new Set(objects.map((o) => o.object.kind));
    for (const k of ['Deployment', 'Service', 'ServiceAccount', 'ClusterRole', 'Role', 'PodDisruptionBudget', 'HorizontalPodAutoscaler', 'NetworkPolicy', 'PeerAuthentication', 'IstioOperator', 'ServiceMonitor', 'PrometheusRule']) {
      expect(kinds, `a ${k} is checked`).toContain(k);
    }
  });

  it('every object passes its model: types, enums and required fields', async () => {
    expect(await validateAgainstSchemas(objects)).toEqual([]);
  });

  it('no object carries a field name its schema does not know', () => {
    expect(unknownFields(objects)).toEqual([]);
  }, 60_000);

  it('a misspelt field name or a wrong type fails the checks (the checks can fail)', async () => {
    const dep = find('Deployment');
    const typo = structuredClone(dep.object);
    const podSpec = typo.spec.template.spec as K8sObject;
    expect(podSpec.terminationGracePeriodSeconds).toBeDefined();
    podSpec.terminationGracePeriodSecond = podSpec.terminationGracePeriodSeconds;
    delete podSpec.terminationGracePeriodSeconds;
    const wrongType = structuredClone(dep.object);
    wrongType.spec.template.spec.containers[0].resources.requests.cpu = { cores: 1 };
    const pa = structuredClone(find('PeerAuthentication').object);
    pa.spec.mtl = pa.spec.mtls;
    delete pa.spec.mtls;
    const sm = structuredClone(find('ServiceMonitor').object);
    sm.spec.endpoints[0].intervall = sm.spec.endpoints[0].interval;
    delete sm.spec.endpoints[0].interval;

    const fields = unknownFields([{ object: typo, origin: 'mutated' }, { object: pa, origin: 'mutated' }, { object: sm, origin: 'mutated' }]);
    expect(fields).toHaveLength(3);
    expect(fields[0]).toContain('terminationGracePeriodSecond');
    expect(fields[1]).toContain('mtl');
    expect(fields[2]).toContain('intervall');
    const types = await validateAgainstSchemas([{ object: wrongType, origin: 'mutated' }]);
    expect(types).toHaveLength(1);
    expect(types[0]).toMatch(/cpu/);
    // The unmutated objects pass both checks.
    expect(unknownFields([dep])).toEqual([]);
  }, 60_000);

  it('an object of a kind no package models is reported, not skipped', async () => {
    const problems = await validateAgainstSchemas([{ object: { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }, origin: 'made up' }]);
    expect(problems).toEqual([expect.stringContaining('no model for example.com/v1 Widget')]);
  });
});
