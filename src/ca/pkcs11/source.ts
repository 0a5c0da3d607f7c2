import { randomBytes, verify, type KeyObject, type X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BundleError, signatureAlgorithmForKey, spkiDer, type ExternalSigningKey } from '../../pki/index.js';
import { publicKeyOf, Pkcs11Key } from './key.js';
import { Pkcs11Token, type TokenKeySpec, type TokenLog } from './token.js';
import { parsePkcs11Uri, Pkcs11UriError, type Pkcs11Uri } from './uri.js';

/** `serve --signing-key` settings (issue #17). Exactly one of uri / uriFile. */
export interface SigningKeyConfig {
  /** --signing-key: the RFC 7512 URI. */
  uri?: string | undefined;
  /** --signing-key-file: a file holding the URI, read again on every cacerts reload. */
  uriFile?: string | undefined;
  /** --pkcs11-module: the vendor's PKCS#11 library (.so). */
  modulePath?: string | undefined;
  /** --pkcs11-pin-file: the user PIN (trailing whitespace trimmed). */
  pinFile?: string | undefined;
  /** --pkcs11-sessions: the session pool size. */
  sessions: number;
  /** --pkcs11-sign-timeout, in milliseconds. */
  signTimeoutMs: number;
}

/** A key found on the token and checked against a signing certificate. */
export interface CheckedTokenKey extends ExternalSigningKey {
  warnings: string[];
}

const PROBE = Buffer.from('svid-ca signing-key probe ');

/**
 * Where the CA's key lives when it is not in the cacerts folder: a PKCS#11 token. Opens the module
 * and the token once per process (each node:cluster worker opens its own), and on every load
 * (start and each cacerts reload) reads the URI again, finds the key and checks it against the
 * signing certificate. Errors are BundleErrors naming the flag or file to fix, so a bad key is
 * refused like any bad bundle.
 */
export class Pkcs11SigningKeySource {
  #token: Pkcs11Token | undefined;

  constructor(
    private readonly config: SigningKeyConfig,
    private readonly log: TokenLog,
  ) {}

  /** The URI text as configured now (the file is read again). */
  uriText(): string {
    const c = this.config;
    if (c.uri !== undefined) return c.uri;
    try {
      return readFileSync(c.uriFile!, 'utf8').trim();
    } catch (err) {
      throw new BundleError(c.uriFile!, `--signing-key-file cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }

  /** The URI for logs and errors: without its query. */
  describe(): string {
    try {
      return this.#parse(this.uriText()).redacted;
    } catch {
      return this.config.uriFile ?? '--signing-key';
    }
  }

  #parse(text: string): Pkcs11Uri {
    try {
      return parsePkcs11Uri(text);
    } catch (err) {
      if (err instanceof Pkcs11UriError) throw new BundleError(this.config.uriFile ?? '--signing-key', `invalid PKCS#11 URI: ${err.message}`);
      throw err;
    }
  }

  /** The token, opened on first use; later URIs must name the same module and token. */
  #open(uri: Pkcs11Uri): Pkcs11Token {
    const modulePath = this.#modulePath(uri);
    if (this.#token && !this.#token.sameToken(modulePath, uri)) {
      throw new BundleError(this.config.uriFile ?? '--signing-key', `names another token or module than ${this.#token.description}; restart svid-ca to switch tokens`);
    }
    if (!this.#token) {
      const { pin, pinFile } = this.#pin(uri);
      this.#token = new Pkcs11Token({ modulePath, uri, pin, pinFile, sessions: this.config.sessions, signTimeoutMs: this.config.signTimeoutMs, log: this.log });
    }
    return this.#token;
  }

  #modulePath(uri: Pkcs11Uri): string {
    const flag = this.config.modulePath;
    if (flag && uri.modulePath && flag !== uri.modulePath) {
      throw new BundleError('--pkcs11-module', `the URI's module-path ${uri.modulePath} differs from --pkcs11-module ${flag}; give one`);
    }
    const path = flag ?? uri.modulePath;
    if (!path) throw new BundleError('--pkcs11-module', 'required with --signing-key: the PKCS#11 library of the token, e.g. /usr/lib/softhsm/libsofthsm2.so');
    return path;
  }

  #pin(uri: Pkcs11Uri): { pin: string; pinFile: string } {
    const flag = this.config.pinFile;
    if (flag && uri.pinSource && flag !== uri.pinSource) {
      throw new BundleError('--pkcs11-pin-file', `the URI's pin-source ${uri.pinSource} differs from --pkcs11-pin-file ${flag}; give one`);
    }
    const pinFile = flag ?? uri.pinSource;
    if (!pinFile) throw new BundleError('--pkcs11-pin-file', 'required with --signing-key (or pin-source=file:/path in the URI): the token user PIN, in a file');
    let pin: string;
    try {
      pin = readFileSync(pinFile, 'utf8').replace(/\s+$/, '');
    } catch (err) {
      throw new BundleError(pinFile, `the PIN file cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (pin === '') throw new BundleError(pinFile, 'the PIN file is empty');
    return { pin, pinFile };
  }

  /**
   * Finds the key the URI names and checks it against `cert` (ca-cert.pem's signing certificate):
   * the same public key, and a probe signature by the token that verifies with the certificate's
   * key (the deciding check). Warns when the key is not sensitive or is extractable.
   */
  load(cert: X509Certificate): CheckedTokenKey {
    const uri = this.#parse(this.uriText());
    const token = this.#open(uri);
    const selector = { object: uri.object, id: uri.id };
    const found = token.findKey(selector);
    const certKey = cert.publicKey;
    const tokenKey = publicKeyOf(found, uri.redacted);
    const certSpki = spkiDer(certKey);
    if (tokenKey && !spkiDer(tokenKey).equals(certSpki)) throw new BundleError(uri.redacted, 'the token key does not match the signing certificate (ca-cert.pem): different public key');
    const algorithm = signatureAlgorithmForKey(certKey);
    if (!algorithm) throw new BundleError(uri.redacted, 'the signing certificate key is neither EC P-256/P-384 nor RSA');
    const key = new Pkcs11Key(token, selector, found, algorithm, uri.redacted, certKey);
    const probe = Buffer.concat([PROBE, randomBytes(16)]);
    let signature: Buffer;
    try {
      signature = key.signSync(probe);
    } catch (err) {
      throw new BundleError(uri.redacted, `the token cannot sign a probe with the key (${(err as Error).message})`);
    }
    if (!verify(algorithm.hash, probe, certKey, signature)) {
      throw new BundleError(uri.redacted, 'the token key does not match the signing certificate (ca-cert.pem): a probe signature does not verify');
    }
    token.watchKey(selector);
    const warnings: string[] = [];
    if (!found.sensitive || found.extractable) {
      warnings.push(
        `the signing key ${uri.redacted} is ${[!found.sensitive ? 'not marked sensitive' : '', found.extractable ? 'extractable' : ''].filter(Boolean).join(' and ')}: ` +
          'the token may export it; generate keys with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false',
      );
    }
    return { publicKeyDer: tokenKey ? spkiDer(tokenKey) : certSpki, key, warnings };
  }

  /**
   * The key the URI names, for a certificate not made yet (issue #17: a self-signed root whose key
   * is on the token): found, or, when the token holds no key with the URI's object= and id=,
   * generated as `spec` (both must then be given). Returns its public key (from the token's public
   * key object or RSA attributes) and the key; BundleError naming the URI when neither works.
   */
  keyForNewCertificate(spec: TokenKeySpec): { publicKey: KeyObject; key: Pkcs11Key; generated: boolean } {
    const uri = this.#parse(this.uriText());
    const token = this.#open(uri);
    const selector = { object: uri.object, id: uri.id };
    if (token.countKeys(selector) === 0) {
      if (uri.object !== undefined && uri.id !== undefined) return { ...this.generate(spec), generated: true };
      const what = uri.object !== undefined ? `object=${uri.object}` : 'this id=';
      throw new BundleError(uri.redacted, `no private key ${what} on the token (logged in as user); to have svid-ca generate it at first start, name it with both object=LABEL and id=%xx`);
    }
    const found = token.findKey(selector);
    const publicKey = publicKeyOf(found, uri.redacted);
    if (!publicKey) throw new BundleError(uri.redacted, 'the token holds no public key object beside the private key: svid-ca cannot put the key in a certificate');
    const algorithm = signatureAlgorithmForKey(publicKey);
    if (!algorithm) throw new BundleError(uri.redacted, 'the key is neither EC P-256/P-384 nor RSA');
    return { publicKey, key: new Pkcs11Key(token, selector, found, algorithm, uri.redacted, publicKey), generated: false };
  }

  /**
   * Generates the key the URI names inside the token (both object= and id= are required, and no
   * key may carry either yet: an existing key is never replaced). Returns its public key and the
   * key itself, e.g. to sign a CSR.
   */
  generate(spec: TokenKeySpec): { publicKey: KeyObject; key: Pkcs11Key } {
    const uri = this.#parse(this.uriText());
    if (uri.object === undefined || uri.id === undefined) throw new BundleError('--key-uri', 'to generate a key, name it with both object=LABEL and id=%xx (CKA_LABEL and CKA_ID)');
    const token = this.#open(uri);
    for (const selector of [{ object: uri.object }, { id: uri.id }]) {
      if (token.countKeys(selector) > 0) {
        throw new BundleError(uri.redacted, `the token already holds a private key with ${selector.object !== undefined ? `object=${uri.object}` : 'this id='}; choose a new label and id (svid-ca never replaces a key)`);
      }
    }
    const found = token.generateKeyPair(spec, { object: uri.object, id: uri.id });
    const publicKey = publicKeyOf(found, uri.redacted);
    if (!publicKey) throw new BundleError(uri.redacted, 'the generated key has no public key object');
    const algorithm = signatureAlgorithmForKey(publicKey)!;
    return { publicKey, key: new Pkcs11Key(token, { object: uri.object, id: uri.id }, found, algorithm, uri.redacted, publicKey) };
  }

  close(): void {
    this.#token?.close();
    this.#token = undefined;
  }
}
