import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A PKCS#11 URI (RFC 7512) naming the CA's private key, as svid-ca accepts it:
 *
 *   pkcs11:token=svid-ca;object=intermediate-2026[;id=%a1%b2][;type=private]?pin-source=file:/run/pin
 *
 * The token is chosen by exactly one of `token` (label), `serial` or `slot-id` (smallstep's rule;
 * slot ids are not stable across token re-initialisation, so prefer `token`). The key by `object`
 * (CKA_LABEL) and/or `id` (CKA_ID). The PIN only from `pin-source` (a file), never `pin-value`.
 */
export interface Pkcs11Uri {
  token?: string | undefined;
  serial?: string | undefined;
  slotId?: number | undefined;
  /** CKA_LABEL of the key, UTF-8. */
  object?: string | undefined;
  /** CKA_ID of the key, bytes. */
  id?: Buffer | undefined;
  /** Query pin-source, as a file path (a `file:` URI is converted). */
  pinSource?: string | undefined;
  /** Query module-path (absolute). */
  modulePath?: string | undefined;
  /** The URI without its query, for logs and errors: the query may name the PIN file. */
  redacted: string;
}

export class Pkcs11UriError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Pkcs11UriError';
  }
}

const PATH_ATTRIBUTES = new Set(['token', 'serial', 'slot-id', 'object', 'id', 'type']);
const QUERY_ATTRIBUTES = new Set(['pin-source', 'module-path']);

/**
 * Percent-decodes to bytes. Not decodeURIComponent (throws on non-UTF-8 bytes such as an id of
 * %a1%b2) and not URLSearchParams (turns `+` into a space; in RFC 7512 `+` is a literal).
 */
function percentDecode(text: string, what: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '%') {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new Pkcs11UriError(`${what}: invalid percent-encoding at "${text.slice(i, i + 3)}"`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(c, 'utf8')) out.push(b);
    }
  }
  return Buffer.from(out);
}

/** CKA_ID: percent-encoded bytes (RFC 7512); a bare even-length hex string is read as hex, as smallstep does. */
function decodeId(raw: string): Buffer {
  if (!raw.includes('%') && raw.length > 0 && raw.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(raw)) return Buffer.from(raw, 'hex');
  return percentDecode(raw, 'id');
}

function attributes(part: string, separator: string, allowed: Set<string>, where: string): Map<string, string> {
  const out = new Map<string, string>();
  if (part === '') return out;
  for (const item of part.split(separator)) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Pkcs11UriError(`"${item}" is not an attribute=value pair`);
    const name = item.slice(0, eq).toLowerCase();
    if (name === 'pin-value') throw new Pkcs11UriError('pin-value is refused: give the PIN in a file (pin-source=file:/path or --pkcs11-pin-file), never in the URI');
    if (!allowed.has(name)) throw new Pkcs11UriError(`unsupported ${where} attribute "${name}" (svid-ca accepts ${[...allowed].join(', ')})`);
    if (out.has(name)) throw new Pkcs11UriError(`attribute "${name}" appears twice`);
    out.set(name, item.slice(eq + 1));
  }
  return out;
}

/** Parses `text` as RFC 7512 with the rules above. Throws Pkcs11UriError saying what to fix. */
export function parsePkcs11Uri(text: string): Pkcs11Uri {
  const trimmed = text.trim();
  if (!trimmed.toLowerCase().startsWith('pkcs11:')) throw new Pkcs11UriError('a PKCS#11 URI starts with "pkcs11:" (e.g. pkcs11:token=svid-ca;object=intermediate)');
  const body = trimmed.slice('pkcs11:'.length);
  const q = body.indexOf('?');
  const pathPart = q < 0 ? body : body.slice(0, q);
  const queryPart = q < 0 ? '' : body.slice(q + 1);
  const path = attributes(pathPart, ';', PATH_ATTRIBUTES, 'path');
  const query = attributes(queryPart, '&', QUERY_ATTRIBUTES, 'query');
  const utf8 = (name: string) => {
    const v = path.get(name);
    return v === undefined ? undefined : percentDecode(v, name).toString('utf8');
  };

  const uri: Pkcs11Uri = { token: utf8('token'), serial: utf8('serial'), object: utf8('object'), redacted: `pkcs11:${pathPart}` };
  const slot = path.get('slot-id');
  if (slot !== undefined) {
    if (!/^\d+$/.test(slot)) throw new Pkcs11UriError(`slot-id must be decimal digits, got "${slot}"`);
    uri.slotId = Number(slot);
  }
  const selectors = [uri.token, uri.serial, uri.slotId].filter((v) => v !== undefined).length;
  if (selectors !== 1) throw new Pkcs11UriError('name the token with exactly one of token=LABEL (recommended), serial= or slot-id=');
  const id = path.get('id');
  if (id !== undefined) uri.id = decodeId(id);
  if (uri.object === undefined && uri.id === undefined) throw new Pkcs11UriError('name the key with object=LABEL and/or id=%xx...');
  const type = utf8('type');
  if (type !== undefined && type !== 'private') throw new Pkcs11UriError(`type must be "private" (the signing key), got "${type}"`);

  const pin = query.get('pin-source');
  if (pin !== undefined) {
    const decoded = percentDecode(pin, 'pin-source').toString('utf8');
    if (decoded.startsWith('file:')) {
      try {
        uri.pinSource = fileURLToPath(decoded);
      } catch (err) {
        throw new Pkcs11UriError(`pin-source: invalid file URI (${(err as Error).message})`);
      }
    } else if (isAbsolute(decoded)) uri.pinSource = decoded;
    else throw new Pkcs11UriError('pin-source must be a file: URI or an absolute path');
  }
  const module = query.get('module-path');
  if (module !== undefined) {
    uri.modulePath = percentDecode(module, 'module-path').toString('utf8');
    if (!isAbsolute(uri.modulePath)) throw new Pkcs11UriError('module-path must be an absolute path');
  }
  return uri;
}
