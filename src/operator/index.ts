/** Operator tooling: the `svid-ca cacerts` commands. */
export { runCacertsCommand, verifyFolder, CACERTS_USAGE } from './cacerts.js';
