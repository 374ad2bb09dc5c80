// The only reader of argv, env and the config file: parses the command line, loads the config,
// picks the concrete implementations, wires the services, owns signals, sd_notify and exit codes.
//
// Exit codes: 0 success; 1 runtime failure (store locked, corrupt or unusable, a service failed,
// a fatal error while serving); 2 bad command line or bad config.
// First: sizes libuv's thread pool before anything can start it.
import './lib/threadpool.ts';
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { resolve, join } from 'node:path';
import { networkInterfaces } from 'node:os';
import { loadConfigFile, defaultConfig } from './config/load.ts';
import { phaseTimeoutsMs, type Config } from './config/schema.ts';
import { createLogger, LOG_LEVELS, type LogLevel, type Logger } from './lib/logger.ts';
import { createMetrics, observeStore } from './lib/metrics.ts';
import { MetalboxError, isMetalboxError } from './lib/errors.ts';
import { parseListen } from './lib/ipv4.ts';
import { createNotifier } from './lib/sd-notify.ts';
import type { Store } from './store/types.ts';
import { buildApp } from './api/app.ts';
import { ServiceRunner, type Service } from './services/service.ts';
import { EventLog } from './core/events.ts';
import { HttpService } from './services/http.ts';
import { loadTls } from './services/tls-files.ts';
import { MachineRegistry } from './core/machines.ts';
import { LifecycleRunner } from './services/lifecycle-runner.ts';
import { bmcPowerControl } from './api/bmc-power.ts';
import { ControlService } from './services/control.ts';
import { DhcpService } from './services/dhcp/server.ts';
import { DnsService } from './services/dns/server.ts';
import { NtpService } from './services/ntp/server.ts';
import { defaultBoot } from './services/dhcp/boot.ts';
import { TftpService } from './services/tftp/server.ts';
import { controlHandlers, runCommand, COMMANDS, type CliIo } from './cli/commands.ts';
import { assetsDir } from './cli/images.ts';
import { BMC_OPTIONS, pickBmcFlags } from './cli/bmc.ts';
import { USER_OPTIONS, pickUserFlags } from './cli/users.ts';
import { createAuthCore } from './core/auth.ts';
import { ReservationBook } from './core/reservations.ts';
import { BmcService, secretBoxLoader } from './services/bmc/service.ts';
import { AssetStore, IpxeBinaries } from './store/assets.ts';
import { VERSION } from './version.ts';
import { isSingleBinary } from './lib/addon.ts';
import { REMOTE_COMMANDS, REMOTE_USAGE, runRemote, wantsRemote } from './cli/remote.ts';

const STOP_TIMEOUT_MS = 10_000;
/** The appliance's config (image/, systemd/): API commands on the box find its HTTPS port and certificate there. */
const APPLIANCE_CONFIG = '/etc/metalbox/metalbox.yaml';

const USAGE = `metalbox ${VERSION}: bare-metal provisioning appliance

usage: metalbox <command> [options]

  serve [--config FILE] [--log-level LEVEL]   run the appliance (embedded default config without --config)
  version                                     print the version
  config check FILE                           validate a config file and exit
  config default                              print the embedded default config
  status [--config FILE]                      ask the running metalbox for its status
  backup FILE [--config FILE]                 write a consistent snapshot of the store to FILE
  restore FILE [--config FILE]                load a backup into an empty state dir
  settings list|get KEY|set KEY VALUE [--config FILE]
                                              read or write a setting (VALUE is JSON or a plain string)
  images add NAME --kernel FILE|URL --initrd FILE|URL [--rootfs FILE|URL] [--cmdline "ARGS"] [--config FILE]
  images list | images remove NAME [--config FILE]
                                              boot images in the asset store (FILE|URL may end in #sha256=HEX)
  bmc list | show REF | add --driver ipmi|redfish|wol|manual --address ADDR [--machine ID] [--user NAME]
      [--password-file FILE|-] [...] | edit REF [...] | remove REF | test REF
      | power REF on|off|soft-off|cycle|reset|status | bootdev REF pxe|disk [--persistent] [--efi]
      | confirm REF on|off | probe REF|--driver redfish --address ADDR   [--config FILE]
                                              BMCs and power control (metalbox bmc help: all options)
  setup [--config FILE] | setup --non-interactive --interface IF --address A.B.C.D/LEN [...]
                                              the appliance's setup: provisioning NIC, DHCP range, DNS, NTP,
                                              admin (asks on the terminal; metalbox setup --help: all options)
  lab up [--machines N] | lab status | lab down [--purge]
                                              a virtual rack: QEMU machines behind ipmi_sim BMCs (root; metalbox lab help)
  users create NAME --role admin|operator|viewer | --admin [--password-file FILE|-] | users list
      | users delete NAME | users passwd NAME [--password-file FILE|-]   [--config FILE]
                                              users of the API and the console (the first admin: --admin)

over the API (HTTPS; see metalbox login):
${REMOTE_USAGE.replace(/^/gm, '  ')}
environment: METALBOX_STATE_DIR (state dir when the config names none; default ./.metalbox)
             METALBOX_BMC_PASSWORD (the password of bmc add/edit, instead of --password-file)
             METALBOX_PASSWORD (the password of users create/passwd and login, instead of --password-file)
             METALBOX_URL, METALBOX_TOKEN, METALBOX_FINGERPRINT (API commands; else the file metalbox login writes)
`;

async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const io: CliIo = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s), errTty: process.stderr.isTTY === true };
  // The agent (runs in the ephemeral environment, issue 7): its own flags, its module loaded only here.
  if (argv[0] === 'agent') return (await import('./agent/index.ts')).runAgent(argv.slice(1), env, io);
  // The virtual rack (QEMU machines behind ipmi_sim BMCs in a namespace): its own flags.
  if (argv[0] === 'lab') {
    const self = isSingleBinary() ? [process.execPath] : [process.execPath, ...process.execArgv, process.argv[1]!];
    return (await import('./cli/lab.ts')).runLab(argv.slice(1), env, io, self);
  }
  // The appliance's setup wizard (first boot on the serial console, or run again to change the answers).
  if (argv[0] === 'setup') {
    try {
      return await (await import('./cli/setup.ts')).runSetup(argv.slice(1), { io, env, stdin: process.stdin, stdout: process.stdout });
    } catch (err) {
      if (!isMetalboxError(err)) throw err;
      io.err(`metalbox: ${err.code}: ${err.message}\n`);
      return err.code === 'CLI_USAGE' || err.code === 'CONFIG_INVALID' || err.code === 'CONFIG_UNREADABLE' ? 2 : 1;
    }
  }
  // API commands (machines, events, tokens, login, ...) have their own flags and talk HTTPS to a metalbox.
  if ((REMOTE_COMMANDS as readonly string[]).includes(argv[0] ?? '') || wantsRemote(argv, env)) {
    const ds = resolve(env.METALBOX_STATE_DIR || '.metalbox');
    const loadLocal = (file?: string): Config | undefined => {
      try {
        if (file !== undefined) return loadConfigFile(file, ds);
        if (existsSync(APPLIANCE_CONFIG)) return loadConfigFile(APPLIANCE_CONFIG, ds);
        return defaultConfig(ds);
      } catch (err) {
        if (isMetalboxError(err)) io.err(`metalbox: ${err.code}: ${err.message}\n`);
        return undefined;
      }
    };
    return runRemote(argv, env, io, loadLocal);
  }
  let args: ReturnType<typeof parse>;
  try {
    args = parse(argv);
  } catch (err) {
    io.err(`metalbox: CLI_USAGE: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const [command, ...positionals] = args.positionals;
  if (args.values.help || command === undefined || command === 'help') { io.out(USAGE); return command === undefined && !args.values.help ? 2 : 0; }
  if (command === 'version') { io.out(`metalbox ${VERSION}\n`); return 0; }

  const defaultStateDir = resolve(env.METALBOX_STATE_DIR || '.metalbox');
  try {
    if (command === 'config') {
      return await runCommand({ command, positionals, config: defaultConfig(defaultStateDir), io, defaultStateDir });
    }
    const config = args.values.config === undefined ? defaultConfig(defaultStateDir) : loadConfigFile(args.values.config, defaultStateDir);
    if (command === 'serve') {
      const level = args.values['log-level'] ?? config.logLevel;
      if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new MetalboxError('CLI_USAGE', `--log-level must be one of ${LOG_LEVELS.join(', ')}`);
      return await serve(config, createLogger(level as LogLevel), env, args.values.config ?? 'embedded default');
    }
    if (!COMMANDS.includes(command)) throw new MetalboxError('CLI_USAGE', `unknown command "${command}" (metalbox help)`);
    const { kernel, initrd, rootfs, cmdline } = args.values;
    return await runCommand({ command, positionals, config, io, defaultStateDir, flags: { kernel, initrd, rootfs, cmdline }, bmc: pickBmcFlags(args.values, env.METALBOX_BMC_PASSWORD), users: pickUserFlags(args.values, env.METALBOX_PASSWORD) });
  } catch (err) {
    if (!isMetalboxError(err)) throw err;
    io.err(`metalbox: ${err.code}: ${err.message}\n`);
    return err.code === 'CLI_USAGE' || err.code === 'CONFIG_INVALID' || err.code === 'CONFIG_UNREADABLE' ? 2 : 1;
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      rootfs: { type: 'string' },
      cmdline: { type: 'string' },
      ...BMC_OPTIONS,
      ...USER_OPTIONS,
    },
  });
}

async function serve(config: Config, logger: Logger, env: NodeJS.ProcessEnv, configSource: string): Promise<number> {
  const listen = parseListen(config.http.listen);
  if (!listen) throw new MetalboxError('CONFIG_INVALID', `http.listen: "${config.http.listen}" is not host:port`);
  const notifier = createNotifier(env, (err) => logger.warn({ err }, 'sd_notify failed'));
  logger.info({ version: VERSION, config: configSource, stateDir: config.stateDir }, 'metalbox starting');

  // The store comes first: it takes the state dir's lock, so a second metalbox fails here at once.
  // Loaded here, not at the top: LevelDB's native addon is needed only by commands that open the store.
  const { openLevelStore } = await import('./store/level-store.ts');
  const store = await openLevelStore(config.stateDir, {
    reserveBytes: config.store.reserveMiB * 1024 * 1024,
    onHealth: (h) => {
      if (h.writable) logger.info({ freeBytes: h.freeBytes, recoveries: h.recoveries }, 'state disk has room again: writes accepted');
      else if (h.reason === 'disk-full') logger.error({ freeBytes: h.freeBytes, reserveBytes: h.reserveBytes, stateDir: config.stateDir }, 'state disk full: writes refused (no new leases, machines or settings) until there is room');
      else logger.error({ error: h.error, stateDir: config.stateDir }, 'a store write failed: writes refused until the store is reopened (tried every 5 s once there is room)');
    },
  });
  let instanceId: string | undefined;
  try {
    instanceId = await ensureInstanceId(store);
  } catch (err) {
    await store.close();
    throw err;
  }

  const events = new EventLog(store);
  await events.init();
  const metrics = createMetrics();
  observeStore(metrics, () => store.stats(), () => store.health());
  const services: Service[] = [];
  let shutdown: (reason: string, code: number) => void = () => undefined;
  const runner = new ServiceRunner(services, {
    logger, metrics, stopTimeoutMs: STOP_TIMEOUT_MS - 1000,
    onFatal: (service) => shutdown(`fatal error in ${service}`, 1),
  });
  const assets = new AssetStore(assetsDir(config), store);
  const { removedBlobs } = await assets.open().catch(async (err: unknown) => { await store.close(); throw err; });
  if (removedBlobs > 0) logger.info({ removedBlobs }, 'asset store: removed files no image references (left by an interrupted add)');
  const httpsListen = parseListen(config.https.listen);
  if (!httpsListen) throw new MetalboxError('CONFIG_INVALID', `https.listen: "${config.https.listen}" is not host:port`);
  const tls = await loadTls(config).catch(async (err: unknown) => { await store.close(); throw err; });
  if (tls.created) logger.info({ fingerprint: tls.fingerprint, file: tls.certFile }, 'made a self-signed HTTPS certificate; check its SHA-256 fingerprint when a browser or the CLI first connects');
  // One per process: the API and the control socket share its lock (the last-admin rule holds across both).
  const auth = createAuthCore({ store, events, onTouchError: (err) => logger.warn({ err }, 'recording the use of a session or API token failed') });
  if ((await auth.users.count()) === 0) logger.warn('no users yet: nobody can log in to the console or the API; make the first admin with: metalbox users create NAME --admin');
  // The secrets key is loaded (created at first start) by the BMC service's start: SECRET_KEY_UNUSABLE stops metalbox.
  const bmc = new BmcService({ store, events, metrics, config, secrets: secretBoxLoader(store, config.stateDir), logger: logger.child({ svc: 'bmc' }) });
  const registry = await MachineRegistry.open({ store, events, logger: logger.child({ svc: 'machines' }), timeouts: phaseTimeoutsMs(config.lifecycle) });
  // The DHCP service exists before the app (its pools feed GET /api/v1/subnets; reservations added through the
  // API reach it live); it is started with the other network services below.
  const live: { dhcp?: DhcpService } = {};
  const reservations = new ReservationBook({ store, events, subnets: config.subnets, onChange: (cidr, list) => live.dhcp?.setReservations(cidr, list) });
  // DNS answers for the machines and leases (A/PTR made from them, updated as a lease write is on disk).
  const dns = config.interfaces.length > 0 && config.dns.enabled
    ? new DnsService({ config, store, metrics, machines: registry, logger: logger.child({ svc: 'dns' }), interfaceAddresses: () => networkInterfaces() })
    : undefined;
  const dhcp = live.dhcp = config.interfaces.length > 0 && config.dhcp.enabled
    ? new DhcpService({
      config, store, events, metrics, reservations,
      logger: logger.child({ svc: 'dhcp' }),
      boot: defaultBoot(config.dhcp.bootFiles, listen.port),
      interfaceAddresses: () => networkInterfaces(),
      onLeaseChange: (change) => dns?.leaseChanged(change),
    })
    : undefined;
  // NTP: the rack's time, from ntp.upstream (stratum + 1), or unsynchronised (leap 3) and saying so.
  const ntp = config.interfaces.length > 0 && config.ntp.enabled
    ? new NtpService({ config, metrics, logger: logger.child({ svc: 'ntp' }) })
    : undefined;
  const app = await buildApp({
    logger: logger.child({ svc: 'http' }),
    metrics,
    version: VERSION,
    instanceId: () => instanceId,
    readiness: () => runner.status(),
    auth,
    rateLimits: config.api,
    boot: {
      store, events, assets, ipxe: new IpxeBinaries(config.boot.ipxeDir), logger: logger.child({ svc: 'boot-http' }),
      ephemeralImage: config.boot.ephemeralImage, tokenTtlMs: config.boot.tokenSeconds * 1000,
      agent: {
        registry,
        createBmcUser: config.lifecycle.createBmcUser,
        enrollBmc: async (machineId, b, actor) => { await bmc.add({ driver: 'ipmi', address: b.address, username: b.username, password: b.password, machineId }, actor); },
      },
    },
    machines: { registry, store, logger: logger.child({ svc: 'api' }), bmc: bmcPowerControl(bmc) },
    ...(ntp ? { ntp } : {}),
    resources: {
      store, events, config, bmc, assets, reservations,
      ...(dhcp ? { dhcp } : {}),
      https: () => ({ fingerprint: tls.fingerprint, certificate: tls.source, validTo: tls.validTo }),
    },
  });
  const web = new HttpService(app, listen, { ...httpsListen, cert: tls.cert, key: tls.key });
  const webStatus = () => ({ http: web.address(), https: { ...web.httpsAddress(), fingerprint: tls.fingerprint, certificate: tls.source, validTo: tls.validTo } });
  services.push(
    new ControlService(join(config.stateDir, 'control.sock'), controlHandlers({ store, config, status: () => ({ ...runner.status(), ...webStatus() }), version: VERSION, assets, bmc, auth }), logger.child({ svc: 'control' })),
    web,
  );
  // The runner carries out lifecycle effects through the BMC service: it starts after it and stops before it.
  services.push(bmc, registry, new LifecycleRunner({ registry, events, logger: logger.child({ svc: 'lifecycle' }), power: bmc, autoCommission: config.lifecycle.autoCommission }));
  // Network services start last, once what they point machines at (HTTP boot) is up.
  if (config.interfaces.length === 0) {
    logger.info('no provisioning interface configured: DHCP, TFTP, DNS and NTP stay idle');
  } else {
    // DNS before DHCP: a lease's name is answerable from the moment its ACK leaves.
    if (dns) services.push(dns);
    if (dhcp) services.push(dhcp);
  }
  if (config.interfaces.length > 0 && config.tftp.enabled) {
    services.push(new TftpService({ config, store, events, metrics, logger: logger.child({ svc: 'tftp' }), httpPort: listen.port }));
  }
  if (ntp) services.push(ntp);

  let exitCode = 0;
  let stopping = false;
  const done = new Promise<void>((resolveDone) => {
    shutdown = (reason: string, code: number) => {
      if (exitCode === 0) exitCode = code;
      if (stopping) return;
      stopping = true;
      logger.info({ reason }, 'stopping');
      notifier.stopping();
      // A stop that hangs must not hang the host's shutdown: systemd would wait TimeoutStopSec.
      setTimeout(() => { logger.fatal('stop took longer than 10 s; exiting'); process.exit(1); }, STOP_TIMEOUT_MS).unref();
      void runner.stop().then(() => store.close()).then(resolveDone, (err: unknown) => { logger.error({ err }, 'error while closing the store'); exitCode = 1; resolveDone(); });
    };
    process.once('SIGTERM', () => shutdown('SIGTERM', 0));
    process.once('SIGINT', () => shutdown('SIGINT', 0));
    process.on('uncaughtException', (err) => { logger.fatal({ err }, 'uncaught exception'); shutdown('uncaught exception', 1); });
    process.on('unhandledRejection', (err) => { logger.fatal({ err }, 'unhandled rejection'); shutdown('unhandled rejection', 1); });
    void runner.start().then(() => {
      if (runner.status().phase !== 'running') return;
      const https = web.httpsAddress()!;
      logger.info({ http: `${web.address().host}:${web.address().port}`, https: `${https.host}:${https.port}`, fingerprint: tls.fingerprint }, 'metalbox ready');
      notifier.ready();
      if (notifier.watchdogIntervalMs !== undefined) {
        setInterval(() => notifier.watchdog(), notifier.watchdogIntervalMs).unref();
      }
    }, (err: unknown) => {
      logger.fatal({ err }, 'start failed');
      process.stderr.write(`metalbox: ${isMetalboxError(err) ? `${err.code}: ` : ''}${(err as Error).message}\n`);
      shutdown('start failed', 1);
    });
  });
  await done;
  if (runner.error !== undefined && exitCode === 0) exitCode = 1;
  logger.info({ exitCode }, 'metalbox stopped');
  return exitCode;
}

/** A random id made at the first start of a state dir; it identifies this appliance's data. */
async function ensureInstanceId(store: Store): Promise<string> {
  const existing = await store.settings.get('system.instanceId');
  if (typeof existing === 'string') return existing;
  const id = randomUUID();
  await store.write([
    { type: 'put', collection: 'settings', key: 'system.instanceId', value: id },
    { type: 'put', collection: 'settings', key: 'system.createdAt', value: new Date().toISOString() },
  ]);
  return id;
}

main(process.argv.slice(2), process.env).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`metalbox: INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
