/**
 * decodePem reads every CSR on the hot path; issue #14 replaced its whitespace replace and base64
 * RegExp by one RegExp on the body as it is (Node's base64 decoder skips the whitespace). The previous implementation is kept here, verbatim, as the
 * reference: over generated PEM texts (several blocks, CRLF, tabs, spaces, padding in the middle,
 * characters that are not base64, text between blocks) both give the same blocks, byte for byte.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodePem, type PemBlock } from '../src/pki/pem.js';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** decodePem before issue #14. */
function referenceDecodePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    const body = (match[2] ?? '').replace(/[\r\n\t ]/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) continue;
    blocks.push({ type: match[1] ?? '', der: Buffer.from(body, 'base64') });
  }
  return blocks;
}

const shown = (blocks: PemBlock[]) => blocks.map((b) => ({ type: b.type, der: b.der.toString('hex') }));

const separator = fc.constantFrom('\n', '\r\n', '\t', ' ', '', '\n\n', ' \r\n', '\r');
/** Not base64 and not the whitespace decodePem skips: each must make its block be left out. */
const badChar = fc.constantFrom('-', '_', '!', '.', '\f', '\v', '\u00a0', '\u2028', 'é', '\u0000', '\ufeff', '*', ':', '\\');

/** A base64 body (of random bytes) cut into lines of random length, with random separators. */
const goodBody = fc.tuple(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 1, max: 80 }), fc.array(separator, { minLength: 1, maxLength: 6 })).map(([bytes, width, seps]) => {
  const b64 = Buffer.from(bytes).toString('base64');
  let out = seps[0]!;
  for (let at = 0, n = 0; at < b64.length; at += width, n++) out += b64.slice(at, at + width) + seps[(n + 1) % seps.length]!;
  return out;
});

/** A body changed at a random place: a bad character, a padding `=` in the middle or at the end, a separator. */
const mutatedBody = fc
  .tuple(goodBody, fc.nat(), fc.oneof(badChar, fc.constantFrom('=', '==', '===', 'A=', '=A', '= =', '=\r\n=', 'QQ', '/', '+')))
  .map(([body, at, insert]) => body.slice(0, at % (body.length + 1)) + insert + body.slice(at % (body.length + 1)));

const label = fc.constantFrom('CERTIFICATE REQUEST', 'CERTIFICATE', 'NEW CERTIFICATE REQUEST', 'EC PRIVATE KEY', 'X');
const block = fc.tuple(label, fc.oneof(goodBody, mutatedBody), fc.boolean()).map(([type, body, sameEnd]) => `-----BEGIN ${type}-----${body}-----END ${sameEnd ? type : 'OTHER'}-----`);
const between = fc.oneof(fc.constantFrom('', '\n', '\r\n', 'junk\n', '-----', '-----BEGIN X-----'), fc.string({ maxLength: 20 }));
const pemText = fc.array(fc.tuple(between, block), { maxLength: 5 }).chain((parts) => between.map((tail) => parts.map(([b, k]) => b + k).join('') + tail));

describe('decodePem (one RegExp on the raw body) against the whitespace replace + RegExp it replaced', () => {
  it('the same blocks for generated PEM texts: several blocks, CRLF, tabs, padding in the middle, bad characters', () => {
    fc.assert(
      fc.property(pemText, (text) => {
        expect(shown(decodePem(text))).toEqual(shown(referenceDecodePem(text)));
      }),
      { numRuns: 3000 },
    );
  });

  it('the generators reach both sides: blocks kept and blocks left out', () => {
    let kept = 0;
    let dropped = 0;
    fc.assert(
      fc.property(fc.tuple(label, mutatedBody), ([type, body]) => {
        const n = referenceDecodePem(`-----BEGIN ${type}-----${body}-----END ${type}-----`).length;
        if (n === 1) kept++;
        else dropped++;
      }),
      { numRuns: 500 },
    );
    expect(kept).toBeGreaterThan(20);
    expect(dropped).toBeGreaterThan(20);
  });

  it('fixed cases: padding split by a line break, padding in the middle, three pads, a tab, a non-breaking space', () => {
    const cases = ['QUI=\r\n=', 'QUI=\n', 'QQ==\nQQ==', 'QUJD===', 'QU\tJD', 'QU\u00a0JD', '\n\n', '=', 'QUJD\n=\n'];
    for (const body of cases) {
      const text = `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`;
      expect(shown(decodePem(text))).toEqual(shown(referenceDecodePem(text)));
    }
  });
});
