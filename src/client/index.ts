/** A sidecar-like client of the CA, for `svid-ca request`, tests and benchmarks. */
export { createCaClient, callCreateCertificate, identityFromToken, requestWorkloadCertificate, type CaClient, type CaClientOptions, type SidecarRequestOptions, type SidecarResult } from './ca-client.js';
export { diagnoseConnection, type ConnectionCheck, type ConnectionProblem } from './diagnose.js';
