/** Operator tooling: the `svid-ca cacerts` commands. */
export { runCacertsCommand, verifyFolder, cacertsCommandHelp, CACERTS_COMMANDS, CACERTS_USAGE, CACERTS_FLAGS } from './cacerts.js';
