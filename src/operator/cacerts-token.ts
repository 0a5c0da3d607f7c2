import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { distinctCaName, intermediateCertificateFiles, ISTIO_FILES, Pkcs11SigningKeySource, TOKEN_KEY_SPECS, type TokenKeySpec } from '../ca/index.js';
import { ConfigError, parseFlags, type FlagSpec } from '../flags.js';
import { buildCaCsrPem, encodeName, signatureAlgorithmForKey, spkiDer } from '../pki/index.js';
import { refuseOverwrite, writeFolder, type OverwritePolicy } from './safe-write.js';

/**
 * Issue #17: the cacerts commands for an intermediate whose key lives in a PKCS#11 token.
 * Kept apart from cacerts.ts, which dispatches here when --key-uri / --signing-key is given.
 */

type Out = (line: string) => void;

/** --pkcs11-module and --pkcs11-pin-file, shared by every cacerts command that uses a key on a token. */
export const TOKEN_FLAGS: FlagSpec[] = [
  { name: 'pkcs11-module', kind: 'string', help: "with --key-uri / --signing-key: the token vendor's PKCS#11 library (.so)" },
  { name: 'pkcs11-pin-file', kind: 'string', help: 'with --key-uri / --signing-key: file holding the token user PIN (or pin-source=file: in the URI)' },
];

export const INIT_INTERMEDIATE_TOKEN_FLAGS: FlagSpec[] = [
  { name: 'key-uri', kind: 'string', help: 'PKCS#11 URI of the key to generate, with object= and id=, e.g. pkcs11:token=svid-ca;object=intermediate-2026;id=%01' },
  ...TOKEN_FLAGS,
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type generated in the token: ${TOKEN_KEY_SPECS.join(', ')}` },
  { name: 'root', kind: 'string', help: 'folder made by init-root (root-cert.pem, root-key.pem): sign the intermediate with it' },
  { name: 'out', kind: 'string', help: 'with --root: cacerts folder to write (certificates only; the key stays in the token)' },
  { name: 'csr-out', kind: 'string', help: 'instead of --root: write a CSR here for an offline or external root' },
  { name: 'ttl', kind: 'duration', default: '8760h', help: 'intermediate lifetime (1 year), clamped to the root' },
  { name: 'cluster', kind: 'string', default: 'cluster1', help: 'cluster name, put in the subject' },
  { name: 'org', kind: 'string', help: 'Organization of the subject (default: the root\'s, else svid-ca)' },
];

const str = (values: Map<string, unknown>, name: string) => (values.get(name) as string | undefined) || undefined;

/** The token a command works with; the PIN file and module as `serve` takes them. */
export function tokenSource(uri: string, values: Map<string, unknown>): Pkcs11SigningKeySource {
  return new Pkcs11SigningKeySource(
    { uri, modulePath: str(values, 'pkcs11-module'), pinFile: str(values, 'pkcs11-pin-file'), sessions: 1, signTimeoutMs: 30_000 },
    (level, fields, message) => process.stderr.write(`${level}: ${message} ${JSON.stringify(fields)}\n`),
  );
}

/**
 * `cacerts init-intermediate --key-uri URI ...`: generates the key inside the token (sensitive, not
 * extractable) and either signs its certificate with a root folder (--root, --out) or writes a CSR
 * (--csr-out). Exit 0 on success; BundleErrors (token, PIN, existing key) are reported by the caller.
 */
export function initIntermediateOnToken(
  argv: string[],
  out: Out,
  shared: {
    /** The file variant's flags this variant takes as they are (--cn, --subject, --force, --force-key). */
    flags: readonly FlagSpec[];
    /** The file variant's subject rule (--subject, else --org and --cn, else `defaults`). */
    subject: (values: Map<string, unknown>, defaults: { org: string; cn: string }) => { organization: string; commonName: string; distinctName: boolean };
    verifyFolder: (dir: string, source: Pkcs11SigningKeySource) => number;
    /** The kubectl command that loads the folder as the cacerts Secret (no ca-key.pem), as the file variant prints it. */
    secretCommand: (dir: string) => string;
  },
): number {
  const { values } = parseFlags([...INIT_INTERMEDIATE_TOKEN_FLAGS, ...shared.flags], argv, {});
  // As the file variant: nothing written over without --force (a key is never written here: it stays in the token).
  const policy: OverwritePolicy = { force: values.get('force') === true, forceKey: values.get('force-key') === true };
  const uri = str(values, 'key-uri')!;
  const spec = values.get('key') as string;
  if (!TOKEN_KEY_SPECS.includes(spec as TokenKeySpec)) throw new ConfigError(`--key: invalid value "${spec}" (in a token: one of ${TOKEN_KEY_SPECS.join(', ')})`);
  const rootDir = str(values, 'root');
  const csrOut = str(values, 'csr-out');
  const dir = str(values, 'out');
  if (!!rootDir === !!csrOut) throw new ConfigError('--root or --csr-out: give exactly one (sign with a root folder, or write a CSR for an external root)');
  if (rootDir && !dir) throw new ConfigError('--out: required with --root (the cacerts folder to write)');
  const root = rootDir ? readRoot(rootDir) : undefined;
  const org = (root ? /^O=(.*)$/m.exec(new X509Certificate(root.certPem).subject)?.[1] : undefined) ?? 'svid-ca';
  const { organization, commonName: chosenName, distinctName } = shared.subject(values, { org, cn: `svid-ca intermediate ${str(values, 'cluster') ?? 'cluster1'}` });

  // Refused before the key is made: a refusal after it would leave an unused key in the token.
  if (csrOut) refuseOverwrite(dirname(csrOut), [basename(csrOut)], policy, '--csr-out');
  else refuseOverwrite(dir!, [ISTIO_FILES.cert, ISTIO_FILES.chain, ISTIO_FILES.root], policy);
  const source = tokenSource(uri, values);
  try {
    const { publicKey, key } = source.generate(spec as TokenKeySpec);
    out(`generated ${spec} key ${key.description} in the token (sensitive, not extractable)`);
    const commonName = distinctName ? distinctCaName(chosenName, spkiDer(publicKey), new Date()) : chosenName;
    if (csrOut) {
      const csr = buildCaCsrPem({ subjectDer: encodeName({ organization, commonName }), publicKeyDer: spkiDer(publicKey), algorithm: signatureAlgorithmForKey(publicKey)!, key });
      writeFolder(dirname(csrOut), { [basename(csrOut)]: csr }, policy, '--csr-out');
      out(`wrote the CSR ${csrOut} (O=${organization}, CN=${commonName}); have the root sign it as a CA (pathlen 0, keyCertSign),`);
      out('then put ca-cert.pem, cert-chain.pem and root-cert.pem in the cacerts folder (no ca-key.pem) and check it with');
      out(`  svid-ca cacerts verify DIR --signing-key '${key.description}' --pkcs11-module ... --pkcs11-pin-file ...`);
      return 0;
    }
    const files = intermediateCertificateFiles({ root: root!, publicKeyDer: spkiDer(publicKey), ttlMs: values.get('ttl') as number, organization, commonName });
    writeFolder(dir!, files, policy);
    out(`wrote the cacerts folder ${dir} (ca-cert.pem, cert-chain.pem, root-cert.pem; the key stays in the token)`);
    out(`load it into the cluster (creates the Secret, or replaces it during a rotation):\n${shared.secretCommand(dir!)}`);
    return shared.verifyFolder(dir!, source);
  } finally {
    source.close();
  }
}

function readRoot(rootDir: string): { certPem: string; keyPem: string } {
  const read = (f: string) => {
    const p = join(rootDir, f);
    if (!existsSync(p)) throw new ConfigError(`--root: ${p} is missing (make the root with 'svid-ca cacerts init-root')`);
    return readFileSync(p, 'utf8');
  };
  return { certPem: read('root-cert.pem'), keyPem: read('root-key.pem') };
}

export const VERIFY_TOKEN_FLAGS: FlagSpec[] = [
  { name: 'at', kind: 'string', help: 'check as of this time (ISO 8601)' },
  { name: 'signing-key', kind: 'string', help: 'PKCS#11 URI of the signing key: check the folder against the token as serve --signing-key does' },
  ...TOKEN_FLAGS,
];

/** `cacerts verify DIR --signing-key URI ...`: serve's load checks, the key found on and checked against the token. */
export function verifyOnToken(
  argv: string[],
  probeFlags: readonly FlagSpec[],
  verifyFolder: (dir: string, at: Date | undefined, source: Pkcs11SigningKeySource, values: Map<string, unknown>) => number,
): number {
  const { values, positionals } = parseFlags([...VERIFY_TOKEN_FLAGS, ...probeFlags], argv, {}, { allowPositionals: true });
  const dir = positionals[0];
  if (!dir || positionals.length > 1) throw new ConfigError('cacerts verify: give exactly one folder');
  const atText = str(values, 'at');
  const at = atText === undefined ? undefined : new Date(atText);
  if (at && Number.isNaN(at.getTime())) throw new ConfigError(`--at: invalid value "${atText}" (want an ISO 8601 time, e.g. 2027-01-01T00:00:00Z)`);
  const source = tokenSource(str(values, 'signing-key')!, values);
  try {
    return verifyFolder(dir, at, source, values);
  } finally {
    source.close();
  }
}

/** Whether `--name` (or `--name=...`) is among the arguments: the token variants of the commands. */
export function hasFlag(argv: readonly string[], name: string): boolean {
  return argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`));
}
