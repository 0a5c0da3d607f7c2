import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { IssuerFolderError, ISTIO_FILES, loadCacerts, loadIssuerSigner } from '../ca/index.js';
import { ConfigError, parseFlags, type FlagSpec } from '../flags.js';
import {
  BundleError,
  CRL_REASONS,
  crlIssuerName,
  crlIssuerOf,
  crlLabel,
  decodePem,
  inspectCertificate,
  loadCrls,
  serialHexOf,
  signCrl,
  subjectText,
  type CrlReason,
  type LoadedCrl,
  type RevokedEntry,
  type Signer,
} from '../pki/index.js';
import { TOKEN_FLAGS, tokenSource } from './cacerts-token.js';
import { writeFolder } from './safe-write.js';

/**
 * Issue #16: `svid-ca cacerts crl`, making or renewing the CRL of a CA (root or intermediate), and
 * how the cacerts commands print CRLs. Kept apart from cacerts.ts, which lists the command.
 */

type Out = (line: string) => void;

const REASONS = CRL_REASONS.filter((r) => r !== '');

export const CRL_FLAGS: FlagSpec[] = [
  { name: 'issuer', kind: 'string', help: 'folder of the CA that signs the CRL: an init-root folder (root-cert.pem, root-key.pem) or a cacerts folder (Istio or Kubernetes TLS layout); with --signing-key, its certificate only' },
  { name: 'out', kind: 'string', help: "CRL file to write (e.g. cacerts/ca-crl.pem), which may hold the CRLs of several CAs: the --issuer's CRL in it is renewed in place (its revocations kept, its CRL number up by one), or added when it has none; the other CRLs are kept as they are" },
  { name: 'revoke', kind: 'list', help: 'certificate file(s) (PEM) the issuer signed, to add to the CRL; repeat the flag or separate with commas' },
  { name: 'reason', kind: 'string', help: `CRL reason code of the certificates of this --revoke: ${REASONS.join(', ')} (default: none, as RFC 5280 advises instead of unspecified)` },
  { name: 'unrevoke', kind: 'list', help: 'serial number(s) (hex, as openssl and cacerts verify print them) to take off the CRL when renewing it' },
  { name: 'next-update', kind: 'duration', default: '720h', help: 'nextUpdate of the CRL from now: renew it before then (alert SvidCaCrlNextUpdateWithin7Days)' },
  // crl-safety: a new CRL file continues the issuer's CRL in use; a retired CA's CRL is dropped by a command.
  { name: 'from', kind: 'string', help: "the ca-crl.pem in use (e.g. current/ca-crl.pem): when --out has no CRL of --issuer, or an older one, the issuer's CRL in this file is renewed instead (its revocations kept, its CRL number up by one), so a CRL started in a new folder never goes back in number or forgets a revocation; only the --issuer's CRL is taken from it; when --out holds a CRL of --issuer too, the new CRL revokes every serial of both (number: the higher plus one). The file must be readable: when no CRL is in use, leave out --from" },
  { name: 'drop-issuer', kind: 'string', help: "take the CRL of this CA (its subject as cacerts verify prints it, e.g. 'O=svid-ca, CN=old intermediate', or its SKI in hex) out of --out: for the CRL of an intermediate the folder no longer uses; without --issuer, nothing is signed; one CA per run" },
  { name: 'signing-key', kind: 'string', help: "PKCS#11 URI of the issuer's key: sign on the token (issue #17 folders hold only the certificate)" },
  ...TOKEN_FLAGS,
];

/** The --issuer folder's signer (ca/ loadIssuerSigner; with --signing-key, the key on the token); a bad folder is a bad --issuer (exit 2). */
function issuerSigner(dir: string, values: Map<string, unknown>): { cert: X509Certificate; signer: Signer; close(): void } {
  const uri = values.get('signing-key') as string | undefined;
  const source = uri !== undefined ? tokenSource(uri, values) : undefined;
  try {
    const { certificate, signer } = loadIssuerSigner(dir, source);
    return { cert: certificate, signer, close: () => source?.close() };
  } catch (err) {
    source?.close();
    if (err instanceof IssuerFolderError) throw new ConfigError(`--issuer: ${err.message}`);
    throw err;
  }
}

/** A serial typed or printed as hex (any case, optional 0x and colons) in the CRL's form. */
function serialOf(text: string): string {
  let hex = text.replace(/^0x/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]+$/.test(hex)) throw new ConfigError(`--unrevoke: invalid value "${text}" (want a serial number in hex)`);
  if (hex.length % 2) hex = `0${hex}`;
  return serialHexOf(Buffer.from(hex, 'hex'));
}

const issuerCandidate = (cert: X509Certificate) => ({ x509: cert, der: Buffer.from(cert.raw), facts: inspectCertificate(Buffer.from(cert.raw)) });

/** Lines describing a CRL: issuer, number, this/next update, revoked serials (verify, plan-rotation, crl). */
export function describeCrl(crl: LoadedCrl, at: Date): string[] {
  const next = crl.nextUpdate ? `${crl.nextUpdate.toISOString()}${crl.nextUpdate <= at ? '  (STALE: past nextUpdate; still used)' : ''}` : '(none)';
  const lines = [`  crl          issuer ${crl.issuer}, number ${crl.number ?? 'none'}`, `               this update ${crl.thisUpdate.toISOString()}  next update ${next}`];
  if (crl.revoked.length === 0) lines.push('               revokes nothing');
  for (const r of crl.revoked) lines.push(`               revoked serial ${r.serialHex}${r.reason ? ` (${r.reason})` : ''} since ${r.revocationDate.toISOString()}`);
  return lines;
}

/** A CRL file as `cacerts crl` renews it: its text, and the issuer's block in it (its span and the checked CRL). */
interface CrlFile {
  text: string;
  /** The span of --issuer's CRL block (with its line end), when the file has one. */
  span?: { start: number; end: number } | undefined;
  previous?: LoadedCrl | undefined;
  /** How many CRLs of other issuers the file holds (kept byte for byte). */
  others: number;
}

const PEM_BLOCK_SPAN = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----\r?\n?/g;

/**
 * The CRL file at `file` (issue #16: one ca-crl.pem holds a CRL per CA of the chain): every block must be an
 * X509 CRL; at most one of them is the issuer's (by issuer name), and that one is checked (signature by the
 * issuer's key) to be renewed. Blocks of other issuers are not checked here: they are kept as they are.
 */
function crlFile(file: string, text: string, issuer: X509Certificate, now: Date): CrlFile {
  const issuerName = inspectCertificate(Buffer.from(issuer.raw)).subjectDer;
  const notRenewable = (why: string) => new ConfigError(`--out: ${file} is not one CRL of ${subjectText(issuer)} to renew (${why}); choose another --out, or move it away`);
  const spans = [...text.matchAll(PEM_BLOCK_SPAN)];
  if (spans.length === 0 && text.trim() !== '') throw notRenewable('no PEM X509 CRL block found');
  const mine: { index: number; start: number; end: number; blockText: string }[] = [];
  for (const [i, m] of spans.entries()) {
    if (m[1] !== 'X509 CRL') throw notRenewable(`it holds a PEM ${m[1]} block; a CRL file holds only X509 CRL blocks`);
    let name: Buffer;
    try {
      const der = decodePem(m[0])[0]?.der;
      if (!der) throw new Error('its body is not base64');
      name = crlIssuerName(der);
    } catch (err) {
      throw notRenewable(`CRL #${i + 1} cannot be parsed (${(err as Error).message})`);
    }
    if (name.equals(issuerName)) mine.push({ index: i + 1, start: m.index, end: m.index + m[0].length, blockText: m[0] });
  }
  if (mine.length > 1) {
    throw new ConfigError(`--out: ${file} holds ${mine.length} CRLs of ${subjectText(issuer)} (CRL #${mine.map((b) => b.index).join(', #')}); a CA has one CRL in ca-crl.pem: delete all but the newest from the file, then run again`);
  }
  const others = spans.length - mine.length;
  const block = mine[0];
  if (!block) return { text, others };
  try {
    const [previous] = loadCrls({ name: file, text: block.blockText }, [issuerCandidate(issuer)], now);
    return { text, span: { start: block.start, end: block.end }, previous, others };
  } catch (err) {
    // loadCrls speaks of a cacerts folder; here the only candidate issuer is --issuer.
    const why = err instanceof BundleError ? err.problem.replace(/; the certificates and key.*$/, '').replace(/^CRL #1 /, `CRL #${block.index} `) : (err as Error).message;
    throw notRenewable(why);
  }
}

const numberOf = (crl: LoadedCrl) => (crl.number === undefined ? -1n : BigInt(crl.number));

/**
 * The --issuer's CRL in the --from file (checked like --out's), or undefined when the file has none.
 * crl-safety2: a --from that cannot be read (missing, a typo, no permission) is a ConfigError (exit 2): starting
 * at number 1 instead would silently lose the revocations in use.
 */
function previousFrom(from: string, issuer: X509Certificate, now: Date, out: Out): LoadedCrl | undefined {
  let text: string;
  try {
    text = readFileSync(from, 'utf8');
  } catch (err) {
    throw new ConfigError(`--from: cannot read ${from} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); if the folder in use has no ca-crl.pem, leave out --from`);
  }
  let previous: LoadedCrl | undefined;
  try {
    previous = crlFile(from, text, issuer, now).previous;
  } catch (err) {
    // crlFile words its refusals for --out; here the file is --from's.
    if (err instanceof ConfigError) throw new ConfigError(err.message.replace(/^--out: /, '--from: ').replace(/; choose another --out, or move it away$/, '; give the ca-crl.pem in use of this issuer'));
    throw err;
  }
  out(previous ? `--from ${from}: continuing ${crlLabel(previous)}` : `--from ${from} holds no CRL of ${subjectText(issuer)}: the CRL starts at number 1`);
  return previous;
}

/**
 * crl-safety2: the revocations of the issuer's CRL in --out and of its CRL in --from, as one list (the newer CRL's
 * entries first, then the other's serials it lacks), and lines saying where each serial came from. Both CRLs are the
 * issuer's (name and key checked by crlFile), so a serial either one revokes stays revoked (RFC 5280 5: a CRL
 * lists every unexpired revoked certificate of its issuer); taking one off is --unrevoke's job.
 */
function unionOf(inOut: LoadedCrl, inFrom: LoadedCrl, file: string, from: string): { revoked: RevokedEntry[]; lines: string[] } {
  const [newer, older] = numberOf(inFrom) > numberOf(inOut) ? [inFrom, inOut] : [inOut, inFrom];
  const revoked = [...newer.revoked, ...older.revoked.filter((r) => !newer.revoked.some((n) => n.serialHex === r.serialHex))];
  const where = (serial: string) => {
    const a = inOut.revoked.some((r) => r.serialHex === serial);
    const b = inFrom.revoked.some((r) => r.serialHex === serial);
    return a && b ? `both` : a ? `from --out ${file}` : `from --from ${from}`;
  };
  const lines = [`merged the two CRLs of "${inOut.issuer}": number ${inOut.number ?? 'none'} in --out ${file} and number ${inFrom.number ?? 'none'} in --from ${from}; the new CRL revokes every serial of both:`];
  for (const r of revoked) lines.push(`  serial ${r.serialHex}${r.reason ? ` (${r.reason})` : ''}: ${where(r.serialHex)}`);
  return { revoked, lines };
}

/**
 * crl-safety2: the CRLs of `issuer` in the ca-crl.pem of the folders beside --out's (`<parent>/<folder>/ca-crl.pem`;
 * for an --out not named ca-crl.pem, of the folders in --out's folder), as `path` and CRL: where a CRL of the issuer
 * may be in use. Files that cannot be read or hold no checked CRL of the issuer are passed over (this is a hint).
 */
function crlsBeside(file: string, issuer: X509Certificate, now: Date): { path: string; crl: LoadedCrl }[] {
  const parent = basename(file) === 'ca-crl.pem' ? dirname(dirname(file)) : dirname(file);
  const found: { path: string; crl: LoadedCrl }[] = [];
  let entries: string[];
  try {
    entries = readdirSync(parent, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch {
    return found;
  }
  for (const entry of entries) {
    const path = join(parent, entry, 'ca-crl.pem');
    if (resolve(path) === resolve(file) || !existsSync(path)) continue;
    try {
      const crl = crlFile(path, readFileSync(path, 'utf8'), issuer, now).previous;
      if (crl) found.push({ path, crl });
    } catch {
      // not a CRL file of this issuer: nothing to hint at
    }
  }
  return found;
}

/** `text` without the CRL blocks whose issuer subject or authorityKeyIdentifier matches one of `drops`; each drop must match a block. */
function dropIssuers(file: string, text: string, drops: string[], out: Out): string {
  const blocks = [...text.matchAll(PEM_BLOCK_SPAN)].map((m) => {
    const der = decodePem(m[0])[0]?.der;
    let who: { subject: string; keyId: string | undefined } | undefined;
    try {
      who = der && m[1] === 'X509 CRL' ? crlIssuerOf(der) : undefined;
    } catch {
      who = undefined;
    }
    return { m, who };
  });
  const norm = (v: string) => v.replace(/\s*,\s*/g, ', ').trim();
  const hex = (v: string) => v.replace(/:/g, '').toLowerCase();
  let kept = text;
  for (const drop of drops) {
    const hits = blocks.filter((b) => b.who && (norm(b.who.subject) === norm(drop) || (b.who.keyId !== undefined && b.who.keyId === hex(drop))));
    if (hits.length === 0) {
      const held = blocks.map((b) => (b.who ? `"${b.who.subject}"` : '(unparsable block)')).join(', ') || 'none';
      throw new ConfigError(`--drop-issuer: ${file} holds no CRL of "${drop}" (it holds CRLs of: ${held}); give the issuer's subject as cacerts verify prints it, or its SKI in hex`);
    }
    for (const hit of hits) {
      kept = kept.replace(hit.m[0], '');
      out(`dropped the CRL of "${hit.who!.subject}" from ${file}: clients given this file no longer check that CA's revocations`);
    }
  }
  return kept;
}

/**
 * crl-safety2: when `file` is the ca-crl.pem of an Istio-layout cacerts folder (its certificates and key in files),
 * that folder is loaded as `serve` and `cacerts verify` load it, and each problem is printed as a `warning:` line:
 * the refusal verify would print, or the warnings of an accepted bundle. Only warnings (exit 0): the runbook builds
 * ca-crl.pem in steps (the root's CRL, then the intermediate's), and the file is refused until the last one.
 */
/**
 * Prints the warnings `cacerts verify` would give for the cacerts folder `file` (a ca-crl.pem) sits in, or that
 * the folder would be refused and why (for a CA of the chain without a CRL, naming it). Returns true when the
 * folder loads, which with a CRL file means every CA of the chain has a CRL in it; false when it would be
 * refused; undefined when `file` is not the ca-crl.pem of a complete Istio-layout folder.
 */
function warnAsVerifyWould(file: string, at: Date, out: Out): boolean | undefined {
  const dir = dirname(file) || '.';
  if (basename(file) !== 'ca-crl.pem' || !Object.values(ISTIO_FILES).every((f) => existsSync(join(dir, f)))) return undefined;
  try {
    for (const w of loadCacerts(dir, at).warnings) out(`warning: ${w}`);
    return true;
  } catch (err) {
    // The file is written already: any failure to load the folder is reported, never a crash after the write.
    out(`warning: as it is now, ${dir} would be refused by svid-ca serve and cacerts verify: ${(err as Error).message}`);
    return false;
  }
}

/** `file`'s text with `pem` in place of the issuer's block (others kept byte for byte, order kept), or appended. */
function withCrl(file: CrlFile, pem: string): string {
  if (file.span) return file.text.slice(0, file.span.start) + pem + file.text.slice(file.span.end);
  if (file.text.trim() === '') return pem;
  return file.text + (file.text.endsWith('\n') ? '' : '\n') + pem;
}

/**
 * `svid-ca cacerts crl --issuer DIR --out FILE [--revoke CERT.pem ...] [--reason R] [--unrevoke SERIAL ...] [--next-update DUR]`:
 * makes, or renews, a v2 CRL (RFC 5280 5) signed by the issuer folder's key (in a file or on a
 * PKCS#11 token). Renewing keeps every earlier revocation (dropping one takes --unrevoke) and
 * numbers the CRL one above the previous one, so cRLNumber increases monotonically. FILE may hold the
 * CRLs of several CAs (issue #16: ca-crl.pem needs one per CA of the chain): only the --issuer's block is
 * replaced, in place; other blocks are kept byte for byte; with none of the issuer's, the new CRL is
 * appended. Errors: ConfigError naming the flag (exit 2), nothing written.
 */
export function crlCommand(argv: string[], out: Out): number {
  const { values } = parseFlags(CRL_FLAGS, argv, {});
  const dir = values.get('issuer') as string | undefined;
  const file = values.get('out') as string | undefined;
  if (!file) throw new ConfigError('--out: a value is required');
  // One issuer per run: a subject holds commas, so the flag is no comma list.
  const dropIssuer = values.get('drop-issuer') as string | undefined;
  const drops = dropIssuer === undefined ? [] : [dropIssuer];
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  if (drops.length > 0) {
    text = dropIssuers(file, text, drops, out);
    if (!dir) {
      writeFolder(dirname(file) || '.', { [basename(file)]: text }, { force: true, forceKey: false });
      out(`wrote ${file}; check the folder with svid-ca cacerts verify before applying it`);
      warnAsVerifyWould(file, new Date(), out);
      return 0;
    }
  }
  if (!dir) throw new ConfigError('--issuer: a value is required (or --drop-issuer alone)');
  const reasonText = values.get('reason') as string | undefined;
  if (reasonText !== undefined && !REASONS.includes(reasonText as CrlReason)) throw new ConfigError(`--reason: invalid value "${reasonText}" (want one of ${REASONS.join(', ')})`);
  const now = new Date();
  const { cert, signer, close } = issuerSigner(dir, values);
  try {
    const existing = crlFile(file, text, cert, now);
    const from = values.get('from') as string | undefined;
    const inUse = from === undefined ? undefined : previousFrom(from, cert, now, out);
    // The newer of --out's and --from's CRL of the issuer is the one renewed (a CRL number never goes back).
    const previous = inUse && (!existing.previous || numberOf(inUse) > numberOf(existing.previous)) ? inUse : existing.previous;
    // crl-safety2: --out and --from each hold a CRL of the issuer: the new one revokes the union of both.
    const merged = inUse && existing.previous && !inUse.der.equals(existing.previous.der) ? unionOf(existing.previous, inUse, file, from!) : undefined;
    const carried = merged?.revoked ?? previous?.revoked ?? [];
    const unrevoke = ((values.get('unrevoke') as string[] | undefined) ?? []).map(serialOf);
    const unknown = unrevoke.filter((s) => !carried.some((r) => r.serialHex === s));
    if (unknown.length > 0) throw new ConfigError(`--unrevoke: serial ${unknown.join(', ')} is not on ${file}`);
    const revoked: RevokedEntry[] = carried.filter((r) => !unrevoke.includes(r.serialHex));
    for (const path of (values.get('revoke') as string[] | undefined) ?? []) {
      let target: X509Certificate;
      try {
        target = new X509Certificate(readFileSync(path));
      } catch (err) {
        throw new ConfigError(`--revoke: ${path} is not a readable PEM certificate (${(err as Error).message})`);
      }
      if (!target.checkIssued(cert) || !target.verify(cert.publicKey)) {
        throw new ConfigError(`--revoke: ${path} ("${subjectText(target)}") was not issued by ${subjectText(cert)}: a CRL lists only certificates its issuer signed; use the --issuer folder of its issuer`);
      }
      const serialHex = serialOf(target.serialNumber);
      if (!revoked.some((r) => r.serialHex === serialHex)) revoked.push({ serialHex, revocationDate: now, reason: reasonText as CrlReason | undefined });
    }
    const number = previous?.number === undefined ? 1n : BigInt(previous.number) + 1n;
    const pem = signCrl(
      { number, thisUpdate: now, nextUpdate: new Date(now.getTime() + (values.get('next-update') as number)), revoked, issuerKeyId: inspectCertificate(Buffer.from(cert.raw)).subjectKeyId },
      signer,
    );
    // What was signed is checked as serve will check it before it is written.
    const [crl] = loadCrls({ name: file, text: pem }, [issuerCandidate(cert)], new Date(now.getTime() + 1000));
    writeFolder(dirname(file) || '.', { [basename(file)]: withCrl(existing, pem) }, { force: true, forceKey: false });
    const kept = existing.others > 0 ? `; kept the ${existing.others} CRL(s) of other issuers in it` : '';
    out(`wrote ${file}: ${crlLabel(crl!)}${previous ? ` (renewed from number ${previous.number ?? 'none'})` : existing.others > 0 ? ' (added)' : ''}${kept}`);
    for (const line of merged?.lines ?? []) out(line);
    for (const line of describeCrl(crl!, now)) out(line);
    // crl-safety: a CRL started afresh where one is in use would un-revoke and go back in number.
    // crl-safety2: only when a folder beside --out's holds a CRL of the issuer (a brand-new CA's first CRL gets no note).
    const beside = !previous && from === undefined ? crlsBeside(file, cert, now) : [];
    if (beside.length > 0) {
      const held = beside.map((b) => `${b.path} (number ${b.crl.number ?? 'none'})`).join(', ');
      out(`note: a new CRL (number 1) of ${subjectText(cert)}, while ${held} holds a CRL of it: if that one is in use, renew it instead with --from ${beside[0]!.path}, or its revocations are lost and the number goes back`);
    }
    // A folder that loads with this file has a CRL of every CA of its chain (loadCacerts refuses one without, and the
    // warning above names the CA): only verify and apply remain. Elsewhere, the rule.
    if (warnAsVerifyWould(file, new Date(now.getTime() + 1000), out)) {
      out(`${file} holds a CRL of every CA of the chain: check the folder with svid-ca cacerts verify, and apply it`);
    } else {
      out(`${basename(file) === 'ca-crl.pem' ? '' : 'put it in the cacerts folder as ca-crl.pem (Istio layout; the Kubernetes TLS layout has no CRL file): '}it must hold a CRL of every CA of the chain (signing certificate, cert-chain.pem, root), so run svid-ca cacerts crl with the same --out once per CA; check it with svid-ca cacerts verify, and apply the folder`);
    }
    return 0;
  } finally {
    close();
  }
}
