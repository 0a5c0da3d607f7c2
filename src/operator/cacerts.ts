import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { createIntermediateCa, createRootCa, loadCacerts, readCacertsFiles, compareRoots, DEFAULT_PROBE_NAMES } from '../ca/index.js';
import { formatGoDuration } from '../duration.js';
import { ConfigError, parseFlags, type FlagSpec } from '../flags.js';
import { BundleError, decodePem, encodePem, KEY_SPECS, subjectText, type KeySpec, type LoadedCertificate, type ProbeNames, type SigningBundle } from '../pki/index.js';
import { writeFileAtomic } from '../dev/index.js';

/** Operator commands for building and rotating cacerts folders, so nobody writes openssl by hand. */
export const CACERTS_USAGE = `svid-ca cacerts: build, check and rotate cacerts folders

  svid-ca cacerts init-root --out DIR [--key ec-p256|ec-p384|rsa-2048|rsa-4096] [--ttl DUR] [--org O]
  svid-ca cacerts init-intermediate --root DIR --out DIR [--ttl DUR] [--cluster NAME] [--key KEY]
  svid-ca cacerts verify DIR [--at TIME] [--trust-domain TD] [--serving-dns NAMES]
  svid-ca cacerts bundle OLD_DIR NEW_DIR --out DIR [--signer new|old] [--trust-domain TD] [--serving-dns NAMES]
  svid-ca cacerts plan-rotation OLD_DIR NEW_DIR [--max-ttl DUR]
`;

const DAY = 86_400_000;
type Out = (line: string) => void;

function keySpec(v: unknown): KeySpec {
  if (!KEY_SPECS.includes(v as KeySpec)) throw new ConfigError(`--key: invalid value "${String(v)}" (want one of ${KEY_SPECS.join(', ')})`);
  return v as KeySpec;
}

function need(values: Map<string, unknown>, name: string): string {
  const v = values.get(name);
  if (typeof v !== 'string' || !v) throw new ConfigError(`--${name}: a value is required`);
  return v;
}

const INIT_ROOT_FLAGS: FlagSpec[] = [
  { name: 'out', kind: 'string', help: 'folder for root-cert.pem and root-key.pem (0600)' },
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type: ${KEY_SPECS.join(', ')}` },
  { name: 'ttl', kind: 'duration', default: '87600h', help: 'root lifetime (10 years)' },
  { name: 'org', kind: 'string', default: 'svid-ca', help: 'Organization of the root subject' },
  { name: 'cn', kind: 'string', default: 'svid-ca root CA', help: 'CommonName of the root subject' },
];

const INIT_INTERMEDIATE_FLAGS: FlagSpec[] = [
  { name: 'root', kind: 'string', help: 'folder made by init-root (root-cert.pem, root-key.pem)' },
  { name: 'out', kind: 'string', help: 'cacerts folder to write (Istio layout)' },
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type: ${KEY_SPECS.join(', ')}` },
  { name: 'ttl', kind: 'duration', default: '8760h', help: 'intermediate lifetime (1 year), clamped to the root' },
  { name: 'cluster', kind: 'string', default: 'cluster1', help: 'cluster name, put in the subject' },
];

// issue #11: the names serve issues under, so verify validates the same paths serve will.
const PROBE_FLAGS: FlagSpec[] = [
  { name: 'trust-domain', kind: 'string', default: DEFAULT_PROBE_NAMES.trustDomain, help: "serve's --trust-domain: the probe SVID's SPIFFE trust domain" },
  { name: 'serving-dns', kind: 'list', default: DEFAULT_PROBE_NAMES.servingDns.join(','), help: "serve's --serving-dns: the probe serving certificate's DNS names" },
];

const VERIFY_FLAGS: FlagSpec[] = [{ name: 'at', kind: 'string', help: 'check as of this time (ISO 8601)' }, ...PROBE_FLAGS];

const BUNDLE_FLAGS: FlagSpec[] = [
  { name: 'out', kind: 'string', help: 'folder to write' },
  { name: 'signer', kind: 'string', default: 'new', help: 'which intermediate signs in the bundle: new (step 2) or old (step 1)' },
  ...PROBE_FLAGS,
];

const PLAN_ROTATION_FLAGS: FlagSpec[] = [{ name: 'max-ttl', kind: 'duration', default: '2160h', help: "svid-ca's --max-ttl" }];

/** Each `svid-ca cacerts` subcommand's flags, for generated documentation (scripts/docs-config.mjs). */
export const CACERTS_FLAGS: Readonly<Record<string, readonly FlagSpec[]>> = {
  'init-root': INIT_ROOT_FLAGS,
  'init-intermediate': INIT_INTERMEDIATE_FLAGS,
  verify: VERIFY_FLAGS,
  bundle: BUNDLE_FLAGS,
  'plan-rotation': PLAN_ROTATION_FLAGS,
};

function initRoot(argv: string[], out: Out): number {
  const { values } = parseFlags(INIT_ROOT_FLAGS, argv, {});
  const dir = need(values, 'out');
  const root = createRootCa({ key: keySpec(values.get('key')), ttlMs: values.get('ttl') as number, organization: need(values, 'org'), commonName: need(values, 'cn') });
  writeFileAtomic(join(dir, 'root-key.pem'), root.keyPem, 0o600);
  writeFileAtomic(join(dir, 'root-cert.pem'), root.certPem);
  const c = new X509Certificate(root.certPem);
  out(`wrote ${join(dir, 'root-cert.pem')} and ${join(dir, 'root-key.pem')} (mode 0600)`);
  out(`root: ${subjectText(c)}, expires ${new Date(c.validTo).toISOString()}`);
  out('keep root-key.pem offline: svid-ca never needs it, only the intermediate key.');
  return 0;
}

function initIntermediate(argv: string[], out: Out): number {
  const { values } = parseFlags(INIT_INTERMEDIATE_FLAGS, argv, {});
  const rootDir = need(values, 'root');
  const dir = need(values, 'out');
  const read = (f: string) => {
    const p = join(rootDir, f);
    if (!existsSync(p)) throw new ConfigError(`--root: ${p} is missing (make the root with 'svid-ca cacerts init-root')`);
    return readFileSync(p, 'utf8');
  };
  const root = { certPem: read('root-cert.pem'), keyPem: read('root-key.pem') };
  const rootSubject = new X509Certificate(root.certPem).subject;
  const org = /^O=(.*)$/m.exec(rootSubject)?.[1] ?? 'svid-ca';
  const cluster = need(values, 'cluster');
  const files = createIntermediateCa({ root, key: keySpec(values.get('key')), ttlMs: values.get('ttl') as number, organization: org, commonName: `svid-ca intermediate ${cluster}` });
  for (const [name, text] of Object.entries(files)) writeFileAtomic(join(dir, name), text, name.endsWith('key.pem') ? 0o600 : 0o644);
  out(`wrote the cacerts folder ${dir} (Istio layout: ca-cert.pem, ca-key.pem (0600), cert-chain.pem, root-cert.pem)`);
  out(`load it into the cluster:\n  kubectl create secret generic cacerts -n istio-system \\\n    --from-file=${join(dir, 'ca-cert.pem')} --from-file=${join(dir, 'ca-key.pem')} \\\n    --from-file=${join(dir, 'root-cert.pem')} --from-file=${join(dir, 'cert-chain.pem')}`);
  return verifyFolder(dir, undefined, out);
}

function describeCert(role: string, c: LoadedCertificate, at: Date): string {
  const notAfter = new Date(c.x509.validTo);
  const days = Math.floor((notAfter.getTime() - at.getTime()) / DAY);
  const ski = c.facts.subjectKeyId?.toString('hex') ?? '(none)';
  return `  ${role.padEnd(12)} ${subjectText(c.x509) || '(empty subject)'}\n               SKI ${ski}  not after ${notAfter.toISOString()}  (${days} days left)`;
}

function printBundle(b: SigningBundle, at: Date, out: Out): void {
  out(`layout: ${b.layout}; signs with ${b.signer.algorithm.name}`);
  out(describeCert('signer', b.signingCert, at));
  for (const c of b.path.slice(1, -1)) out(describeCert('intermediate', c, at));
  for (const r of b.roots) out(describeCert('root', r, at));
}


function probeNames(values: Map<string, unknown>): ProbeNames {
  return { trustDomain: need(values, 'trust-domain'), servingDns: values.get('serving-dns') as string[] };
}

/** Exactly the load checks of `serve` (with serve's --trust-domain and --serving-dns); exit 0 only when serve would accept the folder. */
export function verifyFolder(dir: string, atGiven: Date | undefined, out: Out, names: ProbeNames = DEFAULT_PROBE_NAMES): number {
  const at = atGiven ?? new Date();
  let bundle: SigningBundle;
  try {
    bundle = loadCacerts(dir, at, names);
  } catch (err) {
    if (err instanceof BundleError) {
      out(`REJECTED: ${err.message}`);
      return 1;
    }
    throw err;
  }
  printBundle(bundle, at, out);
  out(`paths validated for SVIDs of trust domain ${names.trustDomain} and serving DNS ${names.servingDns.join(', ')} (--trust-domain, --serving-dns)`);
  for (const w of bundle.warnings) out(`warning: ${w}`);
  out(`OK: svid-ca serve would accept ${dir}${atGiven ? ` at ${at.toISOString()}` : ''}`);
  return 0;
}

function verify(argv: string[], out: Out): number {
  const { values, positionals } = parseFlags(VERIFY_FLAGS, argv, {}, { allowPositionals: true });
  const dir = positionals[0];
  if (!dir || positionals.length > 1) throw new ConfigError('cacerts verify: give exactly one folder');
  const atText = values.get('at') as string | undefined;
  const at = atText === undefined ? undefined : new Date(atText);
  if (at && Number.isNaN(at.getTime())) throw new ConfigError(`--at: invalid value "${atText}" (want an ISO 8601 time, e.g. 2027-01-01T00:00:00Z)`);
  return verifyFolder(dir, at, out, probeNames(values));
}

function certsOf(pem: string): Buffer[] {
  return decodePem(pem).filter((b) => b.type === 'CERTIFICATE').map((b) => b.der);
}

/** Roots of `a` then those of `b` not already in `a`, each re-framed as PEM. */
function mergeRoots(a: string, b: string): string {
  const seen: Buffer[] = [];
  for (const der of [...certsOf(a), ...certsOf(b)]) if (!seen.some((s) => s.equals(der))) seen.push(der);
  return seen.map((d) => encodePem('CERTIFICATE', d)).join('');
}

function bundle(argv: string[], out: Out): number {
  const { values, positionals } = parseFlags(BUNDLE_FLAGS, argv, {}, { allowPositionals: true });
  if (positionals.length !== 2) throw new ConfigError('cacerts bundle: give OLD_DIR and NEW_DIR');
  const [oldDir, newDir] = positionals as [string, string];
  const which = values.get('signer');
  if (which !== 'new' && which !== 'old') throw new ConfigError(`--signer: invalid value "${String(which)}" (want new or old)`);
  const dir = need(values, 'out');
  const oldFiles = readCacertsFiles(oldDir);
  const newFiles = readCacertsFiles(newDir);
  const signerFiles = which === 'new' ? newFiles : oldFiles;
  const chainText = signerFiles.layout === 'istio' ? signerFiles.chain[0]!.text : signerFiles.signingCert.text;
  const files = {
    'ca-cert.pem': encodePem('CERTIFICATE', certsOf(signerFiles.signingCert.text)[0]!),
    'ca-key.pem': signerFiles.signingKey.text,
    'cert-chain.pem': chainText,
    'root-cert.pem': mergeRoots(oldFiles.roots.text, newFiles.roots.text),
  };
  for (const [name, text] of Object.entries(files)) writeFileAtomic(join(dir, name), text, name.endsWith('key.pem') ? 0o600 : 0o644);
  out(`wrote the transition bundle ${dir}: the ${which} intermediate, root-cert.pem = old roots + new roots`);
  return verifyFolder(dir, undefined, out, probeNames(values));
}

function planRotation(argv: string[], out: Out): number {
  const { values, positionals } = parseFlags(PLAN_ROTATION_FLAGS, argv, {}, { allowPositionals: true });
  if (positionals.length !== 2) throw new ConfigError('cacerts plan-rotation: give OLD_DIR and NEW_DIR');
  const [oldDir, newDir] = positionals as [string, string];
  const oldB = loadCacerts(oldDir);
  const newB = loadCacerts(newDir);
  const roots = compareRoots(oldB, newB);
  const wait = formatGoDuration(values.get('max-ttl') as number);
  const newSigner = subjectText(newB.signingCert.x509);
  out(`current: ${subjectText(oldB.signingCert.x509)} (expires ${oldB.notAfter.toISOString()})`);
  out(`next:    ${newSigner} (expires ${newB.notAfter.toISOString()})`);
  if (roots.shared > 0 && roots.added.length === 0) {
    out('\nThe roots do not change: this is an intermediate rotation, one step.');
    out(`1. kubectl create secret generic cacerts -n istio-system --from-file=${newDir}/ca-cert.pem --from-file=${newDir}/ca-key.pem --from-file=${newDir}/cert-chain.pem --from-file=${newDir}/root-cert.pem --dry-run=client -o yaml | kubectl apply -f -`);
    out('   check: svid-ca logs "signing bundle reloaded" with the new signer within --reload-interval (plus kubelet sync, up to ~1 min);');
    out('          svid_ca_cert_expiry_timestamp_seconds{role="signer"} shows the new serial; the audit log\'s signerSki changes.');
    out('   rollback: apply the old folder again; leaves from either intermediate verify against the same root.');
    return 0;
  }
  out(`\nThe root changes (added: ${roots.added.join('; ') || 'none'}; removed: ${roots.removed.join('; ') || 'none'}). Four steps, in order:`);
  out(`1. Add the new root everywhere, still signing with the old intermediate:`);
  out(`     svid-ca cacerts bundle ${oldDir} ${newDir} --signer old --out step1 && apply step1 as the cacerts Secret`);
  out('   check: "signing bundle reloaded" with rootsAdded; every namespace\'s istio-ca-root-cert ConfigMap holds both roots;');
  out('          sidecars pick up the bundle at their next renewal (half their certificate life).');
  out(`2. Wait until every workload has renewed at least once: at least the longest lifetime issued (--max-ttl ${wait}; with`);
  out('   the default 24h TTL agents renew within ~12h). Check: no leaf issued before step 1 is still in use.');
  out(`3. Switch to the new intermediate, keeping both roots:`);
  out(`     svid-ca cacerts bundle ${oldDir} ${newDir} --signer new --out step3 && apply step3`);
  out('   check: "signing bundle reloaded" with the new signer; mTLS between old and new leaves still works (both roots trusted).');
  out(`4. After another full renewal period (${wait} at most), remove the old root: apply ${newDir} itself.`);
  out('   check: "signing bundle reloaded" with rootsRemoved; svid_ca_cert_expiry_timestamp_seconds{role="root"} lists only the new root.');
  out('Rollback at any step: apply the previous step\'s folder. svid-ca refuses a bundle that shares no root with the current one');
  out('(which would break every workload trusting only the old root) unless it runs with --allow-root-replacement.');
  return 0;
}

const SUBCOMMANDS: Record<string, (argv: string[], out: Out) => number> = {
  'init-root': initRoot,
  'init-intermediate': initIntermediate,
  verify,
  bundle,
  'plan-rotation': planRotation,
};

export function runCacertsCommand(argv: string[], out: Out = (l) => process.stdout.write(l + '\n')): number {
  const [sub, ...rest] = argv;
  if (!sub || sub === 'help' || sub === '--help') {
    out(CACERTS_USAGE);
    return 0;
  }
  const run = SUBCOMMANDS[sub];
  if (!run) throw new ConfigError(`cacerts: unknown command "${sub}"\n${CACERTS_USAGE}`);
  try {
    return run(rest, out);
  } catch (err) {
    if (err instanceof BundleError) {
      out(`REJECTED: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
