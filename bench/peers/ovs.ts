/**
 * OVS-DPDK 3.1 as a benchmark peer, entirely inside a private temp directory:
 * its own ovsdb-server (database, socket, pid, log) and ovs-vswitchd-dpdk, both
 * run in the foreground as our children and stopped by PID. Recipe from
 * docs/interop.md#ovs-dpdk-31: dpdk-extra "--no-huge -m 4096 --no-pci --legacy-mem", a netdev
 * bridge, dpdkvhostuser ports (OVS is the vhost-user server; sockets in the run
 * dir), pmd-cpu-mask for the PMD thread.
 *
 *   const ovs = await OvsDpdk.start({ cpu: 1 });
 *   await ovs.addBridge('br0'); const s1 = await ovs.addVhostUserPort('br0', 'vhu1', 1);
 *   await ovs.addFlows('br0', ['in_port=1,actions=output:2']); ... await ovs.stop();
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Proc, execOk, exec, sleep, which } from '../proc.js';
import { removeEalRuntime } from './dpdk.js';

export const OVS_VSWITCHD = process.env.TSVS_OVS_VSWITCHD ?? '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';
export const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export interface OvsOptions {
  /** CPU for the PMD thread and (via taskset) every other ovs-vswitchd thread. */
  cpu: number;
  /** DPDK memory in MB (--no-huge -m), default 4096. */
  memMb?: number;
  /** Keep the run dir after stop (debugging). */
  keepDir?: boolean;
  /**
   * Run ovs-vswitchd in this network namespace (made by the caller): its bridges' internal ports
   * (taps) and the system ports it opens live there, and its tunnel routes come from that
   * namespace's routing table. ovsdb-server and the control sockets stay on the filesystem.
   */
  netns?: string;
}

export function ovsAvailable(): string | null {
  if (!fs.existsSync(OVS_VSWITCHD)) return `${OVS_VSWITCHD} is missing (apt-get install openvswitch-switch-dpdk)`;
  for (const t of ['ovsdb-server', 'ovsdb-tool', 'ovs-vsctl', 'ovs-ofctl', 'ovs-appctl']) if (!which(t)) return `${t} is not installed`;
  if (!fs.existsSync(OVS_SCHEMA)) return `${OVS_SCHEMA} is missing`;
  return null;
}

export class OvsDpdk {
  private db: Proc | null = null;
  private static seq = 0;
  readonly prefix = `tsvsovs${process.pid}x${OvsDpdk.seq++}`;
  private vs: Proc | null = null;
  private constructor(
    readonly dir: string,
    readonly opts: OvsOptions,
  ) {}

  get env(): Record<string, string> {
    return { OVS_RUNDIR: this.dir, OVS_DBDIR: this.dir, OVS_LOGDIR: this.dir, OVS_SYSCONFDIR: this.dir, OVS_PKGDATADIR: '/usr/share/openvswitch' };
  }

  /** PID of ovs-vswitchd (the switch under test). */
  get pid(): number {
    if (!this.vs) throw new Error('ovs-vswitchd is not running');
    return this.vs.pid;
  }

  static async start(o: OvsOptions): Promise<OvsDpdk> {
    const why = ovsAvailable();
    if (why) throw new Error(why);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-ovs-'));
    const ovs = new OvsDpdk(dir, o);
    try {
      await ovs.boot();
    } catch (e) {
      await ovs.stop();
      throw e;
    }
    return ovs;
  }

  private async boot(): Promise<void> {
    const d = this.dir;
    await execOk(['ovsdb-tool', 'create', `${d}/conf.db`, OVS_SCHEMA]);
    this.db = new Proc(['ovsdb-server', `${d}/conf.db`, `--remote=punix:${d}/db.sock`, `--pidfile=${d}/db.pid`, `--log-file=${d}/db.log`, '--unixctl', `${d}/db.ctl`], { env: this.env });
    const t0 = Date.now();
    while (!fs.existsSync(`${d}/db.sock`)) {
      if (this.db.exited) throw new Error(`ovsdb-server exited: ${this.db.tail()}`);
      if (Date.now() - t0 > 15000) throw new Error('ovsdb-server did not create its socket');
      await sleep(50);
    }
    await this.vsctl('--no-wait', 'init');
    const mem = this.opts.memMb ?? 4096;
    await this.vsctl(
      '--no-wait', 'set', 'Open_vSwitch', '.',
      'other_config:dpdk-init=true',
      `other_config:dpdk-extra=--no-huge -m ${mem} --no-pci --legacy-mem --file-prefix=${this.prefix}`,
      `other_config:pmd-cpu-mask=0x${(1 << this.opts.cpu).toString(16)}`,
    );
    this.vs = new Proc([OVS_VSWITCHD, `unix:${d}/db.sock`, `--pidfile=${d}/vs.pid`, `--log-file=${d}/vs.log`, '--unixctl', `${d}/vs.ctl`], {
      env: this.env,
      cpus: [this.opts.cpu],
      netns: this.opts.netns,
    });
    const t1 = Date.now();
    for (;;) {
      if (this.vs.exited) throw new Error(`ovs-vswitchd exited: ${this.vs.tail()}`);
      const r = await exec(['ovs-vsctl', `--db=unix:${d}/db.sock`, '--no-wait', 'get', 'Open_vSwitch', '.', 'dpdk_initialized'], { env: this.env });
      if (r.stdout.trim() === 'true') break;
      if (Date.now() - t1 > 60000) throw new Error(`OVS DPDK did not initialize in 60 s: ${this.vs.tail()}`);
      await sleep(200);
    }
  }

  vsctl(...args: string[]): Promise<string> {
    return execOk(['ovs-vsctl', `--db=unix:${this.dir}/db.sock`, '--timeout=60', ...args], { env: this.env, timeoutMs: 70000 });
  }

  ofctl(...args: string[]): Promise<string> {
    return execOk(['ovs-ofctl', ...args], { env: this.env });
  }

  appctl(...args: string[]): Promise<string> {
    return execOk(['ovs-appctl', '-t', `${this.dir}/vs.ctl`, ...args], { env: this.env });
  }

  async addBridge(br: string): Promise<void> {
    await this.vsctl('add-br', br, '--', 'set', 'bridge', br, 'datapath_type=netdev');
  }

  /** A dpdkvhostuser port (OVS listens); returns the socket path. */
  async addVhostUserPort(br: string, name: string, ofport: number): Promise<string> {
    await this.vsctl('add-port', br, name, '--', 'set', 'Interface', name, 'type=dpdkvhostuser', `ofport_request=${ofport}`);
    const sock = path.join(this.dir, name);
    const t0 = Date.now();
    while (!fs.existsSync(sock)) {
      if (Date.now() - t0 > 10000) throw new Error(`OVS did not create vhost-user socket ${sock}: ${this.vs?.tail() ?? ''}`);
      await sleep(50);
    }
    return sock;
  }

  async setFlows(br: string, flows: string[]): Promise<void> {
    await this.ofctl('del-flows', br);
    for (const f of flows) await this.ofctl('add-flow', br, f);
  }

  /** `dpif-netdev/pmd-stats-show` text. */
  pmdStats(): Promise<string> {
    return this.appctl('dpif-netdev/pmd-stats-show');
  }

  /** Live port counters (`ovs-ofctl dump-ports`), by OpenFlow port number. */
  async portStats(br: string): Promise<Map<number, { rxPackets: number; rxDropped: number; txPackets: number; txDropped: number }>> {
    return parseDumpPorts(await this.ofctl('dump-ports', br));
  }

  async stop(): Promise<void> {
    if (this.vs && !this.vs.exited) {
      await exec(['ovs-appctl', '-t', `${this.dir}/vs.ctl`, 'exit'], { env: this.env, timeoutMs: 5000 });
      await Promise.race([this.vs.wait(), sleep(3000)]);
      await this.vs.stop('SIGTERM', 4000);
    }
    if (this.db && !this.db.exited) await this.db.stop('SIGTERM', 3000);
    removeEalRuntime(this.prefix);
    if (!this.opts.keepDir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Parse `ovs-ofctl dump-ports BR` text. */
export function parseDumpPorts(out: string): Map<number, { rxPackets: number; rxDropped: number; txPackets: number; txDropped: number }> {
  const res = new Map<number, { rxPackets: number; rxDropped: number; txPackets: number; txDropped: number }>();
  const re = /port\s+"?(\w+)"?:\s*rx pkts=(\d+|\?), bytes=[^,]*, drop=(\d+|\?)[^\n]*\n\s*tx pkts=(\d+|\?), bytes=[^,]*, drop=(\d+|\?)/g;
  const n = (s: string): number => (s === '?' ? NaN : Number(s));
  for (let m = re.exec(out); m; m = re.exec(out)) {
    const no = Number(m[1]);
    if (!Number.isInteger(no)) continue; // LOCAL
    res.set(no, { rxPackets: n(m[2]), rxDropped: n(m[3]), txPackets: n(m[4]), txDropped: n(m[5]) });
  }
  return res;
}

/** Sums over all threads of `dpif-netdev/pmd-stats-show`: packets received, upcalls. */
export function parsePmdStatsShow(out: string): { received: number; upcalls: number; failedUpcalls: number } {
  const sum = (re: RegExp): number => [...out.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
  if (!/packets received:/.test(out)) throw new Error(`not pmd-stats-show output: ${out.slice(0, 200)}`);
  return {
    received: sum(/packets received:\s+(\d+)/g),
    upcalls: sum(/miss with success upcall:\s+(\d+)/g),
    failedUpcalls: sum(/miss with failed upcall:\s+(\d+)/g),
  };
}
