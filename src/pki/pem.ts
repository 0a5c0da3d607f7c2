/** PEM framing (RFC 7468). pkijs works on DER only, so this thin layer sits in front of it. */

export interface PemBlock {
  type: string;
  der: Buffer;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** Every PEM block in `text`, in order. Text outside blocks is ignored, as OpenSSL and Go do. */
export function decodePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    const body = (match[2] ?? '').replace(/[\r\n\t ]/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) continue;
    blocks.push({ type: match[1] ?? '', der: Buffer.from(body, 'base64') });
  }
  return blocks;
}

/**
 * PEM of `der` with 64-character base64 lines (RFC 7468 strict form, as OpenSSL writes it). Runs once
 * per issued leaf: sliced in a loop rather than with a /.{1,64}/g match and join (1.6-1.8 -> 0.4-0.5 us
 * per leaf); test/pem-encode.test.ts holds it equal to Node's X509Certificate.toString().
 */
export function encodePem(type: string, der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  let body = '';
  for (let at = 0; at < b64.length; at += 64) body += (at === 0 ? '' : '\n') + b64.slice(at, at + 64);
  return `-----BEGIN ${type}-----\n${body}\n-----END ${type}-----\n`;
}

/** The certificates of a PEM file, re-framed one per string, each ending in exactly one newline (istiod's response shape). */
export function splitCertificatePem(text: string): string[] {
  return decodePem(text)
    .filter((b) => b.type === 'CERTIFICATE')
    .map((b) => encodePem('CERTIFICATE', b.der));
}

/** `text` with surrounding blank lines removed and exactly one trailing newline. */
export function withOneNewline(text: string): string {
  return text.replace(/^\n+/, '').replace(/\n*$/, '\n');
}
