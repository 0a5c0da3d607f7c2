import * as grpc from '@grpc/grpc-js';
import { CA_SERVICE_NAME } from './proto.js';

type Status = 'SERVING' | 'NOT_SERVING';
const KNOWN_SERVICES = new Set(['', CA_SERVICE_NAME]);

/**
 * grpc.health.v1 for the empty service name and the CA service, both following one readiness
 * state. Watch streams get the current status at once and every change after it.
 */
export class HealthService {
  private status: Status = 'NOT_SERVING';
  private readonly watchers = new Set<grpc.ServerWritableStream<{ service: string }, { status: string }>>();

  set(ready: boolean): void {
    const next: Status = ready ? 'SERVING' : 'NOT_SERVING';
    if (next === this.status) return;
    this.status = next;
    for (const w of this.watchers) w.write({ status: next });
  }

  get serving(): boolean {
    return this.status === 'SERVING';
  }

  /** Ends every Watch stream, so a shutting-down server is not held open by them. */
  close(): void {
    for (const w of this.watchers) w.end();
    this.watchers.clear();
  }

  readonly handlers: grpc.UntypedServiceImplementation = {
    Check: (call: grpc.ServerUnaryCall<{ service: string }, { status: string }>, callback: grpc.sendUnaryData<{ status: string }>) => {
      if (!KNOWN_SERVICES.has(call.request.service)) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service.slice(0, 200)}"` });
        return;
      }
      callback(null, { status: this.status });
    },
    Watch: (call: grpc.ServerWritableStream<{ service: string }, { status: string }>) => {
      if (!KNOWN_SERVICES.has(call.request.service)) {
        call.write({ status: 'SERVICE_UNKNOWN' });
        return;
      }
      call.write({ status: this.status });
      this.watchers.add(call);
      call.on('cancelled', () => this.watchers.delete(call));
      call.on('close', () => this.watchers.delete(call));
    },
  };
}
