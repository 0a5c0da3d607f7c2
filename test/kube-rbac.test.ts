/**
 * The RBAC in deploy/kubernetes must allow every API request svid-ca makes. The required
 * permissions are not written down here: they are derived from the requests a local fake
 * Kubernetes API server recorded during a full run of TokenReview, the pod index, the root and CRL
 * ConfigMap publishers, the ClusterTrustBundle (with the `attest` check the API server makes for
 * its signer), leader election and the istiod-tls Secret, then checked against the rules
 * of the rendered (`kubectl kustomize deploy/kubernetes`) Roles and ClusterRoles bound to
 * svid-ca's ServiceAccount, including resourceNames restrictions.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadCacerts } from '../src/ca/index.js';
import { FakeKubeApi, waitFor, type Permission } from './helpers/fake-kube-api.js';
import { makeCacerts, makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { createTestIssuer, startTestServer } from './helpers/server.js';

const KUSTOMIZE_DIR = 'deploy/kubernetes';
const NS = 'istio-system';

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Manifest = any;

let pki: ReturnType<typeof makeCacerts>;
let fake: FakeKubeApi;
let recorded: Permission[] = [];

beforeAll(async () => {
  pki = makeCacerts();
  fake = await FakeKubeApi.start();
  for (const ns of [NS, 'default', 'demo', 'kube-system']) fake.addNamespace(ns);
  fake.addPod({ namespace: NS, name: 'ztunnel-a', serviceAccount: 'ztunnel', nodeName: 'node-1' });
  fake.addServiceAccountToken('tok', { namespace: 'demo', serviceAccount: 'web' });
  const server = await startTestServer({
    cacerts: pki.dir,
    issuer: await createTestIssuer(),
    kubernetes: {
      kubeconfig: fake.kubeconfigPath,
      tokenReview: { audiences: ['istio-ca'], cacheTtlMs: 60_000, concurrency: 4 },
      trustedNodeAccounts: [`${NS}/ztunnel`],
      publishRootConfigMap: {},
      publishCrlConfigMap: {},
      publishClusterTrustBundle: {},
      leaderElectionNamespace: NS,
      istiodCert: { namespace: NS, name: 'istiod-tls', dnsNames: ['istiod.istio-system.svc'], ttlMs: 3_600_000 },
      leaseTiming: { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 150 },
    },
  });
  try {
    const kube = server.service.kube!;
    const cm = () => fake.get('configmaps', 'demo', 'istio-ca-root-cert');
    const crl = () => fake.get('configmaps', 'demo', 'istio-ca-crl');
    const ctb = () => fake.get('clustertrustbundles', undefined, 'istio.io:istiod-ca:root-cert');
    const roots = () => server.service.authority.bundle.rootsPem;
    expect((await kube.tokenReviewer!.review('tok', ['istio-ca'])).authenticated).toBe(true);
    await waitFor('pod index', () => kube.pods!.isSynced());
    await waitFor('root ConfigMaps and istiod-tls', () => cm()?.data?.['root-cert.pem'] === roots() && fake.get('secrets', NS, 'istiod-tls') !== undefined);
    await waitFor('CRL ConfigMaps and the ClusterTrustBundle', () => crl()?.data?.['ca-crl.pem'] === '' && ctb()?.spec?.trustBundle === roots());
    // Drift on both (updates).
    fake.put('configmaps', { ...crl(), data: { 'ca-crl.pem': 'edited' } });
    fake.put('clustertrustbundles', { ...ctb(), spec: { ...ctb().spec, trustBundle: 'edited' } });
    await waitFor('CRL and ClusterTrustBundle drift revert', () => crl()?.data?.['ca-crl.pem'] === '' && ctb()?.spec?.trustBundle === roots());
    // Drift revert (update), then a bundle change (update of every ConfigMap and of the Secret).
    fake.put('configmaps', { ...cm(), data: { 'root-cert.pem': 'edited' } });
    await waitFor('drift revert', () => cm()?.data?.['root-cert.pem'] === roots());
    const nextRoot = makeRoot();
    const nextDir = writeCacerts(tempDir(), { signer: makeIntermediate(nextRoot), roots: [pki.root, nextRoot] });
    server.service.authority.replaceBundle(loadCacerts(nextDir));
    removeDir(nextDir);
    const caCrt = () => Buffer.from(fake.get('secrets', NS, 'istiod-tls')?.data?.['ca.crt'] ?? '', 'base64').toString('utf8');
    await waitFor('bundle change published', () => cm()?.data?.['root-cert.pem'] === roots() && caCrt() === roots());
  } finally {
    await server.close();
  }
  recorded = fake.permissions();
}, 60_000);

afterAll(async () => {
  await fake?.close();
  removeDir(pki.dir);
});

function render(): Manifest[] {
  const out = execFileSync('kubectl', ['kustomize', KUSTOMIZE_DIR], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS()).filter(Boolean);
}

function covers(rule: Rule, p: Permission): boolean {
  const has = (list: string[] | undefined, v: string) => !!list && (list.includes(v) || list.includes('*'));
  if (!has(rule.apiGroups, p.group) || !has(rule.resources, p.resource) || !has(rule.verbs, p.verb)) return false;
  // A rule limited to names never allows list, watch or create (the request names no object).
  if (rule.resourceNames && rule.resourceNames.length > 0) return p.name !== undefined && rule.resourceNames.includes(p.name);
  return true;
}

const show = (p: Permission) => `${p.verb} ${p.group || 'core'}/${p.resource}${p.name ? `/${p.name}` : ''} in ${p.namespace ?? '(all namespaces)'}`;

describe('RBAC of deploy/kubernetes against the requests recorded by a local fake Kubernetes API server', () => {
  it('the full run exercised every kind of request svid-ca makes', () => {
    const kinds = new Set(recorded.map((p) => `${p.group}/${p.resource}:${p.verb}`));
    for (const k of [
      'authentication.k8s.io/tokenreviews:create',
      '/pods:list',
      '/pods:watch',
      '/namespaces:list',
      '/namespaces:watch',
      '/configmaps:list',
      '/configmaps:watch',
      '/configmaps:create',
      '/configmaps:update',
      'certificates.k8s.io/clustertrustbundles:list',
      'certificates.k8s.io/clustertrustbundles:watch',
      'certificates.k8s.io/clustertrustbundles:create',
      'certificates.k8s.io/clustertrustbundles:update',
      'certificates.k8s.io/signers:attest',
      'coordination.k8s.io/leases:get',
      'coordination.k8s.io/leases:create',
      'coordination.k8s.io/leases:update',
      '/secrets:get',
      '/secrets:create',
      '/secrets:update',
    ]) {
      expect(kinds, k).toContain(k);
    }
  });

  it('bound Roles and ClusterRoles allow every recorded request', () => {
    const docs = render();
    const sa = docs.find((d) => d.kind === 'ServiceAccount');
    expect(sa, 'a ServiceAccount in the bundle').toBeDefined();
    const boundTo = (b: Manifest) => (b.subjects ?? []).some((s: Manifest) => s.kind === 'ServiceAccount' && s.name === sa.metadata.name && s.namespace === sa.metadata.namespace);
    const roleRules = (kind: string, name: string, namespace?: string): Rule[] =>
      docs.filter((d) => d.kind === kind && d.metadata.name === name && (kind === 'ClusterRole' || d.metadata.namespace === namespace)).flatMap((d) => d.rules ?? []);
    // Cluster-wide: ClusterRoles bound by ClusterRoleBindings.
    const clusterRules = docs
      .filter((d) => d.kind === 'ClusterRoleBinding' && boundTo(d))
      .flatMap((b) => roleRules(b.roleRef.kind, b.roleRef.name));
    // Per namespace: Roles (or ClusterRoles) bound by RoleBindings there.
    const namespacedRules = (ns: string): Rule[] =>
      docs.filter((d) => d.kind === 'RoleBinding' && d.metadata.namespace === ns && boundTo(d)).flatMap((b) => roleRules(b.roleRef.kind, b.roleRef.name, ns));

    // Requests into namespaces svid-ca does not own (root ConfigMaps) must be allowed cluster-wide.
    const byPermission = new Map<string, Permission[]>();
    for (const p of recorded) {
      const k = `${p.group}|${p.resource}|${p.verb}|${p.name ?? ''}`;
      byPermission.set(k, [...(byPermission.get(k) ?? []), p]);
    }
    const missing: string[] = [];
    for (const ps of byPermission.values()) {
      const namespaces = new Set(ps.map((p) => p.namespace));
      const spansNamespaces = namespaces.size > 1 || namespaces.has(undefined) || ![...namespaces].every((n) => n === NS);
      for (const p of ps) {
        const ok = clusterRules.some((r) => covers(r, p)) || (!spansNamespaces && p.namespace !== undefined && namespacedRules(p.namespace).some((r) => covers(r, p)));
        if (!ok) missing.push(show(p));
      }
    }
    expect([...new Set(missing)]).toEqual([]);
  });

  it('every permission a bound Role or ClusterRole grants is used by a recorded request (nothing granted in case)', () => {
    const docs = render();
    const sa = docs.find((d) => d.kind === 'ServiceAccount');
    const boundTo = (b: Manifest) => (b.subjects ?? []).some((s: Manifest) => s.kind === 'ServiceAccount' && s.name === sa.metadata.name && s.namespace === sa.metadata.namespace);
    // Each bound rule with where it applies: everywhere (ClusterRoleBinding) or in the binding's namespace.
    const bound: { rule: Rule; namespace: string | undefined; from: string }[] = [];
    for (const b of docs.filter((d) => (d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding') && boundTo(d))) {
      const namespace = b.kind === 'RoleBinding' ? b.metadata.namespace : undefined;
      for (const role of docs.filter((d) => d.kind === b.roleRef.kind && d.metadata.name === b.roleRef.name && (d.kind === 'ClusterRole' || d.metadata.namespace === namespace))) {
        for (const rule of role.rules ?? []) bound.push({ rule, namespace, from: `${role.kind} ${role.metadata.name}` });
      }
    }
    expect(bound.length).toBeGreaterThan(0);
    const unused: string[] = [];
    for (const { rule, namespace, from } of bound) {
      for (const group of rule.apiGroups ?? []) {
        for (const resource of rule.resources ?? []) {
          for (const verb of rule.verbs ?? []) {
            for (const name of rule.resourceNames?.length ? rule.resourceNames : [undefined]) {
              const used = recorded.some(
                (p) => p.group === group && p.resource === resource && p.verb === verb && (name === undefined || p.name === name) && (namespace === undefined || p.namespace === namespace),
              );
              if (!used) unused.push(`${from}: ${verb} ${group || 'core'}/${resource}${name ? `/${name}` : ''}${namespace ? ` in ${namespace}` : ''}`);
            }
          }
        }
      }
    }
    expect(unused).toEqual([]);
    // A rule without resourceNames whose requests all name their object is wider than the code needs:
    // it must list those names (create excepted: Kubernetes cannot restrict it by name).
    const wider: string[] = [];
    for (const { rule, namespace, from } of bound) {
      if (rule.resourceNames?.length) continue;
      for (const verb of (rule.verbs ?? []).filter((v) => v !== 'create')) {
        const covered = recorded.filter(
          (p) => rule.apiGroups?.includes(p.group) && rule.resources?.includes(p.resource) && p.verb === verb && (namespace === undefined || p.namespace === namespace),
        );
        if (covered.length > 0 && covered.every((p) => p.name !== undefined)) {
          wider.push(`${from}: ${verb} ${rule.resources?.join(',')} could be limited to resourceNames ${[...new Set(covered.map((p) => p.name))].join(',')}`);
        }
      }
    }
    expect(wider).toEqual([]);
  });
});
