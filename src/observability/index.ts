/** Metrics registry, the monitoring HTTP endpoint, and logging. */
export { createLogger, LOG_LEVELS, type Logger } from './logger.js';
export { CaMetrics, type Outcome, type SignErrorLabel, type CertificateRole, type TrackedCertificate } from './metrics.js';
export { startMonitoringServer, type MonitoringOptions } from './monitoring-server.js';
export { AuditLog, AuditWriteError, type AuditRecord } from './audit.js';
