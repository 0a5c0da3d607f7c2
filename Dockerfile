# syntax=docker/dockerfile:1
# svid-ca image: `docker build -t svid-ca:0.1.0 .`
# test/production-install.test.ts reads the runtime stage's COPY and `npm ci` lines and repeats them in a temp
# folder, then starts the server from there: keep each COPY on one line and the runtime install as `npm ci ...`.

# Build: full dependencies (TypeScript) and `tsc`.
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src/ src/
RUN npm run build

# Runtime: production dependencies only, the compiled code and the protos the server loads at start.
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
# Heap sizing for the primary and each worker (they inherit NODE_OPTIONS). Under steady issuance Node 24's V8
# grows the young generation towards its default maximum although the live heap stays flat: 16 MiB semi-spaces
# keep each signing process ~60 MiB smaller in a restart storm at the same CPU per certificate (docs/performance.md).
# Nothing tighter: 4 or 8 MiB semi-spaces, or any --max-old-space-size from 96 to 160, cut the 10,000-pod storm's
# peak by 36-104 MiB but cost 2-26% more CPU per certificate and made the storm slower (paired storms, 2026-11-30;
# docs/performance.md "Memory"), and a hard old-space limit turns an overload into a crash.
# bench/run.mjs and bench/soak.mjs read this line and run the server with the same flags; the Deployment repeats it.
ENV NODE_OPTIONS="--max-semi-space-size=16"
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist/ dist/
COPY proto/ proto/
# Files stay owned by root and read-only to the process; it runs as a numeric non-root user so that
# Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
# 15012: gRPC over TLS (IstioCertificateService). 15014: plain HTTP /healthz, /readyz, /metrics.
EXPOSE 15012 15014
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (deploy/kubernetes/deployment.yaml).
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["serve"]
