/**
 * A Kubernetes-style Secret volume on real files: the visible files are symlinks through `..data`,
 * which points at a timestamped folder; an update writes a new folder and swaps `..data` atomically,
 * exactly as the kubelet's AtomicWriter does.
 */
import { lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

let counter = 0;

export class SecretVolume {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /** Publishes `files` as the volume's new content in one atomic step. */
  write(files: Record<string, string>): void {
    const stamp = `..${new Date().toISOString().replace(/[:.]/g, '_')}_${++counter}`;
    const target = join(this.dir, stamp);
    mkdirSync(target);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(target, name), text, { mode: name.includes('key') ? 0o600 : 0o644 });
    let old: string | undefined;
    try {
      old = readlinkSync(join(this.dir, '..data'));
    } catch {
      old = undefined;
    }
    symlinkSync(stamp, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    for (const name of Object.keys(files)) {
      try {
        symlinkSync(join('..data', name), join(this.dir, name));
      } catch {
        // already linked through ..data
      }
    }
    // A file the new content lacks loses its link too, as the kubelet removes it (issue #16: a removed ca-crl.pem).
    for (const name of readdirSync(this.dir)) {
      if (!name.startsWith('..') && !(name in files) && lstatSync(join(this.dir, name)).isSymbolicLink()) unlinkSync(join(this.dir, name));
    }
    if (old) rmSync(join(this.dir, old), { recursive: true, force: true });
  }
}

/** The Istio-layout files for a signer and its roots (cert-chain = signer + first root). */
export function istioFiles(signer: { certPem: string; keyPem: string }, roots: { certPem: string }[], keyPem = signer.keyPem): Record<string, string> {
  return {
    'ca-cert.pem': signer.certPem,
    'ca-key.pem': keyPem,
    'cert-chain.pem': signer.certPem + roots[0]!.certPem,
    'root-cert.pem': roots.map((r) => r.certPem).join(''),
  };
}
