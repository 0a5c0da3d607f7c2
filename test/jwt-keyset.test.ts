/**
 * The JWT authenticator follows the issuer's key set exactly (issue #12): a key removed from a JWKS
 * file (rewritten with Kubernetes' `..data` swap while the real server runs) or from a JWKS URL
 * (a local HTTP server) stops verifying at once, and every cached token it verified goes with it;
 * tokens without `kid` are tried against the keys of their `alg`; tokens without `exp` are refused.
 * The same rules hold in file and URL mode: each case runs in both.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { calculateJwkThumbprint, exportJWK, generateKeyPair as joseKeyPair, importPKCS8, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { AuthError, JwtAuthenticator, maxAgeMs, type JwtAuthenticatorOptions } from '../src/auth/index.js';
import { ConfigError, parseServeConfig } from '../src/config.js';
import { ensureDevEnvironment, mintDevToken } from '../src/dev/index.js';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { makeCacerts, removeDir, tempDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, TEST_ISSUER } from './helpers/server.js';
import { SecretVolume } from './helpers/k8s-volume.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

interface IssuerKey {
  privateKey: CryptoKey;
  jwk: JWK & { kid: string; alg: string };
}

async function issuerKey(alg: 'ES256' | 'RS256' = 'ES256'): Promise<IssuerKey> {
  const { privateKey, publicKey } = await joseKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk: { ...jwk, kid: await calculateJwkThumbprint(jwk), alg, use: 'sig' } };
}

const jwks = (...keys: IssuerKey[]) => JSON.stringify({ keys: keys.map((k) => k.jwk) });

interface MintOptions {
  /** false: no kid header. */
  kid?: string | false;
  exp?: number | false;
  aud?: string | string[];
  sub?: string;
  k8s?: Record<string, unknown>;
}

/** A Kubernetes-shaped service-account token for demo/web; each call gives a distinct token (jti). */
function mint(key: IssuerKey, o: MintOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ 'kubernetes.io': o.k8s ?? { namespace: 'demo', serviceaccount: { name: 'web', uid: 'u' } } })
    .setProtectedHeader(o.kid === false ? { alg: key.jwk.alg } : { alg: key.jwk.alg, kid: o.kid ?? key.jwk.kid })
    .setIssuer(TEST_ISSUER)
    .setSubject(o.sub ?? 'system:serviceaccount:demo:web')
    .setAudience(o.aud ?? 'istio-ca')
    .setIssuedAt(now)
    .setJti(crypto.randomUUID());
  if (o.exp !== false) jwt.setExpirationTime(o.exp ?? now + 3600);
  return jwt.sign(key.privateKey);
}

/** A JWKS served over HTTP whose body (and Cache-Control) the test changes at will. */
async function jwksServer(body: string, cacheControl?: string) {
  const state = { body, cacheControl, fetches: 0 };
  const server: Server = createServer((_req, res) => {
    state.fetches++;
    res.writeHead(200, { 'content-type': 'application/json', ...(state.cacheControl ? { 'cache-control': state.cacheControl } : {}) }).end(state.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return Object.assign(state, { uri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/openid/v1/jwks` });
}

type Mode = 'file' | 'uri';

/** A JwtAuthenticator over a key set the test can rewrite: a real ..data-swapped file, or a local JWKS URL. */
async function authenticatorOver(mode: Mode, initial: string, extra: Partial<JwtAuthenticatorOptions> = {}) {
  const base = { issuer: TEST_ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksCooldownMs: 0, ...extra };
  if (mode === 'file') {
    const dir = tempDir('svid-ca-jwks-vol-');
    const volume = new SecretVolume(dir);
    volume.write({ 'jwks.json': initial });
    const auth = new JwtAuthenticator({ ...base, jwksFile: join(dir, 'jwks.json'), reloadIntervalMs: 1000 });
    cleanups.push(() => removeDir(dir), () => auth.close());
    return { auth, publish: (body: string) => volume.write({ 'jwks.json': body }) };
  }
  const server = await jwksServer(initial);
  const auth = new JwtAuthenticator({ ...base, jwksUri: server.uri, jwksRefreshIntervalMs: 500 });
  cleanups.push(() => auth.close());
  return { auth, publish: (body: string) => void (server.body = body), server };
}

const creds = (token: string) => ({ authorization: [`Bearer ${token}`], clusterId: [] });

async function refusal(auth: JwtAuthenticator, token: string): Promise<AuthError> {
  const err = await auth.authenticate(creds(token)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthError);
  return err as AuthError;
}

/** Polls until `check` holds, failing loudly after timeoutMs. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

const accepted = async (auth: JwtAuthenticator, token: string) => (await auth.authenticate(creds(token)).catch(() => undefined)) !== undefined;

describe.each<Mode>(['file', 'uri'])('key set rules (%s)', (mode) => {
  it('a removed key stops verifying new tokens, and the cached tokens it verified are dropped', async () => {
    const [k1, k2] = [await issuerKey(), await issuerKey()];
    const { auth, publish } = await authenticatorOver(mode, jwks(k1));
    const cachedByK1 = await mint(k1);
    expect((await auth.authenticate(creds(cachedByK1)))?.identity).toBe(ID);
    expect(auth.verified.size).toBe(1);
    publish(jwks(k1, k2));
    await eventually('key2 accepted', async () => accepted(auth, await mint(k2)));
    publish(jwks(k2));
    await eventually('key1 refused', async () => !(await accepted(auth, await mint(k1))));
    const err = await refusal(auth, await mint(k1));
    expect(err.failure).toBe('unauthenticated');
    expect(err.message).toBe('token is signed by a key the issuer does not publish');
    // The token verified by key1 before its removal was cached: it is refused too, not served from the cache.
    expect((await refusal(auth, cachedByK1)).message).toBe('token is signed by a key the issuer does not publish');
    expect((await auth.authenticate(creds(await mint(k2))))?.identity).toBe(ID);
  });

  it('a key set that stops parsing keeps the last good one', async () => {
    const k1 = await issuerKey();
    const { auth, publish } = await authenticatorOver(mode, jwks(k1));
    expect(await accepted(auth, await mint(k1))).toBe(true);
    publish('{"keys": [ this is not JSON');
    await sleep(mode === 'file' ? 1500 : 1200);
    expect(await accepted(auth, await mint(k1))).toBe(true);
  });

  it('a token without kid is tried against every key of its alg (two keys in the set)', async () => {
    const [k1, k2, stranger] = [await issuerKey(), await issuerKey(), await issuerKey()];
    const { auth } = await authenticatorOver(mode, jwks(k1, k2));
    expect((await auth.authenticate(creds(await mint(k2, { kid: false }))))?.identity).toBe(ID);
    expect((await auth.authenticate(creds(await mint(k1, { kid: false }))))?.identity).toBe(ID);
    const err = await refusal(auth, await mint(stranger, { kid: false }));
    expect(err.failure).toBe('unauthenticated');
    expect(err.message).toMatch(/no kid/);
    expect(err.message).toMatch(/2 issuer keys/);
  });

  it('a token without kid is refused when more than 8 keys share its alg', async () => {
    const keys = await Promise.all(Array.from({ length: 9 }, () => issuerKey()));
    const { auth } = await authenticatorOver(mode, jwks(...keys));
    // With its kid the same token verifies; without, nine candidates are too many to try.
    expect(await accepted(auth, await mint(keys[8]!))).toBe(true);
    const err = await refusal(auth, await mint(keys[8]!, { kid: false }));
    expect(err.failure).toBe('unauthenticated');
    expect(err.message).toMatch(/no kid/);
    expect(err.message).toMatch(/9 issuer keys/);
    expect(err.message).toMatch(/at most 8/);
  });

  it('a token with no exp is refused: token has no expiry (exp)', async () => {
    const k1 = await issuerKey();
    const { auth } = await authenticatorOver(mode, jwks(k1));
    const err = await refusal(auth, await mint(k1, { exp: false }));
    expect(err.failure).toBe('unauthenticated');
    expect(err.message).toBe('token has no expiry (exp)');
    expect(auth.verified.size).toBe(0);
  });

  it('audience: any one of several aud values may be ours; none, or a missing aud, is refused', async () => {
    const k1 = await issuerKey();
    const { auth } = await authenticatorOver(mode, jwks(k1));
    expect(await accepted(auth, await mint(k1, { aud: ['https://kubernetes.default.svc', 'istio-ca'] }))).toBe(true);
    for (const aud of ['other', ['https://kubernetes.default.svc', 'istio-ca-2'], [] as string[]]) {
      const err = await refusal(auth, await mint(k1, { aud }));
      expect(err.message).toBe('token audience does not include "istio-ca"');
    }
  });

  it('kubernetes.io claims that disagree with sub are refused', async () => {
    const k1 = await issuerKey();
    const { auth } = await authenticatorOver(mode, jwks(k1));
    for (const k8s of [
      { namespace: 'demo', serviceaccount: { name: 'admin' } },
      { namespace: 'istio-system', serviceaccount: { name: 'web' } },
    ]) {
      const err = await refusal(auth, await mint(k1, { k8s }));
      expect(err.message).toBe('token kubernetes.io claims do not match its subject');
    }
  });
});

describe('--jwks-file watch', () => {
  it('sees a ..data swap through fs.watch alone (the poll an hour away)', async () => {
    const [k1, k2] = [await issuerKey(), await issuerKey()];
    const dir = tempDir('svid-ca-jwks-vol-');
    const volume = new SecretVolume(dir);
    volume.write({ 'jwks.json': jwks(k1, k2) });
    const auth = new JwtAuthenticator({ issuer: TEST_ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: join(dir, 'jwks.json'), reloadIntervalMs: 3600_000 });
    cleanups.push(() => removeDir(dir), () => auth.close());
    expect(await accepted(auth, await mint(k1))).toBe(true);
    volume.write({ 'jwks.json': jwks(k2) });
    // A kid-less token prompts no re-read: only the watch can tell the authenticator that key1 left.
    await eventually('key1 refused', async () => !(await accepted(auth, await mint(k1, { kid: false }))), 10_000);
    expect(await accepted(auth, await mint(k2, { kid: false }))).toBe(true);
  });
});

describe('--jwks-uri refresh', () => {
  it('refetches every refresh interval, or sooner when Cache-Control max-age is shorter', async () => {
    const [k1, k2] = [await issuerKey(), await issuerKey()];
    const server = await jwksServer(jwks(k1, k2), 'public, max-age=1');
    const auth = new JwtAuthenticator({ issuer: TEST_ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksUri: server.uri, jwksRefreshIntervalMs: 3600_000 });
    cleanups.push(() => auth.close());
    expect(await accepted(auth, await mint(k1))).toBe(true);
    server.body = jwks(k2);
    // max-age=1 wins over the hour-long interval: key1 is gone within seconds, with no unknown kid to prompt a fetch.
    await eventually('key1 refused after max-age', async () => !(await accepted(auth, await mint(k1))), 10_000);
    expect(server.fetches).toBeGreaterThanOrEqual(2);
  });
});

describe('the real server', () => {
  it('a key removed from a ..data-swapped JWKS file is refused over gRPC within the reload interval; reloads are counted', async () => {
    const [k1, k2] = [await issuerKey('RS256'), await issuerKey()];
    const dir = tempDir('svid-ca-jwks-vol-');
    const volume = new SecretVolume(dir);
    volume.write({ 'jwks.json': jwks(k1) });
    const pki = makeCacerts();
    const issuer = await createTestIssuer();
    const server = await startTestServer({ cacerts: pki.dir, issuer, jwt: { issuer: TEST_ISSUER, audience: 'istio-ca', jwksFile: join(dir, 'jwks.json') }, reloadIntervalMs: 1000 });
    const client = clientFor(server, pki.root.certPem);
    cleanups.push(() => removeDir(dir), () => removeDir(pki.dir), () => server.close(), () => client.close());
    const issue = async (token: string) => call(client, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] }) }, { authorization: `Bearer ${token}` });
    const reloads = async (result: string) => Number(new RegExp(`svid_ca_jwks_reloads_total\\{result="${result}"\\} (\\d+)`).exec((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body)?.[1]);
    const lastFailed = async () => Number(/^svid_ca_jwks_last_reload_failed (\d+)$/m.exec((await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`)).body)?.[1]);

    const early = await mint(k1);
    expect((await issue(early)).err).toBeUndefined();
    const successes = await reloads('success');
    volume.write({ 'jwks.json': jwks(k1, k2) });
    await eventually('key2 accepted over gRPC', async () => (await issue(await mint(k2))).err === undefined);
    volume.write({ 'jwks.json': jwks(k2) });
    await eventually('key1 refused over gRPC', async () => (await issue(await mint(k1))).err !== undefined);
    const refused = await issue(await mint(k1));
    expect(refused.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(refused.err?.details).toMatch(/key the issuer does not publish/);
    // A token key1 verified before (held in the verified-token cache) is refused as well.
    expect((await issue(early)).err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(await reloads('success')).toBeGreaterThanOrEqual(successes + 2);

    // A file that stops parsing: reported, and the last good key set keeps serving.
    const failures = await reloads('failure');
    expect(await lastFailed()).toBe(0);
    volume.write({ 'jwks.json': 'not json' });
    await eventually('failure counted', async () => (await reloads('failure')) > failures);
    expect(server.logs.records().some((r) => r.msg === 'JWKS reload failed; keeping the current keys' && /not JSON/.test(String(r.problem)))).toBe(true);
    expect((await issue(await mint(k2))).err).toBeUndefined();
    // Over gRPC too: a token for another audience is refused, one naming istio-ca among others is issued.
    const wrongAud = await issue(await mint(k2, { aud: ['https://kubernetes.default.svc'] }));
    expect(wrongAud.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(wrongAud.err?.details).toContain('token audience does not include "istio-ca"');
    expect((await issue(await mint(k2, { aud: ['https://kubernetes.default.svc', 'istio-ca'] }))).err).toBeUndefined();
    const noExp = await issue(await mint(k2, { exp: false }));
    expect(noExp.err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(noExp.err?.details).toContain('token has no expiry (exp)');

    // svid_ca_jwks_last_reload_failed: the counter above grew once for the bad content, but the gauge stays 1
    // across later polls of the same bad file (the alert SvidCaJwksReloadFailing rests on it), and goes back
    // to 0 once the file parses again.
    expect(await lastFailed()).toBe(1);
    const failuresWhileBroken = await reloads('failure');
    await sleep(3_500); // three polls of --reload-interval 1s re-read the same bad content
    expect(await lastFailed()).toBe(1);
    expect(await reloads('failure')).toBe(failuresWhileBroken);
    volume.write({ 'jwks.json': jwks(k2) });
    await eventually('gauge back to 0 after the file is fixed', async () => (await lastFailed()) === 0);
    await sleep(2_500); // unchanged re-reads of the good file keep it at 0
    expect(await lastFailed()).toBe(0);
    expect((await issue(await mint(k2))).err).toBeUndefined();
  });
});

describe('the dev issuer (--dev) follows the same rules', () => {
  it('its tokens verify; without exp, or once its key leaves certs-dev/jwt/jwks.json, they are refused', async () => {
    const dir = tempDir('svid-ca-dev-');
    cleanups.push(() => removeDir(dir));
    const env = await ensureDevEnvironment(dir);
    // As `serve --dev` wires it (src/cli.ts applyDevDefaults): the dev JWKS file, followed like any --jwks-file.
    const auth = new JwtAuthenticator({ issuer: env.issuer, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: env.jwksFile, reloadIntervalMs: 1000 });
    cleanups.push(() => auth.close());
    expect((await auth.authenticate(creds(await mintDevToken(env, { namespace: 'demo', serviceAccount: 'web' }))))?.identity).toBe(ID);
    const { kid, alg } = (JSON.parse(readFileSync(env.jwksFile, 'utf8')) as { keys: { kid: string; alg: string }[] }).keys[0]!;
    const noExp = await new SignJWT({})
      .setProtectedHeader({ alg, kid })
      .setIssuer(env.issuer)
      .setSubject('system:serviceaccount:demo:web')
      .setAudience('istio-ca')
      .setIssuedAt()
      .sign(await importPKCS8(readFileSync(env.signingKeyFile, 'utf8'), alg));
    expect((await refusal(auth, noExp)).message).toBe('token has no expiry (exp)');
    const later = await mintDevToken(env, { namespace: 'demo', serviceAccount: 'web' });
    writeFileSync(env.jwksFile, JSON.stringify({ keys: [] }));
    await eventually('dev key removed', async () => !(await accepted(auth, later)));
    expect((await refusal(auth, later)).message).toBe('token is signed by a key the issuer does not publish');
  });
});

describe('--jwks-refresh-interval', () => {
  it('defaults to 5m, is read from the flag or SVID_CA_JWKS_REFRESH_INTERVAL, and is at least 1s', () => {
    expect(parseServeConfig([], {}).jwksRefreshIntervalMs).toBe(300_000);
    expect(parseServeConfig(['--jwks-refresh-interval', '30s'], {}).jwksRefreshIntervalMs).toBe(30_000);
    expect(parseServeConfig([], { SVID_CA_JWKS_REFRESH_INTERVAL: '2m' }).jwksRefreshIntervalMs).toBe(120_000);
    expect(() => parseServeConfig(['--jwks-refresh-interval', '500ms'], {})).toThrow(new ConfigError('--jwks-refresh-interval: must be at least 1s'));
  });

  it('Cache-Control max-age is read as RFC 9111 writes it', () => {
    expect(maxAgeMs('public, max-age=60')).toBe(60_000);
    expect(maxAgeMs('max-age=0, must-revalidate')).toBe(0);
    expect(maxAgeMs('s-maxage=10')).toBeUndefined();
    expect(maxAgeMs(null)).toBeUndefined();
  });
});
