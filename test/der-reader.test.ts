/**
 * src/pki/der.ts: the hot path's narrow DER reader (walkDer) against asn1js (decodeDerWithAsn1js).
 * Wherever the narrow reader gives an answer it must be the element tree asn1js gives for the same
 * bytes (tags, forms, offsets, OID text), on valid CSRs, byte-mutated ones and random bytes; where
 * it declines, asn1js decides, and CSRs outside its subset still read exactly as the pkijs reader
 * reads them (the asn1js route is live, not dead code).
 */
import { sign } from 'node:crypto';
import * as asn1js from 'asn1js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeDerWithAsn1js, walkDer, type DerElement } from '../src/pki/der.js';
import { buildCsrPem, CsrError, decodePem, generateKeyPair, parseCsrDer, readCsrDer, spkiDer, type ParsedCsr } from '../src/pki/index.js';

const ID = 'spiffe://cluster.local/ns/demo/sa/web';
const RUNS = 400;

const keys = { 'EC P-256': generateKeyPair('ec-p256').privateKey, 'RSA-2048': generateKeyPair('rsa-2048').privateKey };
const validCsrs = Object.entries(keys).map(([name, privateKey]) => ({
  name,
  der: decodePem(buildCsrPem({ privateKey, sans: [{ type: 'uri', value: ID }], subjectOrganization: 'cluster.local' }))[0]!.der,
}));

/** The narrow reader's answer, when it gives one, is asn1js' tree. */
function agree(bytes: Uint8Array): DerElement | undefined {
  const walked = walkDer(bytes);
  if (walked !== undefined) expect(walked).toEqual(decodeDerWithAsn1js(bytes));
  return walked;
}

describe('walkDer against asn1js', () => {
  for (const csr of validCsrs) {
    it(`${csr.name} CSR: read by the narrow reader, element for element as asn1js reads it`, () => {
      const tree = agree(csr.der);
      expect(tree).toBeDefined();
      // CertificationRequest: info, algorithm, signature; the algorithm's OID as text.
      expect(tree!.children).toHaveLength(3);
      expect(tree!.children[1]!.children[0]!.oid).toBe(csr.name === 'EC P-256' ? '1.2.840.10045.4.3.2' : '1.2.840.113549.1.1.11');
    });

    it(`${csr.name} CSR with 1-4 bytes changed: the narrow reader declines or agrees with asn1js`, () => {
      let walked = 0;
      fc.assert(
        fc.property(fc.array(fc.record({ at: fc.nat(csr.der.length - 1), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }), (edits) => {
          const der = Buffer.from(csr.der);
          for (const e of edits) der[e.at] = e.value;
          if (agree(der)) walked++;
        }),
        { numRuns: RUNS },
      );
      // Not vacuous: some mutants stay inside the subset (a changed content byte).
      expect(walked).toBeGreaterThan(0);
    });
  }

  it('random bytes: the narrow reader declines or agrees with asn1js, never throws', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        agree(bytes);
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('random TLV trees in and out of its subset: declines or agrees', () => {
    const leaf = fc.record({ id: fc.integer({ min: 0, max: 255 }).filter((b) => (b & 0x20) === 0 && (b & 0x1f) !== 0x1f), body: fc.uint8Array({ maxLength: 12 }) });
    const tlv = (id: number, body: Uint8Array, longForm: boolean): Buffer =>
      Buffer.concat([Buffer.from(longForm ? [id, 0x81, body.length] : [id, body.length]), body]);
    fc.assert(
      fc.property(fc.array(leaf, { maxLength: 6 }), fc.boolean(), fc.constantFrom(0x30, 0x31, 0xa0, 0xa3), (leaves, longForm, outer) => {
        const inner = Buffer.concat(leaves.map((l) => tlv(l.id, l.body, longForm)));
        if (inner.length > 127) return;
        agree(tlv(outer, inner, longForm));
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('declines what it does not read: indefinite length, multi-byte tag, BMPString, OID with padding', () => {
    expect(walkDer(Buffer.from([0x30, 0x80, 0x05, 0x00, 0x00, 0x00]))).toBeUndefined();
    expect(walkDer(Buffer.from([0x3f, 0x10, 0x00]))).toBeUndefined();
    expect(walkDer(Buffer.from([0x30, 0x04, 0x1e, 0x02, 0x00, 0x41]))).toBeUndefined();
    expect(walkDer(Buffer.from([0x06, 0x03, 0x2a, 0x80, 0x01]))).toBeUndefined();
    // asn1js reads the first, the third and the fourth; the indefinite length is not DER either way.
    expect(decodeDerWithAsn1js(Buffer.from([0x30, 0x80, 0x05, 0x00, 0x00, 0x00]))).toBeUndefined();
    expect(decodeDerWithAsn1js(Buffer.from([0x30, 0x04, 0x1e, 0x02, 0x00, 0x41]))?.children[0]?.tagNumber).toBe(30);
  });
});

describe('CSRs outside the narrow subset are read by asn1js, as the pkijs reader reads them', () => {
  const comparable = (p: ParsedCsr) => ({ ...p, publicKey: p.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'), publicKeyDer: p.publicKeyDer.toString('hex') });
  const outcome = (fn: () => ParsedCsr) => {
    try {
      return comparable(fn());
    } catch (err) {
      return err instanceof CsrError ? `${err.problem}: ${err.message}` : `other: ${String(err)}`;
    }
  };

  /** A CSR for ID whose subject is `subject`, self-signed by an EC P-256 key. */
  function csrWithSubject(subject: asn1js.BaseBlock): Buffer {
    const privateKey = keys['EC P-256'];
    const san = new asn1js.Sequence({ value: [new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 6 }, valueHex: Buffer.from(ID) })] });
    const ext = new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: '2.5.29.17' }), new asn1js.OctetString({ valueHex: san.toBER(false) })] });
    const attr = new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: '1.2.840.113549.1.9.14' }), new asn1js.Set({ value: [new asn1js.Sequence({ value: [ext] })] })] });
    const info = new asn1js.Sequence({
      value: [
        new asn1js.Integer({ value: 0 }),
        subject,
        asn1js.fromBER(new Uint8Array(spkiDer(privateKey))).result,
        new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: [attr] }),
      ],
    });
    const tbs = Buffer.from(info.toBER(false));
    const csr = new asn1js.Sequence({
      value: [asn1js.fromBER(new Uint8Array(tbs)).result, new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: '1.2.840.10045.4.3.2' })] }), new asn1js.BitString({ valueHex: sign('sha256', tbs, privateKey) })],
    });
    return Buffer.from(csr.toBER(false));
  }
  const rdn = (value: asn1js.BaseBlock) => new asn1js.Set({ value: [new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: '2.5.4.3' }), value] })] });

  it.each([
    ['a BMPString common name', new asn1js.BmpString({ value: 'web' })],
    ['a UTCTime where a name is expected', new asn1js.UTCTime({ valueDate: new Date(Date.UTC(2026, 0, 1)) })],
    ['a TeletexString common name', new asn1js.TeletexString({ value: 'web' })],
  ])('%s: issued with the same result by both readers', (_name, value) => {
    const der = csrWithSubject(new asn1js.Sequence({ value: [rdn(value)] }));
    expect(walkDer(der)).toBeUndefined();
    const fast = outcome(() => readCsrDer(der));
    expect(fast).toEqual(outcome(() => parseCsrDer(der)));
    expect(typeof fast === 'string' ? fast : fast.sans.uris).toEqual([ID]);
  });
});
