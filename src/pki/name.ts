import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from './oids.js';

/** A distinguished name for certificates we create (roots, intermediates): attributes in order. */
export interface NameAttributes {
  organization?: string;
  commonName?: string;
}

/** DER of a Name. UTF8String values, as Go and OpenSSL write them today; empty attributes are omitted. */
export function encodeName(attrs: NameAttributes): Buffer {
  const rdn = new pkijs.RelativeDistinguishedNames();
  const add = (type: string, value: string | undefined) => {
    if (value === undefined || value === '') return;
    rdn.typesAndValues.push(new pkijs.AttributeTypeAndValue({ type, value: new asn1js.Utf8String({ value }) }));
  };
  add(OID.organization, attrs.organization);
  add(OID.commonName, attrs.commonName);
  // Each attribute gets its own RDN set, as Go's pkix.Name does.
  const seq = new asn1js.Sequence({
    value: rdn.typesAndValues.map((tv) => new asn1js.Set({ value: [tv.toSchema()] })),
  });
  return Buffer.from(seq.toBER());
}

/** The empty Name (a SEQUENCE of no RDNs), used as the subject of workload and serving leaves. */
export const EMPTY_NAME_DER: Buffer = Buffer.from(new asn1js.Sequence({ value: [] }).toBER());
