/**
 * Starts the real svid-ca service (real gRPC over TLS on a loopback port, real monitoring
 * listener) and gives tests a real @grpc/grpc-js client that verifies the serving certificate
 * against the root, plus a JWT issuer whose JWKS the server reads from a file.
 */
import { Writable } from 'node:stream';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair as joseKeyPair, SignJWT, type CryptoKey } from 'jose';
import * as grpc from '@grpc/grpc-js';
import { createCaClient, type CaClient } from '../../src/client/index.js';
import { createLogger, type Logger } from '../../src/observability/index.js';
import { startService, type RunningService, type ServiceOptions } from '../../src/server/index.js';
import type { IstioCertificateResponse } from '../../src/server/index.js';
import { tempDir } from './pki.js';
import { within } from './deadline.js';

export const TEST_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** Every log line written by every server started in this test file, for secret-leak checks. */
export const allLogLines: string[] = [];

export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line) {
        this.lines.push(line);
        allLogLines.push(line);
      }
    }
    cb();
  }
  records(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

export interface TestIssuer {
  issuer: string;
  jwksFile: string;
  privateKey: CryptoKey;
  kid: string;
  token(claims: TokenClaims): Promise<string>;
}

export interface TokenClaims {
  namespace: string;
  serviceAccount: string;
  pod?: string;
  podUid?: string;
  audience?: string | string[];
  issuer?: string;
  expiresInSeconds?: number;
  notBeforeOffsetSeconds?: number;
  /** Override sub entirely. */
  sub?: string;
  /** Sign with another key (signature/kid tests). */
  signWith?: { key: CryptoKey; kid: string };
}

export async function createTestIssuer(dir = tempDir('svid-ca-jwks-')): Promise<TestIssuer> {
  const { privateKey, publicKey } = await joseKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const jwksFile = join(dir, 'jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...jwk, kid, alg: 'ES256', use: 'sig' }] }));
  return {
    issuer: TEST_ISSUER,
    jwksFile,
    privateKey,
    kid,
    async token(c: TokenClaims) {
      const now = Math.floor(Date.now() / 1000);
      const k8s: Record<string, unknown> = { namespace: c.namespace, serviceaccount: { name: c.serviceAccount, uid: 'sa-uid' } };
      if (c.pod) k8s.pod = { name: c.pod, uid: c.podUid ?? 'pod-uid' };
      const jwt = new SignJWT({ 'kubernetes.io': k8s })
        .setProtectedHeader({ alg: 'ES256', kid: c.signWith?.kid ?? kid })
        .setIssuer(c.issuer ?? TEST_ISSUER)
        .setSubject(c.sub ?? `system:serviceaccount:${c.namespace}:${c.serviceAccount}`)
        .setAudience(c.audience ?? 'istio-ca')
        .setIssuedAt(now)
        .setExpirationTime(now + (c.expiresInSeconds ?? 3600));
      if (c.notBeforeOffsetSeconds !== undefined) jwt.setNotBefore(now + c.notBeforeOffsetSeconds);
      return jwt.sign(c.signWith?.key ?? privateKey);
    },
  };
}

export interface TestServer {
  service: RunningService;
  logs: LogCapture;
  logger: Logger;
  address: string;
  options: ServiceOptions;
  close(): Promise<void>;
}

export async function startTestServer(o: { cacerts: string; issuer: TestIssuer } & Partial<ServiceOptions>): Promise<TestServer> {
  const { issuer, ...rest } = o;
  const options: ServiceOptions = {
    listen: { host: '127.0.0.1', port: 0 },
    monitoringListen: { host: '127.0.0.1', port: 0 },
    trustDomain: 'cluster.local',
    defaultTtlMs: 24 * 3600_000,
    maxTtlMs: 2160 * 3600_000,
    servingDns: ['svid-ca.istio-system.svc', 'localhost'],
    servingCertTtlMs: 24 * 3600_000,
    jwt: { issuer: issuer.issuer, audience: 'istio-ca', jwksFile: issuer.jwksFile },
    clusterId: undefined,
    // issue #14: SVID_CA_GRPC_FAST_PATH=false runs the in-process servers on grpc-js alone, as the CLI does.
    grpcFastPath: !/^(0|false|no|off)$/i.test(process.env.SVID_CA_GRPC_FAST_PATH ?? ''),
    ...rest,
  };
  const logs = new LogCapture();
  const logger = createLogger('debug', logs);
  const service = await startService(options, logger);
  return {
    service,
    logs,
    logger,
    options,
    address: `localhost:${service.grpcPort}`,
    close: () => within(service.close(2000), 15_000, 'the test server to close'),
  };
}

export function clientFor(server: TestServer, rootPem: string): CaClient {
  return createCaClient({ address: server.address, rootPem });
}

/** One CreateCertificate call; resolves with the response or the grpc ServiceError (never rejects). */
export function call(
  client: CaClient,
  request: Record<string, unknown>,
  metadata: Record<string, string> = {},
): Promise<{ res?: IstioCertificateResponse; err?: grpc.ServiceError }> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve) => {
    client.CreateCertificate(request, md, { deadline: Date.now() + 15_000 }, (err, res) => resolve(err ? { err } : { res: res! }));
  });
}

export async function fetchText(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text() };
}
