/** gRPC wiring: the CreateCertificate handler, health, TLS, limits, errors to status codes. */
export { startService, type RunningService, type ServiceOptions, type WorkerService } from './service.js';
export { BundleLifecycle, recordBundleMetrics, trackedCertificates, warnAboutSigner } from './lifecycle.js';
export { loadServices, PROTO_DIR, CA_SERVICE_NAME, CREATE_CERTIFICATE_PATH, type IstioCertificateRequest, type IstioCertificateResponse } from './proto.js';
export { classifyError, RequestError, type Failure } from './errors.js';
export { ServingTls, type KeyAndChain } from './tls.js';
export { HealthService } from './health.js';
export { Admission, type AdmissionOptions } from './admission.js';
export { shareKey } from './certificate-service.js';
export { runPrimary, reportReadiness, reportStartupFailure, shareMetricsWithPrimary, usableCores, type Primary, type PrimaryOptions } from './workers.js';
export { PrimaryBundle, receiveBundleFeed, type BundleFeed } from './bundle-owner.js';
export { ListenError, probeListen } from './listen.js';
export { DEFAULT_TRANSPORT_LIMITS, TLS_CIPHERS, TransportGuard, type TransportLimits } from './transport-limits.js';
