/**
 * The datapath of one PMD thread: rx burst -> flow key -> exact-match cache ->
 * megaflow classifier -> actions batched per output port -> tx burst.
 * A miss becomes an upcall to the slow path, which answers with a megaflow to
 * install and the actions to run on the held packet.
 *
 * Thread-agnostic: the same object runs inside a PMD worker thread
 * (src/dp/pmd-thread.ts) or in-line on the main thread (tests, small apps).
 * The hot path allocates nothing, creates no closures and throws nothing.
 */
import type { Mempool } from '../mem/mempool.js';
import type { Port } from '../port/port.js';
import { BURST, tallyDrop } from '../port/port.js';
import {
  FLOW_WORDS, extractKey, hashKey, HASH_BASIS, KEY_MALFORMED, assertUnrolledFlowWords, keyFitsPrefix,
  HEADER_REF_WORDS, sameKeyHeaders, setHeaderRef, prefixKeyWord,
} from './flow-key.js';
import { OneCopyTails, ONE_COPY_PRIVATE, isOneCopyPort } from '../port/one-copy.js';
import { Classifier } from './classifier.js';
import { Ring } from '../ring/ring.js';
import { ExactMatchCache } from './emc.js';
import { portNumberProblem, PORT_NO_MAX } from './port-number.js';
import { DIR_RX, DIR_TX, type CaptureSet } from './capture-tap.js';
import {
  executeActions, EXEC_DONE, EXEC_ERROR, EXEC_STATE_WORDS, OP_OUTPUT, ST_ERR, ST_LEN, ST_NOUT, ST_OFF, ST_TUN_ID, ST_TUN_SET, validateProgram,
} from './actions.js';
import { TunnelMeta, tunnelMeta } from '../port/tunnel.js';
import { Drop, type DropReason } from '../port/port.js';

/** The slow path, as seen from the datapath. */
export interface UpcallSink {
  /**
   * A packet missed every cache. `frame` and `key` are only valid during the
   * call: copy what you keep. Answer later with Datapath.upcallReply(id, ...).
   */
  upcall(id: number, portNo: number, frame: Uint8Array, key: Uint32Array): void;
  /**
   * upcall() with the frame as data[off .. off + len) (the pool's bytes): no view made per
   * miss. Used instead of upcall() when the sink has it.
   */
  upcallAt?(id: number, portNo: number, data: Uint8Array, off: number, len: number, key: Uint32Array): void;
}

/**
 * Upcall id of a miss whose packet was not held (the upcall queue was full):
 * the slow path installs its megaflow and sends no reply for it.
 */
export const UPCALL_NO_PACKET = -1;
/** Setup-only upcalls for one flow key hash are sent at most once per this many ms. */
const SETUP_ONLY_GAP_MS = 20;
const SETUP_ONLY_SLOTS = 4096;

/** Per-PMD counters, the material of `tsvs pmd-stats`. */
export interface PmdStats {
  iterations: number;
  busyIterations: number;
  rxPackets: number;
  emcHits: number;
  megaflowHits: number;
  misses: number;
  upcalls: number;
  /** Misses held behind an upcall already in flight for the same flow key (no second upcall sent). */
  upcallsCoalesced: number;
  upcallsLost: number;
  txPackets: number;
  /** Nanoseconds spent in iterations that moved packets / that found nothing. */
  busyNs: number;
  idleNs: number;
  /**
   * With {@link Datapath.perf} on (tsvs daemon --pmd-perf-metrics): nanoseconds in rx bursts that
   * returned packets, in processing them (parse, lookup, actions), and in tx bursts to ports.
   */
  rxNs: number;
  processNs: number;
  txNs: number;
  /** Frames copied once, straight from the source guest's buffer into the destination guest's (src/port/one-copy.ts). */
  oneCopy: number;
  drops: Record<string, number>;
}

/**
 * The PMD counters by index (as OVS's pmd_stat_type): {@link Datapath.counters} is a
 * Float64Array indexed by these, and everything that lists the counters (pmd-stats, pmd-stats-clear,
 * the stats board) loops over {@link PMD_STAT_FIELDS}. A const enum: literal indices in the hot path.
 */
export const enum PmdStat {
  ITERATIONS = 0,
  BUSY_ITERATIONS = 1,
  RX_PACKETS = 2,
  EMC_HITS = 3,
  MEGAFLOW_HITS = 4,
  MISSES = 5,
  UPCALLS = 6,
  UPCALLS_COALESCED = 7,
  UPCALLS_LOST = 8,
  TX_PACKETS = 9,
  BUSY_NS = 10,
  IDLE_NS = 11,
  RX_NS = 12,
  PROCESS_NS = 13,
  TX_NS = 14,
  ONE_COPY = 15,
  COUNT = 16,
}

/** The {@link PmdStats} field of each {@link PmdStat}, in enum order. */
export const PMD_STAT_FIELDS = [
  'iterations', 'busyIterations', 'rxPackets', 'emcHits', 'megaflowHits', 'misses', 'upcalls', 'upcallsCoalesced', 'upcallsLost', 'txPackets', 'busyNs', 'idleNs', 'rxNs', 'processNs', 'txNs', 'oneCopy',
] as const satisfies readonly Exclude<keyof PmdStats, 'drops'>[];
if (PMD_STAT_FIELDS.length !== PmdStat.COUNT || PMD_STAT_FIELDS[PmdStat.TX_NS] !== 'txNs') throw new Error('PmdStat and PMD_STAT_FIELDS disagree');

export interface DpFlowInfo {
  id: number;
  key: number[];
  mask: number[];
  actions: number[];
  packets: number;
  bytes: number;
  /** ms since epoch of the last hit (0: never). */
  used: number;
  created: number;
}

/** Per-port arrays start this long and grow (to the next power of two, at most PORT_NO_MAX + 1) when a higher port number is added. */
const INITIAL_PORT_SLOTS = 64;
/** Datapath flows as flat arrays: flow i has key/mask words [i*FLOW_WORDS, (i+1)*FLOW_WORDS) and actions acts[actOff[i]..actOff[i+1]). */
export interface PackedFlows {
  ids: Int32Array;
  /** Per flow, the slow path's translation handle given at install (-1: none), see installFlowAt. */
  xids: Int32Array;
  keys: Uint32Array;
  masks: Uint32Array;
  packets: Float64Array;
  bytes: Float64Array;
  actOff: Int32Array;
  acts: Int32Array;
}

/**
 * The EMC's use is reviewed every this many classified packets (a window; opts.emcReviewPackets),
 * see Datapath.emcReview. A window in which the EMC answered a share h of the packets while the
 * classifier has k subtables keeps it on only if h * min(k + 1, EMC_SUBTABLES_CAP) >= EMC_KEEP_SCORE
 * (an EMC lookup costs about what a probe of one subtable costs; a megaflow lookup probes at most
 * k of them; with one subtable the EMC stays for h >= 0.75: few flows keep their EMC-hit runs):
 * otherwise its lookups are off for EMC_BYPASS_WINDOWS windows, then on again for one window (a probe).
 */
export const EMC_REVIEW_PACKETS = 8192;
export const EMC_KEEP_SCORE = 1.5;
export const EMC_SUBTABLES_CAP = 16;
export const EMC_BYPASS_WINDOWS = 15;

/** Rx queues counted per port (pmd-rxq-show); more are polled but counted in the last slot. */
const RXQ_SLOTS = 16;
const MAX_OUT = 64;
/** Packets held while their upcall is in flight (leaders and coalesced followers). */
const MAX_PENDING = 2048;
/** Entries of the in-flight upcall index (a power of two, 4x MAX_PENDING). */
const INFLIGHT_SLOTS = 8192;
const NO_BATCH = new Int32Array(0);

export class Datapath {
  readonly pool: Mempool;
  /** The PMD counters, indexed by {@link PmdStat}. */
  readonly counters = new Float64Array(PmdStat.COUNT);
  /** Datapath drops by reason. */
  readonly drops: Record<string, number> = {};
  private readonly sink: UpcallSink;
  /** The sink takes frames in place (upcallAt). */
  private readonly sinkAt: boolean;
  private ports: (Port | null)[] = new Array(INITIAL_PORT_SLOTS).fill(null);
  private portList: number[] = [];
  /** Per output port: pending tx batch. */
  /** Per port (packed array: every slot holds an Int32Array, a shared empty one for unused ports). */
  private txBatch: Int32Array[] = new Array<Int32Array>(INITIAL_PORT_SLOTS).fill(NO_BATCH);
  private txCount = new Int32Array(INITIAL_PORT_SLOTS);
  /** Packets received per (port, rx queue): [port * RXQ_SLOTS + queue]. */
  private rxqPackets = new Float64Array(INITIAL_PORT_SLOTS * RXQ_SLOTS);
  /** Ports with a pending tx batch (each listed once: isDirty), flushed at the end of a pass. */
  private dirty = new Int32Array(INITIAL_PORT_SLOTS);
  private nDirty = 0;
  private isDirty = new Uint8Array(INITIAL_PORT_SLOTS);
  private readonly rxBuf = new Int32Array(BURST);
  private readonly rxBurstMax: number;
  /** Measure time per stage (stats.rxNs/processNs/txNs): three clock reads per burst, off by default. */
  perf = false;
  /** Packet capture taps (tsvs capture): null when none, one check per burst. */
  capture: CaptureSet | null = null;
  /** Rings other PMD threads fill for our ports; `from` is the producing thread's id (-1: unknown). */
  private txSources: { portNo: number; from: number; ring: Ring }[] = [];
  /** Busy time per rx queue (ns), same slots as rxqPackets: what rx-queue rebalancing weighs (see chargePass). */
  private rxqBusyNs = new Float64Array(INITIAL_PORT_SLOTS * RXQ_SLOTS);
  /** Rx queue slots that received since the last chargePass and how much (one entry per queue per busy pass). */
  private readonly passSlot = new Int32Array(256);
  private readonly passPkts = new Int32Array(256);
  private passCount = 0;
  /** Two flow-key buffers: processBurst extracts into one while the other holds the previous lookup's key. */
  private readonly keyA = new Uint32Array(FLOW_WORDS);
  private readonly keyB = new Uint32Array(FLOW_WORDS);
  private readonly outPorts = new Int32Array(MAX_OUT);
  private readonly st = new Int32Array(EXEC_STATE_WORDS);
  private readonly one = new Int32Array(1);
  /** Per port: 1 when it is a tunnel port (its frames carry tunnel metadata into the key). */
  private tunnelIn = new Uint8Array(INITIAL_PORT_SLOTS);
  /** One copy guest-to-guest (src/port/one-copy.ts): the tail table, null when off. */
  private tails: OneCopyTails | null = null;
  /** Per port: 1 when it took the tail table (frames to it keep their tails; its rx bursts hold chains). */
  private tailPort = new Uint8Array(INITIAL_PORT_SLOTS);
  /** Word view of the pool's bytes (tail copies). */
  private readonly dataW32: Int32Array | null;
  /** processBurst: header words of the current run's first frame (flow-key.ts setHeaderRef). */
  private readonly headerRef = new Int32Array(HEADER_REF_WORDS);
  /** Tunnel id / outer addresses per pool buffer (shared with this thread's tunnel ports). */
  private readonly tun: TunnelMeta;

  // megaflows
  private readonly cls = new Classifier();
  private readonly emc: ExactMatchCache;
  private flowProg: (Int32Array | null)[] = [];
  private flowPackets: Float64Array = new Float64Array(64);
  private flowBytes: Float64Array = new Float64Array(64);
  private flowUsed: Float64Array = new Float64Array(64);
  private flowCreated: Float64Array = new Float64Array(64);
  /** Per flow, the slow path's translation handle (installFlowAt's xid; -1: none). */
  private flowXid = new Int32Array(64).fill(-1);

  /**
   * EMC lookups on (1) or bypassed (0) while the EMC thrashes: see emcReview. Packets left in the
   * current review window, EMC_HITS at its start, its length, and bypass windows still to go.
   */
  private emcUse = 1;
  private emcLeft = EMC_REVIEW_PACKETS;
  private emcHitsBase = 0;
  private readonly emcWindow: number;
  /**
   * The megaflow hint (Classifier.hintOf): the megaflow the classifier answered last, its
   * significant words, mask and masked key (hintN of them; -1: not usable), valid while the
   * classifier's version is hintVer. hintCredit: lookups it answered not yet counted (creditHits).
   */
  private hintFlow = -1;
  private hintVer = -1;
  private hintN = -1;
  private readonly hintIdx = new Int32Array(FLOW_WORDS);
  private readonly hintMask = new Int32Array(FLOW_WORDS);
  private readonly hintKey = new Int32Array(FLOW_WORDS);
  private hintCredit = 0;

  // held upcall packets
  private readonly pendingHandle = new Int32Array(MAX_PENDING).fill(-1);
  private pendingCount = 0;
  private upcallSeq = 0;
  private nowMs = Date.now();

  /**
   * opts.rxBurst: packets taken per rx call (1..BURST, default BURST); 1 turns
   * off every per-burst shortcut (tests compare against it).
   */
  constructor(pool: Mempool, sink: UpcallSink, opts: { emcEntries?: number; emcInsertInvProb?: number; emcReviewPackets?: number; rxBurst?: number; oneCopy?: boolean } = {}) {
    this.pool = pool;
    this.sink = sink;
    this.sinkAt = typeof sink.upcallAt === 'function';
    const rb = opts.rxBurst ?? BURST;
    if (!(Number.isInteger(rb) && rb >= 1 && rb <= BURST)) throw new RangeError(`rxBurst must be an integer in 1..${BURST}, got ${rb}`);
    this.rxBurstMax = rb;
    // OVS's emc-insert-inv-prob default: 1 in 100 misses inserts (keeps the EMC from thrashing with many flows)
    this.emc = new ExactMatchCache(opts.emcEntries ?? 8192, opts.emcInsertInvProb ?? 100);
    const win = opts.emcReviewPackets ?? EMC_REVIEW_PACKETS;
    if (!(Number.isInteger(win) && win >= 1)) throw new RangeError(`emcReviewPackets must be a positive integer, got ${win}`);
    this.emcWindow = win;
    this.emcLeft = win;
    // insertion off (emc-insert-inv-prob 0): the EMC stays empty, its lookups are skipped (as OVS does)
    this.emcUse = this.emc.insertInvProb === 0 ? 0 : 1;
    this.tun = tunnelMeta(pool);
    const d = pool.data;
    this.dataW32 = (d.byteOffset & 3) === 0 ? new Int32Array(d.buffer, d.byteOffset, d.byteLength >> 2) : null;
    if (opts.oneCopy === true) this.setOneCopy(true);
  }

  /**
   * One copy guest-to-guest on or off (src/port/one-copy.ts; tsvs daemon --one-copy). Call
   * between passes (no burst in progress).
   */
  setOneCopy(on: boolean): void {
    if (on && this.tails === null) this.tails = new OneCopyTails(this.pool.count);
    for (const n of this.portList) {
      const p = this.ports[n];
      if (p === null) continue;
      this.tailPort[n] = on && isOneCopyPort(p) && p.useOneCopy(this.tails) ? 1 : 0;
      if (!on && isOneCopyPort(p)) p.useOneCopy(null);
    }
    if (!on) this.tails = null;
  }

  /** Is one copy on? */
  get oneCopy(): boolean {
    return this.tails !== null;
  }

  /** Tails copied into mempool buffers for the pool path since one copy was turned on (tests, diagnostics). */
  get oneCopyMaterialized(): number {
    return this.tails?.materialized ?? 0;
  }

  /** The counters as a {@link PmdStats} object (a copy: control path). */
  get stats(): PmdStats {
    const c = this.counters;
    const o = { drops: this.drops } as PmdStats;
    for (let i = 0; i < PmdStat.COUNT; i++) o[PMD_STAT_FIELDS[i]] = c[i];
    return o;
  }

  // ---- control path ----

  addPort(portNo: number, port: Port): void {
    const problem = portNumberProblem(portNo);
    if (problem !== null) throw new RangeError(problem);
    if (portNo >= this.ports.length) this.growPortSlots(portNo);
    if (this.ports[portNo]) throw new Error(`port number ${portNo} already in use`);
    this.ports[portNo] = port;
    this.tunnelIn[portNo] = (port as Port & { meta?: unknown }).meta instanceof TunnelMeta ? 1 : 0;
    this.tailPort[portNo] = this.tails !== null && isOneCopyPort(port) && port.useOneCopy(this.tails) ? 1 : 0;
    this.txBatch[portNo] = new Int32Array(BURST);
    this.txCount[portNo] = 0;
    this.rxqPackets.fill(0, portNo * RXQ_SLOTS, (portNo + 1) * RXQ_SLOTS);
    this.rxqBusyNs.fill(0, portNo * RXQ_SLOTS, (portNo + 1) * RXQ_SLOTS);
    this.passCount = 0;
    this.portList = this.ports.map((p, i) => (p ? i : -1)).filter((i) => i >= 0);
  }

  /** Make the per-port arrays long enough for portNo (control path; the hot path reads the fields afresh each burst). */
  private growPortSlots(portNo: number): void {
    let n = this.ports.length;
    while (n <= portNo) n *= 2;
    n = Math.min(n, PORT_NO_MAX + 1);
    const old = this.ports.length;
    this.ports = this.ports.concat(new Array<Port | null>(n - old).fill(null));
    this.txBatch = this.txBatch.concat(new Array<Int32Array>(n - old).fill(NO_BATCH));
    const grow = <T extends Int32Array | Uint8Array | Float64Array>(a: T, len: number): T => {
      const b = new (a.constructor as new (len: number) => T)(len);
      b.set(a);
      return b;
    };
    this.txCount = grow(this.txCount, n);
    this.rxqPackets = grow(this.rxqPackets, n * RXQ_SLOTS);
    this.rxqBusyNs = grow(this.rxqBusyNs, n * RXQ_SLOTS);
    this.dirty = grow(this.dirty, n);
    this.isDirty = grow(this.isDirty, n);
    this.tunnelIn = grow(this.tunnelIn, n);
    this.tailPort = grow(this.tailPort, n);
  }

  /**
   * Packets for local port portNo that other PMD threads put in ring (see
   * CrossPmdTxPort): drained into the port's tx batch on every pass.
   */
  addTxSource(portNo: number, ringBytes: Uint8Array, from = -1): void {
    this.txSources.push({ portNo, from, ring: Ring.attach(ringBytes, 0) });
  }

  /**
   * Stop draining the rings for portNo without touching what they hold, and
   * give them out (moving the port to another PMD thread, which drains them on:
   * each ring keeps one consumer at a time and its order).
   */
  takeTxSources(portNo: number): { from: number; ring: Uint8Array }[] {
    const out = this.txSources.filter((s) => s.portNo === portNo).map((s) => ({ from: s.from, ring: s.ring.bytes }));
    this.txSources = this.txSources.filter((s) => s.portNo !== portNo);
    return out;
  }

  /**
   * Send now everything other threads have put in the cross-PMD rings for our
   * ports (a port moving between threads: frames another thread forwarded
   * before the move go out before anything forwarded after it).
   */
  drainTxSources(): number {
    let total = 0;
    for (const src of this.txSources) {
      for (;;) {
        const n = src.ring.dequeueBurst(this.rxBuf, BURST);
        if (n === 0) break;
        total += n;
        for (let j = 0; j < n; j++) this.enqueueTx(src.portNo, this.rxBuf[j]);
      }
    }
    if (this.nDirty > 0) this.flushAll();
    return total;
  }

  /**
   * Send now, to local port portNo, every packet waiting in a cross-PMD ring
   * that this thread filled itself while another thread polled the port (the
   * port moved here): they go out before anything this thread sends it next.
   */
  drainToPort(portNo: number, ringBytes: Uint8Array): number {
    const ring = Ring.attach(ringBytes, 0);
    let total = 0;
    for (;;) {
      const n = ring.dequeueBurst(this.rxBuf, BURST);
      if (n === 0) break;
      total += n;
      for (let j = 0; j < n; j++) this.enqueueTx(portNo, this.rxBuf[j]);
    }
    this.flushPort(portNo);
    if (this.isDirty[portNo] !== 0) {
      let w = 0;
      for (let i = 0; i < this.nDirty; i++) if (this.dirty[i] !== portNo) this.dirty[w++] = this.dirty[i];
      this.nDirty = w;
      this.isDirty[portNo] = 0;
    }
    return total;
  }

  /** Stop draining ring(s) for portNo; leftover packets go back to the pool. */
  removeTxSources(portNo: number): void {
    for (const src of this.txSources) {
      if (src.portNo !== portNo) continue;
      for (;;) {
        const n = src.ring.dequeueBurst(this.rxBuf, BURST);
        if (n === 0) break;
        this.pool.free(this.rxBuf, n);
        this.drop(Drop.PORT_DOWN, n);
      }
    }
    this.txSources = this.txSources.filter((s) => s.portNo !== portNo);
  }

  /** Detach a port: pending tx buffers go back to the pool. Returns the port (caller closes it). */
  removePort(portNo: number): Port | null {
    const p = this.ports[portNo];
    if (!p) return null;
    this.flushPort(portNo);
    if (this.txCount[portNo] > 0) {
      this.pool.free(this.txBatch[portNo], this.txCount[portNo]);
      this.txCount[portNo] = 0;
    }
    if (this.tailPort[portNo] !== 0 && isOneCopyPort(p)) p.useOneCopy(null);
    this.tailPort[portNo] = 0;
    this.ports[portNo] = null;
    this.portList = this.portList.filter((i) => i !== portNo);
    if (this.isDirty[portNo] !== 0) {
      let w = 0;
      for (let i = 0; i < this.nDirty; i++) if (this.dirty[i] !== portNo) this.dirty[w++] = this.dirty[i];
      this.nDirty = w;
      this.isDirty[portNo] = 0;
    }
    // held upcalls from this port stay valid (the buffers are ours)
    return p;
  }

  /** Packets received on rx queue q of port portNo since it was added (queues >= 16 share slot 15). */
  rxqCount(portNo: number, q: number): number {
    if (!(portNo >= 0 && portNo < this.ports.length) || !(q >= 0)) return 0;
    return this.rxqPackets[portNo * RXQ_SLOTS + (q < RXQ_SLOTS ? q : RXQ_SLOTS - 1)];
  }

  /** Busy time (ns) spent on rx queue q of port portNo since it was added here (see chargePass). */
  rxqBusy(portNo: number, q: number): number {
    if (!(portNo >= 0 && portNo < this.ports.length) || !(q >= 0)) return 0;
    return this.rxqBusyNs[portNo * RXQ_SLOTS + (q < RXQ_SLOTS ? q : RXQ_SLOTS - 1)];
  }

  /**
   * Charge busy time (ns, measured by the caller around its passes since the
   * last call) to the rx queues that received in them, in proportion to their
   * packets (OVS reads the TSC per rx queue; the PMD loop reads the clock once
   * per group of passes, see pmd-thread.ts). Tx-source draining and held
   * upcalls' work count to the queues that received.
   */
  chargePass(ns: number): void {
    const k = this.passCount;
    if (k === 0) return;
    this.passCount = 0;
    let tot = 0;
    for (let i = 0; i < k; i++) tot += this.passPkts[i];
    if (tot <= 0) return;
    const per = ns / tot;
    for (let i = 0; i < k; i++) this.rxqBusyNs[this.passSlot[i]] += per * this.passPkts[i];
  }

  port(portNo: number): Port | null {
    return this.ports[portNo] ?? null;
  }

  portNumbers(): number[] {
    return this.portList.slice();
  }

  /**
   * The port numbers without a copy: do not change it. A new array whenever a port comes or
   * goes, so a caller that keeps something per port list can tell by identity that it changed.
   */
  get portListView(): readonly number[] {
    return this.portList;
  }

  /** Install (or replace the actions of) a megaflow. Returns its id. */
  installFlow(key: ArrayLike<number>, mask: ArrayLike<number>, prog: Int32Array): number {
    const k = this.instKey;
    const m = this.instMask;
    for (let i = 0; i < FLOW_WORDS; i++) {
      k[i] = key[i];
      m[i] = mask[i];
    }
    return this.installFlowAt(k, 0, m, 0, prog);
  }

  /**
   * installFlow() with key and mask read in place (keys[keyOff..], masks[maskOff..]):
   * no allocation; `prog` is kept (not copied), so megaflows may share one program.
   * `xid` is the slow path's handle of the translation (its ukey, as OVS): kept with the
   * flow and returned by dumpFlowsPacked, so revalidation finds it without a search.
   */
  installFlowAt(keys: Uint32Array, keyOff: number, masks: Uint32Array, maskOff: number, prog: Int32Array, xid = -1): number {
    if (!validateProgram(prog)) throw new Error('invalid action program');
    const k = this.instKey;
    for (let i = 0; i < FLOW_WORDS; i++) k[i] = keys[keyOff + i] & masks[maskOff + i];
    let id = this.cls.findExact(k, 0, masks, maskOff, 0);
    if (id < 0) {
      id = this.cls.insert(k, 0, masks, maskOff, 0, 0);
      this.ensureFlowCap(id + 1);
      this.flowPackets[id] = 0;
      this.flowBytes[id] = 0;
      this.flowUsed[id] = 0;
      this.flowCreated[id] = Date.now();
    }
    this.flowProg[id] = prog;
    this.flowXid[id] = xid;
    return id;
  }

  private readonly instKey = new Uint32Array(FLOW_WORDS);
  private readonly instMask = new Uint32Array(FLOW_WORDS);

  removeFlow(id: number): boolean {
    if (!this.cls.isLive(id)) return false;
    this.emc.invalidateValue(id);
    this.cls.remove(id);
    this.flowProg[id] = null;
    return true;
  }

  flushFlows(): number {
    const ids = this.cls.handles();
    for (const id of ids) this.removeFlow(id);
    this.emc.clear();
    return ids.length;
  }

  /** Remove flows not hit for idleMs. Returns how many. */
  expireIdle(idleMs: number, now = Date.now()): number {
    let n = 0;
    for (const id of this.cls.handles()) {
      const last = this.flowUsed[id] || this.flowCreated[id];
      if (now - last > idleMs) {
        this.removeFlow(id);
        n++;
      }
    }
    return n;
  }

  get flowCount(): number {
    return this.cls.size;
  }

  /**
   * Every flow in flat typed arrays (revalidation: one structured-clone copy
   * of a few arrays instead of an object with three arrays per flow).
   */
  dumpFlowsPacked(): PackedFlows {
    const ids = new Int32Array(this.cls.size);
    const n = this.cls.handlesInto(ids);
    const keys = new Uint32Array(n * FLOW_WORDS);
    const masks = new Uint32Array(n * FLOW_WORDS);
    const packets = new Float64Array(n);
    const bytes = new Float64Array(n);
    const xids = new Int32Array(n);
    const actOff = new Int32Array(n + 1);
    let total = 0;
    for (let i = 0; i < n; i++) total += this.flowProg[ids[i]]?.length ?? 0;
    const acts = new Int32Array(total);
    let o = 0;
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      this.cls.keyOf(id, keys, i * FLOW_WORDS);
      this.cls.maskOf(id, masks, i * FLOW_WORDS);
      packets[i] = this.flowPackets[id];
      bytes[i] = this.flowBytes[id];
      xids[i] = id < this.flowXid.length ? this.flowXid[id] : -1;
      actOff[i] = o;
      const p = this.flowProg[id];
      if (p) {
        // (programs are a few words: a loop beats TypedArray.set's call)
        for (let j = 0; j < p.length; j++) acts[o + j] = p[j];
        o += p.length;
      }
    }
    actOff[n] = o;
    return { ids, xids, keys, masks, packets, bytes, actOff, acts };
  }

  dumpFlows(): DpFlowInfo[] {
    const out: DpFlowInfo[] = [];
    const k = new Uint32Array(FLOW_WORDS);
    const m = new Uint32Array(FLOW_WORDS);
    for (const id of this.cls.handles()) {
      this.cls.keyOf(id, k);
      this.cls.maskOf(id, m);
      out.push({
        id,
        key: Array.from(k),
        mask: Array.from(m),
        actions: Array.from(this.flowProg[id] ?? []),
        packets: this.flowPackets[id],
        bytes: this.flowBytes[id],
        used: this.flowUsed[id],
        created: this.flowCreated[id],
      });
    }
    return out;
  }

  /**
   * Send a frame given by the control path (OpenFlow PACKET_OUT) through an
   * action program, as if it were a held packet. Returns false (and counts
   * the drop) when no buffer is free or the frame does not fit one.
   */
  inject(frame: Uint8Array, prog: Int32Array): boolean {
    const pool = this.pool;
    if (!validateProgram(prog)) return false;
    if (frame.length > pool.bufSize - pool.headroom) {
      this.drop(Drop.RX_TOO_BIG, 1);
      return false;
    }
    const h = pool.allocOne();
    if (h < 0) {
      this.drop(Drop.POOL_EXHAUSTED, 1);
      return false;
    }
    pool.data.set(frame, pool.dataOffset(h));
    if (this.tails !== null) this.tails.len[h] = 0;
    pool.dataLen[h] = frame.length;
    pool.pktLen[h] = frame.length;
    this.tun.tunId[h] = 0; // a packet-out has no tunnel metadata unless its actions set it
    if (prog.length === 0) {
      this.one[0] = h;
      pool.free(this.one, 1);
      return true;
    }
    this.runActions(h, prog);
    this.flushAll();
    return true;
  }

  /**
   * The slow path's answer to upcall `id`: run prog on the held packet (an
   * empty program drops it). Returns false if the id is unknown (already
   * answered, or its slot was reused after MAX_PENDING newer upcalls).
   * flush false: the packets stay in the tx batches for a flushTx() after many replies.
   */
  upcallReply(id: number, prog: Int32Array | null, perPacket = false, flush = true): boolean {
    if (id < 0) return false; // UPCALL_NO_PACKET: nothing held
    const slot = id % MAX_PENDING;
    const h = this.pendingHandle[slot];
    if (h < 0 || this.pendingIds[slot] !== id || this.pendingLeader[slot] !== slot) return false;
    const ok = prog !== null && prog.length > 0 && validateProgram(prog);
    this.inflightForget(this.pendingHash[slot], slot);
    if (perPacket) this.reupcallFollowers(slot);
    // the leader, then every packet coalesced behind it, in arrival order
    for (let s = slot; s >= 0; ) {
      const next = this.pendingChain[s];
      const ph = this.pendingHandle[s];
      this.pendingHandle[s] = -1;
      this.pendingLeader[s] = -1;
      this.pendingChain[s] = -1;
      this.pendingCount--;
      if (ok) this.runActions(ph, prog!);
      else {
        this.one[0] = ph;
        this.pool.free(this.one, 1);
        this.drop(Drop.NO_RULE, 1);
      }
      s = next;
    }
    if (ok && flush) this.flushAll();
    return true;
  }

  /** Send what the tx batches hold (after upcallReply(..., flush false)). */
  flushTx(): void {
    this.flushAll();
  }
  /**
   * A per-packet answer (the slow path's result is not a datapath flow, e.g.
   * it sends a packet-in): every packet held behind the leader goes up as an
   * upcall of its own, in arrival order, instead of taking the leader's actions.
   */
  private reupcallFollowers(leader: number): void {
    const keyBase = leader * FLOW_WORDS;
    let s = this.pendingChain[leader];
    this.pendingChain[leader] = -1;
    this.pendingTail[leader] = leader;
    while (s >= 0) {
      const next = this.pendingChain[s];
      const ph = this.pendingHandle[s];
      this.pendingLeader[s] = s;
      this.pendingTail[s] = s;
      this.pendingChain[s] = -1;
      this.pendingHash[s] = this.pendingHash[leader];
      this.pendingKey.copyWithin(s * FLOW_WORDS, keyBase, keyBase + FLOW_WORDS);
      this.counters[PmdStat.UPCALLS]++;
      const off = this.pool.dataOffset(ph);
      this.sink.upcall(this.pendingIds[s], this.pendingPort[s], this.pool.data.subarray(off, off + this.pool.dataLen[ph]),
        this.pendingKey.subarray(s * FLOW_WORDS, (s + 1) * FLOW_WORDS));
      s = next;
    }
  }
  private readonly pendingPort = new Int32Array(MAX_PENDING);
  private readonly pendingLeader = new Int32Array(MAX_PENDING).fill(-1);
  private readonly pendingChain = new Int32Array(MAX_PENDING).fill(-1);
  private readonly pendingTail = new Int32Array(MAX_PENDING).fill(-1);
  private readonly pendingHash = new Int32Array(MAX_PENDING);
  private readonly pendingKey = new Uint32Array(MAX_PENDING * FLOW_WORDS);
  /**
   * Flow-key hash -> leader slot of an upcall in flight, direct-mapped (a later leader
   * whose hash takes the same entry replaces the earlier one: packets of the earlier flow
   * then get an upcall of their own instead of waiting behind it, as with equal hashes).
   */
  private readonly inflightHash = new Int32Array(INFLIGHT_SLOTS);
  private readonly inflightSlot = new Int32Array(INFLIGHT_SLOTS).fill(-1);

  /** The leader slot of an upcall in flight for this hash, or -1. */
  private inflightLeader(hash: number): number {
    const b = hash & (INFLIGHT_SLOTS - 1);
    return this.inflightHash[b] === hash ? this.inflightSlot[b] : -1;
  }

  private inflightForget(hash: number, slot: number): void {
    const b = hash & (INFLIGHT_SLOTS - 1);
    if (this.inflightSlot[b] === slot && this.inflightHash[b] === hash) this.inflightSlot[b] = -1;
  }

  private readonly pendingIds = new Float64Array(MAX_PENDING).fill(-1);
  /** Setup-only upcalls sent recently (direct-mapped by key hash): hash and coarse time. */
  private readonly setupHash = new Int32Array(SETUP_ONLY_SLOTS);
  private readonly setupAt = new Float64Array(SETUP_ONLY_SLOTS).fill(-1e12);

  /** Free held packets and pending tx (shutdown). */
  drain(): void {
    for (let s = 0; s < MAX_PENDING; s++) {
      if (this.pendingHandle[s] >= 0) {
        this.one[0] = this.pendingHandle[s];
        this.pool.free(this.one, 1);
        this.pendingHandle[s] = -1;
      }
      this.pendingLeader[s] = -1;
      this.pendingChain[s] = -1;
    }
    this.inflightSlot.fill(-1);
    this.pendingCount = 0;
    for (const p of this.portList) {
      if (this.txCount[p] > 0) this.pool.free(this.txBatch[p], this.txCount[p]);
      this.txCount[p] = 0;
    }
  }

  // ---- hot path ----

  /**
   * One pass over every rx queue of every port. Returns packets received.
   * Takes no timestamps (they cost more than an idle pass): the caller sets
   * the coarse clock with {@link tick} and accounts busy/idle time with
   * {@link account}.
   */
  pollOnce(): number {
    let total = 0;
    const perf = this.perf;
    const list = this.portList;
    for (let i = 0; i < list.length; i++) {
      const pn = list[i];
      const port = this.ports[pn];
      if (port === null) continue;
      const nq = port.nQueues;
      for (let q = 0; q < nq; q++) {
        const t0 = perf ? performance.now() : 0;
        const n = port.rxBurst(q, this.rxBuf, this.rxBurstMax);
        if (n > 0) {
          const oneCopy = this.tailPort[pn] !== 0;
          if (this.capture !== null) {
            if (oneCopy) this.materializeBurst(n); // a capture reads whole frames
            this.capture.burst(pn, this.rxBuf, n, DIR_RX);
          }
          total += n;
          const slot = pn * RXQ_SLOTS + (q < RXQ_SLOTS ? q : RXQ_SLOTS - 1);
          this.rxqPackets[slot] += n;
          const pc = this.passCount;
          if (pc < 256) {
            this.passSlot[pc] = slot;
            this.passPkts[pc] = n;
            this.passCount = pc + 1;
          }
          if (perf) this.processTimed(pn, n, t0);
          else this.processBurst(pn, n);
          if (oneCopy) this.endOneCopyBurst(port, q, n);
        }
      }
    }
    const srcs = this.txSources;
    for (let i = 0; i < srcs.length; i++) {
      const n = srcs[i].ring.dequeueBurst(this.rxBuf, BURST);
      const pn = srcs[i].portNo;
      for (let j = 0; j < n; j++) this.enqueueTx(pn, this.rxBuf[j]);
    }
    if (this.nDirty > 0) this.flushAll();
    this.counters[PmdStat.ITERATIONS]++;
    if (total > 0) this.counters[PmdStat.BUSY_ITERATIONS]++;
    return total;
  }

  /**
   * After a burst from a port that holds its rx chains (one copy): send every tx batch (the
   * tails are read now), return the chains to the source guest, forget the burst's tails.
   */
  private endOneCopyBurst(port: Port, q: number, n: number): void {
    if (this.nDirty > 0) this.flushAll();
    (port as Port & { rxRelease(q: number): void }).rxRelease(q);
    const t = this.tails;
    if (t === null) return;
    t.clearBurst(this.rxBuf, n);
    if (t.direct > 0) {
      this.counters[PmdStat.ONE_COPY] += t.direct;
      t.direct = 0;
    }
  }

  /** Copy in the tails of rxBuf[0..n) (they become ordinary packets). */
  private materializeBurst(n: number): void {
    for (let i = 0; i < n; i++) this.materialize(this.rxBuf[i]);
  }

  /** Copy packet h's tail (if it has one) into its buffer: the pool path from here on. */
  private materialize(h: number): void {
    const t = this.tails;
    if (t !== null && t.len[h] > 0) t.materialize(h, this.pool.data, this.dataW32, this.pool.dataOffset(h) + ONE_COPY_PRIVATE);
  }

  /** Packets held while their upcall is in flight (the upcall queue depth). */
  get pendingUpcalls(): number {
    return this.pendingCount;
  }

  /** The record of which rx queues received is half full: call chargePass before more passes. */
  get passRecordFull(): boolean {
    return this.passCount >= this.passSlot.length >> 1;
  }

  /** The upcall queue is full: misses are dropped (upcall-queue-full) until answers free it. */
  get upcallQueueFull(): boolean {
    return this.pendingCount >= MAX_PENDING;
  }

  /** Set the coarse clock (ms) used for flow 'used' times. */
  tick(nowMs: number): void {
    this.nowMs = nowMs;
  }

  /** Add elapsedNs of polling, busyNs of which went to passes that moved packets. */
  account(elapsedNs: number, busyNs: number): void {
    const b = Math.min(busyNs, elapsedNs);
    this.counters[PmdStat.BUSY_NS] += b;
    this.counters[PmdStat.IDLE_NS] += elapsedNs - b;
  }

  /** processBurst with its time split into rx (since t0, the rx burst's start), processing and tx (nested flushes). */
  private processTimed(inPort: number, n: number, t0: number): void {
    const st = this.counters;
    const t1 = performance.now();
    const tx0 = st[PmdStat.TX_NS];
    this.processBurst(inPort, n);
    st[PmdStat.RX_NS] += (t1 - t0) * 1e6;
    st[PmdStat.PROCESS_NS] += (performance.now() - t1) * 1e6 - (st[PmdStat.TX_NS] - tx0);
  }

  /**
   * Classify and act on rxBuf[0..n) from inPort.
   *
   * Runs of identical keys (common: a burst usually carries few flows, often
   * one) are looked up once: a packet whose key equals the previous looked-up
   * packet's key reuses that lookup's flow and skips hashing and the caches
   * (OVS batches packets per flow in a similar way). Counters stay as the
   * per-packet path would leave them: while the key is known to be in the EMC
   * the reused packets count as EMC hits, otherwise as megaflow hits that
   * retry the (probabilistic) EMC insert, exactly as a fresh lookup would.
   * Only the classifier's own hit counters (subtable ranking) see one hit per
   * run of a key. A run goes on through packets of other keys that find the
   * same megaflow (many flows of one megaflow: their keys differ, the flow does
   * not); it ends at the burst's end, at every miss (an upcall may install or
   * remove flows synchronously), and when the EMC is turned on or off
   * (emcReview), so no stale flow is ever used. Flow statistics (packets,
   * bytes, used) are added once per run.
   *
   * The EMC is bypassed while it thrashes (emcReview):
   * no full-key hash and no EMC lookup, the megaflows are asked first; the
   * probabilistic insertion goes on (the key is hashed only when the draw says
   * insert), so the EMC keeps learning and the next review window sees what it
   * would give. A megaflow lookup first checks the megaflow the classifier
   * answered last on its own words (megaflowLookup: no hash, no probe).
   */
  private processBurst(inPort: number, n: number): void {
    const pool = this.pool;
    const data = pool.data;
    const st = this.counters;
    const emc = this.emc;
    const cls = this.cls;
    const rxBuf = this.rxBuf;
    let key = this.keyA;
    let prev = this.keyB;
    /** Flow of the current run (-1: none) and what is known about `prev`, the run's last key. */
    let runFlow = -1;
    let runInEmc = false;
    let runHash = 0;
    let runHashed = false;
    let runProg: Int32Array | null = null;
    /** Output port when runProg is a single OUTPUT (no interpreter needed), else -1. */
    let runOut = -1;
    let runPackets = 0;
    let runBytes = 0;
    /** EMC lookups on (emcReview may change it between two packets), packets left in the review window. */
    let useEmc = this.emcUse !== 0;
    let left = this.emcLeft;
    const tunnel = this.tunnelIn[inPort] !== 0;
    const tun = this.tun;
    /** One copy: tail lengths per handle (frames of this burst may have their tails in the source guest). */
    const tl = this.tailPort[inPort] !== 0 && this.tails !== null ? this.tails.len : null;
    /** The run's last key's frame's header words (flow-key.ts sameKeyHeaders), when runHdr; the buffer as words. */
    const ref = this.headerRef;
    const w32 = this.dataW32;
    const wEnd = w32 !== null ? w32.length - HEADER_REF_WORDS : 0;
    let runHdr = false;
    /** The last packet repeated the key before it (keys come in runs: worth taking a new key's header words). */
    let repeated = false;
    st[PmdStat.RX_PACKETS] += n;
    for (let i = 0; i < n; i++) {
      const h = rxBuf[i];
      const off = pool.dataOffset(h);
      const len = pool.dataLen[h];
      // same key as the run: without parsing when its key bytes equal the run's first frame's (its private
      // part holds every byte the key reads: no tail to copy in), else by extracting and comparing the key
      let sameRun = runHdr && (off & 3) === 0 && (off >> 2) <= wEnd && sameKeyHeaders(w32 as Int32Array, off >> 2, len, ref);
      /** Another key of the run's megaflow, known from the frame's words that the megaflow reads (EMC bypassed). */
      let inRunFlow = false;
      if (sameRun) tun.tunId[h] = 0;
      else if (!useEmc && runFlow >= 0 && runFlow === this.hintFlow && !tunnel && this.hintN >= 0 && this.hintVer === cls.version &&
        keyFitsPrefix(data, off, len) && this.frameInHint(data, off, inPort)) {
        tun.tunId[h] = 0;
        inRunFlow = true;
      } else {
        // the key is taken from the private copy only: a frame whose key needs more than its private part gets its tail first
        if (tl !== null && tl[h] > 0 && !keyFitsPrefix(data, off, len)) this.materialize(h);
        const status = extractKey(data, off, len, inPort, key, 0);
        if (tunnel) {
          key[16] = tun.tunId[h]; // W_TUN_ID, W_TUN_SRC, W_TUN_DST
          key[17] = tun.tunSrc[h];
          key[18] = tun.tunDst[h];
        } else {
          // a frame of another port has tunnel id 0 (as OVS): a key=flow tunnel port must not send it
          // with whatever id this buffer carried last time
          tun.tunId[h] = 0;
        }
        if (status === KEY_MALFORMED) {
          this.one[0] = h;
          pool.free(this.one, 1);
          this.drop(Drop.MALFORMED, 1);
          continue;
        }
        sameRun = runFlow >= 0 && sameKey(key, prev);
      }
      if (inRunFlow) {
        // what megaflowLookup would answer and count (the hint); the insertion draw as for any megaflow hit
        st[PmdStat.MEGAFLOW_HITS]++;
        this.hintCredit++;
        if (emc.shouldInsert()) {
          extractKey(data, off, len, inPort, key, 0);
          emc.insertAlways(key, 0, hashKey(key, 0, HASH_BASIS), runFlow);
        }
        runPackets++;
        runBytes += len;
        repeated = false;
        if (runOut >= 0) this.enqueueTx(runOut, h);
        else if (runProg !== null) this.runActions(h, runProg);
        else this.dropNoRule(h);
      } else if (sameRun) {
        // what a lookup of this key would count and insert (see above)
        if (!useEmc) {
          st[PmdStat.MEGAFLOW_HITS]++;
          if (emc.shouldInsert()) {
            if (!runHashed) { runHash = hashKey(prev, 0, HASH_BASIS); runHashed = true; }
            emc.insertAlways(prev, 0, runHash, runFlow);
            runInEmc = true;
          }
        } else if (runInEmc) st[PmdStat.EMC_HITS]++;
        else {
          st[PmdStat.MEGAFLOW_HITS]++;
          if (emc.insert(prev, 0, runHash, runFlow)) runInEmc = true;
        }
        runPackets++;
        runBytes += len;
        repeated = true;
        if (runOut >= 0) this.enqueueTx(runOut, h);
        else if (runProg !== null) this.runActions(h, runProg);
        else this.dropNoRule(h);
      } else {
        // a new key: the EMC (unless bypassed), then the megaflows (the last packet's first)
        let flow: number;
        let inEmc = false;
        let hash = 0;
        let hashed = false;
        if (useEmc) {
          hash = hashKey(key, 0, HASH_BASIS);
          hashed = true;
          flow = emc.lookup(key, 0, hash);
          if (flow >= 0) {
            st[PmdStat.EMC_HITS]++;
            inEmc = true;
          } else {
            flow = this.megaflowLookup(key);
            if (flow >= 0) {
              st[PmdStat.MEGAFLOW_HITS]++;
              inEmc = emc.insert(key, 0, hash, flow);
            }
          }
        } else {
          flow = this.megaflowLookup(key);
          if (flow >= 0) {
            st[PmdStat.MEGAFLOW_HITS]++;
            if (emc.shouldInsert()) {
              hash = hashKey(key, 0, HASH_BASIS);
              hashed = true;
              emc.insertAlways(key, 0, hash, flow);
              inEmc = true;
            }
          }
        }
        // a packet of another key in the same megaflow continues the run; its header words are taken
        // for the next packets only when keys have been repeating (not for a stream of distinct keys)
        let takeRef = repeated;
        repeated = false;
        if (flow < 0 || flow !== runFlow) {
          // another flow or a miss: close the run
          takeRef = true;
          if (runPackets > 0) {
            this.flowPackets[runFlow] += runPackets;
            this.flowBytes[runFlow] += runBytes;
            this.flowUsed[runFlow] = this.nowMs;
            runPackets = 0;
            runBytes = 0;
          }
          runFlow = -1;
          runHdr = false;
          if (flow < 0) {
            st[PmdStat.MISSES]++;
            if (!hashed) hash = hashKey(key, 0, HASH_BASIS);
            if (--left === 0) {
              this.emcLeft = 0;
              this.emcReview();
              left = this.emcLeft;
              useEmc = this.emcUse !== 0;
            }
            // the slow path may change the flows synchronously: count the hint's answers first
            if (this.hintCredit > 0) this.creditHint();
            this.doUpcall(h, inPort, off, len, hash, key);
            continue;
          }
          runFlow = flow;
          const prog = this.flowProg[flow];
          runProg = prog;
          runOut = prog !== null && prog.length === 2 && prog[0] === OP_OUTPUT ? prog[1] : -1;
        }
        // this key becomes the run's `prev`, the next packet extracts into the other buffer
        const t = prev;
        prev = key;
        key = t;
        runInEmc = inEmc;
        runHash = hash;
        runHashed = hashed;
        runPackets++;
        runBytes += len;
        // later frames with the same key headers skip parsing (not for tunnel ports: their key has the tunnel's words)
        if (takeRef && !tunnel && w32 !== null && (off & 3) === 0 && (off >> 2) <= wEnd && keyFitsPrefix(data, off, len)) {
          setHeaderRef(w32, off >> 2, ref);
          runHdr = true;
        } else runHdr = false;
        if (runOut >= 0) this.enqueueTx(runOut, h);
        else if (runProg !== null) this.runActions(h, runProg);
        else this.dropNoRule(h);
      }
      if (--left === 0) {
        // the review may turn the EMC on or off: then the run ends (a lookup would now take the other way)
        this.emcLeft = 0;
        this.emcReview();
        left = this.emcLeft;
        const use = this.emcUse !== 0;
        if (use !== useEmc) {
          useEmc = use;
          if (runPackets > 0) {
            this.flowPackets[runFlow] += runPackets;
            this.flowBytes[runFlow] += runBytes;
            this.flowUsed[runFlow] = this.nowMs;
            runPackets = 0;
            runBytes = 0;
          }
          runFlow = -1;
          runHdr = false;
        }
      }
    }
    this.emcLeft = left;
    if (this.hintCredit > 0) this.creditHint();
    if (runPackets > 0) {
      this.flowPackets[runFlow] += runPackets;
      this.flowBytes[runFlow] += runBytes;
      this.flowUsed[runFlow] = this.nowMs;
    }
  }

  /**
   * The megaflow for key (classifier.lookup()'s answer) or -1: first the hint, the megaflow of the
   * last classifier answer, checked on its own words (no hash, no probe); else the classifier, and
   * its answer becomes the hint.
   */
  private megaflowLookup(key: Uint32Array): number {
    const cls = this.cls;
    const n = this.hintN;
    if (n >= 0 && this.hintVer === cls.version) {
      const idx = this.hintIdx;
      const mask = this.hintMask;
      const hk = this.hintKey;
      let j = 0;
      for (; j < n; j++) if ((key[idx[j]] & mask[j]) !== hk[j]) break;
      if (j === n) {
        this.hintCredit++;
        return this.hintFlow;
      }
    }
    const flow = cls.lookup(key, 0);
    if (flow >= 0 && (flow !== this.hintFlow || this.hintVer !== cls.version)) {
      if (this.hintCredit > 0) this.creditHint();
      this.hintFlow = flow;
      this.hintVer = cls.version;
      this.hintN = cls.hintOf(flow, this.hintIdx, this.hintMask, this.hintKey);
    }
    return flow;
  }

  /** Whether the frame (keyFitsPrefix holds, no tunnel metadata) matches the megaflow hint's words. */
  private frameInHint(data: Uint8Array, off: number, inPort: number): boolean {
    const n = this.hintN;
    const idx = this.hintIdx;
    const mask = this.hintMask;
    const hk = this.hintKey;
    for (let j = 0; j < n; j++) if ((prefixKeyWord(data, off, inPort, idx[j]) & mask[j]) !== hk[j]) return false;
    return true;
  }

  /** Count the lookups the hint answered in the classifier (its counters and subtable ranking). */
  private creditHint(): void {
    const n = this.hintCredit;
    this.hintCredit = 0;
    if (this.cls.isLive(this.hintFlow)) this.cls.creditHits(this.hintFlow, n);
  }

  /**
   * End of an EMC review window (emcLeft reached 0). The EMC stays on while its hit share h over
   * the window gives h * min(k + 1, EMC_SUBTABLES_CAP) >= EMC_KEEP_SCORE with k subtables; below
   * that (it thrashes: more flows than entries) it is bypassed for EMC_BYPASS_WINDOWS windows, then
   * on for one window to measure h again (insertion went on meanwhile). Decided from the packets
   * alone (the EMC hit counter's growth, the subtable count, which changes only at installs and
   * removals), so a burst and the same packets one at a time take the same decisions. Insertion
   * off (inv 0): always bypassed.
   */
  private emcReview(): void {
    const hits = this.counters[PmdStat.EMC_HITS] - this.emcHitsBase;
    const win = this.emcWindow;
    const k = this.cls.subtableCount;
    if (this.emc.insertInvProb === 0) {
      this.emcUse = 0;
      this.emcLeft = win;
    } else if (this.emcUse !== 0) {
      // hits < 0: the counters were cleared in the window (pmd-stats-clear): keep the EMC on
      if (hits >= 0 && hits * (k + 1 < EMC_SUBTABLES_CAP ? k + 1 : EMC_SUBTABLES_CAP) < win * EMC_KEEP_SCORE) {
        this.emcUse = 0;
        this.emcLeft = win * EMC_BYPASS_WINDOWS;
      } else this.emcLeft = win;
    } else {
      this.emcUse = 1;
      this.emcLeft = win;
    }
    this.emcHitsBase = this.counters[PmdStat.EMC_HITS];
  }

  /** Whether EMC lookups are on (false: bypassed while the EMC thrashes, see emcReview). */
  get emcActive(): boolean {
    return this.emcUse !== 0;
  }

  private dropNoRule(h: number): void {
    this.one[0] = h;
    this.pool.free(this.one, 1);
    this.drop(Drop.NO_RULE, 1);
  }

  private doUpcall(h: number, inPort: number, off: number, len: number, hash: number, key: Uint32Array): void {
    this.materialize(h); // held or handed to the slow path: a whole frame of ours
    if (this.pendingCount >= MAX_PENDING) {
      // Past the queue (MAX_PENDING held packets): the packet is dropped and counted (upcallsLost,
      // drop reason upcall-queue-full), but the flow is still set up: an upcall without a packet,
      // unless this key is already in flight or was asked for in the last SETUP_ONLY_GAP_MS.
      this.one[0] = h;
      this.counters[PmdStat.UPCALLS_LOST]++;
      this.drop(Drop.UPCALL_QUEUE_FULL, 1);
      const leader = this.inflightLeader(hash);
      if (leader < 0 || !this.samePendingKey(leader, key)) {
        const k = hash & (SETUP_ONLY_SLOTS - 1);
        const now = this.nowMs;
        if (this.setupHash[k] !== hash || now - this.setupAt[k] >= SETUP_ONLY_GAP_MS) {
          this.setupHash[k] = hash;
          this.setupAt[k] = now;
          this.counters[PmdStat.UPCALLS]++;
          this.toSink(UPCALL_NO_PACKET, inPort, off, len, key);
        }
      }
      this.pool.free(this.one, 1);
      return;
    }
    // find a free slot starting at the next sequence number
    let id = this.upcallSeq;
    while (this.pendingHandle[id % MAX_PENDING] >= 0) id++;
    this.upcallSeq = id + 1;
    const slot = id % MAX_PENDING;
    this.pendingHandle[slot] = h;
    this.pendingPort[slot] = inPort;
    this.pendingIds[slot] = id;
    this.pendingChain[slot] = -1;
    this.pendingCount++;
    // an upcall for this exact key already in flight: wait behind it instead of sending another
    const leader = this.inflightLeader(hash);
    if (leader >= 0 && this.samePendingKey(leader, key)) {
      this.pendingLeader[slot] = leader;
      const tail = this.pendingTail[leader];
      this.pendingChain[tail] = slot;
      this.pendingTail[leader] = slot;
      this.counters[PmdStat.UPCALLS_COALESCED]++;
      return;
    }
    this.pendingLeader[slot] = slot;
    this.pendingTail[slot] = slot;
    this.pendingHash[slot] = hash;
    this.pendingKey.set(key, slot * FLOW_WORDS);
    const b = hash & (INFLIGHT_SLOTS - 1);
    this.inflightHash[b] = hash;
    this.inflightSlot[b] = slot;
    this.counters[PmdStat.UPCALLS]++;
    this.toSink(id, inPort, off, len, key);
  }

  private toSink(id: number, inPort: number, off: number, len: number, key: Uint32Array): void {
    if (this.sinkAt) this.sink.upcallAt!(id, inPort, this.pool.data, off, len, key);
    else this.sink.upcall(id, inPort, this.pool.data.subarray(off, off + len), key);
  }

  private samePendingKey(slot: number, key: Uint32Array): boolean {
    const base = slot * FLOW_WORDS;
    const pk = this.pendingKey;
    for (let i = 0; i < FLOW_WORDS; i++) if (pk[base + i] !== key[i]) return false;
    return true;
  }

  /** Run an action program on packet h; queue it (and copies) on output ports. */
  private runActions(h: number, prog: Int32Array): void {
    // the most common program, a single output, needs no interpreter
    if (prog.length === 2 && prog[0] === OP_OUTPUT) {
      this.enqueueTx(prog[1], h);
      return;
    }
    this.materialize(h); // rewrites, several outputs: the pool path
    const pool = this.pool;
    const st = this.st;
    const base = pool.bufAddrOffset(h);
    st[ST_OFF] = pool.dataOffset(h);
    st[ST_LEN] = pool.dataLen[h];
    st[ST_NOUT] = 0;
    st[ST_ERR] = 0;
    st[ST_TUN_SET] = 0;
    let pc = 0;
    for (;;) {
      const r = executeActions(prog, pc, prog.length, pool.data, st, this.outPorts);
      if (r === EXEC_DONE) break;
      if (r === EXEC_ERROR) {
        this.drop(Drop.ACTION_ERROR, 1);
        break;
      }
      // outputs pending before a modification: send copies now
      this.outputCopies(h, st[ST_OFF], st[ST_LEN], st[ST_NOUT]);
      st[ST_NOUT] = 0;
      pc = r;
    }
    pool.dataOff[h] = st[ST_OFF] - base;
    pool.dataLen[h] = st[ST_LEN];
    pool.pktLen[h] = st[ST_LEN];
    const nout = st[ST_NOUT];
    if (nout === 0) {
      this.one[0] = h;
      pool.free(this.one, 1);
      if (st[ST_ERR] === 0) this.drop(Drop.ACTION_DROP, 1);
      return;
    }
    if (nout > 1) this.outputCopies(h, st[ST_OFF], st[ST_LEN], nout - 1);
    if (st[ST_TUN_SET] !== 0) this.tun.tunId[h] = st[ST_TUN_ID];
    this.enqueueTx(this.outPorts[nout - 1], h);
  }

  /** Copy the frame of packet h to fresh buffers for outPorts[0..n) (tunnel id: the program's, else h's). */
  private outputCopies(h: number, off: number, len: number, n: number): void {
    const pool = this.pool;
    const tunId = this.st[ST_TUN_SET] !== 0 ? this.st[ST_TUN_ID] : this.tun.tunId[h];
    for (let i = 0; i < n; i++) {
      const c = pool.allocOne();
      if (c < 0) {
        this.drop(Drop.POOL_EXHAUSTED, 1);
        continue;
      }
      // a frame that grew into its headroom (push_vlan) may not fit after a fresh buffer's headroom:
      // start the copy earlier so it ends inside the buffer; one larger than a whole buffer is dropped
      let room = pool.headroom;
      if (len > pool.bufSize - room) {
        if (len > pool.bufSize) {
          this.one[0] = c;
          pool.free(this.one, 1);
          this.drop(Drop.COPY_TOO_BIG, 1);
          continue;
        }
        room = pool.bufSize - len;
        pool.dataOff[c] = room;
      }
      if (this.tails !== null) this.tails.len[c] = 0; // a fresh buffer inside a burst: no stale tail
      const coff = pool.bufAddrOffset(c) + room;
      pool.data.copyWithin(coff, off, off + len);
      pool.dataLen[c] = len;
      pool.pktLen[c] = len;
      this.tun.tunId[c] = tunId;
      this.enqueueTx(this.outPorts[i], c);
    }
  }

  private enqueueTx(portNo: number, h: number): void {
    const txCount = this.txCount; // one slot per port number up to the highest added
    if (!(portNo >= 0 && portNo < txCount.length) || this.ports[portNo] === null) {
      this.one[0] = h;
      this.pool.free(this.one, 1);
      this.drop(Drop.PORT_DOWN, 1);
      return;
    }
    // one copy: a port that cannot take a tail (another type, another thread's) gets the whole frame
    if (this.tails !== null && this.tailPort[portNo] === 0) this.materialize(h);
    const c = txCount[portNo];
    if (this.isDirty[portNo] === 0) {
      this.isDirty[portNo] = 1;
      this.dirty[this.nDirty++] = portNo;
    }
    const batch = this.txBatch[portNo]; // BURST long
    batch[c] = h;
    txCount[portNo] = c + 1;
    if (c + 1 === batch.length) this.flushPort(portNo);
  }

  private flushPort(portNo: number): void {
    const n = this.txCount[portNo];
    if (n === 0) return;
    const port = this.ports[portNo];
    const batch = this.txBatch[portNo];
    this.txCount[portNo] = 0;
    if (port === null) {
      this.pool.free(batch, n);
      this.drop(Drop.PORT_DOWN, n);
      return;
    }
    // The port counts what it refuses (txDropped, drops by reason); we free it.
    const t0 = this.perf ? performance.now() : 0;
    if (this.capture !== null) this.capture.burst(portNo, batch, n, DIR_TX);
    const sent = port.txBurst(0, batch, n);
    if (this.perf) this.counters[PmdStat.TX_NS] += (performance.now() - t0) * 1e6;
    this.counters[PmdStat.TX_PACKETS] += sent;
    if (sent < n) {
      this.pool.free(batch, n - sent, sent);
      this.drop(port.link === 'up' ? Drop.TX_QUEUE_FULL : Drop.PORT_DOWN, n - sent);
    }
  }

  private flushAll(): void {
    const d = this.dirty;
    // flushPort cannot add ports (txBurst does not call back into the datapath)
    for (let i = 0; i < this.nDirty; i++) {
      this.flushPort(d[i]);
      this.isDirty[d[i]] = 0;
    }
    this.nDirty = 0;
  }

  private drop(reason: DropReason, n: number): void {
    tallyDrop(this.drops, reason, n);
  }

  private ensureFlowCap(n: number): void {
    if (n <= this.flowPackets.length) return;
    const cap = Math.max(n, this.flowPackets.length * 2);
    const grow = (a: Float64Array): Float64Array => {
      const b = new Float64Array(cap);
      b.set(a);
      return b;
    };
    this.flowPackets = grow(this.flowPackets);
    this.flowBytes = grow(this.flowBytes);
    this.flowUsed = grow(this.flowUsed);
    this.flowCreated = grow(this.flowCreated);
    const x = new Int32Array(cap).fill(-1);
    x.set(this.flowXid);
    this.flowXid = x;
  }
}

/**
 * a == b over all FLOW_WORDS words: straight-line, the words that vary most between flows first
 * (W_TP, W_L3_SRC, W_L3_DST); literal indices (a module constant costs a load and a TDZ check per use).
 */
assertUnrolledFlowWords(19, 'datapath sameKey');
function sameKey(a: Uint32Array, b: Uint32Array): boolean {
  return a[6] === b[6] && a[7] === b[7] && a[11] === b[11] &&
    a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3] && a[4] === b[4] && a[5] === b[5] &&
    a[8] === b[8] && a[9] === b[9] && a[10] === b[10] && a[12] === b[12] && a[13] === b[13] &&
    a[14] === b[14] && a[15] === b[15] && a[16] === b[16] && a[17] === b[17] && a[18] === b[18];
}
