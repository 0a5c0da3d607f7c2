import { Gauge, type Registry } from 'prom-client';
import type { CoreV1Api, KubeConfig, V1ConfigMap, V1Namespace } from '@kubernetes/client-node';
import type { Logger } from '../observability/index.js';
import { describeKubeError, isConflict, isNotFound } from './errors.js';
import { withTimeout } from './timeout.js';
import { WatchedCollection } from './watched-collection.js';
import { WorkQueue } from './work-queue.js';

/** The label istiod puts on the ConfigMaps it publishes into every namespace. */
export const PUBLISHED_CONFIGMAP_LABEL = 'istio.io/config';
/** istiod's NamespaceController skips these; kube-system is not skipped. */
export const SKIPPED_NAMESPACES: ReadonlySet<string> = new Set(['kube-public', 'kube-node-lease', 'local-path-storage']);

const CALL_TIMEOUT_MS = 10_000;

/** What one published ConfigMap is: its name, its one key, its progress gauge and where its value comes from. */
export interface ConfigMapPublication {
  /** metadata.name in every namespace, e.g. istio-ca-root-cert. */
  name: string;
  /** The one data key, e.g. root-cert.pem. */
  key: string;
  /** The progress gauge, e.g. svid_ca_root_configmaps. */
  metric: string;
  /** For logs: "root" gives "root ConfigMap created". */
  label: string;
  /** For logs and help: what the value is, e.g. "root bundle". */
  contentName: string;
  /** The value the key must hold now (read on every reconcile; may be ''). */
  content: () => string;
}

export interface ConfigMapPublisherOptions {
  config: KubeConfig;
  core: CoreV1Api;
  /** --root-configmap-namespace-selector */
  namespaceSelector?: string | undefined;
  /** Writes happen only while this is true (the Lease holder). */
  isLeader: () => boolean;
  registry: Registry;
  logger: Logger;
}

/** Does the ConfigMap hold exactly the value under the key, and our label? Extra keys and edits count as drift. */
function isCurrent(cm: V1ConfigMap | undefined, key: string, value: string): boolean {
  if (!cm) return false;
  const keys = Object.keys(cm.data ?? {});
  // An empty value is a value: the key must be there (the API server drops nothing from data).
  return (
    keys.length === 1 &&
    cm.data?.[key] === value &&
    Object.keys(cm.binaryData ?? {}).length === 0 &&
    cm.metadata?.labels?.[PUBLISHED_CONFIGMAP_LABEL] === 'true'
  );
}

/**
 * Keeps one ConfigMap (one key, label istio.io/config=true) equal to a value in every namespace, as
 * istiod's NamespaceController does for istio-ca-root-cert and istio-ca-crl: created in new
 * namespaces, edits and deletions reverted (ConfigMaps are watched too), every namespace rewritten
 * after a bundle change (resyncAll). Every replica watches (cheap: one ConfigMap name); only the
 * leader writes. Never deletes a ConfigMap: an empty value is written as an empty key.
 */
export class ConfigMapPublisher {
  private readonly namespaces: WatchedCollection<V1Namespace>;
  private readonly configMaps: WatchedCollection<V1ConfigMap>;
  private readonly queue: WorkQueue;
  private readonly gauge: Gauge<'state'>;

  constructor(
    private readonly p: ConfigMapPublication,
    private readonly o: ConfigMapPublisherOptions,
  ) {
    const fieldSelector = `metadata.name=${p.name}`;
    this.namespaces = new WatchedCollection<V1Namespace>({
      name: 'namespaces',
      config: o.config,
      path: '/api/v1/namespaces',
      labelSelector: o.namespaceSelector,
      list: () => o.core.listNamespace({ labelSelector: o.namespaceSelector }),
      logger: o.logger,
    });
    this.configMaps = new WatchedCollection<V1ConfigMap>({
      name: 'configmaps',
      config: o.config,
      path: '/api/v1/configmaps',
      fieldSelector,
      list: () => o.core.listConfigMapForAllNamespaces({ fieldSelector }),
      logger: o.logger,
    });
    this.queue = new WorkQueue(
      (ns) => this.reconcile(ns),
      (ns, err, retryInMs) => o.logger.warn({ namespace: ns, configMap: p.name, problem: describeKubeError(err).message, retryInMs }, `${p.label} ConfigMap update failed; retrying`),
    );
    const enqueueNs = (n: V1Namespace) => n.metadata?.name && this.queue.add(n.metadata.name);
    const enqueueCm = (c: V1ConfigMap) => c.metadata?.namespace && this.queue.add(c.metadata.namespace);
    this.namespaces.onAdd(enqueueNs);
    this.namespaces.onUpdate(enqueueNs);
    this.configMaps.onAdd(enqueueCm);
    this.configMaps.onUpdate(enqueueCm);
    this.configMaps.onDelete(enqueueCm);
    this.namespaces.onSynced(() => this.resyncAll());
    this.configMaps.onSynced(() => this.resyncAll());

    const self = this;
    this.gauge = new Gauge({
      // With several worker processes each sees the same ConfigMaps: report one, not the sum.
      aggregator: 'max',
      name: p.metric,
      help: `Namespaces whose ${p.name} ConfigMap holds the current ${p.contentName} (current) or not yet (stale). Reported once the caches are loaded.`,
      labelNames: ['state'],
      registers: [o.registry],
      collect() {
        const s = self.status();
        this.reset();
        if (s) {
          this.set({ state: 'current' }, s.current);
          this.set({ state: 'stale' }, s.stale);
        }
      },
    });
  }

  start(): void {
    this.namespaces.start();
    this.configMaps.start();
  }

  async stop(): Promise<void> {
    this.queue.stop();
    await Promise.all([this.namespaces.stop(), this.configMaps.stop()]);
    this.o.registry.removeSingleMetric(this.p.metric);
  }

  /** Rewrite every namespace: after a bundle change, or when this replica becomes leader. */
  resyncAll(): void {
    if (!this.ready()) return;
    for (const n of this.namespaces.list()) if (n.metadata?.name) this.queue.add(n.metadata.name);
  }

  /** Namespaces carrying the current value and those that do not, or undefined before the caches load. */
  status(): { current: number; stale: number; staleNamespaces: string[] } | undefined {
    if (!this.namespaces.isSynced() || !this.configMaps.isSynced()) return undefined;
    const { name: cmName, key } = this.p;
    const value = this.p.content();
    const stale: string[] = [];
    let current = 0;
    for (const n of this.namespaces.list()) {
      if (!this.eligible(n)) continue;
      const name = n.metadata!.name!;
      if (isCurrent(this.configMaps.get(cmName, name), key, value)) current++;
      else stale.push(name);
    }
    return { current, stale: stale.length, staleNamespaces: stale.sort() };
  }

  /** Resolves when no namespace is queued or being written (tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private ready(): boolean {
    return this.namespaces.isSynced() && this.configMaps.isSynced();
  }

  private eligible(n: V1Namespace): boolean {
    const name = n.metadata?.name;
    return !!name && !SKIPPED_NAMESPACES.has(name) && n.status?.phase !== 'Terminating' && !n.metadata?.deletionTimestamp;
  }

  private async reconcile(namespace: string): Promise<void> {
    if (!this.o.isLeader() || !this.ready()) return;
    const ns = this.namespaces.get(namespace);
    if (!ns || !this.eligible(ns)) return;
    const { name, key, label, contentName } = this.p;
    const value = this.p.content();
    const { core, logger } = this.o;
    const cm = this.configMaps.get(name, namespace);
    if (isCurrent(cm, key, value)) return;
    const timeout = withTimeout(CALL_TIMEOUT_MS);
    if (!cm) {
      try {
        await core.createNamespacedConfigMap(
          {
            namespace,
            body: {
              apiVersion: 'v1',
              kind: 'ConfigMap',
              metadata: { name, namespace, labels: { [PUBLISHED_CONFIGMAP_LABEL]: 'true' } },
              data: { [key]: value },
            },
          },
          timeout,
        );
        logger.info({ namespace, configMap: name }, `${label} ConfigMap created`);
        return;
      } catch (err) {
        if (!isConflict(err)) throw err;
        // It exists and our cache has not seen it yet: the watch brings it and requeues the namespace,
        // and the retry updates it. (No read here: RBAC grants ConfigMaps no `get`, issue #19.)
        throw new Error(`ConfigMap ${namespace}/${name} already exists but is not yet in the watch cache`);
      }
    }
    const body: V1ConfigMap = {
      ...cm,
      metadata: { ...cm.metadata, labels: { ...cm.metadata?.labels, [PUBLISHED_CONFIGMAP_LABEL]: 'true' } },
      data: { [key]: value },
      binaryData: undefined,
    };
    try {
      await core.replaceNamespacedConfigMap({ name, namespace, body }, timeout);
      logger.info({ namespace, configMap: name }, `${label} ConfigMap updated to the current ${contentName}`);
    } catch (err) {
      // A stale resourceVersion or a concurrent delete: the watch brings the new state and requeues.
      if (isConflict(err) || isNotFound(err)) throw new Error(`ConfigMap ${namespace}/${name} changed while it was being updated`);
      throw err;
    }
  }
}
