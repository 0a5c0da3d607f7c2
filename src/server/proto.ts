import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** proto/ at the package root: two levels above this file both in src/server and dist/server. */
export const PROTO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto');

/** int64 as string (never lossy), field names as in the .proto. */
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';
export const CREATE_CERTIFICATE_PATH = `/${CA_SERVICE_NAME}/CreateCertificate`;

/** The wire shapes as @grpc/proto-loader hands them over with LOADER_OPTIONS. */
export interface IstioCertificateRequest {
  csr: string;
  validity_duration: string;
  metadata: ProtoStruct | null;
}
export interface IstioCertificateResponse {
  cert_chain: string[];
}
export interface ProtoStruct {
  fields: Record<string, ProtoValue>;
}
export interface ProtoValue {
  kind?: string;
  stringValue?: string;
  numberValue?: number;
  boolValue?: boolean;
  nullValue?: string;
  structValue?: ProtoStruct;
  listValue?: { values: ProtoValue[] };
}

type ServiceCtor = grpc.ServiceClientConstructor;

let cached: { ca: ServiceCtor; health: ServiceCtor } | undefined;

/** The generated service definitions and client constructors for the CA and gRPC health services. */
export function loadServices(): { ca: ServiceCtor; health: ServiceCtor } {
  if (cached) return cached;
  const def = protoLoader.loadSync(['security/v1alpha1/ca.proto', 'grpc/health/v1/health.proto'], LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    istio: { v1: { auth: { IstioCertificateService: ServiceCtor } } };
    grpc: { health: { v1: { Health: ServiceCtor } } };
  };
  cached = { ca: pkg.istio.v1.auth.IstioCertificateService, health: pkg.grpc.health.v1.Health };
  return cached;
}
