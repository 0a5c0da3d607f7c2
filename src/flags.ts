import { parseArgs } from 'node:util';
import { parseDuration } from './duration.js';

/** A bad flag or value: the CLI prints the message on one line and exits 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export type FlagKind = 'string' | 'duration' | 'list' | 'boolean' | 'int' | 'hostport';

export interface FlagSpec {
  name: string;
  kind: FlagKind;
  default?: string;
  /** Istio's own environment variable for the same setting, read after SVID_CA_*. */
  istioEnv?: string;
  help: string;
}

export type FlagSource = 'flag' | 'env' | 'istio-env' | 'default';

export interface HostPort {
  host: string;
  port: number;
}

export type FlagValue = string | number | boolean | string[] | HostPort;

export interface ParsedFlags {
  values: Map<string, FlagValue>;
  sources: Map<string, { source: FlagSource; variable?: string }>;
  positionals: string[];
}

/** `--max-ttl` -> `SVID_CA_MAX_TTL`. */
export function envName(flag: string, prefix = 'SVID_CA_'): string {
  return prefix + flag.toUpperCase().replace(/-/g, '_');
}

export function parseHostPort(text: string): HostPort | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

function convert(spec: FlagSpec, raw: string, origin: string): FlagValue {
  const bad = (want: string) => new ConfigError(`${origin}: invalid value "${raw.slice(0, 100)}" (${want})`);
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'duration': {
      const ms = parseDuration(raw);
      if (ms === undefined) throw bad('want a duration such as 90s, 15m, 24h or 30d');
      return ms;
    }
    case 'list':
      return raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off|)$/i.test(raw)) return false;
      throw bad('want true or false');
    case 'int': {
      if (!/^\d+$/.test(raw)) throw bad('want a whole number');
      return Number(raw);
    }
    case 'hostport': {
      const hp = parseHostPort(raw);
      if (!hp) throw bad('want HOST:PORT, e.g. 0.0.0.0:15012');
      return hp;
    }
  }
}

/**
 * Flags and environment into typed values. Precedence: flag, SVID_CA_* variable, Istio's variable,
 * default. Every value is checked here so that a typo fails at start, naming the flag.
 */
export function parseFlags(
  specs: readonly FlagSpec[],
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  options: { envPrefix?: string | undefined; allowPositionals?: boolean } = {},
): ParsedFlags {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      // A list flag may also be repeated (`--revoke a.pem --revoke b.pem`): the values join as if comma-separated.
      options: Object.fromEntries(specs.map((s) => [s.name, { type: s.kind === 'boolean' ? 'boolean' : 'string', multiple: s.kind === 'list' }])),
      strict: true,
      // `--no-NAME` turns a boolean off (issue #14: --grpc-fast-path defaults to true).
      allowNegative: true,
      allowPositionals: options.allowPositionals ?? false,
    });
  } catch (err) {
    const msg = (err as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new ConfigError(msg.replace(/^Unknown option '(.*)'$/, 'unknown flag $1').replace(/^Option '(--[^ ]*) <value>' argument missing$/, '$1: a value is required'));
  }
  const values = new Map<string, FlagValue>();
  const sources = new Map<string, { source: FlagSource; variable?: string }>();
  for (const spec of specs) {
    const fromFlag = parsed.values[spec.name];
    if (fromFlag !== undefined) {
      values.set(spec.name, typeof fromFlag === 'boolean' ? fromFlag : convert(spec, String(fromFlag), `--${spec.name}`));
      sources.set(spec.name, { source: 'flag' });
      continue;
    }
    const candidates: [string | undefined, FlagSource][] = [
      [options.envPrefix !== undefined ? envName(spec.name, options.envPrefix) : undefined, 'env'],
      [spec.istioEnv, 'istio-env'],
    ];
    let found = false;
    for (const [variable, source] of candidates) {
      if (variable === undefined) continue;
      const raw = env[variable];
      if (raw === undefined || raw === '') continue;
      values.set(spec.name, convert(spec, raw, `--${spec.name} (from ${variable})`));
      sources.set(spec.name, { source, variable });
      found = true;
      break;
    }
    if (found) continue;
    if (spec.default !== undefined) {
      values.set(spec.name, convert(spec, spec.default, `--${spec.name} default`));
      sources.set(spec.name, { source: 'default' });
    } else if (spec.kind === 'boolean') {
      values.set(spec.name, false);
      sources.set(spec.name, { source: 'default' });
    }
  }
  return { values, sources, positionals: parsed.positionals };
}

/** Help text for a command's flags. */
export function flagHelp(specs: readonly FlagSpec[], envPrefix?: string): string {
  return specs
    .map((s) => {
      const arg = s.kind === 'boolean' ? '' : ` ${s.kind === 'duration' ? 'DUR' : s.kind === 'hostport' ? 'HOST:PORT' : s.kind === 'list' ? 'LIST' : 'VALUE'}`;
      const extras = [s.default !== undefined ? `default ${s.default}` : '', envPrefix ? `env ${envName(s.name, envPrefix)}` : '', s.istioEnv ? `or ${s.istioEnv}` : '']
        .filter(Boolean)
        .join('; ');
      return `  --${s.name}${arg}\n      ${s.help}${extras ? ` (${extras})` : ''}`;
    })
    .join('\n');
}
