/**
 * The stats board: a PMD thread's counters in shared memory, for observers
 * (Prometheus metrics, `tsvs top`, the web dashboard) that must not message
 * the PMD thread on every look.
 *
 * The PMD thread copies its own counters (Datapath.stats, every port's
 * PortStats, flow count, held upcalls, pool) into a SharedArrayBuffer from its
 * loop, at most every `periodMs` (default 10 ms): a few hundred number stores,
 * never per packet. Numbers sit in a Float64Array at fixed offsets; the
 * strings (port names, drop reasons) are a small JSON layout rewritten only
 * when a port or a drop reason appears. A sequence lock (odd while writing)
 * lets the reader on another thread take a consistent copy without stopping
 * the writer. A reader sees values at most one period old.
 */
import { PMD_STAT_FIELDS, type PmdStats } from './datapath.js';
import type { PortStats } from '../port/port.js';

/** PMD-level slots, in this order, from offset 0 of the values. */
const PMD_FIELDS = PMD_STAT_FIELDS;
const PMD_FLOWS = 16;
if (PMD_FIELDS.length > PMD_FLOWS) throw new Error(`stats board: ${PMD_FIELDS.length} PMD counters do not fit the ${PMD_FLOWS} slots before the flow count`);
const PMD_PENDING = 17;
const PMD_POOL_AVAIL = 18;
const PMD_POOL_COUNT = 19;
const PMD_POOL_FAIL = 20;
const PMD_PUBLISHED_MS = 21;
const PMD_SLOTS = 32;
/** Drop reasons of the PMD (datapath drops) after the fixed slots. */
const PMD_REASONS = 32;

const PORT_FIELDS = ['rxPackets', 'rxBytes', 'txPackets', 'txBytes', 'rxDropped', 'txDropped'] as const;
const P_LINK = 6;
const P_LINK_CHANGES = 7;
const P_LINK_UPS = 8;
const P_NQ = 9;
const PORT_FIXED = 16;
const PORT_REASONS = 32;
const PORT_RXQS = 16;
const PORT_SLOTS = PORT_FIXED + PORT_REASONS + PORT_RXQS;
/** Ports one PMD can show on its board. */
export const BOARD_MAX_PORTS = 250;

const VALUES = PMD_SLOTS + PMD_REASONS + BOARD_MAX_PORTS * PORT_SLOTS;
const LAYOUT_BYTES = 64 * 1024;
/** Int32 header: [0] seq (odd while writing), [1] layout generation, [2] layout length. */
const HDR_BYTES = 16;

export const BOARD_BYTES = HDR_BYTES + VALUES * 8 + LAYOUT_BYTES;

/** One port as the board shows it. */
export interface BoardPort {
  portNo: number;
  name: string;
  type: string;
  link: 'up' | 'down';
  /** Times the link went up or down since the port was added (OVS's link_resets). */
  linkChanges: number;
  /** Times the link came up again after the first time (vhost-user: reconnects). */
  reconnects: number;
  nQueues: number;
  stats: PortStats;
  /** Packets received per rx queue (queues beyond 16 share the last). */
  rxq: number[];
}

/** What one PMD thread published. */
export interface BoardSnapshot {
  pmd: PmdStats;
  flows: number;
  /** Packets held while their upcall is in flight (the upcall queue depth). */
  pendingUpcalls: number;
  poolAvailable: number;
  poolCount: number;
  poolAllocFail: number;
  /** ms since epoch of the last publication (0: never). */
  publishedMs: number;
  ports: BoardPort[];
}

interface Layout {
  pmdReasons: string[];
  ports: { no: number; name: string; type: string; reasons: string[] }[];
}

export function newBoardBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(BOARD_BYTES);
}

/** What the writer needs of a port (the Port interface, plus the rxq counts the datapath keeps). */
export interface BoardPortSource {
  name: string;
  type: string;
  link: string;
  nQueues: number;
  stats: PortStats;
}

/** What the PMD thread publishes besides its counters. */
export interface BoardExtra {
  flows: number;
  pending: number;
  poolAvailable: number;
  poolCount: number;
  poolAllocFail: number;
  nowMs: number;
}

/** Writer side: lives in the PMD thread. */
export class StatsBoardWriter {
  private readonly hdr: Int32Array;
  private readonly v: Float64Array;
  private readonly layoutBytes: Uint8Array;
  private layout: Layout = { pmdReasons: [], ports: [] };
  private readonly lastLink = new Map<number, string>();
  private readonly linkChanges = new Map<number, number>();
  private readonly linkUps = new Map<number, number>();

  constructor(buf: SharedArrayBuffer) {
    this.hdr = new Int32Array(buf, 0, 4);
    this.v = new Float64Array(buf, HDR_BYTES, VALUES);
    this.layoutBytes = new Uint8Array(buf, HDR_BYTES + VALUES * 8, LAYOUT_BYTES);
  }

  /**
   * Copy the counters in. `ports` lists the ports this thread polls (port
   * number, port); `rxq(portNo, q)` gives per-queue rx counts.
   */
  publish(pmd: PmdStats, extra: BoardExtra, ports: ReadonlyArray<readonly [number, BoardPortSource]>, rxq: (portNo: number, q: number) => number): void {
    const counters = new Float64Array(PMD_FIELDS.length);
    for (let i = 0; i < PMD_FIELDS.length; i++) counters[i] = pmd[PMD_FIELDS[i]];
    this.publishCounters(counters, pmd.drops, extra, ports, rxq);
  }

  /**
   * {@link publish} from the datapath's counter array (indexed as PMD_STAT_FIELDS) and drop
   * reasons: what the PMD loop calls every board period, allocating nothing while the ports
   * and reasons stay the same (the loop reuses `extra`, `ports` and `rxq`).
   */
  publishCounters(
    counters: ArrayLike<number>,
    drops: Record<string, number>,
    extra: BoardExtra,
    ports: ReadonlyArray<readonly [number, BoardPortSource]>,
    rxq: (portNo: number, q: number) => number,
  ): void {
    // the layout first: does it still describe these ports and reasons?
    let changed = ports.length !== this.layout.ports.length;
    if (!changed) {
      for (let i = 0; i < ports.length; i++) {
        const lp = this.layout.ports[i];
        const [no, p] = ports[i];
        if (lp.no !== no || lp.name !== p.name || !sameKeys(p.stats.drops, lp.reasons)) {
          changed = true;
          break;
        }
      }
    }
    if (!changed && !sameKeys(drops, this.layout.pmdReasons)) changed = true;
    const hdr = this.hdr;
    Atomics.add(hdr, 0, 1); // odd: writing
    if (changed) this.writeLayout(drops, ports);
    const v = this.v;
    for (let i = 0; i < PMD_FIELDS.length; i++) v[i] = counters[i];
    v[PMD_FLOWS] = extra.flows;
    v[PMD_PENDING] = extra.pending;
    v[PMD_POOL_AVAIL] = extra.poolAvailable;
    v[PMD_POOL_COUNT] = extra.poolCount;
    v[PMD_POOL_FAIL] = extra.poolAllocFail;
    v[PMD_PUBLISHED_MS] = extra.nowMs;
    const pr = this.layout.pmdReasons;
    for (let i = 0; i < pr.length; i++) v[PMD_SLOTS + i] = drops[pr[i]] ?? 0;
    const n = Math.min(ports.length, BOARD_MAX_PORTS);
    for (let i = 0; i < n; i++) {
      const [no, p] = ports[i];
      const base = PMD_SLOTS + PMD_REASONS + i * PORT_SLOTS;
      const s = p.stats;
      for (let k = 0; k < PORT_FIELDS.length; k++) v[base + k] = s[PORT_FIELDS[k]];
      const was = this.lastLink.get(no);
      if (was !== p.link) {
        if (was !== undefined) this.linkChanges.set(no, (this.linkChanges.get(no) ?? 0) + 1);
        if (p.link === 'up') this.linkUps.set(no, (this.linkUps.get(no) ?? 0) + 1);
        this.lastLink.set(no, p.link);
      }
      v[base + P_LINK] = p.link === 'up' ? 1 : 0;
      v[base + P_LINK_CHANGES] = this.linkChanges.get(no) ?? 0;
      v[base + P_LINK_UPS] = this.linkUps.get(no) ?? 0;
      v[base + P_NQ] = p.nQueues;
      const reasons = this.layout.ports[i].reasons;
      for (let r = 0; r < reasons.length; r++) v[base + PORT_FIXED + r] = s.drops[reasons[r]] ?? 0;
      const nq = Math.min(p.nQueues, PORT_RXQS);
      for (let q = 0; q < nq; q++) v[base + PORT_FIXED + PORT_REASONS + q] = rxq(no, q);
    }
    Atomics.add(hdr, 0, 1); // even: done
  }

  private writeLayout(pmdDrops: Record<string, number>, ports: ReadonlyArray<readonly [number, BoardPortSource]>): void {
    const live = new Set(ports.map(([no]) => no));
    for (const no of [...this.lastLink.keys()]) {
      if (!live.has(no)) {
        this.lastLink.delete(no);
        this.linkChanges.delete(no);
        this.linkUps.delete(no);
      }
    }
    this.layout = {
      pmdReasons: Object.keys(pmdDrops).slice(0, PMD_REASONS),
      ports: ports.slice(0, BOARD_MAX_PORTS).map(([no, p]) => ({ no, name: p.name, type: p.type, reasons: Object.keys(p.stats.drops).slice(0, PORT_REASONS) })),
    };
    let bytes = new TextEncoder().encode(JSON.stringify(this.layout));
    if (bytes.length > LAYOUT_BYTES) bytes = new TextEncoder().encode(JSON.stringify({ pmdReasons: this.layout.pmdReasons, ports: [] }));
    this.layoutBytes.set(bytes);
    this.hdr[2] = bytes.length;
    this.hdr[1]++;
  }
}

/** True when obj's own keys are exactly `keys` in order (no allocation). */
function sameKeys(obj: Record<string, number>, keys: string[]): boolean {
  let i = 0;
  for (const k in obj) {
    if (i >= keys.length || keys[i] !== k) return false;
    i++;
  }
  return i === keys.length;
}

/** Reader side: any thread holding the buffer. */
export class StatsBoardReader {
  private readonly hdr: Int32Array;
  private readonly v: Float64Array;
  private readonly layoutBytes: Uint8Array;
  private gen = -1;
  private layout: Layout = { pmdReasons: [], ports: [] };
  /** The last consistent copy, and the buffer the next attempt copies into. */
  private good = new Float64Array(VALUES);
  private scratch = new Float64Array(VALUES);

  constructor(buf: SharedArrayBuffer) {
    this.hdr = new Int32Array(buf, 0, 4);
    this.v = new Float64Array(buf, HDR_BYTES, VALUES);
    this.layoutBytes = new Uint8Array(buf, HDR_BYTES + VALUES * 8, LAYOUT_BYTES);
  }

  /**
   * A consistent copy of the board: retries while the writer is mid-update;
   * if it never finds a quiet moment (a writer that died mid-update), the last
   * consistent copy is shown again.
   */
  read(): BoardSnapshot {
    for (let attempt = 0; attempt < 10000; attempt++) {
      const s1 = Atomics.load(this.hdr, 0);
      if ((s1 & 1) !== 0) continue;
      const gen = this.hdr[1];
      let layout = this.layout;
      if (gen !== this.gen) {
        const len = this.hdr[2];
        const text = new TextDecoder().decode(this.layoutBytes.slice(0, len));
        try {
          layout = JSON.parse(text) as Layout;
        } catch {
          layout = { pmdReasons: [], ports: [] };
        }
      }
      // only the slots of the ports the layout lists
      const used = PMD_SLOTS + PMD_REASONS + Math.min(layout.ports.length, BOARD_MAX_PORTS) * PORT_SLOTS;
      this.scratch.set(used === VALUES ? this.v : this.v.subarray(0, used));
      if (Atomics.load(this.hdr, 0) === s1) {
        const t = this.good;
        this.good = this.scratch;
        this.scratch = t;
        this.gen = gen;
        this.layout = layout;
        break;
      }
    }
    const layout = this.layout;
    const v = this.good;
    const pmd = { drops: {} } as PmdStats;
    for (let i = 0; i < PMD_FIELDS.length; i++) pmd[PMD_FIELDS[i]] = v[i];
    layout.pmdReasons.forEach((r, i) => (pmd.drops[r] = v[PMD_SLOTS + i]));
    const ports: BoardPort[] = layout.ports.map((lp, i) => {
      const base = PMD_SLOTS + PMD_REASONS + i * PORT_SLOTS;
      const stats = { drops: {} } as PortStats;
      PORT_FIELDS.forEach((f, k) => (stats[f] = v[base + k]));
      lp.reasons.forEach((r, k) => (stats.drops[r] = v[base + PORT_FIXED + k]));
      const nQueues = v[base + P_NQ];
      const rxq: number[] = [];
      for (let q = 0; q < Math.min(nQueues, PORT_RXQS); q++) rxq.push(v[base + PORT_FIXED + PORT_REASONS + q]);
      return {
        portNo: lp.no, name: lp.name, type: lp.type, link: v[base + P_LINK] === 1 ? 'up' : 'down',
        linkChanges: v[base + P_LINK_CHANGES], reconnects: Math.max(0, v[base + P_LINK_UPS] - 1), nQueues, stats, rxq,
      };
    });
    return {
      pmd, flows: v[PMD_FLOWS], pendingUpcalls: v[PMD_PENDING], poolAvailable: v[PMD_POOL_AVAIL], poolCount: v[PMD_POOL_COUNT],
      poolAllocFail: v[PMD_POOL_FAIL], publishedMs: v[PMD_PUBLISHED_MS], ports,
    };
  }
}
