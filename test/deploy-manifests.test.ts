/**
 * The Kubernetes and Istio manifests in deploy/ against the code: the kustomize output is rendered with the real
 * `kubectl kustomize`, parsed with `yaml`, and checked against SERVE_FLAGS, the monitoring server's real paths,
 * the Dockerfile's user, and the RBAC verbs the Kubernetes code uses.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { SERVE_FLAGS, parseServeConfig } from '../src/config.js';
import { parseDuration } from '../src/duration.js';
import { startMonitoringServer } from '../src/observability/index.js';
import { runTool, tool } from './helpers/tools.js';

const ROOT = join(import.meta.dirname, '..');
const KUSTOMIZE_DIR = join(ROOT, 'deploy', 'kubernetes');
const ISTIO_DIR = join(ROOT, 'deploy', 'istio');
const MTLS_DIR = join(ISTIO_DIR, 'mtls');

// Kubernetes objects are free-form JSON here; each test checks the shape it relies on.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type K8sObject = Record<string, any>;

/** `kubectl kustomize deploy/kubernetes` with kubectl from PATH or $KUBECTL (test/helpers/tools.ts); never skipped. */
function render(): K8sObject[] {
  const r = runTool('kubectl', ['kustomize', KUSTOMIZE_DIR]);
  if (r.status !== 0) throw new Error(`${tool('kubectl')} kustomize deploy/kubernetes exited ${r.status}: ${r.stderr || r.stdout}`);
  return parseYamlStream(r.stdout, 'kubectl kustomize deploy/kubernetes');
}

function parseYamlStream(text: string, origin: string): K8sObject[] {
  return parseAllDocuments(text).flatMap((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${origin}: document ${i}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS() as K8sObject | null;
    return value === null ? [] : [value];
  });
}

const readYaml = (path: string): K8sObject => parse(readFileSync(path, 'utf8')) as K8sObject;

function only(objects: K8sObject[], kind: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind);
  expect(found, `exactly one ${kind} in the kustomize output`).toHaveLength(1);
  return found[0]!;
}

const flagNames = new Set(SERVE_FLAGS.map((f) => f.name));
const flagDefault = (name: string) => SERVE_FLAGS.find((f) => f.name === name)?.default;

/** `--name=value` / `--name value` / `--name` into [name, value | undefined]. */
function parseArgFlags(args: string[]): Map<string, string | undefined> {
  const flags = new Map<string, string | undefined>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq >= 0) flags.set(a.slice(2, eq), a.slice(eq + 1));
    else {
      const spec = SERVE_FLAGS.find((f) => f.name === a.slice(2));
      const next = args[i + 1];
      if (spec && spec.kind !== 'boolean' && next !== undefined && !next.startsWith('--')) {
        flags.set(a.slice(2), next);
        i++;
      } else flags.set(a.slice(2), undefined);
    }
  }
  return flags;
}

const portOf = (hostport: string) => Number(hostport.slice(hostport.lastIndexOf(':') + 1));

function httpGetStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('deploy/kubernetes rendered with kubectl kustomize', () => {
  let objects: K8sObject[];
  let deployment: K8sObject;
  let podSpec: K8sObject;
  let container: K8sObject;
  let args: string[];
  let flags: Map<string, string | undefined>;

  beforeAll(() => {
    objects = render();
    deployment = only(objects, 'Deployment');
    podSpec = deployment.spec.template.spec;
    const containers = podSpec.containers as K8sObject[];
    expect(containers).toHaveLength(1);
    container = containers[0]!;
    args = container.args as string[];
    flags = parseArgFlags(args);
  });

  it('has no two objects with the same kind, namespace and name', () => {
    const keys = objects.map((o) => `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`);
    const dupes = keys.filter((k, i) => keys.indexOf(k) !== i);
    expect(dupes).toEqual([]);
    for (const o of objects) {
      expect(o.apiVersion, JSON.stringify(o).slice(0, 100)).toBeTruthy();
      expect(o.metadata?.name, `${o.kind} without a name`).toBeTruthy();
    }
  });

  it('holds every object the install needs, namespaced ones in istio-system', () => {
    const kinds = objects.map((o) => `${o.apiVersion} ${o.kind}`).sort();
    expect(kinds).toEqual(
      [
        'apps/v1 Deployment',
        'autoscaling/v2 HorizontalPodAutoscaler',
        'networking.k8s.io/v1 NetworkPolicy',
        'policy/v1 PodDisruptionBudget',
        'rbac.authorization.k8s.io/v1 ClusterRole',
        'rbac.authorization.k8s.io/v1 ClusterRoleBinding',
        'rbac.authorization.k8s.io/v1 Role',
        'rbac.authorization.k8s.io/v1 RoleBinding',
        'v1 Service',
        'v1 ServiceAccount',
      ].sort(),
    );
    for (const o of objects.filter((x) => !x.kind.startsWith('Cluster'))) {
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('istio-system');
    }
  });

  it('runs 2 replicas spread by pod anti-affinity, under the svid-ca service account', () => {
    expect(deployment.spec.replicas).toBe(2);
    const anti = podSpec.affinity?.podAntiAffinity;
    const terms = [
      ...(anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
      ...(anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((p: K8sObject) => p.podAffinityTerm),
    ] as K8sObject[];
    expect(terms.length).toBeGreaterThan(0);
    for (const t of terms) {
      expect(t.topologyKey).toBe('kubernetes.io/hostname');
      expect(t.labelSelector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
    }
    const sa = only(objects, 'ServiceAccount');
    expect(podSpec.serviceAccountName).toBe(sa.metadata.name);
    expect(podSpec.automountServiceAccountToken).not.toBe(false);
    // TokenReview uses the pod's own token: no projected service-account token volume.
    const projected = (podSpec.volumes ?? []).filter((v: K8sObject) => v.projected?.sources?.some((s: K8sObject) => s.serviceAccountToken));
    expect(projected).toEqual([]);
    expect(deployment.spec.selector.matchLabels).toEqual(expect.objectContaining({ app: 'svid-ca' }));
    expect(deployment.spec.template.metadata.labels).toEqual(expect.objectContaining(deployment.spec.selector.matchLabels));
  });

  it('passes only flags that exist in SERVE_FLAGS of src/config.ts', () => {
    expect(args[0]).toBe('serve');
    const unknown = [...flags.keys()].filter((n) => !flagNames.has(n));
    expect(unknown, `flags in deploy/kubernetes/deployment.yaml that src/config.ts does not define`).toEqual([]);
    for (const [name, value] of flags) {
      const spec = SERVE_FLAGS.find((f) => f.name === name)!;
      if (spec.kind === 'boolean') expect(value, `--${name} is a boolean flag: give it without a value`).toBeUndefined();
      else expect(value, `--${name} needs a value`).toBeDefined();
    }
  });

  it('turns on the Kubernetes integration the issue asks for', () => {
    expect(flags.has('token-review')).toBe(true);
    expect(flags.has('publish-root-configmap')).toBe(true);
    expect(flags.has('publish-crl-configmap')).toBe(true);
    expect(flags.get('trusted-node-accounts')).toBe('istio-system/ztunnel');
    expect(flags.get('istiod-cert-secret')).toBe('istio-system/istiod-tls');
    expect(flags.get('serving-dns')?.split(',')).toEqual(['svid-ca.istio-system.svc', 'svid-ca.istio-system.svc.cluster.local']);
  });

  it('has args that the real serve flag parser accepts, after Kubernetes expands $(VAR)', () => {
    const env = new Map<string, string>();
    for (const e of container.env ?? []) {
      if (e.value !== undefined) env.set(e.name, e.value);
      else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace') env.set(e.name, deployment.metadata.namespace);
      else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name') env.set(e.name, `${deployment.metadata.name}-0`);
    }
    const expanded = args.slice(1).map((a) =>
      a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => {
        expect(env.has(name), `${a} refers to $(${name}), which the container env does not define`).toBe(true);
        return env.get(name) ?? m;
      }),
    );
    const cfg = parseServeConfig(expanded, {});
    expect(cfg.cacerts).toBe('/etc/cacerts');
    if (flags.has('leader-election-namespace')) expect(expanded).toContain('--leader-election-namespace=istio-system');
  });

  it('exposes 15012 as grpc-ca and 15014 as http-monitoring, matching what the server listens on', () => {
    const grpcPort = portOf(flags.get('listen') ?? flagDefault('listen')!);
    const monitoringPort = portOf(flags.get('monitoring-listen') ?? flagDefault('monitoring-listen')!);
    expect([grpcPort, monitoringPort]).toEqual([15012, 15014]);
    const ports = (container.ports as K8sObject[]).map((p) => [p.name, p.containerPort, p.protocol ?? 'TCP']);
    expect(ports).toEqual([
      ['grpc-ca', grpcPort, 'TCP'],
      ['http-monitoring', monitoringPort, 'TCP'],
    ]);
    const svc = only(objects, 'Service');
    expect(svc.metadata.name).toBe('svid-ca');
    const resolve = (target: string | number) => (typeof target === 'number' ? target : (container.ports as K8sObject[]).find((p) => p.name === target)?.containerPort);
    expect((svc.spec.ports as K8sObject[]).map((p) => [p.name, p.port, resolve(p.targetPort ?? p.port)])).toEqual([
      ['grpc-ca', 15012, grpcPort],
      ['http-monitoring', 15014, monitoringPort],
    ]);
    expect(deployment.spec.template.metadata.labels).toEqual(expect.objectContaining(svc.spec.selector));
  });

  it('probes /readyz (readiness) and /healthz (liveness, startup) on the monitoring port', () => {
    const monitoringPort = portOf(flags.get('monitoring-listen') ?? flagDefault('monitoring-listen')!);
    const probePort = (p: K8sObject) => {
      const port = p.httpGet.port as string | number;
      return typeof port === 'number' ? port : (container.ports as K8sObject[]).find((c) => c.name === port)?.containerPort;
    };
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    expect(container.livenessProbe.httpGet.path).toBe('/healthz');
    expect(container.startupProbe.httpGet.path).toBe('/healthz');
    for (const p of [container.readinessProbe, container.livenessProbe, container.startupProbe]) {
      expect(probePort(p)).toBe(monitoringPort);
      expect(p.httpGet.scheme ?? 'HTTP').toBe('HTTP');
    }
  });

  it('probe paths answer 200 on the real monitoring server', async () => {
    const monitoring = await startMonitoringServer({ host: '127.0.0.1', port: 0, registry: new Registry(), isReady: () => true });
    try {
      for (const probe of [container.readinessProbe, container.livenessProbe, container.startupProbe]) {
        expect(await httpGetStatus(monitoring.port, probe.httpGet.path)).toBe(200);
      }
    } finally {
      await new Promise<void>((resolve) => monitoring.server.close(() => resolve()));
    }
  });

  it('locks every container down: non-root numeric user, read-only root, no capabilities, RuntimeDefault seccomp', () => {
    const dockerUser = /^USER\s+(\d+)/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split(/^FROM\s/m).at(-1)!)?.[1];
    expect(dockerUser, 'the Dockerfile runtime stage sets a numeric USER').toBeDefined();
    const pod = podSpec.securityContext ?? {};
    const all = [...(podSpec.initContainers ?? []), ...podSpec.containers] as K8sObject[];
    for (const c of all) {
      const sc = c.securityContext ?? {};
      const at = `container ${c.name}`;
      expect(sc.runAsNonRoot ?? pod.runAsNonRoot, at).toBe(true);
      const uid = sc.runAsUser ?? pod.runAsUser;
      expect(typeof uid, at).toBe('number');
      expect(uid, at).toBeGreaterThan(0);
      expect(uid, `${at} runs as the Dockerfile's USER`).toBe(Number(dockerUser));
      expect(sc.readOnlyRootFilesystem, at).toBe(true);
      expect(sc.allowPrivilegeEscalation, at).toBe(false);
      expect(sc.privileged ?? false, at).toBe(false);
      expect(sc.capabilities?.drop, at).toEqual(['ALL']);
      expect(sc.capabilities?.add ?? [], at).toEqual([]);
      expect((sc.seccompProfile ?? pod.seccompProfile)?.type, at).toBe('RuntimeDefault');
      expect(c.resources?.requests?.cpu, at).toBeDefined();
      expect(c.resources?.requests?.memory, at).toBeDefined();
      expect(c.resources?.limits?.cpu, at).toBeDefined();
      expect(c.resources?.limits?.memory, at).toBeDefined();
    }
    expect((container.env as K8sObject[]).find((e) => e.name === 'NODE_ENV')?.value).toBe('production');
  });

  it('mounts the cacerts Secret read-only at /etc/cacerts, where --cacerts points', () => {
    const cacertsDir = flags.get('cacerts') ?? flagDefault('cacerts');
    expect(cacertsDir).toBe('/etc/cacerts');
    const mount = (container.volumeMounts as K8sObject[]).find((m) => m.mountPath === cacertsDir);
    expect(mount, 'a volumeMount at /etc/cacerts').toBeDefined();
    expect(mount!.readOnly).toBe(true);
    const volume = (podSpec.volumes as K8sObject[]).find((v) => v.name === mount!.name);
    expect(volume?.secret?.secretName).toBe('cacerts');
  });

  it('grants exactly the API verbs the Kubernetes code uses, with no wildcard', () => {
    const lines: string[] = [];
    for (const role of objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')) {
      for (const rule of role.rules as K8sObject[]) {
        for (const field of ['apiGroups', 'resources', 'verbs', 'resourceNames', 'nonResourceURLs']) {
          expect(rule[field] ?? [], `${role.kind} ${field}`).not.toContain('*');
        }
        expect(rule.nonResourceURLs, 'no nonResourceURLs').toBeUndefined();
        for (const group of rule.apiGroups as string[]) {
          for (const resource of rule.resources as string[]) {
            for (const verb of rule.verbs as string[]) {
              lines.push(`${role.kind} ${group || 'core'}/${resource}${rule.resourceNames ? `[${[...rule.resourceNames].sort().join(',')}]` : ''} ${verb}`);
            }
          }
        }
      }
    }
    expect(lines.sort()).toEqual(
      [
        'ClusterRole authentication.k8s.io/tokenreviews create',
        'ClusterRole core/pods list',
        'ClusterRole core/pods watch',
        'ClusterRole core/namespaces list',
        'ClusterRole core/namespaces watch',
        // Only istio-ca-root-cert and istio-ca-crl (issue #16) (list/watch by fieldSelector metadata.name); `create` cannot carry resourceNames.
        'ClusterRole core/configmaps[istio-ca-crl,istio-ca-root-cert] list',
        'ClusterRole core/configmaps[istio-ca-crl,istio-ca-root-cert] watch',
        'ClusterRole core/configmaps[istio-ca-crl,istio-ca-root-cert] update',
        'ClusterRole core/configmaps create',
        // --publish-cluster-trust-bundle (issue #16): one ClusterTrustBundle, and `attest` for istiod's signer.
        'ClusterRole certificates.k8s.io/clustertrustbundles[istio.io:istiod-ca:root-cert] list',
        'ClusterRole certificates.k8s.io/clustertrustbundles[istio.io:istiod-ca:root-cert] watch',
        'ClusterRole certificates.k8s.io/clustertrustbundles[istio.io:istiod-ca:root-cert] update',
        'ClusterRole certificates.k8s.io/clustertrustbundles create',
        'ClusterRole certificates.k8s.io/signers[istio.io/istiod-ca] attest',
        'Role coordination.k8s.io/leases[svid-ca] get',
        'Role coordination.k8s.io/leases create',
        'Role coordination.k8s.io/leases[svid-ca] update',
        // Restricted to the one Secret svid-ca writes; `create` cannot carry resourceNames in Kubernetes RBAC.
        'Role core/secrets[istiod-tls] get',
        'Role core/secrets[istiod-tls] update',
        'Role core/secrets create',
      ].sort(),
    );
    // The restricted Secret is the one --istiod-cert-secret names, in the Role's namespace.
    const [secretNs, secretName] = flags.get('istiod-cert-secret')!.split('/');
    const role = only(objects, 'Role');
    expect(role.metadata.namespace).toBe(secretNs);
    expect((role.rules as K8sObject[]).find((r) => r.resourceNames && r.resources.includes('secrets'))?.resourceNames).toEqual([secretName]);
  });

  it('binds the roles to the svid-ca service account', () => {
    const sa = only(objects, 'ServiceAccount');
    for (const [bindingKind, roleKind] of [['ClusterRoleBinding', 'ClusterRole'], ['RoleBinding', 'Role']] as const) {
      const binding = only(objects, bindingKind);
      expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: roleKind, name: only(objects, roleKind).metadata.name });
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    }
  });

  it('keeps a replica through disruptions and autoscales on CPU', () => {
    const labels = deployment.spec.template.metadata.labels;
    const pdb = only(objects, 'PodDisruptionBudget');
    expect(labels).toEqual(expect.objectContaining(pdb.spec.selector.matchLabels));
    expect(pdb.spec.minAvailable).toBeGreaterThanOrEqual(1);
    expect(pdb.spec.minAvailable).toBeLessThan(deployment.spec.replicas);
    const hpa = only(objects, 'HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    expect(hpa.spec.metrics).toEqual([expect.objectContaining({ type: 'Resource', resource: expect.objectContaining({ name: 'cpu' }) })]);
    expect(hpa.spec.metrics[0].resource.target.type).toBe('Utilization');
  });

  it('lets every namespace reach 15012, only the monitoring namespace 15014, and reaches out only to the API server and DNS', () => {
    const np = only(objects, 'NetworkPolicy');
    expect(deployment.spec.template.metadata.labels).toEqual(expect.objectContaining(np.spec.podSelector.matchLabels));
    expect([...np.spec.policyTypes].sort()).toEqual(['Egress', 'Ingress']);
    const ingress = np.spec.ingress as K8sObject[];
    const byPort = (port: number) => ingress.filter((r) => r.ports.some((p: K8sObject) => p.port === port));
    expect(ingress.flatMap((r) => r.ports.map((p: K8sObject) => p.port)).sort()).toEqual([15012, 15014]);
    expect(byPort(15012).map((r) => r.from)).toEqual([[{ namespaceSelector: {} }]]);
    expect(byPort(15014).map((r) => r.from)).toEqual([[{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }]]);
    const egress = np.spec.egress as K8sObject[];
    const egressPorts = egress.flatMap((r) => r.ports.map((p: K8sObject) => `${p.port}/${p.protocol ?? 'TCP'}`)).sort();
    expect(egressPorts).toEqual(['443/TCP', '53/TCP', '53/UDP', '6443/TCP']);
    const dns = egress.find((r) => r.ports.some((p: K8sObject) => p.port === 53))!;
    expect(dns.to).toEqual([
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } },
    ]);
  });

  it('keeps svid-ca itself out of the mesh it serves', () => {
    const labels = deployment.spec.template.metadata.labels;
    expect(labels['sidecar.istio.io/inject']).toBe('false');
    expect(labels['istio.io/dataplane-mode']).toBe('none');
  });

  describe('deploy/istio', () => {
    let caAddress: string;
    beforeAll(() => {
      const svc = objects.find((o) => o.kind === 'Service')!;
      const grpc = (svc.spec.ports as K8sObject[]).find((p) => p.name === 'grpc-ca')!;
      caAddress = `${svc.metadata.name}.${svc.metadata.namespace}.svc:${grpc.port}`;
    });

    it("points sidecars, gateways and ztunnel at svid-ca's Service, a name its serving certificate carries", () => {
      expect(caAddress).toBe('svid-ca.istio-system.svc:15012');
      expect(flags.get('serving-dns')!.split(',')).toContain(caAddress.split(':')[0]);
      const iop = readYaml(join(ISTIO_DIR, 'istio-operator.yaml'));
      expect(iop.apiVersion).toBe('install.istio.io/v1alpha1');
      expect(iop.kind).toBe('IstioOperator');
      expect(iop.spec.values.global.caAddress).toBe(caAddress);
      expect(iop.spec.values.ztunnel.caAddress).toBe(caAddress);
      expect(readYaml(join(ISTIO_DIR, 'values-istiod.yaml')).global.caAddress).toBe(caAddress);
      expect(readYaml(join(ISTIO_DIR, 'values-ztunnel.yaml')).caAddress).toBe(caAddress);
    });

    it('turns off the CA in istiod with the string "false"', () => {
      // Kubernetes env values are strings; a YAML boolean false would be rejected by the chart's rendering.
      expect(readYaml(join(ISTIO_DIR, 'istio-operator.yaml')).spec.values.pilot.env.ENABLE_CA_SERVER).toBe('false');
      expect(readYaml(join(ISTIO_DIR, 'values-istiod.yaml')).pilot.env.ENABLE_CA_SERVER).toBe('false');
    });
  });
});

describe('deploy/istio/mtls PeerAuthentication steps', () => {
  const MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];
  const policies = readdirSync(MTLS_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => parseYamlStream(readFileSync(join(MTLS_DIR, f), 'utf8'), f).map((doc) => ({ file: f, doc })));

  it('are all security.istio.io/v1 PeerAuthentication with valid modes', () => {
    expect(policies.length).toBeGreaterThan(0);
    for (const { file, doc } of policies) {
      expect(doc.apiVersion, file).toBe('security.istio.io/v1');
      expect(doc.kind, file).toBe('PeerAuthentication');
      expect(doc.metadata?.name, file).toBeTruthy();
      expect(doc.metadata?.namespace, file).toBeTruthy();
      expect(MODES, file).toContain(doc.spec.mtls.mode);
      for (const [port, setting] of Object.entries((doc.spec.portLevelMtls ?? {}) as Record<string, K8sObject>)) {
        expect(Number.isInteger(Number(port)) && Number(port) > 0 && Number(port) <= 65535, `${file}: port ${port}`).toBe(true);
        expect(MODES, `${file}: port ${port}`).toContain(setting.mode);
      }
      // Istio ignores portLevelMtls without a workload selector.
      if (doc.spec.portLevelMtls) expect(doc.spec.selector?.matchLabels, `${file}: portLevelMtls needs a selector`).toBeDefined();
      // A mesh-wide or namespace-wide policy is named `default` and has no selector.
      if (!doc.spec.selector) expect(doc.metadata.name, file).toBe('default');
    }
  });

  it('cover each step from PERMISSIVE to STRICT: mesh, namespace, workload and port', () => {
    const mesh = policies.filter(({ doc }) => doc.metadata.namespace === 'istio-system' && !doc.spec.selector);
    expect(mesh.map(({ doc }) => doc.spec.mtls.mode).sort()).toEqual(['PERMISSIVE', 'STRICT']);
    expect(mesh.find(({ doc }) => doc.spec.mtls.mode === 'PERMISSIVE')!.file < mesh.find(({ doc }) => doc.spec.mtls.mode === 'STRICT')!.file).toBe(true);
    expect(policies.some(({ doc }) => doc.metadata.namespace !== 'istio-system' && !doc.spec.selector && doc.spec.mtls.mode === 'STRICT')).toBe(true);
    expect(policies.some(({ doc }) => doc.spec.selector && !doc.spec.portLevelMtls && doc.spec.mtls.mode === 'STRICT')).toBe(true);
    expect(policies.some(({ doc }) => doc.spec.selector && doc.spec.portLevelMtls)).toBe(true);
  });
});

describe('deploy/kubernetes: a CA on every pod start path', () => {
  let podSpec: K8sObject;
  let container: K8sObject;
  beforeAll(() => {
    podSpec = only(render(), 'Deployment').spec.template.spec;
    container = (podSpec.containers as K8sObject[])[0]!;
  });

  it('runs at system-cluster-critical priority', () => {
    expect(podSpec.priorityClassName).toBe('system-cluster-critical');
  });

  it('gives SIGTERM the shutdown delay plus the shutdown grace plus a margin before Kubernetes kills the pod', () => {
    const env = new Map((container.env as { name: string; value?: string }[]).map((e) => [e.name, e.value]));
    const flags = parseArgFlags(container.args as string[]);
    const delay = parseDuration(flags.get('shutdown-delay') ?? '');
    const grace = parseDuration(flags.get('shutdown-grace') ?? env.get('SVID_CA_SHUTDOWN_GRACE') ?? flagDefault('shutdown-grace')!);
    expect(delay, 'the Deployment sets a shutdown delay').toBe(5_000);
    expect(grace).toBeDefined();
    expect(podSpec.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(delay! + grace! + 5_000);
  });

  it('runs node with the heap flags of the image, which the benchmark and the soak also run with', async () => {
    const env = new Map((container.env as { name: string; value?: string }[]).map((e) => [e.name, e.value]));
    const runtime = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split(/^FROM\s/m).at(-1)!;
    const imageOptions = /^ENV\s+NODE_OPTIONS="([^"]*)"/m.exec(runtime)?.[1];
    expect(imageOptions, 'the Dockerfile runtime stage sets NODE_OPTIONS').toMatch(/--max-semi-space-size=\d+/);
    expect(env.get('NODE_OPTIONS')).toBe(imageOptions);
    const { productionNodeFlags } = (await import(join(ROOT, 'bench', 'node-flags.mjs'))) as { productionNodeFlags: () => string[] };
    expect(productionNodeFlags().join(' ')).toBe(imageOptions);
    // node itself accepts them in NODE_OPTIONS (it refuses to start on a flag it does not allow there).
    const out = execFileSync(process.execPath, ['-e', 'process.stdout.write(String(require("v8").getHeapStatistics().total_available_size > 0))'], {
      env: { ...process.env, NODE_OPTIONS: imageOptions },
      encoding: 'utf8',
    });
    expect(out).toBe('true');
  });

  it('holds memory at the storm peak with request = limit, and requests CPU for its share of a storm', () => {
    const { requests, limits } = container.resources as { requests: Record<string, string>; limits: Record<string, string> };
    const mib = (q: string) => (q.endsWith('Gi') ? Number(q.slice(0, -2)) * 1024 : Number(q.replace(/Mi$/, '')));
    expect(requests.memory).toBe(limits.memory);
    // npm run bench on Node 24, summed over the primary and two workers (shared pages once): the 10,000-pod
    // storm peaks at 534-552 MiB, the cpu-attack scenario at 712-774 MiB.
    expect(mib(limits.memory!)).toBeGreaterThan(774);
    const cores = (q: string) => (q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q));
    expect(cores(requests.cpu!)).toBeGreaterThanOrEqual(0.5);
    expect(cores(limits.cpu!)).toBeGreaterThanOrEqual(cores(requests.cpu!));
  });

  it('mounts the cacerts Secret as a required volume: without it the pod waits in ContainerCreating', () => {
    const vol = (podSpec.volumes as K8sObject[]).find((v) => v.name === 'cacerts')!;
    expect(vol.secret.secretName).toBe('cacerts');
    expect(vol.secret.optional ?? false).toBe(false);
  });
});
