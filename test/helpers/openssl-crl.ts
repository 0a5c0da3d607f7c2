/**
 * CRLs made by `openssl ca -gencrl` (issue #16): the issuer's own database, optional revocations by
 * `openssl ca -revoke`, a CRL number that increases with each CRL made in the same work folder.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestCa } from './pki.js';

const openssl = (args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** A PEM X509 CRL signed by `issuer`, revoking `revoke`; `work` keeps the issuer's openssl ca database between calls. */
export function opensslCrl(work: string, issuer: TestCa, revoke: TestCa[] = [], days = 30): string {
  const config = join(work, 'ca.cnf');
  if (!existsSync(config)) {
    writeFileSync(join(work, 'index.txt'), '');
    writeFileSync(join(work, 'crlnumber'), '01\n');
    writeFileSync(join(work, 'issuer.key'), issuer.keyPem);
    writeFileSync(join(work, 'issuer.crt'), issuer.certPem);
    writeFileSync(
      config,
      ['[ca]', 'default_ca = test', '[test]', `database = ${join(work, 'index.txt')}`, `crlnumber = ${join(work, 'crlnumber')}`, 'default_md = sha256', `default_crl_days = ${days}`, ''].join('\n'),
    );
  }
  const ca = ['ca', '-batch', '-config', config, '-keyfile', join(work, 'issuer.key'), '-cert', join(work, 'issuer.crt')];
  revoke.forEach((c, i) => {
    const file = join(work, `revoke-${Date.now()}-${i}.crt`);
    writeFileSync(file, c.certPem);
    openssl([...ca, '-revoke', file, '-crl_reason', 'keyCompromise']);
  });
  const out = join(work, 'crl.pem');
  openssl([...ca, '-gencrl', '-crldays', String(days), '-out', out]);
  return openssl(['crl', '-in', out]);
}
