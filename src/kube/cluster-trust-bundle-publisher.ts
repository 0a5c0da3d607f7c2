import { Gauge, type Registry } from 'prom-client';
import type { CertificatesV1alpha1Api, CertificatesV1beta1Api, KubeConfig, KubernetesListObject, V1beta1ClusterTrustBundle } from '@kubernetes/client-node';
import type { Logger } from '../observability/index.js';
import { describeKubeError, isConflict, isNotFound, isNotFoundOrWatch404 } from './errors.js';
import { withTimeout } from './timeout.js';
import { WatchedCollection } from './watched-collection.js';
import { WorkQueue } from './work-queue.js';

/** istiod's signer and object name (pilot/pkg/config/kube/clustertrustbundle, ENABLE_CLUSTER_TRUST_BUNDLE_API). */
export const CLUSTER_TRUST_BUNDLE_SIGNER = 'istio.io/istiod-ca';
export const CLUSTER_TRUST_BUNDLE_NAME = 'istio.io:istiod-ca:root-cert';
export const CLUSTER_TRUST_BUNDLE_METRIC = 'svid_ca_cluster_trust_bundle';
/** Preferred first: v1beta1 (Kubernetes 1.33+), then v1alpha1 (1.27-1.32, or 1.33+ with only the alpha enabled). */
export const CLUSTER_TRUST_BUNDLE_VERSIONS = ['v1beta1', 'v1alpha1'] as const;
export type ClusterTrustBundleVersion = (typeof CLUSTER_TRUST_BUNDLE_VERSIONS)[number];

const CALL_TIMEOUT_MS = 10_000;
const KEY = CLUSTER_TRUST_BUNDLE_NAME;
/** v1alpha1 and v1beta1 objects have the same shape (metadata, spec.signerName, spec.trustBundle). */
type Bundle = V1beta1ClusterTrustBundle;

/** The calls used, which both generated version clients have with the same shapes. */
interface VersionApi {
  getAPIResources(param?: object, options?: ReturnType<typeof withTimeout>): Promise<{ resources: { name: string }[] }>;
  listClusterTrustBundle(param: { fieldSelector?: string }, options?: ReturnType<typeof withTimeout>): Promise<KubernetesListObject<Bundle>>;
  createClusterTrustBundle(param: { body: Bundle }, options?: ReturnType<typeof withTimeout>): Promise<Bundle>;
  replaceClusterTrustBundle(param: { name: string; body: Bundle }, options?: ReturnType<typeof withTimeout>): Promise<Bundle>;
}

export interface ClusterTrustBundlePublisherOptions {
  config: KubeConfig;
  apis: { v1beta1: CertificatesV1beta1Api; v1alpha1: CertificatesV1alpha1Api };
  /** spec.trustBundle: every certificate of root-cert.pem, as PEM blocks only (the API server refuses anything else). */
  trustBundle: () => string;
  /** Writes happen only while this is true (the Lease holder). */
  isLeader: () => boolean;
  registry: Registry;
  logger: Logger;
  /** How long to wait before asking again when the API server serves no ClusterTrustBundle version. */
  rediscoverMs?: number | undefined;
}

type State = 'current' | 'stale' | 'unserved';

/**
 * Keeps ClusterTrustBundle istio.io:istiod-ca:root-cert (signer istio.io/istiod-ca) equal to the
 * root bundle, as istiod does with ENABLE_CLUSTER_TRUST_BUNDLE_API: created when missing, edits
 * reverted, rewritten after a bundle change; the object is watched by name. The API version is
 * discovered at start (v1beta1, else v1alpha1) and again whenever the API server answers 404 for the
 * collection. Every replica watches; only the leader writes. Never deletes the object.
 */
export class ClusterTrustBundlePublisher {
  private version: ClusterTrustBundleVersion | undefined;
  private unserved = false;
  private bundles: WatchedCollection<Bundle> | undefined;
  private readonly queue: WorkQueue;
  private stopped = true;
  private discovering: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly gauge: Gauge<'state'>;

  constructor(private readonly o: ClusterTrustBundlePublisherOptions) {
    this.queue = new WorkQueue(
      () => this.reconcile(),
      (_key, err, retryInMs) =>
        o.logger.warn({ clusterTrustBundle: CLUSTER_TRUST_BUNDLE_NAME, apiVersion: this.version, problem: describeKubeError(err).message, retryInMs }, 'ClusterTrustBundle update failed; retrying'),
      1,
    );
    const self = this;
    this.gauge = new Gauge({
      // With several worker processes each sees the same object: report one, not the sum.
      aggregator: 'max',
      name: CLUSTER_TRUST_BUNDLE_METRIC,
      help: `1 for the state of ClusterTrustBundle ${CLUSTER_TRUST_BUNDLE_NAME}: current (holds the root bundle), stale (missing or different), unserved (the API server serves no ClusterTrustBundle API). Reported once known.`,
      labelNames: ['state'],
      registers: [o.registry],
      collect() {
        const s = self.state();
        this.reset();
        if (s) for (const state of ['current', 'stale', 'unserved'] as const) this.set({ state }, s === state ? 1 : 0);
      },
    });
  }

  /** The API version in use, once discovered. */
  get apiVersion(): ClusterTrustBundleVersion | undefined {
    return this.version;
  }

  start(): void {
    this.stopped = false;
    this.rediscover();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.queue.stop();
    await this.discovering;
    await this.bundles?.stop();
    this.gauge.reset();
    this.o.registry.removeSingleMetric(CLUSTER_TRUST_BUNDLE_METRIC);
  }

  /** Reconcile now: after a bundle change, or when this replica becomes leader. */
  kick(): void {
    if (this.bundles?.isSynced()) this.queue.add(KEY);
  }

  /** current/stale once the cache has loaded, unserved when no version is served, else undefined. */
  state(): State | undefined {
    if (this.unserved) return 'unserved';
    if (!this.bundles?.isSynced()) return undefined;
    return isCurrent(this.bundles.get(CLUSTER_TRUST_BUNDLE_NAME), this.o.trustBundle()) ? 'current' : 'stale';
  }

  /** Resolves when nothing is queued or being written (tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private api(v: ClusterTrustBundleVersion): VersionApi {
    return this.o.apis[v] as unknown as VersionApi;
  }

  /** Finds the version to use (once at a time), then (re)starts the watch on it if it changed. */
  private rediscover(): void {
    if (this.stopped || this.discovering) return;
    clearTimeout(this.retryTimer);
    this.discovering = this.discover().finally(() => (this.discovering = undefined));
  }

  private async discover(): Promise<void> {
    let found: ClusterTrustBundleVersion | undefined;
    try {
      for (const v of CLUSTER_TRUST_BUNDLE_VERSIONS) {
        if (await this.serves(v)) {
          found = v;
          break;
        }
      }
    } catch (err) {
      this.o.logger.warn({ problem: describeKubeError(err).message }, 'ClusterTrustBundle API discovery failed; retrying');
      this.retryLater(5_000);
      return;
    }
    if (this.stopped) return;
    if (!found) {
      if (!this.unserved) {
        this.o.logger.warn(
          { versions: CLUSTER_TRUST_BUNDLE_VERSIONS.map((v) => `certificates.k8s.io/${v}`) },
          'the API server serves no ClusterTrustBundle API; --publish-cluster-trust-bundle waits for it (enable the ClusterTrustBundle feature gate and API version)',
        );
      }
      this.unserved = true;
      await this.switchTo(undefined);
      this.retryLater(this.o.rediscoverMs ?? 60_000);
      return;
    }
    this.unserved = false;
    if (found !== this.version) await this.switchTo(found);
  }

  /** Does the API server serve clustertrustbundles in certificates.k8s.io/<v>? (resource discovery; 404: no.) */
  private async serves(v: ClusterTrustBundleVersion): Promise<boolean> {
    try {
      const list = await this.api(v).getAPIResources({}, withTimeout(CALL_TIMEOUT_MS));
      return list.resources.some((r) => r.name === 'clustertrustbundles');
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  private retryLater(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.rediscover(), ms);
    this.retryTimer.unref();
  }

  private async switchTo(v: ClusterTrustBundleVersion | undefined): Promise<void> {
    const old = this.bundles;
    this.bundles = undefined;
    this.version = v;
    await old?.stop();
    if (!v || this.stopped) return;
    this.o.logger.info({ apiVersion: `certificates.k8s.io/${v}`, clusterTrustBundle: CLUSTER_TRUST_BUNDLE_NAME }, 'publishing the root bundle as a ClusterTrustBundle');
    const fieldSelector = `metadata.name=${CLUSTER_TRUST_BUNDLE_NAME}`;
    const api = this.api(v);
    const bundles = new WatchedCollection<Bundle>({
      name: 'clustertrustbundles',
      config: this.o.config,
      path: `/apis/certificates.k8s.io/${v}/clustertrustbundles`,
      fieldSelector,
      list: () => api.listClusterTrustBundle({ fieldSelector }),
      logger: this.o.logger,
      // A 404 on the list or watch: the version is no longer served (API server reconfigured or downgraded).
      onError: (err) => {
        if (isNotFoundOrWatch404(err)) setImmediate(() => this.rediscover());
      },
    });
    const enqueue = () => this.queue.add(KEY);
    bundles.onAdd(enqueue);
    bundles.onUpdate(enqueue);
    bundles.onDelete(enqueue);
    bundles.onSynced(enqueue);
    this.bundles = bundles;
    bundles.start();
  }

  private async reconcile(): Promise<void> {
    const { bundles, version } = this;
    if (!this.o.isLeader() || !bundles?.isSynced() || !version) return;
    const trustBundle = this.o.trustBundle();
    const existing = bundles.get(CLUSTER_TRUST_BUNDLE_NAME);
    if (isCurrent(existing, trustBundle)) return;
    const api = this.api(version);
    const apiVersion = `certificates.k8s.io/${version}`;
    const timeout = withTimeout(CALL_TIMEOUT_MS);
    if (!existing) {
      try {
        await api.createClusterTrustBundle(
          { body: { apiVersion, kind: 'ClusterTrustBundle', metadata: { name: CLUSTER_TRUST_BUNDLE_NAME }, spec: { signerName: CLUSTER_TRUST_BUNDLE_SIGNER, trustBundle } } },
          timeout,
        );
        this.o.logger.info({ clusterTrustBundle: CLUSTER_TRUST_BUNDLE_NAME, apiVersion }, 'ClusterTrustBundle created');
        return;
      } catch (err) {
        if (isNotFound(err)) {
          setImmediate(() => this.rediscover());
          throw new Error(`${apiVersion} ClusterTrustBundles are no longer served; discovering the API version again`);
        }
        if (!isConflict(err)) throw err;
        throw new Error(`ClusterTrustBundle ${CLUSTER_TRUST_BUNDLE_NAME} already exists but is not yet in the watch cache`);
      }
    }
    const body: Bundle = { ...existing, apiVersion, kind: 'ClusterTrustBundle', spec: { ...existing.spec, signerName: CLUSTER_TRUST_BUNDLE_SIGNER, trustBundle } };
    try {
      await api.replaceClusterTrustBundle({ name: CLUSTER_TRUST_BUNDLE_NAME, body }, timeout);
      this.o.logger.info({ clusterTrustBundle: CLUSTER_TRUST_BUNDLE_NAME, apiVersion }, 'ClusterTrustBundle updated to the current root bundle');
    } catch (err) {
      // A stale resourceVersion or a concurrent delete: the watch brings the new state and requeues.
      if (isConflict(err) || isNotFound(err)) throw new Error(`ClusterTrustBundle ${CLUSTER_TRUST_BUNDLE_NAME} changed while it was being updated`);
      throw err;
    }
  }
}

function isCurrent(b: Bundle | undefined, trustBundle: string): boolean {
  return !!b && b.spec?.signerName === CLUSTER_TRUST_BUNDLE_SIGNER && b.spec?.trustBundle === trustBundle;
}
