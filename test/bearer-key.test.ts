/**
 * Issue #14: the admission queue's namespace read (claimedNamespace) is skipped for a token the JWT
 * authenticator has already verified: its claim is kept in the verified-token cache entry; a fresh
 * token's claim is taken from the payload the authenticator verifies (not decoded again); and the
 * token is hashed once per call (bearerKey, handed on in CallCredentials.bearer). These tests hold the
 * cached claim equal to claimedNamespace for tokens of every shape the read distinguishes, and count
 * the hashes per call through a real server.
 */
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { bearerKey, bearerToken, claimedNamespace, JwtAuthenticator, type CallCredentials } from '../src/auth/index.js';
import { VerifiedTokenCache } from '../src/auth/jwt.js';
import { buildCsrPem, generateKeyPair } from '../src/pki/index.js';
import { makeCacerts, removeDir } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, startTestServer, TEST_ISSUER, type TestIssuer } from './helpers/server.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A token with this payload (iss, aud, iat, exp added), signed by the test issuer. */
function sign(issuer: TestIssuer, payload: Record<string, unknown>): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'ES256', kid: issuer.kid })
    .setIssuer(TEST_ISSUER)
    .setAudience('istio-ca')
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(issuer.privateKey);
}

/**
 * The handler's steps (certificate-service.ts): bearerKey, authenticate with the key handed on, then
 * the claim for the signing queue: the authenticator's (a verified token), else decoded.
 */
async function admitAndAuthenticate(jwt: JwtAuthenticator, authorization: string[]) {
  const bearer = bearerKey([jwt], authorization);
  const fromCache = bearer?.namespace !== undefined;
  const creds: CallCredentials = { authorization, clusterId: [], bearer };
  const caller = await jwt.authenticate(creds).catch(() => undefined);
  const fromAuthenticator = !fromCache && bearer?.namespace !== undefined;
  if (bearer) bearer.namespace ??= { value: claimedNamespace(bearer.token) };
  return { namespace: bearer?.namespace?.value, fromCache, fromAuthenticator, caller };
}

/** claimedNamespace of the bearer token of `authorization` (as bearerToken reads it). */
const claimOf = (authorization: string[]) => claimedNamespace(bearerToken({ authorization, clusterId: [] })!);

describe('the verified-token cache holds the admission queue namespace claim', () => {
  it('for a verified token the cached claim equals claimedNamespace for every token shape, and is served from the cache on the renewal', async () => {
    const issuer = await createTestIssuer();
    const jwt = new JwtAuthenticator({ issuer: TEST_ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: issuer.jwksFile });
    cleanups.push(() => jwt.close());
    const shapes: Record<string, Record<string, unknown>> = {
      'kubernetes.io claims and sub agree': { sub: 'system:serviceaccount:istio-system:ztunnel', 'kubernetes.io': { namespace: 'istio-system', serviceaccount: { name: 'ztunnel' } } },
      'sub only': { sub: 'system:serviceaccount:demo:web' },
      'kubernetes.io namespace without a service account name, sub names another namespace': {
        sub: 'system:serviceaccount:demo:web',
        'kubernetes.io': { namespace: 'istio-system' },
      },
      'kubernetes.io namespace not a string': { sub: 'system:serviceaccount:demo:web', 'kubernetes.io': { namespace: 7 } },
      'a payload longer than the 8192 characters claimedNamespace reads': {
        sub: 'system:serviceaccount:istio-system:big',
        padding: 'x'.repeat(7000),
      },
    };
    for (const [name, payload] of Object.entries(shapes)) {
      const token = await sign(issuer, payload);
      const spellings = [[`Bearer ${token}`], [`Bearer   ${token}  `], ['Basic x', `Bearer ${token}`]];
      for (const authorization of spellings) {
        const expected = claimOf(authorization);
        const first = await admitAndAuthenticate(jwt, authorization);
        expect(first.caller, name).toBeDefined();
        // The first spelling meets the token fresh; the others find it verified already.
        expect(first.fromAuthenticator, `${name}: the claim of a fresh token comes from the payload the authenticator verified`).toBe(authorization === spellings[0]);
        expect(first.namespace, name).toBe(expected);
        const renewal = await admitAndAuthenticate(jwt, authorization);
        expect(renewal.fromCache, `${name}: the renewal reads the claim from the cache`).toBe(true);
        expect(renewal.namespace, name).toBe(expected);
      }
    }
    // The shapes reach the read's branches: a namespace from kubernetes.io, one from sub, none.
    expect(new Set(await Promise.all(Object.values(shapes).map(async (p) => claimedNamespace(await sign(issuer, p)))))).toEqual(
      new Set(['istio-system', 'demo', undefined]),
    );
  });

  it('a token that did not verify is not cached: its namespace is read from the payload on every call', async () => {
    const issuer = await createTestIssuer();
    const other = await createTestIssuer();
    const jwt = new JwtAuthenticator({ issuer: TEST_ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: issuer.jwksFile });
    cleanups.push(() => jwt.close());
    const forged = await sign({ ...issuer, privateKey: other.privateKey }, { sub: 'system:serviceaccount:istio-system:x' });
    for (let i = 0; i < 2; i++) {
      const r = await admitAndAuthenticate(jwt, [`Bearer ${forged}`]);
      expect(r.caller).toBeUndefined();
      expect(r.fromCache).toBe(false);
      expect(r.fromAuthenticator).toBe(false);
      expect(r.namespace).toBe('istio-system');
    }
  });

  it('a key handed on for another token is not used: the authenticator hashes the token it reads', async () => {
    const issuer = await createTestIssuer();
    const jwt = new JwtAuthenticator({ issuer: TEST_ISSUER, audience: 'istio-ca', trustDomain: 'cluster.local', jwksFile: issuer.jwksFile });
    cleanups.push(() => jwt.close());
    const a = await issuer.token({ namespace: 'demo', serviceAccount: 'a' });
    const b = await issuer.token({ namespace: 'demo', serviceAccount: 'b' });
    await jwt.authenticate({ authorization: [`Bearer ${a}`], clusterId: [] });
    // b's credentials carrying a's cache key must not be answered with a's caller.
    const caller = await jwt.authenticate({ authorization: [`Bearer ${b}`], clusterId: [], bearer: { token: a, key: VerifiedTokenCache.keyOf(a) } });
    expect(caller?.serviceAccount).toBe('b');
  });

  it('through a server: one SHA-256 of the token per call, for a fresh token and for its renewals', async () => {
    const pki = makeCacerts();
    const issuer = await createTestIssuer();
    const server = await startTestServer({ cacerts: pki.dir, issuer });
    const client = clientFor(server, pki.root.certPem);
    cleanups.push(() => removeDir(pki.dir), () => server.close(), () => client.close());
    const keyOf = vi.spyOn(VerifiedTokenCache, 'keyOf');
    const id = 'spiffe://cluster.local/ns/demo/sa/web';
    const token = await issuer.token({ namespace: 'demo', serviceAccount: 'web' });
    for (let i = 0; i < 3; i++) {
      const r = await call(client, { csr: buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }] }) }, { authorization: `Bearer ${token}` });
      expect(r.err).toBeUndefined();
      expect(keyOf).toHaveBeenCalledTimes(i + 1);
    }
    expect(new Set(keyOf.mock.calls.map((c) => c[0]))).toEqual(new Set([token]));
  });
});
