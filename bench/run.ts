/**
 * The tsvs benchmark suite: tsvs against DPDK testpmd, OVS-DPDK and the kernel path.
 *
 *   npm run bench -- [--scenario NAME ...] [--reps N] [--seconds S] [--warmup S] [--quick] [--subject NAME ...] [--out DIR] [--merge]
 *   node dist/bench/run.js --scenario p2p --quick
 *
 * Scenarios: p2p, p2p-vxlan, generator, kernel, latency, flows, flowsetup, memory, profile, scrape, vm2vm (default: all).
 * Results: bench/results/latest.json, latest.md, <scenario>.svg. With --merge, the scenarios run
 * replace their namesakes in the existing latest.json (each says when and at which commit it ran).
 * Every process is stopped by PID and every namespace deleted, also on Ctrl-C.
 */
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeReport, readReport, machineInfo, gitCommit, type BenchReport, type ScenarioResult } from './report.js';
import { errText, type BenchContext, type Scenario } from './common.js';
import { stopAll, killAllSync } from './proc.js';
import { autogroupEnabled, sessionOf, setAutogroupNice, wantedAutogroupNice } from './sched.js';
import { nsDelAll } from './peers/kernel.js';
import { p2p } from './p2p.js';
import { p2pVxlan } from './p2p-vxlan.js';
import { generator } from './generator.js';
import { kernel } from './kernel.js';
import { latency } from './latency.js';
import { flows, flowsetup } from './flows.js';
import { memory } from './memory.js';
import { profile } from './profile.js';
import { scrape } from './scrape.js';
import { vm2vm } from './vm2vm.js';

export const SCENARIOS: Scenario[] = [p2p, p2pVxlan, generator, kernel, latency, flows, flowsetup, memory, profile, scrape, vm2vm];

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/bench -> repo root. */
const REPO = path.resolve(here, '../..');

export interface RunOptions {
  scenarios: string[];
  reps: number;
  seconds: number;
  warmup: number;
  quick: boolean;
  out: string;
  subjects: string[];
  /** Frame sizes (--sizes 64,256), for scenarios that take several. */
  sizes?: number[];
  /** flows: flow counts (--counts 1,100000). */
  counts?: number[];
  variants?: ('oneway' | 'bidir' | 'txfirst')[];
  /** Replace only the scenarios run in the existing report of `out`. */
  merge: boolean;
}

export class BenchUsageError extends Error {}

export function parseRunArgs(argv: string[]): RunOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string', multiple: true },
      reps: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      quick: { type: 'boolean' },
      out: { type: 'string' },
      subject: { type: 'string', multiple: true },
      sizes: { type: 'string' },
      variants: { type: 'string' },
      counts: { type: 'string' },
      merge: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  });
  if (values.help) throw new BenchUsageError('help');
  const quick = !!values.quick;
  const names = (values.scenario ?? []).flatMap((s) => s.split(',')).filter(Boolean);
  for (const n of names) if (!SCENARIOS.some((s) => s.name === n)) throw new BenchUsageError(`unknown scenario '${n}' (one of ${SCENARIOS.map((s) => s.name).join(', ')})`);
  const num = (v: string | undefined, name: string, dflt: number, min: number, max: number, int = false): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n))) throw new BenchUsageError(`--${name} must be ${int ? 'an integer' : 'a number'} in ${min}..${max}, got '${v}'`);
    return n;
  };
  return {
    scenarios: names.length ? names : SCENARIOS.map((s) => s.name),
    reps: num(values.reps, 'reps', quick ? 1 : 3, 1, 100, true),
    seconds: num(values.seconds, 'seconds', quick ? 1 : 3, 0.2, 600),
    warmup: num(values.warmup, 'warmup', quick ? 0.5 : 1, 0, 60),
    quick,
    out: values.out ?? path.join(REPO, 'bench', 'results'),
    subjects: (values.subject ?? []).flatMap((s) => s.split(',')).filter(Boolean),
    merge: !!values.merge,
    variants: values.variants === undefined ? undefined : String(values.variants).split(',').map((x) => {
      if (x !== 'oneway' && x !== 'bidir' && x !== 'txfirst') throw new BenchUsageError(`--variants: '${x}' is not oneway, bidir or txfirst`);
      return x;
    }),
    sizes: values.sizes === undefined ? undefined : String(values.sizes).split(',').map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 60 || n > 9000) throw new BenchUsageError(`--sizes: '${x}' is not a frame size in 60..9000`);
      return n;
    }),
    counts: values.counts === undefined ? undefined : String(values.counts).split(',').map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 1 || n > 1 << 24) throw new BenchUsageError(`--counts: '${x}' is not a flow count in 1..16777216`);
      return n;
    }),
  };
}

const USAGE = `usage: node dist/bench/run.js [--scenario NAME ...] [--reps N] [--seconds S] [--warmup S] [--quick] [--subject NAME ...] [--sizes 64,256] [--variants oneway,bidir,txfirst] [--counts 1,100000] [--out DIR] [--merge]
  --counts: the flow counts of the flows scenario (default 1,1000,10000,100000; --quick 1,10000)
  defaults: all scenarios, --reps 3 --seconds 3 --warmup 1 (--quick: 1 rep, 1 s, 0.5 s), --out bench/results
  --subject: only these subjects (tsvs, ovs-dpdk, dpdk-testpmd, tsvs-pool, tsvs-one-copy (p2p: one copy off/on), tsvs-testpmd, linux-bridge, tsvs-afpacket, tsvs-vxlan, ovs-vxlan, ovs-vxlan-afp, tsvs-vhost-user, kernel-bridge, kernel-tsvs, dpdk-tsvs, tspmd-tsvs)
scenarios: ${SCENARIOS.map((s) => `${s.name} (${s.title})`).join(', ')}`;

/**
 * The `tsvs bench` command module: option values as parsed by src/cli/main.ts
 * (keys scenario, subject: string[]; reps, seconds, warmup, out: string; quick: boolean).
 */
export async function run(values: Record<string, unknown>): Promise<number> {
  const argv: string[] = [];
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || v === false) continue;
    if (v === true) argv.push(`--${k}`);
    else if (Array.isArray(v)) for (const x of v) argv.push(`--${k}`, String(x));
    else argv.push(`--${k}`, String(v));
  }
  return runBench(argv);
}

/**
 * `base` with the scenarios of `fresh` in place of their namesakes (new ones
 * appended); each merged scenario says when and at which commit it ran.
 */
export function mergeReports(base: BenchReport, fresh: BenchReport): BenchReport {
  const byName = new Map(fresh.scenarios.map((s) => [s.name, s]));
  const o = fresh.options;
  const tag = (s: ScenarioResult): ScenarioResult => ({
    ...s,
    notes: [...s.notes, `Measured ${fresh.date} at commit ${fresh.git} (${o.reps} repetition(s), ${o.seconds} s per run) and merged into the report of ${base.date} (commit ${base.git}).`],
  });
  const scenarios = base.scenarios.map((s) => (byName.has(s.name) ? tag(byName.get(s.name)!) : s));
  for (const s of fresh.scenarios) if (!base.scenarios.some((b) => b.name === s.name)) scenarios.push(tag(s));
  return { ...base, scenarios };
}

/** Run the suite with command-line arguments (without the program name). */
export async function runBench(args: string[]): Promise<number> {
  let o: RunOptions;
  try {
    o = parseRunArgs(args);
  } catch (e) {
    if (e instanceof BenchUsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(((e as Error).message === 'help' ? '' : `${(e as Error).message}\n`) + USAGE + '\n');
      return (e as Error).message === 'help' ? 0 : 2;
    }
    throw e;
  }
  const t0 = Date.now();
  const log = (m: string): void => {
    process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${m}\n`);
  };
  const ctx: BenchContext = { reps: o.reps, seconds: o.seconds, warmup: o.warmup, quick: o.quick, genCpu: 0, swCpu: 1, log, only: o.subjects, sizes: o.sizes, variants: o.variants, counts: o.counts };
  let interrupted = false;
  const onSig = (): void => {
    if (interrupted) {
      killAllSync();
      process.exit(130);
    }
    interrupted = true;
    log('interrupted: stopping child processes and deleting namespaces');
    void stopAll().then(nsDelAll).then(() => process.exit(130));
  };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  process.on('exit', killAllSync);

  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: machineInfo(),
    git: gitCommit(REPO),
    options: { reps: o.reps, seconds: o.seconds, warmup: o.warmup, quick: o.quick, scenarios: o.scenarios },
    scenarios: [],
  };
  const base = o.merge ? readReport(o.out) : null;
  const merged = (): BenchReport => (base ? mergeReports(base, report) : report);
  for (const name of o.scenarios) {
    const sc = SCENARIOS.find((s) => s.name === name)!;
    log(`== ${sc.name}: ${sc.title}`);
    let r: ScenarioResult;
    try {
      r = await sc.run(ctx);
    } catch (e) {
      log(`${sc.name} crashed: ${errText(e)}`);
      r = { name: sc.name, title: sc.title, status: 'failed', unavailable: { '*': `failed: ${errText(e)}` }, rows: [], ratios: [], notes: [], seconds: 0 };
    }
    await stopAll();
    await nsDelAll();
    report.scenarios.push(r);
    for (const [k, v] of Object.entries(r.unavailable)) log(`${sc.name}: unavailable: ${k}: ${v}`);
    // write after every scenario, so a long run leaves results even if interrupted later
    writeReport(o.out, merged());
  }
  const files = writeReport(o.out, merged());
  log(`wrote ${files.join(', ')}`);
  return 0;
}

/**
 * Re-run this command in a session of its own whose autogroup has nice `nice` (see bench/sched.ts:
 * with autogroup scheduling a process's nice value does not count against other sessions). Signals
 * are passed on by PID; resolves with the child's exit code.
 */
function inOwnSession(nice: number): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    detached: true,
    stdio: 'inherit',
    env: { ...process.env, TSVS_BENCH_OWN_SESSION: '1' },
  });
  try {
    if (child.pid !== undefined) setAutogroupNice(child.pid, nice);
  } catch (e) {
    process.stderr.write(`bench: cannot set the autogroup nice of the benchmark's session to ${nice} (${(e as Error).message}): other sessions share the CPUs with it equally\n`);
  }
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, sig);
    });
  }
  return new Promise((resolve) => child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 + (os.constants.signals[sig] ?? 0) : 1))));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let agNice: number | null = null;
  try {
    agNice = wantedAutogroupNice();
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const reexec = agNice !== null && !process.env.TSVS_BENCH_OWN_SESSION && autogroupEnabled() && sessionOf() !== process.pid;
  if (!reexec && agNice !== null && autogroupEnabled() && sessionOf() === process.pid) {
    try {
      setAutogroupNice(process.pid, agNice);
    } catch (e) {
      process.stderr.write(`bench: cannot set the autogroup nice to ${agNice}: ${(e as Error).message}\n`);
    }
  }
  (reexec ? inOwnSession(agNice ?? -19) : runBench(process.argv.slice(2))).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
      killAllSync();
      process.exit(1);
    },
  );
}
