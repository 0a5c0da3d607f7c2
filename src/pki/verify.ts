import { X509Certificate } from 'node:crypto';

/** child was issued by parent: names chain and parent's key verifies child's signature (node:crypto). */
export function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

/** A certificate's subject on one line ("O=x, CN=y"); '' for an empty subject, which Node reports as undefined. */
export function subjectText(c: X509Certificate): string {
  return (c.subject ?? '').replace(/\n/g, ', ');
}

const nameOf = (c: X509Certificate): string => subjectText(c) || c.subjectAltName || '(empty subject)';

function validAt(c: X509Certificate, at: Date): boolean {
  return new Date(c.validFrom) <= at && at < new Date(c.validTo);
}

/**
 * Builds and checks leaf -> intermediates -> root, as a client would: signatures, names, validity
 * at `at`, CA flags above the leaf. Returns the path or throws an Error saying where it broke.
 */
export function verifyCertificateChain(leaf: X509Certificate, intermediates: X509Certificate[], roots: X509Certificate[], at: Date = new Date()): X509Certificate[] {
  const path = [leaf];
  let current = leaf;
  for (let depth = 0; depth < 10; depth++) {
    if (!validAt(current, at)) throw new Error(`certificate "${nameOf(current)}" is not valid at ${at.toISOString()}`);
    const root = roots.find((r) => r.raw.equals(current.raw) || issuedBy(current, r));
    if (root) {
      if (!root.raw.equals(current.raw)) path.push(root);
      return path;
    }
    const next = intermediates.find((c) => !path.includes(c) && issuedBy(current, c));
    if (!next) throw new Error(`no issuer found for "${nameOf(current)}" among the chain and roots`);
    if (!next.ca) throw new Error(`chain certificate "${nameOf(next)}" is not a CA`);
    path.push(next);
    current = next;
  }
  throw new Error('certificate chain is too long');
}
