/**
 * issue #18: deploy/multicluster/create-remote-kubeconfig.sh, run for real. Its remote RBAC is checked
 * against the upstream schemas (as test/deploy-schemas.test.ts checks deploy/) and against the calls
 * svid-ca makes; its printed Secret is schema-checked, and the kubeconfig inside it, mounted as a
 * --remote-kubeconfig-dir file, is used for a real TokenReview against a local fake API server.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { RemoteClusters } from '../src/kube/index.js';
import { createLogger } from '../src/observability/index.js';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { SecretVolume } from './helpers/k8s-volume.js';
import { unknownFields, validateAgainstSchemas, type K8sObject } from './helpers/k8s-schema.js';
import { tempDir } from './helpers/pki.js';
import { LogCapture } from './helpers/server.js';
import { tool } from './helpers/tools.js';

const SCRIPT = join(import.meta.dirname, '..', 'deploy', 'multicluster', 'create-remote-kubeconfig.sh');
// The script calls `kubectl`: $KUBECTL (test/helpers/tools.ts), when set, goes first on its PATH.
const kubectlDir = tool('kubectl').includes('/') ? `${dirname(tool('kubectl'))}:` : '';
const run = (args: string[]) => promisify(execFile)('bash', [SCRIPT, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: `${kubectlDir}${process.env.PATH}` } });
const objectsOf = (text: string, origin: string) =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null)
    .map((object) => ({ object, origin }));

describe('create-remote-kubeconfig.sh --print-rbac', () => {
  it('--help prints the usage on stdout, exit 0, and only the usage; an unknown argument is exit 2', async () => {
    const help = await run(['--help']);
    expect(help.stdout).toContain('--cluster-id CLUSTER_ID');
    expect(help.stdout).toContain('--print-rbac');
    expect(help.stdout).toContain('--kubeconfig FILE');
    expect(help.stdout).not.toContain('set -euo');
    expect(help.stdout.trimEnd().split('\n').at(-1)).toMatch(/nothing secret is printed there\.$/);
    const bad = await run(['--bogus']).then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(bad?.code).toBe(2);
    expect(bad?.stderr).toContain('unknown argument --bogus');
    const missing = await run(['--cluster-id']).then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(missing?.code).toBe(2);
    expect(missing?.stderr).toContain('create-remote-kubeconfig.sh: --cluster-id needs a value');
  }, 60_000);

  it('prints schema-valid remote RBAC: tokenreviews create and pods list/watch, nothing else', async () => {
    const objects = objectsOf((await run(['--print-rbac'])).stdout, 'create-remote-kubeconfig.sh --print-rbac');
    expect(objects.map((o) => o.object.kind)).toEqual(['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Secret']);
    expect(await validateAgainstSchemas(objects)).toEqual([]);
    expect(unknownFields(objects)).toEqual([]);
    const role = objects.find((o) => o.object.kind === 'ClusterRole')!.object;
    expect(role.rules).toEqual([
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
    ]);
    const token = objects.find((o) => o.object.kind === 'Secret')!.object;
    expect(token.type).toBe('kubernetes.io/service-account-token');
    expect(token.metadata.annotations['kubernetes.io/service-account.name']).toBe('svid-ca-remote-reader');
  }, 60_000);

  it('--no-pods leaves out the pod grant; --namespace moves every namespaced object', async () => {
    const objects = objectsOf((await run(['--print-rbac', '--no-pods', '--namespace', 'mesh-system'])).stdout, 'print-rbac --no-pods');
    expect(await validateAgainstSchemas(objects)).toEqual([]);
    expect(objects.find((o) => o.object.kind === 'ClusterRole')!.object.rules).toEqual([{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }]);
    expect(objects.filter((o) => o.object.metadata.namespace).map((o) => o.object.metadata.namespace)).toEqual(['mesh-system', 'mesh-system']);
    expect(objects.find((o) => o.object.kind === 'ClusterRoleBinding')!.object.subjects[0].namespace).toBe('mesh-system');
  }, 60_000);
});

describe('create-remote-kubeconfig.sh against a fake remote API server', () => {
  let remote: FakeKubeApi;
  let clusters: RemoteClusters | undefined;
  beforeAll(async () => {
    remote = await FakeKubeApi.start();
  });
  afterAll(async () => {
    await clusters?.close();
    await remote?.close();
  });

  it('prints a Secret whose kubeconfig, as a --remote-kubeconfig-dir file, reviews tokens as svid-ca-remote-reader', async () => {
    // What the token controller would have filled in: a token the API server knows and its CA.
    const readerKubeconfig = parse(readFileSync(remote.kubeconfigFor('svid-ca-remote-reader'), 'utf8')) as K8sObject;
    const token = readerKubeconfig.users[0].user.token as string;
    const ca = readerKubeconfig.clusters[0].cluster['certificate-authority-data'] as string;
    remote.put('secrets', {
      metadata: { name: 'svid-ca-remote-reader-token', namespace: 'istio-system', annotations: { 'kubernetes.io/service-account.name': 'svid-ca-remote-reader' } },
      type: 'kubernetes.io/service-account-token',
      data: { token: Buffer.from(token).toString('base64'), 'ca.crt': ca, namespace: Buffer.from('istio-system').toString('base64') },
    });
    remote.addServiceAccountToken('web-b', { namespace: 'demo', serviceAccount: 'web' });
    // The fake's certificate names localhost: --server gives the address the primary reaches it at.
    const server = remote.url.replace('127.0.0.1', 'localhost');
    const out = await run(['--kubeconfig', remote.kubeconfigPath, '--cluster-id', 'cluster-b', '--skip-rbac', '--server', server]);
    expect(out.stderr).not.toContain(token);
    const objects = objectsOf(out.stdout, 'create-remote-kubeconfig.sh output');
    expect(objects).toHaveLength(1);
    expect(await validateAgainstSchemas(objects)).toEqual([]);
    const secret = objects[0]!.object;
    expect(secret.metadata).toMatchObject({ name: 'svid-ca-remote-cluster-b', namespace: 'istio-system' });
    expect(Object.keys(secret.stringData)).toEqual(['cluster-b.yaml']);

    const volume = new SecretVolume(join(tempDir('svid-ca-remote-dir-'), 'remote-clusters'));
    volume.write(secret.stringData);
    const logs = new LogCapture();
    clusters = new RemoteClusters({ dir: volume.dir, watchPods: false, pollIntervalMs: 1000, logger: createLogger('info', logs) });
    await waitFor('cluster-b to load', () => clusters!.get('cluster-b') !== undefined);
    expect(clusters.get('cluster-b')!.server).toBe(server);
    const status = await clusters.get('cluster-b')!.tokenReviewer.review('web-b', ['istio-ca']);
    expect(status.authenticated).toBe(true);
    expect(status.user?.username).toBe('system:serviceaccount:demo:web');
    const review = remote.requests.filter((r) => r.resource === 'tokenreviews').at(-1)!;
    expect(review.user).toBe('svid-ca-remote-reader');
  }, 60_000);

  it('refuses a cluster ID that cannot be a file name, and says what is missing', async () => {
    await expect(run(['--kubeconfig', remote.kubeconfigPath, '--cluster-id', '../x', '--skip-rbac'])).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('cannot be a file name') });
    await expect(run(['--kubeconfig', remote.kubeconfigPath, '--skip-rbac'])).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('--cluster-id is required') });
  }, 60_000);
});
