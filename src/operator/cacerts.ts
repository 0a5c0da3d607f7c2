import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { bundleFromFiles, createIntermediateCa, createRootCa, loadCacerts, readCacertsFiles, compareRoots, DEFAULT_PROBE_NAMES, ISTIO_FILES } from '../ca/index.js';
import { formatGoDuration } from '../duration.js';
import { ConfigError, flagHelp, parseFlags, type FlagSpec } from '../flags.js';
import { BundleError, compareCrlSets, describeCrlChange, decodePem, describeRevocation, encodePem, inspectCertificate, revocationOf, KEY_SPECS, subjectText, type KeySpec, type LoadedCertificate, type ProbeNames, type SigningBundle } from '../pki/index.js';
import { refuseOverwrite, writeFolder, type OverwritePolicy } from './safe-write.js';
import { hasFlag, initIntermediateOnToken, INIT_INTERMEDIATE_TOKEN_FLAGS, verifyOnToken, VERIFY_TOKEN_FLAGS } from './cacerts-token.js';
import type { Pkcs11SigningKeySource } from '../ca/index.js';
import { crlCommand, CRL_FLAGS, describeCrl } from './cacerts-crl.js';

/** Operator commands for building and rotating cacerts folders, so nobody writes openssl by hand. */
export const CACERTS_USAGE = `svid-ca cacerts: build, check and rotate cacerts folders

  svid-ca cacerts init-root --out DIR [--key ec-p256|ec-p384|rsa-2048|rsa-4096] [--ttl DUR] [--subject 'O=..,CN=..' | --org O --cn CN]
  svid-ca cacerts init-intermediate --root DIR --out DIR [--ttl DUR] [--cluster NAME] [--key KEY] [--subject ..|--org O --cn CN]
  svid-ca cacerts verify DIR [--at TIME] [--trust-domain TD] [--serving-dns NAMES] [--previous CURRENT_DIR]
  svid-ca cacerts init-intermediate --key-uri URI --pkcs11-module SO --pkcs11-pin-file F (--root DIR --out DIR | --csr-out FILE) [--key KEY]
  svid-ca cacerts verify DIR --signing-key URI --pkcs11-module SO --pkcs11-pin-file F [--at TIME] [--trust-domain TD] [--serving-dns NAMES]
  svid-ca cacerts bundle OLD_DIR NEW_DIR --out DIR --signer old|new [--trust-domain TD] [--serving-dns NAMES]
  svid-ca cacerts plan-rotation OLD_DIR NEW_DIR [--max-ttl DUR]
  svid-ca cacerts crl --issuer DIR --out FILE [--from CURRENT_CRL_FILE] [--revoke CERT.pem ...] [--reason REASON] [--unrevoke SERIAL ...] [--next-update DUR]
  svid-ca cacerts crl --out FILE --drop-issuer 'SUBJECT'|SKI

Nothing is overwritten: a folder that already holds a file to be written is refused unless --force,
and a private key is never replaced unless --force-key. svid-ca cacerts COMMAND --help: its flags.
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

const OVERWRITE_FLAGS: FlagSpec[] = [
  { name: 'force', kind: 'boolean', help: 'replace certificates already in --out (never a private key)' },
  { name: 'force-key', kind: 'boolean', help: 'also replace a private key already in --out (destroys it)' },
];

function overwritePolicy(values: Map<string, unknown>): OverwritePolicy {
  return { force: values.get('force') === true, forceKey: values.get('force-key') === true };
}

/**
 * The subject of a CA we create: --subject 'O=..,CN=..' (also OpenSSL's '/O=../CN=..'; only O and
 * CN, the attributes Istio's CAs carry), else --org and --cn. Throws ConfigError naming the flag.
 * `distinctName` is true when the CN is the default one, which the CA then makes its own with the
 * date and its SKI (distinctCaName), so that separate runs never make two CAs of the same subject.
 */
function subjectFlags(values: Map<string, unknown>, defaults: { org: string; cn: string }): { organization: string; commonName: string; distinctName: boolean } {
  const text = values.get('subject') as string | undefined;
  if (text === undefined) {
    const cn = values.get('cn') as string | undefined;
    return { organization: (values.get('org') as string | undefined) || defaults.org, commonName: cn || defaults.cn, distinctName: !cn };
  }
  const attrs: Record<string, string> = {};
  for (const part of text.replace(/^\//, '').split(text.startsWith('/') ? '/' : ',')) {
    const m = /^\s*(O|CN)\s*=(.*)$/i.exec(part);
    if (!m || !m[2]!.trim()) throw new ConfigError(`--subject: invalid value "${text}" (want O=ORGANIZATION,CN=COMMON NAME; only O and CN)`);
    attrs[m[1]!.toUpperCase()] = m[2]!.trim();
  }
  if (!attrs.CN) throw new ConfigError(`--subject: invalid value "${text}" (a CN=... is required)`);
  return { organization: attrs.O ?? '', commonName: attrs.CN, distinctName: false };
}

const INIT_ROOT_FLAGS: FlagSpec[] = [
  { name: 'out', kind: 'string', help: 'folder for root-cert.pem and root-key.pem (0600)' },
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type: ${KEY_SPECS.join(', ')}` },
  { name: 'ttl', kind: 'duration', default: '87600h', help: 'root lifetime (10 years)' },
  { name: 'org', kind: 'string', default: 'svid-ca', help: 'Organization of the root subject' },
  { name: 'cn', kind: 'string', help: "CommonName of the root subject (default: 'svid-ca root CA DATE SKI', the creation date and the start of the key's SKI, so no two roots share a subject)" },
  { name: 'subject', kind: 'string', help: "the whole subject instead of --org/--cn, e.g. 'O=Example Corp,CN=mesh root 2026'" },
  ...OVERWRITE_FLAGS,
];

const INIT_INTERMEDIATE_FLAGS: FlagSpec[] = [
  { name: 'root', kind: 'string', help: 'folder made by init-root (root-cert.pem, root-key.pem)' },
  { name: 'out', kind: 'string', help: 'cacerts folder to write (Istio layout)' },
  { name: 'key', kind: 'string', default: 'ec-p256', help: `key type: ${KEY_SPECS.join(', ')}` },
  { name: 'ttl', kind: 'duration', default: '8760h', help: 'intermediate lifetime (1 year), clamped to the root' },
  { name: 'cluster', kind: 'string', default: 'cluster1', help: 'cluster name, put in the subject' },
  { name: 'org', kind: 'string', help: "Organization of the subject (default: the root's)" },
  { name: 'cn', kind: 'string', help: "CommonName of the subject (default: 'svid-ca intermediate CLUSTER DATE SKI', the creation date and the start of the key's SKI)" },
  { name: 'subject', kind: 'string', help: "the whole subject instead of --org/--cn, e.g. 'O=Example Corp,CN=east intermediate 2026'" },
  ...OVERWRITE_FLAGS,
];

// issue #11: the names serve issues under, so verify validates the same paths serve will.
const PROBE_FLAGS: FlagSpec[] = [
  { name: 'trust-domain', kind: 'string', default: DEFAULT_PROBE_NAMES.trustDomain, help: "serve's --trust-domain: the probe SVID's SPIFFE trust domain" },
  { name: 'serving-dns', kind: 'list', default: DEFAULT_PROBE_NAMES.servingDns.join(','), help: "serve's --serving-dns: the probe serving certificate's DNS names" },
];

function initRoot(argv: string[], out: Out): number {
  const { values } = parseFlags(INIT_ROOT_FLAGS, argv, {});
  const dir = need(values, 'out');
  const key = keySpec(values.get('key'));
  const subject = subjectFlags(values, { org: 'svid-ca', cn: 'svid-ca root CA' });
  const policy = overwritePolicy(values);
  refuseOverwrite(dir, ['root-key.pem', 'root-cert.pem'], policy); // before the (slow, RSA) key is made
  const root = createRootCa({ key, ttlMs: values.get('ttl') as number, ...subject });
  writeFolder(dir, { 'root-key.pem': root.keyPem, 'root-cert.pem': root.certPem }, policy);
  const c = new X509Certificate(root.certPem);
  out(`wrote ${join(dir, 'root-cert.pem')} and ${join(dir, 'root-key.pem')} (mode 0600)`);
  out(`root: ${subjectText(c)}, SKI ${ski(c)}, expires ${new Date(c.validTo).toISOString()}`);
  out('keep root-key.pem offline: svid-ca never needs it, only the intermediate key.');
  return 0;
}

function initIntermediate(argv: string[], out: Out): number {
  // issue #17: the key generated in a PKCS#11 token.
  if (hasFlag(argv, 'key-uri')) {
    return initIntermediateOnToken(argv, out, {
      flags: INIT_INTERMEDIATE_FLAGS.filter((f) => ['cn', 'subject', 'force', 'force-key'].includes(f.name)),
      subject: subjectFlags,
      verifyFolder: (dir, source) => verifyFolder(dir, undefined, out, DEFAULT_PROBE_NAMES, source),
      secretCommand: (dir) => applySecretCommand(dir, true, { withKey: false }),
    });
  }
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
  const key = keySpec(values.get('key'));
  const subject = subjectFlags(values, { org, cn: `svid-ca intermediate ${cluster}` });
  const policy = overwritePolicy(values);
  refuseOverwrite(dir, Object.values(ISTIO_FILES), policy);
  const files = createIntermediateCa({ root, key, ttlMs: values.get('ttl') as number, ...subject });
  writeFolder(dir, { ...files }, policy);
  out(`wrote the cacerts folder ${dir} (Istio layout: ca-cert.pem, ca-key.pem (0600), cert-chain.pem, root-cert.pem)`);
  out(`load it into the cluster (creates the Secret, or replaces it during a rotation):\n${applySecretCommand(dir, true)}`);
  return verifyFolder(dir, undefined, out);
}

/**
 * The command the runbooks use to load a cacerts folder: create-or-update (`--dry-run=client -o yaml |
 * kubectl apply -f -`), so it also works when the Secret exists, as it does during a rotation.
 * `withKey` false: the key is in a PKCS#11 token (issue #17), so the Secret carries no ca-key.pem.
 */
function applySecretCommand(dir: string, multiline = false, { withCrl = existsSync(join(dir, 'ca-crl.pem')), withKey = true }: { withCrl?: boolean; withKey?: boolean } = {}): string {
  // issue #16: a folder with ca-crl.pem loads it too (dropping it from the Secret is how a CRL is cleared).
  // crl-safety: `withCrl` for a folder not written yet (plan-rotation's step1/step3, which cacerts bundle gives the CRL of).
  const names = ['ca-cert.pem', ...(withKey ? ['ca-key.pem'] : []), 'cert-chain.pem', 'root-cert.pem', ...(withCrl ? ['ca-crl.pem'] : [])];
  const files = names.map((f) => `--from-file=${join(dir, f)}`);
  const parts = ['kubectl create secret generic cacerts -n istio-system', files.slice(0, 2).join(' '), files.slice(2).join(' '), '--dry-run=client -o yaml | kubectl apply -f -'];
  return multiline ? `  ${parts.join(' \\\n    ')}` : parts.join(' ');
}

const skiHex = (c: LoadedCertificate) => c.facts.subjectKeyId?.toString('hex') ?? '(none)';
const ski = (c: X509Certificate) => inspectCertificate(Buffer.from(c.raw)).subjectKeyId?.toString('hex') ?? '(none)';

function describeCert(role: string, c: LoadedCertificate, at: Date): string {
  const notAfter = new Date(c.x509.validTo);
  const days = Math.floor((notAfter.getTime() - at.getTime()) / DAY);
  return `  ${role.padEnd(12)} ${subjectText(c.x509) || '(empty subject)'}\n               SKI ${skiHex(c)}  not after ${notAfter.toISOString()}  (${days} days left)`;
}

function printBundle(b: SigningBundle, at: Date, out: Out): void {
  out(`layout: ${b.layout}; signs with ${b.signer.algorithm.name}`);
  out(describeCert('signer', b.signingCert, at));
  for (const c of b.path.slice(1, -1)) out(describeCert('intermediate', c, at));
  for (const r of b.roots) out(describeCert('root', r, at));
  // issue #16: the CRLs of ca-crl.pem (issuer, number, this/next update, revoked serials).
  for (const crl of b.crls) for (const line of describeCrl(crl, at)) out(line);
}


function probeNames(values: Map<string, unknown>): ProbeNames {
  return { trustDomain: need(values, 'trust-domain'), servingDns: values.get('serving-dns') as string[] };
}

/**
 * Exactly the load checks of `serve` (with serve's --trust-domain and --serving-dns, and with
 * `tokenKey` the key on a PKCS#11 token, issue #17); exit 0 only when serve would accept the folder.
 */
export function verifyFolder(dir: string, atGiven: Date | undefined, out: Out, names: ProbeNames = DEFAULT_PROBE_NAMES, tokenKey?: Pkcs11SigningKeySource, okLine = true): number {
  const at = atGiven ?? new Date();
  let bundle: SigningBundle;
  try {
    bundle = loadCacerts(dir, at, names, tokenKey);
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
  // crl-safety2: with --previous, the verdict comes after the comparison (okLine false), never OK before REFUSED.
  if (okLine) out(okVerdict(dir, atGiven));
  return 0;
}

const okVerdict = (dir: string, atGiven: Date | undefined) => `OK: svid-ca serve would accept ${dir}${atGiven ? ` at ${atGiven.toISOString()}` : ''}`;

const VERIFY_FLAGS: FlagSpec[] = [
  { name: 'at', kind: 'string', help: 'check as of this time (ISO 8601); default: now' },
  ...PROBE_FLAGS,
  // crl-safety: the folder in use, to refuse CRLs that go back in number or forget a revocation.
  { name: 'previous', kind: 'string', help: "the cacerts folder in use: refuse (exit 1) when a CRL of DIR has a lower CRL number than the same CA's CRL there, the same number revoking other serials, or no longer revokes a serial it revokes" },
];

function verify(argv: string[], out: Out): number {
  // issue #17: check the folder against the key in a PKCS#11 token.
  if (hasFlag(argv, 'signing-key')) return verifyOnToken(argv, PROBE_FLAGS, (dir, at, source, values) => verifyFolder(dir, at, out, probeNames(values), source));
  const { values, positionals } = parseFlags(VERIFY_FLAGS, argv, {}, { allowPositionals: true });
  const dir = positionals[0];
  if (!dir || positionals.length > 1) throw new ConfigError('cacerts verify: give exactly one folder');
  const atText = values.get('at') as string | undefined;
  const at = atText === undefined ? undefined : new Date(atText);
  if (at && Number.isNaN(at.getTime())) throw new ConfigError(`--at: invalid value "${atText}" (want an ISO 8601 time, e.g. 2027-01-01T00:00:00Z)`);
  const previous = values.get('previous') as string | undefined;
  const code = verifyFolder(dir, at, out, probeNames(values), undefined, previous === undefined);
  if (code !== 0 || previous === undefined) return code;
  const continuity = crlContinuity(loadCacerts(previous, at), loadCacerts(dir, at), previous, dir, out);
  out(continuity === 0 ? `${okVerdict(dir, at)}; its CRLs continue those of ${previous}` : `NOT OK: serve would load ${dir}, but against ${previous} its CRLs are REFUSED (above)`);
  return continuity;
}

/**
 * crl-safety: refuses (returns 1, one `REFUSED:` line per problem) CRLs of `nextDir` that are older than the same
 * CA's CRL in `currentDir` (lower cRLNumber, or the same number revoking other serials), or that no longer revoke a serial
 * revoked there (RFC 5280 5.2.3: numbers increase; a CRL renewal keeps revocations); each line names the issuer,
 * the numbers and serials, and the `cacerts crl --from` command that fixes it. Warns (0) for a CA whose CRL NEXT no
 * longer has: applying it takes that CRL from clients. Same issuer = same issuer name and key.
 */
function crlContinuity(current: SigningBundle, next: SigningBundle, currentDir: string, nextDir: string, out: Out): number {
  const changes = compareCrlSets(current.crls, next.crls);
  const fix = `svid-ca cacerts crl --issuer <that CA's folder> --from ${join(currentDir, 'ca-crl.pem')} --out ${join(nextDir, 'ca-crl.pem')}`;
  const refused = changes.filter((c) => c.kind !== 'dropped');
  for (const c of refused) out(`REFUSED: ${describeCrlChange(c)}; renew it from the CRL in use: ${fix}`);
  for (const c of changes.filter((d) => d.kind === 'dropped')) {
    const stillUsed = [...next.roots, ...next.path].some((ca) => subjectText(ca.x509) === c.issuer);
    out(`warning: ${describeCrlChange(c)}${stillUsed ? `, though ${nextDir} still has that CA: add its CRL with ${fix}` : ` (${nextDir} no longer has that CA: fine once no client trusts what it signed)`}`);
  }
  return refused.length > 0 ? 1 : 0;
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

const SIGNER_CHOICE =
  'old for step 1 of a root rotation (add the new root, keep signing with the current intermediate), ' +
  'new for step 3 (switch to the new intermediate, keep both roots); svid-ca cacerts plan-rotation prints the steps';

const BUNDLE_FLAGS: FlagSpec[] = [
  { name: 'out', kind: 'string', help: 'folder to write' },
  { name: 'signer', kind: 'string', help: 'which intermediate signs in the bundle (required): old (step 1) or new (step 3)' },
  ...OVERWRITE_FLAGS,
  ...PROBE_FLAGS,
];

function bundle(argv: string[], out: Out): number {
  const { values, positionals } = parseFlags(BUNDLE_FLAGS, argv, {}, { allowPositionals: true });
  if (positionals.length !== 2) throw new ConfigError('cacerts bundle: give OLD_DIR and NEW_DIR');
  const [oldDir, newDir] = positionals as [string, string];
  const which = values.get('signer');
  if (which === undefined) throw new ConfigError(`--signer: required: ${SIGNER_CHOICE}`);
  if (which !== 'new' && which !== 'old') throw new ConfigError(`--signer: invalid value "${String(which)}" (want ${SIGNER_CHOICE})`);
  const dir = need(values, 'out');
  const policy = overwritePolicy(values);
  refuseOverwrite(dir, [...Object.values(ISTIO_FILES), 'ca-crl.pem'], policy); // crl-safety: a stale ca-crl.pem there would be read with the bundle
  const oldFiles = readCacertsFiles(oldDir);
  const newFiles = readCacertsFiles(newDir);
  const signerFiles = which === 'new' ? newFiles : oldFiles;
  const chainText = signerFiles.layout === 'istio' ? signerFiles.chain[0]!.text : signerFiles.signingCert.text;
  const files: Record<string, string> = {
    'ca-cert.pem': encodePem('CERTIFICATE', certsOf(signerFiles.signingCert.text)[0]!),
    'ca-key.pem': signerFiles.signingKey.text,
    'cert-chain.pem': chainText,
    'root-cert.pem': mergeRoots(oldFiles.roots.text, newFiles.roots.text),
  };
  // crl-safety: the signing side's ca-crl.pem comes along (its CRLs cover the signing path), and the output says so.
  const signerDir = which === 'new' ? newDir : oldDir;
  if (signerFiles.crl) files['ca-crl.pem'] = signerFiles.crl.text;
  const otherCrl = (which === 'new' ? oldFiles : newFiles).crl;
  // Check in memory first (issue #11): a folder serve would refuse is never written, key included.
  const named = (f: string) => ({ name: join(dir, f), text: files[f]! });
  try {
    bundleFromFiles({ layout: 'istio', signingCert: named('ca-cert.pem'), signingKey: named('ca-key.pem'), chain: [named('cert-chain.pem')], roots: named('root-cert.pem'), crl: files['ca-crl.pem'] === undefined ? undefined : named('ca-crl.pem') }, new Date(), probeNames(values));
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    out(`REJECTED: ${err.message} (nothing written to ${dir})`);
    return 1;
  }
  writeFolder(dir, files, policy);
  out(`wrote the transition bundle ${dir}: the ${which} intermediate, root-cert.pem = old roots + new roots`);
  out(
    signerFiles.crl
      ? `ca-crl.pem: copied from ${signerDir} (the ${which} intermediate's folder); include it when you apply ${dir}`
      : `ca-crl.pem: none, as ${signerDir} has none${otherCrl ? ` (the one in ${which === 'new' ? oldDir : newDir} is not carried over: its CRLs are for the other intermediate; add a CRL per CA with svid-ca cacerts crl --from ... --out ${join(dir, 'ca-crl.pem')})` : ''}: applying ${dir} clears istio-ca-crl`,
  );
  return verifyFolder(dir, undefined, out, probeNames(values));
}

const PLAN_ROTATION_FLAGS: FlagSpec[] = [{ name: 'max-ttl', kind: 'duration', default: '2160h', help: "svid-ca's --max-ttl" }];

function planRotation(argv: string[], out: Out): number {
  const { values, positionals } = parseFlags(PLAN_ROTATION_FLAGS, argv, {}, { allowPositionals: true });
  if (positionals.length !== 2) throw new ConfigError('cacerts plan-rotation: give OLD_DIR and NEW_DIR');
  const [oldDir, newDir] = positionals as [string, string];
  const oldB = loadCacerts(oldDir);
  const newB = loadCacerts(newDir);
  const roots = compareRoots(oldB, newB);
  const wait = formatGoDuration(values.get('max-ttl') as number);
  const named = (c: LoadedCertificate) => `${subjectText(c.x509) || '(empty subject)'} (SKI ${skiHex(c)})`;
  const only = (a: SigningBundle, b: SigningBundle) => a.roots.filter((r) => !b.roots.some((o) => o.der.equals(r.der))).map(named);
  out(`current: ${named(oldB.signingCert)} (expires ${oldB.notAfter.toISOString()})`);
  out(`next:    ${named(newB.signingCert)} (expires ${newB.notAfter.toISOString()})`);
  out(`roots now:  ${oldB.roots.map(named).join('; ')}`);
  out(`roots next: ${newB.roots.map(named).join('; ')}`);
  // issue #16: the CRLs of both folders, and whether the next one revokes the current intermediate.
  for (const [when, b] of [['now', oldB], ['next', newB]] as const) {
    out(`CRLs ${when}:${b.crls.length === 0 ? ' none' : ''}`);
    for (const crl of b.crls) for (const line of describeCrl(crl, new Date())) out(line);
  }
  // crl-safety: a CRL that goes back or forgets a revocation is refused before any step is printed.
  if (crlContinuity(oldB, newB, oldDir, newDir, out) !== 0) {
    out(`plan-rotation: no steps printed; fix ${join(newDir, 'ca-crl.pem')} first`);
    return 1;
  }
  const revokedNow = revocationOf(oldB.signingCert.x509, newB.crls);
  if (revokedNow) out(`note: the next CRL revokes the current signer (${describeRevocation(oldB.signingCert.x509, revokedNow)}): clients that check CRLs refuse leaves issued under it once the CRL is published`);
  if (roots.shared > 0 && roots.added.length === 0) {
    out('\nThe roots do not change: this is an intermediate rotation, one step.');
    out(`1. ${applySecretCommand(newDir)}`);
    out('   check: svid-ca logs "signing bundle reloaded" with the new signer within --reload-interval (plus kubelet sync, up to ~1 min);');
    out('          svid_ca_cert_expiry_timestamp_seconds{role="signer"} shows the new serial; the audit log\'s signerSki changes.');
    out(
      revokedNow
        ? '   rollback: do not apply the old folder again: its signer is the certificate this CRL revokes; if the new folder fails, fix forward with another new intermediate and this CRL.'
        : '   rollback: apply the old folder again; leaves from either intermediate verify against the same root.',
    );
    return 0;
  }
  out(`\nThe root changes (added: ${only(newB, oldB).join('; ') || 'none'}; removed: ${only(oldB, newB).join('; ') || 'none'}). Four steps, in order:`);
  out(`1. Add the new root everywhere, still signing with the old intermediate:`);
  out(`     svid-ca cacerts bundle ${oldDir} ${newDir} --signer old --out step1`);
  out(`     ${applySecretCommand('step1', false, { withCrl: oldB.crls.length > 0 })}`);
  out('   check: "signing bundle reloaded" with rootsAdded; every namespace\'s istio-ca-root-cert ConfigMap holds both roots;');
  out('          sidecars pick up the bundle at their next renewal (half their certificate life).');
  out(`2. Wait until every workload has renewed at least once: at least the longest lifetime issued (--max-ttl ${wait}; with`);
  out('   the default 24h TTL agents renew within ~12h). Check: no leaf issued before step 1 is still in use.');
  out(`3. Switch to the new intermediate, keeping both roots:`);
  out(`     svid-ca cacerts bundle ${oldDir} ${newDir} --signer new --out step3`);
  out(`     ${applySecretCommand('step3', false, { withCrl: newB.crls.length > 0 })}`);
  out('   check: "signing bundle reloaded" with the new signer; mTLS between old and new leaves still works (both roots trusted).');
  out(`4. After another full renewal period (${wait} at most), remove the old root: apply ${newDir} itself:`);
  out(`     ${applySecretCommand(newDir)}`);
  out('   check: "signing bundle reloaded" with rootsRemoved; svid_ca_cert_expiry_timestamp_seconds{role="root"} lists only the new root.');
  out('Rollback at any step: apply the previous step\'s folder. svid-ca refuses a bundle that shares no root with the current one');
  out('(which would break every workload trusting only the old root) unless it runs with --allow-root-replacement.');
  return 0;
}

/** The file variant's flags, then those of the token variant (issue #17) it lacks: one table for --help and the docs. */
const withTokenFlags = (file: readonly FlagSpec[], token: readonly FlagSpec[]): FlagSpec[] => [...file, ...token.filter((t) => !file.some((f) => f.name === t.name))];

/** Each subcommand: what it does (one line), its arguments, its flags, and the code. */
export const CACERTS_COMMANDS: Record<string, { summary: string; usage: string; flags: readonly FlagSpec[]; run: (argv: string[], out: Out) => number }> = {
  'init-root': { summary: 'make an offline root CA (root-cert.pem, root-key.pem)', usage: '--out DIR', flags: INIT_ROOT_FLAGS, run: initRoot },
  'init-intermediate': { summary: 'make a cacerts folder (Istio layout) signed by a root from init-root', usage: '--root DIR --out DIR', flags: withTokenFlags(INIT_INTERMEDIATE_FLAGS, INIT_INTERMEDIATE_TOKEN_FLAGS), run: initIntermediate },
  verify: { summary: 'check a cacerts folder exactly as serve does', usage: 'DIR', flags: withTokenFlags(VERIFY_FLAGS, VERIFY_TOKEN_FLAGS), run: verify },
  bundle: { summary: 'write a root-rotation transition folder (both roots, one intermediate)', usage: 'OLD_DIR NEW_DIR --out DIR --signer old|new', flags: BUNDLE_FLAGS, run: bundle },
  'plan-rotation': { summary: 'print the ordered rotation steps from one cacerts folder to another', usage: 'OLD_DIR NEW_DIR', flags: PLAN_ROTATION_FLAGS, run: planRotation },
  crl: { summary: 'make or renew the CRL of a root or intermediate (ca-crl.pem), signed with its key', usage: '--issuer DIR --out FILE [--revoke CERT.pem ...]', flags: CRL_FLAGS, run: crlCommand },
};

/** Each `svid-ca cacerts` subcommand's flags, for generated documentation (scripts/docs-config.mjs). */
export const CACERTS_FLAGS: Readonly<Record<string, readonly FlagSpec[]>> = Object.fromEntries(Object.entries(CACERTS_COMMANDS).map(([sub, c]) => [sub, c.flags]));

/** `svid-ca cacerts SUB --help`: usage line and flag table with defaults. */
export function cacertsCommandHelp(sub: string): string | undefined {
  const c = CACERTS_COMMANDS[sub];
  return c && `svid-ca cacerts ${sub} ${c.usage}: ${c.summary}\n\nflags:\n${flagHelp(c.flags)}\n`;
}

const wantsHelp = (argv: readonly string[]) => argv.includes('--help') || argv.includes('-h');

export function runCacertsCommand(argv: string[], out: Out = (l) => process.stdout.write(l + '\n')): number {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || (sub === 'help' && !rest[0])) {
    out(CACERTS_USAGE.trimEnd());
    return 0;
  }
  if (sub === 'help' || wantsHelp(rest)) {
    const topic = sub === 'help' ? rest[0]! : sub;
    const text = cacertsCommandHelp(topic);
    if (!text) throw new ConfigError(`cacerts: unknown command "${topic}"\n${CACERTS_USAGE}`);
    out(text.trimEnd());
    return 0;
  }
  const cmd = CACERTS_COMMANDS[sub];
  if (!cmd) throw new ConfigError(`cacerts: unknown command "${sub}"\n${CACERTS_USAGE}`);
  try {
    return cmd.run(rest, out);
  } catch (err) {
    if (err instanceof BundleError) {
      out(`REJECTED: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
