/**
 * Observability end to end, against the real svid-ca service on loopback ports (real gRPC over
 * TLS, real monitoring listener, real files): istiod's citadel_* counters and svid-ca's own
 * metrics after a known mix of outcomes, `promtool check metrics` on a real scrape, the expiry
 * gauges against the fixtures, series leaving with a reload, bounded label values, gRPC health
 * Watch, and the audit trail (pino lines and the --audit-log file).
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, type PeerCertificate } from 'node:tls';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { AggregatorRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCacerts } from '../src/ca/index.js';
import type { CaClient } from '../src/client/index.js';
import { CaMetrics } from '../src/observability/index.js';
import { buildCsrPem, decodePem, generateKeyPair, inspectCertificate, type SanEntry, type SigningBundle } from '../src/pki/index.js';
import { CA_SERVICE_NAME, loadServices } from '../src/server/index.js';
import { istioFiles, SecretVolume } from './helpers/k8s-volume.js';
import { makeIntermediate, makeRoot, removeDir, tempDir, writeCacerts, type TestCa } from './helpers/pki.js';
import { call, clientFor, createTestIssuer, fetchText, startTestServer, type TestIssuer, type TestServer } from './helpers/server.js';
import { runTool } from './helpers/tools.js';

// Namespace and service account used only here, so a leak into a label value cannot be a coincidence.
const NS = 'obs-ns-4d1e';
const SA = 'obs-sa-77';
const ID = `spiffe://cluster.local/ns/${NS}/sa/${SA}`;
const PROBE_NS = 'probe-ns-q7';
const PROBE_ID = `spiffe://cluster.local/ns/${PROBE_NS}/sa/admin`;
const DAY = 86_400_000;

const csrFor = (sans: SanEntry[] = [{ type: 'uri', value: ID }]) => buildCsrPem({ privateKey: generateKeyPair('ec-p256').privateKey, sans, subjectOrganization: '' });
const sidecarRequest = (csr: string, ttl = '3600') => ({ csr, validity_duration: ttl, metadata: { fields: { CertSigner: { stringValue: '' } } } });
const bearer = (t: string) => ({ authorization: `Bearer ${t}`, clusterid: 'Kubernetes' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- reading a real scrape -------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (the lines that are not comments). */
function samples(body: string): Sample[] {
  const out: Sample[] = [];
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of one series; undefined when the series is not exported. */
function value(all: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const s = all.find((x) => x.name === name && Object.keys(labels).length === Object.keys(x.labels).length && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}

async function scrape(server: TestServer): Promise<{ body: string; all: Sample[] }> {
  const { status, body } = await fetchText(`http://127.0.0.1:${server.service.monitoringPort}/metrics`);
  expect(status).toBe(200);
  return { body, all: samples(body) };
}

const unixSeconds = (validTo: string) => new Date(validTo).getTime() / 1000;
const subjectOf = (c: TestCa) => (c.cert.subject ?? '').replace(/\n/g, ', ');
const serialOf = (c: TestCa) => c.cert.serialNumber.toLowerCase();

/** The svid_ca_cert_expiry_timestamp_seconds series as "role subject serial -> value". */
function expirySeries(all: Sample[]): Map<string, number> {
  return new Map(
    all.filter((s) => s.name === 'svid_ca_cert_expiry_timestamp_seconds').map((s) => [`${s.labels.role} ${s.labels.subject} ${s.labels.serial}`, s.value]),
  );
}
const seriesKey = (role: string, c: TestCa) => `${role} ${subjectOf(c)} ${serialOf(c)}`;

/** The certificate the gRPC listener serves right now, as a TLS client sees it. */
function servedCertificate(port: number, rootPem: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: rootPem, ALPNProtocols: ['h2'] }, () => {
      resolve(socket.getPeerCertificate());
      socket.end();
    });
    socket.on('error', reject);
  });
}

/** A bundle made from the same kind of files, whose signer expired an hour ago (as seen "now"). */
function expiredBundle(root: TestCa): { bundle: SigningBundle; dir: string } {
  const expiredSigner = makeIntermediate(root, { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
  const dir = writeCacerts(tempDir(), { signer: expiredSigner, roots: [root] });
  // Loaded as seen from before the expiry (the loader refuses an expired signer), then swapped in.
  return { bundle: loadCacerts(dir, new Date(Date.now() - 5400_000)), dir };
}

// --- a server with a three-level hierarchy and an audit file, driven through a known mix -------

let issuer: TestIssuer;
let root: TestCa;
let mid: TestCa;
let signer: TestCa;
let cacertsDir: string;
let auditFile: string;
let server: TestServer;
let client: CaClient;
let token: string;
let serverClosed = false;
const issuedLeaves: X509Certificate[] = [];

beforeAll(async () => {
  issuer = await createTestIssuer();
  // notBefore a day back: expiredBundle() loads its files as seen from an hour and a half ago.
  root = makeRoot({ cn: 'obs root', notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + 3000 * DAY) });
  mid = makeIntermediate(root, { cn: 'obs intermediate', notAfter: new Date(Date.now() + 700 * DAY) });
  signer = makeIntermediate(mid, { cn: 'obs signer', notAfter: new Date(Date.now() + 300 * DAY) });
  cacertsDir = writeCacerts(tempDir('svid-ca-obs-'), { signer, intermediates: [mid], roots: [root] });
  auditFile = join(tempDir('svid-ca-audit-'), 'audit.log');
  server = await startTestServer({ cacerts: cacertsDir, issuer, auditLog: auditFile, reloadIntervalMs: 3600_000 });
  client = clientFor(server, root.certPem);
  token = await issuer.token({ namespace: NS, serviceAccount: SA, pod: 'web-7c9f' });
});

afterAll(async () => {
  client?.close();
  if (!serverClosed) await server?.close();
  removeDir(cacertsDir);
});

/** The mix: each outcome a known number of times. */
const MIX = { issued: 3, unauthenticated: 2, permission_denied: 1, invalid_csr: 3, invalid_ttl: 1, unavailable: 1, overloaded: 0, internal: 1 };
const TOTAL = Object.values(MIX).reduce((a, b) => a + b, 0);

describe('metrics after a known mix of outcomes', () => {
  beforeAll(async () => {
    const expectCode = async (p: ReturnType<typeof call>, code: grpc.status) => {
      const { err } = await p;
      expect(err?.code, err?.details).toBe(code);
    };
    // issued
    for (const ttl of ['3600', '0', '7200']) {
      const { res, err } = await call(client, sidecarRequest(csrFor(), ttl), bearer(token));
      expect(err).toBeUndefined();
      issuedLeaves.push(new X509Certificate(decodePem(res!.cert_chain[0]!)[0]!.der));
    }
    // unauthenticated: no token; an expired token
    await expectCode(call(client, sidecarRequest(csrFor()), { clusterid: 'Kubernetes' }), grpc.status.UNAUTHENTICATED);
    const expired = await issuer.token({ namespace: NS, serviceAccount: SA, expiresInSeconds: -600 });
    await expectCode(call(client, sidecarRequest(csrFor()), bearer(expired)), grpc.status.UNAUTHENTICATED);
    // permission_denied: a SAN of another namespace's service account
    await expectCode(call(client, sidecarRequest(csrFor([{ type: 'uri', value: PROBE_ID }])), bearer(token)), grpc.status.PERMISSION_DENIED);
    // invalid_csr: not a CSR, a CSR without SAN, no CSR at all
    await expectCode(call(client, sidecarRequest('hello'), bearer(token)), grpc.status.INVALID_ARGUMENT);
    await expectCode(call(client, sidecarRequest(csrFor([])), bearer(token)), grpc.status.INVALID_ARGUMENT);
    await expectCode(call(client, sidecarRequest(''), bearer(token)), grpc.status.INVALID_ARGUMENT);
    // invalid_ttl: above --max-ttl (2160h)
    await expectCode(call(client, sidecarRequest(csrFor(), String(2160 * 3600 + 1)), bearer(token)), grpc.status.INVALID_ARGUMENT);
    const good = server.service.authority.bundle;
    // unavailable: the signer has expired
    const expired1 = expiredBundle(root);
    server.service.authority.replaceBundle(expired1.bundle);
    await expectCode(call(client, sidecarRequest(csrFor()), bearer(token)), grpc.status.UNAVAILABLE);
    removeDir(expired1.dir);
    // internal: a faulty signing component, a bundle whose "private" key is a public key, so
    // node:crypto's sign throws a TypeError inside Authority.issueCertificate
    server.service.authority.replaceBundle({ ...good, signer: { ...good.signer, privateKey: createPublicKey(good.signer.privateKey!) } });
    await expectCode(call(client, sidecarRequest(csrFor()), bearer(token)), grpc.status.INTERNAL);
    server.service.authority.replaceBundle(good);
  });

  it('counts every call and each outcome in the istiod-named citadel_* counters', async () => {
    const { all } = await scrape(server);
    expect(value(all, 'citadel_server_csr_count')).toBe(TOTAL);
    expect(value(all, 'citadel_server_success_cert_issuance_count')).toBe(MIX.issued);
    expect(value(all, 'citadel_server_authentication_failure_count')).toBe(MIX.unauthenticated);
    const signErrors = Object.fromEntries(all.filter((s) => s.name === 'citadel_server_csr_sign_err_count').map((s) => [s.labels.error, s.value]));
    // istiod's label values: a bad or missing CSR and a CSR without SAN are CSR_ERROR; PERMISSION_DENIED and
    // UNAUTHENTICATED are not sign errors.
    expect(signErrors).toEqual({ CSR_ERROR: MIX.invalid_csr, TTL_ERROR: MIX.invalid_ttl, CA_NOT_READY: MIX.unavailable, CERT_GEN_ERROR: MIX.internal });
  });

  it('counts each outcome in svid_ca_requests_total, observes the histograms, and leaves nothing in flight', async () => {
    const { all } = await scrape(server);
    const outcomes = Object.fromEntries(all.filter((s) => s.name === 'svid_ca_requests_total').map((s) => [s.labels.outcome, s.value]));
    expect(outcomes).toEqual(MIX);
    expect(value(all, 'svid_ca_issue_duration_seconds_count')).toBe(TOTAL);
    expect(value(all, 'svid_ca_issued_ttl_seconds_count')).toBe(MIX.issued);
    // 3600 s, the 24h default for validity_duration 0, and 7200 s.
    expect(value(all, 'svid_ca_issued_ttl_seconds_sum')).toBe(3600 + 86400 + 7200);
    expect(value(all, 'svid_ca_ttl_clamped_total')).toBe(0);
    expect(value(all, 'svid_ca_requests_in_flight')).toBe(0);
    expect(value(all, 'svid_ca_signer_expires_before_max_ttl')).toBe(0);
    // No cacerts reload happened (the swaps above went straight to the authority).
    expect(value(all, 'svid_ca_bundle_reloads_total', { result: 'success' })).toBe(0);
    expect(value(all, 'svid_ca_bundle_reloads_total', { result: 'failure' })).toBe(0);
    expect(value(all, 'svid_ca_bundle_last_reload_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 600);
    // Node process metrics carry the prefix.
    expect(value(all, 'svid_ca_process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(all.some((s) => s.name.startsWith('svid_ca_nodejs_'))).toBe(true);
    expect(all.some((s) => s.name.startsWith('process_') || s.name.startsWith('nodejs_'))).toBe(false);
  });

  it('every HELP text is there and every metric family is svid_ca_* or citadel_server_*', async () => {
    const { body } = await scrape(server);
    const families = [...body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!);
    expect(families.length).toBeGreaterThan(20);
    for (const f of families) {
      expect(f).toMatch(/^(svid_ca_|citadel_server_)/);
      expect(body).toMatch(new RegExp(`^# HELP ${f} \\S.{10,}$`, 'm'));
    }
    for (const name of [
      'citadel_server_csr_count',
      'citadel_server_success_cert_issuance_count',
      'citadel_server_authentication_failure_count',
      'citadel_server_csr_sign_err_count',
      'citadel_server_root_cert_expiry_timestamp',
      'citadel_server_cert_chain_expiry_timestamp',
      'citadel_server_root_cert_expiry_seconds',
      'citadel_server_cert_chain_expiry_seconds',
      'svid_ca_cert_expiry_timestamp_seconds',
      'svid_ca_requests_total',
      'svid_ca_issue_duration_seconds',
      'svid_ca_requests_in_flight',
      'svid_ca_issued_ttl_seconds',
      'svid_ca_ttl_clamped_total',
      'svid_ca_bundle_reloads_total',
      'svid_ca_bundle_last_reload_timestamp_seconds',
      'svid_ca_signer_expires_before_max_ttl',
    ]) {
      expect(families).toContain(name);
    }
  });

  it('docs/monitoring.md lists every metric family a scrape exports', async () => {
    const { body } = await scrape(server);
    const section = readFileSync(new URL('../docs/monitoring.md', import.meta.url), 'utf8');
    expect(section.length).toBeGreaterThan(1000);
    // Text written for the monitoring manual but not yet folded in (docs/_pending/<issue>.md, "## -> docs/monitoring.md").
    const pendingDir = new URL('../docs/_pending/', import.meta.url);
    const pending = existsSync(pendingDir)
      ? readdirSync(pendingDir)
          .filter((f) => f.endsWith('.md'))
          .flatMap((f) => readFileSync(new URL(f, pendingDir), 'utf8').split(/\n(?=## )/))
          .filter((part) => part.startsWith('## -> docs/monitoring.md'))
          .join('\n')
      : '';
    const families = [...body.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!).filter((f) => !/^svid_ca_(process|nodejs)_/.test(f));
    expect(families.filter((f) => !section.includes(`\`${f}\``) && !pending.includes(`\`${f}\``))).toEqual([]);
  });

  it('no label value holds a SPIFFE ID, a namespace or service account from a request, or token content', async () => {
    const { body, all } = await scrape(server);
    for (const s of all) {
      for (const [label, v] of Object.entries(s.labels)) {
        const where = `${s.name}{${label}="${v}"}`;
        expect(v, where).not.toContain('spiffe://');
        expect(v, where).not.toContain(NS);
        expect(v, where).not.toContain(SA);
        expect(v, where).not.toContain(PROBE_NS);
        expect(v, where).not.toMatch(/eyJ/);
      }
    }
    // Not in HELP text or metric names either.
    for (const secret of ['spiffe://', NS, SA, PROBE_NS, token.slice(0, 40)]) expect(body).not.toContain(secret);
  });

  it('promtool check metrics on a real scrape finds nothing but the names of istiod mandated counters', async () => {
    const { body, all } = await scrape(server);
    const r = runTool('promtool', ['check', 'metrics'], { input: body });
    // Each finding is one line `<metric name> <what is wrong>`; promtool exits 3 when it has lint findings, and
    // anything else (a parse error, a crash) is not a lint finding and fails here.
    expect([0, 3], `promtool check metrics exited ${r.status}:\n${r.stdout}${r.stderr}`).toContain(r.status);
    const findings = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
    // istiod's counters keep their names exactly (dashboards and alerts depend on them), so whatever this promtool
    // version says about those names (2.42: ends in _count, should end in _total) is expected. The filter is by
    // metric, not by count or wording: any finding about any other metric, or a line about no metric, fails.
    const ISTIOD_MANDATED_NAMES = [
      'citadel_server_csr_count',
      'citadel_server_success_cert_issuance_count',
      'citadel_server_authentication_failure_count',
      'citadel_server_csr_sign_err_count',
    ];
    for (const name of ISTIOD_MANDATED_NAMES) expect(all.some((s) => s.name === name), `${name} in the scrape`).toBe(true);
    const aboutMandatedName = (l: string) => ISTIOD_MANDATED_NAMES.includes(l.split(/\s/, 1)[0]!);
    expect(findings.filter((l) => !aboutMandatedName(l)), `promtool check metrics exited ${r.status}:\n${findings.join('\n')}`).toEqual([]);
    // A clean exit means no findings at all; findings mean exit 3.
    expect(r.status === 0, findings.join('\n')).toBe(findings.length === 0);
  });
});

describe('certificate expiry gauges', () => {
  it('svid_ca_cert_expiry_timestamp_seconds holds the not-after of the root, intermediate, signer and serving certificate', async () => {
    const { all } = await scrape(server);
    const served = await servedCertificate(server.service.grpcPort, root.certPem);
    const serving = server.service.lifecycle.serving.current;
    const expected = new Map([
      [seriesKey('root', root), unixSeconds(root.cert.validTo)],
      [seriesKey('intermediate', mid), unixSeconds(mid.cert.validTo)],
      [seriesKey('signer', signer), unixSeconds(signer.cert.validTo)],
      [`serving svid-ca.istio-system.svc,localhost ${serving.serialHex}`, unixSeconds(served.valid_to)],
    ]);
    expect(expirySeries(all)).toEqual(expected);
    expect(served.serialNumber.toLowerCase()).toBe(serving.serialHex);
  });

  it("istiod's gauges: first root and first chain certificate, as unix seconds and as seconds left", async () => {
    const before = Date.now() / 1000;
    const { all } = await scrape(server);
    const after = Date.now() / 1000;
    expect(value(all, 'citadel_server_root_cert_expiry_timestamp')).toBe(unixSeconds(root.cert.validTo));
    // cert-chain.pem starts with the signing certificate.
    expect(value(all, 'citadel_server_cert_chain_expiry_timestamp')).toBe(unixSeconds(signer.cert.validTo));
    // Computed at scrape time: not-after minus the time of the scrape.
    const rootLeft = value(all, 'citadel_server_root_cert_expiry_seconds')!;
    expect(rootLeft).toBeGreaterThanOrEqual(unixSeconds(root.cert.validTo) - after);
    expect(rootLeft).toBeLessThanOrEqual(unixSeconds(root.cert.validTo) - before);
    const chainLeft = value(all, 'citadel_server_cert_chain_expiry_seconds')!;
    expect(chainLeft).toBeGreaterThanOrEqual(unixSeconds(signer.cert.validTo) - after);
    expect(chainLeft).toBeLessThanOrEqual(unixSeconds(signer.cert.validTo) - before);
  });
});

describe('audit trail', () => {
  type Audit = Record<string, unknown>;
  const auditLines = () => server.logs.records().filter((r) => r.audit);

  it('one info line per decision, with every field the decision has', () => {
    const lines = auditLines();
    expect(lines).toHaveLength(TOTAL);
    for (const l of lines) expect(l.level).toBe(30);
    const audits = lines.map((l) => l.audit as Audit);

    const issued = audits.filter((a) => a.event === 'issued');
    expect(issued).toHaveLength(MIX.issued);
    const signerSki = inspectCertificate(signer.cert.raw).subjectKeyId!.toString('hex');
    for (const [i, leaf] of issuedLeaves.entries()) {
      const a = issued[i]!;
      expect(a).toEqual({
        event: 'issued',
        identity: ID,
        namespace: NS,
        serviceAccount: SA,
        pod: 'web-7c9f',
        clusterId: 'Kubernetes',
        ...(i === 1 ? {} : { requestedTtlSeconds: i === 0 ? 3600 : 7200 }),
        grantedTtlSeconds: [3600, 86400, 7200][i],
        serial: leaf.serialNumber.toLowerCase(),
        notAfter: new Date(leaf.validTo).toISOString(),
        signerSki,
        code: 'OK',
        durationMs: expect.any(Number),
      });
      expect(a.durationMs as number).toBeGreaterThan(0);
    }

    const denied = audits.filter((a) => a.event === 'denied');
    expect(denied).toHaveLength(TOTAL - MIX.issued);
    for (const a of denied) {
      expect(typeof a.reason).toBe('string');
      expect(a.reason).not.toBe('');
      expect(a.clusterId).toBe('Kubernetes');
      expect(typeof a.durationMs).toBe('number');
      for (const k of ['grantedTtlSeconds', 'serial', 'notAfter', 'signerSki']) expect(a).not.toHaveProperty(k);
      // Every denial after authentication names the caller.
      if (a.code !== 'UNAUTHENTICATED') expect(a).toMatchObject({ identity: ID, namespace: NS, serviceAccount: SA, pod: 'web-7c9f' });
      else expect(a).not.toHaveProperty('identity');
    }
    const codes = denied.map((a) => a.code).sort();
    expect(codes).toEqual(
      ['UNAUTHENTICATED', 'UNAUTHENTICATED', 'PERMISSION_DENIED', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'UNAVAILABLE', 'INTERNAL'].sort(),
    );
    const byCode = (code: string) => denied.filter((a) => a.code === code);
    expect(byCode('PERMISSION_DENIED')[0]!.reason).toContain(PROBE_ID);
    // The requested TTL is recorded also when the call is refused before the TTL check.
    expect(byCode('PERMISSION_DENIED')[0]!.requestedTtlSeconds).toBe(3600);
    expect(byCode('UNAUTHENTICATED').map((a) => a.reason)).toEqual([expect.stringMatching(/no credentials/), expect.stringMatching(/expired/)]);
    expect(byCode('UNAVAILABLE')[0]!.reason).toMatch(/CA not ready: the signing certificate expired/);
    // The TTL that was asked for is recorded with the refusal.
    expect(byCode('INVALID_ARGUMENT').find((a) => String(a.reason).includes('max allowed TTL'))).toMatchObject({ requestedTtlSeconds: 2160 * 3600 + 1 });
    // INTERNAL: the caller gets no detail; the log line at error level has it.
    expect(byCode('INTERNAL')[0]!.reason).toMatch(/internal error while signing/);
    expect(server.logs.records().some((r) => r.level === 50 && r.msg === 'request failed unexpectedly')).toBe(true);
  });

  it('never holds a token, a key or a CSR', () => {
    const text = server.logs.lines.join('\n') + readFileSync(auditFile, 'utf8');
    expect(text).not.toMatch(/-----BEGIN/);
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
    expect(text).not.toContain(token.split('.')[2]!);
  });

  it('--audit-log holds the same records as the pino lines, and is flushed and closed with the server', async () => {
    await server.close();
    serverClosed = true;
    const fileRecords = readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l)
      .map((l) => JSON.parse(l) as Audit);
    expect(fileRecords).toHaveLength(TOTAL);
    for (const r of fileRecords) expect(new Date(String(r.time)).getTime()).toBeGreaterThan(Date.now() - 600_000);
    const withoutTime = fileRecords.map(({ time: _time, ...rest }) => rest);
    expect(withoutTime).toEqual(auditLines().map((l) => l.audit));
  });
});

describe('a reload drops the series of certificates that left the bundle', () => {
  it('root, intermediate, signer and serving series follow the new bundle; reload counters and istiod gauges move', async () => {
    const rootA = makeRoot({ cn: 'root A', notAfter: new Date(Date.now() + 2000 * DAY) });
    const rootB = makeRoot({ cn: 'root B', notAfter: new Date(Date.now() + 4000 * DAY) });
    const midA = makeIntermediate(rootA, { cn: 'intermediate A', notAfter: new Date(Date.now() + 800 * DAY) });
    const signerA = makeIntermediate(midA, { cn: 'signer A', notAfter: new Date(Date.now() + 400 * DAY) });
    const signerB = makeIntermediate(rootB, { cn: 'signer B', notAfter: new Date(Date.now() + 200 * DAY) });
    const dir = tempDir('svid-ca-obs-volume-');
    const volume = new SecretVolume(dir);
    volume.write({
      'ca-cert.pem': signerA.certPem,
      'ca-key.pem': signerA.keyPem,
      'cert-chain.pem': signerA.certPem + midA.certPem + rootA.certPem,
      'root-cert.pem': rootA.certPem + rootB.certPem,
    });
    // A long poll interval: the reload is forced with checkNow(), not waited for.
    const s = await startTestServer({ cacerts: dir, issuer, reloadIntervalMs: 3600_000 });
    try {
      const servingBefore = s.service.lifecycle.serving.current;
      const before = await scrape(s);
      expect([...expirySeries(before.all).keys()].sort()).toEqual(
        [
          seriesKey('root', rootA),
          seriesKey('root', rootB),
          seriesKey('intermediate', midA),
          seriesKey('signer', signerA),
          `serving svid-ca.istio-system.svc,localhost ${servingBefore.serialHex}`,
        ].sort(),
      );
      expect(value(before.all, 'citadel_server_root_cert_expiry_timestamp')).toBe(unixSeconds(rootA.cert.validTo));
      expect(value(before.all, 'citadel_server_cert_chain_expiry_timestamp')).toBe(unixSeconds(signerA.cert.validTo));

      const swappedAt = Date.now() / 1000;
      volume.write(istioFiles(signerB, [rootB]));
      s.service.lifecycle.checkNow();
      expect(s.service.authority.bundle.signingCert.x509.fingerprint256).toBe(signerB.cert.fingerprint256);

      const after = await scrape(s);
      const servingAfter = s.service.lifecycle.serving.current;
      expect(servingAfter.serialHex).not.toBe(servingBefore.serialHex);
      const served = await servedCertificate(s.service.grpcPort, rootB.certPem);
      expect(expirySeries(after.all)).toEqual(
        new Map([
          [seriesKey('root', rootB), unixSeconds(rootB.cert.validTo)],
          [seriesKey('signer', signerB), unixSeconds(signerB.cert.validTo)],
          [`serving svid-ca.istio-system.svc,localhost ${servingAfter.serialHex}`, unixSeconds(served.valid_to)],
        ]),
      );
      expect(value(after.all, 'citadel_server_root_cert_expiry_timestamp')).toBe(unixSeconds(rootB.cert.validTo));
      expect(value(after.all, 'citadel_server_cert_chain_expiry_timestamp')).toBe(unixSeconds(signerB.cert.validTo));
      expect(value(after.all, 'svid_ca_bundle_reloads_total', { result: 'success' })).toBe(1);
      expect(value(after.all, 'svid_ca_bundle_reloads_total', { result: 'failure' })).toBe(0);
      expect(value(after.all, 'svid_ca_bundle_last_reload_timestamp_seconds')).toBeGreaterThanOrEqual(Math.floor(swappedAt));

      // A refused reload counts as a failure and leaves the series alone.
      volume.write(istioFiles(makeIntermediate(rootB), [rootB], signerA.keyPem));
      expect(s.service.lifecycle.checkNow()?.result).toBe('failure');
      const refused = await scrape(s);
      expect(value(refused.all, 'svid_ca_bundle_reloads_total', { result: 'failure' })).toBe(1);
      expect(expirySeries(refused.all)).toEqual(expirySeries(after.all));
      expect(s.logs.records().some((r) => r.msg === 'cacerts reload refused; still serving with the current bundle' && String(r.problem).includes('does not match'))).toBe(true);
    } finally {
      await s.close();
      removeDir(dir);
    }
  });
});

describe('requests in flight', () => {
  it('svid_ca_requests_in_flight counts calls held by a slow JWKS endpoint (a local HTTP server) and returns to 0', async () => {
    const localRoot = makeRoot({ cn: 'in-flight root' });
    const dir = writeCacerts(tempDir(), { signer: makeIntermediate(localRoot), roots: [localRoot] });
    // The token issuer's JWKS served over HTTP; responses are held until released, so calls wait in authentication.
    const jwks = readFileSync(issuer.jwksFile, 'utf8');
    const held: ServerResponse[] = [];
    const jwksServer = createServer((_req, res) => held.push(res));
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    const release = () => {
      for (const res of held.splice(0)) res.writeHead(200, { 'content-type': 'application/json' }).end(jwks);
    };
    const s = await startTestServer({
      cacerts: dir,
      issuer,
      jwt: { issuer: issuer.issuer, audience: 'istio-ca', jwksUri: `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/openid/v1/jwks` },
      reloadIntervalMs: 3600_000,
    });
    const c = clientFor(s, localRoot.certPem);
    const inFlight = async () => value((await scrape(s)).all, 'svid_ca_requests_in_flight');
    try {
      expect(await inFlight()).toBe(0);
      const calls = Array.from({ length: 5 }, () => call(c, sidecarRequest(csrFor()), bearer(token)));
      const deadline = Date.now() + 10_000;
      // All five calls counted, and the JWKS fetch they wait for has reached the endpoint.
      while ((await inFlight()) !== 5 || held.length === 0) {
        if (Date.now() > deadline) throw new Error(`svid_ca_requests_in_flight never reached 5 (held JWKS fetches: ${held.length})`);
        await sleep(20);
      }
      release();
      const results = await Promise.all(calls);
      expect(results.map((r) => r.err?.details)).toEqual([undefined, undefined, undefined, undefined, undefined]);
      expect(await inFlight()).toBe(0);
      expect(value((await scrape(s)).all, 'svid_ca_requests_total', { outcome: 'issued' })).toBe(5);
    } finally {
      release();
      c.close();
      await s.close();
      jwksServer.closeAllConnections();
      await new Promise((r) => jwksServer.close(r));
      removeDir(dir);
    }
  });
});

describe('health follows the signer', () => {
  it('gRPC health Watch streams SERVING, NOT_SERVING when the signer expires, SERVING again; Check and /readyz agree', async () => {
    const localRoot = makeRoot({ cn: 'health root', notBefore: new Date(Date.now() - DAY) });
    const dir = writeCacerts(tempDir(), { signer: makeIntermediate(localRoot), roots: [localRoot] });
    const s = await startTestServer({ cacerts: dir, issuer, reloadIntervalMs: 3600_000 });
    const { health } = loadServices();
    const hc = new health(s.address, grpc.credentials.createSsl(Buffer.from(localRoot.certPem))) as unknown as {
      Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      Watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
      close(): void;
    };
    const check = (service: string) => new Promise<string | undefined>((r) => hc.Check({ service }, (_err, res) => r(res?.status)));
    const readyz = async () => (await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/readyz`)).status;
    const healthz = async () => (await fetchText(`http://127.0.0.1:${s.service.monitoringPort}/healthz`)).status;
    const watches = ['', CA_SERVICE_NAME].map((service) => {
      const seen: string[] = [];
      const stream = hc.Watch({ service });
      stream.on('data', (m: { status: string }) => seen.push(m.status));
      stream.on('error', () => undefined); // cancelled at the end
      return { service, seen, stream };
    });
    const waitFor = async (n: number) => {
      const deadline = Date.now() + 5000;
      while (watches.some((w) => w.seen.length < n)) {
        if (Date.now() > deadline) throw new Error(`Watch streams saw ${JSON.stringify(watches.map((w) => w.seen))}, wanted ${n} updates each`);
        await sleep(20);
      }
    };
    const expired = expiredBundle(localRoot);
    try {
      await waitFor(1);
      for (const service of ['', CA_SERVICE_NAME]) expect(await check(service)).toBe('SERVING');
      expect(await readyz()).toBe(200);

      const good = s.service.authority.bundle;
      s.service.authority.replaceBundle(expired.bundle);
      await waitFor(2);
      for (const service of ['', CA_SERVICE_NAME]) expect(await check(service)).toBe('NOT_SERVING');
      expect(await readyz()).toBe(503);
      expect(await healthz()).toBe(200);
      // The expired signer's gauge is exported as it is, so the expiry alerts see it.
      const { all } = await scrape(s);
      expect(value(all, 'citadel_server_cert_chain_expiry_seconds')).toBeLessThan(0);

      s.service.authority.replaceBundle(good);
      await waitFor(3);
      for (const service of ['', CA_SERVICE_NAME]) expect(await check(service)).toBe('SERVING');
      expect(await readyz()).toBe(200);
      for (const w of watches) expect(w.seen, `Watch "${w.service}"`).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
    } finally {
      for (const w of watches) w.stream.cancel();
      hc.close();
      await s.close();
      removeDir(dir);
      removeDir(expired.dir);
    }
  });
});

describe('an audit file that cannot be written', () => {
  it('stops issuance (UNAVAILABLE, counted as unavailable) while the pino audit line is still written', async () => {
    const localRoot = makeRoot({ cn: 'audit root' });
    const dir = writeCacerts(tempDir(), { signer: makeIntermediate(localRoot), roots: [localRoot] });
    // /dev/full: opens fine, every write fails with ENOSPC.
    const s = await startTestServer({ cacerts: dir, issuer, auditLog: '/dev/full', reloadIntervalMs: 3600_000 });
    const c = clientFor(s, localRoot.certPem);
    try {
      const { res, err } = await call(c, sidecarRequest(csrFor()), bearer(token));
      expect(res).toBeUndefined();
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(err?.details).toMatch(/no certificate is issued without its audit record/);
      const { all } = await scrape(s);
      expect(value(all, 'svid_ca_requests_total', { outcome: 'unavailable' })).toBe(1);
      expect(value(all, 'citadel_server_success_cert_issuance_count')).toBe(0);
      const records = s.logs.records();
      expect(records.some((r) => r.level === 50 && String(r.msg).startsWith('audit log write failed'))).toBe(true);
      expect(records.filter((r) => r.audit).map((r) => (r.audit as { event: string; code: string }).code)).toEqual(['UNAVAILABLE']);
    } finally {
      c.close();
      await s.close();
      removeDir(dir);
    }
  });
});

describe('svid_ca_jwks_last_reload_failed across --workers', () => {
  it("the primary's aggregation (prom-client AggregatorRegistry) exports the largest value, not the sum", async () => {
    const [failing, healthy, alsoFailing] = [new CaMetrics({ defaultMetrics: false }), new CaMetrics({ defaultMetrics: false }), new CaMetrics({ defaultMetrics: false })];
    failing.jwksLastReloadFailed.set(1);
    alsoFailing.jwksLastReloadFailed.set(1);
    const value = async (...workers: CaMetrics[]) => {
      const text = await AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON()))).metrics();
      return Number(/^svid_ca_jwks_last_reload_failed (\d+)$/m.exec(text)?.[1]);
    };
    expect(await value(healthy, healthy)).toBe(0);
    expect(await value(failing, healthy)).toBe(1);
    expect(await value(failing, alsoFailing, healthy)).toBe(1);
  });
});
