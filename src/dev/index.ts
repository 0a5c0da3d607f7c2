/** The embedded development CA and JWT issuer used by `npm start` and `svid-ca dev-token`. */
export { ensureDevEnvironment, mintDevToken, defaultDevDir, writeFileAtomic, DEV_ISSUER, DEV_GRPC_LISTEN, DEV_MONITORING_LISTEN, type DevEnvironment, type DevTokenOptions } from './dev-env.js';
