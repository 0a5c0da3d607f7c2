import { SERVE_FLAGS } from './config.js';
import { envName, type FlagSpec } from './flags.js';
import { CACERTS_COMMANDS, CACERTS_USAGE } from './operator/index.js';
import { KEY_SPECS } from './pki/index.js';

/**
 * The flags of every command, in one place: `svid-ca help COMMAND` prints them and
 * configurationReferenceMarkdown renders the same specs as the tables of docs/configuration.md, so
 * the two cannot drift (test/help.test.ts compares them).
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
  { name: 'cluster-id', kind: 'string', default: 'Kubernetes', help: "the clusterid header, as an agent's cluster name (values.global.multiCluster.clusterName); pick the cluster of a multi-cluster svid-ca" },
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
const code = (text: string | undefined) => (text === undefined || text === '' ? '' : `\`${cell(text)}\``);
/** The argument placeholder after a flag in the reference, by the flag's kind. */
const ARG: Record<FlagSpec['kind'], string> = { duration: ' DUR', hostport: ' HOST:PORT', list: ' LIST', int: ' N', string: ' VALUE', boolean: '' };
const flagCell = (f: FlagSpec) => `\`--${f.name}${ARG[f.kind] ?? ' VALUE'}\``;
const defaultCell = (f: FlagSpec) => (f.default !== undefined ? code(f.default) : f.kind === 'boolean' ? 'off' : '');

/**
 * The flag tables of the configuration reference as Markdown, the only renderer of them:
 * scripts/docs-config.mjs (`npm run docs:config`) puts its hand-written introduction above this
 * text to write docs/configuration.md, and `svid-ca help --markdown` prints this text alone.
 *
 * Shape, per command in `commands` order: a `## \`svid-ca COMMAND\`` heading, a blank line, a table, a
 * blank line. A command with an `envPrefix` (serve) gets | flag | environment variable | Istio's
 * variable | default | meaning |; the others | flag | default | meaning |. The flag cell is
 * `--name` plus its argument (DUR, HOST:PORT, LIST, N, VALUE; none for a boolean); a boolean
 * without a default shows `off`, any other flag without one an empty cell; `|` in text is escaped
 * and newlines become spaces. The `svid-ca cacerts` usage block comes before the first
 * `cacerts` subcommand. Rendered from the same FlagSpecs as `--help`, so the two cannot drift
 * (test/help.test.ts, test/docs-config.test.ts).
 */
export function configurationReferenceMarkdown(commands: readonly CommandFlags[] = COMMAND_FLAGS): string {
  const out: string[] = [];
  let cacertsIntro = false;
  for (const { command, flags, envPrefix } of commands) {
    if (command.startsWith('cacerts ') && !cacertsIntro) {
      cacertsIntro = true;
      out.push('## `svid-ca cacerts`', '', 'Build, check and rotate cacerts folders ([rotation](rotation.md)):', '', '```text', CACERTS_USAGE.trim(), '```', '');
    }
    out.push(`## \`svid-ca ${command}\``, '');
    if (envPrefix !== undefined) {
      out.push("| flag | environment variable | Istio's variable | default | meaning |", '|---|---|---|---|---|');
      for (const f of flags) out.push(`| ${flagCell(f)} | \`${envName(f.name, envPrefix)}\` | ${code(f.istioEnv)} | ${defaultCell(f)} | ${cell(f.help)} |`);
    } else {
      out.push('| flag | default | meaning |', '|---|---|---|');
      for (const f of flags) out.push(`| ${flagCell(f)} | ${defaultCell(f)} | ${cell(f.help)} |`);
    }
    out.push('');
  }
  return out.join('\n').trimEnd() + '\n';
}
