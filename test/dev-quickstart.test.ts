/** The README's first minute: serve --dev, dev-token, request — the real command, as a newcomer runs it. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeProtectedHeader, exportJWK, createLocalJWKSet, jwtVerify } from 'jose';
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureDevEnvironment, mintDevToken } from '../src/dev/index.js';
import { opensslVerify, removeDir, tempDir } from './helpers/pki.js';
import { freePort, startCli, waitForStatus, type CliProcess } from './helpers/process.js';
import { tool } from './helpers/tools.js';

const work = tempDir('svid-ca-quickstart-');
let server: CliProcess | undefined;
afterAll(async () => {
  server?.child.kill('SIGTERM');
  await server?.exited;
  removeDir(work);
});

describe('dev quick start', () => {
  it('serve --dev creates the dev CA, a dev token is accepted, request writes a verified chain', async () => {
    const devDir = join(work, 'certs-dev');
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    server = startCli(['serve', '--dev', '--dev-dir', devDir, '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`]);
    await waitForStatus(`http://127.0.0.1:${monPort}/readyz`);

    for (const key of ['cacerts/ca-key.pem', 'jwt/signing-key.pem', 'root/root-key.pem']) {
      expect(statSync(join(devDir, key)).mode & 0o777).toBe(0o600);
    }
    const token = execFileSync(process.execPath, ['dist/cli.js', 'dev-token', '--dev-dir', devDir, '--namespace', 'demo', '--service-account', 'web'], { encoding: 'utf8' });
    writeFileSync(join(work, 'token'), token);
    // Signed as kube-apiserver signs service-account tokens by default: RS256 with the JWKS key's kid.
    const jwks = JSON.parse(readFileSync(join(devDir, 'jwt/jwks.json'), 'utf8')) as { keys: { kid: string; alg: string; kty: string }[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'RSA', alg: 'RS256' });
    expect(decodeProtectedHeader(token.trim())).toEqual({ alg: 'RS256', kid: jwks.keys[0]!.kid, typ: 'JWT' });
    const out = join(work, 'out');
    const printed = execFileSync(
      process.execPath,
      ['dist/cli.js', 'request', '--ca', `localhost:${grpcPort}`, '--root', join(devDir, 'cacerts/root-cert.pem'), '--token', join(work, 'token'), '--out', out, '--key', 'rsa-2048', '--ttl', '1h'],
      { encoding: 'utf8' },
    );
    expect(printed).toContain('identity: spiffe://cluster.local/ns/demo/sa/web');
    expect(printed).toMatch(/serial:\s+[0-9a-f]+/);
    const chain = readFileSync(join(out, 'cert-chain.pem'), 'utf8');
    expect(opensslVerify(readFileSync(join(out, 'root-cert.pem'), 'utf8'), [chain], chain)).toContain('OK');
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    // The key written matches the certificate.
    const modKey = execFileSync(tool('openssl'), ['pkey', '-in', join(out, 'key.pem'), '-pubout'], { encoding: 'utf8' });
    const modCert = execFileSync(tool('openssl'), ['x509', '-in', join(out, 'cert-chain.pem'), '-noout', '-pubkey'], { encoding: 'utf8' });
    expect(modKey).toBe(modCert);

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    const logs = server.stdout.join('');
    expect(logs).toContain('"event":"issued"');
    expect(logs).not.toContain(token.trim());
  });

  it('a dev directory made before the RS256 switch (ES256 key and JWKS) still mints tokens its JWKS verifies', async () => {
    const devDir = join(work, 'old-certs-dev');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    mkdirSync(join(devDir, 'jwt'), { recursive: true });
    writeFileSync(join(devDir, 'jwt/signing-key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    writeFileSync(join(devDir, 'jwt/jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'old', alg: 'ES256', use: 'sig' }] }));
    const env = await ensureDevEnvironment(devDir);
    const token = await mintDevToken(env, { namespace: 'demo', serviceAccount: 'web' });
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'ES256', kid: 'old' });
    const jwks = createLocalJWKSet(JSON.parse(readFileSync(env.jwksFile, 'utf8')) as Parameters<typeof createLocalJWKSet>[0]);
    const { payload } = await jwtVerify(token, jwks, { issuer: env.issuer, audience: 'istio-ca' });
    expect(payload.sub).toBe('system:serviceaccount:demo:web');
  });
});
