import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { decodeJwt } from 'jose';
import { buildCsrPem, decodePem, generateKeyPair, privateKeyPem, verifyCertificateChain, type KeySpec } from '../pki/index.js';
import { loadServices, type IstioCertificateRequest, type IstioCertificateResponse } from '../server/index.js';
import { IpTargetCredentials } from './ip-target-credentials.js';

export interface CaClientOptions {
  /** host:port of the CA, as in an agent's CA_ADDR. */
  address: string;
  rootPem: string;
  /** TLS server name to verify; defaults to the host of `address`. */
  serverName?: string | undefined;
}

/** A gRPC client of IstioCertificateService over TLS, as istio-agent dials it. */
export type CaClient = grpc.Client & {
  CreateCertificate(
    req: Partial<IstioCertificateRequest> | Record<string, unknown>,
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: IstioCertificateResponse) => void,
  ): grpc.ClientUnaryCall;
};

export function createCaClient(o: CaClientOptions): CaClient {
  const { ca } = loadServices();
  const channelOptions: grpc.ChannelOptions = {};
  if (o.serverName) channelOptions['grpc.ssl_target_name_override'] = o.serverName;
  // An IP is no TLS server name (RFC 6066): without --server-name, dial it without one (see IpTargetCredentials).
  const host = o.address.slice(0, o.address.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');
  const credentials = !o.serverName && isIP(host) ? new IpTargetCredentials(o.rootPem, host) : grpc.credentials.createSsl(Buffer.from(o.rootPem));
  return new ca(o.address, credentials, channelOptions) as never;
}

export function callCreateCertificate(
  client: CaClient,
  request: Record<string, unknown>,
  metadata: Record<string, string> = {},
  deadlineMs = 10_000,
): Promise<IstioCertificateResponse> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve, reject) => {
    client.CreateCertificate(request, md, { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res!)));
  });
}

/** The identity a Kubernetes service-account token names (read, not verified: the CA verifies it). */
export function identityFromToken(token: string, trustDomain: string): string {
  const claims = decodeJwt(token);
  const parts = typeof claims.sub === 'string' ? claims.sub.split(':') : [];
  if (parts.length !== 4 || parts[0] !== 'system' || parts[1] !== 'serviceaccount') {
    throw new Error('token subject is not system:serviceaccount:<ns>:<sa>');
  }
  return `spiffe://${trustDomain}/ns/${parts[2]}/sa/${parts[3]}`;
}

export interface SidecarRequestOptions extends CaClientOptions {
  token: string;
  key: KeySpec;
  identity: string;
  ttlSeconds?: number;
  /** The clusterid header istio-agent sends (its cluster name); default `Kubernetes`, the agent's default. */
  clusterId?: string | undefined;
}

export interface SidecarResult {
  keyPem: string;
  certChain: string[];
  leaf: X509Certificate;
  /** The root bundle, the last element of the response. */
  rootPem: string;
}

/** What istio-agent does: new key, CSR with the SPIFFE SAN, call, and check the chain against the trusted root. */
export async function requestWorkloadCertificate(o: SidecarRequestOptions): Promise<SidecarResult> {
  const { privateKey } = generateKeyPair(o.key);
  const csr = buildCsrPem({ privateKey, sans: [{ type: 'uri', value: o.identity }], subjectOrganization: '' });
  const client = createCaClient(o);
  try {
    const res = await callCreateCertificate(
      client,
      { csr, validity_duration: String(o.ttlSeconds ?? 0), metadata: { fields: { CertSigner: { stringValue: '' } } } },
      { authorization: `Bearer ${o.token}`, clusterid: o.clusterId ?? 'Kubernetes' },
    );
    if (res.cert_chain.length < 2) throw new Error('invalid empty CertChain: the CA returned fewer than 2 elements');
    const certs = res.cert_chain.map((pem) => decodePem(pem).filter((b) => b.type === 'CERTIFICATE').map((b) => new X509Certificate(b.der)));
    const leaf = certs[0]![0]!;
    const trusted = decodePem(o.rootPem).map((b) => new X509Certificate(b.der));
    verifyCertificateChain(leaf, certs.slice(1).flat(), trusted);
    return { keyPem: privateKeyPem(privateKey), certChain: res.cert_chain, leaf, rootPem: res.cert_chain[res.cert_chain.length - 1]! };
  } finally {
    client.close();
  }
}
