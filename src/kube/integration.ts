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
import { KubeTokenReviewer } from './token-reviewer.js';

export const LEASE_NAME = 'svid-ca';

export interface KubernetesDeps {
  authority: Authority;
  /** The CaMetrics registry, for svid_ca_root_configmaps. */
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
  if (o.publishRootConfigMap || o.istiodCert) {
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
  const publisher = o.publishRootConfigMap
    ? new RootConfigMapPublisher({
        config: clients.config,
        core: clients.core,
        roots: () => authority.bundle.rootsPem,
        namespaceSelector: o.publishRootConfigMap.namespaceSelector,
        isLeader,
        registry: deps.registry,
        logger: log,
      })
    : undefined;
  const istiodCert = o.istiodCert ? new IstiodCertManager({ ...o.istiodCert, core: clients.core, authority, isLeader, logger: log }) : undefined;

  const onBundle = () => {
    publisher?.resyncAll();
    if (isLeader()) istiodCert?.kick();
  };
  authority.on('bundle', onBundle);
  leader?.on('started', () => {
    publisher?.resyncAll();
    istiodCert?.kick();
  });
  publisher?.start();
  leader?.start();

  return {
    tokenReviewer,
    pods,
    leader,
    publisher,
    istiodCert,
    remotes,
    async close() {
      await remotes?.close();
      authority.off('bundle', onBundle);
      await istiodCert?.stop();
      await publisher?.stop();
      await leader?.stop();
      await pods?.stop();
    },
  };
}
