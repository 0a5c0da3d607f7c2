import type * as P11 from 'pkcs11js';

/** Which key on the token: CKA_LABEL and/or CKA_ID. */
export interface KeySelector {
  object?: string | undefined;
  id?: Buffer | undefined;
}

/**
 * What the token says about the private keys a selector matches, as plain data (it crosses from a
 * signing thread to the main thread): up to two handles (two means "more than one"), and for the
 * first its type, protection flags and public-key attributes.
 */
export interface KeyReading {
  handles: Buffer[];
  keyType?: number | undefined;
  sensitive?: boolean | undefined;
  extractable?: boolean | undefined;
  ecParams?: Buffer | undefined;
  /** From the public key object with the same label/id: the private object carries no CKA_EC_POINT. */
  ecPoint?: Buffer | undefined;
  modulus?: Buffer | undefined;
  exponent?: Buffer | undefined;
}

/**
 * Reads the private key `selector` names on `session` (C_FindObjects* and C_GetAttributeValue;
 * reference §2). Both can block on a token that stops answering (SoftHSM waits for its file
 * locks), so the token makes this call on a signing thread when a timeout is set. Throws the
 * Cryptoki error as pkcs11js raises it.
 */
export function readKey(lib: P11.PKCS11, p: typeof P11, session: Buffer, selector: KeySelector): KeyReading {
  const find = (cls: number): Buffer[] => {
    const template: P11.Template = [{ type: p.CKA_CLASS, value: cls }];
    if (selector.object !== undefined) template.push({ type: p.CKA_LABEL, value: selector.object });
    if (selector.id !== undefined) template.push({ type: p.CKA_ID, value: selector.id });
    lib.C_FindObjectsInit(session, template);
    try {
      return lib.C_FindObjects(session, 2);
    } finally {
      lib.C_FindObjectsFinal(session);
    }
  };
  const handles = find(p.CKO_PRIVATE_KEY);
  if (handles.length !== 1) return { handles };
  const handle = handles[0]!;
  const attrs = lib.C_GetAttributeValue(session, handle, [{ type: p.CKA_KEY_TYPE }, { type: p.CKA_SENSITIVE }, { type: p.CKA_EXTRACTABLE }]);
  const keyTypeValue = attrs[0]!.value as Buffer;
  const keyType = keyTypeValue.readUIntLE(0, Math.min(keyTypeValue.length, 6));
  const flag = (i: number) => {
    const v = attrs[i]!.value;
    return Buffer.isBuffer(v) ? v[0] === 1 : Boolean(v);
  };
  const reading: KeyReading = { handles, keyType, sensitive: flag(1), extractable: flag(2) };
  if (keyType === p.CKK_EC) {
    reading.ecParams = lib.C_GetAttributeValue(session, handle, [{ type: p.CKA_EC_PARAMS }])[0]!.value as Buffer;
    const pub = find(p.CKO_PUBLIC_KEY);
    if (pub.length === 1) reading.ecPoint = lib.C_GetAttributeValue(session, pub[0]!, [{ type: p.CKA_EC_POINT }])[0]!.value as Buffer;
  } else if (keyType === p.CKK_RSA) {
    const [n, e] = lib.C_GetAttributeValue(session, handle, [{ type: p.CKA_MODULUS }, { type: p.CKA_PUBLIC_EXPONENT }]);
    reading.modulus = n!.value as Buffer;
    reading.exponent = e!.value as Buffer;
  }
  return reading;
}
