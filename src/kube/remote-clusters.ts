import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuthenticationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../observability/index.js';
import { FolderWatcher } from '../watch/index.js';
import { PodIndex } from './pod-index.js';
import { KubeTokenReviewer } from './token-reviewer.js';

/** File names of a --remote-kubeconfig-dir that hold a cluster's kubeconfig; the rest of the name is the cluster ID. */
const KUBECONFIG_FILE = /^([^.][^/]*?)(\.yaml|\.yml|\.kubeconfig)?$/;

/** The cluster ID a file of --remote-kubeconfig-dir stands for, or undefined (dotfiles: Kubernetes' `..data` and its timestamped folders). */
export function clusterIdOfFile(name: string): string | undefined {
  const m = KUBECONFIG_FILE.exec(name);
  return m ? m[1] : undefined;
}

/** One remote cluster's API clients. */
export interface RemoteCluster {
  clusterId: string;
  /** The kubeconfig's server URL (for logs and /readyz). */
  server: string | undefined;
  tokenReviewer: KubeTokenReviewer;
  /** Present with --trusted-node-accounts. */
  pods: PodIndex | undefined;
}

export interface RemoteClustersOptions {
  dir: string;
  /** Watch the pods of each remote cluster too (impersonation). */
  watchPods: boolean;
  /** Poll the folder this often besides watching it (--reload-interval), milliseconds. */
  pollIntervalMs: number;
  debounceMs?: number | undefined;
  logger: Logger;
  /** Told of each load: a cluster added or changed (result success) or a file refused (failure). */
  onReload?: ((result: 'success' | 'failure') => void) | undefined;
}

interface Entry {
  digest: string;
  cluster: RemoteCluster;
}

/**
 * --remote-kubeconfig-dir: one kubeconfig per remote cluster, the file name (less .yaml, .yml or
 * .kubeconfig) its cluster ID, as istiod's remote secrets (istioctl create-remote-secret) hold them.
 * Files added, changed or removed are picked up without restart (fs.watch on the folder, which sees
 * a Secret volume's `..data` swap, plus a poll). A file that is not a usable kubeconfig is refused
 * and logged; the cluster keeps its current clients when it had some.
 */
export class RemoteClusters {
  private readonly clusters = new Map<string, Entry>();
  private readonly failed = new Map<string, { digest: string; problem: string }>();
  private readonly watcher: FolderWatcher;

  constructor(private readonly options: RemoteClustersOptions) {
    this.check();
    this.watcher = new FolderWatcher({ dir: options.dir, pollIntervalMs: options.pollIntervalMs, debounceMs: options.debounceMs }, () => this.check());
    this.watcher.start();
  }

  /** Cluster IDs with a usable kubeconfig now. */
  ids(): Set<string> {
    return new Set(this.clusters.keys());
  }

  get(clusterId: string): RemoteCluster | undefined {
    return this.clusters.get(clusterId)?.cluster;
  }

  /** Per cluster: its API server and whether its pod index has loaded (for /readyz detail). */
  describe(): Array<{ clusterId: string; server: string | undefined; podsSynced: boolean | undefined; problem: string | undefined }> {
    const out = [...this.clusters.values()].map(({ cluster }) => ({
      clusterId: cluster.clusterId,
      server: cluster.server,
      podsSynced: cluster.pods?.isSynced(),
      problem: this.failed.get(cluster.clusterId)?.problem,
    }));
    for (const [clusterId, { problem }] of this.failed) if (!this.clusters.has(clusterId)) out.push({ clusterId, server: undefined, podsSynced: undefined, problem });
    return out.sort((a, b) => a.clusterId.localeCompare(b.clusterId));
  }

  /** Reads the folder again: adds, replaces and removes clusters as their files changed. */
  check(): void {
    let names: string[];
    try {
      names = readdirSync(this.options.dir);
    } catch (err) {
      this.report('failure', { dir: this.options.dir, problem: (err as NodeJS.ErrnoException).code ?? (err as Error).message }, 'remote kubeconfig folder cannot be read; keeping the remote clusters');
      return;
    }
    const seen = new Set<string>();
    for (const name of names) {
      const clusterId = clusterIdOfFile(name);
      if (clusterId === undefined) continue;
      let text: string;
      try {
        text = readFileSync(join(this.options.dir, name), 'utf8');
      } catch {
        continue; // a folder, or a dangling Secret-volume link of a removed key: not a cluster
      }
      seen.add(clusterId);
      const digest = createHash('sha256').update(text).digest('hex');
      const current = this.clusters.get(clusterId);
      if (current?.digest === digest) continue;
      if (this.failed.get(clusterId)?.digest === digest) continue;
      let cluster: RemoteCluster;
      try {
        cluster = this.connect(clusterId, text);
      } catch (err) {
        const problem = (err as Error).message.split('\n')[0]!.slice(0, 300);
        this.failed.set(clusterId, { digest, problem });
        this.report('failure', { cluster: clusterId, file: join(this.options.dir, name), problem }, 'remote kubeconfig refused; keeping the cluster as it was');
        continue;
      }
      this.failed.delete(clusterId);
      this.clusters.set(clusterId, { digest, cluster });
      if (current) void current.cluster.pods?.stop();
      this.report('success', { cluster: clusterId, server: cluster.server }, current ? 'remote cluster kubeconfig changed' : 'remote cluster added');
    }
    for (const [clusterId, { cluster }] of this.clusters) {
      if (seen.has(clusterId)) continue;
      this.clusters.delete(clusterId);
      void cluster.pods?.stop();
      this.report('success', { cluster: clusterId }, 'remote cluster removed');
    }
    for (const clusterId of this.failed.keys()) if (!seen.has(clusterId)) this.failed.delete(clusterId);
  }

  async close(): Promise<void> {
    this.watcher?.stop();
    await Promise.all([...this.clusters.values()].map((e) => e.cluster.pods?.stop()));
    this.clusters.clear();
  }

  private connect(clusterId: string, text: string): RemoteCluster {
    const config = new KubeConfig();
    config.loadFromString(text);
    const current = config.getCurrentCluster();
    if (!current) throw new Error('no current cluster in the kubeconfig');
    const log = this.options.logger.child({ component: 'kubernetes', cluster: clusterId });
    const pods = this.options.watchPods ? new PodIndex(config, config.makeApiClient(CoreV1Api), log) : undefined;
    pods?.start();
    return { clusterId, server: current.server, tokenReviewer: new KubeTokenReviewer(config.makeApiClient(AuthenticationV1Api)), pods };
  }

  private report(result: 'success' | 'failure', fields: Record<string, unknown>, message: string): void {
    this.options.onReload?.(result);
    if (result === 'failure') this.options.logger.error(fields, message);
    else this.options.logger.info(fields, message);
  }
}
