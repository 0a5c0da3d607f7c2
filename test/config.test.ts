import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseServeConfig, ConfigError } from '../src/config.js';
import { formatGoDuration, parseDuration } from '../src/duration.js';

describe('durations', () => {
  it.each([
    ['90s', 90_000],
    ['15m', 900_000],
    ['24h', 86_400_000],
    ['2160h', 2160 * 3_600_000],
    ['1h30m', 5_400_000],
    ['30d', 30 * 86_400_000],
    ['1.5h', 5_400_000],
    ['500ms', 500],
    ['0', 0],
  ])('parses %s', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['', 'abc', '10', '-5m', '5x', 'h', '1h 30m'])('refuses %j', (text) => expect(parseDuration(text)).toBeUndefined());

  it.each([
    [3 * 3_600_000, '3h0m0s'],
    [2 * 3_600_000, '2h0m0s'],
    [90_000, '1m30s'],
    [45_000, '45s'],
    [0, '0s'],
    [2160 * 3_600_000 + 1000, '2160h0m1s'],
  ])('formats %d ms as Go does: %s', (ms, text) => expect(formatGoDuration(ms)).toBe(text));
});

describe('serve configuration', () => {
  it('has the documented defaults', () => {
    const c = parseServeConfig([], {});
    expect(c.cacerts).toBe('/etc/cacerts');
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 15012 });
    expect(c.monitoringListen).toEqual({ host: '0.0.0.0', port: 15014 });
    expect(c.trustDomain).toBe('cluster.local');
    expect(c.defaultTtlMs).toBe(86_400_000);
    expect(c.maxTtlMs).toBe(2160 * 3_600_000);
    expect(c.servingDns).toEqual(['svid-ca.istio-system.svc', 'localhost']);
    expect(c.logLevel).toBe('info');
    expect(c.clusterId).toBeUndefined();
    expect(c.sources['max-ttl']).toBe('default');
  });

  it('precedence: flag, then SVID_CA_*, then Istio variable, then default', () => {
    const env = { SVID_CA_MAX_TTL: '48h', MAX_WORKLOAD_CERT_TTL: '72h', DEFAULT_WORKLOAD_CERT_TTL: '12h' };
    expect(parseServeConfig(['--max-ttl', '24h'], env).maxTtlMs).toBe(24 * 3_600_000);
    const fromEnv = parseServeConfig([], env);
    expect(fromEnv.maxTtlMs).toBe(48 * 3_600_000);
    expect(fromEnv.sources['max-ttl']).toBe('env SVID_CA_MAX_TTL');
    expect(fromEnv.defaultTtlMs).toBe(12 * 3_600_000);
    expect(fromEnv.sources['default-ttl']).toBe('istio-env DEFAULT_WORKLOAD_CERT_TTL');
    expect(parseServeConfig([], { MAX_WORKLOAD_CERT_TTL: '72h' }).maxTtlMs).toBe(72 * 3_600_000);
    expect(parseServeConfig(['--max-ttl=36h'], {}).maxTtlMs).toBe(36 * 3_600_000);
  });

  it('reads every flag from its SVID_CA_ variable', () => {
    const c = parseServeConfig([], {
      SVID_CA_CACERTS: '/x',
      SVID_CA_LISTEN: '127.0.0.1:9000',
      SVID_CA_MONITORING_LISTEN: ':9001',
      SVID_CA_TRUST_DOMAIN: 'example.org',
      SVID_CA_SERVING_DNS: 'a.svc, b.svc',
      SVID_CA_JWT_ISSUER: 'https://issuer',
      SVID_CA_JWKS_FILE: '/jwks.json',
      SVID_CA_JWT_AUDIENCE: 'aud',
      SVID_CA_CLUSTER_ID: 'c1',
      SVID_CA_LOG_LEVEL: 'debug',
    });
    expect(c).toMatchObject({
      cacerts: '/x',
      listen: { host: '127.0.0.1', port: 9000 },
      monitoringListen: { host: '0.0.0.0', port: 9001 },
      trustDomain: 'example.org',
      servingDns: ['a.svc', 'b.svc'],
      jwt: { issuer: 'https://issuer', jwksFile: '/jwks.json', audience: 'aud' },
      clusterId: 'c1',
      logLevel: 'debug',
    });
  });

  it.each([
    [['--max-ttl', 'soon'], /--max-ttl: invalid value "soon"/],
    [['--listen', 'nowhere'], /--listen: invalid value "nowhere"/],
    [['--log-level', 'loud'], /--log-level: invalid value "loud"/],
    [['--bogus'], /unknown flag --bogus/],
    [['--default-ttl', '48h', '--max-ttl', '24h'], /--default-ttl: 48h0m0s is greater than --max-ttl 24h0m0s/],
    [['--jwks-file', '/x'], /--jwt-issuer: required/],
    [['--jwt-issuer', 'x', '--jwks-file', '/a', '--jwks-uri', 'https://b'], /give one, not both/],
    [['--trust-domain', 'Bad Domain'], /--trust-domain: invalid value/],
  ])('refuses %j', (argv, message) => {
    expect(() => parseServeConfig(argv as string[], {})).toThrow(ConfigError);
    expect(() => parseServeConfig(argv as string[], {})).toThrow(message);
  });

  it('issue #19 transport limits: documented defaults, SVID_CA_ variables, and bad values named', () => {
    expect(parseServeConfig([], {}).transport).toEqual({
      handshakeTimeoutMs: 5_000,
      maxHandshakes: 1024,
      maxHandshakesPerSource: 64,
      maxConnectionsPerSource: 1000,
      unauthenticatedStreams: 8,
      unauthenticatedWindowBytes: 16_384,
      requestReceiveTimeoutMs: 10_000,
      maxConnectionRequestBytes: 1_048_576,
      maxSourceRequestBytes: 8_388_608,
      maxBufferedRequestBytes: 67_108_864,
    });
    const c = parseServeConfig(['--handshake-timeout', '2s', '--max-connections-per-source', '50'], { SVID_CA_MAX_BUFFERED_REQUEST_BYTES: '33554432' });
    expect(c.transport).toMatchObject({ handshakeTimeoutMs: 2000, maxConnectionsPerSource: 50, maxBufferedRequestBytes: 33_554_432 });
    expect(() => parseServeConfig(['--handshake-timeout', '10m'], {})).toThrow(/--handshake-timeout: must be between/);
    expect(() => parseServeConfig(['--unauthenticated-streams', '0'], {})).toThrow(/--unauthenticated-streams: must be at least 1/);
    expect(() => parseServeConfig(['--max-buffered-request-bytes', '2048'], {})).toThrow(/--max-buffered-request-bytes: must be at least --max-source-request-bytes/);
  });

  it('issue #14 --grpc-fast-path: on by default, off with --no-grpc-fast-path or SVID_CA_GRPC_FAST_PATH=false', () => {
    expect(parseServeConfig([], {}).grpcFastPath).toBe(true);
    expect(parseServeConfig(['--no-grpc-fast-path'], {}).grpcFastPath).toBe(false);
    expect(parseServeConfig([], { SVID_CA_GRPC_FAST_PATH: 'false' }).grpcFastPath).toBe(false);
    expect(parseServeConfig(['--grpc-fast-path'], { SVID_CA_GRPC_FAST_PATH: 'false' }).grpcFastPath).toBe(true);
    expect(() => parseServeConfig([], { SVID_CA_GRPC_FAST_PATH: 'maybe' })).toThrow(/--grpc-fast-path \(from SVID_CA_GRPC_FAST_PATH\)/);
  });

  it('names the variable when an environment value is bad', () => {
    expect(() => parseServeConfig([], { SVID_CA_MAX_TTL: 'x' })).toThrow(/--max-ttl \(from SVID_CA_MAX_TTL\): invalid value "x"/);
  });
});

describe('the svid-ca command', () => {
  const cli = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, ['dist/cli.js', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });

  it('exits 2 with one line naming the flag on a bad value', () => {
    const r = cli(['serve', '--max-ttl', 'forever']);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('--max-ttl');
  });

  it('exits 2 on an unknown command or flag', () => {
    expect(cli(['sign']).status).toBe(2);
    const r = cli(['serve', '--nope']);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('svid-ca: unknown flag --nope');
  });

  it('exits 2 when no authenticator is configured', () => {
    const r = cli(['serve', '--cacerts', '/nonexistent']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/no authenticator/);
  });

  it('prints help for each command', () => {
    const out = execFileSync(process.execPath, ['dist/cli.js', 'help', 'serve'], { encoding: 'utf8' });
    for (const flag of ['--cacerts', '--listen', '--monitoring-listen', '--trust-domain', '--default-ttl', '--max-ttl', '--serving-dns', '--jwt-issuer', '--jwks-file', '--jwks-uri', '--jwt-audience', '--cluster-id', '--log-level']) {
      expect(out).toContain(flag);
    }
    expect(out).toContain('SVID_CA_MAX_TTL');
    expect(out).toContain('MAX_WORKLOAD_CERT_TTL');
  });
});

describe('issue #19 flags', () => {
  it('--max-csr-bytes, --max-pending-share, --client-cert-max-ttl: defaults, SVID_CA_ variables, bounds', () => {
    const d = parseServeConfig([], {});
    expect([d.maxCsrBytes, d.maxPendingSharePercent, d.clientCertMaxTtlMs]).toEqual([8192, 10, 86_400_000]);
    const e = parseServeConfig([], { SVID_CA_MAX_CSR_BYTES: '4096', SVID_CA_MAX_PENDING_SHARE: '25', SVID_CA_CLIENT_CERT_MAX_TTL: '2h' });
    expect([e.maxCsrBytes, e.maxPendingSharePercent, e.clientCertMaxTtlMs]).toEqual([4096, 25, 7_200_000]);
    expect(() => parseServeConfig(['--max-csr-bytes', '100'], {})).toThrow(ConfigError);
    expect(() => parseServeConfig(['--max-csr-bytes', '70000'], {})).toThrow('--max-csr-bytes: must be between 1024 and --max-request-bytes');
    expect(() => parseServeConfig(['--max-pending-share', '0'], {})).toThrow('--max-pending-share');
    expect(() => parseServeConfig(['--max-pending-share', '101'], {})).toThrow('--max-pending-share');
    expect(() => parseServeConfig(['--client-cert-max-ttl', '30s'], {})).toThrow('--client-cert-max-ttl: must be at least 1m');
  });
});
