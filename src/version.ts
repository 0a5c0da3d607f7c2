import { readFileSync } from 'node:fs';

/** The package version, read from package.json next to dist/ (one level up from this file's folder). */
export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** `svid-ca --version`: e.g. `svid-ca 0.1.0 (Node.js v24.1.0, OpenSSL 3.5.0)`, the versions a bug report needs. */
export function versionText(): string {
  return `svid-ca ${packageVersion()} (Node.js ${process.version}, OpenSSL ${process.versions.openssl})`;
}
