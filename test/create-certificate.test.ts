/**
 * CreateCertificate end to end: the real svid-ca service on a loopback port, called by a real
 * grpc-js client over TLS that verifies the serving certificate against the root, and every
 * issued chain checked with `openssl verify` and Node's X509Certificate.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCacerts } from '../src/ca/index.js';
import { buildCsrPem, decodePem, generateKeyPair, inspectCertificate, privateKeyPem, type KeySpec, type SanEntry } from '../src/pki/index.js';
import type { CaClient } from '../src/client/index.js';
import { loadServices } from '../src/server/index.js';
import { makeCacerts, makeIntermediate, makeRoot, opensslText, opensslVerify, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { allLogLines, call, clientFor, createTestIssuer, fetchText, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';
import { tool } from './helpers/tools.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';

function csrFor(sans: SanEntry[] = [{ type: 'uri', value: ID }], key: KeySpec = 'ec-p256'): string {
  return buildCsrPem({ privateKey: generateKeyPair(key).privateKey, sans, subjectOrganization: '' });
}

function certsOf(pem: string): X509Certificate[] {
  return decodePem(pem).map((b) => new X509Certificate(b.der));
}

let issuer: TestIssuer;
let server: TestServer;
let client: CaClient;
let pki: ReturnType<typeof makeCacerts>;
let token: string;

beforeAll(async () => {
  issuer = await createTestIssuer();
  pki = makeCacerts();
  server = await startTestServer({ cacerts: pki.dir, issuer });
  client = clientFor(server, pki.root.certPem);
  token = await issuer.token({ namespace: 'demo', serviceAccount: 'web', pod: 'web-1' });
});

afterAll(async () => {
  client?.close();
  await server?.close();
  removeDir(pki.dir);
});

const bearer = (t: string) => ({ authorization: `Bearer ${t}`, clusterid: 'Kubernetes' });
const sidecarRequest = (csr: string, ttl = '86400') => ({ csr, validity_duration: ttl, metadata: { fields: { CertSigner: { stringValue: '' } } } });

describe('issuance', () => {
  it('signs a sidecar CSR: chain [leaf, chain certs..., root bundle] that openssl and Node verify', async () => {
    const { res, err } = await call(client, sidecarRequest(csrFor()), bearer(token));
    expect(err).toBeUndefined();
    const chain = res!.cert_chain;
    // Istio layout: cert-chain.pem = intermediate + root, then root-cert.pem verbatim.
    expect(chain).toHaveLength(4);
    for (const element of chain) expect(element).toMatch(/[^\n]\n$/);
    expect(chain[1]).toBe(pki.signer.certPem);
    expect(chain[2]).toBe(pki.root.certPem);
    expect(chain[3]).toBe(pki.root.certPem);
    expect(opensslVerify(chain[3]!, chain.slice(1, -1), chain[0]!)).toContain('OK');

    const leaf = certsOf(chain[0]!)[0]!;
    expect(leaf.verify(pki.signer.cert.publicKey)).toBe(true);
    expect(leaf.checkIssued(pki.signer.cert)).toBe(true);
    expect(leaf.subject ?? '').toBe('');
    expect(inspectCertificate(leaf.raw).subjectDer.toString('hex')).toBe('3000');
    expect(leaf.subjectAltName).toBe(`URI:${ID}`);
    expect(leaf.ca).toBe(false);
    expect(leaf.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    const facts = inspectCertificate(leaf.raw);
    expect(facts.keyUsageBits).toEqual([0, 2]);
    expect(facts.subjectKeyId).toBeUndefined();
    const text = opensslText(chain[0]!);
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/demo\/sa\/web/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Extended Key Usage: \s*TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).not.toContain('Subject Key Identifier');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    const issuerSki = inspectCertificate(pki.signer.cert.raw).subjectKeyId!.toString('hex').toUpperCase().match(/../g)!.join(':');
    expect(text).toMatch(new RegExp(`Authority Key Identifier: \\s*(keyid:)?${issuerSki}`));
    // The issuer Name is the signer's subject byte for byte (webpki compares bytes).
    expect(Buffer.from(leaf.raw).includes(inspectCertificate(pki.signer.cert.raw).subjectDer)).toBe(true);
    // Serial: positive, at least 64 bits of entropy.
    expect(BigInt(`0x${leaf.serialNumber}`) > 0n).toBe(true);
    // Validity: NotBefore = now - 2 min; NotAfter - NotBefore = TTL + 2 min.
    const nb = new Date(leaf.validFrom).getTime();
    const na = new Date(leaf.validTo).getTime();
    expect(Math.abs(nb - (Date.now() - 120_000))).toBeLessThan(15_000);
    expect(Math.abs(na - nb - (86_400_000 + 120_000))).toBeLessThanOrEqual(2000);
  });

  it('gives each issuance a distinct serial', async () => {
    const serials = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const { res } = await call(client, sidecarRequest(csrFor()), bearer(token));
      serials.add(certsOf(res!.cert_chain[0]!)[0]!.serialNumber);
    }
    expect(serials.size).toBe(5);
  });

  it.each<KeySpec>(['ec-p256', 'ec-p384', 'rsa-2048'])('signs a %s CSR', async (key) => {
    const { res, err } = await call(client, sidecarRequest(csrFor(undefined, key)), bearer(token));
    expect(err).toBeUndefined();
    const leaf = certsOf(res!.cert_chain[0]!)[0]!;
    expect(leaf.publicKey.asymmetricKeyType).toBe(key.startsWith('rsa') ? 'rsa' : 'ec');
    expect(opensslVerify(pki.root.certPem, [pki.signer.certPem], res!.cert_chain[0]!)).toContain('OK');
  });

  it('tolerates any metadata keys and ztunnel-style CSRs with an empty subject', async () => {
    const csr = buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans: [{ type: 'uri', value: ID }] });
    const { res, err } = await call(
      client,
      { csr, validity_duration: '3600', metadata: { fields: { CertSigner: { stringValue: '' }, WorkloadName: { stringValue: 'web' }, Extra: { numberValue: 3 } } } },
      { authorization: `Bearer ${token}` },
    );
    expect(err).toBeUndefined();
    expect(res!.cert_chain.length).toBeGreaterThanOrEqual(2);
  });

  it('accepts a CSR in any PEM block label (the DER is what counts)', async () => {
    const der = decodePem(csrFor())[0]!.der;
    const pem = `-----BEGIN NEW CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END NEW CERTIFICATE REQUEST-----\n`;
    const { err } = await call(client, sidecarRequest(pem), bearer(token));
    expect(err).toBeUndefined();
  });
});

describe('TTL policy', () => {
  const lifetime = async (ttl: string) => {
    const { res, err } = await call(client, sidecarRequest(csrFor(), ttl), bearer(token));
    if (err) return err;
    const leaf = certsOf(res!.cert_chain[0]!)[0]!;
    return new Date(leaf.validTo).getTime() - Date.now();
  };

  it('uses the default TTL (24h) when validity_duration <= 0', async () => {
    for (const ttl of ['0', '-5']) {
      const ms = (await lifetime(ttl)) as number;
      expect(Math.abs(ms - 86_400_000)).toBeLessThan(5000);
    }
  });

  it('grants the requested TTL up to and including the max', async () => {
    expect(Math.abs(((await lifetime('3600')) as number) - 3_600_000)).toBeLessThan(5000);
    expect(Math.abs(((await lifetime(String(2160 * 3600))) as number) - 2160 * 3_600_000)).toBeLessThan(5000);
  });

  it("rejects a TTL over the max with INVALID_ARGUMENT in istiod's words, even absurd int64 values", async () => {
    const err = (await lifetime(String(2160 * 3600 + 1))) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toContain('requested TTL 2160h0m1s is greater than the max allowed TTL 2160h0m0s');
    const huge = (await lifetime('9223372036854775807')) as grpc.ServiceError;
    expect(huge.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(huge.details).toContain('is greater than the max allowed TTL');
  });
});

describe('authentication failures are UNAUTHENTICATED with a reason, never echoing the token', () => {
  const cases: [string, () => Promise<Record<string, string>>, RegExp][] = [
    ['no authorization header', async () => ({}), /no credentials/],
    ['not a Bearer header', async () => ({ authorization: 'Basic abc' }), /Bearer/],
    ['malformed token', async () => ({ authorization: 'Bearer not.a.jwt' }), /malformed/],
    ['expired token', async () => ({ authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web', expiresInSeconds: -120 })}` }), /expired/],
    ['wrong issuer', async () => ({ authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web', issuer: 'https://evil.example' })}` }), /issuer/],
    ['wrong audience', async () => ({ authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web', audience: 'other' })}` }), /audience/],
    ['not yet valid', async () => ({ authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web', notBeforeOffsetSeconds: 600 })}` }), /not valid yet/],
    ['subject is not a service account', async () => ({ authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'web', sub: 'user:alice' })}` }), /service account/],
    // sub names demo/web, the kubernetes.io claims demo/admin: neither may be believed.
    ['kubernetes.io claims disagree with sub', async () => ({ authorization: `Bearer ${await issuer.token({ namespace: 'demo', serviceAccount: 'admin', sub: 'system:serviceaccount:demo:web' })}` }), /kubernetes\.io claims do not match its subject/],
  ];
  it.each(cases)('%s', async (_name, metadata, reason) => {
    const md = await metadata();
    const { err } = await call(client, sidecarRequest(csrFor()), md);
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toMatch(reason);
    const tokenPart = md.authorization?.split(' ')[1];
    if (tokenPart && tokenPart.length > 20) expect(err?.details).not.toContain(tokenPart);
  });

  it('a token signed by a key with the right kid but the wrong key fails the signature check', async () => {
    const { generateKeyPair: gen } = await import('jose');
    const other = await gen('ES256');
    const forged = await issuer.token({ namespace: 'demo', serviceAccount: 'web', signWith: { key: other.privateKey, kid: issuer.kid } });
    const { err } = await call(client, sidecarRequest(csrFor()), bearer(forged));
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toMatch(/signature does not verify/);
  });

  it('a token from a key the issuer does not publish is refused', async () => {
    const { generateKeyPair: gen } = await import('jose');
    const other = await gen('ES256');
    const forged = await issuer.token({ namespace: 'demo', serviceAccount: 'web', signWith: { key: other.privateKey, kid: 'unknown-kid' } });
    const { err } = await call(client, sidecarRequest(csrFor()), bearer(forged));
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toMatch(/key the issuer does not publish/);
  });

  it('an unauthenticated request with a bad CSR gets UNAUTHENTICATED (authentication first)', async () => {
    const { err } = await call(client, sidecarRequest('garbage'), {});
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
  });
});

describe('CSR problems are INVALID_ARGUMENT', () => {
  it.each([
    ['not PEM at all', 'hello'],
    ['PEM of garbage DER', '-----BEGIN CERTIFICATE REQUEST-----\nAAECAwQ=\n-----END CERTIFICATE REQUEST-----\n'],
  ])('%s', async (_name, csr) => {
    const { err } = await call(client, sidecarRequest(csr), bearer(token));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/CSR/);
  });

  it('an empty csr field', async () => {
    const { err } = await call(client, sidecarRequest(''), bearer(token));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('a CSR whose signature does not verify', async () => {
    const der = Buffer.from(decodePem(csrFor())[0]!.der);
    der[der.length - 5] = der[der.length - 5]! ^ 0x01; // inside the signature value
    const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    const { err } = await call(client, sidecarRequest(pem), bearer(token));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/signature/);
  });

  it('a weak RSA-1024 key', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const { err } = await call(client, sidecarRequest(buildCsrPem({ privateKey, sans: [{ type: 'uri', value: ID }] })), bearer(token));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/RSA-1024 is not accepted/);
  });

  it('an EC P-521 key', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
    const { err } = await call(client, sidecarRequest(buildCsrPem({ privateKey, sans: [{ type: 'uri', value: ID }] })), bearer(token));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/P-521 is not accepted/);
  });

  it('a CSR with no SAN at all', async () => {
    const { err } = await call(client, sidecarRequest(csrFor([])), bearer(token));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toContain(`must carry one URI SAN, ${ID}`);
  });
});

describe('authorization: the CSR may ask only for the caller identity', () => {
  it.each<[string, SanEntry[], string]>([
    ['another service account', [{ type: 'uri', value: 'spiffe://cluster.local/ns/demo/sa/admin' }], 'spiffe://cluster.local/ns/demo/sa/admin'],
    ['another trust domain', [{ type: 'uri', value: 'spiffe://evil.local/ns/demo/sa/web' }], 'spiffe://evil.local/ns/demo/sa/web'],
    ['its own ID plus another', [{ type: 'uri', value: ID }, { type: 'uri', value: 'spiffe://cluster.local/ns/kube-system/sa/x' }], 'spiffe://cluster.local/ns/kube-system/sa/x'],
    ['a DNS name', [{ type: 'uri', value: ID }, { type: 'dns', value: 'web.demo.svc' }], 'web.demo.svc'],
    ['an IP address', [{ type: 'uri', value: ID }, { type: 'ip', value: Buffer.from([10, 0, 0, 1]) }], '10.0.0.1'],
  ])('%s: PERMISSION_DENIED naming the SAN', async (_name, sans, named) => {
    const { err } = await call(client, sidecarRequest(csrFor(sans)), bearer(token));
    expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err?.details).toContain(named);
  });

  it('an email SAN beside its own URI SAN (a CSR made by openssl req): PERMISSION_DENIED naming it', async () => {
    const work = tempDir('svid-ca-email-san-');
    try {
      const keyFile = join(work, 'key.pem');
      writeFileSync(keyFile, privateKeyPem(generateKeyPair('ec-p256').privateKey));
      const csr = execFileSync(tool('openssl'), ['req', '-new', '-key', keyFile, '-subj', '/', '-addext', `subjectAltName=URI:${ID},email:web@demo.example`], { encoding: 'utf8' });
      const { res, err } = await call(client, sidecarRequest(csr), bearer(token));
      expect(res).toBeUndefined();
      expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(err?.details).toContain('web@demo.example');
    } finally {
      removeDir(work);
    }
  });

  it('asking to impersonate another identity on a CA without --trusted-node-accounts is UNAUTHENTICATED', async () => {
    const other = 'spiffe://cluster.local/ns/demo/sa/admin';
    const request = { csr: csrFor([{ type: 'uri', value: other }]), validity_duration: '3600', metadata: { fields: { ImpersonatedIdentity: { stringValue: other } } } };
    const { res, err } = await call(client, request, bearer(token));
    expect(res).toBeUndefined();
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('impersonation is not enabled on this CA');
  });
});

describe('cluster id', () => {
  let clustered: TestServer;
  let c: CaClient;
  beforeAll(async () => {
    clustered = await startTestServer({ cacerts: pki.dir, issuer, clusterId: 'cluster-a' });
    c = clientFor(clustered, pki.root.certPem);
  });
  afterAll(async () => {
    c.close();
    await clustered.close();
  });
  it('accepts its own cluster and an empty clusterid, refuses another cluster', async () => {
    expect((await call(c, sidecarRequest(csrFor()), { authorization: `Bearer ${token}`, clusterid: 'cluster-a' })).err).toBeUndefined();
    expect((await call(c, sidecarRequest(csrFor()), { authorization: `Bearer ${token}`, clusterid: '' })).err).toBeUndefined();
    expect((await call(c, sidecarRequest(csrFor()), { authorization: `Bearer ${token}` })).err).toBeUndefined();
    const { err } = await call(c, sidecarRequest(csrFor()), { authorization: `Bearer ${token}`, clusterid: 'cluster-b' });
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toContain('cluster-b');
  });
});

describe('signer expiry', () => {
  it('an expired signer signs nothing: UNAVAILABLE, /readyz 503, gRPC health NOT_SERVING; a valid bundle restores service', async () => {
    const root = makeRoot({ notBefore: new Date(Date.now() - 86_400_000) });
    const local = { root, dir: writeCacerts(tempDir(), { signer: makeIntermediate(root), roots: [root] }) };
    const s = await startTestServer({ cacerts: local.dir, issuer });
    const c = clientFor(s, local.root.certPem);
    const { health } = loadServices();
    const hc = new health(s.address, grpc.credentials.createSsl(Buffer.from(local.root.certPem))) as unknown as {
      Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      close(): void;
    };
    const check = (service: string) => new Promise<{ err: grpc.ServiceError | null; status?: string }>((r) => hc.Check({ service }, (err, res) => r({ err, status: res?.status })));
    try {
      const good = s.service.authority.bundle;
      // The same files, loaded as seen from a moment after the signer's expiry, give a bundle
      // whose signer has expired "now" from the authority's point of view.
      const expiredSigner = makeIntermediate(local.root, { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
      const dir = writeCacerts(tempDir(), { signer: expiredSigner, roots: [local.root] });
      const expired = loadCacerts(dir, new Date(Date.now() - 5400_000));
      s.service.authority.replaceBundle(expired);
      const { err } = await call(c, sidecarRequest(csrFor()), bearer(token));
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(err?.details).toMatch(/expired/);
      expect((await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/readyz`)).status).toBe(503);
      expect((await check('')).status).toBe('NOT_SERVING');
      s.service.authority.replaceBundle(good);
      expect((await call(c, sidecarRequest(csrFor()), bearer(token))).err).toBeUndefined();
      expect((await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/readyz`)).status).toBe(200);
      expect((await check('istio.v1.auth.IstioCertificateService')).status).toBe('SERVING');
      removeDir(dir);
    } finally {
      hc.close();
      c.close();
      await s.close();
      removeDir(local.dir);
    }
  });

  it('clamps NotAfter to the signer NotAfter', async () => {
    const root = makeRoot();
    const signer = makeIntermediate(root, { notAfter: new Date(Date.now() + 2 * 3600_000) });
    const dir = writeCacerts(tempDir(), { signer, roots: [root] });
    const s = await startTestServer({ cacerts: dir, issuer });
    const c = clientFor(s, root.certPem);
    try {
      const { res } = await call(c, sidecarRequest(csrFor(), String(10 * 3600)), bearer(token));
      const leaf = certsOf(res!.cert_chain[0]!)[0]!;
      expect(leaf.validTo).toBe(signer.cert.validTo);
      expect(opensslVerify(root.certPem, [signer.certPem], res!.cert_chain[0]!)).toContain('OK');
      expect(s.logs.records().some((r) => r.msg === 'TTL clamped to the signing certificate expiry')).toBe(true);
    } finally {
      c.close();
      await s.close();
      removeDir(dir);
    }
  });
});

describe('signers and layouts', () => {
  it.each<[string, KeySpec, KeySpec, 'istio' | 'kubernetes-tls', string]>([
    ['RSA-2048 intermediate under an RSA root, Istio layout', 'rsa-2048', 'rsa-2048', 'istio', 'sha256WithRSAEncryption'],
    ['EC P-384 intermediate, Istio layout', 'ec-p384', 'ec-p384', 'istio', 'ecdsa-with-SHA384'],
    ['EC P-256 intermediate, Kubernetes TLS layout', 'ec-p256', 'ec-p256', 'kubernetes-tls', 'ecdsa-with-SHA256'],
    ['RSA-2048 intermediate under an EC root, Kubernetes TLS layout', 'ec-p256', 'rsa-2048', 'kubernetes-tls', 'sha256WithRSAEncryption'],
  ])('%s', async (_name, rootKey, signerKey, layout, algorithm) => {
    const local = makeCacerts({ rootKey, signerKey, layout });
    const s = await startTestServer({ cacerts: local.dir, issuer });
    const c = clientFor(s, local.root.certPem);
    try {
      const { res, err } = await call(c, sidecarRequest(csrFor(undefined, 'rsa-2048')), bearer(token));
      expect(err).toBeUndefined();
      const chain = res!.cert_chain;
      if (layout === 'kubernetes-tls') {
        // istiod's shape for the TLS layout: [leaf, tls.crt certs, ca.crt certs, ca.crt verbatim]
        expect(chain).toEqual([chain[0], local.signer.certPem, local.root.certPem, local.root.certPem]);
      } else {
        expect(chain).toEqual([chain[0], local.signer.certPem, local.root.certPem, local.root.certPem]);
      }
      expect(opensslText(chain[0]!)).toContain(`Signature Algorithm: ${algorithm}`);
      expect(opensslVerify(chain.at(-1)!, chain.slice(1, -1), chain[0]!)).toContain('OK');
    } finally {
      c.close();
      await s.close();
      removeDir(local.dir);
    }
  });

  it('a root bundle with several roots is returned whole as the last element', async () => {
    const root = makeRoot({ cn: 'current root' });
    const other = makeRoot({ cn: 'next root' });
    const signer = makeIntermediate(root);
    const dir = writeCacerts(tempDir(), { signer, roots: [root, other] });
    const s = await startTestServer({ cacerts: dir, issuer });
    const c = clientFor(s, root.certPem);
    try {
      const { res } = await call(c, sidecarRequest(csrFor()), bearer(token));
      expect(res!.cert_chain.at(-1)).toBe(root.certPem + other.certPem);
      expect(opensslVerify(root.certPem + other.certPem, [signer.certPem], res!.cert_chain[0]!)).toContain('OK');
    } finally {
      c.close();
      await s.close();
      removeDir(dir);
    }
  });
});

describe('serving certificate and health', () => {
  it('serves a certificate for --serving-dns issued by the plugged-in intermediate', async () => {
    const tls = await import('node:tls');
    const cert = await new Promise<import('node:tls').PeerCertificate>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: server.service.grpcPort, servername: 'svid-ca.istio-system.svc', ca: pki.root.certPem, ALPNProtocols: ['h2'] }, () => {
        expect(socket.alpnProtocol).toBe('h2');
        expect(socket.authorized).toBe(true);
        resolve(socket.getPeerCertificate(true));
        socket.end();
      });
      socket.on('error', reject);
    });
    expect(cert.subjectaltname).toBe('DNS:svid-ca.istio-system.svc, DNS:localhost');
    expect((cert as import('node:tls').DetailedPeerCertificate).issuerCertificate.fingerprint256).toBe(pki.signer.cert.fingerprint256);
  });

  it('answers /healthz, /readyz, /metrics and gRPC health', async () => {
    const base = `http://127.0.0.1:${server.service.monitoringPort}`;
    expect(await fetchText(`${base}/healthz`)).toEqual({ status: 200, body: 'ok\n' });
    expect((await fetchText(`${base}/readyz`)).status).toBe(200);
    const metrics = await fetchText(`${base}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('citadel_server_csr_count');
    const { health } = loadServices();
    const hc = new health(server.address, grpc.credentials.createSsl(Buffer.from(pki.root.certPem))) as unknown as {
      Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      close(): void;
    };
    const check = (service: string) => new Promise<{ err: grpc.ServiceError | null; status?: string }>((r) => hc.Check({ service }, (err, res) => r({ err, status: res?.status })));
    expect((await check('')).status).toBe('SERVING');
    expect((await check('istio.v1.auth.IstioCertificateService')).status).toBe('SERVING');
    expect((await check('nope')).err?.code).toBe(grpc.status.NOT_FOUND);
    hc.close();
  });
});

describe('logs', () => {
  it('never contain a token, a private key or a CSR, and record each decision', () => {
    expect(allLogLines.length).toBeGreaterThan(10);
    for (const line of allLogLines) {
      expect(line).not.toMatch(/-----BEGIN/);
      expect(line).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
    }
    const audits = server.logs.records().filter((r) => r.audit);
    expect(audits.some((r) => (r.audit as { event: string }).event === 'issued')).toBe(true);
    expect(audits.some((r) => (r.audit as { event: string }).event === 'denied')).toBe(true);
  });
});
