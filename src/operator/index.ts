/** Operator tooling: the `svid-ca cacerts` commands. */
export { runCacertsCommand, verifyFolder, CACERTS_USAGE, CACERTS_FLAGS } from './cacerts.js';
