/**
 * Issue #14: the request metadata of a fast-path call (unary-fast-path.ts) without building a grpc-js
 * `Metadata` per call (`Metadata.fromHttp2Headers`: a Map, an array and a key and value validation per
 * header, ~1.2 us per call; this measured ~0.8 us). The handler only reads `get(key)` for a few keys.
 *
 * `get` answers as `Metadata.fromHttp2Headers(headers).get(key)` of grpc-js 1.14 (metadata.js) does:
 * the key lower-cased; reserved (`:`-prefixed) headers hidden; `-bin` values base64-decoded to Buffers,
 * a single custom `-bin` value (not `grpc-`) split at commas and each part trimmed; other values as
 * they are (an array value is one entry per element, never split). grpc-js leaves out any header whose
 * key or value it finds illegal and logs one line for it; so every header is checked here with grpc-js's
 * own rules first, and when any fails the headers go through `Metadata.fromHttp2Headers` itself (same
 * entries, same log lines). test/header-metadata.test.ts holds both equal over generated header sets.
 */
import type * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';

/** grpc-js metadata.js LEGAL_KEY_REGEX / LEGAL_NON_BINARY_VALUE_REGEX. */
const LEGAL_KEY = /^[:0-9a-z_.-]+$/;
const LEGAL_NON_BINARY_VALUE = /^[ -~]*$/;

/**
 * Keys already found legal: the same few header names arrive on every call, and a Set lookup is cheaper
 * than the RegExp. Bounded, so a client sending made-up header names cannot grow it; past the bound
 * keys are checked by the RegExp each time (same answer).
 */
const legalKeys = new Set<string>();
const MAX_LEGAL_KEYS = 256;

function isLegalKey(key: string): boolean {
  if (legalKeys.has(key)) return true;
  if (!LEGAL_KEY.test(key)) return false;
  if (legalKeys.size < MAX_LEGAL_KEYS) legalKeys.add(key);
  return true;
}

/** Would grpc-js's fromHttp2Headers add every entry of `headers` without an error (so without a log line)? */
function allLegal(headers: http2.IncomingHttpHeaders): boolean {
  for (const key of Object.keys(headers)) {
    if (key.charCodeAt(0) === 0x3a) continue; // ':' reserved: skipped by grpc-js before any check
    if (!isLegalKey(key)) return false;
    const values = headers[key];
    if (key.endsWith('-bin')) continue; // decoded to Buffers, which are always legal
    if (typeof values === 'string') {
      if (!LEGAL_NON_BINARY_VALUE.test(values)) return false;
    } else if (Array.isArray(values)) {
      for (const value of values) if (typeof value !== 'string' || !LEGAL_NON_BINARY_VALUE.test(value)) return false;
    } else if (values !== undefined) {
      return false;
    }
  }
  return true;
}

/** The `get` side of grpc-js's Metadata over a stream's headers, all of which grpc-js would accept. */
class LegalHeaderMetadata {
  constructor(private readonly headers: http2.IncomingHttpHeaders) {}

  get(key: string): (string | Buffer)[] {
    key = key.toLowerCase();
    if (key.charCodeAt(0) === 0x3a || !Object.hasOwn(this.headers, key)) return [];
    const values = this.headers[key];
    if (values === undefined) return [];
    if (!key.endsWith('-bin')) return typeof values === 'string' ? [values] : [...values];
    if (Array.isArray(values)) return values.map((v) => Buffer.from(v, 'base64'));
    if (key.startsWith('grpc-')) return [Buffer.from(values, 'base64')];
    return values.split(',').map((v) => Buffer.from(v.trim(), 'base64'));
  }
}

/**
 * The request metadata of a call from its HTTP/2 headers: `get(key)` -> the key's values, strings, or
 * Buffers for `-bin` keys; [] for an absent or reserved key. Same answers and log lines as
 * `grpc.Metadata.fromHttp2Headers(headers)` (see above).
 */
export function headerMetadata(headers: http2.IncomingHttpHeaders): { get(key: string): (string | Buffer)[] } {
  return allLegal(headers) ? new LegalHeaderMetadata(headers) : grpc.Metadata.fromHttp2Headers(headers);
}
