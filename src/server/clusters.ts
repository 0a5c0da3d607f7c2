import {
  ClusterTokenReview,
  IssuersFile,
  JwtIssuers,
  TokenReviewAuthenticator,
  type AuthenticationOptions,
  type Authenticator,
  type IssuerEntry,
  type IssuersReload,
  type KeySetReload,
  type PodDirectory,
} from '../auth/index.js';
import type { KubernetesIntegration, TokenReviewOptions } from '../kube/index.js';
import type { CaMetrics, Logger } from '../observability/index.js';

/** The service options clusters are built from (a subset of ServiceOptions). */
export interface ClusterOptions {
  trustDomain: string;
  clusterId: string | undefined;
  jwt: { issuer: string; audience: string; jwksFile?: string | undefined; jwksUri?: string | undefined; jwksCooldownMs?: number | undefined } | undefined;
  jwtIssuersFile?: string | undefined;
  jwtAudience?: string | undefined;
  reloadIntervalMs?: number | undefined;
  jwksRefreshIntervalMs?: number | undefined;
}

/** Label value of the `cluster` label for a clusterid this CA does not serve (bounded cardinality). */
export const UNKNOWN_CLUSTER_LABEL = 'unknown';

/**
 * issue #18: the clusters one svid-ca serves. The local one is --cluster-id ('' when unset); the
 * others come from --jwt-issuers-file entries and --remote-kubeconfig-dir files, both followed as
 * they change. Without either, this is the single-cluster CA of before (authOptions carries only
 * --cluster-id, so its check and message are unchanged).
 */
export interface Clusters {
  /** The JWT authenticator: the issuers file, or the single-issuer flags as a one-entry set. */
  jwt: JwtIssuers | undefined;
  authOptions: AuthenticationOptions;
  /** TokenReview routed by the call's cluster: the local reviewer, or a remote cluster's. */
  tokenReview(local: TokenReviewAuthenticator, options: TokenReviewOptions): Authenticator;
  /** The pod index of a caller's cluster (impersonation). */
  pods(local: PodDirectory): (clusterId: string | undefined) => PodDirectory | undefined;
  /** The `cluster` label for a call's clusterid header: the served cluster, or UNKNOWN_CLUSTER_LABEL. */
  label(clusterIdHeader: string[]): string;
  /** Trust domain of a cluster's identities: its issuers-file entry's, else --trust-domain. */
  trustDomainOf(cluster: string): string;
  /** One line per cluster for /readyz: its issuers and API server state. */
  describe(): string[];
  close(): void;
}

/** Counts and logs a load of --jwt-issuers-file (svid_ca_jwt_issuers_reloads_total{result}). */
function reportIssuersReload(reload: IssuersReload, metrics: CaMetrics, logger: Logger): void {
  metrics.jwtIssuersReloads.inc({ result: reload.result });
  if (reload.result === 'failure') logger.error({ issuersFile: reload.source, problem: reload.error.message }, 'JWT issuers file refused; keeping the current issuers');
  else logger.info({ issuersFile: reload.source, issuers: reload.issuers, added: reload.added, removed: reload.removed }, 'JWT issuers loaded');
}

export function buildClusters(
  options: ClusterOptions,
  kube: KubernetesIntegration | undefined,
  metrics: CaMetrics,
  logger: Logger,
  onKeySetReload: (reload: KeySetReload) => void,
): Clusters {
  const local = options.clusterId ?? '';
  const keyOptions = {
    reloadIntervalMs: options.reloadIntervalMs,
    jwksRefreshIntervalMs: options.jwksRefreshIntervalMs,
    jwksCooldownMs: options.jwt?.jwksCooldownMs,
    onKeySetReload: (reload: KeySetReload, entry: IssuerEntry) => onKeySetReload(reload.result === 'failure' ? reload : { ...reload, source: `${reload.source} (issuer ${entry.issuer})` }),
  };
  let file: IssuersFile | undefined;
  let jwt: JwtIssuers | undefined;
  if (options.jwtIssuersFile) {
    file = new IssuersFile({
      ...keyOptions,
      path: options.jwtIssuersFile,
      defaults: { trustDomain: options.trustDomain, audiences: [options.jwtAudience ?? 'istio-ca'] },
      pollIntervalMs: options.reloadIntervalMs ?? 10_000,
      onReload: (reload) => reportIssuersReload(reload, metrics, logger),
    });
    jwt = file.issuers;
  } else if (options.jwt) {
    // The single-issuer flags are a one-entry issuers file: one code path.
    const { issuer, audience, jwksFile, jwksUri } = options.jwt;
    jwt = new JwtIssuers([{ clusterId: options.clusterId, issuer, audiences: [audience], jwksFile, jwksUri, trustDomain: options.trustDomain }], keyOptions);
  }
  const remotes = kube?.remotes;
  const multi = options.jwtIssuersFile !== undefined || remotes !== undefined;
  const issuerClusters = () => new Set((jwt?.entries ?? []).map((e) => e.clusterId).filter((c): c is string => c !== undefined));
  const known = () => new Set([...issuerClusters(), ...(remotes?.ids() ?? [])]);
  const trustDomainOf = (cluster: string) => jwt?.entries.find((e) => e.clusterId === cluster)?.trustDomain ?? options.trustDomain;
  // Keyed by the cluster's reviewer: a changed kubeconfig brings a new one, and the old entry goes with it.
  const remoteReviewers = new WeakMap<object, TokenReviewAuthenticator>();

  return {
    jwt,
    authOptions: multi ? { clusterId: options.clusterId, clusters: known } : { clusterId: options.clusterId },
    tokenReview(localReviewer, trOptions) {
      return new ClusterTokenReview((cluster) => {
        if (cluster === local) return localReviewer;
        const remote = remotes?.get(cluster);
        if (!remote) return undefined;
        let reviewer = remoteReviewers.get(remote.tokenReviewer);
        if (!reviewer) {
          // Each cluster its own cache and concurrency limit; a replaced kubeconfig starts afresh.
          reviewer = new TokenReviewAuthenticator({ ...trOptions, reviewer: remote.tokenReviewer, trustDomain: () => trustDomainOf(cluster), clusterId: cluster });
          remoteReviewers.set(remote.tokenReviewer, reviewer);
        }
        return reviewer;
      });
    },
    trustDomainOf,
    pods(localPods) {
      return (clusterId) => (clusterId === undefined || clusterId === local ? localPods : remotes?.get(clusterId)?.pods);
    },
    label(header) {
      const claimed = header.length === 1 ? header[0]! : '';
      if (claimed === '' || claimed === local) return local;
      return multi && known().has(claimed) ? claimed : UNKNOWN_CLUSTER_LABEL;
    },
    describe() {
      if (!multi) return [];
      const lines: string[] = [];
      const remoteState = new Map((remotes?.describe() ?? []).map((r) => [r.clusterId, r]));
      for (const cluster of [...new Set([local, ...known(), ...remoteState.keys()])].sort()) {
        const issuers = (jwt?.entries ?? []).filter((e) => (e.clusterId ?? '') === cluster).map((e) => e.issuer);
        const r = remoteState.get(cluster);
        const api = cluster === local ? (kube?.tokenReviewer || kube?.pods ? 'local API server' : 'no API server') : r ? `API server ${r.server ?? '?'}${r.podsSynced === false ? ' (pod index loading)' : ''}${r.problem ? ` (kubeconfig refused: ${r.problem})` : ''}` : 'no API server';
        lines.push(`cluster "${cluster}": ${issuers.length > 0 ? `issuers ${issuers.join(', ')}` : 'no JWT issuer'}; ${api}; trust domain ${trustDomainOf(cluster)}`);
      }
      return lines;
    },
    close() {
      if (file) file.close();
      else jwt?.close();
    },
  };
}
