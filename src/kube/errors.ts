import { ApiException } from '@kubernetes/client-node';

export interface KubeFailure {
  /** HTTP status, when the API server answered. */
  status: number | undefined;
  /** The API server could not answer (network, timeout, 5xx, 429): worth retrying. */
  transient: boolean;
  /** One line, without request bodies or tokens. */
  message: string;
}

function statusMessage(body: unknown): string | undefined {
  let b = body;
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body);
    } catch {
      return body.slice(0, 200) || undefined;
    }
  }
  const m = (b as { message?: unknown } | undefined)?.message;
  return typeof m === 'string' ? m.slice(0, 300) : undefined;
}

/** What went wrong with an API call, from client-node's ApiException or a node-fetch/abort error. */
export function describeKubeError(err: unknown): KubeFailure {
  if (err instanceof ApiException) {
    const status = err.code;
    const detail = statusMessage(err.body);
    return { status, transient: status >= 500 || status === 429, message: `API server answered HTTP ${status}${detail ? `: ${detail}` : ''}` };
  }
  const e = err as { name?: unknown; code?: unknown; type?: unknown; message?: unknown; cause?: { code?: unknown } };
  const code = typeof e?.code === 'string' ? e.code : typeof e?.cause?.code === 'string' ? e.cause.code : undefined;
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError') return { status: undefined, transient: true, message: 'API server did not answer in time' };
  if (code || e?.type === 'system' || e?.name === 'FetchError') {
    return { status: undefined, transient: true, message: `API server unreachable (${code ?? (typeof e.message === 'string' ? e.message.slice(0, 200) : 'network error')})` };
  }
  return { status: undefined, transient: false, message: err instanceof Error ? err.message.slice(0, 300) : String(err) };
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ApiException && err.code === 404;
}

/** A 404 from an API call or from a watch (client-node's Watch rejects with an Error carrying statusCode). */
export function isNotFoundOrWatch404(err: unknown): boolean {
  return isNotFound(err) || (err as { statusCode?: unknown } | undefined)?.statusCode === 404;
}

export function isConflict(err: unknown): boolean {
  return err instanceof ApiException && err.code === 409;
}
