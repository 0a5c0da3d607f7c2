/** SPIFFE IDs for Kubernetes service accounts, as Istio writes them. */
export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** Kubernetes namespace and service-account names: DNS-1123 labels / subdomains. */
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function isKubernetesName(s: string): boolean {
  return K8S_NAME.test(s);
}

/** `system:serviceaccount:<ns>:<sa>` -> [ns, sa], or undefined. */
export function parseServiceAccountUsername(username: string): [string, string] | undefined {
  const parts = username.split(':');
  if (parts.length !== 4 || parts[0] !== 'system' || parts[1] !== 'serviceaccount') return undefined;
  const [ns, sa] = [parts[2]!, parts[3]!];
  return isKubernetesName(ns) && isKubernetesName(sa) ? [ns, sa] : undefined;
}
