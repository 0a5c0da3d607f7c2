/** The Kubernetes serve flags (no API server needed): defaults, env, validation, requireAuthenticator. */
import { describe, expect, it } from 'vitest';
import { ConfigError, parseServeConfig, requireAuthenticator } from '../src/config.js';
import { podNamespace } from '../src/kube/index.js';

describe('Kubernetes serve flags', () => {
  it('are off by default and then need no API server', () => {
    const c = parseServeConfig([], {});
    expect(c.kubernetes).toBeUndefined();
    expect(c.clientCertAuth).toBe(false);
  });

  it('--token-review uses --jwt-audience and the documented defaults', () => {
    const c = parseServeConfig(['--token-review', '--jwt-audience', 'mesh-ca'], {});
    expect(c.kubernetes?.tokenReview).toEqual({ audiences: ['mesh-ca'], cacheTtlMs: 60_000, concurrency: 32 });
    expect(c.kubernetes?.kubeconfig).toBeUndefined();
  });

  it('reads SVID_CA_* environment variables', () => {
    const c = parseServeConfig([], {
      SVID_CA_TOKEN_REVIEW: 'true',
      SVID_CA_TOKEN_REVIEW_CACHE_TTL: '30s',
      SVID_CA_TOKEN_REVIEW_CONCURRENCY: '8',
      SVID_CA_KUBECONFIG: '/k/config',
      SVID_CA_TRUSTED_NODE_ACCOUNTS: 'istio-system/ztunnel',
    });
    expect(c.kubernetes).toMatchObject({ kubeconfig: '/k/config', tokenReview: { cacheTtlMs: 30_000, concurrency: 8 }, trustedNodeAccounts: ['istio-system/ztunnel'] });
  });

  it('any of JWT, TokenReview or client-cert satisfies requireAuthenticator', () => {
    expect(() => requireAuthenticator(parseServeConfig([], {}))).toThrow(ConfigError);
    expect(() => requireAuthenticator(parseServeConfig(['--token-review'], {}))).not.toThrow();
    expect(() => requireAuthenticator(parseServeConfig(['--client-cert-auth'], {}))).not.toThrow();
    expect(() => requireAuthenticator(parseServeConfig(['--jwt-issuer', 'https://k', '--jwks-file', '/j'], {}))).not.toThrow();
  });

  it('--istiod-cert-secret with --istiod-dns default istiod.istio-system.svc', () => {
    const c = parseServeConfig(['--istiod-cert-secret', 'istio-system/istiod-tls'], {});
    expect(c.kubernetes?.istiodCert).toEqual({ namespace: 'istio-system', name: 'istiod-tls', dnsNames: ['istiod.istio-system.svc'], ttlMs: 86_400_000 });
  });

  it('--publish-root-configmap with a namespace selector and a leader-election namespace', () => {
    const c = parseServeConfig(['--publish-root-configmap', '--root-configmap-namespace-selector', 'istio-injection=enabled', '--leader-election-namespace', 'mesh'], {});
    expect(c.kubernetes).toMatchObject({ publishRootConfigMap: { namespaceSelector: 'istio-injection=enabled' }, leaderElectionNamespace: 'mesh' });
  });

  it('--publish-crl-configmap and --publish-cluster-trust-bundle (issue #16), the namespace selector shared with the root ConfigMap', () => {
    const c = parseServeConfig(['--publish-crl-configmap', '--root-configmap-namespace-selector', 'mesh=on', '--publish-cluster-trust-bundle'], {});
    expect(c.kubernetes).toMatchObject({ publishCrlConfigMap: { namespaceSelector: 'mesh=on' }, publishClusterTrustBundle: {} });
    expect(c.kubernetes?.publishRootConfigMap).toBeUndefined();
    const env = parseServeConfig([], { SVID_CA_PUBLISH_CRL_CONFIGMAP: 'true', SVID_CA_PUBLISH_CLUSTER_TRUST_BUNDLE: 'true' });
    expect(env.kubernetes).toMatchObject({ publishCrlConfigMap: { namespaceSelector: undefined }, publishClusterTrustBundle: {} });
  });

  it.each([
    [['--trusted-node-accounts', 'ztunnel'], '--trusted-node-accounts: invalid entry "ztunnel"'],
    [['--trusted-node-accounts', 'istio-system/ztunnel/x'], '--trusted-node-accounts: invalid entry'],
    [['--istiod-cert-secret', 'istiod-tls'], '--istiod-cert-secret: invalid value "istiod-tls"'],
    [['--token-review', '--token-review-concurrency', '0'], '--token-review-concurrency: must be at least 1'],
    [['--root-configmap-namespace-selector', 'a=b'], 'only meaningful with --publish-root-configmap'],
    [['--root-configmap-namespace-selector', 'a=b'], '--root-configmap-namespace-selector: only meaningful with --publish-root-configmap or --publish-crl-configmap'],
  ])('refuses %j', (argv, message) => {
    expect(() => parseServeConfig(argv, {})).toThrow(message);
  });

  it("the Lease namespace defaults to POD_NAMESPACE, then the service-account namespace file, then istio-system", () => {
    expect(podNamespace({ POD_NAMESPACE: 'mesh' }, '/nonexistent')).toBe('mesh');
    expect(podNamespace({}, '/nonexistent')).toBe('istio-system');
  });
});
