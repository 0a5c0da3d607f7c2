/**
 * Issue #16 publication through the real command, as an operator runs it: `svid-ca serve` with
 * --publish-crl-configmap and --publish-cluster-trust-bundle (and --workers 2, so the CRL travels
 * from the primary's reload to the workers) against the local fake Kubernetes API server. The CRL
 * ConfigMaps and the ClusterTrustBundle appear, /metrics shows both gauges, removing ca-crl.pem by
 * a `..data` swap empties the ConfigMaps, and SIGTERM ends the process with 0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubeApi, waitFor } from './helpers/fake-kube-api.js';
import { SecretVolume, istioFiles } from './helpers/k8s-volume.js';
import { opensslCrl } from './helpers/openssl-crl.js';
import { makeIntermediate, makeRoot, removeDir, tempDir } from './helpers/pki.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';
import { createTestIssuer, fetchText } from './helpers/server.js';

const NAMESPACES = ['default', 'istio-system', 'demo'];
const dirs: string[] = [];
let fake: FakeKubeApi;
let proc: CliProcess | undefined;

beforeAll(async () => {
  fake = await FakeKubeApi.start();
  for (const ns of NAMESPACES) fake.addNamespace(ns);
});

afterAll(async () => {
  if (proc && proc.child.exitCode === null) proc.child.kill('SIGKILL');
  await fake?.close();
  for (const d of dirs) removeDir(d);
});

describe('svid-ca serve --publish-crl-configmap --publish-cluster-trust-bundle (a real process, two workers)', () => {
  it('publishes the CRL and the ClusterTrustBundle, reports both gauges, empties the CRL ConfigMaps when ca-crl.pem is removed', async () => {
    const root = makeRoot({ cn: 'process test root' });
    const signer = makeIntermediate(root, { cn: 'process test intermediate' });
    const work = tempDir('svid-ca-crl-');
    const cacerts = tempDir('svid-ca-cacerts-');
    dirs.push(work, cacerts);
    const signerWork = tempDir('svid-ca-crl-signer-');
    dirs.push(signerWork);
    // A CRL at every level (issue #16): the root's, then the signer's own.
    const crl = opensslCrl(work, root, [makeIntermediate(root, { cn: 'revoked intermediate' })]) + opensslCrl(signerWork, signer);
    const volume = new SecretVolume(cacerts);
    volume.write({ ...istioFiles(signer, [root]), 'ca-crl.pem': crl });
    const issuer = await createTestIssuer();
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    proc = startCli([
      'serve',
      '--cacerts', cacerts,
      '--jwt-issuer', issuer.issuer,
      '--jwks-file', issuer.jwksFile,
      '--listen', `127.0.0.1:${grpcPort}`,
      '--monitoring-listen', `127.0.0.1:${monPort}`,
      '--serving-dns', 'localhost',
      '--workers', '2',
      '--reload-interval', '1s',
      '--kubeconfig', fake.kubeconfigPath,
      '--leader-election-namespace', 'istio-system',
      '--publish-crl-configmap',
      '--publish-cluster-trust-bundle',
    ]);
    await waitForStatus(`http://127.0.0.1:${monPort}/readyz`, 200, 60_000);

    const crlOf = (ns: string) => fake.get('configmaps', ns, 'istio-ca-crl')?.data?.['ca-crl.pem'];
    await waitFor('the CRL ConfigMaps', () => NAMESPACES.every((ns) => crlOf(ns) === crl), 60_000);
    await waitFor('the ClusterTrustBundle', () => fake.get('clustertrustbundles', undefined, 'istio.io:istiod-ca:root-cert')?.spec?.trustBundle === root.certPem, 60_000);
    const metric = async (line: string) => (await fetchText(`http://127.0.0.1:${monPort}/metrics`)).body.split('\n').includes(line);
    await waitFor('svid_ca_crl_configmaps on /metrics', () => metric(`svid_ca_crl_configmaps{state="current"} ${NAMESPACES.length}`), 30_000);
    await waitFor('svid_ca_cluster_trust_bundle on /metrics', () => metric('svid_ca_cluster_trust_bundle{state="current"} 1'), 30_000);

    volume.write(istioFiles(signer, [root]));
    await waitFor('every CRL ConfigMap to be emptied', () => NAMESPACES.every((ns) => crlOf(ns) === ''), 60_000);
    expect(fake.requests.filter((r) => r.resource === 'configmaps' && r.method === 'DELETE')).toEqual([]);

    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  }, 240_000);
});
