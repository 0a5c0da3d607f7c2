import type { ConfigurationOptions, Middleware } from '@kubernetes/client-node';

/**
 * Per-call options that abort the request after `ms`. The object API's typings ask for Observable
 * middleware, but its promise layer wraps what it is given in PromiseMiddlewareWrapper, so promise
 * middleware (client-node's exported `Middleware`) is what actually runs; hence the cast.
 */
export function withTimeout(ms: number): ConfigurationOptions {
  const middleware: Middleware = {
    pre: async (ctx) => {
      ctx.setSignal(AbortSignal.timeout(ms));
      return ctx;
    },
    post: async (res) => res,
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' } as unknown as ConfigurationOptions;
}
