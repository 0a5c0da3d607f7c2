import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface MonitoringOptions {
  host: string;
  port: number;
  registry: Registry;
  /** Overrides registry.metrics(), e.g. to aggregate the registries of worker processes. */
  collect?: () => Promise<string>;
  /** Ready when a valid signing bundle is loaded and the gRPC listener accepts. */
  isReady: () => boolean;
  /** issue #18: lines appended to the /readyz body (each cluster's authenticator state); none for a single-cluster CA. */
  readinessDetail?: (() => string[]) | undefined;
}

/** Plain HTTP: /healthz (process up), /readyz (can issue), /metrics (Prometheus). */
export async function startMonitoringServer(options: MonitoringOptions): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ready = options.isReady();
      const detail = options.readinessDetail?.() ?? [];
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${ready ? 'ready' : 'not ready'}\n${detail.map((l) => `${l}\n`).join('')}`);
    } else if (path === '/metrics') {
      (options.collect ?? (() => options.registry.metrics()))().then(
        (body) => res.writeHead(200, { 'content-type': options.registry.contentType }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics collection failed: ${err.message}\n`),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : options.port };
}
