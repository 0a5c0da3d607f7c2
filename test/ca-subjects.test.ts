/**
 * CAs made by separate `svid-ca cacerts` runs never share a default subject: the default CN carries
 * the creation date and the start of the key's SKI, so two roots (or intermediates) in one bundle
 * during a rotation can be told apart by operators and verifiers. Explicit names stay exactly as
 * given. The real command on real folders; openssl reads the subjects and verifies the chains.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeDir, tempDir } from './helpers/pki.js';
import { tool } from './helpers/tools.js';

const work = tempDir('svid-ca-ca-subjects-');
afterAll(() => removeDir(work));
const cli = (...args: string[]) => spawnSync(process.execPath, ['dist/cli.js', 'cacerts', ...args], { encoding: 'utf8', timeout: 60_000 });
const openssl = (args: string[], input?: string) => execFileSync(tool('openssl'), args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });

/** The subject as openssl prints it in RFC 2253 form ("CN=...,O=..."). */
const subjectOf = (file: string) => openssl(['x509', '-in', file, '-noout', '-subject', '-nameopt', 'RFC2253']).replace(/^subject=/, '').trim();
/** The subject key identifier as openssl prints it, lower-case hex without colons. */
const skiOf = (file: string) => /X509v3 Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(openssl(['x509', '-in', file, '-noout', '-ext', 'subjectKeyIdentifier']))![1]!.replace(/:/g, '').toLowerCase();
const today = () => new Date().toISOString().slice(0, 10);

function initRoot(name: string, ...args: string[]): string {
  const dir = join(work, name);
  const r = cli('init-root', '--out', dir, ...args);
  expect(r.status, r.stderr).toBe(0);
  return dir;
}

describe('default CA subjects', () => {
  it('two init-root runs make roots with different subjects that name the date and the SKI', () => {
    const [a, b] = [initRoot('root-a'), initRoot('root-b')];
    const [subjectA, subjectB] = [subjectOf(join(a, 'root-cert.pem')), subjectOf(join(b, 'root-cert.pem'))];
    expect(subjectA).not.toBe(subjectB);
    for (const dir of [a, b]) {
      const cert = join(dir, 'root-cert.pem');
      expect(subjectOf(cert)).toBe(`CN=svid-ca root CA ${today()} ${skiOf(cert).slice(0, 8)},O=svid-ca`);
    }
  });

  it('two init-intermediate runs make intermediates with different subjects; openssl verify of a two-root bundle picks the right root', () => {
    const roots = [initRoot('rot-old'), initRoot('rot-new')];
    const cacerts = roots.map((root, i) => {
      const out = join(work, `cacerts-${i}`);
      const r = cli('init-intermediate', '--root', root, '--out', out, '--cluster', 'east');
      expect(r.status, r.stderr).toBe(0);
      return out;
    });
    const [intA, intB] = cacerts.map((d) => join(d, 'ca-cert.pem'));
    expect(subjectOf(intA!)).not.toBe(subjectOf(intB!));
    expect(subjectOf(intA!)).toBe(`CN=svid-ca intermediate east ${today()} ${skiOf(intA!).slice(0, 8)},O=svid-ca`);
    // Both roots in one bundle, as during a root rotation: each intermediate chains to its own root.
    const bundle = join(work, 'two-roots.pem');
    writeFileSync(bundle, roots.map((r) => readFileSync(join(r, 'root-cert.pem'), 'utf8')).join(''));
    roots.forEach((root, i) => {
      const shown = openssl(['verify', '-x509_strict', '-show_chain', '-CAfile', bundle, join(cacerts[i]!, 'ca-cert.pem')]);
      expect(shown).toContain(': OK');
      const chain = [...shown.matchAll(/^depth=(\d+): (.*?)(?: \(untrusted\))?$/gm)].map((m) => m[2]);
      expect(chain).toHaveLength(2);
      const rootSubject = openssl(['x509', '-in', join(root, 'root-cert.pem'), '-noout', '-subject']).replace(/^subject=/, '').trim();
      expect(chain[1]).toBe(rootSubject);
      expect(shown).not.toContain(openssl(['x509', '-in', join(roots[1 - i]!, 'root-cert.pem'), '-noout', '-subject']).replace(/^subject=/, '').trim());
    });
  });

  it('an explicit --subject, --cn or --org is kept exactly (no suffix on a CN the operator chose)', () => {
    expect(subjectOf(join(initRoot('explicit-subject', '--subject', 'O=Example Corp,CN=mesh root 2026'), 'root-cert.pem'))).toBe('CN=mesh root 2026,O=Example Corp');
    const cnRoot = initRoot('explicit-cn', '--cn', 'my root');
    expect(subjectOf(join(cnRoot, 'root-cert.pem'))).toBe('CN=my root,O=svid-ca');
    const orgRoot = join(initRoot('explicit-org', '--org', 'Example Corp'), 'root-cert.pem');
    expect(subjectOf(orgRoot)).toBe(`CN=svid-ca root CA ${today()} ${skiOf(orgRoot).slice(0, 8)},O=Example Corp`);
    const out = join(work, 'explicit-int');
    expect(cli('init-intermediate', '--root', cnRoot, '--out', out, '--cn', 'east intermediate 2026').status).toBe(0);
    expect(subjectOf(join(out, 'ca-cert.pem'))).toBe('CN=east intermediate 2026,O=svid-ca');
  });
});
