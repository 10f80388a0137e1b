/**
 * OVS's unixctl commands on tsvs: `ovs-appctl -t RUNDIR/tsvs.ctl CMD ARGS`
 * (JSON-RPC 1.0: method = command, params = strings, result = text). The
 * daemon's control socket recognises the request shape and hands it here;
 * answers follow the layout ovs-vswitchd 3.1 prints (lib/dpif-netdev.c,
 * lib/dpctl.c, ofproto/ofproto-dpif-*.c, lib/coverage.c), filled with tsvs's
 * counters. The switch is reached only through its control methods.
 */
import * as fs from 'node:fs';
import { formatOdpFlow } from './odp.js';

export interface UnixctlDeps {
  invoke(method: string, params?: Record<string, unknown>): Promise<unknown>;
  version: string;
  /** vlog/set: level is one of OVS's (emer err warn info dbg off). */
  setLogLevel(level: string): void;
  logLevel(): string;
}

export interface UnixctlReply {
  result: string | null;
  error: string | null;
}

type Handler = (args: string[]) => Promise<string> | string;

interface Command {
  usage: string;
  min: number;
  max: number;
  run: Handler;
}

export class UnixctlError extends Error {}

interface PmdJson {
  pmd: number;
  cpu: number | null;
  rxPackets: number;
  emcHits: number;
  megaflowHits: number;
  misses: number;
  upcalls: number;
  upcallsLost: number;
  txPackets: number;
  iterations: number;
  busyIterations: number;
  busyNs: number;
  idleNs: number;
  rxqs: { port: number; name: string; queue: number; rxPackets: number; usage?: number }[];
  drops: Record<string, number>;
}

interface DpFlowJson {
  pmd: number;
  id: number;
  packets: number;
  bytes: number;
  used: string;
  actions: string;
  keyWords: number[];
  maskWords: number[];
}

interface ShowJson {
  bridge: string;
  ports: { name: string; ofport: number; type: string; link: string }[];
}

interface PortStatJson {
  port: string;
  ofport: number;
  rxPackets: number;
  rxBytes: number;
  rxDropped: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
}

/** Our port types as OVS names them. */
const OVS_TYPE: Record<string, string> = {
  'vhost-user': 'dpdkvhostuser',
  'vhost-user-client': 'dpdkvhostuserclient',
  tap: 'tap',
  afpacket: 'system',
  'virtio-user': 'virtio-user',
};

/** TSC-like cycles from nanoseconds (OVS counts TSC cycles; we measure time). */
function cpuGhz(): number {
  try {
    const m = /cpu MHz\s*:\s*([\d.]+)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return Number(m[1]) / 1000;
  } catch {
    /* not Linux */
  }
  return 1;
}

const pct = (a: number, b: number): string => (b > 0 ? ((100 * a) / b).toFixed(2) : '0.00');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '0.00');

export class Unixctl {
  private readonly cmds = new Map<string, Command>();
  private readonly deps: UnixctlDeps;
  private readonly ghz = cpuGhz();
  /** coverage/show samples: [ms, counters] every 5 s, one hour kept. */
  private samples: { t: number; c: Map<string, number> }[] = [];
  private sampler: NodeJS.Timeout | null = null;
  /** pmd-perf-show measures from the last pmd-stats-clear (or start). */
  private perfSince = Date.now();
  private upcallMax = 0;

  constructor(deps: UnixctlDeps) {
    this.deps = deps;
    this.register();
  }

  /** Start the coverage sampler (a 5 s timer, unref'd). */
  start(): this {
    const tick = (): void => {
      void this.counters().then((c) => {
        this.samples.push({ t: Date.now(), c });
        if (this.samples.length > 721) this.samples.shift();
      }, () => undefined);
    };
    tick();
    this.sampler = setInterval(tick, 5000);
    this.sampler.unref();
    return this;
  }

  stop(): void {
    if (this.sampler) clearInterval(this.sampler);
  }

  commandNames(): string[] {
    return [...this.cmds.keys()].sort();
  }

  private add(name: string, usage: string, min: number, max: number, run: Handler): void {
    this.cmds.set(name, { usage, min, max, run });
  }

  /** Answer one ovs-appctl request (a non-empty body always ends with a newline, as lib/unixctl.c makes it). */
  async handle(method: string, args: string[]): Promise<UnixctlReply> {
    const r = await this.handle1(method, args);
    const nl = (x: string | null): string | null => (x && !x.endsWith('\n') ? x + '\n' : x);
    return { result: nl(r.result), error: nl(r.error) };
  }

  private async handle1(method: string, args: string[]): Promise<UnixctlReply> {
    const c = this.cmds.get(method);
    if (!c) return { result: null, error: `"${method}" is not a valid command (use "list-commands" to see a list of valid commands)` };
    if (args.length < c.min) return { result: null, error: `"${method}" command requires at least ${c.min} arguments` };
    if (args.length > c.max) return { result: null, error: `"${method}" command takes at most ${c.max} arguments` };
    try {
      const text = await c.run(args);
      return { result: text, error: null };
    } catch (e) {
      return { result: null, error: e instanceof Error ? e.message : String(e) };
    }
  }

  private async data<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const r = (await this.deps.invoke(method, params)) as { data?: T };
    return r.data as T;
  }

  private register(): void {
    this.add('list-commands', '', 0, 0, () => {
      const lines = ['The available commands are:'];
      for (const n of this.commandNames()) lines.push(`  ${n.padEnd(23)} ${this.cmds.get(n)!.usage}`);
      return lines.join('\n') + '\n';
    });
    this.add('version', '', 0, 0, () => `ovs-vswitchd (tsvs) ${this.deps.version}\n`);
    this.add('exit', '[--cleanup]', 0, 1, async () => {
      await this.deps.invoke('shutdown');
      return '';
    });
    this.add('vlog/set', '{spec | PATTERN:destination:pattern}', 0, 16, (args) => {
      const levels: Record<string, string> = { emer: 'fatal', err: 'error', warn: 'warn', info: 'info', dbg: 'debug', off: 'silent' };
      for (const a of args) {
        if (a.startsWith('PATTERN:')) continue;
        // module:destination:level, any part may be ANY or missing
        const parts = a.split(':');
        const lvl = parts.find((p) => p.toLowerCase() in levels);
        if (!lvl) {
          const bad = parts.find((p) => !['any', 'console', 'syslog', 'file'].includes(p.toLowerCase()) && p !== '');
          if (bad !== undefined && !/^[a-z_]+$/.test(bad)) throw new UnixctlError(`${a}: unknown level`);
          continue;
        }
        this.deps.setLogLevel(levels[lvl.toLowerCase()]);
      }
      return '';
    });
    this.add('vlog/list', '', 0, 0, () => {
      const inv: Record<string, string> = { fatal: 'EMER', error: 'ERR', warn: 'WARN', info: 'INFO', debug: 'DBG', trace: 'DBG', silent: 'OFF' };
      const l = (inv[this.deps.logLevel()] ?? 'INFO').toLowerCase();
      return `                 console    syslog    file\n                 -------    ------    ------\ntsvs             ${l.padEnd(11)}${'off'.padEnd(10)}off\n`;
    });
    this.add('coverage/show', '', 0, 0, () => this.coverageShow());
    this.add('dpif-netdev/pmd-stats-show', '[-pmd core] [dp]', 0, 3, (a) => this.pmdStatsShow(a));
    this.add('dpif-netdev/pmd-stats-clear', '[-pmd core] [dp]', 0, 3, async () => {
      await this.counters(); // coverage keeps what the PMDs counted so far
      await this.deps.invoke('pmd-stats-clear');
      this.perfSince = Date.now();
      return '';
    });
    this.add('dpif-netdev/pmd-rxq-show', '[-pmd core] [-secs secs] [dp]', 0, 5, (a) => this.pmdRxqShow(a));
    this.add('dpif-netdev/pmd-rxq-rebalance', '[dp]', 0, 1, async () => {
      await this.deps.invoke('pmd-rxq-rebalance');
      return 'pmd rxq rebalance requested.\n';
    });
    this.add('dpif-netdev/pmd-perf-show', '[-nh] [-it iter-history-len] [-ms ms-history-len] [-pmd core] [dp]', 0, 8, (a) => this.pmdPerfShow(a));
    this.add('dpctl/show', '[-s] [dp...]', 0, 3, (a) => this.dpctlShow(a));
    this.add('dpctl/dump-flows', '[-m] [--names] [dp] [filter=..] [type=..] [pmd=..]', 0, 6, (a) => this.dumpFlows(a));
    this.add('ofproto/trace', '{[dp_name] odp_flow | bridge br_flow} [OPTIONS...] [-generate|packet]', 1, 3, async (a) => {
      if (a.length < 2) throw new UnixctlError('tsvs traces bridge flows: ofproto/trace BRIDGE FLOW (odp_flow syntax is not supported)');
      const r = (await this.deps.invoke('trace', { bridge: a[0], flow: a[1] })) as { text: string };
      return r.text + '\n';
    });
    this.add('fdb/show', 'bridge', 1, 1, async (a) => {
      const r = (await this.deps.invoke('fdb-show', { bridge: a[0] })) as { text: string };
      return r.text + '\n';
    });
    this.add('upcall/show', '', 0, 0, () => this.upcallShow());
    this.add('revalidator/wait', '', 0, 0, async () => {
      await this.deps.invoke('revalidate-wait').catch(() => undefined);
      return '';
    });
  }

  private async pmds(args: string[]): Promise<PmdJson[]> {
    let rows = await this.data<PmdJson[]>('pmd-stats');
    const i = args.indexOf('-pmd');
    if (i >= 0) {
      const core = Number(args[i + 1]);
      if (!Number.isInteger(core)) throw new UnixctlError('Invalid -pmd argument');
      rows = rows.filter((r) => (r.cpu ?? r.pmd) === core);
    }
    return rows;
  }

  private pmdHeader(p: PmdJson): string {
    return `pmd thread numa_id 0 core_id ${p.cpu ?? p.pmd}:`;
  }

  private async pmdStatsShow(args: string[]): Promise<string> {
    const out: string[] = [];
    for (const p of await this.pmds(args)) {
      const lookups = p.emcHits + p.megaflowHits + p.misses;
      const failed = p.misses - p.upcalls > 0 ? p.misses - p.upcalls : 0;
      out.push(
        this.pmdHeader(p),
        `  packets received: ${p.rxPackets}`,
        '  packet recirculations: 0',
        `  avg. datapath passes per packet: ${f2(p.rxPackets > 0 ? lookups / p.rxPackets : 0)}`,
        '  phwol hits: 0',
        '  mfex opt hits: 0',
        '  simple match hits: 0',
        `  emc hits: ${p.emcHits}`,
        '  smc hits: 0',
        `  megaflow hits: ${p.megaflowHits}`,
        `  avg. subtable lookups per megaflow hit: ${f2(p.megaflowHits > 0 ? 1 : 0)}`,
        `  miss with success upcall: ${p.upcalls}`,
        `  miss with failed upcall: ${failed + p.upcallsLost}`,
        `  avg. packets per output batch: ${f2(0)}`,
      );
      const idle = Math.round(p.idleNs * this.ghz);
      const busy = Math.round(p.busyNs * this.ghz);
      const total = idle + busy;
      if (total === 0) continue;
      out.push(`  idle cycles: ${idle} (${pct(idle, total)}%)`, `  processing cycles: ${busy} (${pct(busy, total)}%)`);
      if (p.rxPackets === 0) continue;
      out.push(
        `  avg cycles per packet: ${f2(total / p.rxPackets)} (${total}/${p.rxPackets})`,
        `  avg processing cycles per packet: ${f2(busy / p.rxPackets)} (${busy}/${p.rxPackets})`,
      );
    }
    return out.join('\n') + (out.length ? '\n' : '');
  }

  private async pmdRxqShow(args: string[]): Promise<string> {
    const out = ['Displaying last 60 seconds pmd usage %'];
    for (const p of await this.pmds(args)) {
      const tot = p.rxqs.reduce((a, q) => a + q.rxPackets, 0);
      const busyPct = p.busyNs + p.idleNs > 0 ? p.busyNs / (p.busyNs + p.idleNs) : 0;
      out.push(this.pmdHeader(p), '  isolated : false');
      for (const q of p.rxqs) {
        // measured busy share of the queue over the switch's load window; older switches: packets' share of busy time
        const use = q.usage ?? (tot > 0 ? Math.round(100 * busyPct * (q.rxPackets / tot)) : 0);
        out.push(`  port: ${q.name.padEnd(16)}  queue-id: ${String(q.queue).padStart(2)} (enabled)   pmd usage: ${String(use).padStart(2)} %`);
      }
      const over = tot > 0 ? 0 : Math.round(100 * busyPct);
      out.push(`  overhead: ${String(over).padStart(2)} %`);
    }
    return out.join('\n') + '\n';
  }

  private async pmdPerfShow(args: string[]): Promise<string> {
    const now = new Date();
    const secs = (Date.now() - this.perfSince) / 1000;
    const out = ['', `Time: ${now.toISOString().slice(11, 23)}`, `Measurement duration: ${secs.toFixed(3)} s`, ''];
    for (const p of await this.pmds(args)) {
      const idle = p.idleNs * this.ghz;
      const busy = p.busyNs * this.ghz;
      const total = idle + busy;
      const it = p.iterations;
      const rx = p.rxPackets;
      const row = (label: string, n: number, note: string): string => `  ${label.padEnd(20)}${String(Math.round(n)).padStart(12)}  (${note})`;
      out.push(
        this.pmdHeader(p),
        '',
        row('Iterations:', it, `${f2(it > 0 ? (p.busyNs + p.idleNs) / 1000 / it : 0)} us/it`),
        row('- Used TSC cycles:', total, `${(total > 0 ? 100 : 0).toFixed(1)} % of total cycles`),
        row('- idle iterations:', it - p.busyIterations, `${pct(idle, total).slice(0, -1)} % of used cycles`),
        row('- busy iterations:', p.busyIterations, `${pct(busy, total).slice(0, -1)} % of used cycles`),
        row('Rx packets:', rx, `${(secs > 0 ? rx / secs / 1000 : 0).toFixed(0)} Kpps, ${(rx > 0 ? busy / rx : 0).toFixed(0)} cycles/pkt`),
        row('Datapath passes:', rx, '1.00 passes/pkt'),
        row('- EMC hits:', p.emcHits, `${pct(p.emcHits, rx).slice(0, -1)} %`),
        row('- SMC hits:', 0, '0.0 %'),
        row('- Megaflow hits:', p.megaflowHits, `${pct(p.megaflowHits, rx).slice(0, -1)} %, 1.00 subtbl lookups/hit`),
        row('- Upcalls:', p.upcalls, `${pct(p.upcalls, rx).slice(0, -1)} %`),
        row('- Lost upcalls:', p.upcallsLost, `${pct(p.upcallsLost, rx).slice(0, -1)} %`),
        row('Tx packets:', p.txPackets, `${(secs > 0 ? p.txPackets / secs / 1000 : 0).toFixed(0)} Kpps`),
        '',
      );
    }
    return out.join('\n') + '\n';
  }

  private async dpctlShow(args: string[]): Promise<string> {
    const stats = args.includes('-s');
    const pmds = await this.data<PmdJson[]>('pmd-stats');
    const flows = await this.data<DpFlowJson[]>('dump-dp-flows');
    const show = await this.data<ShowJson[]>('show');
    const ps = new Map<string, PortStatJson>();
    for (const r of (await this.data<PortStatJson[]>('port-stats').catch(() => [])) ?? []) {
      const o = ps.get(r.port);
      if (!o || r.rxPackets + r.txPackets >= o.rxPackets + o.txPackets) ps.set(r.port, r);
    }
    const sum = (k: keyof PmdJson): number => pmds.reduce((a, p) => a + (p[k] as number), 0);
    const out = ['netdev@ovs-netdev:', `  lookups: hit:${sum('emcHits') + sum('megaflowHits')} missed:${sum('misses')} lost:${sum('upcallsLost')}`, `  flows: ${flows.length}`];
    const ports = show.flatMap((b) => b.ports).sort((a, b) => a.ofport - b.ofport);
    for (const p of ports) {
      out.push(`  port ${p.ofport}: ${p.name} (${OVS_TYPE[p.type] ?? p.type})`);
      if (!stats) continue;
      const s = ps.get(p.name);
      out.push(
        `    RX packets:${s?.rxPackets ?? 0} errors:0 dropped:${s?.rxDropped ?? 0} overruns:? frame:?`,
        `    TX packets:${s?.txPackets ?? 0} errors:0 dropped:${s?.txDropped ?? 0} aborted:? carrier:?`,
        '    collisions:?',
        `    RX bytes:${s?.rxBytes ?? 0}  TX bytes:${s?.txBytes ?? 0}`,
      );
    }
    return out.join('\n') + '\n';
  }

  private async dumpFlows(args: string[]): Promise<string> {
    const verbose = args.includes('-m') || args.includes('--more');
    const pmdArg = args.find((a) => a.startsWith('pmd='));
    const flows = await this.data<DpFlowJson[]>('dump-dp-flows');
    const show = await this.data<ShowJson[]>('show');
    const names = new Map<number, string>();
    for (const b of show) for (const p of b.ports) names.set(p.ofport, p.name);
    const out: string[] = [];
    const byPmd = new Map<number, DpFlowJson[]>();
    for (const f of flows) {
      if (pmdArg && Number(pmdArg.slice(4)) !== f.pmd) continue;
      if (!byPmd.has(f.pmd)) byPmd.set(f.pmd, []);
      byPmd.get(f.pmd)!.push(f);
    }
    const pmds = byPmd.size > 0 ? await this.data<PmdJson[]>('pmd-stats') : [];
    for (const [pmd, list] of byPmd) {
      const p = pmds.find((x) => x.pmd === pmd);
      out.push(`flow-dump from pmd on cpu core: ${p?.cpu ?? pmd}`);
      for (const f of list) out.push(formatOdpFlow(f, verbose, verbose || args.includes('--names') ? names : undefined));
    }
    return out.join('\n') + (out.length ? '\n' : '');
  }

  private async upcallShow(): Promise<string> {
    const t0 = Date.now();
    const flows = await this.data<DpFlowJson[]>('dump-dp-flows');
    const ms = Date.now() - t0;
    this.upcallMax = Math.max(this.upcallMax, flows.length);
    return [
      'netdev@ovs-netdev:',
      `  flows         : (current ${flows.length}) (avg ${flows.length}) (max ${this.upcallMax}) (limit 10000)`,
      `  dump duration : ${ms}ms`,
      '  ufid enabled : true',
      '',
      `  0: (keys ${flows.length})`,
      '',
    ].join('\n');
  }

  /** Coverage totals: PMD counters restart at pmd-stats-clear, coverage counters never do. */
  private readonly covTotal = new Map<string, number>();
  private readonly covLast = new Map<string, number>();

  private async counters(): Promise<Map<string, number>> {
    const raw = await this.rawCounters();
    for (const [k, v] of raw) {
      const last = this.covLast.get(k) ?? 0;
      const d = v >= last ? v - last : v;
      this.covLast.set(k, v);
      this.covTotal.set(k, (this.covTotal.get(k) ?? 0) + d);
    }
    return new Map(this.covTotal);
  }

  private async rawCounters(): Promise<Map<string, number>> {
    const c = new Map<string, number>();
    const add = (k: string, v: number): void => {
      c.set(k, (c.get(k) ?? 0) + v);
    };
    for (const p of await this.data<PmdJson[]>('pmd-stats')) {
      add('datapath_rx_packets', p.rxPackets);
      add('datapath_tx_packets', p.txPackets);
      add('dpif_netdev_emc_hit', p.emcHits);
      add('dpif_netdev_megaflow_hit', p.megaflowHits);
      add('dpif_netdev_miss', p.misses);
      add('upcall_handled', p.upcalls);
      add('upcall_lost', p.upcallsLost);
      for (const [k, v] of Object.entries(p.drops ?? {})) add(`datapath_drop_${k.replace(/[^A-Za-z0-9]+/g, '_')}`, v);
    }
    return c;
  }

  private async coverageShow(): Promise<string> {
    const now = await this.counters();
    const t = Date.now();
    const ago = (sec: number): Map<string, number> | undefined => {
      let best: { t: number; c: Map<string, number> } | undefined;
      for (const s of this.samples) if (t - s.t >= sec * 1000 - 500) best = s;
      return (best ?? this.samples[0])?.c;
    };
    const rate = (k: string, sec: number, digits: number, width: number): string => {
      const old = ago(sec);
      const d = (now.get(k) ?? 0) - (old?.get(k) ?? 0);
      return `${(Math.max(0, d) / sec).toFixed(digits).padStart(width)}/sec`;
    };
    const lines = ['Event coverage, avg rate over last: 5 seconds, last minute, last hour,  hash=00000000:'];
    let never = 0;
    for (const k of [...now.keys()].sort()) {
      const total = now.get(k)!;
      if (total === 0) {
        never++;
        continue;
      }
      // lib/coverage.c: "%-24s %5.1f/sec %9.3f/sec %13.4f/sec   total: %llu"
      lines.push(`${k.padEnd(24)} ${rate(k, 5, 1, 5)} ${rate(k, 60, 3, 9)} ${rate(k, 3600, 4, 13)}   total: ${total}`);
    }
    lines.push(`${never} events never hit`);
    return lines.join('\n') + '\n';
  }
}
