#!/usr/bin/env node
import { join, resolve, sep } from 'node:path';
import { requestWorkloadCertificate } from './client/index.js';
import { parseServeConfig, requireAuthenticator, SERVE_FLAGS, type ServeConfig } from './config.js';
import { DEV_GRPC_LISTEN, DEV_MONITORING_LISTEN, ensureDevEnvironment, mintDevToken, writeFileAtomic, defaultDevDir } from './dev/index.js';
import { formatGoDuration } from './duration.js';
import { ConfigError, flagHelp, parseFlags, parseHostPort, type FlagSpec } from './flags.js';
import { createLogger } from './observability/index.js';
import { BundleError, KEY_SPECS, type KeySpec } from './pki/index.js';
import { ListenError, PrimaryBundle, probeListen, receiveBundleFeed, reportReadiness, reportStartupFailure, runPrimary, shareMetricsWithPrimary, startService, usableCores, type WorkerService } from './server/index.js';
import { checkFileFlags, readFlagFile } from './preflight.js';
import { bearerTokenOfFlag, identityOfTokenFlag, requestFailure, rootBundleOfFlag } from './request-errors.js';
import cluster from 'node:cluster';
import { cacertsCommandHelp, CACERTS_USAGE, runCacertsCommand } from './operator/index.js';
import { configurationReferenceMarkdown, DEV_TOKEN_FLAGS, REQUEST_FLAGS } from './commands.js';
import { versionText } from './version.js';

const USAGE = `svid-ca: a pluggable certificate authority for Istio

Usage:
  svid-ca serve [flags]           run the CA (IstioCertificateService/CreateCertificate)
  svid-ca dev-token [flags]       print a service-account token from the dev issuer
  svid-ca request [flags]         do what a sidecar does: key, CSR, call, verify, write files
  svid-ca cacerts COMMAND         build, check and rotate cacerts folders (init-root, init-intermediate,
                                  verify, bundle, plan-rotation, crl); svid-ca cacerts help
  svid-ca help [COMMAND]          flags of a command (also: svid-ca COMMAND --help)
  svid-ca --version               version of svid-ca, Node.js and OpenSSL
`;

function required(values: Map<string, unknown>, name: string): string {
  const v = values.get(name);
  if (typeof v !== 'string' || v === '') throw new ConfigError(`--${name}: a value is required`);
  return v;
}

/** --dev fills in whatever the operator left at its default with the embedded dev CA and issuer. */
async function applyDevDefaults(cfg: ServeConfig): Promise<void> {
  const env = await ensureDevEnvironment(cfg.devDir ?? defaultDevDir());
  const isDefault = (k: string) => cfg.sources[k] === 'default';
  if (isDefault('cacerts')) cfg.cacerts = env.cacertsDir;
  if (isDefault('listen')) cfg.listen = parseHostPort(DEV_GRPC_LISTEN)!;
  if (isDefault('monitoring-listen')) cfg.monitoringListen = parseHostPort(DEV_MONITORING_LISTEN)!;
  if (!cfg.jwt && !cfg.jwtIssuersFile) cfg.jwt = { issuer: env.issuer, audience: 'istio-ca', jwksFile: env.jwksFile };
  if (env.created) process.stderr.write(`svid-ca: created the dev CA and JWT issuer in ${env.dir}\n`);
}

/** The dev CA's keys sit in a source tree: never sign production workloads with them. */
function refuseDevCaInProduction(cfg: ServeConfig): void {
  if (process.env.NODE_ENV !== 'production') return;
  const devDir = resolve(cfg.devDir ?? defaultDevDir());
  const cacerts = resolve(cfg.cacerts);
  if (cfg.dev || cacerts === devDir || cacerts.startsWith(devDir + sep)) {
    throw new ConfigError(`--cacerts: ${cacerts} is the development CA (certs-dev/), refused with NODE_ENV=production`);
  }
}

/** The startup failures an operator can act on: one line, exit 1 (a bad flag value is a ConfigError: exit 2). */
function startupFailureMessage(err: unknown): string | undefined {
  return err instanceof BundleError || err instanceof ListenError ? err.message : undefined;
}

async function serve(argv: string[]): Promise<number> {
  const cfg = parseServeConfig(argv, process.env);
  if (cfg.dev) await applyDevDefaults(cfg);
  requireAuthenticator(cfg);
  refuseDevCaInProduction(cfg);
  const inWorker = cluster.isWorker;
  // Each worker's lines say which process wrote them (per-process facts: calls, 'svid-ca serving').
  const processLogger = createLogger(cfg.logLevel, undefined, cfg.logBufferBytes);
  const logger = inWorker ? processLogger.child({ worker: cluster.worker!.id }) : processLogger;
  // One request's bug must never take the CA down: log it and keep serving.
  process.on('uncaughtException', (err) => logger.error({ err }, 'uncaught exception; still serving'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection; still serving'));
  if (!inWorker) {
    // Checked once, before any worker starts: a bad file or a busy port is one line.
    checkFileFlags(cfg);
    try {
      await probeListen('--listen', cfg.listen);
      await probeListen('--monitoring-listen', cfg.monitoringListen);
    } catch (err) {
      if (!(err instanceof ListenError)) throw err;
      logger.fatal({ err: err.message }, 'cannot listen');
      return failStartup(logger, err.message);
    }
    logger.info(
      {
        settings: {
          // Only what this run uses: --self-signed reads no cacerts folder.
          ...(cfg.selfSigned ? { selfSignedDir: cfg.selfSigned.dir ?? '(memory only)' } : { cacerts: cfg.cacerts }),
          trustDomain: cfg.trustDomain,
          defaultTtl: formatGoDuration(cfg.defaultTtlMs),
          maxTtl: formatGoDuration(cfg.maxTtlMs),
          servingDns: cfg.servingDns,
          jwtIssuer: cfg.jwt?.issuer,
          jwtAudience: cfg.jwt?.audience,
          clusterId: cfg.clusterId,
        },
        sources: cfg.sources,
      },
      'starting svid-ca',
    );
  }
  const workers = workerCount(cfg, logger);
  if (workers > 1 && cluster.isPrimary) return servePrimary(cfg, logger, workers);
  let service: Awaited<ReturnType<typeof startService>> | WorkerService;
  try {
    service = inWorker
      ? await startService({ ...cfg, feed: await receiveBundleFeed(logger, { trustDomain: cfg.trustDomain, servingDns: cfg.servingDns }, cfg.signingKey), monitoringListen: undefined, onReadiness: reportReadiness }, logger)
      : await startService({ ...cfg, onReadiness: undefined }, logger);
    if (inWorker) shareMetricsWithPrimary(service.metrics.registry);
  } catch (err) {
    const message = startupFailureMessage(err);
    if (message === undefined) throw err;
    logger.fatal(err instanceof BundleError ? { file: err.file, problem: err.problem } : { err: message }, 'cannot start');
    if (inWorker) {
      // The primary prints the one line for all workers.
      await reportStartupFailure(message);
      return new Promise((resolve) => logger.flush(() => resolve(1)));
    }
    return failStartup(logger, message);
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      // A terminal's Ctrl+C reaches the workers directly and through the primary: stop once, and
      // keep handling the signals, so a second one does not kill the process mid-drain.
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      service.close(cfg.shutdownGraceMs, cfg.shutdownDelayMs).then(() => {
        logger.info({}, 'stopped');
        logger.flush(() => resolve(0));
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

/** One line on stderr (the log has the details), exit 1. */
function failStartup(logger: ReturnType<typeof createLogger>, message: string): Promise<number> {
  process.stderr.write(`svid-ca: ${message}\n`);
  return new Promise((resolve) => logger.flush(() => resolve(1)));
}

/**
 * --workers: 0 means one per usable core; self-signed mode needs one process (one root, one rotator), which is
 * worth a warning only when the operator asked for more (flag or variable), not for the default.
 */
function workerCount(cfg: ServeConfig, logger: ReturnType<typeof createLogger>): number {
  const wanted = cfg.workers === 0 ? usableCores() : cfg.workers;
  if (wanted > 1 && cfg.selfSigned) {
    if (cluster.isPrimary && cfg.sources.workers !== 'default') logger.warn({ workers: wanted }, '--self-signed runs one process (one root and one rotator): ignoring --workers');
    return 1;
  }
  return wanted;
}

/** The primary of --workers N: loads and owns the bundle (one clear line if unusable), then runs the workers. */
async function servePrimary(cfg: ServeConfig, logger: ReturnType<typeof createLogger>, workers: number): Promise<number> {
  let bundle: PrimaryBundle;
  try {
    // With --signing-key (issue #17) the primary opens its own token session here (it checks the key
    // and signs the serving certificate); node:cluster workers are fresh processes (fork + exec) that
    // open their own in receiveBundleFeed, so no PKCS#11 state is inherited.
    bundle = await PrimaryBundle.load(cfg, logger);
  } catch (err) {
    if (err instanceof BundleError) {
      logger.fatal({ file: err.file, problem: err.problem }, 'cannot load the signing bundle');
      return failStartup(logger, err.message);
    }
    throw err;
  }
  let primary: Awaited<ReturnType<typeof runPrimary>>;
  try {
    primary = await runPrimary({ workers, monitoringListen: cfg.monitoringListen, shutdownGraceMs: cfg.shutdownGraceMs, logger, bundle });
  } catch (err) {
    bundle.stop();
    if (err instanceof ListenError) return failStartup(logger, err.message);
    throw err;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (code: number, why: string, message?: string) => {
      if (stopping) return;
      stopping = true;
      if (message) process.stderr.write(`svid-ca: ${message}\n`);
      logger.info({ why }, 'shutting down the workers');
      primary.stop().then(() => {
        logger.info({}, 'stopped');
        logger.flush(() => resolve(code));
      });
    };
    process.on('SIGTERM', () => stop(0, 'SIGTERM'));
    process.on('SIGINT', () => stop(0, 'SIGINT'));
    primary.startupFailure.then((f) => stop(f.code, 'a worker failed to start', f.message));
  });
}

async function devToken(argv: string[]): Promise<number> {
  const { values } = parseFlags(DEV_TOKEN_FLAGS, argv, process.env);
  const env = await ensureDevEnvironment((values.get('dev-dir') as string | undefined) ?? defaultDevDir());
  const token = await mintDevToken(env, {
    namespace: required(values, 'namespace'),
    serviceAccount: required(values, 'service-account'),
    podName: values.get('pod') as string | undefined,
    audience: values.get('audience') as string,
    ttlSeconds: Math.floor((values.get('ttl') as number) / 1000),
  });
  process.stdout.write(token + '\n');
  return 0;
}

async function request(argv: string[]): Promise<number> {
  const { values } = parseFlags(REQUEST_FLAGS, argv, process.env);
  const key = values.get('key') as string;
  if (!KEY_SPECS.includes(key as KeySpec)) throw new ConfigError(`--key: invalid value "${key}" (want one of ${KEY_SPECS.join(', ')})`);
  const tokenFile = required(values, 'token');
  const token = bearerTokenOfFlag(readFlagFile('--token', tokenFile), tokenFile);
  const rootFile = required(values, 'root');
  const rootPem = rootBundleOfFlag(readFlagFile('--root', rootFile), rootFile);
  const out = required(values, 'out');
  const ca = values.get('ca') as { host: string; port: number };
  const serverName = values.get('server-name') as string | undefined;
  const identity = (values.get('identity') as string | undefined) ?? identityOfTokenFlag(token, tokenFile, values.get('trust-domain') as string);
  const ttl = values.get('ttl') as number | undefined;
  const result = await requestWorkloadCertificate({
    address: `${ca.host}:${ca.port}`,
    rootPem,
    serverName,
    token,
    key: key as KeySpec,
    identity,
    ttlSeconds: ttl === undefined ? undefined : Math.floor(ttl / 1000),
    clusterId: values.get('cluster-id') as string,
  }).catch(async (err: unknown) => {
    throw await requestFailure(err, { host: ca.host, port: ca.port, rootFile, rootPem, serverName });
  });
  writeFileAtomic(join(out, 'key.pem'), result.keyPem, 0o600);
  writeFileAtomic(join(out, 'cert-chain.pem'), result.certChain.join(''));
  writeFileAtomic(join(out, 'root-cert.pem'), result.rootPem);
  process.stdout.write(
    `identity: ${result.leaf.subjectAltName?.replace(/^URI:/, '')}\nserial:   ${result.leaf.serialNumber.toLowerCase()}\nexpires:  ${new Date(result.leaf.validTo).toISOString()}\nwritten:  ${join(out, 'key.pem')}, ${join(out, 'cert-chain.pem')}, ${join(out, 'root-cert.pem')}\n`,
  );
  return 0;
}

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; flags: readonly FlagSpec[]; env?: string }> = {
  serve: { run: serve, flags: SERVE_FLAGS, env: 'SVID_CA_' },
  'dev-token': { run: devToken, flags: DEV_TOKEN_FLAGS },
  request: { run: request, flags: REQUEST_FLAGS },
};

/** `svid-ca help TOPIC...` / `svid-ca COMMAND --help`: the usage or flag table; undefined for an unknown topic. */
function helpText(topic: readonly string[]): string | undefined {
  const [command, sub] = topic;
  if (command === undefined) return USAGE;
  if (command === '--markdown') return configurationReferenceMarkdown();
  if (command === 'cacerts') return sub === undefined ? CACERTS_USAGE : cacertsCommandHelp(sub);
  const cmd = COMMANDS[command];
  return cmd && `svid-ca ${command} flags:\n${flagHelp(cmd.flags, cmd.env)}\n`;
}

/**
 * A reader that closes the pipe early (`svid-ca cacerts crl ... | head -1`, `... 2>&1 | true`) is not an
 * error: the rest of the output is dropped and the command finishes its work (files it writes are written)
 * and exits with its own status (0, or 2 for a refused flag), with nothing on stderr, instead of dying on an
 * unhandled EPIPE (which made every failure exit 1). stdout not for `serve`, whose stdout is its log;
 * stderr for every command, `serve` too (its one-line startup failures keep their exit status).
 */
function dropOutputWhenReaderCloses(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
    stream.destroy();
  });
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== 'serve') dropOutputWhenReaderCloses(process.stdout);
  dropOutputWhenReaderCloses(process.stderr);
  if (command === '--version' || command === 'version') {
    process.stdout.write(versionText() + '\n');
    return 0;
  }
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    const text = helpText(command === 'help' ? rest : []);
    if (text === undefined) {
      process.stderr.write(`svid-ca: no help for "${rest.join(' ')}": unknown command\n${USAGE}`);
      return 2;
    }
    process.stdout.write(text);
    return 0;
  }
  if (command === 'cacerts') {
    try {
      return runCacertsCommand(rest);
    } catch (err) {
      process.stderr.write(`svid-ca: ${(err as Error).message}\n`);
      return err instanceof ConfigError ? 2 : 1;
    }
  }
  const cmd = COMMANDS[command];
  if (!cmd) {
    process.stderr.write(`svid-ca: unknown command "${command}"\n${USAGE}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(helpText([command])!);
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`svid-ca: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`svid-ca: ${(err as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    if (code !== 0 || process.argv[2] !== 'serve') setTimeout(() => process.exit(code), 100).unref();
    else process.exit(code);
  },
  (err: Error) => {
    process.stderr.write(`svid-ca: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
