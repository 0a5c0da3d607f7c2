import { SERVE_FLAGS } from './config.js';
import { envName, type FlagSpec } from './flags.js';
import { CACERTS_COMMANDS } from './operator/index.js';
import { KEY_SPECS } from './pki/index.js';

/**
 * The flags of every command, in one place: `svid-ca help COMMAND` prints them and
 * configurationReferenceMarkdown renders the same specs for docs/configuration.md, so the two
 * cannot drift (test/help.test.ts compares them).
 */
export const DEV_TOKEN_FLAGS: readonly FlagSpec[] = [
  { name: 'namespace', kind: 'string', default: 'default', help: 'namespace of the service account' },
  { name: 'service-account', kind: 'string', default: 'default', help: 'service account name' },
  { name: 'pod', kind: 'string', help: 'pod name to put in the token (kubernetes.io.pod)' },
  { name: 'audience', kind: 'string', default: 'istio-ca', help: 'token audience' },
  { name: 'ttl', kind: 'duration', default: '1h', help: 'token lifetime' },
  { name: 'dev-dir', kind: 'string', help: 'where the dev CA lives (default: certs-dev/ of the package)' },
];

/** localhost, not 127.0.0.1: the serving certificate's default SANs are DNS names (--serving-dns). */
export const REQUEST_FLAGS: readonly FlagSpec[] = [
  { name: 'ca', kind: 'hostport', default: 'localhost:15012', help: "the CA's address, as an agent's CA_ADDR" },
  { name: 'root', kind: 'string', help: "root bundle file that the CA's serving certificate must chain to (required)" },
  { name: 'token', kind: 'string', help: 'file holding the service-account token, or - for stdin (required)' },
  { name: 'out', kind: 'string', help: 'folder for key.pem, cert-chain.pem, root-cert.pem (required)' },
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type: ${KEY_SPECS.join(', ')}` },
  { name: 'ttl', kind: 'duration', help: 'requested lifetime (validity_duration); default: the CA decides' },
  { name: 'trust-domain', kind: 'string', default: 'cluster.local', help: 'trust domain of the SPIFFE ID asked for' },
  { name: 'identity', kind: 'string', help: 'SPIFFE ID to ask for (default: from the token subject)' },
  { name: 'server-name', kind: 'string', help: 'TLS name to verify (default: the host of --ca)' },
];

export interface CommandFlags {
  /** As typed after `svid-ca`, e.g. `serve` or `cacerts init-root`. */
  command: string;
  flags: readonly FlagSpec[];
  /** Prefix of the environment variables read for these flags (serve only). */
  envPrefix?: string | undefined;
}

/** Every command that takes flags, in the order of the usage text. */
export const COMMAND_FLAGS: readonly CommandFlags[] = [
  { command: 'serve', flags: SERVE_FLAGS, envPrefix: 'SVID_CA_' },
  { command: 'dev-token', flags: DEV_TOKEN_FLAGS },
  { command: 'request', flags: REQUEST_FLAGS },
  ...Object.entries(CACERTS_COMMANDS).map(([sub, c]) => ({ command: `cacerts ${sub}`, flags: c.flags })),
];

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/**
 * The configuration reference as Markdown: per command a `### svid-ca COMMAND` heading and a table
 * | Flag | Default | Environment | Meaning | with one row per flag, in declaration order (a boolean's
 * default is `false`; no default is empty). Rendered from the same FlagSpecs as `--help`; printed
 * by `svid-ca help --markdown` to regenerate the table in docs/configuration.md.
 */
export function configurationReferenceMarkdown(commands: readonly CommandFlags[] = COMMAND_FLAGS): string {
  const sections = commands.map(({ command, flags, envPrefix }) => {
    const rows = flags.map((f) => {
      const def = f.default ?? (f.kind === 'boolean' ? 'false' : '');
      const env = [envPrefix ? envName(f.name, envPrefix) : '', f.istioEnv ?? ''].filter(Boolean).map((v) => `\`${v}\``).join(', ');
      return `| \`--${f.name}\` | ${def ? `\`${cell(def)}\`` : ''} | ${env} | ${cell(f.help)} |`;
    });
    return [`### svid-ca ${command}`, '', '| Flag | Default | Environment | Meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
  });
  return sections.join('\n\n') + '\n';
}
