import * as grpc from '@grpc/grpc-js';
import { diagnoseConnection, identityFromToken, type ConnectionProblem } from './client/index.js';
import { ConfigError } from './flags.js';

/** What `svid-ca request` dialled, in the terms of its flags. */
export interface RequestTarget {
  host: string;
  port: number;
  /** The --root file and its text. */
  rootFile: string;
  rootPem: string;
  /** --server-name, if given. */
  serverName: string | undefined;
}

/** The one-line message for a connection problem, naming the flag to fix. */
function problemMessage(p: ConnectionProblem, t: RequestTarget): string {
  const address = `${t.host}:${t.port}`;
  const name = t.serverName ?? t.host;
  const nameSource = t.serverName === undefined ? 'the host of --ca' : '--server-name';
  switch (p.kind) {
    case 'refused':
      return `--ca: nothing listens at ${address} (connection refused)`;
    case 'unresolved':
      return `--ca: cannot resolve the host ${t.host} (${p.code})`;
    case 'timeout':
      return `--ca: no TLS handshake with ${address} within ${p.ms / 1000}s`;
    case 'untrusted':
      return `--root: the CA's serving certificate at ${address} does not verify with --root ${t.rootFile} (name checked: ${name}): ${p.reason}${p.reason === p.code ? '' : ` (${p.code})`}`;
    case 'not-tls':
      return `--ca: ${address} does not answer TLS (${p.reason}): give svid-ca's gRPC port (--listen, default 15012), not the monitoring port`;
    case 'name-mismatch':
      return `--server-name: the CA's serving certificate at ${address} does not carry the name ${name} (${nameSource}); it carries ${p.names}`;
    case 'other':
      return `--ca: cannot connect to ${address}: ${p.message}`;
  }
}

/**
 * The error `svid-ca request` reports for a failed call, in one line: a connection that could not be made
 * (gRPC 14 UNAVAILABLE, diagnosed with one more TLS dial, see diagnoseConnection) is a ConfigError naming
 * --ca, --root or --server-name (exit 2, as serve's flag errors); a call the server answered with a gRPC
 * status keeps it: `the CA at HOST:PORT refused the call: CODE NAME: details` (exit 1). Anything else
 * (say a chain that does not verify after the call) is returned as it was.
 */
export async function requestFailure(err: unknown, t: RequestTarget): Promise<Error> {
  const status = (err as Partial<grpc.ServiceError>).code;
  if (typeof status !== 'number' || !(err instanceof Error)) return err instanceof Error ? err : new Error(String(err));
  if (status === grpc.status.UNAVAILABLE) {
    const problem = await diagnoseConnection({ host: t.host, port: t.port, rootPem: t.rootPem, name: t.serverName ?? t.host });
    if (problem) return new ConfigError(problemMessage(problem, t));
  }
  return new Error(`the CA at ${t.host}:${t.port} refused the call: ${err.message}`);
}

/**
 * The SPIFFE ID a --token asks for (spiffe://TD/ns/NS/sa/SA from its `sub`, read, not verified: the CA
 * verifies it), or a ConfigError naming --token and its file (exit 2) when the file holds no such JWT.
 */
export function identityOfTokenFlag(token: string, file: string, trustDomain: string): string {
  try {
    return identityFromToken(token, trustDomain);
  } catch (err) {
    throw new ConfigError(`--token: ${file} does not hold a service-account token (a JWT with sub system:serviceaccount:<ns>:<sa>): ${(err as Error).message}; or give --identity`);
  }
}

/**
 * RFC 6750 section 2.1 b64token: the characters an `authorization: Bearer` value may carry (a JWT's
 * base64url and dots among them), then '=' padding at the end. One class for the whole-token check
 * and for finding the first bad character.
 */
const B64TOKEN_CHAR = /[A-Za-z0-9\-._~+/]/;
const B64TOKEN = new RegExp(`^${B64TOKEN_CHAR.source}+=*$`);
const B64TOKEN_CHAR_OR_PADDING = new RegExp(`^(?:${B64TOKEN_CHAR.source}|=)$`);

/** What the first character outside b64token is, in an operator's words (never the character itself). */
function kindOfCharacter(c: string): string {
  if (c === '\n' || c === '\r') return 'a line break';
  if (c === ' ') return 'a space';
  if (c === '\t') return 'a tab';
  const code = c.codePointAt(0)!;
  if (code < 0x20 || code === 0x7f) return 'a control character';
  if (code > 0x7f) return 'a non-ASCII character';
  return 'a character outside the token alphabet';
}

/**
 * The bearer token of the --token file's text `raw` (surrounding white space trimmed), checked before it goes
 * into the `authorization` header: RFC 6750 b64token syntax, which grpc-js accepts in a header value (it refuses
 * anything outside printable ASCII with an error that quotes the whole value: a credential on stderr).
 * Throws a ConfigError naming --token, the file and the 1-based byte position of the first bad character in
 * the file, never the token's content (exit 2).
 */
export function bearerTokenOfFlag(raw: string, file: string): string {
  const token = raw.trim();
  if (token === '') throw new ConfigError(`--token: ${file} is empty (give the file holding the service-account token)`);
  if (B64TOKEN.test(token)) return token;
  const chars = [...token];
  let at = chars.findIndex((c) => !B64TOKEN_CHAR_OR_PADDING.test(c));
  // Only alphabet characters, so an '=' before the end: padding comes last.
  if (at < 0) at = Math.max(0, chars.findIndex((c, i) => c === '=' && chars.slice(i).some((d) => d !== '=')));
  const kind = chars[at] === '=' ? "an '=' before the end" : kindOfCharacter(chars[at]!);
  const byte = Buffer.byteLength(raw.slice(0, raw.indexOf(token)) + chars.slice(0, at).join(''), 'utf8') + 1;
  throw new ConfigError(
    `--token: ${file} holds ${kind} at byte ${byte} of the file, which a bearer token cannot carry (RFC 6750: letters, digits, - . _ ~ + / and trailing =; a JWT is base64url segments joined by dots)`,
  );
}

/** The --root file's text, checked to hold at least one PEM certificate (a ConfigError naming --root otherwise, exit 2). */
export function rootBundleOfFlag(rootPem: string, file: string): string {
  if (!rootPem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new ConfigError(`--root: ${file} holds no PEM certificate (give the root bundle, e.g. the cacerts folder's root-cert.pem)`);
  }
  return rootPem;
}
