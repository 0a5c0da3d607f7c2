/** What the Kubernetes integration is asked to do; every part is optional and off by default. */
export interface KubeOptions {
  /** A kubeconfig file; without it the in-cluster service-account configuration is used. */
  kubeconfig?: string | undefined;
  /** --token-review: authenticate bearer tokens with the TokenReview API. */
  tokenReview?: TokenReviewOptions | undefined;
  /** --trusted-node-accounts: `ns/sa` entries allowed to impersonate workloads on their node (ztunnel). */
  trustedNodeAccounts?: string[] | undefined;
  /** --publish-root-configmap: keep istio-ca-root-cert in every namespace (leader only). */
  publishRootConfigMap?: { namespaceSelector?: string | undefined } | undefined;
  /** --leader-election-namespace; default: the pod's namespace, else istio-system. */
  leaderElectionNamespace?: string | undefined;
  /** --istiod-cert-secret: keep istiod's serving certificate in this kubernetes.io/tls Secret (leader only). */
  istiodCert?: IstiodCertOptions | undefined;
  /** Lease timing; the defaults are client-go's. Tests shorten them. */
  leaseTiming?: Partial<LeaseTiming> | undefined;
  /** issue #18: --remote-kubeconfig-dir, one kubeconfig per remote cluster (file name = cluster ID). */
  remoteKubeconfigDir?: string | undefined;
  /** issue #18: poll --remote-kubeconfig-dir this often besides watching it (--reload-interval), ms. */
  remotePollIntervalMs?: number | undefined;
  /** --publish-crl-configmap: keep istio-ca-crl equal to ca-crl.pem in every namespace (leader only; issue #16). Selector: --root-configmap-namespace-selector. */
  publishCrlConfigMap?: { namespaceSelector?: string | undefined } | undefined;
  /** --publish-cluster-trust-bundle: keep ClusterTrustBundle istio.io:istiod-ca:root-cert equal to the root bundle (leader only; issue #16). */
  publishClusterTrustBundle?: { rediscoverMs?: number | undefined } | undefined;
}

export interface TokenReviewOptions {
  /** spec.audiences of every TokenReview (--jwt-audience). */
  audiences: string[];
  /** --token-review-cache-ttl */
  cacheTtlMs: number;
  /** --token-review-concurrency */
  concurrency: number;
}

export interface IstiodCertOptions {
  namespace: string;
  name: string;
  /** --istiod-dns */
  dnsNames: string[];
  /** --istiod-cert-ttl */
  ttlMs: number;
}

export interface LeaseTiming {
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

export const DEFAULT_LEASE_TIMING: LeaseTiming = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

/** Does anything in these options need the API server? */
export function needsKubernetes(o: KubeOptions | undefined): boolean {
  return !!o && !!(o.tokenReview || (o.trustedNodeAccounts?.length ?? 0) > 0 || o.publishRootConfigMap || o.istiodCert || o.publishCrlConfigMap || o.publishClusterTrustBundle);
}
