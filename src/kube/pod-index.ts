import type { CoreV1Api, KubeConfig, V1Pod } from '@kubernetes/client-node';
import type { PodDirectory, PodFacts } from '../auth/index.js';
import type { Logger } from '../observability/index.js';
import { WatchedCollection } from './watched-collection.js';

/** Istio's node authorizer ignores failed pods; the API server filters them for us. */
const FIELD_SELECTOR = 'status.phase!=Failed';

const factsOf = (p: V1Pod): PodFacts => ({
  namespace: p.metadata?.namespace ?? '',
  name: p.metadata?.name ?? '',
  uid: p.metadata?.uid ?? '',
  serviceAccount: p.spec?.serviceAccountName || 'default',
  nodeName: p.spec?.nodeName || undefined,
});

/**
 * The cluster's pods, watched once and indexed by namespace/name (the informer's own cache) and by
 * node -> "ns/sa" -> pod count, so each impersonation check is two map lookups, not an API call.
 */
export class PodIndex implements PodDirectory {
  private readonly pods: WatchedCollection<V1Pod>;
  /** node -> "ns/sa" -> number of pods */
  private readonly byNode = new Map<string, Map<string, number>>();
  /** "ns/name" -> what was counted for it, so an update or delete undoes exactly that. */
  private readonly counted = new Map<string, { node: string; account: string }>();

  constructor(config: KubeConfig, core: CoreV1Api, logger: Logger) {
    this.pods = new WatchedCollection<V1Pod>({
      name: 'pods',
      config,
      path: '/api/v1/pods',
      fieldSelector: FIELD_SELECTOR,
      list: () => core.listPodForAllNamespaces({ fieldSelector: FIELD_SELECTOR }),
      logger,
    });
    this.pods.onAdd((p) => this.track(p));
    this.pods.onUpdate((p) => this.track(p));
    this.pods.onDelete((p) => this.untrack(key(p)));
  }

  start(): void {
    this.pods.start();
  }

  stop(): Promise<void> {
    return this.pods.stop();
  }

  isSynced(): boolean {
    return this.pods.isSynced();
  }

  onSynced(listener: () => void): void {
    this.pods.onSynced(listener);
  }

  pod(namespace: string, name: string): PodFacts | undefined {
    const p = this.pods.get(name, namespace);
    return p ? factsOf(p) : undefined;
  }

  hasPodOnNode(namespace: string, serviceAccount: string, nodeName: string): boolean {
    return (this.byNode.get(nodeName)?.get(`${namespace}/${serviceAccount}`) ?? 0) > 0;
  }

  private track(p: V1Pod): void {
    const k = key(p);
    this.untrack(k);
    const f = factsOf(p);
    if (!f.nodeName) return;
    const account = `${f.namespace}/${f.serviceAccount}`;
    let accounts = this.byNode.get(f.nodeName);
    if (!accounts) this.byNode.set(f.nodeName, (accounts = new Map()));
    accounts.set(account, (accounts.get(account) ?? 0) + 1);
    this.counted.set(k, { node: f.nodeName, account });
  }

  private untrack(k: string): void {
    const was = this.counted.get(k);
    if (!was) return;
    this.counted.delete(k);
    const accounts = this.byNode.get(was.node);
    if (!accounts) return;
    const n = (accounts.get(was.account) ?? 1) - 1;
    if (n > 0) accounts.set(was.account, n);
    else accounts.delete(was.account);
    if (accounts.size === 0) this.byNode.delete(was.node);
  }
}

const key = (p: V1Pod) => `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;
