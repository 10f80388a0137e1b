/** `tsvs daemon`: run the switch in the foreground. */
import { pino, destination } from 'pino';
import { Switch, SwitchConfigError, parseOneCopy, DEFAULT_MAX_MTU, DEFAULT_POOL_SIZE, MIN_MAX_MTU, MAX_MAX_MTU } from './switch.js';
import { defaultRunDir } from './run-dir.js';
import { DEFAULT_MAX_GUEST_MEMORY } from '../vhost/limits.js';
import { UsageError, intOption as intArg } from '../util/options.js';
// The Prometheus endpoint (prom-client, node:http) and the web dashboard are loaded only with --metrics / --web:
// a daemon without them does not compile or keep their code (README, Memory).
import { parseListen } from '../metrics/listen.js';
import { installSigbusGuard, sigbusGuardProblem } from '../sys/sigbus.js';
import { Unixctl } from '../unixctl/server.js';
import { packageVersion } from '../util/version.js';

export function parseCpuList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UsageError(`--pmd-cpus: bad CPU list '${s}' (e.g. 1 or 0,1 or 0-1)`);
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    if (b < a || b > 1023) throw new UsageError(`--pmd-cpus: bad range '${part}'`);
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}


function numArg(v: unknown, name: string, lo: number, hi: number, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (String(v).trim() === '' || !Number.isFinite(n) || n < lo || n > hi) throw new UsageError(`--${name}: '${String(v)}' must be a number in ${lo}..${hi}`);
  return n;
}

function oneCopyArg(v: unknown): boolean {
  try {
    return parseOneCopy(v);
  } catch {
    throw new UsageError(`--one-copy: '${String(v)}' must be on or off`);
  }
}

export async function run(values: Record<string, unknown>): Promise<number> {
  const level = String(values['log-level'] ?? process.env.TSVS_LOG_LEVEL ?? 'info');
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) throw new UsageError(`--log-level: unknown level '${level}'`);
  const log = pino({ level, base: { pid: process.pid } }, destination(2));
  const runDir = (values['run-dir'] as string | undefined) ?? defaultRunDir();
  const pmdCpus = values['pmd-cpus'] !== undefined ? parseCpuList(String(values['pmd-cpus'])) : undefined;
  const maxMtu = intArg(values['max-mtu'], 'max-mtu', MIN_MAX_MTU, MAX_MAX_MTU, DEFAULT_MAX_MTU);
  const poolSize = intArg(values['pool-size'], 'pool-size', 1024, 1 << 20, DEFAULT_POOL_SIZE);
  const listenArg = (flag: string): { host: string; port: number } | undefined => {
    if (values[flag] === undefined) return undefined;
    try {
      return parseListen(String(values[flag]), `--${flag}`);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  const metricsAt = listenArg('metrics');
  const webAt = listenArg('web');
  const maxGuestGib = intArg(values['max-guest-mem'], 'max-guest-mem', 1, 65536, DEFAULT_MAX_GUEST_MEMORY / 2 ** 30);
  // Before any worker starts: a frontend that truncates guest memory we cannot seal faults into the guard, not the default action.
  if (!installSigbusGuard()) log.warn(`${sigbusGuardProblem()}: guest memory that cannot be sealed against shrinking will be refused`);
  let sw: Switch;
  try {
    sw = await Switch.start({
      runDir,
      pmdCpus,
      pmdSleepMaxUs: intArg(values['pmd-sleep-max'], 'pmd-sleep-max', 0, 1_000_000, 0),
      pmdPerfMetrics: values['pmd-perf-metrics'] === true,
      oneCopy: oneCopyArg(values['one-copy']),
      pmdAutoLb: {
        enabled: values['pmd-auto-lb'] === true,
        loadThreshold: numArg(values['pmd-auto-lb-load-threshold'], 'pmd-auto-lb-load-threshold', 0, 100, 95),
        improvementThreshold: numArg(values['pmd-auto-lb-improvement-threshold'], 'pmd-auto-lb-improvement-threshold', 0, 100, 25),
        rebalIntervalMin: numArg(values['pmd-auto-lb-rebal-interval'], 'pmd-auto-lb-rebal-interval', 0, 20000, 1),
      },
      pmdLoadIntervalMs: intArg(values['pmd-load-interval'], 'pmd-load-interval', 10, 600_000, 1000),
      poolSize,
      maxMtu,
      maxGuestMemory: maxGuestGib * 2 ** 30,
      log,
      ephemeral: values.ovsdb !== undefined,
    });
  } catch (e) {
    if (e instanceof SwitchConfigError) throw new UsageError(e.message);
    throw e;
  }
  const closers: (() => Promise<void>)[] = [];
  // ovs-appctl -t RUNDIR/tsvs.ctl: OVS unixctl requests on the control socket
  const unixctl = new Unixctl({
    invoke: (m, p) => sw.control.invoke(m, p ?? {}),
    version: packageVersion(),
    setLogLevel: (l) => {
      log.level = l;
    },
    logLevel: () => log.level,
  }).start();
  sw.control.unixctl = (m, a) => unixctl.handle(m, a);
  closers.push(async () => unixctl.stop());
  try {
    if (metricsAt) {
      const { startMetricsServer } = await import('../metrics/prometheus.js');
      const m = await startMetricsServer(sw, metricsAt.host, metricsAt.port);
      closers.push(m.close);
      log.info({ metrics: m.url }, `Prometheus metrics at ${m.url}`);
    }
    if (webAt) {
      const { startWebServer, localSource } = await import('../web/server.js');
      const w = await startWebServer(localSource(sw), webAt.host, webAt.port);
      closers.push(w.close);
      log.info({ web: w.url }, `web dashboard at ${w.url}`);
    }
  } catch (e) {
    await sw.stop();
    throw new Error(`cannot serve observers: ${(e as Error).message}`);
  }
  let ovsdb: { stop(): void } | null = null;
  if (values.ovsdb !== undefined) {
    const { startOvsdbMode } = await import('./ovsdb-mode.js');
    try {
      ovsdb = startOvsdbMode(sw, String(values.ovsdb), log, intArg(values['ovsdb-stats-interval'], 'ovsdb-stats-interval', 100, 3_600_000, 5000));
    } catch (e) {
      await Promise.all(closers.map((c) => c()));
      await sw.stop();
      throw new UsageError(`--ovsdb: ${(e as Error).message}`);
    }
  }
  return new Promise<number>((resolve) => {
    const done = (): void => {
      ovsdb?.stop();
      void Promise.all(closers.map((c) => c())).then(() => resolve(0));
    };
    sw.onShutdown = done;
    const onSig = (sig: string): void => {
      log.info(`${sig}: shutting down`);
      void sw.stop().then(done);
    };
    process.once('SIGINT', () => onSig('SIGINT'));
    process.once('SIGTERM', () => onSig('SIGTERM'));
  });
}
