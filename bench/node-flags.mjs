// The node flags production runs svid-ca with: the NODE_OPTIONS of the Dockerfile's runtime stage (the
// Deployment sets the same value; test/deploy-manifests.test.ts checks that they agree). bench/run.mjs and
// bench/soak.mjs start their servers with these unless --node-args says otherwise, so the figures they
// print are those of the production heap settings.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function productionNodeFlags() {
  const dockerfile = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'Dockerfile'), 'utf8');
  const runtime = dockerfile.split(/^FROM\s/m).at(-1);
  const value = /^ENV\s+NODE_OPTIONS="([^"]*)"/m.exec(runtime)?.[1];
  if (value === undefined) throw new Error('the Dockerfile runtime stage sets no ENV NODE_OPTIONS="..."');
  return value.split(' ').filter(Boolean);
}
