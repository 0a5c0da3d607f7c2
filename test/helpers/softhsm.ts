/**
 * A real SoftHSM2 token per test (issue #17): its own token directory and SOFTHSM2_CONF, so tests
 * never share PKCS#11 state. SOFTHSM2_CONF is read at C_Initialize only, so the token is used by
 * a spawned svid-ca with the variable in its environment.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsm {
  dir: string;
  tokens: string;
  conf: string;
  pinFile: string;
  pin: string;
  env: Record<string, string>;
  /** Imports a PKCS#8 PEM private key (and its public object) under `label` / `idHex`. */
  importKey(keyPem: string, label: string, idHex: string): void;
}

export function createSoftHsm(dir: string, label = 'svid-ca', pin = '1234'): SoftHsm {
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { recursive: true });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = { SOFTHSM2_CONF: conf };
  const util = (args: string[]) => execFileSync('softhsm2-util', args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  util(['--init-token', '--free', '--label', label, '--so-pin', '5678', '--pin', pin]);
  const pinFile = join(dir, 'pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  return {
    dir,
    tokens,
    conf,
    pinFile,
    pin,
    env,
    importKey(keyPem, keyLabel, idHex) {
      const file = join(dir, `${keyLabel}.pem`);
      writeFileSync(file, keyPem, { mode: 0o600 });
      util(['--import', file, '--token', label, '--label', keyLabel, '--id', idHex, '--pin', pin]);
    },
  };
}

/** The cacerts files without the key: what the folder holds when the key is on the token. */
export function certificateFiles(signer: { certPem: string }, roots: { certPem: string }[]): Record<string, string> {
  return {
    'ca-cert.pem': signer.certPem,
    'cert-chain.pem': signer.certPem + roots[0]!.certPem,
    'root-cert.pem': roots.map((r) => r.certPem).join(''),
  };
}

/** Holds fcntl write locks on every file of the token directory until stdin closes; prints a line once held. */
const LOCK_TOKEN_FILES = `
import fcntl, glob, os, sys
held = []
for p in glob.glob(os.path.join(sys.argv[1], '*', '*')):
    f = open(p, 'r+')
    fcntl.lockf(f, fcntl.LOCK_EX)
    held.append(f)
print('locked', len(held), flush=True)
sys.stdin.read()
`;

/**
 * "The token stops answering", for real: another process holds write locks (fcntl, as SoftHSM takes
 * them) on the token's files, so SoftHSM's C_SignInit, C_FindObjects and C_GetAttributeValue wait for
 * them as a network HSM waits on a dead link. Resolves once the locks are held; release() lets go.
 */
export async function lockTokenFiles(hsm: Pick<SoftHsm, 'tokens'>): Promise<{ release(): Promise<void> }> {
  const locker = spawn('python3', ['-c', LOCK_TOKEN_FILES, hsm.tokens], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    locker.stdout.once('data', () => resolve());
    locker.once('exit', (code) => reject(new Error(`the token locker exited (${code}) before holding the locks`)));
  });
  return {
    release: async () => {
      if (locker.exitCode !== null) return;
      const exited = new Promise((r) => locker.once('exit', r));
      locker.stdin.end();
      await exited;
    },
  };
}
