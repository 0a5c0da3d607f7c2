import type { TokenReviewer, TokenReviewStatus } from '../auth/index.js';
import type { AuthenticationV1Api } from '@kubernetes/client-node';
import { describeKubeError } from './errors.js';
import { withTimeout } from './timeout.js';

/** A TokenReview not answered within this is treated as the API server being unavailable. */
const REVIEW_TIMEOUT_MS = 10_000;

/**
 * POST authentication.k8s.io/v1 TokenReview. Any failure to get an answer rejects with a message
 * (never the token) that says what went wrong; the authenticator turns it into UNAVAILABLE so agents
 * retry. A 401/403 means svid-ca's own credentials or RBAC are wrong, which the caller cannot fix
 * either, so it is reported the same way with a pointer to the cause.
 */
export class KubeTokenReviewer implements TokenReviewer {
  constructor(
    private readonly api: AuthenticationV1Api,
    private readonly timeoutMs = REVIEW_TIMEOUT_MS,
  ) {}

  async review(token: string, audiences: string[]): Promise<TokenReviewStatus> {
    try {
      const res = await this.api.createTokenReview(
        { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } } },
        withTimeout(this.timeoutMs),
      );
      return (res.status ?? {}) as TokenReviewStatus;
    } catch (err) {
      const f = describeKubeError(err);
      const hint = f.status === 401 || f.status === 403 ? " (check svid-ca's credentials and its RBAC: create tokenreviews)" : '';
      throw new Error(`${f.message}${hint}`);
    }
  }
}
