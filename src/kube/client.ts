import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { AuthenticationV1Api, CertificatesV1alpha1Api, CertificatesV1beta1Api, CoordinationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';

/** The API clients svid-ca uses, all from one KubeConfig. */
export interface KubeClients {
  config: KubeConfig;
  core: CoreV1Api;
  authentication: AuthenticationV1Api;
  coordination: CoordinationV1Api;
  /** ClusterTrustBundles (issue #16): v1beta1, or v1alpha1 where only that is served. */
  certificates: { v1beta1: CertificatesV1beta1Api; v1alpha1: CertificatesV1alpha1Api };
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * A KubeConfig from `--kubeconfig PATH`, or the in-cluster service account (token file re-read by
 * client-node, so projected token rotation works). Fails early with a message that says what to set.
 */
export function loadKubeConfig(kubeconfig: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) {
    kc.loadFromFile(kubeconfig);
    if (!kc.getCurrentCluster()) throw new Error(`--kubeconfig ${kubeconfig}: no current cluster in the file`);
    return kc;
  }
  if (!process.env.KUBERNETES_SERVICE_HOST || !existsSync(`${SA_DIR}/token`)) {
    throw new Error('not running in a Kubernetes pod (no KUBERNETES_SERVICE_HOST or service-account token): set --kubeconfig PATH');
  }
  kc.loadFromCluster();
  return kc;
}

export function createKubeClients(kubeconfig: string | undefined): KubeClients {
  const config = loadKubeConfig(kubeconfig);
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    authentication: config.makeApiClient(AuthenticationV1Api),
    coordination: config.makeApiClient(CoordinationV1Api),
    certificates: { v1beta1: config.makeApiClient(CertificatesV1beta1Api), v1alpha1: config.makeApiClient(CertificatesV1alpha1Api) },
  };
}

/** The pod's namespace: POD_NAMESPACE, else the service-account namespace file, else istio-system. */
export function podNamespace(env: NodeJS.ProcessEnv = process.env, namespaceFile = `${SA_DIR}/namespace`): string {
  if (env.POD_NAMESPACE) return env.POD_NAMESPACE;
  try {
    const ns = readFileSync(namespaceFile, 'utf8').trim();
    if (ns) return ns;
  } catch {
    // not in a pod
  }
  return 'istio-system';
}

/** A Lease holder identity: the pod name plus a random suffix, so a restarted pod is a new holder. */
export function holderIdentity(env: NodeJS.ProcessEnv = process.env): string {
  return `${env.POD_NAME || hostname()}_${randomBytes(4).toString('hex')}`;
}
