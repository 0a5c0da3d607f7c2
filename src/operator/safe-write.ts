import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../flags.js';

/** What an operator allowed: --force replaces certificates, --force-key also private keys. */
export interface OverwritePolicy {
  force: boolean;
  forceKey: boolean;
}

/** Private keys: written 0600 and never replaced without --force-key (an offline root key is irreplaceable). */
export const isKeyFile = (name: string) => name.endsWith('key.pem') || name.endsWith('.key');

/** Present as a file, a symlink (even dangling) or anything else. */
function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Throws ConfigError (the CLI prints one line and exits 2) when `dir` already holds any of `names`
 * and the policy does not allow replacing it: a certificate needs --force, a private key --force-key
 * (which implies --force). Called by writeFolder, and alone before slow work such as making an RSA key.
 */
export function refuseOverwrite(dir: string, names: readonly string[], policy: OverwritePolicy, flag = '--out'): void {
  const present = names.filter((name) => exists(join(dir, name)));
  const keys = present.filter(isKeyFile);
  if (keys.length > 0 && !policy.forceKey) {
    throw new ConfigError(
      `${flag}: ${dir} already holds the private key ${keys.join(', ')}; refusing to overwrite it (that destroys the key: move it away first, or add --force-key)`,
    );
  }
  if (present.length > 0 && !policy.force && !policy.forceKey) {
    throw new ConfigError(`${flag}: ${dir} already holds ${present.join(', ')}; refusing to overwrite (choose an empty folder, or add --force)`);
  }
}

/**
 * Writes `files` (name -> text) into `dir` (created if missing) without destroying anything the
 * operator did not ask to lose (see refuseOverwrite; on refusal nothing is written). Each file goes
 * to a new temporary file in `dir` (O_EXCL, mode 0600 for keys, else 0644), is fsynced, and only
 * when all are written are they renamed over their names, so a crash never leaves a half-written file.
 */
export function writeFolder(dir: string, files: Record<string, string>, policy: OverwritePolicy, flag = '--out'): void {
  refuseOverwrite(dir, Object.keys(files), policy, flag);
  mkdirSync(dir, { recursive: true });
  const temps: [string, string][] = [];
  try {
    for (const [name, text] of Object.entries(files)) {
      const tmp = join(dir, `.${name}.tmp-${process.pid}`);
      const fd = openSync(tmp, 'wx', isKeyFile(name) ? 0o600 : 0o644);
      temps.push([tmp, join(dir, name)]);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  } catch (err) {
    for (const [tmp] of temps) unlinkSync(tmp);
    throw err;
  }
  for (const [tmp, path] of temps) renameSync(tmp, path);
}
