/** docs/configuration.md is generated from the flag tables: it fails here as soon as a flag and the page differ. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SERVE_FLAGS } from '../src/config.js';
import { DEV_TOKEN_FLAGS, REQUEST_FLAGS } from '../src/commands.js';
import { CACERTS_FLAGS } from '../src/operator/index.js';
// @ts-expect-error: a plain .mjs script without type declarations
import { CONFIGURATION_MD, renderConfigurationDoc } from '../scripts/docs-config.mjs';

const page = () => readFileSync(CONFIGURATION_MD as string, 'utf8');

describe('docs/configuration.md', () => {
  it('is exactly what `npm run docs:config` writes from the built flag tables (rerun it after changing a flag)', async () => {
    expect(page(), 'docs/configuration.md differs from the flags: run npm run docs:config').toBe(await (renderConfigurationDoc as () => Promise<string>)());
  });

  it('names every flag of every command, with its serve variable and default', () => {
    const text = page();
    for (const s of SERVE_FLAGS) {
      const row = text.split('\n').find((l) => l.startsWith(`| \`--${s.name}`));
      expect(row, `--${s.name}`).toBeDefined();
      expect(row).toContain(`SVID_CA_${s.name.toUpperCase().replace(/-/g, '_')}`);
      if (s.default) expect(row).toContain(`\`${s.default}\``);
      if (s.istioEnv) expect(row).toContain(s.istioEnv);
    }
    for (const specs of [DEV_TOKEN_FLAGS, REQUEST_FLAGS, ...Object.values(CACERTS_FLAGS)]) {
      for (const s of specs) expect(text).toContain(`\`--${s.name}`);
    }
  });
});
