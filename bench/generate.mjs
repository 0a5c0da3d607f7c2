// Worker thread of the load generator: pre-generates distinct requests before a run (a CSR and a
// token per request, no two alike; or, for the renewals scenario, a token per workload reused by
// its renewals) so that the timed run only writes bytes.
//
// Each request is { frame, authorization, identity }: `frame` is the gRPC message (5-byte prefix +
// protobuf IstioCertificateRequest encoded once with protobufjs), `authorization` the header value.
import { createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import * as asn1js from 'asn1js';
import { importPKCS8, SignJWT } from 'jose';
import { requestType } from './proto.mjs';

const { start, count, csrKey, keyPoolSize, jwt, trustDomain, validitySeconds, identities, issuedAt, attack } = workerData;

const ber = (block) => Buffer.from(block.toBER(false));

/** A TLV around already-encoded DER parts: asn1js writes the identifier and the length. */
function tlv(tagClass, tagNumber, parts) {
  const block = new asn1js.Primitive({ idBlock: { tagClass, tagNumber }, valueHex: Buffer.concat(parts) });
  block.idBlock.isConstructed = true;
  return ber(block);
}
const sequence = (parts) => tlv(1, 16, parts);

const newKey = () =>
  csrKey === 'rsa-2048' ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey : generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;

// RSA key generation takes ~50-100 ms: RSA requests draw from a pool of keys (CSRs still differ
// in SAN and signature); EC requests get a fresh key each, as ztunnel does.
const pool = keyPoolSize > 0 ? Array.from({ length: keyPoolSize }, newKey) : undefined;

// The constant parts of a ztunnel-style CSR: version 0, empty subject, extensionRequest header.
const VERSION = ber(new asn1js.Integer({ value: 0 }));
const EMPTY_NAME = sequence([]);
const EXTENSION_REQUEST_OID = ber(new asn1js.ObjectIdentifier({ value: '1.2.840.113549.1.9.14' }));
const SAN_HEAD = Buffer.concat([ber(new asn1js.ObjectIdentifier({ value: '2.5.29.17' })), ber(new asn1js.Boolean({ value: true }))]);

// The attacker of the cpu-attack scenario (issue #19): 3,300 empty extensions (~23 KB of CSR).
const EMPTY_EXTENSIONS = attack ? Array.from({ length: 3300 }, () => sequence([ber(new asn1js.ObjectIdentifier({ value: '1.2.3.4' })), ber(new asn1js.OctetString())])) : [];

/** PKCS#10 CSR DER: empty subject, the key's SPKI, a critical URI SAN; signed with the key. */
function csrDer(privateKey, spiffeId) {
  const uri = new asn1js.IA5String({ value: spiffeId });
  uri.idBlock.tagClass = 3;
  uri.idBlock.tagNumber = 6;
  const san = sequence([SAN_HEAD, ber(new asn1js.OctetString({ valueHex: sequence([ber(uri)]) }))]);
  const attribute = sequence([EXTENSION_REQUEST_OID, tlv(1, 17, [sequence([san, ...EMPTY_EXTENSIONS])])]);
  const info = sequence([VERSION, EMPTY_NAME, spkiOf(privateKey), tlv(3, 0, [attribute])]);
  const rsa = privateKey.asymmetricKeyType === 'rsa';
  const algorithm = rsa
    ? sequence([ber(new asn1js.ObjectIdentifier({ value: '1.2.840.113549.1.1.11' })), ber(new asn1js.Null())])
    : sequence([ber(new asn1js.ObjectIdentifier({ value: '1.2.840.10045.4.3.2' }))]);
  return sequence([info, algorithm, ber(new asn1js.BitString({ valueHex: sign('sha256', info, privateKey) }))]);
}

const spkiCache = new WeakMap();
function spkiOf(privateKey) {
  let der = spkiCache.get(privateKey);
  if (!der) {
    der = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
    spkiCache.set(privateKey, der);
  }
  return der;
}

function pem(der) {
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

const signingKey = await importPKCS8(jwt.signingKeyPem, jwt.alg);
// One issued-at for the whole run (run.mjs passes it), so that with `identities` every worker thread
// mints the very same token for an identity (RS256 signatures are deterministic).
const now = issuedAt ?? Math.floor(Date.now() / 1000);
const tokens = new Map();
async function tokenFor(k) {
  let token = tokens.get(k);
  if (!token) {
    const sa = `w${k}`;
    token = await new SignJWT({
      'kubernetes.io': { namespace: 'bench', serviceaccount: { name: sa, uid: `uid-${k}` }, pod: { name: `${sa}-pod`, uid: `pod-${k}` } },
    })
      .setProtectedHeader({ alg: jwt.alg, kid: jwt.kid, typ: 'JWT' })
      .setIssuer(jwt.issuer)
      .setSubject(`system:serviceaccount:bench:${sa}`)
      .setAudience('istio-ca')
      .setIssuedAt(now)
      .setExpirationTime(now + 6 * 3600)
      .sign(signingKey);
    // Distinct tokens are used once: keep only the reused ones.
    if (identities || attack) tokens.set(k, token);
  }
  return token;
}

const out = [];
for (let i = start; i < start + count; i++) {
  // Request i is identity i (no two alike), or with `identities` N one of N workloads renewing: the
  // same token again, a new key and CSR every time (as istio-agent rotates).
  // The attacker is one identity (one stolen token), with a distinct CSR each time.
  const k = attack ? 'attacker' : identities ? i % identities : i;
  const identity = `spiffe://${trustDomain}/ns/bench/sa/w${k}`;
  const key = pool ? pool[i % pool.length] : newKey();
  const message = requestType.encode({ csr: pem(csrDer(key, identity)), validityDuration: validitySeconds }).finish();
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1); // gRPC framing: compressed flag 0, 4-byte big-endian length
  frame.set(message, 5);
  out.push({ frame, authorization: `Bearer ${await tokenFor(k)}`, identity });
}
parentPort.postMessage(out);
