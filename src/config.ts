import { LOG_LEVELS } from './observability/index.js';
import { ConfigError, parseFlags, type FlagSource, type FlagSpec, type HostPort } from './flags.js';
import { formatGoDuration, parseDuration } from './duration.js';
import { parseGrace, type Grace } from './ca/index.js';
import { KEY_SPECS, type KeySpec } from './pki/index.js';

export { ConfigError } from './flags.js';

/** `svid-ca serve` flags. Names are part of the interface: add freely, never rename. */
export const SERVE_FLAGS: readonly FlagSpec[] = [
  { name: 'cacerts', kind: 'string', default: '/etc/cacerts', help: 'cacerts folder: Istio layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) or Kubernetes TLS layout (tls.crt, tls.key, ca.crt)' },
  { name: 'listen', kind: 'hostport', default: '0.0.0.0:15012', help: 'gRPC over TLS (ALPN h2, TLS >= 1.2)' },
  { name: 'monitoring-listen', kind: 'hostport', default: '0.0.0.0:15014', help: 'plain HTTP /healthz, /readyz, /metrics' },
  { name: 'trust-domain', kind: 'string', default: 'cluster.local', help: 'SPIFFE trust domain of issued identities' },
  { name: 'default-ttl', kind: 'duration', default: '24h', istioEnv: 'DEFAULT_WORKLOAD_CERT_TTL', help: 'lifetime when validity_duration <= 0' },
  { name: 'max-ttl', kind: 'duration', default: '2160h', istioEnv: 'MAX_WORKLOAD_CERT_TTL', help: 'longest lifetime a caller may ask for; above it: INVALID_ARGUMENT' },
  { name: 'serving-dns', kind: 'list', default: 'svid-ca.istio-system.svc,localhost', help: "DNS SANs of svid-ca's own serving certificate (the host of the agents' CA_ADDR)" },
  { name: 'serving-cert-ttl', kind: 'duration', default: '24h', help: "lifetime of svid-ca's own serving certificate (clamped to the signer)" },
  { name: 'jwt-issuer', kind: 'string', help: 'issuer (iss) of Kubernetes service-account tokens, e.g. https://kubernetes.default.svc.cluster.local' },
  { name: 'jwks-file', kind: 'string', help: "file holding the token issuer's JWKS (kubectl get --raw /openid/v1/jwks)" },
  { name: 'jwks-uri', kind: 'string', help: "URL of the token issuer's JWKS" },
  { name: 'jwt-audience', kind: 'string', default: 'istio-ca', help: 'audience the token must carry' },
  { name: 'cluster-id', kind: 'string', help: 'when set, a non-empty clusterid header naming another cluster is UNAUTHENTICATED' },
  { name: 'log-level', kind: 'string', default: 'info', help: `one of ${LOG_LEVELS.join(', ')}` },
  { name: 'reload-interval', kind: 'duration', default: '10s', help: 'poll the cacerts folder this often, besides watching it' },
  { name: 'allow-root-replacement', kind: 'boolean', help: 'accept a reload whose root bundle shares no root with the current one (breaks workloads that trust only the old root)' },
  { name: 'serving-cert-grace', kind: 'string', default: '50%', help: 'renew the serving certificate when less than this remains: a percentage of its life or a duration' },
  { name: 'signer-expiry-warning', kind: 'duration', default: '720h', help: 'warn when the signing certificate expires within this' },
  { name: 'self-signed', kind: 'boolean', help: 'no cacerts: make and use a self-signed root (bootstrapping only)' },
  { name: 'self-signed-dir', kind: 'string', help: 'persist the self-signed root here (key mode 0600); in memory only when unset' },
  { name: 'self-signed-ttl', kind: 'duration', default: '87600h', istioEnv: 'CITADEL_SELF_SIGNED_CA_CERT_TTL', help: 'lifetime of the self-signed root' },
  { name: 'self-signed-key', kind: 'string', default: 'ec-p256', help: 'key of the self-signed root: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096' },
  { name: 'root-grace-percentile', kind: 'int', default: '20', istioEnv: 'CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE', help: 're-issue the self-signed root (same key) when less than this percentage of its life remains' },
  { name: 'root-check-interval', kind: 'duration', default: '1h', istioEnv: 'CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL', help: 'how often the self-signed root is checked for re-issue' },
  { name: 'dev', kind: 'boolean', help: 'development mode: create and use the dev CA and JWT issuer in certs-dev/, listen on loopback' },
  { name: 'dev-dir', kind: 'string', help: 'where the dev CA lives (default: certs-dev/ of the package)' },
];

export interface JwtConfig {
  issuer: string;
  audience: string;
  jwksFile?: string | undefined;
  jwksUri?: string | undefined;
}

export interface SelfSignedConfig {
  dir: string | undefined;
  ttlMs: number;
  key: KeySpec;
  gracePercentile: number;
  checkIntervalMs: number;
}

export interface ServeConfig {
  cacerts: string;
  listen: HostPort;
  monitoringListen: HostPort;
  trustDomain: string;
  defaultTtlMs: number;
  maxTtlMs: number;
  servingDns: string[];
  servingCertTtlMs: number;
  jwt: JwtConfig | undefined;
  clusterId: string | undefined;
  reloadIntervalMs: number;
  allowRootReplacement: boolean;
  servingCertGrace: Grace;
  signerExpiryWarningMs: number;
  selfSigned: SelfSignedConfig | undefined;
  logLevel: string;
  dev: boolean;
  devDir: string | undefined;
  /** Where each setting came from, for the startup log. */
  sources: Record<string, string>;
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;

export function parseServeConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ServeConfig {
  const { values, sources } = parseFlags(SERVE_FLAGS, argv, env, { envPrefix: 'SVID_CA_' });
  const str = (n: string) => values.get(n) as string | undefined;
  const ms = (n: string) => values.get(n) as number;
  const cfg: ServeConfig = {
    cacerts: str('cacerts')!,
    listen: values.get('listen') as HostPort,
    monitoringListen: values.get('monitoring-listen') as HostPort,
    trustDomain: str('trust-domain')!,
    defaultTtlMs: ms('default-ttl'),
    maxTtlMs: ms('max-ttl'),
    servingDns: values.get('serving-dns') as string[],
    servingCertTtlMs: ms('serving-cert-ttl'),
    jwt: undefined,
    clusterId: str('cluster-id'),
    reloadIntervalMs: ms('reload-interval'),
    allowRootReplacement: values.get('allow-root-replacement') as boolean,
    servingCertGrace: { fraction: 0.5 },
    signerExpiryWarningMs: ms('signer-expiry-warning'),
    selfSigned: undefined,
    logLevel: str('log-level')!,
    dev: values.get('dev') as boolean,
    devDir: str('dev-dir'),
    sources: Object.fromEntries(
      [...sources].map(([k, v]) => [k, v.variable ? `${v.source} ${v.variable}` : (v.source satisfies FlagSource)]),
    ),
  };
  if (!TRUST_DOMAIN.test(cfg.trustDomain)) throw new ConfigError(`--trust-domain: invalid value "${cfg.trustDomain}" (lower-case letters, digits, '.', '-', '_')`);
  if (!LOG_LEVELS.includes(cfg.logLevel as never)) throw new ConfigError(`--log-level: invalid value "${cfg.logLevel}" (want one of ${LOG_LEVELS.join(', ')})`);
  if (cfg.maxTtlMs < 1000) throw new ConfigError('--max-ttl: must be at least 1s');
  if (cfg.defaultTtlMs < 1000) throw new ConfigError('--default-ttl: must be at least 1s');
  if (cfg.defaultTtlMs > cfg.maxTtlMs) {
    throw new ConfigError(`--default-ttl: ${formatGoDuration(cfg.defaultTtlMs)} is greater than --max-ttl ${formatGoDuration(cfg.maxTtlMs)}`);
  }
  if (cfg.servingCertTtlMs < 1000) throw new ConfigError('--serving-cert-ttl: must be at least 1s');
  if (cfg.servingDns.length === 0) throw new ConfigError('--serving-dns: at least one DNS name is required');
  if (cfg.reloadIntervalMs < 1000) throw new ConfigError('--reload-interval: must be at least 1s');
  const grace = parseGrace(str('serving-cert-grace')!, parseDuration);
  if (!grace) throw new ConfigError(`--serving-cert-grace: invalid value "${str('serving-cert-grace')}" (want a percentage such as 50% or a duration such as 6h)`);
  cfg.servingCertGrace = grace;
  if (values.get('self-signed')) {
    const key = str('self-signed-key')!;
    if (!KEY_SPECS.includes(key as KeySpec)) throw new ConfigError(`--self-signed-key: invalid value "${key}" (want one of ${KEY_SPECS.join(', ')})`);
    const pct = values.get('root-grace-percentile') as number;
    if (pct < 1 || pct > 99) throw new ConfigError(`--root-grace-percentile: invalid value "${pct}" (want 1 to 99)`);
    cfg.selfSigned = { dir: str('self-signed-dir'), ttlMs: ms('self-signed-ttl'), key: key as KeySpec, gracePercentile: pct, checkIntervalMs: ms('root-check-interval') };
  }
  const jwksFile = str('jwks-file');
  const jwksUri = str('jwks-uri');
  const issuer = str('jwt-issuer');
  if (jwksFile && jwksUri) throw new ConfigError('--jwks-file and --jwks-uri: give one, not both');
  if ((jwksFile || jwksUri) && !issuer) throw new ConfigError('--jwt-issuer: required with --jwks-file or --jwks-uri');
  if (issuer && !jwksFile && !jwksUri) throw new ConfigError('--jwt-issuer: needs --jwks-file or --jwks-uri to verify tokens');
  if (jwksUri) {
    let url: URL;
    try {
      url = new URL(jwksUri);
    } catch {
      throw new ConfigError(`--jwks-uri: invalid value "${jwksUri}" (want an https:// URL)`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(`--jwks-uri: invalid value "${jwksUri}" (want an https:// URL)`);
  }
  if (issuer) cfg.jwt = { issuer, audience: str('jwt-audience')!, jwksFile, jwksUri };
  return cfg;
}

/** Checks that need the final config (after --dev filled in its defaults). */
export function requireAuthenticator(cfg: ServeConfig): void {
  if (!cfg.jwt) throw new ConfigError('--jwt-issuer: no authenticator configured; set --jwt-issuer with --jwks-file or --jwks-uri');
}
