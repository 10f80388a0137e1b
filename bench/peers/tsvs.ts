/**
 * tsvs itself as a benchmark subject: the switch daemon (driven through the
 * real control CLI) and `tsvs testpmd` (our testpmd-like traffic app).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Proc, exec, sleep } from '../proc.js';
import { rpcCall } from '../../src/daemon/control.js';
import { runPaths } from '../../src/daemon/run-dir.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/**
 * dist/src/cli/main.js (this file is dist/bench/peers/tsvs.js), or $TSVS_BENCH_CLI: another build's
 * dist/src/cli/main.js, to measure an older commit with this bench (an A/B of two commits in one slot).
 */
export const TSVS_CLI = process.env.TSVS_BENCH_CLI ? path.resolve(process.env.TSVS_BENCH_CLI) : path.resolve(here, '../../src/cli/main.js');

export interface TsvsDaemonOptions {
  /** CPU for the PMD thread; the whole process is pinned there with taskset. */
  cpu: number;
  netns?: string;
  /** --pmd-sleep-max (µs), default 0 (busy poll, like OVS-DPDK). */
  sleepMaxUs?: number;
  extraArgs?: string[];
}

/**
 * Extra node options for the daemon under test, from TSVS_BENCH_DAEMON_NODE_ARGS (space-separated;
 * e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the switch under a scenario; NODE_OPTIONS may not carry --cpu-prof).
 */
function daemonNodeArgs(): string[] {
  return (process.env.TSVS_BENCH_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean);
}

export class TsvsDaemon {
  private constructor(
    readonly proc: Proc,
    readonly runDir: string,
    readonly netns: string | undefined,
  ) {}

  get pid(): number {
    return this.proc.pid;
  }

  static async start(o: TsvsDaemonOptions): Promise<TsvsDaemon> {
    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-bd-'));
    const p = new Proc(
      [process.execPath, ...daemonNodeArgs(), TSVS_CLI, 'daemon', '--run-dir', runDir, '--pmd-cpus', String(o.cpu), '--pmd-sleep-max', String(o.sleepMaxUs ?? 0), '--log-level', 'warn', ...(o.extraArgs ?? [])],
      { cpus: [o.cpu], netns: o.netns },
    );
    const d = new TsvsDaemon(p, runDir, o.netns);
    const ctl = path.join(runDir, 'tsvs.ctl');
    const t0 = Date.now();
    while (!fs.existsSync(ctl)) {
      if (p.exited || Date.now() - t0 > 20000) {
        await d.stop();
        throw new Error(`tsvs daemon did not start: ${p.tail()}`);
      }
      await sleep(50);
    }
    return d;
  }

  /** Run a control command; throws with its stderr on failure. */
  async cli(...args: string[]): Promise<string> {
    const r = await exec([process.execPath, TSVS_CLI, ...args, '--run-dir', this.runDir], { timeoutMs: 30000 });
    if (r.code !== 0) {
      const daemon = this.proc.exited ? `; the daemon exited (${this.proc.exitCode ?? this.proc.exitSignal}): ${this.proc.tail(600)}` : '';
      throw new Error(`tsvs ${args.join(' ')}: ${(r.stderr || r.stdout).trim()}${daemon}`);
    }
    return r.stdout;
  }

  async json<T>(...args: string[]): Promise<T> {
    return JSON.parse(await this.cli(...args, '--json')) as T;
  }

  /**
   * A control request from this process (the JSON-RPC the CLI sends, without starting a node
   * process per request: a CLI start costs ~0.1 s of a CPU, which samplers would take from the
   * switch or the generator); returns what `tsvs CMD --json` prints.
   */
  async rpc<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const r = await rpcCall(runPaths(this.runDir).control, method, { ...params, json: true });
    return (r && typeof r === 'object' && 'data' in r ? (r as { data: unknown }).data : r) as T;
  }

  /** A vhost-user server port; returns its socket path. */
  async addVhostUserPort(br: string, name: string, ofport: number): Promise<string> {
    const sock = path.join(this.runDir, name);
    await this.cli('add-port', br, name, '--type', 'vhost-user', '--path', sock, '--ofport', String(ofport));
    return sock;
  }

  async setFlows(br: string, flows: string[]): Promise<void> {
    await this.cli('del-flows', br);
    for (const f of flows) await this.cli('add-flow', br, f);
  }

  portStats(): Promise<TsvsPortStats[]> {
    return this.json<TsvsPortStats[]>('port-stats');
  }

  pmdStats(): Promise<TsvsPmdStats[]> {
    return this.rpc<TsvsPmdStats[]>('pmd-stats');
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGTERM', 8000);
    fs.rmSync(this.runDir, { recursive: true, force: true });
  }
}

export interface TsvsPortStats {
  port: string;
  ofport: number;
  link: string;
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
  drops: Record<string, number>;
}

export interface TsvsPmdStats {
  pmd: number;
  rxPackets: number;
  txPackets: number;
  emcHits: number;
  megaflowHits: number;
  upcalls: number;
  upcallsLost: number;
  flows: number;
  busyNs: number;
  idleNs: number;
  drops: Record<string, number>;
  /** Event-loop turns and gaps in the poll loop (src/dp/pmd-thread.ts, PmdThreadStats). */
  loopTurns?: number;
  loopTurnMaxNs?: number;
  loopGaps?: number[];
}

// ---------------- tsvs testpmd ----------------

export interface TsvsTestpmdOptions {
  ports: string[];
  fwd: 'io' | 'txonly' | 'rxonly' | 'macswap';
  txpkts?: number;
  flows?: number;
  /** --tx-buffers (txonly: kept buffers per queue; 0 = allocate per frame). */
  txBuffers?: number;
  cpu: number;
}

export interface TsvsTestpmdPortReport {
  name: string;
  rx_packets: number;
  tx_packets: number;
  rx_dropped: number;
  tx_dropped: number;
  rx_bad: number;
  link: string;
}

/** `tsvs testpmd` as a child process with 1 s stats lines on stderr; final JSON on stop. */
export class TsvsTestpmd {
  private constructor(readonly proc: Proc) {}

  static start(o: TsvsTestpmdOptions): TsvsTestpmd {
    const argv = [
      process.execPath, TSVS_CLI, 'testpmd', ...o.ports.flatMap((p) => ['--port', p]),
      '--fwd', o.fwd, '--txpkts', String(o.txpkts ?? 64), '--flows', String(o.flows ?? 1),
      '--cpu', String(o.cpu), '--stats-period', '1', '--json', ...(o.txBuffers !== undefined ? ['--tx-buffers', String(o.txBuffers)] : []),
    ];
    return new TsvsTestpmd(new Proc(argv, { cpus: [o.cpu] }));
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** Wait until every port reports link up in a stats line. */
  async waitUp(timeoutMs = 20000): Promise<void> {
    await this.proc.waitFor(/\[up\][^\n]*\n(?![\s\S]*\[down\])/, timeoutMs, undefined, 'stderr');
  }

  /** Counters from the most recent stats line: per port rx/tx. */
  last(): { rx: number; tx: number }[] {
    const lines = this.proc.stderr.split('\n').filter((l) => /\[(up|down)\] rx \d+/.test(l));
    const l = lines[lines.length - 1];
    if (!l) return [];
    return [...l.matchAll(/rx (\d+) \([^)]*\) tx (\d+)/g)].map((m) => ({ rx: Number(m[1]), tx: Number(m[2]) }));
  }

  /** SIGINT, then parse the final JSON. */
  async stop(): Promise<TsvsTestpmdPortReport[]> {
    await this.proc.stop('SIGINT', 10000);
    const m = /\{"duration_s"[^\n]*\}/.exec(this.proc.stdout);
    if (!m) throw new Error(`tsvs testpmd printed no final JSON: ${this.proc.tail()}`);
    return (JSON.parse(m[0]) as { ports: TsvsTestpmdPortReport[] }).ports;
  }
}
