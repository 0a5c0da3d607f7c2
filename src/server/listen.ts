import { createServer } from 'node:net';

interface HostPort {
  host: string;
  port: number;
}

/** A listen address the operator can read: `--listen 127.0.0.1:15012: address already in use`. */
export class ListenError extends Error {
  constructor(flag: string, address: HostPort, err: unknown) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EADDRINUSE' ? 'address already in use' : code === 'EADDRNOTAVAIL' ? 'no such local address' : code === 'EACCES' ? 'permission denied (a port below 1024 needs privileges)' : (err as Error).message;
    super(`${flag} ${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}: ${why}`);
    this.name = 'ListenError';
  }
}

/** Resolves when `address` can be bound now (then released); rejects with a ListenError naming the flag. */
export function probeListen(flag: string, address: HostPort): Promise<void> {
  if (address.port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err) => reject(new ListenError(flag, address, err)));
    probe.listen({ host: address.host, port: address.port, exclusive: true }, () => probe.close(() => resolve()));
  });
}
