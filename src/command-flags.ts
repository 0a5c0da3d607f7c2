import { DEV_GRPC_LISTEN } from './dev/index.js';
import type { FlagSpec } from './flags.js';
import { KEY_SPECS } from './pki/index.js';

// The flags of `svid-ca dev-token` and `svid-ca request`, apart from cli.ts so that docs/configuration.md can be
// generated from them (scripts/docs-config.mjs) without running the CLI. Names are part of the interface.

export const DEV_TOKEN_FLAGS: readonly FlagSpec[] = [
  { name: 'namespace', kind: 'string', default: 'default', help: 'namespace of the service account' },
  { name: 'service-account', kind: 'string', default: 'default', help: 'service account name' },
  { name: 'pod', kind: 'string', help: 'pod name to put in the token (kubernetes.io.pod)' },
  { name: 'audience', kind: 'string', default: 'istio-ca', help: 'token audience' },
  { name: 'ttl', kind: 'duration', default: '1h', help: 'token lifetime' },
  { name: 'dev-dir', kind: 'string', help: 'where the dev CA lives (default: certs-dev/ of the package)' },
];

export const REQUEST_FLAGS: readonly FlagSpec[] = [
  { name: 'ca', kind: 'hostport', default: DEV_GRPC_LISTEN, help: "the CA's address, as an agent's CA_ADDR" },
  { name: 'root', kind: 'string', help: "root bundle file that the CA's serving certificate must chain to (required)" },
  { name: 'token', kind: 'string', help: 'file holding the service-account token, or - for stdin (required)' },
  { name: 'out', kind: 'string', help: 'folder for key.pem, cert-chain.pem, root-cert.pem (required)' },
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type: ${KEY_SPECS.join(', ')}` },
  { name: 'ttl', kind: 'duration', help: 'requested lifetime (validity_duration); default: the CA decides' },
  { name: 'trust-domain', kind: 'string', default: 'cluster.local', help: 'trust domain of the SPIFFE ID asked for' },
  { name: 'identity', kind: 'string', help: 'SPIFFE ID to ask for (default: from the token subject)' },
  { name: 'server-name', kind: 'string', help: 'TLS name to verify (default: the host of --ca)' },
];
