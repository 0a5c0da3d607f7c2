/** `svid-ca cacerts ...`: the operator's rotation tooling, run as the real command on real folders. */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCacerts } from '../src/ca/index.js';
import { decodePem, inspectCertificate } from '../src/pki/index.js';
import { makeIntermediate, makeRoot, opensslVerify, removeDir, tempDir, writeCacerts } from './helpers/pki.js';
import { createTestIssuer } from './helpers/server.js';
import { opensslCa, opensslVerdict, STDEXT } from './helpers/openssl-ca.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';

const work = tempDir('svid-ca-cacerts-cli-');
afterAll(() => removeDir(work));
const cli = (...args: string[]) => spawnSync(process.execPath, ['dist/cli.js', 'cacerts', ...args], { encoding: 'utf8', timeout: 30_000 });

describe('init-root and init-intermediate', () => {
  it('make a cacerts folder that verifies, with private keys at mode 0600', () => {
    const r = cli('init-root', '--out', join(work, 'root'), '--key', 'ec-p384', '--org', 'Example Corp');
    expect(r.status).toBe(0);
    const i = cli('init-intermediate', '--root', join(work, 'root'), '--out', join(work, 'cacerts'), '--cluster', 'east', '--ttl', '720h');
    expect(i.status).toBe(0);
    expect(i.stdout).toContain('kubectl create secret generic cacerts');
    expect(i.stdout).toContain('OK: svid-ca serve would accept');
    expect(statSync(join(work, 'root', 'root-key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(join(work, 'cacerts', 'ca-key.pem')).mode & 0o777).toBe(0o600);
    const b = loadCacerts(join(work, 'cacerts'));
    expect(b.signingCert.x509.subject).toContain('CN=svid-ca intermediate east');
    expect(b.signingCert.x509.subject).toContain('O=Example Corp');
    const cacerts = (f: string) => readFileSync(join(work, 'cacerts', f), 'utf8');
    expect(opensslVerify(cacerts('root-cert.pem'), [], cacerts('ca-cert.pem'))).toContain('OK');
    expect(Math.round((b.notAfter.getTime() - Date.now()) / 86_400_000)).toBe(30);
  });

  it('refuses a bad --key and a missing --out with exit 2', () => {
    expect(cli('init-root', '--out', join(work, 'x'), '--key', 'dsa').status).toBe(2);
    expect(cli('init-root').status).toBe(2);
  });
});

describe('verify agrees with serve', () => {
  const root = makeRoot({ notBefore: new Date(Date.now() - 86_400_000) });
  const signer = makeIntermediate(root);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const bundles: Record<string, () => string> = {
    'good Istio layout': () => writeCacerts(tempDir(), { signer, roots: [root] }),
    'good TLS layout': () => writeCacerts(tempDir(), { signer, roots: [root], layout: 'kubernetes-tls' }),
    'good two-level chain': () => {
      const mid = makeIntermediate(root);
      return writeCacerts(tempDir(), { signer: makeIntermediate(mid), intermediates: [mid], roots: [root] });
    },
    'key mismatch': () => writeCacerts(tempDir(), { signer, roots: [root], keyPem: makeIntermediate(root).keyPem }),
    'not a CA': () => writeCacerts(tempDir(), { signer: makeIntermediate(root, { ca: false }), roots: [root] }),
    'foreign root': () => {
      const d = writeCacerts(tempDir(), { signer, roots: [makeRoot()] });
      writeFileSync(join(d, 'cert-chain.pem'), signer.certPem);
      return d;
    },
    'expired signer': () => writeCacerts(tempDir(), { signer: makeIntermediate(root, { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) }), roots: [root] }),
    'half-written cert': () => {
      const d = writeCacerts(tempDir(), { signer, roots: [root] });
      writeFileSync(join(d, 'ca-cert.pem'), signer.certPem.slice(0, 100));
      return d;
    },
    'missing key': () => {
      const d = writeCacerts(tempDir(), { signer, roots: [root] });
      rmSync(join(d, 'ca-key.pem'));
      return d;
    },
    'encrypted key': () => writeCacerts(tempDir(), { signer, roots: [root], keyPem: privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }).toString() }),
  };

  it.each(Object.keys(bundles))('%s', (name) => {
    const dir = bundles[name]!();
    let serveAccepts = true;
    let reason = '';
    try {
      loadCacerts(dir);
    } catch (err) {
      serveAccepts = false;
      reason = (err as Error).message;
    }
    const r = cli('verify', dir);
    expect(r.status).toBe(serveAccepts ? 0 : 1);
    if (serveAccepts) expect(r.stdout).toContain('OK: svid-ca serve would accept');
    else expect(r.stdout).toContain(`REJECTED: ${reason}`);
    expect(name.startsWith('good')).toBe(serveAccepts);
    removeDir(dir);
  });

  it('and the real serve process agrees on a good and a bad folder', async () => {
    const issuer = await createTestIssuer(tempDir());
    const bad = bundles['key mismatch']!();
    const serveBad = spawnSync(process.execPath, ['dist/cli.js', 'serve', '--cacerts', bad, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0'], { encoding: 'utf8', timeout: 20_000 });
    expect(serveBad.status).toBe(1);
    expect(cli('verify', bad).status).toBe(1);
    const good = bundles['good Istio layout']!();
    const port = await freePort();
    const serve = startCli(['serve', '--cacerts', good, '--jwt-issuer', issuer.issuer, '--jwks-file', issuer.jwksFile, '--listen', '127.0.0.1:0', '--monitoring-listen', `127.0.0.1:${port}`]);
    await waitForStatus(`http://127.0.0.1:${port}/readyz`);
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toBe(0);
    expect(cli('verify', good).status).toBe(0);
  });

  it('--at checks as of another time', () => {
    const dir = bundles['good Istio layout']!();
    expect(cli('verify', dir, '--at', new Date(Date.now() + 30 * 86_400_000).toISOString()).status).toBe(0);
    const later = cli('verify', dir, '--at', new Date(Date.now() + 400 * 86_400_000).toISOString());
    expect(later.status).toBe(1);
    expect(later.stdout).toMatch(/expired at/);
    expect(cli('verify', dir, '--at', 'tomorrow').status).toBe(2);
  });

  it('a folder with the certificate but no key file points at --signing-key (a key in a PKCS#11 token); either layout', () => {
    for (const [layout, keyFile] of [['good Istio layout', 'ca-key.pem'], ['good TLS layout', 'tls.key']] as const) {
      const dir = bundles[layout]!();
      rmSync(join(dir, keyFile));
      const r = cli('verify', dir);
      expect(r.status, layout).toBe(1);
      expect(r.stdout.trim(), layout).toBe(`REJECTED: ${join(dir, keyFile)}: file is missing (if the key is in a PKCS#11 token, give --signing-key URI)`);
    }
    // Without the certificate either, the certificate is what is missing: no word about the key.
    const bare = bundles['good Istio layout']!();
    rmSync(join(bare, 'ca-key.pem'));
    rmSync(join(bare, 'ca-cert.pem'));
    expect(cli('verify', bare).stdout.trim()).toBe(`REJECTED: ${join(bare, 'ca-cert.pem')}: file is missing`);
  });
});

describe('bundle and plan-rotation', () => {
  const oldRoot = makeRoot({ cn: 'old root' });
  const newRoot = makeRoot({ cn: 'new root' });
  const oldInt = makeIntermediate(oldRoot, { cn: 'old intermediate' });
  const newInt = makeIntermediate(newRoot, { cn: 'new intermediate' });
  const oldDir = writeCacerts(join(work, 'old'), { signer: oldInt, roots: [oldRoot] });
  const newDir = writeCacerts(join(work, 'new'), { signer: newInt, roots: [newRoot] });

  it('bundle writes the transition folder: the chosen intermediate, old + new roots', () => {
    for (const signer of ['old', 'new'] as const) {
      const out = join(work, `step-${signer}`);
      const r = cli('bundle', oldDir, newDir, '--out', out, '--signer', signer);
      expect(r.status).toBe(0);
      const b = loadCacerts(out);
      expect(b.roots.map((c) => c.x509.subject)).toEqual([oldRoot.cert.subject, newRoot.cert.subject]);
      expect(b.signingCert.x509.fingerprint256).toBe((signer === 'old' ? oldInt : newInt).cert.fingerprint256);
      expect(decodePem(readFileSync(join(out, 'root-cert.pem'), 'utf8'))).toHaveLength(2);
    }
  });

  it('bundle refuses a transition folder serve would refuse, and writes nothing (no key left behind)', () => {
    // Made by openssl: an intermediate limited to serverAuth, under which every SVID fails client verification.
    const ekuRoot = opensslCa(work, 'bundle eku root', STDEXT, undefined, { days: 3650 });
    const ekuInt = opensslCa(work, 'bundle eku intermediate', [...STDEXT, 'extendedKeyUsage=serverAuth'], ekuRoot);
    expect(opensslVerdict(ekuInt, [ekuInt.certPem], ekuRoot.certPem)).toMatch(/unsuitable certificate purpose/);
    const badDir = join(work, 'bundle-eku');
    mkdirSync(badDir, { recursive: true });
    writeFileSync(join(badDir, 'ca-cert.pem'), ekuInt.certPem);
    writeFileSync(join(badDir, 'ca-key.pem'), ekuInt.keyPem, { mode: 0o600 });
    writeFileSync(join(badDir, 'cert-chain.pem'), ekuInt.certPem + ekuRoot.certPem);
    writeFileSync(join(badDir, 'root-cert.pem'), ekuRoot.certPem);
    const out = join(work, 'bundle-eku-out');
    const r = cli('bundle', oldDir, badDir, '--out', out, '--signer', 'new');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^REJECTED: .*extended key usage to serverAuth/m);
    expect(r.stdout).not.toMatch(/wrote the transition bundle/);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  });

  it('plan-rotation prints the four ordered steps for a root change, one for an intermediate change', () => {
    const plan = cli('plan-rotation', oldDir, newDir, '--max-ttl', '24h');
    expect(plan.status).toBe(0);
    const steps = ['1. Add the new root everywhere', '2. Wait until every workload has renewed', '3. Switch to the new intermediate', '4. After another full renewal period'];
    let at = -1;
    for (const s of steps) {
      const i = plan.stdout.indexOf(s);
      expect(i).toBeGreaterThan(at);
      at = i;
    }
    expect(plan.stdout).toContain('24h0m0s');
    const sameRoot = writeCacerts(join(work, 'same-root'), { signer: makeIntermediate(oldRoot, { cn: 'next intermediate' }), roots: [oldRoot] });
    const simple = cli('plan-rotation', oldDir, sameRoot);
    expect(simple.stdout).toContain('intermediate rotation, one step');
  });
});

describe('never destroys, defaults to the safe choice (issue #13)', () => {
  it('init-root refuses to overwrite; --force replaces certificates only; --force-key the key too', () => {
    const dir = join(work, 'safe-root');
    expect(cli('init-root', '--out', dir).status).toBe(0);
    const key = readFileSync(join(dir, 'root-key.pem'), 'utf8');
    const again = cli('init-root', '--out', dir);
    expect(again.status).toBe(2);
    expect(again.stderr.trim()).toBe(`svid-ca: --out: ${dir} already holds the private key root-key.pem; refusing to overwrite it (that destroys the key: move it away first, or add --force-key)`);
    expect(cli('init-root', '--out', dir, '--force').status).toBe(2);
    expect(readFileSync(join(dir, 'root-key.pem'), 'utf8')).toBe(key);
    const forced = cli('init-root', '--out', dir, '--force-key', '--subject', 'O=Example Corp,CN=mesh root 2026');
    expect(forced.status).toBe(0);
    expect(readFileSync(join(dir, 'root-key.pem'), 'utf8')).not.toBe(key);
    expect(statSync(join(dir, 'root-key.pem')).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(readFileSync(join(dir, 'root-cert.pem'))).subject).toBe('O=Example Corp\nCN=mesh root 2026');
    expect(forced.stdout).toMatch(/SKI [0-9a-f]{40}/);
    // No temporary files are left behind.
    expect(readdirSync(dir).sort()).toEqual(['root-cert.pem', 'root-key.pem']);
  });

  it('init-intermediate: refuses a folder holding a certificate unless --force; --cn/--org; prints the apply form', () => {
    const rootDir = join(work, 'safe-root2');
    expect(cli('init-root', '--out', rootDir).status).toBe(0);
    const dir = join(work, 'safe-int');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'cert-chain.pem'), 'operator notes\n');
    const refused = cli('init-intermediate', '--root', rootDir, '--out', dir);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain(`--out: ${dir} already holds cert-chain.pem; refusing to overwrite (choose an empty folder, or add --force)`);
    expect(readFileSync(join(dir, 'cert-chain.pem'), 'utf8')).toBe('operator notes\n');
    const ok = cli('init-intermediate', '--root', rootDir, '--out', dir, '--force', '--cn', 'east 2026', '--org', 'Example Corp');
    expect(ok.status).toBe(0);
    expect(loadCacerts(dir).signingCert.x509.subject).toBe('O=Example Corp\nCN=east 2026');
    expect(ok.stdout).toContain('--dry-run=client -o yaml | kubectl apply -f -');
    // Its key is now there: replacing it needs --force-key even with --force.
    expect(cli('init-intermediate', '--root', rootDir, '--out', dir, '--force').status).toBe(2);
    expect(cli('init-intermediate', '--root', rootDir, '--out', dir, '--subject', 'CN=x,L=y').stderr).toContain('--subject: invalid value');
  });

  it('the printed kubectl command is valid for kubectl (client-side dry run renders a Secret)', () => {
    const rootDir = join(work, 'safe-root3');
    expect(cli('init-root', '--out', rootDir).status).toBe(0);
    const dir = join(work, 'kubectl-int');
    const out = cli('init-intermediate', '--root', rootDir, '--out', dir).stdout;
    const command = /kubectl create secret generic cacerts[^]*?\| kubectl apply -f -/.exec(out)![0].replace(/\\\n\s*/g, '');
    const create = command.split(' | ')[0]!.split(/\s+/);
    const r = spawnSync(create[0]!, create.slice(1), { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('kind: Secret');
    expect(r.stdout).toContain('ca-key.pem:');
  });

  it('bundle: --signer is required and the message says which step wants which', () => {
    const root = makeRoot({ cn: 'r' });
    const a = writeCacerts(join(work, 'sig-a'), { signer: makeIntermediate(root), roots: [root] });
    const other = makeRoot({ cn: 'r2' });
    const b = writeCacerts(join(work, 'sig-b'), { signer: makeIntermediate(other), roots: [other] });
    const r = cli('bundle', a, b, '--out', join(work, 'sig-out'));
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--signer: required: old for step 1 of a root rotation');
    expect(r.stderr).toContain('new for step 3');
    expect(existsSync(join(work, 'sig-out'))).toBe(false);
    expect(cli('bundle', a, b, '--out', join(work, 'sig-out'), '--signer', 'old').status).toBe(0);
    expect(cli('bundle', a, b, '--out', join(work, 'sig-out'), '--signer', 'new').status).toBe(2);
  });

  it('plan-rotation names the roots by subject and SKI', () => {
    const oldRoot = makeRoot({ cn: 'plan old root' });
    const newRoot = makeRoot({ cn: 'plan new root' });
    const a = writeCacerts(join(work, 'plan-a'), { signer: makeIntermediate(oldRoot), roots: [oldRoot] });
    const b = writeCacerts(join(work, 'plan-b'), { signer: makeIntermediate(newRoot), roots: [newRoot] });
    const plan = cli('plan-rotation', a, b).stdout;
    const ski = (c: X509Certificate) => inspectCertificate(Buffer.from(c.raw)).subjectKeyId!.toString('hex');
    expect(plan).toContain(`added: O=svid-ca test, CN=plan new root (SKI ${ski(newRoot.cert)})`);
    expect(plan).toContain(`removed: O=svid-ca test, CN=plan old root (SKI ${ski(oldRoot.cert)})`);
    expect(plan).toContain('--signer old --out step1');
  });

  it('every subcommand answers --help and help SUB with its flags and defaults', () => {
    for (const sub of ['init-root', 'init-intermediate', 'verify', 'bundle', 'plan-rotation']) {
      const a = cli(sub, '--help');
      expect(a.status).toBe(0);
      expect(a.stdout).toContain(`svid-ca cacerts ${sub}`);
      expect(cli('help', sub).stdout).toBe(a.stdout);
    }
    expect(cli('init-root', '--help').stdout).toContain('--ttl DUR\n      root lifetime (10 years) (default 87600h)');
  });
});
