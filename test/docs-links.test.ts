/** Every link in the repository's Markdown (README.md, docs/, the folders' READMEs, SECURITY.md) stays inside the repository and points to a file, and an anchor, that exist. */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { anchorsOf } from './helpers/markdown.js';

const ROOT = join(import.meta.dirname, '..');
const FILES = [
  ...['README.md', 'SECURITY.md', 'deploy/README.md', 'deploy/prometheus/README.md', 'bench/README.md', 'certs-dev/README.md'].map((f) => join(ROOT, f)),
  ...readdirSync(join(ROOT, 'docs')).filter((n) => n.endsWith('.md')).map((n) => join(ROOT, 'docs', n)),
];

/** Markdown links `[text](target)` outside code blocks and inline code. */
function links(file: string): { target: string; line: number }[] {
  let fenced = false;
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((text, i) => {
      if (/^\s*(`{3,}|~{3,})/.test(text)) fenced = !fenced;
      if (fenced) return [];
      return [...text.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)].map((m) => ({ target: m[1]!, line: i + 1 }));
    });
}

function problems(file: string): string[] {
  const out: string[] = [];
  for (const { target, line } of links(file)) {
    const where = `${relative(ROOT, file)}:${line}: ${target}`;
    if (/^[a-z]+:/i.test(target)) {
      out.push(`${where}: links outside the repository`);
      continue;
    }
    const [path, anchor] = target.split('#') as [string, string | undefined];
    const dest = path === '' ? file : join(dirname(file), path);
    if (!existsSync(dest)) out.push(`${where}: no such file`);
    else if (anchor !== undefined && dest.endsWith('.md') && !anchorsOf(dest).includes(anchor)) out.push(`${where}: no heading #${anchor}`);
  }
  return out;
}

describe('links in README.md, docs/, SECURITY.md and the folders\' READMEs', () => {
  it('point inside the repository, to files and headings that exist', () => {
    expect(FILES.flatMap(problems)).toEqual([]);
  });

  it('the check finds a link outside, a missing file and a missing heading (it can fail)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'svid-ca-links-'));
    try {
      const page = join(dir, 'page.md');
      writeFileSync(page, '# Page\n\n[a](https://example.com) [b](nowhere.md) [c](#page) [d](#elsewhere) `[e](ignored.md)`\n');
      expect(problems(page)).toEqual([expect.stringContaining('links outside'), expect.stringContaining('no such file'), expect.stringContaining('no heading #elsewhere')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
