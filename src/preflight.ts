import { closeSync, constants, accessSync, openSync, readFileSync, statSync } from 'node:fs';
import { parseIssuersFile } from './auth/index.js';
import { ConfigError } from './flags.js';
import type { ServeConfig } from './config.js';

/** Why a file cannot be used, in words (ENOENT -> "no such file"), for one-line operator errors. */
export function fileProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a folder, not a file';
    case 'ENOTDIR':
      return 'a part of the path is not a folder';
    default:
      return code ?? (err as Error).message;
  }
}

function readable(flag: string, path: string | undefined): void {
  if (!path) return;
  try {
    accessSync(path, constants.R_OK);
    if (statSync(path).isDirectory()) throw Object.assign(new Error('folder'), { code: 'EISDIR' });
  } catch (err) {
    throw new ConfigError(`${flag}: cannot read ${path}: ${fileProblem(err)}`);
  }
}

/**
 * The text of a file named by a flag (UTF-8), or a ConfigError `FLAG: cannot read PATH: WHY` (exit 2),
 * the shape of serve's file-flag errors; `-` reads stdin. Used by `svid-ca request` (--token, --root).
 */
export function readFlagFile(flag: string, path: string): string {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${flag}: cannot read ${path}: ${fileProblem(err)}`);
  }
}

function appendable(flag: string, path: string | undefined): void {
  if (!path) return;
  try {
    closeSync(openSync(path, 'a', 0o600));
  } catch (err) {
    throw new ConfigError(`${flag}: cannot write ${path}: ${fileProblem(err)}`);
  }
}

/**
 * Every file flag of `serve`, checked once in the first process before any worker starts, so a
 * typo is one line naming the flag (exit 2) instead of a stack trace per worker: --jwks-file and
 * --kubeconfig must be readable files, --audit-log appendable (created 0600 if missing). URL flags
 * (--jwks-uri) are checked for syntax by parseServeConfig; the cacerts folder by loadCacerts (exit 1).
 */
export function checkFileFlags(cfg: ServeConfig): void {
  readable('--jwks-file', cfg.jwt?.jwksFile);
  readable('--jwt-issuers-file', cfg.jwtIssuersFile);
  if (cfg.jwtIssuersFile) checkIssuersFile(cfg.jwtIssuersFile, cfg);
  readable('--kubeconfig', cfg.kubernetes?.kubeconfig);
  appendable('--audit-log', cfg.auditLog);
}


/** issue #18: --jwt-issuers-file parses and each entry's jwksFile is readable (one line, exit 2, before any worker starts). */
function checkIssuersFile(path: string, cfg: ServeConfig): void {
  let entries: ReturnType<typeof parseIssuersFile>;
  try {
    entries = parseIssuersFile(readFileSync(path, 'utf8'), path, { trustDomain: cfg.trustDomain, audiences: [cfg.jwtAudience] });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  entries.forEach((e, i) => readable(`--jwt-issuers-file ${path}: entry #${i}: "jwksFile"`, e.jwksFile));
}
