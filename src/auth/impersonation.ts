import { isKubernetesName } from './spiffe.js';
import { AuthError, type Caller } from './types.js';

/** What impersonation needs to know about a pod. */
export interface PodFacts {
  namespace: string;
  name: string;
  uid: string;
  serviceAccount: string;
  nodeName: string | undefined;
}

/** A watched, cached view of the cluster's pods (see src/kube PodIndex). */
export interface PodDirectory {
  /** False until the first list has been loaded; decisions then would be guesses. */
  isSynced(): boolean;
  pod(namespace: string, name: string): PodFacts | undefined;
  /** Is at least one pod of namespace/serviceAccount scheduled on this node? */
  hasPodOnNode(namespace: string, serviceAccount: string, nodeName: string): boolean;
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>` -> its parts, or undefined. */
export function parseWorkloadSpiffeId(id: string): { trustDomain: string; namespace: string; serviceAccount: string } | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  if (!m || !isKubernetesName(m[2]!) || !isKubernetesName(m[3]!)) return undefined;
  return { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! };
}

/** `--trusted-node-accounts ns/sa,...` entries; throws on a malformed one so a typo is not silently ignored. */
export function parseNodeAccounts(entries: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const e of entries) {
    const [ns, sa, ...rest] = e.split('/');
    if (rest.length > 0 || !ns || !sa || !isKubernetesName(ns) || !isKubernetesName(sa)) {
      throw new Error(`--trusted-node-accounts: invalid entry "${e}" (want namespace/serviceaccount, e.g. istio-system/ztunnel)`);
    }
    out.add(`${ns}/${sa}`);
  }
  return out;
}

export interface ImpersonationOptions {
  trustedNodeAccounts: ReadonlySet<string>;
  /** The pod index; issue #18: or the index of the caller's cluster (Caller.clusterId), undefined when that cluster has none. */
  pods: PodDirectory | ((clusterId: string | undefined) => PodDirectory | undefined);
  trustDomain: string;
}

function refuse(reason: string): AuthError {
  return new AuthError('unauthenticated', `impersonation refused: ${reason}`);
}

/**
 * ztunnel's node authorization (istiod node_auth.go): a trusted node agent may ask for the identity
 * of a workload that runs on its own node. The caller's pod is looked up by the token's pod name
 * and must carry the token's pod UID and service account; the node is taken from that pod, never
 * from the request.
 */
export class ImpersonationAuthorizer {
  constructor(private readonly options: ImpersonationOptions) {}

  /** Returns the identity to issue for, or throws AuthError with the reason. */
  authorize(caller: Caller, impersonated: string): string {
    const account = `${caller.namespace}/${caller.serviceAccount}`;
    if (!this.options.trustedNodeAccounts.has(account)) throw refuse(`caller not a trusted node account (${account})`);
    const target = parseWorkloadSpiffeId(impersonated);
    if (!target) {
      throw refuse(`impersonated identity "${impersonated.slice(0, 200)}" is not of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>`);
    }
    // issue #18: a caller of another cluster's issuer holds that cluster's trust domain, and so may its workloads.
    const trustDomain = parseWorkloadSpiffeId(caller.identity)?.trustDomain ?? this.options.trustDomain;
    if (target.trustDomain !== trustDomain) {
      throw refuse(`impersonated identity is in trust domain "${target.trustDomain}", not "${trustDomain}"`);
    }
    if (!caller.podName || !caller.podUid) {
      throw refuse(`the caller's credential names no pod (authenticated by ${caller.authenticator}); a bound service-account token with pod name and UID is needed`);
    }
    const pods = typeof this.options.pods === 'function' ? this.options.pods(caller.clusterId) : this.options.pods;
    if (!pods) throw refuse(`no pod index for cluster "${caller.clusterId ?? ''}" (no --remote-kubeconfig-dir file names it)`);
    if (!pods.isSynced()) throw new AuthError('unavailable', 'impersonation cannot be checked yet: the pod index is still loading; retry');
    const podRef = `${caller.namespace}/${caller.podName}`;
    const pod = pods.pod(caller.namespace, caller.podName);
    if (!pod) throw refuse(`pod ${podRef} not found`);
    if (pod.uid !== caller.podUid) throw refuse(`pod UID does not match (pod ${podRef} has UID ${pod.uid}, the token names ${caller.podUid})`);
    if (pod.serviceAccount !== caller.serviceAccount) {
      throw refuse(`pod ${podRef} runs as service account ${pod.serviceAccount}, not ${caller.serviceAccount}`);
    }
    if (!pod.nodeName) throw refuse(`pod ${podRef} is not scheduled on a node`);
    if (!pods.hasPodOnNode(target.namespace, target.serviceAccount, pod.nodeName)) {
      throw refuse(`no pod of ${target.namespace}/${target.serviceAccount} on node ${pod.nodeName}`);
    }
    return impersonated;
  }
}
