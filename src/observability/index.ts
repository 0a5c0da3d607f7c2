/** Metrics registry, the monitoring HTTP endpoint, and logging. */
export { createLogger, DEFAULT_LOG_BUFFER_BYTES, droppedLogLines, LOG_LEVELS, REDACT_PATHS, type Logger } from './logger.js';
export { CaMetrics, keepMetrics, PER_SERVER_METRICS, type Outcome, type SignErrorLabel, type CertificateRole, type TrackedCertificate } from './metrics.js';
export { startMonitoringServer, type MonitoringOptions } from './monitoring-server.js';
export { AuditLog, AuditWriteError, type AuditRecord } from './audit.js';
