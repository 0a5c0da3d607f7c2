/**
 * docs/troubleshooting.md names every message a caller or an operator can see: each error svid-ca raises (the
 * error classes that become a gRPC status, a refused bundle or a bad flag) and each warn/error/fatal log line,
 * read from the source. A new message without its troubleshooting entry fails here.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');
const PAGE = join(ROOT, 'docs', 'troubleshooting.md');

/** Calls whose string arguments are a message someone outside the process sees. */
const MESSAGE_CALL = /\b(?:new (?:ConfigError|BundleError|CsrError|AuthError|AuthzError|TtlError|CaUnavailableError|RequestError|AuditWriteError|IssuerFolderError)|logger\.(?:warn|error|fatal)|invalid|refuse|denied)\(/g;
/** Literals in those calls that are a failure kind, not a message. */
const KINDS = new Set(['unauthenticated', 'unavailable', 'permission_denied', 'invalid_argument', 'invalid_csr', 'overloaded', 'malformed', 'signature', 'key', 'san']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The argument text of a call starting at `open` (the index of its '('), with strings and nesting respected. */
function argumentsAt(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i]!;
    if (c === "'" || c === '"' || c === '`') i = skipString(text, i) - 1;
    else if (c === '(' || c === '{' || c === '[') depth++;
    else if (c === ')' || c === '}' || c === ']') {
      depth--;
      if (depth === 0) return text.slice(open + 1, i);
    }
  }
  return text.slice(open + 1);
}

/** Index just past the string literal that opens at `i`; template literals' ${...} parts are skipped. */
function skipString(text: string, i: number, pieces?: string[]): number {
  const quote = text[i]!;
  let piece = '';
  for (i++; i < text.length && text[i] !== quote; i++) {
    if (text[i] === '\\') piece += text[++i] ?? '';
    else if (quote === '`' && text.startsWith('${', i)) {
      pieces?.push(piece);
      piece = '';
      let depth = 0;
      for (i++; i < text.length; i++) {
        const c = text[i]!;
        if (c === "'" || c === '"' || c === '`') i = skipString(text, i) - 1;
        else if (c === '{') depth++;
        else if (c === '}' && --depth === 0) break;
      }
    } else piece += text[i];
  }
  pieces?.push(piece);
  return i + 1;
}

/** The static pieces of each string literal in a call's arguments: template literals are cut at their ${...}. */
function staticPieces(args: string): string[] {
  const pieces: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const c = args[i]!;
    if (c === '/' && args[i + 1] === '/') i = args.indexOf('\n', i) < 0 ? args.length : args.indexOf('\n', i);
    else if (c === "'" || c === '"' || c === '`') i = skipString(args, i, pieces) - 1;
  }
  return pieces.map((p) => p.replace(/\n.*$/s, '').trim()).filter((p) => !KINDS.has(p));
}

/**
 * Not scanned: node:util parseArgs' own messages, which src/flags.ts rewrites by regex into `unknown flag --x`
 * and `--x: a value is required` (checked by name in the test below).
 */
const notScanned = (args: string) => args.includes('Unknown option');

interface Message {
  where: string;
  piece: string;
}

function messages(): Message[] {
  const found: Message[] = [];
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(MESSAGE_CALL)) {
      const open = m.index! + m[0].length - 1;
      const args = argumentsAt(text, open);
      if (notScanned(args)) continue;
      const longest = staticPieces(args).sort((a, b) => b.length - a.length)[0];
      // A message made only of variables (or a helper's definition) has nothing to look up.
      if (!longest || longest.length < 8) continue;
      found.push({ where: `${relative(ROOT, file)}:${text.slice(0, m.index).split('\n').length}`, piece: longest });
    }
  }
  return found;
}

describe('docs/troubleshooting.md', () => {
  it('finds the messages in the source (the scan itself works)', () => {
    const pieces = messages().map((m) => m.piece);
    expect(pieces.length).toBeGreaterThan(80);
    expect(pieces).toContain('token has expired');
    expect(pieces).toContain('cacerts reload refused; still serving with the current bundle');
    expect(pieces).toContain('is greater than the max allowed TTL');
  });

  it('names every error and warn/error/fatal log message a caller or an operator can see', () => {
    const page = readFileSync(PAGE, 'utf8');
    const missing = messages().filter((m) => !page.includes(m.piece.trim())).map((m) => `${m.where}: "${m.piece}"`);
    expect(missing, 'add these messages, with cause and fix, to docs/troubleshooting.md').toEqual([]);
    // The flag parser's own messages (notScanned above), as src/flags.ts words them.
    expect(page).toContain('`unknown flag --<name>`');
    expect(page).toContain('`--<flag>: a value is required`');
  });
});
