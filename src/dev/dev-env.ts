import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, exportJWK, importPKCS8, SignJWT } from 'jose';
import { createIntermediateCa, createRootCa } from '../ca/index.js';
import { generateKeyPair, privateKeyPem } from '../pki/index.js';

/** The dev token issuer; only tokens from certs-dev/ carry it. */
export const DEV_ISSUER = 'https://svid-ca.dev.invalid';
export const DEV_GRPC_LISTEN = '127.0.0.1:15012';
export const DEV_MONITORING_LISTEN = '127.0.0.1:15014';

/** certs-dev/ at the package root (two levels above dist/dev or src/dev). */
export function defaultDevDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'certs-dev');
}

export interface DevEnvironment {
  dir: string;
  cacertsDir: string;
  jwksFile: string;
  signingKeyFile: string;
  issuer: string;
  /** True when this call created the CA (first run). */
  created: boolean;
}

/** Writes a file atomically; private keys get mode 0600. */
export function writeFileAtomic(path: string, data: string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/** Creates, on first run, a dev root + intermediate (Istio layout) and a dev JWT issuer key with its JWKS. */
export async function ensureDevEnvironment(dir: string = defaultDevDir()): Promise<DevEnvironment> {
  const env: DevEnvironment = {
    dir,
    cacertsDir: join(dir, 'cacerts'),
    jwksFile: join(dir, 'jwt', 'jwks.json'),
    signingKeyFile: join(dir, 'jwt', 'signing-key.pem'),
    issuer: DEV_ISSUER,
    created: false,
  };
  if (!existsSync(join(env.cacertsDir, 'ca-key.pem'))) {
    const root = createRootCa({ key: 'ec-p256', ttlMs: 10 * 365 * 86_400_000, organization: 'svid-ca dev', commonName: 'svid-ca dev root' });
    const files = createIntermediateCa({ root, key: 'ec-p256', ttlMs: 365 * 86_400_000, organization: 'svid-ca dev', commonName: 'svid-ca dev intermediate' });
    writeFileAtomic(join(dir, 'root', 'root-key.pem'), root.keyPem, 0o600);
    writeFileAtomic(join(dir, 'root', 'root-cert.pem'), root.certPem);
    for (const [name, text] of Object.entries(files)) {
      writeFileAtomic(join(env.cacertsDir, name), text, name.endsWith('key.pem') ? 0o600 : 0o644);
    }
    env.created = true;
  }
  if (!existsSync(env.signingKeyFile)) {
    // RSA-2048 / RS256, as kube-apiserver signs service-account tokens by default (kubeadm's sa.key,
    // EKS, GKE and AKS issuers): the dev tokens cost what real ones cost to verify.
    const { privateKey } = generateKeyPair('rsa-2048');
    const jwk = await exportJWK(createPrivateKey(privateKeyPem(privateKey)));
    const publicJwk = { kty: jwk.kty, n: jwk.n, e: jwk.e };
    const kid = await calculateJwkThumbprint(publicJwk);
    writeFileAtomic(env.signingKeyFile, privateKeyPem(privateKey), 0o600);
    writeFileAtomic(env.jwksFile, JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'RS256', use: 'sig' }] }, null, 2) + '\n');
    env.created = true;
  }
  return env;
}

export interface DevTokenOptions {
  namespace: string;
  serviceAccount: string;
  podName?: string | undefined;
  audience?: string;
  ttlSeconds?: number;
}

/** A token shaped like a Kubernetes projected service-account token, signed by the dev issuer. */
export async function mintDevToken(env: DevEnvironment, o: DevTokenOptions): Promise<string> {
  const jwks = JSON.parse(readFileSync(env.jwksFile, 'utf8')) as { keys: { kid: string; alg?: string }[] };
  // Dev environments made before the switch to RS256 hold an ES256 key: sign with what the JWKS says.
  const alg = jwks.keys[0]!.alg ?? 'RS256';
  const key = await importPKCS8(readFileSync(env.signingKeyFile, 'utf8'), alg);
  const k8s: Record<string, unknown> = { namespace: o.namespace, serviceaccount: { name: o.serviceAccount, uid: crypto.randomUUID() } };
  if (o.podName) k8s.pod = { name: o.podName, uid: crypto.randomUUID() };
  return new SignJWT({ 'kubernetes.io': k8s })
    .setProtectedHeader({ alg, kid: jwks.keys[0]!.kid, typ: 'JWT' })
    .setIssuer(env.issuer)
    .setSubject(`system:serviceaccount:${o.namespace}:${o.serviceAccount}`)
    .setAudience(o.audience ?? 'istio-ca')
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + (o.ttlSeconds ?? 3600))
    .sign(key);
}
