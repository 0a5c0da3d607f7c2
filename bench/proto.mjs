// IstioCertificateRequest/Response with protobufjs (installed with @grpc/proto-loader), from the
// same .proto the server serves; google/protobuf/struct.proto comes with protobufjs.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const root = protobuf.loadSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'proto', 'security', 'v1alpha1', 'ca.proto'));
export const requestType = root.lookupType('istio.v1.auth.IstioCertificateRequest');
export const responseType = root.lookupType('istio.v1.auth.IstioCertificateResponse');
export const CREATE_CERTIFICATE_PATH = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
