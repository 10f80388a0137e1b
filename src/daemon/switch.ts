/**
 * The switch: bridges of ports, OpenFlow-style tables per bridge (the slow
 * path, on the main thread), PMD worker threads running the datapath, the
 * configuration database and the control socket's methods.
 *
 * Port numbers: every port gets one number, unique across bridges, used both
 * as its OpenFlow port number and as its datapath port number, so upcalls and
 * datapath actions need no translation.
 *
 * Rule changes and the datapath: installed datapath flows are checked against
 * the rules by revalidation passes (every 500 ms, and at once after a change).
 * `await sw.waitRevalidated()` resolves when a pass that started after the call
 * has ended, i.e. the datapath reflects every change made before it (as
 * `ovs-appctl revalidator/wait`); the `add-flow`, `del-flows`, `add-port` and
 * `del-port` RPCs answer only then, and `revalidate-wait` exposes it on the
 * control socket. OpenFlow BARRIER_REPLY and OVSDB commits build on it.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { Mempool, MempoolError, DEFAULT_BUF_SIZE, DEFAULT_HEADROOM } from '../mem/mempool.js';
import { PmdThread, LOOP_GAP_BOUNDS_US, type UpcallBatch, type PortEventMsg, type PmdThreadStats } from '../dp/pmd-thread.js';
import { UpcallAnswerBuilder } from '../dp/upcall-batch.js';
import { translateUpcalls, type UpcallHandlerHooks } from './upcall-handler.js';
import { newCrossPmdRing } from '../dp/cross-pmd-port.js';
import { PMD_STAT_FIELDS } from '../dp/datapath.js';
import { AUTO_LB_DEFAULTS, autoLbDecision, loadsBetween, planRebalance, type AutoLbConfig, type LoadSample, type Plan, type RxqLoad } from './pmd-balance.js';
import { FRAME_OVERHEAD, type PortInfo, type PortSpec, type PortKind } from '../dp/port-spec.js';
import { formatMatch, DEFAULT_PRIORITY } from '../ofproto/flow-syntax.js';
import { formatProgram } from '../dp/actions.js';
import { traceFlow } from '../ofproto/trace.js';
import { ConfigDb, type BridgeConfig, type PortConfig, type TunnelConfig } from './config-db.js';
import { resolveTunnelRoute } from './tunnel-route.js';
import { VXLAN_DEFAULT_PORT, parseIpv4 } from '../port/tunnel.js';
import { portNumberProblem } from '../dp/port-number.js';
import { ControlServer, RpcError } from './control.js';
import { runPaths, ensureRunDir, type RunPaths } from './run-dir.js';
import { Bridge, DEFAULT_FLOW } from './bridge.js';
import type { SwitchView, ObservableSwitch } from '../metrics/view.js';
import { registerObserveMethods } from '../metrics/observe-methods.js';
import { CaptureSessions } from '../capture/sessions.js';
import { OpenFlowAgent, type OfBridgeHost, type OfPortStats, type FailMode } from '../openflow/agent.js';
import type { OfPortDesc } from '../openflow/wire.js';
import { xlatePacketOut, type ControllerEvent } from '../ofproto/xlate.js';
import { portVlan, formatPortVlan, type PortVlanConfig, type VlanMode } from '../ofproto/port-vlan.js';
import type { OfAction } from '../ofproto/flow-syntax.js';
import { extractKey, FLOW_WORDS } from '../dp/flow-key.js';
import { memoryReport, rssSplit, writeHeapSnapshot, type MemoryReport } from '../util/memory.js';
import { mallocTrim } from '../sys/libc.js';
import { executeActions, EXEC_STATE_WORDS, ST_OFF, ST_LEN, ST_NOUT, EXEC_DONE } from '../dp/actions.js';

/** MTU of ports when --max-mtu is not given. */
export const DEFAULT_MAX_MTU = 1500;
/** Smallest --max-mtu (IPv4's minimum MTU). */
export const MIN_MAX_MTU = 68;
/**
 * Largest --max-mtu: OVS-DPDK's limit (a 9728-byte frame with CRC), more than
 * any common jumbo setting (9000, 9216 frames).
 */
export const MAX_MAX_MTU = 9710;
export const DEFAULT_POOL_SIZE = 16384;
/** One copy guest-to-guest is opt-in (--one-copy on, other_config:one-copy=true): measured slower than the pool path with traffic both ways; see README "One copy". */
export const DEFAULT_ONE_COPY = false;

/** 'on'/'true' or 'off'/'false' (CLI --one-copy, OVSDB other_config:one-copy); undefined or '': the default. */
export function parseOneCopy(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return DEFAULT_ONE_COPY;
  if (v === true || v === 'on' || v === 'true') return true;
  if (v === false || v === 'off' || v === 'false') return false;
  throw new SwitchConfigError(`one-copy: '${String(v)}' is not on or off`);
}

export interface BufferLayout {
  /** The --max-mtu the layout was derived from. */
  maxMtu: number;
  /** Bytes of one packet buffer, headroom included. */
  bufSize: number;
  /** Bytes before the frame (virtio-net header, pushed VLAN tags). */
  headroom: number;
  /** bufSize - headroom: the longest frame one buffer holds. */
  room: number;
}

/**
 * Packet buffer size for ports of MTU up to maxMtu: headroom (128) plus the
 * frame (MTU + Ethernet header + two VLAN tags) rounded up to 128 bytes, and
 * never smaller than the default 2176-byte buffer (2048 bytes of room), so
 * the default switch is unchanged: --max-mtu 1500 -> 2176, 9000 -> 9216,
 * 9710 -> 9984.
 */
export function bufferLayout(maxMtu: number): BufferLayout {
  if (!Number.isInteger(maxMtu) || maxMtu < MIN_MAX_MTU || maxMtu > MAX_MAX_MTU) {
    throw new RangeError(`max MTU ${maxMtu} must be an integer in ${MIN_MAX_MTU}..${MAX_MAX_MTU}`);
  }
  const headroom = DEFAULT_HEADROOM;
  const bufSize = Math.max(DEFAULT_BUF_SIZE, headroom + Math.ceil((maxMtu + FRAME_OVERHEAD) / 128) * 128);
  return { maxMtu, bufSize, headroom, room: bufSize - headroom };
}

export interface SwitchOptions {
  runDir: string;
  pmdCpus?: number[];
  pmdSleepMaxUs?: number;
  /** pmd-stats splits the time per packet into rx, processing and tx (a few clock reads per burst). */
  pmdPerfMetrics?: boolean;
  /** PMD auto load balancing (OVS's pmd-auto-lb; off by default). */
  pmdAutoLb?: Partial<AutoLbConfig>;
  /** One copy guest-to-guest between vhost-user ports of one PMD thread (src/port/one-copy.ts; default DEFAULT_ONE_COPY). */
  oneCopy?: boolean;
  /** Rx-queue load sampling period, ms (default 1000); loads are taken over the last 10 samples. */
  pmdLoadIntervalMs?: number;
  poolSize?: number;
  /** Largest port MTU; sizes the packet buffers (default 1500). */
  maxMtu?: number;
  /** Most guest memory one vhost-user frontend may share, bytes (default 1 TiB). */
  maxGuestMemory?: number;
  log: Logger;
  /** Revalidation period, ms. */
  revalidateMs?: number;
  /**
   * Keep the configuration in memory only (conf.json is neither read nor
   * written): OVSDB mode, where ovsdb-server's database is the configuration.
   */
  ephemeral?: boolean;
}

interface PortRuntime {
  cfg: PortConfig;
  bridge: string;
  pmd: PmdThread;
  info: PortInfo | null;
  error?: string;
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export class Switch implements ObservableSwitch {
  readonly paths: RunPaths;
  readonly log: Logger;
  readonly db: ConfigDb;
  readonly pool: Mempool;
  /** Packet buffer sizes, from --max-mtu. */
  readonly buffers: BufferLayout;
  readonly pmds: PmdThread[] = [];
  readonly control: ControlServer;
  private readonly bridges = new Map<string, Bridge>();
  /** OpenFlow agent per bridge (management socket RUNDIR/BRIDGE.mgmt, controllers). */
  private readonly agents = new Map<string, OpenFlowAgent>();
  private readonly portAdded = new Map<number, number>();
  private readonly ports = new Map<number, PortRuntime>();
  private revalTimer: NodeJS.Timeout | null = null;
  private trimTimer: NodeJS.Timeout | null = null;
  private lastXlateErrorLog = 0;
  private stopping = false;
  private pmdStatsBase = new Map<number, PmdThreadStats>();
  /** PMD rx-queue balancing: settings, load samples (oldest first), last rebalance, and one move at a time. */
  private autoLb: AutoLbConfig = { ...AUTO_LB_DEFAULTS };
  private loadSamples: LoadSample[] = [];
  private loadTimer: NodeJS.Timeout | null = null;
  private lastRebalance = 0;
  private rebalancing: Promise<unknown> = Promise.resolve();
  /** Rebalances done and ports moved (pmd-rxq-show, logs). */
  private rebalances = 0;
  /** One copy guest-to-guest (set at start, changed by other_config:one-copy). */
  oneCopy = DEFAULT_ONE_COPY;
  /** The setting the daemon started with (other_config:one-copy removed: back to it). */
  private startOneCopy = DEFAULT_ONE_COPY;
  /** The latest data-path description a moved port's backend forwarded (see movePort). */
  private readonly movedDesc = new Map<number, import('../vhost/ring-lease.js').DataPathDescription | null>();
  private portsMoved = 0;
  private readonly ephemeral: boolean;
  private readonly maxGuestMemory: number | undefined;
  onShutdown: (() => void) | null = null;
  /** tsvs capture sessions (frames copied by the PMD threads into shared rings). */
  private captures: CaptureSessions | null = null;

  private constructor(opts: SwitchOptions) {
    this.buffers = bufferLayout(opts.maxMtu ?? DEFAULT_MAX_MTU);
    this.maxGuestMemory = opts.maxGuestMemory;
    const count = opts.poolSize ?? DEFAULT_POOL_SIZE;
    const { bufSize, headroom, maxMtu } = this.buffers;
    try {
      this.pool = Mempool.create({ name: 'tsvs-pool', count, bufSize, headroom });
    } catch (e) {
      if (!(e instanceof MempoolError)) throw e;
      throw new SwitchConfigError(
        `cannot make ${count} packet buffers of ${bufSize} B (--pool-size ${count}, --max-mtu ${maxMtu}): ${e.message}; lower --pool-size or --max-mtu`,
      );
    }
    this.paths = runPaths(opts.runDir);
    this.log = opts.log;
    try {
      ensureRunDir(this.paths.dir);
      this.db = opts.ephemeral ? ConfigDb.inMemory(this.paths.db) : ConfigDb.open(this.paths.db);
    } catch (e) {
      this.pool.close();
      throw e;
    }
    this.ephemeral = opts.ephemeral === true;
    this.control = new ControlServer(this.paths.control);
  }

  static async start(opts: SwitchOptions): Promise<Switch> {
    const sw = new Switch(opts);
    sw.oneCopy = sw.startOneCopy = opts.oneCopy ?? DEFAULT_ONE_COPY;
    const cpus = opts.pmdCpus && opts.pmdCpus.length > 0 ? opts.pmdCpus : [undefined];
    cpus.forEach((cpu, i) => {
      sw.pmds.push(
        new PmdThread(
          { id: i, pool: sw.pool.attachInfo(), cpu, sleepMaxUs: opts.pmdSleepMaxUs ?? 0, perfMetrics: opts.pmdPerfMetrics === true, oneCopy: opts.oneCopy ?? DEFAULT_ONE_COPY, logLevel: portLogLevel(opts.log) },
          {
            upcalls: (b) => sw.onUpcalls(b),
            portEvent: (m) => sw.onPortEvent(m),
            dataPath: (m) => {
              // a moved port's backend (kept by the thread that opened it) has new rings: tell the thread polling it
              const rt = sw.ports.get(m.port);
              sw.movedDesc.set(m.port, m.desc);
              if (rt && rt.pmd.id !== m.pmd) rt.pmd.setDataPath(m.port, m.desc).catch((e: Error) => sw.log.warn(`port ${rt.cfg.name}: data path hand-over: ${e.message}`));
            },
                        log: (level, msg) => sw.log[level === 'error' ? 'error' : level === 'warn' ? 'warn' : level === 'debug' ? 'debug' : 'info'](msg),
            exit: (code) => {
              if (!sw.stopping) sw.log.error(`pmd ${i} exited unexpectedly (code ${code})`);
            },
          },
        ),
      );
    });
    sw.registerMethods();
    // restore before answering, so the first `tsvs show` after a restart sees the whole configuration
    await sw.restore();
    await sw.control.listen();
    fs.writeFileSync(sw.paths.pid, `${process.pid}\n`);
    sw.revalTimer = setInterval(() => {
      sw.reqSeq++;
      sw.kickRevalidation();
    }, opts.revalidateMs ?? 500);
    sw.revalTimer.unref();
    sw.setAutoLb(opts.pmdAutoLb ?? {});
    sw.loadTimer = setInterval(() => void sw.sampleLoad(), opts.pmdLoadIntervalMs ?? 1000);
    sw.loadTimer.unref();
    // glibc keeps freed malloc memory resident; churned connections and bursts of control work leave
    // some behind: give it back every 30 s (well under a millisecond at this daemon's size)
    sw.trimTimer = setInterval(() => mallocTrim(), 30000);
    sw.trimTimer.unref();
    const b = sw.buffers;
    sw.log.info(
      { maxMtu: b.maxMtu, bufSize: b.bufSize, buffers: sw.pool.count, poolBytes: sw.poolBytes() },
      `packet buffers: ${sw.pool.count} x ${b.bufSize} B = ${mib(sw.poolBytes())} MiB shared memory (ports up to MTU ${b.maxMtu}; frames up to ${b.room} B)`,
    );
    sw.log.info({ runDir: sw.paths.dir, pmds: sw.pmds.length, control: sw.paths.control }, 'tsvs switch started');
    return sw;
  }

  /** Re-create bridges, ports and rules from the database. */
  private async restore(): Promise<void> {
    for (const t of this.db.removedTemps) this.log.warn(`config: removed ${t}, left by a daemon that died while saving`);
    for (const m of this.db.skipped) this.log.error(m);
    if (this.db.skipped.length > 0) {
      this.log.error(`config: ${this.db.skipped.length} entries of ${this.db.file} skipped; the file as it was is kept in ${this.db.keptAs}`);
    }
    for (const b of this.db.config.bridges) {
      this.bridges.set(b.name, new Bridge(b.name));
      await this.startAgent(b.name, b);
      for (const p of b.ports) await this.openPort(b.name, p);
      const br = this.bridges.get(b.name)!;
      for (const f of b.flows) {
        try {
          br.addFlow(f, (n) => this.resolvePort(n));
        } catch (e) {
          this.log.error(`bridge ${b.name}: stored rule '${f}' no longer parses: ${(e as Error).message}`);
        }
      }
      if (b.ports.length || b.flows.length) this.log.info(`restored bridge ${b.name}: ${b.ports.length} ports, ${b.flows.length} rules`);
    }
  }

  /** Bytes of the packet buffer region (pages are taken as buffers are first used). */
  poolBytes(): number {
    return this.pool.region.bytes.length;
  }

  // ---------------- ports ----------------

  /** Why a port of MTU `mtu` cannot be opened on this switch, or null. */
  private mtuProblem(mtu: number | undefined): string | null {
    if (mtu === undefined) return null;
    if (!Number.isInteger(mtu) || mtu < MIN_MAX_MTU) return `mtu ${String(mtu)} must be an integer >= ${MIN_MAX_MTU}`;
    const b = this.buffers;
    if (mtu > b.maxMtu) {
      return `mtu ${mtu} is larger than the switch's --max-mtu ${b.maxMtu} (packet buffers of ${b.bufSize} B); restart the daemon with --max-mtu ${mtu} or more`;
    }
    return null;
  }

  /** The PMD thread with the fewest rx queues polls a new port (OVS pmd-rxq-assign=roundrobin by load). */
  private pmdForNewPort(): PmdThread {
    const load = new Map<number, number>(this.pmds.map((p) => [p.id, 0]));
    for (const rt of this.ports.values()) load.set(rt.pmd.id, (load.get(rt.pmd.id) ?? 0) + (rt.cfg.queues ?? 1));
    return [...this.pmds].sort((a, b) => load.get(a.id)! - load.get(b.id)! || a.id - b.id)[0];
  }

  private portSpec(p: PortConfig): PortSpec {
    const spec: PortSpec = { name: p.name, type: p.type as PortKind, path: p.path, iface: p.iface, netns: p.netns, queues: p.queues, mac: p.mac, mtu: p.mtu, maxMtu: this.buffers.maxMtu, maxGuestMemory: this.maxGuestMemory };
    if (p.type === 'vxlan') {
      if (p.tunnel === undefined) throw new Error('vxlan port without remote_ip');
      const r = resolveTunnelRoute(p.tunnel, p.iface, p.netns);
      spec.iface = r.iface;
      spec.tunnel = { remoteIp: p.tunnel.remoteIp, localIp: r.localIp, key: p.tunnel.key ?? 0, dstPort: p.tunnel.dstPort ?? VXLAN_DEFAULT_PORT, nextHop: r.nextHop };
    }
    return spec;
  }

  private async openPort(bridge: string, p: PortConfig): Promise<void> {
    const pmd = this.pmdForNewPort();
    const rt: PortRuntime = { cfg: p, bridge, pmd, info: null };
    this.ports.set(p.ofport, rt);
    this.bridges.get(bridge)!.ports.set(p.ofport, p.name);
    if (p.tunnel?.key === 'flow') this.bridges.get(bridge)!.flowKeyTunnels.add(p.ofport);
    if (p.vlan !== undefined) this.bridges.get(bridge)!.setPortVlan(p.ofport, portVlan(p.vlan));
    try {
      const problem = this.mtuProblem(p.mtu);
      if (problem !== null) throw new Error(problem);
      rt.info = await pmd.addPort(p.ofport, this.portSpec(p));
      // other PMD threads reach this port through a ring drained by its owner
      for (const other of this.pmds) {
        if (other === pmd) continue;
        const ring = newCrossPmdRing();
        await other.addCrossPmdPort(p.ofport, p.name, ring.bytes);
        await pmd.addTxSource(p.ofport, ring.bytes, other.id);
      }
      this.portAdded.set(p.ofport, Date.now());
      this.agents.get(bridge)?.portStatus(this.portDesc(p.ofport), 0);
      const mtu = rt.info.mtu;
      this.log.info(`port ${p.name} (${p.type}, ofport ${p.ofport}${mtu !== undefined ? `, mtu ${mtu}` : ''}) added to ${bridge}, polled by pmd ${pmd.id}`);
      if (mtu !== undefined && mtu > this.buffers.maxMtu) {
        this.log.warn(
          `port ${p.name}: its device's MTU ${mtu} is above --max-mtu ${this.buffers.maxMtu}: frames over ${this.buffers.room} B will be dropped (rx-too-big)`,
        );
      }
    } catch (e) {
      rt.error = (e as Error).message;
      this.log.error(`port ${p.name}: ${rt.error}`);
    }
  }

  private onPortEvent(m: PortEventMsg): void {
    const rt = this.ports.get(m.port);
    // only the thread polling the port speaks for it (others hold a ring to it, or held it before a move)
    if (!rt || rt.pmd.id !== m.pmd) return;
    const was = rt.info?.link;
    rt.info = m.info;
    if (was !== m.info.link) {
      this.log.info(`port ${rt.cfg.name}: link ${m.info.link}${m.info.status ? ` (${m.info.status})` : ''}`);
      if (was !== undefined) this.agents.get(rt.bridge)?.portStatus(this.portDesc(m.port), 2);
    }
    if (m.info.link === 'down') {
      const br = this.bridges.get(rt.bridge);
      br?.mac.flushPort(m.port);
    }
  }

  resolvePort(name: string): number | undefined {
    for (const [no, rt] of this.ports) if (rt.cfg.name === name) return no;
    return undefined;
  }

  private portName(no: number): string | undefined {
    return this.ports.get(no)?.cfg.name;
  }

  private bridgeOrThrow(name: unknown): Bridge {
    const b = this.bridges.get(String(name));
    if (!b) throw new RpcError(`no bridge named '${String(name)}'`);
    return b;
  }

  // ---------------- slow path ----------------

  /** Translate a batch of upcalls from one PMD (read in place in its channel); one answer (installs, then replies). */
  private onUpcalls(b: UpcallBatch): void {
    if (b.n === 0) return;
    translateUpcalls(b, this.answers, Date.now(), this.upcallHooks);
    this.pmds[b.pmd].answerUpcalls(this.answers);
  }

  private readonly upcallHooks: UpcallHandlerHooks = {
    bridgeOf: (portNo) => {
      const rt = this.ports.get(portNo);
      return rt ? this.bridges.get(rt.bridge) : undefined;
    },
    xlateError: (br, portNo, error) => {
      const now = Date.now();
      if (now - this.lastXlateErrorLog < 10_000) return;
      this.lastXlateErrorLog = now;
      this.log.warn(`bridge ${br.name}: translation of a packet from port ${this.portName(portNo) ?? portNo} cut off (${error}); dropped (counts in 'tsvs show'; logged at most every 10 s)`);
    },
    packetIns: (br, frame, portNo, prog, evs) => this.sendPacketIns(br.name, frame, portNo, prog, evs),
  };

  /** Answer storage reused by every upcall batch (only the answer's own arrays are new per batch). */
  private readonly answers = new UpcallAnswerBuilder(256);

  // ---------------- revalidation ----------------
  //
  // As OVS's revalidators: `reqSeq` counts requests for a pass (a rule or port
  // change, a periodic tick, a caller of waitRevalidated()); a pass takes the
  // number current when it starts and, when it ends, everything requested up to
  // that number is reflected in the datapath (`doneSeq`). A request made while a
  // pass runs makes another pass follow it, so no change waits for the next tick.

  private reqSeq = 0;
  private doneSeq = 0;
  private passRunning = false;
  private revalWaiters: { seq: number; resolve: () => void }[] = [];
  /** Datapath flows removed by revalidation since start. */
  revalidatedFlowsRemoved = 0;
  /** Completed revalidation passes since start. */
  revalidationPasses = 0;

  /**
   * Resolves once the datapath reflects every rule and port change made before
   * the call: a full revalidation pass that started after the call has ended
   * (as `ovs-appctl revalidator/wait`). Never rejects; resolves at once when the
   * switch is stopping. OpenFlow BARRIER and OVSDB commits await this.
   */
  waitRevalidated(): Promise<void> {
    const seq = ++this.reqSeq;
    const p = new Promise<void>((resolve) => {
      if (this.stopping) resolve();
      else this.revalWaiters.push({ seq, resolve });
    });
    this.kickRevalidation();
    return p;
  }

  /** Ask for a pass without waiting for it (the periodic tick). */
  private kickRevalidation(): void {
    if (this.passRunning || this.stopping) return;
    this.passRunning = true;
    void this.revalidationLoop();
  }

  private async revalidationLoop(): Promise<void> {
    try {
      while (this.doneSeq < this.reqSeq && !this.stopping) {
        const seq = this.reqSeq;
        this.revalidatedFlowsRemoved += await this.revalidatePass();
        this.revalidationPasses++;
        this.doneSeq = seq;
        this.releaseWaiters();
      }
    } finally {
      this.passRunning = false;
      if (this.stopping) this.releaseWaiters(true);
    }
  }

  private releaseWaiters(all = false): void {
    const keep: typeof this.revalWaiters = [];
    for (const w of this.revalWaiters) {
      if (all || w.seq <= this.doneSeq) w.resolve();
      else keep.push(w);
    }
    this.revalWaiters = keep;
  }

  /** One pass: re-check installed datapath flows against the rules; remove those whose translation changed. */
  private async revalidatePass(): Promise<number> {
    let removed = 0;
    try {
      const now = Date.now();
      for (const br of this.bridges.values()) {
        const gone = br.expire(now);
        const agent = this.agents.get(br.name);
        if (agent) for (const x of gone) agent.flowRemoved(x.rule, x.reason);
        if (gone.length > 0) {
          const bc = this.db.bridge(br.name);
          if (bc && gone.some((x) => x.rule.origin !== 'openflow')) {
            bc.flows = br.flowTexts();
            this.persist();
          }
        }
      }
      // what translations read, per bridge, as the pass starts (flows whose cached translation still holds are not translated again)
      const sigs = new Map<Bridge, number>();
      for (const br of this.bridges.values()) {
        sigs.set(br, br.xlateSig());
        br.beginPass();
      }
      for (const pmd of this.pmds) {
        const fl = await pmd.dumpFlowsPacked();
        const gone: number[] = [];
        let lastPort = -1;
        let br: Bridge | undefined;
        let sig = 0;
        for (let i = 0; i < fl.ids.length; i++) {
          const id = fl.ids[i];
          const ko = i * FLOW_WORDS;
          const inPort = fl.keys[ko];
          if (inPort !== lastPort) {
            lastPort = inPort;
            const rt = this.ports.get(inPort);
            br = rt ? this.bridges.get(rt.bridge) : undefined;
            const sg = br !== undefined ? sigs.get(br) : undefined;
            if (sg === undefined) br = undefined;
            else sig = sg;
          }
          if (br === undefined) {
            gone.push(id);
            continue;
          }
          // credit rule counters with the hits since the last pass, and refresh MAC learning
          const r = br.revalidate(fl.keys, ko, fl.masks, ko, now, fl.packets[i], fl.bytes[i], fl.xids[i], id, sig);
          if (r !== null && (!sameWords(r.mask, fl.masks, ko, FLOW_WORDS) || !sameActs(r.actions, fl.acts, fl.actOff[i], fl.actOff[i + 1]))) {
            gone.push(id);
            br.forgetFlow(fl.xids[i], id);
          }
        }
        // one message for all of this thread's flows that no longer stand
        if (gone.length > 0) removed += await pmd.delFlows(gone);
      }
      // every thread's flows were met: the ukeys of flows that are gone are freed
      for (const br of this.bridges.values()) br.endPass();
    } catch (e) {
      if (!this.stopping) this.log.warn(`revalidation: ${(e as Error).message}`);
    }
    return removed;
  }

  // ---------------- observers ----------------

  /** Counters from the PMD threads' shared-memory boards and the topology; messages no PMD thread. */
  view(): SwitchView {
    return {
      timeMs: Date.now(),
      pmds: this.pmds.map((p) => ({ id: p.id, cpu: p.cpu ?? null, board: p.board.read() })),
      bridges: [...this.bridges.values()].map((br) => ({
        name: br.name,
        ports: [...br.ports.keys()].map((no) => {
          const rt = this.ports.get(no)!;
          return { bridge: br.name, name: rt.cfg.name, ofport: no, type: rt.cfg.type, link: rt.info?.link ?? 'down', status: rt.info?.status ?? '', error: rt.error ?? '', pmd: rt.pmd.id };
        }),
      })),
      pool: { count: this.pool.count, free: this.pool.available(), bufSize: this.buffers.bufSize },
    };
  }

  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    return this.control.invoke(method, params);
  }

  // ---------------- OpenFlow ----------------

  /** Path of a bridge's OpenFlow management socket (what `ovs-ofctl -O OpenFlow13 ... BRIDGE` uses, as OVS). */
  mgmtPath(bridge: string): string {
    return path.join(this.paths.dir, `${bridge}.mgmt`);
  }

  /** The OpenFlow agent of a bridge (undefined if there is no such bridge). */
  openflow(bridge: string): OpenFlowAgent | undefined {
    return this.agents.get(bridge);
  }

  /**
   * Set a bridge's controllers (OVS `set-controller`): tcp:HOST[:PORT] and
   * unix:PATH are connected to (reconnecting with backoff), ptcp:/punix:
   * listened on; [] removes them. Stored in conf.json. Throws on a bad target.
   */
  async setControllers(bridge: string, targets: readonly string[]): Promise<void> {
    const a = this.agents.get(bridge);
    if (!a) throw new RpcError(`no bridge named '${bridge}'`);
    try {
      await a.setControllers(targets);
    } catch (e) {
      throw new RpcError((e as Error).message);
    }
    const bc = this.db.bridge(bridge);
    if (bc) {
      bc.controllers = [...targets];
      this.persist();
    }
  }

  /** OVS fail_mode: 'standalone' (NORMAL while no controller is connected) or 'secure'. Stored in conf.json. */
  setFailMode(bridge: string, mode: FailMode): void {
    const a = this.agents.get(bridge);
    if (!a) throw new RpcError(`no bridge named '${bridge}'`);
    try {
      a.setFailMode(mode);
    } catch (e) {
      throw new RpcError((e as Error).message);
    }
    const bc = this.db.bridge(bridge);
    if (bc) {
      bc.failMode = mode;
      this.persist();
    }
  }

  private async startAgent(name: string, bc: BridgeConfig): Promise<void> {
    const br = this.bridges.get(name)!;
    const host: OfBridgeHost = {
      name,
      tables: br.tables,
      groups: br.groups,
      datapathId: () => datapathId(name),
      ports: () => [...br.ports.keys()].sort((a, b) => a - b).map((no) => this.portDesc(no)),
      portStats: async () => {
        const out: OfPortStats[] = [];
        for (const pmd of this.pmds) {
          for (const pi of await pmd.ports()) {
            if (!br.ports.has(pi.portNo)) continue;
            const s = pi.stats;
            out.push({
              portNo: pi.portNo, rxPackets: s.rxPackets, txPackets: s.txPackets, rxBytes: s.rxBytes, txBytes: s.txBytes,
              rxDropped: s.rxDropped, txDropped: s.txDropped, durationMs: Date.now() - (this.portAdded.get(pi.portNo) ?? Date.now()),
            });
          }
        }
        return out.sort((a, b) => a.portNo - b.portNo);
      },
      packetOut: (frame, inPort, actions) => this.packetOut(name, frame, inPort, actions),
      changed: () => {
        const agent = this.agents.get(name);
        if (agent) br.failOpen = agent.failOpen;
        this.kickRevalidation();
      },
      sync: () => this.waitRevalidated(),
    };
    const agent = new OpenFlowAgent(host, { mgmtPath: this.mgmtPath(name), log: this.log });
    this.agents.set(name, agent);
    try {
      await agent.start();
      if (bc.failMode) agent.setFailMode(bc.failMode);
      if (bc.controllers && bc.controllers.length > 0) await agent.setControllers(bc.controllers);
    } catch (e) {
      this.log.error(`bridge ${name}: OpenFlow: ${(e as Error).message}`);
    }
  }

  private portDesc(no: number): OfPortDesc {
    const rt = this.ports.get(no);
    const name = rt?.cfg.name ?? String(no);
    let mac = 0;
    if (rt?.cfg.mac && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(rt.cfg.mac)) mac = parseInt(rt.cfg.mac.replace(/:/g, ''), 16);
    else mac = 0x027473000000 + (no & 0xffffff); // locally administered 02:74:73 ("ts")
    return { portNo: no, mac, name, linkDown: rt?.info?.link !== 'up', adminDown: false, speed: 10_000_000 };
  }

  /** Frames of packet-ins: the packet as the program leaves it at each controller action. */
  private sendPacketIns(bridge: string, frame: Uint8Array, inPort: number, prog: Int32Array, evs: ControllerEvent[]): void {
    const agent = this.agents.get(bridge);
    if (!agent) return;
    const head = 64;
    const buf = new Uint8Array(head + frame.length + 64);
    buf.set(frame, head);
    const st = new Int32Array(EXEC_STATE_WORDS);
    st[ST_OFF] = head;
    st[ST_LEN] = frame.length;
    const outs = new Int32Array(4096);
    let pc = 0;
    for (const ev of evs) {
      while (pc < ev.pc) {
        st[ST_NOUT] = 0;
        const r = executeActions(prog, pc, ev.pc, buf, st, outs);
        if (r === EXEC_DONE || r < 0) break;
        pc = r;
      }
      pc = ev.pc;
      agent.packetIn(buf.slice(st[ST_OFF], st[ST_OFF] + st[ST_LEN]), inPort, ev);
    }
  }

  /** PACKET_OUT: translate the actions for the frame and send it through a PMD thread's datapath. */
  private async packetOut(bridge: string, frame: Uint8Array, inPort: number, actions: OfAction[]): Promise<void> {
    const br = this.bridges.get(bridge);
    if (!br || this.pmds.length === 0) return;
    const key = new Uint32Array(FLOW_WORDS);
    extractKey(frame, 0, frame.length, inPort, key, 0);
    // rules the packet goes through (output to TABLE) are credited, as OVS does
    const r = xlatePacketOut(br.env(Date.now()), key, inPort, actions, { packetLen: frame.length });
    if (r.controller.length > 0) this.sendPacketIns(bridge, frame, inPort, r.actions, r.controller);
    if (r.actions.length > 0) await this.pmds[0].packetOut(frame, r.actions);
  }

  // ---------------- control methods ----------------

  private persist(): void {
    if (!this.ephemeral) this.db.save();
  }

  private registerMethods(): void {
    const c = this.control;
    c.on('add-br', async (p) => {
      const name = String(p.bridge ?? '');
      if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new RpcError(`bad bridge name '${name}': use 1-15 of A-Z a-z 0-9 _ . -`);
      if (this.bridges.has(name)) throw new RpcError(`bridge '${name}' already exists`);
      const br = new Bridge(name);
      br.addFlow(DEFAULT_FLOW, () => undefined);
      this.bridges.set(name, br);
      const bc: BridgeConfig = { name, ports: [], flows: [DEFAULT_FLOW] };
      this.db.config.bridges.push(bc);
      this.persist();
      await this.startAgent(name, bc);
      return { text: '' };
    });
    c.on('set-controller', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const targets = Array.isArray(p.targets) ? p.targets.map(String) : [];
      await this.setControllers(br.name, targets);
      return { text: '' };
    });
    c.on('del-controller', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      await this.setControllers(br.name, []);
      return { text: '' };
    });
    c.on('get-controller', (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const a = this.agents.get(br.name)!;
      const st = a.status();
      const text = [
        ...a.controllers.map((t) => {
          const x = st.find((y) => y.target === t);
          return `Controller "${t}"${x ? `\n    is_connected: ${x.state === 'connected'}${x.state !== 'connected' && x.lastError ? ` (${x.state})` : ''}` : ''}`;
        }),
        `fail_mode: ${a.getFailMode()}${a.failOpen ? ' (fail-open: forwarding as NORMAL)' : ''}`,
      ].join('\n');
      return { text, data: { controllers: a.controllers, status: st, failMode: a.getFailMode(), failOpen: a.failOpen, mgmt: this.mgmtPath(br.name) } };
    });
    c.on('set-fail-mode', (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      this.setFailMode(br.name, String(p.mode ?? '') as FailMode);
      return { text: '' };
    });
    c.on('del-br', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      for (const no of [...br.ports.keys()]) await this.removePort(no);
      await this.agents.get(br.name)?.stop();
      this.agents.delete(br.name);
      this.bridges.delete(br.name);
      this.db.config.bridges = this.db.config.bridges.filter((b) => b.name !== br.name);
      this.persist();
      return { text: '' };
    });
    c.on('add-port', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const name = String(p.name ?? '');
      if (!NAME_RE.test(name)) throw new RpcError(`bad port name '${name}'`);
      if (this.resolvePort(name) !== undefined) throw new RpcError(`port '${name}' already exists`);
      const type = String(p.type ?? '');
      const types = ['vhost-user', 'vhost-user-client', 'tap', 'afpacket', 'virtio-user', 'vxlan'];
      if (!types.includes(type)) throw new RpcError(`unknown port type '${type}' (expected one of ${types.join(', ')})`);
      let sock = p.path === undefined ? undefined : String(p.path);
      if (type === 'vhost-user' && sock === undefined) sock = path.join(this.paths.dir, name);
      if ((type === 'vhost-user-client' || type === 'virtio-user') && sock === undefined) throw new RpcError(`--path is required for type ${type}`);
      if ((type === 'tap' || type === 'afpacket') && p.iface === undefined && type === 'afpacket') throw new RpcError('--iface is required for type afpacket');
      const ofport = p.ofport !== undefined && p.ofport !== null ? Number(p.ofport) : this.nextOfport();
      const badNo = portNumberProblem(ofport);
      if (badNo !== null) throw new RpcError(`cannot add port ${name}: ofport: ${badNo}`);
      if (this.ports.has(ofport)) throw new RpcError(`ofport ${ofport} is in use`);
      const mtu = p.mtu !== undefined && p.mtu !== null ? Number(p.mtu) : undefined;
      if (mtu !== undefined) {
        if (type === 'virtio-user') throw new RpcError(`cannot add port ${name}: --mtu is not supported for type virtio-user`);
        const problem = this.mtuProblem(mtu);
        if (problem !== null) throw new RpcError(`cannot add port ${name}: ${problem}`);
      }
      const cfg: PortConfig = {
        name, type: type as PortConfig['type'], ofport, path: sock,
        iface: p.iface !== undefined && p.iface !== null ? String(p.iface) : type === 'tap' ? name : undefined,
        queues: p.queues !== undefined && p.queues !== null ? Number(p.queues) : undefined,
        mtu,
      };
      if (p.netns !== undefined && p.netns !== null) cfg.netns = String(p.netns);
      if (type === 'vxlan') {
        if (mtu !== undefined) throw new RpcError(`cannot add port ${name}: a vxlan port takes no --mtu (its MTU is the underlay's - 50)`);
        try {
          cfg.tunnel = tunnelOptions(p);
        } catch (e) {
          throw new RpcError(`cannot add port ${name}: ${(e as Error).message}`);
        }
      } else if (p.remote_ip !== undefined && p.remote_ip !== null) throw new RpcError(`cannot add port ${name}: --remote-ip is for type vxlan`);
      const vlan = vlanParams(p);
      if (vlan !== undefined) {
        try {
          if (portVlan(vlan) !== undefined) cfg.vlan = vlan;
        } catch (e) {
          throw new RpcError(`cannot add port ${name}: ${(e as Error).message}`);
        }
      }
      await this.openPort(br.name, cfg);
      const rt = this.ports.get(ofport)!;
      if (rt.error) {
        this.ports.delete(ofport);
        br.ports.delete(ofport);
        br.flowKeyTunnels.delete(ofport);
        br.setPortVlan(ofport, undefined);
        throw new RpcError(`cannot add port ${name}: ${rt.error}`);
      }
      this.db.bridge(br.name)!.ports.push(cfg);
      this.persist();
      // flows cached before the port existed (e.g. floods) must see it
      await this.waitRevalidated();
      return { text: type === 'vhost-user' ? `${name}: vhost-user socket ${sock}` : '', data: { ofport, path: sock } };
    });
    c.on('set-port', async (p) => {
      // OVS's `ovs-vsctl set Port P tag=N trunks=... vlan_mode=...`: the port keeps running; the given
      // columns replace the old ones (a null or empty one clears it)
      const no = this.resolvePort(String(p.name));
      const rt = no === undefined ? undefined : this.ports.get(no);
      if (no === undefined || rt === undefined) throw new RpcError(`no port '${String(p.name)}'`);
      const next: PortVlanConfig = { ...(rt.cfg.vlan ?? {}) };
      const given = vlanParams(p) ?? {};
      for (const k of ['tag', 'trunks', 'vlan_mode'] as const) {
        if (!(k in p)) continue;
        if (given[k] === undefined || (k === 'trunks' && given.trunks!.length === 0)) delete next[k];
        else (next as Record<string, unknown>)[k] = given[k];
      }
      let role;
      try {
        role = portVlan(next);
      } catch (e) {
        throw new RpcError(`port ${rt.cfg.name}: ${(e as Error).message}`);
      }
      if (role === undefined) delete rt.cfg.vlan;
      else rt.cfg.vlan = next;
      this.bridges.get(rt.bridge)!.setPortVlan(no, role);
      this.persist();
      // NORMAL's decisions changed: answer once the datapath flows reflect the new role
      await this.waitRevalidated();
      return { text: '', data: { name: rt.cfg.name, vlan: formatPortVlan(role) } };
    });
    c.on('del-port', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const no = this.resolvePort(String(p.name));
      if (no === undefined || !br.ports.has(no)) throw new RpcError(`bridge ${br.name} has no port '${String(p.name)}'`);
      await this.removePort(no);
      this.persist();
      return { text: '' };
    });
    c.on('add-flow', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const text = String(p.flow ?? '');
      br.addFlow(text, (n) => this.resolvePort(n));
      this.db.bridge(br.name)!.flows.push(text);
      this.persist();
      // answer once the datapath reflects the new rule (traffic sent after the reply sees it)
      await this.waitRevalidated();
      return { text: '' };
    });
    c.on('del-flows', async (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const gone = br.delFlowRules(p.match === undefined ? '' : String(p.match), !!p.strict, (x) => this.resolvePort(x));
      const n = gone.length;
      for (const r of gone) this.agents.get(br.name)?.flowRemoved(r, 'delete');
      this.db.bridge(br.name)!.flows = br.flowTexts();
      this.persist();
      await this.waitRevalidated();
      return { text: '', data: { deleted: n } };
    });
    c.on('dump-flows', (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const rules = br.dump(Date.now(), (n) => this.portName(n));
      return { text: rules.map((r) => ' ' + r.text).join('\n'), data: rules };
    });
    c.on('dump-dp-flows', async () => {
      const all = [];
      for (const pmd of this.pmds) {
        for (const f of await pmd.dumpFlows()) {
          all.push({
            pmd: pmd.id, id: f.id, packets: f.packets, bytes: f.bytes,
            used: f.used ? ((Date.now() - f.used) / 1000).toFixed(3) + 's' : 'never',
            match: formatMatch({ key: Uint32Array.from(f.key.map((k, i) => k & f.mask[i])), mask: Uint32Array.from(f.mask) }, DEFAULT_PRIORITY, (n) => this.portName(n)) || '(any)',
            mask: f.mask.map((m) => m.toString(16).padStart(8, '0')).join(''),
            actions: formatProgram(Int32Array.from(f.actions)),
            // raw flow key and mask words (ovs-appctl dpctl/dump-flows prints them in ODP syntax)
            keyWords: f.key.slice(0, FLOW_WORDS),
            maskWords: f.mask.slice(0, FLOW_WORDS),
          });
        }
      }
      const text = all.map((f) => `pmd=${f.pmd} ${f.match}, packets:${f.packets}, bytes:${f.bytes}, used:${f.used}, actions:${f.actions}`).join('\n');
      return { text: text || '(no datapath flows)', data: all };
    });
    c.on('show', () => {
      const data = [...this.bridges.values()].map((br) => ({
        bridge: br.name,
        ports: [...br.ports.keys()].map((no) => {
          const rt = this.ports.get(no)!;
          return {
            name: rt.cfg.name, ofport: no, type: rt.cfg.type, path: rt.cfg.path, iface: rt.cfg.iface, mtu: rt.info?.mtu ?? rt.cfg.mtu,
            link: rt.info?.link ?? 'down', status: rt.info?.status ?? '', error: rt.error ?? '', pmd: rt.pmd.id,
            ...(rt.info?.memory ? { memory: rt.info.memory } : {}),
            ...(rt.cfg.tunnel ? { tunnel: rt.cfg.tunnel } : {}),
            ...(br.portVlan(no) ? { vlan: formatPortVlan(br.portVlan(no)) } : {}),
          };
        }),
        rules: br.ruleCount(),
        macs: br.mac.size,
        /** Upcalls dropped because their translation was cut off, by reason (too_many_resubmits, too_deep, ...). */
        xlateErrors: { ...br.xlateErrors },
        // switch-wide, repeated per bridge so that the answer stays a list of bridges
        maxMtu: this.buffers.maxMtu,
        bufSize: this.buffers.bufSize,
      }));
      const b0 = this.buffers;
      const lines: string[] = [
        `tsvs ${this.paths.dir}`,
        `  max-mtu ${b0.maxMtu}: ${this.pool.count} packet buffers of ${b0.bufSize} B (frames up to ${b0.room} B), ${mib(this.poolBytes())} MiB`,
      ];
      for (const b of data) {
        lines.push(`  Bridge ${b.bridge}  (${b.rules} rules, ${b.macs} learned MACs)`);
        const xe = Object.entries(b.xlateErrors).filter(([, n]) => n > 0).map(([k, n]) => `${k}=${n}`).join(' ');
        if (xe) lines.push(`    translations cut off and dropped: ${xe}`);
        for (const p of b.ports) {
          lines.push(`    Port ${p.name}  ofport=${p.ofport} type=${p.type}${p.vlan ? ` ${p.vlan}` : ''}${p.path ? ` path=${p.path}` : ''}${p.iface ? ` iface=${p.iface}` : ''}${p.tunnel ? ` remote_ip=${p.tunnel.remoteIp}${p.tunnel.localIp ? ` local_ip=${p.tunnel.localIp}` : ''} key=${p.tunnel.key ?? 0}` : ''}${p.mtu !== undefined ? ` mtu=${p.mtu}` : ''} link=${p.link} pmd=${p.pmd}${p.memory ? ` mem=${memProtection(p.memory)}` : ''}${p.error ? `  ERROR: ${p.error}` : p.status && (p.link !== 'up' || p.type === 'vxlan') ? `  (${p.status})` : ''}`);
        }
      }
      return { text: lines.join('\n'), data };
    });
    c.on('port-stats', async (p) => {
      const rows = [];
      for (const pmd of this.pmds) {
        for (const pi of await pmd.ports()) {
          if (p.port !== undefined && pi.name !== p.port) continue;
          rows.push({ port: pi.name, ofport: pi.portNo, link: pi.link, ...pi.stats });
        }
      }
      if (p.port !== undefined && rows.length === 0) throw new RpcError(`no port named '${String(p.port)}'`);
      const text = rows
        .map((r) => {
          const drops = Object.entries(r.drops).map(([k, v]) => `${k}=${v}`).join(' ');
          return `port ${r.ofport} ${r.port} (${r.link}): rx pkts=${r.rxPackets} bytes=${r.rxBytes} drop=${r.rxDropped}\n           tx pkts=${r.txPackets} bytes=${r.txBytes} drop=${r.txDropped}${drops ? `\n           drops by reason: ${drops}` : ''}`;
        })
        .join('\n');
      return { text, data: rows };
    });
    c.on('pmd-stats', async () => {
      const rows = [];
      for (const pmd of this.pmds) rows.push(this.pmdDelta(await pmd.stats()));
      // each rx queue's share of its thread's time over the load window (pmd-rxq-show's "pmd usage")
      const { rxqs } = await this.currentLoads();
      for (const r of rows) for (const q of r.rxqs) q.usage = Math.round(100 * (rxqs.find((x) => x.port === q.port && x.queue === q.queue)?.load ?? 0));
      const text = rows.map((s) => formatPmdStats(s)).join('\n');
      return { text, data: rows };
    });
    c.on('pmd-stats-clear', async () => {
      for (const pmd of this.pmds) this.pmdStatsBase.set(pmd.id, await pmd.stats());
      return { text: '' };
    });
    c.on('memory', async (p) => {
      const gc = !!p.gc;
      // heap snapshots (diagnostics): one file per thread in an existing directory
      const snapshotDir = p.snapshotDir === undefined || p.snapshotDir === null ? undefined : path.resolve(String(p.snapshotDir));
      if (snapshotDir !== undefined && !fs.statSync(snapshotDir, { throwIfNoEntry: false })?.isDirectory()) throw new RpcError(`no directory ${snapshotDir}`);
      const main: MemoryReport & { snapshot?: string } = memoryReport({ gc });
      if (snapshotDir !== undefined) main.snapshot = writeHeapSnapshot(snapshotDir, 'main');
      const pmds: (MemoryReport & { pmd: number; snapshot?: string })[] = [];
      for (const pmd of this.pmds) pmds.push({ pmd: pmd.id, ...(await pmd.memory(gc, snapshotDir)) });
      const split = rssSplit([this.pool.region.addr]);
      const data = { main, pmds, pool: { available: this.pool.available(), count: this.pool.count, bytes: this.poolBytes() }, split };
      const heap = (m: MemoryReport): string =>
        `heap ${mib(m.heapUsed)} used${m.gc ? ' (live, after GC)' : ''} of ${mib(m.heapTotal)} MiB, external ${mib(m.external)} MiB (array buffers ${mib(m.arrayBuffers)}), V8 malloc ${mib(m.mallocedMemory)} MiB`;
      const text = [
        `process: RSS ${mib(main.rss)} MiB (anonymous ${mib(main.rssAnon)}, files ${mib(main.rssFile)}, shared memory ${mib(main.rssShmem)}: packet pool and guest memory touched), peak ${mib(main.rssPeak)} MiB`,
        ...(split
          ? [
              `  the switch's own: ${mib(split.own)} MiB (anonymous: V8 heaps, malloc, stacks; files: node and libraries; packet pool resident ${mib(split.ownShared)} MiB)`,
              `  guests' memory: ${mib(split.guest)} MiB (pages of the frontends' shared memory the switch has touched: counted in its RSS while mapped, but the guests' memory, given back when they leave)`,
            ]
          : []),
        `main thread: ${heap(main)}`,
        ...pmds.map((m) => `pmd thread ${m.pmd}: ${heap(m)}`),
        `packet buffers: ${data.pool.available} free of ${data.pool.count} (${mib(data.pool.bytes)} MiB)`,
        ...[main, ...pmds].filter((m) => m.snapshot).map((m) => `heap snapshot: ${m.snapshot}`),
      ].join('\n');
      return { text, data };
    });
    c.on('pmd-rxq-show', async () => {
      const { rxqs, pmdBusy, windowMs } = await this.currentLoads();
      const rows = this.pmds.map((pmd) => ({
        pmd: pmd.id,
        cpu: pmd.cpu ?? null,
        busy: pmdBusy.get(pmd.id) ?? 0,
        rxqs: rxqs.filter((q) => q.pmd === pmd.id).map((q) => ({ port: q.port, name: q.name, queue: q.queue, rxPackets: q.rxPackets, usage: Math.round(q.load * 100), movable: q.movable })),
      }));
      const lb = this.autoLb;
      const text = [
        `Displaying last ${Math.round(windowMs / 1000)} seconds pmd usage % (pmd-auto-lb ${lb.enabled ? `on: load ${lb.loadThreshold}%, improvement ${lb.improvementThreshold}%, interval ${lb.rebalIntervalMin} min` : 'off'}; ${this.rebalances} rebalances, ${this.portsMoved} ports moved)`,
        ...rows.map((r) =>
          [
            `pmd thread ${r.pmd} core_id ${r.cpu ?? 'any'}: busy ${Math.round(r.busy * 100)} %`,
            ...r.rxqs.map((q) => `  port: ${q.name.padEnd(16)} queue-id: ${String(q.queue).padStart(2)}   pmd usage: ${String(q.usage).padStart(3)} %  rx packets: ${q.rxPackets}${q.movable ? '' : '  (stays: not vhost-user)'}`),
          ].join('\n'),
        ),
      ].join('\n');
      return { text, data: rows };
    });
    c.on('pmd-rxq-rebalance', async () => {
      const { rxqs } = await this.currentLoads();
      const plan = planRebalance(rxqs, this.pmds.map((p) => p.id));
      const moved = await this.rebalance(plan);
      const pct = (m: Map<number, number>): string => [...m].map(([id, l]) => `pmd ${id} ${Math.round(l * 100)}%`).join(', ');
      const text = [
        `pmd rxq rebalance: ${moved.length} port(s) moved${moved.length ? ': ' + moved.map((m) => `${m.name} pmd ${m.from} -> ${m.to}`).join(', ') : ''}`,
        `  estimated load before: ${pct(plan.before)}; after: ${pct(plan.after)} (variance improvement ${plan.improvement.toFixed(0)}%)`,
      ].join('\n');
      return { text, data: { moves: moved, before: Object.fromEntries(plan.before), after: Object.fromEntries(plan.after), improvement: plan.improvement } };
    });
    c.on('one-copy-set', async (p) => {
      const on = p.value === undefined || p.value === '' ? this.startOneCopy : parseOneCopy(p.value);
      await Promise.all(this.pmds.map((t) => t.setOneCopy(on)));
      this.oneCopy = on;
      return { text: `one-copy ${on ? 'on' : 'off'}`, data: { oneCopy: on } };
    });
    c.on('pmd-auto-lb-set', (p) => {
      const cfg = this.setAutoLb(p as Partial<Record<keyof AutoLbConfig, unknown>>);
      return { text: '', data: cfg };
    });
    c.on('qemu-args', (p) => {
      const no = this.resolvePort(String(p.port));
      const rt = no === undefined ? undefined : this.ports.get(no);
      if (!rt) throw new RpcError(`no port named '${String(p.port)}'`);
      if (rt.cfg.type !== 'vhost-user' && rt.cfg.type !== 'vhost-user-client') throw new RpcError(`port ${rt.cfg.name} is ${rt.cfg.type}, not vhost-user`);
      // what QEMU needs to know of the port; the CLI turns it into QEMU arguments (src/cli/ctl.ts)
      return { data: { port: rt.cfg.name, path: rt.cfg.path!, server: rt.cfg.type === 'vhost-user-client', queues: rt.cfg.queues } };
    });
    registerObserveMethods(c, this);
    this.captures = new CaptureSessions({
      port: (name) => {
        const no = this.resolvePort(name);
        const rt = no === undefined ? undefined : this.ports.get(no);
        return rt && no !== undefined ? { portNo: no, pmd: rt.pmd } : undefined;
      },
      bridgeOf: (name) => {
        const no = this.resolvePort(name);
        return no === undefined ? undefined : this.ports.get(no)?.bridge;
      },
      resolvePort: (n) => this.resolvePort(n),
    });
    this.captures.register(c);
    c.on('revalidate-wait', async () => {
      await this.waitRevalidated();
      return { text: '', data: { passes: this.revalidationPasses, flowsRemoved: this.revalidatedFlowsRemoved } };
    });
    c.on('trace', (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      try {
        const r = traceFlow(br.env(Date.now()), br.name, String(p.flow ?? ''), (n) => this.resolvePort(n), (n) => this.portName(n));
        return { text: r.text, data: r };
      } catch (e) {
        throw new RpcError(`bad flow: ${(e as Error).message}`);
      }
    });
    c.on('fdb-show', (p) => {
      const br = this.bridgeOrThrow(p.bridge);
      const now = Date.now();
      const data = br.mac.entries().map((e) => ({ port: e.port, vlan: e.vlan, mac: e.mac, age: Math.max(0, Math.floor((now - e.lastSeen) / 1000)) }));
      return { text: br.mac.format(now), data };
    });
    c.on('shutdown', () => {
      setImmediate(() => void this.stop().then(() => this.onShutdown?.()));
      return { text: '' };
    });
  }

  private pmdDelta(s: PmdThreadStats): PmdThreadStats {
    const b = this.pmdStatsBase.get(s.pmd);
    if (!b) return s;
    const d = { ...s, drops: { ...s.drops } };
    for (const k of PMD_STAT_FIELDS) d[k] = s[k] - b[k];
    for (const k of Object.keys(d.drops)) d.drops[k] -= b.drops[k] ?? 0;
    d.loopTurns = s.loopTurns - b.loopTurns;
    d.loopTurnNs = s.loopTurnNs - b.loopTurnNs;
    d.loopGaps = s.loopGaps.map((v, i) => v - (b.loopGaps[i] ?? 0));
    return d;
  }

  // ---------------- PMD rx-queue balancing ----------------

  /** Set pmd-auto-lb (values as strings from OVSDB other_config, or numbers; missing ones take OVS's defaults). */
  setAutoLb(p: Partial<Record<keyof AutoLbConfig, unknown>>): AutoLbConfig {
    const num = (v: unknown, name: string, lo: number, hi: number, def: number): number => {
      if (v === undefined || v === null || v === '') return def;
      const n = Number(v);
      if (!Number.isFinite(n) || n < lo || n > hi) throw new RpcError(`${name}: '${String(v)}' is not a number in ${lo}..${hi}`);
      return n;
    };
    const d = AUTO_LB_DEFAULTS;
    const cfg: AutoLbConfig = {
      enabled: p.enabled === true || p.enabled === 'true',
      loadThreshold: num(p.loadThreshold, 'pmd-auto-lb-load-threshold', 0, 100, d.loadThreshold),
      improvementThreshold: num(p.improvementThreshold, 'pmd-auto-lb-improvement-threshold', 0, 100, d.improvementThreshold),
      rebalIntervalMin: num(p.rebalIntervalMin, 'pmd-auto-lb-rebal-interval', 0, 20000, d.rebalIntervalMin),
    };
    const was = JSON.stringify(this.autoLb);
    this.autoLb = cfg;
    if (JSON.stringify(cfg) !== was) {
      this.log.info(
        cfg.enabled
          ? `pmd-auto-lb on: load threshold ${cfg.loadThreshold}%, improvement threshold ${cfg.improvementThreshold}%, interval ${cfg.rebalIntervalMin} min${this.pmds.length < 2 ? ' (one PMD thread: nothing to balance)' : ''}`
          : 'pmd-auto-lb off',
      );
    }
    return cfg;
  }

  /** Every PMD thread's rx queues and times, now. */
  private async takeLoadSample(): Promise<LoadSample> {
    const pmds = new Map<number, { totalNs: number; busyNs: number }>();
    const rxqs: LoadSample['rxqs'] = [];
    for (const pmd of this.pmds) {
      const s = await pmd.stats();
      pmds.set(pmd.id, { totalNs: s.busyNs + s.idleNs, busyNs: s.busyNs });
      for (const q of s.rxqs) rxqs.push({ port: q.port, name: q.name, queue: q.queue, pmd: pmd.id, busyNs: q.busyNs, rxPackets: q.rxPackets, movable: q.movable });
    }
    return { t: Date.now(), pmds, rxqs };
  }

  /** Loads over the sample window (the oldest kept sample to now). */
  private async currentLoads(): Promise<{ rxqs: RxqLoad[]; pmdBusy: Map<number, number>; windowMs: number }> {
    const now = await this.takeLoadSample();
    const old = this.loadSamples[0];
    return { ...loadsBetween(old, now), windowMs: old ? now.t - old.t : 0 };
  }

  private sampling = false;

  /** The periodic sample; with pmd-auto-lb on, the automatic rebalance check. */
  private async sampleLoad(): Promise<void> {
    if (this.stopping || this.sampling || this.pmds.length === 0) return;
    this.sampling = true;
    try {
      const s = await this.takeLoadSample();
      this.loadSamples.push(s);
      while (this.loadSamples.length > 11) this.loadSamples.shift();
      const lb = this.autoLb;
      if (!lb.enabled || this.pmds.length < 2 || this.loadSamples.length < 2) return;
      if (Date.now() - this.lastRebalance < lb.rebalIntervalMin * 60_000) return;
      const window: Map<number, number>[] = [];
      for (let i = 1; i < this.loadSamples.length; i++) window.push(loadsBetween(this.loadSamples[i - 1], this.loadSamples[i]).pmdBusy);
      const { rxqs } = loadsBetween(this.loadSamples[0], s);
      const plan = planRebalance(rxqs, this.pmds.map((p) => p.id));
      const d = autoLbDecision(lb, window, plan);
      if (!d.go) return;
      this.log.info(`pmd-auto-lb: rebalancing (${d.why})`);
      await this.rebalance(plan);
    } catch (e) {
      if (!this.stopping) this.log.warn(`pmd load sampling: ${(e as Error).message}`);
    } finally {
      this.sampling = false;
    }
  }

  /**
   * Move the ports of a plan (one at a time, no packet lost or reordered: see
   * PmdThread.releasePort/adoptPort); serialised with other rebalances and
   * port deletion. Samples restart afterwards (loads were measured under the
   * old placement).
   */
  private rebalance(plan: Plan): Promise<Plan['moves']> {
    const run = async (): Promise<Plan['moves']> => {
      const done: Plan['moves'] = [];
      for (const m of plan.moves) {
        const rt = this.ports.get(m.port);
        const to = this.pmds.find((p) => p.id === m.to);
        if (!rt || !to || rt.pmd === to || rt.pmd.id !== m.from) continue;
        if (await this.movePort(m.port, rt, to)) done.push(m);
      }
      this.lastRebalance = Date.now();
      this.rebalances++;
      this.portsMoved += done.length;
      this.loadSamples = [];
      for (const m of done) this.log.info(`port ${m.name}: rx queues moved from pmd ${m.from} to pmd ${m.to}`);
      return done;
    };
    const p = this.rebalancing.catch(() => {}).then(run);
    this.rebalancing = p;
    return p;
  }

  /** Hand a vhost-user port's rings from its PMD thread to `to`; back to the first on failure. */
  private async movePort(no: number, rt: PortRuntime, to: PmdThread): Promise<boolean> {
    const from = rt.pmd;
    const ring = newCrossPmdRing();
    const rel = await from.releasePort(no, ring.bytes);
    this.movedDesc.delete(no); // from here on, descriptions the backend forwards are newer than rel.desc
    // from now on `from` reaches the port through `ring`, drained by the new poller
    rel.sources.push({ from: from.id, ring: ring.bytes });
    // what `from` forwarded to ports of third threads goes out before what `to` will forward
    for (const other of this.pmds) if (other !== from && other !== to) await other.drainTxSources();
    if (this.movedDesc.has(no)) rel.desc = this.movedDesc.get(no)!;
    // (synchronously with posting the adoption: later descriptions go to `to`, after it)
    rt.pmd = to;
    try {
      await to.adoptPort(no, rt.cfg.name, rel);
      return true;
    } catch (e) {
      this.log.error(`port ${rt.cfg.name}: pmd ${to.id} could not take it (${(e as Error).message}); back to pmd ${from.id}`);
      rt.pmd = from;
      await from.adoptPort(no, rt.cfg.name, rel);
      return false;
    }
  }

  private nextOfport(): number {
    let n = 1;
    while (this.ports.has(n)) n++;
    return n;
  }

  private async removePort(no: number): Promise<void> {
    await this.rebalancing.catch(() => {}); // not while the port may be moving
    const rt = this.ports.get(no);
    if (!rt) return;
    const desc = this.portDesc(no);
    const warn = (e: Error): void => this.log.warn(`del-port ${rt.cfg.name}: ${e.message}`);
    for (const other of this.pmds) if (other !== rt.pmd) await other.delPort(no).catch(warn);
    await rt.pmd.delTxSources(no).catch(warn);
    await rt.pmd.delPort(no).catch(warn);
    this.ports.delete(no);
    this.portAdded.delete(no);
    this.movedDesc.delete(no);
    this.agents.get(rt.bridge)?.portStatus(desc, 1);
    const br = this.bridges.get(rt.bridge);
    if (br) {
      br.ports.delete(no);
      br.flowKeyTunnels.delete(no);
      br.setPortVlan(no, undefined);
      br.mac.flushPort(no);
    }
    const bc: BridgeConfig | undefined = this.db.bridge(rt.bridge);
    if (bc) bc.ports = bc.ports.filter((p) => p.ofport !== no);
    await this.waitRevalidated();
    this.log.info(`port ${rt.cfg.name} deleted`);
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.revalTimer) clearInterval(this.revalTimer);
    if (this.loadTimer) clearInterval(this.loadTimer);
    if (this.trimTimer) clearInterval(this.trimTimer);
    await this.rebalancing.catch(() => {});
    this.captures?.close();
    this.releaseWaiters(true);
    await this.control.close();
    for (const a of this.agents.values()) await a.stop();
    this.agents.clear();
    for (const pmd of this.pmds) await pmd.stop();
    this.pool.close();
    try {
      fs.unlinkSync(this.paths.pid);
    } catch {
      /* gone */
    }
    this.log.info('tsvs switch stopped');
  }
}

/** Configuration the switch cannot start with (bad sizes): reported to the user as is. */
export class SwitchConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SwitchConfigError';
  }
}

/** A bridge's datapath id: 0x0000 followed by 6 bytes of a hash of its name (stable across restarts). */
function datapathId(name: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const ch of Buffer.from(name)) h = BigInt.asUintN(64, (h ^ BigInt(ch)) * 0x100000001b3n);
  return h & 0xffffffffffffn;
}

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

/** a[0..n) equals b[off..off+n) (as 32-bit words). */
function sameWords(a: ArrayLike<number>, b: ArrayLike<number>, off: number, n: number): boolean {
  for (let i = 0; i < n; i++) if ((a[i] | 0) !== (b[off + i] | 0)) return false;
  return true;
}

/** A program equals b[from..to). */
function sameActs(a: ArrayLike<number>, b: ArrayLike<number>, from: number, to: number): boolean {
  return a.length === to - from && sameWords(a, b, from, a.length);
}

/** The lowest level worth sending from a PMD thread's ports to the daemon's pino logger. */
function portLogLevel(log: Logger): 'debug' | 'info' | 'warn' | 'error' {
  const v = log.levelVal;
  return v <= 20 ? 'debug' : v <= 30 ? 'info' : v <= 40 ? 'warn' : 'error';
}

/** PmdThreadStats.loopGaps as "50-100: N, 100-200: N, ..., >2000: N". */
export function formatLoopGaps(g: readonly number[]): string {
  const b = LOOP_GAP_BOUNDS_US;
  return g.map((n, i) => `${i + 1 < b.length ? `${b[i]}-${b[i + 1]}` : `>${b[i]}`}: ${n}`).join(', ');
}

export function formatPmdStats(s: PmdThreadStats): string {
  const pkts = s.rxPackets;
  const pct = (n: number): string => (pkts > 0 ? ((100 * n) / pkts).toFixed(1) : '0.0') + '%';
  const total = s.busyNs + s.idleNs;
  const drops = Object.entries(s.drops).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(' ');
  return [
    `pmd thread ${s.pmd} core_id ${s.cpu ?? 'any'}:`,
    `  packets received: ${pkts}`,
    `  packet recirculations: 0`,
    `  emc hits: ${s.emcHits} (${pct(s.emcHits)})`,
    `  megaflow hits: ${s.megaflowHits} (${pct(s.megaflowHits)})`,
    `  miss with success upcall: ${s.upcalls} (${pct(s.upcalls)})`,
    `  miss coalesced behind an upcall in flight: ${s.upcallsCoalesced}`,
    `  miss with failed upcall: ${s.upcallsLost}`,
    `  packets sent: ${s.txPackets}`,
    `  one-copy packets (guest to guest, one copy): ${s.oneCopy}`,
    `  datapath flows: ${s.flows}`,
    `  busy/idle: ${total > 0 ? ((100 * s.busyNs) / total).toFixed(1) : '0.0'}% busy (${(s.busyNs / 1e6).toFixed(1)} ms busy, ${(s.idleNs / 1e6).toFixed(1)} ms idle), ${s.iterations} iterations`,
    `  avg processing time per packet: ${pkts > 0 ? (s.busyNs / pkts).toFixed(1) : '0'} ns`,
    ...(s.rxNs + s.processNs + s.txNs > 0 && pkts > 0
      ? [`  per packet by stage: rx ${(s.rxNs / pkts).toFixed(1)} ns, processing ${(s.processNs / pkts).toFixed(1)} ns, tx ${(s.txNs / pkts).toFixed(1)} ns (--pmd-perf-metrics)`]
      : []),
    `  packet buffers: ${s.poolAvailable} free of ${s.poolCount}${s.poolAllocFail ? `, ${s.poolAllocFail} allocation failures` : ''}`,
    `  event-loop turns: ${s.loopTurns} (${(s.loopTurnNs / 1e6).toFixed(1)} ms away from polling, longest since start ${(s.loopTurnMaxNs / 1e3).toFixed(0)} µs)`,
    `  poll-loop gaps (µs): ${formatLoopGaps(s.loopGaps)}`,
    `  drops: ${drops || 'none'}`,
  ].join('\n');
}

/** How a port's guest memory is protected against the frontend shrinking it, in one word for `show`. */
function memProtection(m: { regions: number; sealed: number; guarded: number }): string {
  if (m.sealed === m.regions) return 'sealed';
  if (m.guarded === m.regions) return m.sealed > 0 ? 'partly-sealed+guarded' : 'guarded';
  return 'unprotected';
}

/** A vxlan port's options from add-port params (remote_ip, local_ip, key, dst_port); throws naming the bad one. */
export function tunnelOptions(p: Record<string, unknown>): TunnelConfig {
  if (p.remote_ip === undefined || p.remote_ip === null) throw new Error('--remote-ip is required for type vxlan');
  const t: TunnelConfig = { remoteIp: String(p.remote_ip) };
  parseIpv4(t.remoteIp, 'remote_ip');
  if (p.local_ip !== undefined && p.local_ip !== null) {
    t.localIp = String(p.local_ip);
    parseIpv4(t.localIp, 'local_ip');
  }
  if (p.key !== undefined && p.key !== null) {
    const k = String(p.key);
    if (k === 'flow') t.key = 'flow';
    else {
      const n = /^(0x[0-9a-f]+|\d+)$/i.test(k) ? Number(k) : NaN;
      if (!(Number.isInteger(n) && n >= 0 && n < 1 << 24)) throw new Error(`key '${k}' must be a VNI in 0..16777215 or 'flow'`);
      t.key = n;
    }
  }
  if (p.dst_port !== undefined && p.dst_port !== null) {
    const d = Number(p.dst_port);
    if (!(Number.isInteger(d) && d > 0 && d < 65536)) throw new Error(`dst_port '${String(p.dst_port)}' must be in 1..65535`);
    t.dstPort = d;
  }
  return t;
}

/**
 * The VLAN columns of an add-port / set-port request (tag: a number; trunks: numbers, or a
 * "10,20" string; vlan_mode: a name), unchecked beyond their types (portVlan checks them); undefined when none is given.
 */
function vlanParams(p: Record<string, unknown>): PortVlanConfig | undefined {
  if (!('tag' in p) && !('trunks' in p) && !('vlan_mode' in p)) return undefined;
  const c: PortVlanConfig = {};
  const num = (v: unknown, what: string): number => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isInteger(n)) throw new RpcError(`${what} '${String(v)}' is not a VLAN id`);
    return n;
  };
  if (p.tag !== undefined && p.tag !== null && p.tag !== '') c.tag = num(p.tag, 'tag');
  if (p.trunks !== undefined && p.trunks !== null) {
    const list = Array.isArray(p.trunks) ? p.trunks : String(p.trunks).split(',').filter((x) => x.trim() !== '');
    c.trunks = list.map((x) => num(x, 'trunks:'));
  }
  // (the mode's value is checked with the rest by portVlan)
  if (p.vlan_mode !== undefined && p.vlan_mode !== null && p.vlan_mode !== '') c.vlan_mode = String(p.vlan_mode) as VlanMode;
  return c;
}
