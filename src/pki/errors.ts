/**
 * Errors raised by the PKI layer. Each carries a kind the server maps to a gRPC status,
 * and a message written for the caller (it never contains key material or whole CSRs).
 */
export type CsrProblem = 'malformed' | 'signature' | 'key' | 'san';

export class CsrError extends Error {
  constructor(
    readonly problem: CsrProblem,
    message: string,
  ) {
    super(message);
    this.name = 'CsrError';
  }
}

/** A cacerts bundle that cannot be used; `file` names the file at fault (or the folder). */
export class BundleError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'BundleError';
  }
}
