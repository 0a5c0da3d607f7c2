/**
 * A small local Kubernetes API server for tests: real HTTPS (a certificate from a test CA, which
 * the client verifies through the kubeconfig's certificate-authority-data), a bearer token, and
 * the real paths and JSON of the endpoints svid-ca uses: TokenReview, pods, namespaces,
 * configmaps, secrets, leases and certificates.k8s.io ClusterTrustBundles (v1beta1 and v1alpha1,
 * each served or not, with resource discovery), with list, watch (resourceVersion, fieldSelector,
 * labelSelector), get, create, update and delete. In memory; every request is recorded so tests
 * can assert on them and derive the RBAC svid-ca needs. Tests change state through put/remove,
 * which the watches see like any other change.
 */
import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Authority, loadCacerts } from '../../src/ca/index.js';
import { makeCacerts, tempDir } from './pki.js';
import { within } from './deadline.js';

export type Kind = 'namespaces' | 'pods' | 'configmaps' | 'secrets' | 'leases' | 'clustertrustbundles';
export type ClusterTrustBundleVersion = 'v1beta1' | 'v1alpha1';

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  query: Record<string, string>;
  watch: boolean;
  /** API group ('' for core), resource, namespace and name, as RBAC sees them. */
  group: string;
  resource: string;
  namespace: string | undefined;
  name: string | undefined;
  status: number;
  /** Which kubeconfig user sent it (see kubeconfigFor). */
  user: string;
}

export interface Permission {
  group: string;
  resource: string;
  verb: string;
  namespace: string | undefined;
  name: string | undefined;
}

export interface FakeTokenUser {
  username: string;
  groups: string[];
  audiences: string[];
  uid?: string;
  extra?: Record<string, string[]>;
}

// Loose on purpose: objects are whatever JSON the client sent.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any;

interface WatchEvent {
  rv: number;
  kind: Kind;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
  old: Obj | undefined;
}

interface OpenWatch {
  kind: Kind;
  namespace: string | undefined;
  fieldSelector: string | undefined;
  labelSelector: string | undefined;
  /** The apiVersion objects are delivered as (ClusterTrustBundles are served in two versions). */
  apiVersion: string | undefined;
  res: ServerResponse;
}

const TYPE: Record<Kind, { apiVersion: string; kind: string; group: string; namespaced: boolean }> = {
  namespaces: { apiVersion: 'v1', kind: 'Namespace', group: '', namespaced: false },
  pods: { apiVersion: 'v1', kind: 'Pod', group: '', namespaced: true },
  configmaps: { apiVersion: 'v1', kind: 'ConfigMap', group: '', namespaced: true },
  secrets: { apiVersion: 'v1', kind: 'Secret', group: '', namespaced: true },
  leases: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', group: 'coordination.k8s.io', namespaced: true },
  clustertrustbundles: { apiVersion: 'certificates.k8s.io/v1beta1', kind: 'ClusterTrustBundle', group: 'certificates.k8s.io', namespaced: false },
};

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;
const keyOf = (ns: string | undefined, name: string) => `${ns ?? ''}/${name}`;

function field(obj: Obj, path: string): string {
  let v: Obj = obj;
  for (const p of path.split('.')) v = v?.[p];
  return v === undefined || v === null ? '' : String(v);
}

/** metadata.name=x, status.phase!=Failed, ... comma-separated, all must hold. */
export function matchesFieldSelector(obj: Obj, selector: string | undefined): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term.trim());
    if (!m) throw new Error(`unsupported field selector term "${term}"`);
    const actual = field(obj, m[1]!);
    return m[2] === '!=' ? actual !== m[3] : actual === m[3];
  });
}

/** k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b). */
export function matchesLabelSelector(obj: Obj, selector: string | undefined): boolean {
  if (!selector) return true;
  const labels: Record<string, string> = obj?.metadata?.labels ?? {};
  const terms = selector.match(/[^,(]+(\([^)]*\))?/g) ?? [];
  return terms.every((raw) => {
    const term = raw.trim();
    let m = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (m) {
      const set = m[3]!.split(',').map((s) => s.trim());
      const has = m[1]! in labels && set.includes(labels[m[1]!]!);
      return m[2] === 'in' ? has : !has;
    }
    m = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (m) return m[2] === '!=' ? labels[m[1]!] !== m[3] : labels[m[1]!] === m[3];
    if (term.startsWith('!')) return !(term.slice(1) in labels);
    return term in labels;
  });
}

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  /** Delay every TokenReview answer (concurrency tests). */
  tokenReviewDelayMs = 0;
  /** Answer every TokenReview with this HTTP status (503, 429, 403, ...). */
  failTokenReviewsWith: number | undefined;
  tokenReviewsInFlight = 0;
  maxTokenReviewsInFlight = 0;
  tokenReviewCount = 0;
  /**
   * The certificates.k8s.io versions that serve clustertrustbundles (Kubernetes 1.33+ with the beta
   * enabled: v1beta1; 1.27-1.32 with the alpha: v1alpha1). Others answer 404, discovery included.
   */
  clusterTrustBundleVersions: ClusterTrustBundleVersion[] = ['v1beta1'];
  /**
   * Authorization checks the API server makes beyond the request itself: `attest` on
   * certificates.k8s.io `signers/<signerName>` when a ClusterTrustBundle with a signerName is created
   * or its spec changed (the ClusterTrustBundleAttest admission plugin).
   */
  readonly impliedChecks: Permission[] = [];

  private readonly tokens = new Map<string, FakeTokenUser>();
  private readonly store = new Map<Kind, Map<string, Obj>>();
  private readonly events: WatchEvent[] = [];
  private readonly watches = new Set<OpenWatch>();
  private readonly sockets = new Set<Socket>();
  private rv = 1000;
  /** bearer token -> user name */
  private readonly users = new Map<string, string>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
    readonly kubeconfigPath: string,
    readonly bearerToken: string,
    private readonly caPem: string,
  ) {
    for (const k of Object.keys(TYPE) as Kind[]) this.store.set(k, new Map());
    this.users.set(bearerToken, 'svid-ca');
  }

  /** A kubeconfig for another client (e.g. a second svid-ca replica), so recorded requests say who sent them. */
  kubeconfigFor(user: string): string {
    const token = randomBytes(16).toString('hex');
    this.users.set(token, user);
    const path = join(tempDir('svid-ca-kube-'), 'kubeconfig');
    writeFileSync(path, kubeconfigYaml(this.url, this.caPem, token, user));
    return path;
  }

  static async start(): Promise<FakeKubeApi> {
    // The API server's certificate comes from a test CA; the kubeconfig carries that CA's root.
    const pki = makeCacerts();
    const serving = new Authority(loadCacerts(pki.dir), { defaultTtlMs: 3_600_000, maxTtlMs: 3_600_000 }).issueServing(['localhost'], 3_600_000);
    let api: FakeKubeApi | undefined;
    const server = createServer({ key: serving.keyPem, cert: serving.certChainPem }, (req, res) => {
      api!.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify(status(500, 'InternalError', String(err))));
      });
    });
    await within(new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve)), 10_000, 'the fake Kubernetes API server to listen');
    const port = (server.address() as { port: number }).port;
    const url = `https://127.0.0.1:${port}`;
    const token = randomBytes(16).toString('hex');
    const kubeconfigPath = join(tempDir('svid-ca-kube-'), 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfigYaml(url, pki.root.certPem, token, 'svid-ca'));
    api = new FakeKubeApi(server, url, kubeconfigPath, token, pki.root.certPem);
    server.on('connection', (s: Socket) => {
      api!.sockets.add(s);
      s.on('close', () => api!.sockets.delete(s));
    });
    return api;
  }

  /** Stops the server and drops every connection: the API server is down from now on. */
  async close(): Promise<void> {
    for (const w of this.watches) w.res.destroy();
    this.watches.clear();
    for (const s of this.sockets) s.destroy();
    await within(new Promise<void>((resolve) => this.server.close(() => resolve())), 10_000, 'the fake Kubernetes API server to close');
  }

  /** Ends every open watch (as an API server does on its watch timeout); clients resume from their resourceVersion. */
  closeWatches(): void {
    for (const w of this.watches) w.res.end();
    this.watches.clear();
  }

  openWatches(kind?: Kind): number {
    return [...this.watches].filter((w) => !kind || w.kind === kind).length;
  }

  // ---- state for tests ----

  /** A token the TokenReview endpoint accepts for these audiences. */
  addToken(token: string, user: FakeTokenUser): void {
    this.tokens.set(token, user);
  }

  /** A service-account token bound to a pod, as kubelet mounts it. */
  addServiceAccountToken(token: string, o: { namespace: string; serviceAccount: string; podName?: string; podUid?: string; audiences?: string[] }): void {
    const extra: Record<string, string[]> = {};
    if (o.podName) extra['authentication.kubernetes.io/pod-name'] = [o.podName];
    if (o.podUid) extra['authentication.kubernetes.io/pod-uid'] = [o.podUid];
    this.addToken(token, {
      username: `system:serviceaccount:${o.namespace}:${o.serviceAccount}`,
      uid: randomUUID(),
      groups: ['system:serviceaccounts', `system:serviceaccounts:${o.namespace}`, 'system:authenticated'],
      audiences: o.audiences ?? ['istio-ca'],
      extra,
    });
  }

  get(kind: Kind, namespace: string | undefined, name: string): Obj | undefined {
    const o = this.store.get(kind)!.get(keyOf(TYPE[kind].namespaced ? namespace : undefined, name));
    return o ? clone(o) : undefined;
  }

  list(kind: Kind, namespace?: string): Obj[] {
    return [...this.store.get(kind)!.values()].filter((o) => !namespace || o.metadata.namespace === namespace).map(clone);
  }

  /** Creates or replaces an object as another actor would (kubectl, a controller); watches see it. */
  put(kind: Kind, obj: Obj): Obj {
    const t = TYPE[kind];
    const o = clone(obj);
    o.apiVersion = t.apiVersion;
    o.kind = t.kind;
    o.metadata ??= {};
    const key = keyOf(t.namespaced ? o.metadata.namespace : undefined, o.metadata.name);
    const old = this.store.get(kind)!.get(key);
    o.metadata.uid ??= old?.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp ??= old?.metadata.creationTimestamp ?? new Date().toISOString();
    o.metadata.resourceVersion = String(++this.rv);
    this.store.get(kind)!.set(key, o);
    this.emit(kind, old ? 'MODIFIED' : 'ADDED', o, old);
    return clone(o);
  }

  remove(kind: Kind, namespace: string | undefined, name: string): boolean {
    const key = keyOf(TYPE[kind].namespaced ? namespace : undefined, name);
    const old = this.store.get(kind)!.get(key);
    if (!old) return false;
    this.store.get(kind)!.delete(key);
    const gone = clone(old);
    gone.metadata.resourceVersion = String(++this.rv);
    this.emit(kind, 'DELETED', gone, undefined);
    return true;
  }

  addNamespace(name: string, labels?: Record<string, string>, phase = 'Active'): Obj {
    return this.put('namespaces', { metadata: { name, labels }, spec: { finalizers: ['kubernetes'] }, status: { phase } });
  }

  addPod(p: { namespace: string; name: string; serviceAccount: string; nodeName?: string; uid?: string; phase?: string }): Obj {
    return this.put('pods', {
      metadata: { name: p.name, namespace: p.namespace, uid: p.uid ?? randomUUID(), labels: { app: p.name } },
      spec: { serviceAccountName: p.serviceAccount, nodeName: p.nodeName, containers: [{ name: 'app', image: 'example' }] },
      status: { phase: p.phase ?? 'Running' },
    });
  }

  /** RBAC needed for what was recorded: each request as (apiGroup, resource, verb, namespace, name). */
  permissions(): Permission[] {
    return [
      ...this.requests
        .filter((r) => r.resource !== '' && r.status !== 401)
        .map((r) => ({ group: r.group, resource: r.resource, verb: verbOf(r), namespace: r.namespace, name: r.name ?? selectedName(r) })),
      ...this.impliedChecks,
    ];
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'https://fake');
    const query = Object.fromEntries(u.searchParams.entries());
    const route = parsePath(u.pathname);
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: u.pathname,
      query,
      watch: query.watch === 'true' || query.watch === '1',
      group: route?.group ?? '',
      resource: route?.resource ?? '',
      namespace: route?.namespace,
      name: route?.name,
      status: 0,
      user: this.users.get((req.headers.authorization ?? '').replace(/^Bearer /, '')) ?? '',
    };
    this.requests.push(rec);
    const send = (code: number, body: unknown) => {
      rec.status = code;
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (!rec.user) return send(401, status(401, 'Unauthorized', 'Unauthorized'));
    const body = ['POST', 'PUT', 'PATCH'].includes(rec.method) ? await readJson(req) : undefined;
    const notServed = () => send(404, status(404, 'NotFound', `the server could not find the requested resource (${u.pathname})`));
    if (!route) return notServed();
    if (route.version && !this.clusterTrustBundleVersions.includes(route.version)) return notServed();
    if (route.discovery) {
      // Resource discovery of a served certificates.k8s.io version (no RBAC: system:discovery).
      return send(200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: `certificates.k8s.io/${route.version}`,
        resources: [{ name: 'clustertrustbundles', singularName: 'clustertrustbundle', namespaced: false, kind: 'ClusterTrustBundle', verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'] }],
      });
    }
    if (route.resource === 'tokenreviews') {
      if (rec.method !== 'POST') return send(405, status(405, 'MethodNotAllowed', 'only create is allowed'));
      return this.tokenReview(body, send);
    }
    const kind = route.resource as Kind;
    const t = route.version ? { ...TYPE[kind], apiVersion: `certificates.k8s.io/${route.version}` } : TYPE[kind];
    const out = (o: Obj) => (route.version ? { ...o, apiVersion: t.apiVersion } : o);
    const objects = this.store.get(kind)!;
    const ns = route.namespace;
    if (rec.method === 'GET' && route.name === undefined) {
      if (rec.watch) {
        rec.status = 200;
        return this.watch(kind, ns, query, res, route.version ? t.apiVersion : undefined);
      }
      const items = [...objects.values()].filter(
        (o) => (!ns || o.metadata.namespace === ns) && matchesFieldSelector(o, query.fieldSelector) && matchesLabelSelector(o, query.labelSelector),
      );
      return send(200, { apiVersion: t.apiVersion, kind: `${t.kind}List`, metadata: { resourceVersion: String(this.rv) }, items: items.map(out) });
    }
    const key = route.name !== undefined ? keyOf(t.namespaced ? ns : undefined, route.name) : undefined;
    const notFound = () => send(404, status(404, 'NotFound', `${kind} "${route.name}" not found`, { kind, name: route.name }));
    switch (rec.method) {
      case 'GET': {
        const o = objects.get(key!);
        return o ? send(200, out(o)) : notFound();
      }
      case 'POST': {
        if (route.name !== undefined) return send(405, status(405, 'MethodNotAllowed', 'POST to an item'));
        const name = body?.metadata?.name;
        if (!name) return send(422, status(422, 'Invalid', 'metadata.name: Required value'));
        if (t.namespaced && !this.store.get('namespaces')!.has(keyOf(undefined, ns!))) return send(404, status(404, 'NotFound', `namespaces "${ns}" not found`));
        if (objects.has(keyOf(t.namespaced ? ns : undefined, name))) return send(409, status(409, 'AlreadyExists', `${kind} "${name}" already exists`, { kind, name }));
        if (body.metadata.resourceVersion) return send(422, status(422, 'Invalid', 'resourceVersion should not be set on objects to be created'));
        if (kind === 'clustertrustbundles') {
          const invalid = clusterTrustBundleProblem(body, undefined);
          if (invalid) return send(422, status(422, 'Invalid', `ClusterTrustBundle.certificates.k8s.io "${name}" is invalid: ${invalid}`));
          this.attestCheck(body, undefined);
        }
        return send(201, out(this.put(kind, { ...body, metadata: { ...body.metadata, namespace: t.namespaced ? ns : undefined } })));
      }
      case 'PUT': {
        const current = objects.get(key!);
        if (!current) return notFound();
        if (body?.metadata?.name !== route.name) return send(400, status(400, 'BadRequest', 'the name of the object does not match the name on the URL'));
        const sentRv = body.metadata.resourceVersion;
        if (sentRv && sentRv !== current.metadata.resourceVersion) {
          return send(409, status(409, 'Conflict', `Operation cannot be fulfilled on ${kind} "${route.name}": the object has been modified; please apply your changes to the latest version and try again`));
        }
        if (kind === 'secrets' && body.type && current.type && body.type !== current.type) {
          return send(422, status(422, 'Invalid', `Secret "${route.name}" is invalid: type: Invalid value: "${body.type}": field is immutable`));
        }
        if (kind === 'clustertrustbundles') {
          const invalid = clusterTrustBundleProblem(body, current);
          if (invalid) return send(422, status(422, 'Invalid', `ClusterTrustBundle.certificates.k8s.io "${route.name}" is invalid: ${invalid}`));
          this.attestCheck(body, current);
        }
        return send(200, out(this.put(kind, { ...body, metadata: { ...body.metadata, namespace: t.namespaced ? ns : undefined, uid: current.metadata.uid } })));
      }
      case 'DELETE': {
        const o = objects.get(key!);
        if (!o) return notFound();
        this.remove(kind, ns, route.name!);
        return send(200, out(o));
      }
      default:
        return send(405, status(405, 'MethodNotAllowed', `${rec.method} is not supported by the fake`));
    }
  }

  private async tokenReview(body: Obj, send: (code: number, body: unknown) => void): Promise<void> {
    this.tokenReviewCount++;
    this.tokenReviewsInFlight++;
    this.maxTokenReviewsInFlight = Math.max(this.maxTokenReviewsInFlight, this.tokenReviewsInFlight);
    try {
      if (this.tokenReviewDelayMs > 0) await new Promise((r) => setTimeout(r, this.tokenReviewDelayMs));
      if (this.failTokenReviewsWith !== undefined) {
        const code = this.failTokenReviewsWith;
        return send(code, status(code, code === 429 ? 'TooManyRequests' : code === 403 ? 'Forbidden' : 'ServiceUnavailable', 'fake API server failure'));
      }
      if (body?.apiVersion !== 'authentication.k8s.io/v1' || body?.kind !== 'TokenReview') {
        return send(400, status(400, 'BadRequest', 'body is not an authentication.k8s.io/v1 TokenReview'));
      }
      const spec = body.spec ?? {};
      const wanted: string[] = spec.audiences ?? [];
      const user = typeof spec.token === 'string' ? this.tokens.get(spec.token) : undefined;
      const review = (s: Obj) => send(201, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: { creationTimestamp: null }, spec, status: s });
      if (!user) return review({ authenticated: false, user: {}, error: '[invalid bearer token, token lookup failed]' });
      const audiences = wanted.length === 0 ? user.audiences : user.audiences.filter((a) => wanted.includes(a));
      if (audiences.length === 0) {
        return review({ authenticated: false, user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(user.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]` });
      }
      return review({ authenticated: true, user: { username: user.username, uid: user.uid, groups: user.groups, extra: user.extra }, audiences });
    } finally {
      this.tokenReviewsInFlight--;
    }
  }

  /** The ClusterTrustBundleAttest admission check: `attest` on the signer, for a new bundle or a changed spec. */
  private attestCheck(body: Obj, current: Obj | undefined): void {
    const signer = body?.spec?.signerName;
    if (!signer) return;
    if (current && current.spec?.signerName === signer && current.spec?.trustBundle === body.spec?.trustBundle) return;
    this.impliedChecks.push({ group: 'certificates.k8s.io', resource: 'signers', verb: 'attest', namespace: undefined, name: signer });
  }

  private watch(kind: Kind, namespace: string | undefined, query: Record<string, string>, res: ServerResponse, apiVersion?: string): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const w: OpenWatch = { kind, namespace, fieldSelector: query.fieldSelector, labelSelector: query.labelSelector, apiVersion, res };
    const from = Number(query.resourceVersion || 0);
    if (!from) {
      for (const o of this.store.get(kind)!.values()) this.deliver(w, { rv: 0, kind, type: 'ADDED', object: o, old: undefined });
    } else {
      for (const e of this.events) if (e.rv > from && e.kind === kind) this.deliver(w, e);
    }
    this.watches.add(w);
    res.on('close', () => this.watches.delete(w));
  }

  private emit(kind: Kind, type: WatchEvent['type'], object: Obj, old: Obj | undefined): void {
    const e: WatchEvent = { rv: this.rv, kind, type, object: clone(object), old: old ? clone(old) : undefined };
    this.events.push(e);
    for (const w of this.watches) if (w.kind === kind) this.deliver(w, e);
  }

  /** Sends an event as the API server would through this watch's selectors (leaving the selection is a DELETED). */
  private deliver(w: OpenWatch, e: WatchEvent): void {
    const sel = (o: Obj | undefined) =>
      !!o && (!w.namespace || o.metadata.namespace === w.namespace) && matchesFieldSelector(o, w.fieldSelector) && matchesLabelSelector(o, w.labelSelector);
    let type: WatchEvent['type'] | undefined;
    if (e.type === 'ADDED') type = sel(e.object) ? 'ADDED' : undefined;
    else if (e.type === 'DELETED') type = sel(e.object) ? 'DELETED' : undefined;
    else {
      const now = sel(e.object);
      const before = sel(e.old);
      type = now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
    }
    if (type) w.res.write(JSON.stringify({ type, object: w.apiVersion ? { ...e.object, apiVersion: w.apiVersion } : e.object }) + '\n');
  }
}

function kubeconfigYaml(server: string, caPem: string, token: string, user: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    // The server's certificate names localhost; the client connects to 127.0.0.1 and verifies that name.
    clusters: [{ name: 'fake', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64'), 'tls-server-name': 'localhost' } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user } }],
    'current-context': 'fake',
  });
}

/** Polls until check() holds (watches and leases are asynchronous); throws naming what did not happen. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function status(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, details, code };
}

async function readJson(req: IncomingMessage): Promise<Obj> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

interface Route {
  group: string;
  resource: string;
  namespace: string | undefined;
  name: string | undefined;
  /** certificates.k8s.io version of a ClusterTrustBundle path. */
  version?: ClusterTrustBundleVersion;
  /** GET /apis/certificates.k8s.io/<version>: resource discovery. */
  discovery?: boolean;
}

function parsePath(path: string): Route | undefined {
  let m = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?(pods|configmaps|secrets)(?:\/([^/]+))?$/.exec(path);
  if (m) return { group: '', resource: m[2]!, namespace: m[1], name: m[3] };
  m = /^\/api\/v1\/namespaces(?:\/([^/]+))?$/.exec(path);
  if (m) return { group: '', resource: 'namespaces', namespace: undefined, name: m[1] };
  m = /^\/apis\/coordination\.k8s\.io\/v1\/(?:namespaces\/([^/]+)\/)?leases(?:\/([^/]+))?$/.exec(path);
  if (m) return { group: 'coordination.k8s.io', resource: 'leases', namespace: m[1], name: m[2] };
  m = /^\/apis\/certificates\.k8s\.io\/(v1beta1|v1alpha1)(\/clustertrustbundles(?:\/([^/]+))?)?$/.exec(path);
  if (m) {
    const version = m[1] as ClusterTrustBundleVersion;
    if (!m[2]) return { group: '', resource: '', namespace: undefined, name: undefined, version, discovery: true };
    return { group: 'certificates.k8s.io', resource: 'clustertrustbundles', namespace: undefined, name: m[3] !== undefined ? decodeURIComponent(m[3]) : undefined, version };
  }
  if (path === '/apis/authentication.k8s.io/v1/tokenreviews') return { group: 'authentication.k8s.io', resource: 'tokenreviews', namespace: undefined, name: undefined };
  return undefined;
}

/**
 * What kube-apiserver's validation refuses in a ClusterTrustBundle (undefined: valid): a name without
 * the signer prefix (slashes as colons), a changed signerName, a trustBundle that is not only PEM
 * CERTIFICATE blocks without headers that parse as CA certificates, or that repeats one.
 */
export function clusterTrustBundleProblem(body: Obj, current: Obj | undefined): string | undefined {
  const name: string = body?.metadata?.name ?? '';
  const signer: string = body?.spec?.signerName ?? '';
  if (signer && !name.startsWith(`${signer.replace(/\//g, ':')}:`)) return `metadata.name: Invalid value: "${name}": ClusterTrustBundle for signerName ${signer} must be named with prefix ${signer.replace(/\//g, ':')}:`;
  if (!signer && name.includes(':')) return `metadata.name: Invalid value: "${name}": ClusterTrustBundle without signer name must not have ":" in its name`;
  if (current && (current.spec?.signerName ?? '') !== signer) return 'spec.signerName: Invalid value: field is immutable';
  const text: unknown = body?.spec?.trustBundle;
  if (typeof text !== 'string' || text.trim() === '') return 'spec.trustBundle: Required value';
  const blocks = [...text.matchAll(/-----BEGIN ([^-]+)-----\r?\n([\s\S]*?)-----END \1-----/g)];
  if (blocks.length === 0) return 'spec.trustBundle: Invalid value: "<value omitted>": at least one trust anchor must be provided';
  const seen = new Set<string>();
  for (const [, type, b64] of blocks) {
    if (type !== 'CERTIFICATE') return `spec.trustBundle: Invalid value: "<value omitted>": entry has bad block type: ${type}`;
    if (b64!.includes(':')) return 'spec.trustBundle: Invalid value: "<value omitted>": entry has PEM block headers';
    const der = Buffer.from(b64!.replace(/\s+/g, ''), 'base64');
    let ca = false;
    try {
      ca = new X509Certificate(der).ca;
    } catch {
      return 'spec.trustBundle: Invalid value: "<value omitted>": entry cannot be parsed as an X.509 certificate';
    }
    if (!ca) return 'spec.trustBundle: Invalid value: "<value omitted>": entry does not have the CA bit set';
    const fp = der.toString('hex');
    if (seen.has(fp)) return 'spec.trustBundle: Invalid value: "<value omitted>": duplicate trust anchor';
    seen.add(fp);
  }
  return undefined;
}

/**
 * The object name the API server authorizes a list or watch against: kube-apiserver's RequestInfo takes
 * it from a `metadata.name=<name>` field selector, so such a request is allowed by a rule with resourceNames.
 */
function selectedName(r: Pick<RecordedRequest, 'method' | 'query'>): string | undefined {
  if (r.method !== 'GET') return undefined;
  const m = /^metadata\.name==?([^,]+)$/.exec(r.query.fieldSelector ?? '');
  return m?.[1];
}

/** The RBAC verb of a request. */
export function verbOf(r: Pick<RecordedRequest, 'method' | 'watch' | 'name'>): string {
  switch (r.method) {
    case 'GET':
      return r.watch ? 'watch' : r.name === undefined ? 'list' : 'get';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return r.name === undefined ? 'deletecollection' : 'delete';
    default:
      return r.method.toLowerCase();
  }
}
