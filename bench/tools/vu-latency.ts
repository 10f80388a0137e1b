/**
 * Round-trip latency through a switch's vhost-user path, measured on the
 * tsvs library: one process, one thread, two of our virtio-user ports (A, B)
 * connected to the switch's two vhost-user sockets (rules 1->2, 2->1).
 *
 *   A --probe--> switch --> B (swap MACs, send back) --> switch --> A
 *
 * Port A sends UDP/IPv4 probe frames (payload: magic, seq, send time from
 * performance.now()); B echoes every frame it receives; A takes the time when
 * a probe comes back. One round trip = two switch traversals plus this tool's
 * polling (A's tx, B's rx+tx, A's rx) on its own CPU. Busy-polling loop, no
 * allocation per packet.
 *
 * Load levels (same probe policy in both: one probe in flight, the next one
 * `gap` µs after the reply, or after `timeout` ms without one):
 *   idle    probes only
 *   medium  plus a background stream A->B of `rate` Mpps (64 B frames by
 *           default), paced by the clock and echoed by B like the probes, so
 *           the switch forwards `rate` Mpps in each direction; only probes
 *           are timed
 * Each level: warm-up (excluded), measured window, then a drain (nothing
 * sent, polling continues) so that every probe of the window is either
 * answered (timed, however late) or counted lost.
 *
 *   node dist/bench/tools/vu-latency.js --a SOCK1 --b SOCK2 [--load idle,medium]
 *     [--seconds 2] [--warmup 1] [--gap-us 20] [--rate-mpps 0.5] [--size 64] [--timeout-ms 5]
 *
 * performance.now() allocates (about 80 MB/s at this loop's rate): run node
 * with --max-semi-space-size=64 --min-semi-space-size=64 (bench/latency.ts
 * does) so that young-generation GC pauses (~0.3 ms) stay out of the window.
 *
 * Prints one line per level: `VU-LATENCY {"load":..,"median_us":..,"p99_us":..,...}`
 * (see vu-latency-lib.ts); diagnostics go to stderr.
 */
import { parseArgs } from 'node:util';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { BURST } from '../../src/port/port.js';
import type { Mempool } from '../../src/mem/mempool.js';
import {
  BG_MAGIC,
  LOAD_LEVELS,
  MIN_PROBE_FRAME,
  OFF_MAGIC,
  OFF_SEQ,
  OFF_TS,
  PROBE_MAGIC,
  formatResult,
  probeTemplate,
  summarizeRtts,
  type LoadLevel,
  type VuLatencyResult,
} from './vu-latency-lib.js';

const MAC_A = '02:00:00:00:00:0a';
const MAC_B = '02:00:00:00:00:0b';
/** Probes in flight tracked by seq & TABLE_MASK (one in flight at a time: plenty). */
const TABLE = 1 << 16;
const TABLE_MASK = TABLE - 1;
const DRAIN_MS = 100;
/** A loop iteration longer than this means the tool itself was descheduled or paused (GC). */
const STALL_MS = 0.02;

interface Options {
  a: string;
  b: string;
  loads: LoadLevel[];
  seconds: number;
  warmup: number;
  gapUs: number;
  rateMpps: number;
  size: number;
  timeoutMs: number;
  readyMs: number;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      a: { type: 'string' },
      b: { type: 'string' },
      load: { type: 'string', default: 'idle,medium' },
      seconds: { type: 'string', default: '2' },
      warmup: { type: 'string', default: '1' },
      'gap-us': { type: 'string', default: '20' },
      'rate-mpps': { type: 'string', default: '0.5' },
      size: { type: 'string', default: '64' },
      'timeout-ms': { type: 'string', default: '5' },
      'ready-ms': { type: 'string', default: '30000' },
    },
  });
  if (!values.a || !values.b) throw new Error('usage: vu-latency.js --a SOCK1 --b SOCK2 [--load idle,medium] [--seconds S] [--warmup S] [--gap-us US] [--rate-mpps R] [--size B] [--timeout-ms MS]');
  const num = (v: string, name: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number in ${min}..${max}, got '${v}'`);
    return n;
  };
  const loads = values.load.split(',').filter(Boolean) as LoadLevel[];
  for (const l of loads) if (!LOAD_LEVELS.includes(l)) throw new Error(`--load: unknown level '${l}' (one of ${LOAD_LEVELS.join(', ')})`);
  return {
    a: values.a,
    b: values.b,
    loads,
    seconds: num(values.seconds, 'seconds', 0.05, 600),
    warmup: num(values.warmup, 'warmup', 0, 60),
    gapUs: num(values['gap-us'], 'gap-us', 0, 1e6),
    rateMpps: num(values['rate-mpps'], 'rate-mpps', 0, 20),
    size: num(values.size, 'size', Math.max(60, MIN_PROBE_FRAME), 1518),
    timeoutMs: num(values['timeout-ms'], 'timeout-ms', 0.1, 10000),
    readyMs: num(values['ready-ms'], 'ready-ms', 100, 600000),
  };
}

/** Counters of one window; all reset by begin(). */
class Window {
  probesSent = 0;
  probesBack = 0;
  nRtt = 0;
  bgSent = 0;
  bgBack = 0;
  txRefused = 0;
  bad = 0;
  pacingResets = 0;
  /** Loop iterations that took longer than STALL_MS (this process was not running), and their total time. */
  stalls = 0;
  stallMs = 0;
  /** Probes of the window that came back but whose round trip a stall of the tool overlapped: not timed. */
  tainted = 0;
}

class LatencyLoop {
  private readonly bufs = new Int32Array(BURST);
  private readonly one = new Int32Array(1);
  private readonly tmpl: Uint8Array;
  private readonly dvA: DataView;
  /** Probe send time (ms) by seq & TABLE_MASK; tSeq holds the seq (-1: free), tRec 1 if it belongs to the measured window. */
  private readonly tSend = new Float64Array(TABLE);
  private readonly tSeq = new Int32Array(TABLE).fill(-1);
  private readonly tRec = new Uint8Array(TABLE);
  /** 1: a stall of the tool overlapped this probe's round trip (its time is the tool's, not the switch's). */
  private readonly tTaint = new Uint8Array(TABLE);
  /** Index in rtts of the round trip recorded in the current loop iteration (-1: none). */
  private lastRtt = -1;
  readonly rtts: Float64Array;
  private seq = 0;
  private bgSeq = 0;
  w = new Window();
  /** Probes of the measured window that came back (also during the drain). */
  recBack = 0;

  constructor(
    private readonly A: VirtioUserPort,
    private readonly B: VirtioUserPort,
    private readonly o: Options,
  ) {
    this.tmpl = probeTemplate(o.size, A.mac, B.mac);
    this.dvA = new DataView(A.pool.data.buffer, A.pool.data.byteOffset, A.pool.data.byteLength);
    // one probe per (gap + a round trip of at least ~2 µs), for the longest window
    const maxProbes = Math.ceil((o.seconds * 1e6) / (o.gapUs + 2)) + 16;
    this.rtts = new Float64Array(Math.min(maxProbes, 1 << 24));
  }

  /** Fill a fresh buffer of A's pool with a frame of `magic`/`seq`; -1 if the pool is empty. */
  private frame(magic: number, seq: number, ts: number): number {
    const pool: Mempool = this.A.pool;
    const h = pool.allocOne();
    if (h < 0) return -1;
    const off = pool.dataOffset(h);
    pool.data.set(this.tmpl, off);
    const dv = this.dvA;
    dv.setUint32(off + OFF_MAGIC, magic);
    dv.setUint32(off + OFF_SEQ, seq >>> 0);
    dv.setFloat64(off + OFF_TS, ts);
    pool.dataLen[h] = this.tmpl.length;
    pool.pktLen[h] = this.tmpl.length;
    return h;
  }

  /** B: echo everything back with the MAC addresses swapped. */
  private echo(): void {
    const B = this.B;
    const bufs = this.bufs;
    const n = B.rxBurst(0, bufs, BURST);
    if (n === 0) return;
    const pool = B.pool;
    const d = pool.data;
    for (let i = 0; i < n; i++) {
      const o = pool.dataOffset(bufs[i]);
      for (let k = 0; k < 6; k++) {
        const t = d[o + k];
        d[o + k] = d[o + 6 + k];
        d[o + 6 + k] = t;
      }
    }
    const s = B.txBurst(0, bufs, n);
    if (s < n) {
      this.w.txRefused += n - s;
      pool.free(bufs, n - s, s);
    }
  }

  /** A: take frames back; returns true if the outstanding probe `want` came back. */
  private receive(want: number, record: boolean): boolean {
    const A = this.A;
    const bufs = this.bufs;
    const n = A.rxBurst(0, bufs, BURST);
    if (n === 0) return false;
    const now = performance.now();
    const pool = A.pool;
    const dv = this.dvA;
    const w = this.w;
    let got = false;
    for (let i = 0; i < n; i++) {
      const h = bufs[i];
      const off = pool.dataOffset(h);
      if (pool.dataLen[h] < MIN_PROBE_FRAME) {
        w.bad++;
        continue;
      }
      const magic = dv.getUint32(off + OFF_MAGIC);
      if (magic === BG_MAGIC) {
        w.bgBack++;
        continue;
      }
      if (magic !== PROBE_MAGIC) {
        w.bad++;
        continue;
      }
      const seq = dv.getUint32(off + OFF_SEQ) | 0;
      const slot = seq & TABLE_MASK;
      const ts = dv.getFloat64(off + OFF_TS);
      if (this.tSeq[slot] !== seq || this.tSend[slot] !== ts) {
        // a duplicate, a probe of an old table generation, or a corrupted one
        w.bad++;
        continue;
      }
      this.tSeq[slot] = -1;
      if (seq === want) got = true;
      if (this.tRec[slot] === 1) {
        this.recBack++;
        if (this.tTaint[slot] === 1) w.tainted++;
        else if (record && w.nRtt < this.rtts.length) {
          this.lastRtt = w.nRtt;
          this.rtts[w.nRtt++] = (now - ts) * 1000;
        }
      }
      w.probesBack++;
    }
    pool.free(bufs, n);
    return got;
  }

  /**
   * Run one level for `ms`: probes (and background when `rateMpps` > 0).
   * `record`: the window is measured (probes marked, RTTs kept).
   */
  run(ms: number, rateMpps: number, record: boolean): void {
    const A = this.A;
    const bufs = this.bufs;
    const one = this.one;
    const gapMs = this.o.gapUs / 1000;
    const timeoutMs = this.o.timeoutMs;
    const perMs = rateMpps * 1000;
    const w = this.w;
    const t0 = performance.now();
    const end = t0 + ms;
    let pace0 = t0;
    let bgDone = 0;
    let want = -1; // seq of the outstanding probe
    let deadline = 0;
    let nextProbe = t0;
    let last = t0;
    for (;;) {
      const now = performance.now();
      if (now - last > STALL_MS) {
        w.stalls++;
        w.stallMs += now - last;
        // the probe in flight, and one timed in the stalled iteration, waited for the tool: not timed
        if (want >= 0) this.tTaint[want & TABLE_MASK] = 1;
        if (this.lastRtt >= 0 && this.lastRtt === w.nRtt - 1) {
          w.nRtt--;
          w.tainted++;
        }
      }
      this.lastRtt = -1;
      last = now;
      if (now >= end) break;
      this.echo();
      if (this.receive(want, record) && want >= 0) {
        want = -1;
        nextProbe = performance.now() + gapMs;
      }
      if (want >= 0 && now > deadline) {
        // no reply in time: unblock the sequence; the probe still counts if it comes back
        want = -1;
        nextProbe = now;
      }
      if (want < 0 && now >= nextProbe) {
        const seq = this.seq;
        const slot = seq & TABLE_MASK;
        const ts = performance.now();
        const h = this.frame(PROBE_MAGIC, seq, ts);
        if (h >= 0) {
          this.tSeq[slot] = seq;
          this.tSend[slot] = ts;
          this.tRec[slot] = record ? 1 : 0;
          this.tTaint[slot] = 0;
          one[0] = h;
          if (A.txBurst(0, one, 1) === 1) {
            this.seq = (seq + 1) & 0x7fffffff;
            want = seq;
            deadline = ts + timeoutMs;
            w.probesSent++;
          } else {
            this.tSeq[slot] = -1;
            A.pool.freeOne(h);
            w.txRefused++;
          }
        }
      }
      if (perMs > 0) {
        let due = Math.floor((now - pace0) * perMs) - bgDone;
        if (due > 4 * BURST) {
          // we fell behind (a stall of this process): do not catch up with a burst
          pace0 = now;
          bgDone = 0;
          due = 0;
          w.pacingResets++;
        }
        if (due > 0) {
          const k = due < BURST ? due : BURST;
          let m = 0;
          for (; m < k; m++) {
            const h = this.frame(BG_MAGIC, this.bgSeq, now);
            if (h < 0) break;
            this.bgSeq = (this.bgSeq + 1) | 0;
            bufs[m] = h;
          }
          const s = m > 0 ? A.txBurst(0, bufs, m) : 0;
          if (s < m) {
            w.txRefused += m - s;
            A.pool.free(bufs, m - s, s);
          }
          bgDone += k;
          w.bgSent += s;
        }
      }
    }
  }

  /** Poll without sending for `ms`: what is still on its way comes back (or is lost). */
  drain(ms: number, record: boolean): void {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      this.echo();
      this.receive(-1, record);
    }
  }

  /** Until a probe makes it through both ways (the backend may need seconds after connecting). */
  async waitReady(ms: number): Promise<void> {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      this.w = new Window();
      this.run(20, 0, false);
      if (this.w.probesBack > 0) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no probe came back through the switch within ${ms} ms (A ${this.A.status}, B ${this.B.status})`);
  }

  /** Clear the probe table (between windows: stale probes become 'bad', not timed). */
  reset(): void {
    this.tSeq.fill(-1);
    this.tRec.fill(0);
    this.tTaint.fill(0);
    this.lastRtt = -1;
    this.recBack = 0;
    this.w = new Window();
  }
}

async function main(): Promise<void> {
  const o = options();
  const quiet = { log: () => {} };
  const A = new VirtioUserPort({ name: 'lat-a', path: o.a, mac: MAC_A, logger: quiet });
  const B = new VirtioUserPort({ name: 'lat-b', path: o.b, mac: MAC_B, logger: quiet });
  try {
    await Promise.all([A.waitUp(o.readyMs), B.waitUp(o.readyMs)]);
    const L = new LatencyLoop(A, B, o);
    await L.waitReady(o.readyMs);
    for (const load of o.loads) {
      const rate = load === 'medium' ? o.rateMpps : 0;
      // warm-up (JIT, switch caches, first touch of the rings), then let stragglers drain
      L.reset();
      L.run(o.warmup * 1000, rate, false);
      L.drain(DRAIN_MS, false);
      await new Promise((r) => setImmediate(r));
      L.reset();
      const t0 = performance.now();
      L.run(o.seconds * 1000, rate, true);
      const secs = (performance.now() - t0) / 1000;
      const bgBackWindow = L.w.bgBack;
      L.drain(DRAIN_MS, true);
      const w = L.w;
      const s = summarizeRtts(L.rtts, w.nRtt);
      const r: VuLatencyResult = {
        load,
        median_us: s.median,
        p99_us: s.p99,
        p999_us: s.p999,
        max_us: s.max,
        probes: w.probesSent,
        lost: w.probesSent - L.recBack,
        rate_mpps: bgBackWindow / secs / 1e6,
        target_mpps: rate,
        bg_sent: w.bgSent,
        bg_lost: Math.max(0, w.bgSent - w.bgBack),
        tx_refused: w.txRefused,
        bad: w.bad,
        tool_stalls: w.stalls,
        tool_stall_ms: w.stallMs,
        tainted: w.tainted,
        pacing_resets: w.pacingResets,
        seconds: secs,
      };
      if (w.nRtt < L.recBack) process.stderr.write(`vu-latency: RTT buffer full, ${L.recBack - w.nRtt} replies not timed\n`);
      process.stdout.write(formatResult(r) + '\n');
    }
    const drops = { ...A.stats.drops, ...B.stats.drops };
    if (Object.keys(drops).length) process.stderr.write(`vu-latency: port drops ${JSON.stringify(drops)}\n`);
  } finally {
    A.close();
    B.close();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`vu-latency: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
