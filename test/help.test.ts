/**
 * Errors name the flag and come once; every command answers --help; help and the generated
 * configuration reference agree (issue #13). The real command throughout.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COMMAND_FLAGS, configurationReferenceMarkdown } from '../src/commands.js';
import { removeDir, tempDir } from './helpers/pki.js';
import { freePort, startCli, waitForStatus } from './helpers/process.js';

const work = tempDir('svid-ca-help-');
afterAll(() => removeDir(work));
const svidCa = (...args: string[]) => spawnSync(process.execPath, ['dist/cli.js', ...args], { encoding: 'utf8', timeout: 30_000 });

/** flag -> default as `help` prints them ("" when none). */
function helpFlags(text: string): Map<string, string> {
  const flags = new Map<string, string>();
  for (const m of text.matchAll(/^ {2}--([a-z0-9-]+)[^\n]*\n {6}(.*)$/gm)) flags.set(m[1]!, /\(default ([^;)]*)/.exec(m[2]!)?.[1] ?? '');
  return flags;
}

/** The cells of a Markdown table row (escaped `\|` stays inside its cell). */
const cells = (row: string) => row.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim());

/** flag -> default from the Markdown reference's section for `command` (its `default` column, unquoted). */
function markdownFlags(markdown: string, command: string): Map<string, string> {
  const section = markdown.split(/^## /m).find((s) => s.startsWith(`\`svid-ca ${command}\`\n`));
  expect(section, `no section for ${command}`).toBeDefined();
  const rows = section!.split('\n').filter((l) => l.startsWith('|'));
  const column = cells(rows[0]!).indexOf('default');
  expect(column, `no default column for ${command}`).toBeGreaterThan(0);
  const flags = new Map<string, string>();
  for (const row of rows.slice(2)) {
    const c = cells(row);
    flags.set(/^`--([a-z0-9-]+)/.exec(c[0]!)![1]!, c[column]!.replace(/^`(.*)`$/, '$1'));
  }
  return flags;
}

describe('help', () => {
  it('help COMMAND and the configuration reference (configurationReferenceMarkdown) list the same flags and defaults', () => {
    const markdown = configurationReferenceMarkdown();
    expect(svidCa('help', '--markdown').stdout).toBe(markdown);
    for (const { command, flags } of COMMAND_FLAGS) {
      const help = svidCa('help', ...command.split(' '));
      expect(help.status, command).toBe(0);
      const printed = helpFlags(help.stdout);
      expect(printed.size, command).toBe(flags.length);
      const documented = markdownFlags(markdown, command);
      // Booleans print no default in help and `off` in the reference.
      for (const f of flags) if (f.kind === 'boolean' && !printed.get(f.name)) printed.set(f.name, 'off');
      expect(Object.fromEntries(documented), command).toEqual(Object.fromEntries(printed));
    }
    expect(markdownFlags(markdown, 'serve').get('shutdown-delay')).toBe('5s');
    expect(markdownFlags(markdown, 'request').get('ca')).toBe('localhost:15012');
    // The same renderer writes docs/configuration.md (scripts/docs-config.mjs adds only its introduction).
    expect(readFileSync('docs/configuration.md', 'utf8').endsWith(`\n${markdown}`)).toBe(true);
  });

  it('every command and subcommand answers --help and help COMMAND; help cacerts is the cacerts usage', () => {
    for (const command of ['serve', 'dev-token', 'request']) {
      const a = svidCa(command, '--help');
      expect(a.status).toBe(0);
      expect(a.stdout).toBe(svidCa('help', command).stdout);
      expect(a.stdout).toContain(`svid-ca ${command} flags:`);
    }
    const cacerts = svidCa('help', 'cacerts');
    expect(cacerts.stdout).toContain('svid-ca cacerts init-root');
    expect(svidCa('cacerts', '--help').stdout).toBe(cacerts.stdout);
    expect(svidCa('help', 'cacerts', 'bundle').stdout).toBe(svidCa('cacerts', 'bundle', '--help').stdout);
    expect(svidCa('help', 'nope').status).toBe(2);
  });

  it('the shutdown flags name both signals that run the graceful stop (SIGTERM, SIGINT: test/shutdown.test.ts)', () => {
    const help = svidCa('help', 'serve').stdout.split('\n');
    for (const flag of ['--shutdown-delay', '--shutdown-grace']) {
      const at = help.findIndex((l) => l.trimStart().startsWith(`${flag} `));
      expect(at, flag).toBeGreaterThan(0);
      expect(help[at + 1], flag).toMatch(/^\s+on SIGTERM or SIGINT \(Ctrl\+C\), /); // the help text is the line under the flag
    }
  });

  it('the top-level usage names every cacerts subcommand', () => {
    const usage = svidCa('help').stdout.replace(/\s+/g, ' ');
    const list = /cacerts folders \(([^)]*)\)/.exec(usage)?.[1]?.split(', ');
    expect(list?.sort()).toEqual([...new Set(COMMAND_FLAGS.filter((c) => c.command.startsWith('cacerts ')).map((c) => c.command.slice('cacerts '.length)))].sort());
  });

  it('--version prints the version, Node.js and OpenSSL', () => {
    const r = svidCa('--version');
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string; scripts: Record<string, string> };
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`svid-ca ${pkg.version} (Node.js ${process.version}, OpenSSL ${process.versions.openssl})\n`);
  });

  it('npm ci builds dist/ (prepare), so node dist/cli.js and npx svid-ca exist after it', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };
    // Builds from a source checkout; skipped where there is no source (the image's production install).
    expect(pkg.scripts.prepare).toBe('if [ -f tsconfig.json ]; then npm run build; fi');
    expect(pkg.bin['svid-ca']).toBe('dist/cli.js');
  });

  it('allowScripts in package.json covers every package of the lock file that has an install script (npm 11.16+ warns otherwise, npm 12 skips it)', () => {
    const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean }> };
    const withScripts = Object.entries(lock.packages).filter(([, p]) => p.hasInstallScript).map(([path]) => path.replace(/^.*node_modules\//, '')).sort();
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { allowScripts?: Record<string, boolean> };
    expect(withScripts).toEqual(['pkcs11js', 'protobufjs']); // a new one must be reviewed and added
    expect(Object.keys(pkg.allowScripts ?? {}).sort()).toEqual(withScripts);
    expect(Object.values(pkg.allowScripts ?? {}).every((v) => v === true)).toBe(true);
  });

  // npm's own verdict, where the npm on PATH has the allowScripts policy (npm 11.16 and newer: Node 24's npm).
  const npmVersion = spawnSync('npm', ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const [major = 0, minor = 0] = npmVersion.split('.').map(Number);
  it.skipIf(major < 11 || (major === 11 && minor < 16))(`npm ${npmVersion || '(none)'} finds no install script left unreviewed`, () => {
    const r = spawnSync('npm', ['approve-scripts', '--allow-scripts-pending'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('No packages with unreviewed install scripts.');
  });
});

describe('startup errors: one line naming the flag', () => {
  it('--jwks-file that does not exist: exit 2 before any worker starts', () => {
    const r = svidCa('serve', '--workers', '2', '--cacerts', join(work, 'none'), '--jwt-issuer', 'https://issuer', '--jwks-file', '/missing', '--listen', '127.0.0.1:0', '--monitoring-listen', '127.0.0.1:0');
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('svid-ca: --jwks-file: cannot read /missing: no such file\n');
    expect(r.stdout).not.toContain('starting svid-ca');
  });

  it.each(['--listen', '--monitoring-listen'])('%s on a port in use: exit 1 with "address already in use"', async (flag) => {
    const busy: Server = createServer();
    const port = await new Promise<number>((r) => busy.listen(0, '127.0.0.1', () => r((busy.address() as { port: number }).port)));
    try {
      const other = await freePort();
      const addresses = flag === '--listen' ? [`127.0.0.1:${port}`, `127.0.0.1:${other}`] : [`127.0.0.1:${other}`, `127.0.0.1:${port}`];
      const r = svidCa('serve', '--dev', '--dev-dir', join(work, 'certs-dev'), '--workers', '2', '--listen', addresses[0]!, '--monitoring-listen', addresses[1]!);
      expect(r.status).toBe(1);
      expect(r.stderr.split('\n').filter((l) => l.startsWith('svid-ca:') && !l.includes('created the dev CA'))).toEqual([`svid-ca: ${flag} 127.0.0.1:${port}: address already in use`]);
    } finally {
      busy.close();
    }
  });
});

describe('request and the serving certificate', () => {
  it('--serving-dns IP entries become IP SANs; request --ca 127.0.0.1:PORT then verifies', async () => {
    const devDir = join(work, 'certs-dev-ip');
    const [grpcPort, monPort] = [await freePort(), await freePort()];
    const server = startCli(['serve', '--dev', '--dev-dir', devDir, '--workers', '1', '--shutdown-delay', '0s', '--serving-dns', 'localhost,127.0.0.1,::1', '--listen', `127.0.0.1:${grpcPort}`, '--monitoring-listen', `127.0.0.1:${monPort}`]);
    try {
      await waitForStatus(`http://127.0.0.1:${monPort}/readyz`);
      const text = execFileSync('openssl', ['s_client', '-connect', `127.0.0.1:${grpcPort}`, '-alpn', 'h2', '-showcerts'], { input: '', encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'] });
      const leaf = /-----BEGIN CERTIFICATE-----[^]*?-----END CERTIFICATE-----/.exec(text)![0];
      writeFileSync(join(work, 'serving.pem'), leaf);
      const sans = execFileSync('openssl', ['x509', '-in', join(work, 'serving.pem'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
      expect(sans).toContain('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
      const token = execFileSync(process.execPath, ['dist/cli.js', 'dev-token', '--dev-dir', devDir, '--namespace', 'demo', '--service-account', 'web'], { encoding: 'utf8' });
      writeFileSync(join(work, 'token'), token);
      const r = svidCa('request', '--ca', `127.0.0.1:${grpcPort}`, '--root', join(devDir, 'cacerts/root-cert.pem'), '--token', join(work, 'token'), '--out', join(work, 'out'));
      // An IP is no TLS server name (RFC 6066): request does not pass it as one, so Node has no DEP0123 to say.
      expect(r.stderr).not.toContain('DeprecationWarning');
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('identity: spiffe://cluster.local/ns/demo/sa/web');
    } finally {
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    }
  });
});

describe('serving certificate SANs', () => {
  it('IPv4 and every IPv6 text form become iPAddress SANs with the right octets; names stay DNS', async () => {
    const { Authority, loadCacerts } = await import('../src/ca/index.js');
    const { makeIntermediate, makeRoot, writeCacerts } = await import('./helpers/pki.js');
    const root = makeRoot();
    const authority = new Authority(loadCacerts(writeCacerts(join(work, 'san-cacerts'), { signer: makeIntermediate(root), roots: [root] })), { defaultTtlMs: 3600_000, maxTtlMs: 3600_000 });
    const serving = authority.issueServing(['svid-ca.istio-system.svc', '10.1.2.3', '::1', 'fe80::1:2', '::ffff:1.2.3.4', '2001:db8::2:1', '1:2:3:4:5:6:7:8'], 3600_000);
    writeFileSync(join(work, 'san.pem'), serving.certChainPem);
    const sans = execFileSync('openssl', ['x509', '-in', join(work, 'san.pem'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
    expect(sans).toContain(
      'DNS:svid-ca.istio-system.svc, IP Address:10.1.2.3, IP Address:0:0:0:0:0:0:0:1, IP Address:FE80:0:0:0:0:0:1:2, IP Address:0:0:0:0:0:FFFF:102:304, IP Address:2001:DB8:0:0:0:0:2:1, IP Address:1:2:3:4:5:6:7:8',
    );
  });
});
