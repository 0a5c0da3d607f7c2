/**
 * --client-cert-auth: renewal over mTLS without a token. A real grpc-js client presents its SVID
 * with grpc.credentials.createSsl(root, key, certChain) to the real svid-ca service; the listener
 * verifies it against the current root bundle (and a new bundle rebuilds that).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authority, loadCacerts } from '../src/ca/index.js';
import { buildCsrPem, generateKeyPair, parseCsrPem, privateKeyPem } from '../src/pki/index.js';
import { loadServices } from '../src/server/index.js';
import type { CaClient } from '../src/client/index.js';
import { makeCacerts, makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';
import { tool } from './helpers/tools.js';

const ID = 'spiffe://cluster.local/ns/vm/sa/legacy';
const DAY = 86_400_000;

interface Svid {
  keyPem: string;
  chainPem: string;
}

/** An SVID for `identity` signed by the cacerts in `dir`, valid from `at` for `ttlMs`. */
async function svid(dir: string, identity: string, at = new Date(), ttlMs = 3_600_000): Promise<Svid> {
  const authority = new Authority(loadCacerts(dir), { defaultTtlMs: ttlMs, maxTtlMs: ttlMs }, () => at);
  const { privateKey } = generateKeyPair('ec-p256');
  const csr = parseCsrPem(buildCsrPem({ privateKey, sans: [{ type: 'uri', value: identity }], subjectOrganization: '' }));
  const issued = await authority.issueCertificate({ identity, csr, requestedTtlSeconds: BigInt(Math.floor(ttlMs / 1000)) });
  return { keyPem: privateKeyPem(privateKey), chainPem: issued.certChain.slice(0, -1).join('') };
}

/** One CreateCertificate call on a raw HTTP/2 session; resolves with its grpc-status. */
async function rawCall(session: http2.ClientHttp2Session, headers: Record<string, string>): Promise<number> {
  const CreateCertificate = loadServices().ca.service.CreateCertificate!;
  const body = CreateCertificate.requestSerialize(request());
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  const stream = session.request({ ':method': 'POST', ':path': CreateCertificate.path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
  stream.on('error', () => undefined);
  stream.end(frame);
  stream.resume();
  return new Promise((resolve) => {
    let status = -1;
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('close', () => resolve(status));
  });
}

const csrFor = (id = ID) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: id }], subjectOrganization: '' });
const request = (id = ID) => ({ csr: csrFor(id), validity_duration: '3600', metadata: { fields: {} } });

let issuer: TestIssuer;
let server: TestServer;
let dir: string;
let root: ReturnType<typeof makeRoot>;
const clients: CaClient[] = [];

function clientWithCert(trustPem: string, cert: Svid): CaClient {
  const { ca } = loadServices();
  const c = new ca(server.address, grpc.credentials.createSsl(Buffer.from(trustPem), Buffer.from(cert.keyPem), Buffer.from(cert.chainPem))) as unknown as CaClient;
  clients.push(c);
  return c;
}

beforeAll(async () => {
  // A hierarchy valid since three days ago, so an SVID that expired yesterday chains to it.
  const since = new Date(Date.now() - 3 * DAY);
  root = makeRoot({ notBefore: since });
  const signer = makeIntermediate(root, { notBefore: since });
  dir = writeCacerts(tempDir(), { signer, roots: [root] });
  issuer = await createTestIssuer();
  server = await startTestServer({ cacerts: dir, issuer, clientCertAuth: true });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.close();
  removeDir(dir);
});

describe('client-certificate authentication (real grpc-js client presenting its SVID)', () => {
  it('renews with a valid SVID and no token; the identity is the SVID\'s URI SAN', async () => {
    const { res, err } = await call(clientWithCert(root.certPem, await svid(dir, ID)), request());
    expect(err).toBeUndefined();
    expect(new X509Certificate(res!.cert_chain[0]!).subjectAltName).toBe(`URI:${ID}`);
    const audit = server.logs.records().filter((l) => l.msg === 'certificate issued').at(-1)!.audit as Record<string, unknown>;
    expect(audit).toMatchObject({ identity: ID, namespace: 'vm', serviceAccount: 'legacy' });
  });

  it('gives the SVID holder its own identity only', async () => {
    const { err } = await call(clientWithCert(root.certPem, await svid(dir, ID)), request('spiffe://cluster.local/ns/vm/sa/other'));
    expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('does not authenticate an expired SVID', async () => {
    const expired = await svid(dir, ID, new Date(Date.now() - 2 * DAY), 3_600_000);
    expect(new Date(new X509Certificate(expired.chainPem).validTo).getTime()).toBeLessThan(Date.now());
    const { err } = await call(clientWithCert(root.certPem, expired), request());
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('does not authenticate an SVID from a foreign root', async () => {
    const foreign = makeCacerts();
    try {
      const { err } = await call(clientWithCert(root.certPem, await svid(foreign.dir, ID)), request());
      expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      removeDir(foreign.dir);
    }
  });

  it('a certificate from a rogue CA copying the intermediate\'s subject leaves the connection usable: the token on it is honoured', async () => {
    // The rogue signer has the real intermediate's subject name (and a root of its own), so only
    // the signature tells them apart.
    const rogueRoot = makeRoot({ cn: 'rogue root' });
    const rogueSigner = makeIntermediate(rogueRoot);
    const rogueDir = writeCacerts(tempDir(), { signer: rogueSigner, roots: [rogueRoot] });
    try {
      const rogue = await svid(rogueDir, ID);
      expect(new X509Certificate(rogueSigner.certPem).subject).toBe(loadCacerts(dir).signingCert.x509.subject);
      expect(() => opensslVerify(root.certPem, [rogueSigner.certPem], rogue.chainPem.split(/(?<=-----END CERTIFICATE-----\n?)/)[0]!)).toThrow();
      const client = clientWithCert(root.certPem, rogue);
      const token = await issuer.token({ namespace: 'vm', serviceAccount: 'legacy' });
      const withToken = await call(client, request(), { authorization: `Bearer ${token}` });
      expect(withToken.err).toBeUndefined();
      // Without a token on the same connection: refused as unauthenticated, not a broken connection.
      const without = await call(client, request());
      expect(without.err?.code).toBe(grpc.status.UNAUTHENTICATED);
      const again = await call(client, request(), { authorization: `Bearer ${token}` });
      expect(again.err).toBeUndefined();
    } finally {
      removeDir(rogueDir);
    }
  });

  it('a forged intermediate (the real one\'s subject, claiming the real root as issuer, signed by another key) leaves the connection usable over TLS 1.2 and 1.3', async () => {
    // OpenSSL finds the real root by the forged certificate's issuer name, and its signature check
    // fails; Node 24 (OpenSSL 3.5) then leaves that error queued and the next read on the socket
    // failed, which ended the connection with GOAWAY INTERNAL_ERROR (issue #19 item 8).
    const attackerKey = makeRoot({ cn: 'attacker' });
    const forged = makeIntermediate({ ...root, keyPem: attackerKey.keyPem });
    const leaf = makeIntermediate(forged, { cn: 'leaf', ca: false });
    expect(forged.cert.subject).toBe(loadCacerts(dir).signingCert.x509.subject);
    expect(forged.cert.issuer).toBe(root.cert.subject);
    expect(() => opensslVerify(root.certPem, [forged.certPem], leaf.certPem)).toThrow(/signature failure/);
    const token = await issuer.token({ namespace: 'vm', serviceAccount: 'legacy' });
    for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
      const session = http2.connect(`https://localhost:${server.service.grpcPort}`, { ca: root.certPem, key: leaf.keyPem, cert: leaf.certPem + forged.certPem, minVersion: version, maxVersion: version });
      const goaways: number[] = [];
      session.on('goaway', (code) => goaways.push(code));
      session.on('error', () => undefined);
      try {
        await once(session, 'connect');
        // Without a token: UNAUTHENTICATED; with one, on the same connection: issued.
        expect(await rawCall(session, {})).toBe(grpc.status.UNAUTHENTICATED);
        expect(await rawCall(session, { authorization: `Bearer ${token}` })).toBe(grpc.status.OK);
        expect(goaways).toEqual([]);
      } finally {
        session.destroy();
      }
    }
    // And a real grpc-js client presenting the same chain falls through to its token.
    const { err } = await call(clientWithCert(root.certPem, { keyPem: leaf.keyPem, chainPem: leaf.certPem + forged.certPem }), request(), { authorization: `Bearer ${token}` });
    expect(err).toBeUndefined();
  });

  it('an SVID of another trust domain is refused with the reason', async () => {
    const { err } = await call(clientWithCert(root.certPem, await svid(dir, 'spiffe://other.domain/ns/vm/sa/legacy')), request());
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('trust domain cluster.local');
  });

  it('does not authenticate a CA certificate carrying the SPIFFE ID, even one the signer issued', async () => {
    // Made with the openssl CLI (our own code issues no such certificate): CA:TRUE, keyCertSign, URI SAN = ID,
    // signed by the plugged-in intermediate, so the TLS handshake verifies and only svid-ca's own check refuses it.
    const work = tempDir('svid-ca-ca-svid-');
    try {
      const f = (name: string) => join(work, name);
      const openssl = (...args: string[]) => execFileSync(tool('openssl'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      writeFileSync(f('ext.cnf'), `basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,digitalSignature\nsubjectAltName=URI:${ID}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n`);
      openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', f('key.pem'));
      openssl('req', '-new', '-key', f('key.pem'), '-subj', '/O=svid-ca test/CN=a CA posing as an SVID', '-out', f('req.pem'));
      openssl('x509', '-req', '-in', f('req.pem'), '-CA', join(dir, 'ca-cert.pem'), '-CAkey', join(dir, 'ca-key.pem'), '-set_serial', '4242', '-days', '1', '-extfile', f('ext.cnf'), '-out', f('cert.pem'));
      expect(openssl('x509', '-in', f('cert.pem'), '-noout', '-text')).toMatch(/CA:TRUE[\s\S]*URI:spiffe:\/\/cluster\.local\/ns\/vm\/sa\/legacy/);
      const caSvid = { keyPem: readFileSync(f('key.pem'), 'utf8'), chainPem: readFileSync(f('cert.pem'), 'utf8') + readFileSync(join(dir, 'ca-cert.pem'), 'utf8') };
      const { res, err } = await call(clientWithCert(root.certPem, caSvid), request());
      expect(res).toBeUndefined();
      expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(err?.details).toContain('it is a CA certificate');
    } finally {
      removeDir(work);
    }
  });

  it('a token still works when the client presents no certificate', async () => {
    const token = await issuer.token({ namespace: 'vm', serviceAccount: 'legacy' });
    const plain = clientFor(server, root.certPem);
    clients.push(plain);
    const { err } = await call(plain, request(), { authorization: `Bearer ${token}` });
    expect(err).toBeUndefined();
  });

  it('verifies client certificates against the new root bundle after a bundle change', async () => {
    const oldSvid = await svid(dir, ID);
    const nextRoot = makeRoot({ cn: 'next root' });
    const nextSigner = makeIntermediate(nextRoot, { cn: 'next intermediate' });
    const nextDir = writeCacerts(tempDir(), { signer: nextSigner, roots: [nextRoot] });
    try {
      server.service.authority.replaceBundle(loadCacerts(nextDir));
      // The client trusts both roots: the serving certificate may be re-issued under the new one.
      const trust = root.certPem + nextRoot.certPem;
      const refusedOld = await call(clientWithCert(trust, oldSvid), request());
      expect(refusedOld.err?.code).toBe(grpc.status.UNAUTHENTICATED);
      const { err } = await call(clientWithCert(trust, await svid(nextDir, ID)), request());
      expect(err).toBeUndefined();
    } finally {
      removeDir(nextDir);
    }
  });
});
