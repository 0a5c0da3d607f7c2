/** Kubernetes API access: TokenReview, the pod index, root and CRL ConfigMap publication, the ClusterTrustBundle, the istiod-tls Secret, leader election. */
export { startKubernetes, LEASE_NAME, type KubernetesIntegration, type KubernetesDeps } from './integration.js';
export { needsKubernetes, DEFAULT_LEASE_TIMING, type KubeOptions, type TokenReviewOptions, type IstiodCertOptions, type LeaseTiming } from './options.js';
export { createKubeClients, loadKubeConfig, podNamespace, holderIdentity, type KubeClients } from './client.js';
export { KubeTokenReviewer } from './token-reviewer.js';
export { PodIndex } from './pod-index.js';
export { LeaderElector, type LeaderElectorOptions } from './leader-election.js';
export {
  RootConfigMapPublisher,
  ROOT_CONFIGMAP,
  ROOT_CONFIGMAP_KEY,
  ROOT_CONFIGMAP_LABEL,
  type RootConfigMapPublisherOptions,
} from './root-configmap-publisher.js';
export { ConfigMapPublisher, PUBLISHED_CONFIGMAP_LABEL, SKIPPED_NAMESPACES, type ConfigMapPublication, type ConfigMapPublisherOptions } from './configmap-publisher.js';
export { CrlConfigMapPublisher, CRL_CONFIGMAP, CRL_CONFIGMAP_KEY, CRL_CONFIGMAPS_METRIC, type CrlConfigMapPublisherOptions } from './crl-configmap-publisher.js';
export {
  ClusterTrustBundlePublisher,
  CLUSTER_TRUST_BUNDLE_NAME,
  CLUSTER_TRUST_BUNDLE_SIGNER,
  CLUSTER_TRUST_BUNDLE_METRIC,
  CLUSTER_TRUST_BUNDLE_VERSIONS,
  type ClusterTrustBundlePublisherOptions,
  type ClusterTrustBundleVersion,
} from './cluster-trust-bundle-publisher.js';
export { IstiodCertManager, type IstiodCertManagerOptions } from './istiod-cert.js';
export { describeKubeError, type KubeFailure } from './errors.js';
export { RemoteClusters, clusterIdOfFile, type RemoteCluster, type RemoteClustersOptions } from './remote-clusters.js';
