import type { Registry } from 'prom-client';
import type { TokenReviewer } from '../auth/index.js';
import type { Authority } from '../ca/index.js';
import type { Logger } from '../observability/index.js';
import { createKubeClients, holderIdentity, podNamespace } from './client.js';
import { IstiodCertManager } from './istiod-cert.js';
import { LeaderElector } from './leader-election.js';
import { needsKubernetes, type KubeOptions } from './options.js';
import { PodIndex } from './pod-index.js';
import { RootConfigMapPublisher } from './root-configmap-publisher.js';
import { RemoteClusters } from './remote-clusters.js';
import { CrlConfigMapPublisher } from './crl-configmap-publisher.js';
import { ClusterTrustBundlePublisher } from './cluster-trust-bundle-publisher.js';
import { encodePem } from '../pki/index.js';
import { KubeTokenReviewer } from './token-reviewer.js';

export const LEASE_NAME = 'svid-ca';

export interface KubernetesDeps {
  authority: Authority;
  /** The CaMetrics registry, for svid_ca_root_configmaps, svid_ca_crl_configmaps and svid_ca_cluster_trust_bundle. */
  registry: Registry;
  logger: Logger;
  /** issue #18: told of each load of a --remote-kubeconfig-dir file. */
  onRemoteReload?: ((result: 'success' | 'failure') => void) | undefined;
}

/** The running Kubernetes parts; each is present only when its flag asked for it. */
export interface KubernetesIntegration {
  tokenReviewer: TokenReviewer | undefined;
  pods: PodIndex | undefined;
  leader: LeaderElector | undefined;
  publisher: RootConfigMapPublisher | undefined;
  istiodCert: IstiodCertManager | undefined;
  /** issue #18: the clusters of --remote-kubeconfig-dir. */
  remotes: RemoteClusters | undefined;
  /** --publish-crl-configmap (issue #16) */
  crlPublisher: CrlConfigMapPublisher | undefined;
  /** --publish-cluster-trust-bundle (issue #16) */
  trustBundle: ClusterTrustBundlePublisher | undefined;
  close(): Promise<void>;
}

/**
 * Starts what the options ask for. The API server is not contacted before this returns: watches
 * and the Lease run in the background, so svid-ca serves (and fails requests that need the pod
 * index with UNAVAILABLE) while the API server is slow or down.
 */
export function startKubernetes(o: KubeOptions, deps: KubernetesDeps): KubernetesIntegration | undefined {
  if (!needsKubernetes(o)) return undefined;
  const { authority, logger } = deps;
  const clients = createKubeClients(o.kubeconfig);
  const log = logger.child({ component: 'kubernetes' });
  log.info({ server: clients.config.getCurrentCluster()?.server }, 'kubernetes API client configured');

  const tokenReviewer = o.tokenReview ? new KubeTokenReviewer(clients.authentication) : undefined;
  const pods = (o.trustedNodeAccounts?.length ?? 0) > 0 ? new PodIndex(clients.config, clients.core, log) : undefined;
  pods?.start();
  const remotes = o.remoteKubeconfigDir
    ? new RemoteClusters({ dir: o.remoteKubeconfigDir, watchPods: pods !== undefined, pollIntervalMs: o.remotePollIntervalMs ?? 10_000, logger: log, onReload: deps.onRemoteReload })
    : undefined;

  let leader: LeaderElector | undefined;
  if (o.publishRootConfigMap || o.istiodCert || o.publishCrlConfigMap || o.publishClusterTrustBundle) {
    leader = new LeaderElector({
      api: clients.coordination,
      namespace: o.leaderElectionNamespace ?? podNamespace(),
      name: LEASE_NAME,
      identity: holderIdentity(),
      timing: o.leaseTiming,
      logger: log,
    });
  }
  const isLeader = () => leader?.isLeader() ?? false;
  const published = { config: clients.config, core: clients.core, isLeader, registry: deps.registry, logger: log };
  const publisher = o.publishRootConfigMap
    ? new RootConfigMapPublisher({ ...published, roots: () => authority.bundle.rootsPem, namespaceSelector: o.publishRootConfigMap.namespaceSelector })
    : undefined;
  const crlPublisher = o.publishCrlConfigMap
    ? new CrlConfigMapPublisher({ ...published, crl: () => authority.bundle.crlPem, namespaceSelector: o.publishCrlConfigMap.namespaceSelector })
    : undefined;
  const trustBundle = o.publishClusterTrustBundle
    ? new ClusterTrustBundlePublisher({
        ...published,
        apis: clients.certificates,
        trustBundle: () => clusterTrustBundleOf(authority),
        rediscoverMs: o.publishClusterTrustBundle.rediscoverMs,
      })
    : undefined;
  const istiodCert = o.istiodCert ? new IstiodCertManager({ ...o.istiodCert, core: clients.core, authority, isLeader, logger: log }) : undefined;

  const onBundle = () => {
    publisher?.resyncAll();
    crlPublisher?.resyncAll();
    trustBundle?.kick();
    if (isLeader()) istiodCert?.kick();
  };
  authority.on('bundle', onBundle);
  leader?.on('started', () => {
    publisher?.resyncAll();
    crlPublisher?.resyncAll();
    trustBundle?.kick();
    istiodCert?.kick();
  });
  publisher?.start();
  crlPublisher?.start();
  trustBundle?.start();
  leader?.start();

  return {
    tokenReviewer,
    pods,
    leader,
    publisher,
    istiodCert,
    remotes,
    crlPublisher,
    trustBundle,
    async close() {
      await remotes?.close();
      authority.off('bundle', onBundle);
      await istiodCert?.stop();
      await publisher?.stop();
      await crlPublisher?.stop();
      await trustBundle?.stop();
      await leader?.stop();
      await pods?.stop();
    },
  };
}

/**
 * spec.trustBundle for the current root bundle: every certificate of root-cert.pem in file order, once
 * each, as bare PEM blocks (the API server refuses PEM headers, other blocks and duplicates; text
 * between blocks is dropped). Follows the file exactly: an old root stays while the file holds it.
 */
export function clusterTrustBundleOf(authority: Authority): string {
  const seen = new Set<string>();
  return authority.bundle.roots
    .filter((r) => !seen.has(r.x509.fingerprint256) && seen.add(r.x509.fingerprint256))
    .map((r) => encodePem('CERTIFICATE', r.der))
    .join('');
}
