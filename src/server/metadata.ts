import * as grpc from '@grpc/grpc-js';
import { RequestError } from './errors.js';
import type { ProtoStruct, ProtoValue } from './proto.js';

/** Bounds on the request's metadata Struct: Istio sends one or two short strings. */
export const METADATA_LIMITS = { maxDepth: 4, maxBytes: 4096 } as const;

export interface RequestMetadata {
  certSigner: string | undefined;
  impersonatedIdentity: string | undefined;
}

function invalid(message: string): RequestError {
  return new RequestError(grpc.status.INVALID_ARGUMENT, 'invalid_csr', message);
}

/** Walks the Struct once, bounding depth and size, and picks out the keys Istio defines. Unknown keys are tolerated. */
export function readRequestMetadata(struct: ProtoStruct | null | undefined): RequestMetadata {
  const out: RequestMetadata = { certSigner: undefined, impersonatedIdentity: undefined };
  if (!struct) return out;
  let bytes = 0;
  const visit = (value: ProtoValue, depth: number): void => {
    if (depth > METADATA_LIMITS.maxDepth) throw invalid(`request metadata is nested deeper than ${METADATA_LIMITS.maxDepth} levels`);
    if (value.structValue) visitStruct(value.structValue, depth + 1);
    else if (value.listValue) for (const v of value.listValue.values ?? []) visit(v, depth + 1);
    else if (typeof value.stringValue === 'string') bytes += Buffer.byteLength(value.stringValue);
    else bytes += 8;
    if (bytes > METADATA_LIMITS.maxBytes) throw invalid(`request metadata is larger than ${METADATA_LIMITS.maxBytes} bytes`);
  };
  const visitStruct = (s: ProtoStruct, depth: number): void => {
    for (const [key, value] of Object.entries(s.fields ?? {})) {
      bytes += Buffer.byteLength(key);
      visit(value, depth);
    }
  };
  visitStruct(struct, 1);
  const str = (key: string): string | undefined => {
    const v = struct.fields?.[key];
    return v && typeof v.stringValue === 'string' ? v.stringValue : undefined;
  };
  out.certSigner = str('CertSigner');
  out.impersonatedIdentity = str('ImpersonatedIdentity');
  return out;
}

/** validity_duration, an int64 of seconds delivered as a decimal string. */
export function readValidityDuration(value: string | number | undefined): bigint {
  if (value === undefined || value === '') return 0n;
  try {
    return BigInt(value);
  } catch {
    throw invalid('validity_duration is not an integer number of seconds');
  }
}
