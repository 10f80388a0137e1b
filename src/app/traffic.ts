/**
 * Test traffic shared by testpmd and the demo: UDP/IPv4 frames carrying a
 * magic word, a sequence number and a checksum, so the receiver can tell
 * intact frames from corrupted ones. Generation and checking allocate nothing.
 */
import type { Mempool } from '../mem/mempool.js';
import type { Port } from '../port/port.js';
import { checksumFold, ipv4HeaderChecksum } from '../util/net.js';

export const MAGIC = 0x54535653; // 'TSVS'
/** Offset of our payload (after Ethernet 14 + IPv4 20 + UDP 8). */
const PAY = 42;
export const MIN_FRAME = 60;

export class TrafficGen {
  readonly size: number;
  readonly flows: number;
  /** The frame with seq 0 (flows > 1: flow 0; IPv4 checksum filled in). */
  private readonly template: Uint8Array;
  /** Template as 32-bit words (the whole words of it), for short frames. */
  private readonly t32: Int32Array;
  /** flows > 1: the IPv4 header's one's-complement sum without the varying source address word. */
  private readonly ipSum: number;
  /** pool.data of the last fill and views of it. */
  private cData: Uint8Array | null = null;
  private cDv: DataView = new DataView(new ArrayBuffer(0));
  private cD32: Int32Array | null = null;
  seq = 0;

  constructor(opts: { size: number; flows?: number; src?: number[]; dst?: number[] }) {
    if (!(opts.size >= MIN_FRAME && opts.size <= 9018)) throw new RangeError(`frame size must be in ${MIN_FRAME}..9018, got ${opts.size}`);
    this.size = opts.size;
    this.flows = Math.max(1, opts.flows ?? 1);
    const t = new Uint8Array(opts.size);
    t.set(opts.dst ?? [0x02, 0, 0, 0, 0, 0x02], 0);
    t.set(opts.src ?? [0x02, 0, 0, 0, 0, 0x01], 6);
    t[12] = 0x08;
    t[13] = 0x00;
    const ipLen = opts.size - 14;
    t.set([0x45, 0, ipLen >> 8, ipLen & 0xff, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 1, 1], 14);
    const udpLen = ipLen - 20;
    t.set([0x04, 0x00, 0x04, 0x01, udpLen >> 8, udpLen & 0xff, 0, 0], 34);
    for (let i = PAY + 12; i < opts.size; i++) t[i] = i & 0xff;
    writeU32(t, PAY, MAGIC);
    let sum = 0;
    for (let i = 0; i < 20; i += 2) if (i !== 10 && i !== 14) sum += (t[14 + i] << 8) | t[14 + i + 1];
    this.ipSum = sum; // bytes 28-29 (source address, low word) vary with the flow
    ipv4HeaderChecksum(t, 14);
    this.template = t;
    this.t32 = new Int32Array(t.buffer, 0, opts.size >> 2);
  }

  private bind(d: Uint8Array): void {
    this.cData = d;
    this.cDv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    this.cD32 = (d.byteOffset & 3) === 0 ? new Int32Array(d.buffer, d.byteOffset, d.byteLength >> 2) : null;
  }

  /** Write the next frame into pool buffer h. */
  fill(pool: Mempool, h: number): void {
    const d = pool.data;
    if (d !== this.cData) this.bind(d);
    const off = pool.dataOffset(h);
    const size = this.size;
    const d32 = this.cD32;
    if (size <= 256 && d32 !== null && (off & 3) === 0) {
      // short frames: 64-byte blocks of unrolled word stores (V8 runs a word loop ~3x slower, TypedArray.set ~6x)
      const t32 = this.t32;
      const w = off >> 2;
      const nw = t32.length;
      let i = 0;
      for (; i + 16 <= nw; i += 16) copy16(d32, w + i, t32, i);
      for (; i < nw; i++) d32[w + i] = t32[i];
      const t = this.template;
      for (let b = nw << 2; b < size; b++) d[off + b] = t[b];
    } else {
      d.set(this.template, off);
    }
    this.stamp(d, off);
    pool.dataLen[h] = size;
    pool.pktLen[h] = size;
  }

  /**
   * Turn pool buffer h, which holds an earlier frame of this generator at the
   * same offset (fill() wrote it and nothing has written the buffer since),
   * into the next frame: only the words that differ between frames are written.
   */
  refill(pool: Mempool, h: number): void {
    const d = pool.data;
    if (d !== this.cData) this.bind(d);
    this.stamp(d, pool.dataOffset(h));
  }

  /** Sequence number, check word and (flows > 1) the flow's fields of the frame at off. */
  private stamp(d: Uint8Array, off: number): void {
    const seq = this.seq++;
    if (this.flows > 1) {
      const f = seq % this.flows;
      // vary source IP (last two bytes) and UDP source port
      d[off + 28] = (f >> 8) & 0xff;
      d[off + 29] = f & 0xff;
      d[off + 34] = 0x04 + ((f >> 16) & 0x3f);
      d[off + 35] = f & 0xff;
      const s = checksumFold(this.ipSum + (f & 0xffff));
      d[off + 24] = s >> 8;
      d[off + 25] = s & 0xff;
    }
    const dv = this.cDv;
    dv.setUint32(off + PAY + 4, seq >>> 0);
    dv.setUint32(off + PAY + 8, (MAGIC ^ seq ^ this.size) >>> 0);
  }
}

/**
 * txonly on one port queue: up to `burst` frames are filled and offered per
 * step; the ones the port refuses stay filled and go first next time (no
 * refill work wasted, nothing allocated).
 *
 * With `keep` > 0 the stream keeps a set of that many buffers of its own
 * (taken from the pool on the first step) and sends them round-robin, like
 * a hardware generator replaying its frames: it holds one reference on each
 * (refcnt 1 = idle with us), offering one takes a second, and the port's
 * free after transmission drops it back to 1 instead of returning the buffer
 * to the pool. Nobody else can own or write an idle buffer, so only the
 * sequence/check words change between sends: no allocation, no free to the
 * pool, no template copy (for long frames this is most of the cost: the
 * receiving CPU's cached copy of the payload stays valid). A buffer whose
 * layout was changed by a port is filled again in full. When none of the
 * kept buffers is idle and nothing is pending, frames come from the pool as
 * usual, so the port always gets a call that lets it reclaim.
 */
export class TxStream {
  readonly pool: Mempool;
  readonly gen: TrafficGen;
  readonly burst: number;
  /** Filled frames not yet taken by the port. */
  readonly pend: Int32Array;
  pendN = 0;
  private readonly fresh: Int32Array;
  /** Frames the port refused and that were offered again (sum over steps). */
  retried = 0;
  /** Buffers to keep (0: allocate every frame). */
  readonly keep: number;
  /** The kept buffers (null until the first step; empty when the pool could not spare them). */
  private kept: Int32Array | null = null;
  private keptN = 0;
  private pos = 0;

  constructor(pool: Mempool, gen: TrafficGen, burst: number, keep = 0) {
    this.pool = pool;
    this.gen = gen;
    this.burst = Math.max(1, Math.min(burst | 0, 256));
    this.pend = new Int32Array(this.burst);
    this.fresh = new Int32Array(this.burst);
    this.keep = Math.max(0, keep | 0);
  }

  /** Take the kept buffers from the pool and fill them (the first step). */
  private takeKept(): void {
    const want = this.keep;
    const kept = new Int32Array(want);
    const got = this.pool.alloc(kept, want);
    if (got < 2 * this.burst) {
      // too few to be worth it: allocate per frame
      if (got > 0) this.pool.free(kept, got);
      this.kept = new Int32Array(0);
      this.keptN = 0;
      return;
    }
    for (let i = 0; i < got; i++) this.fillKept(kept[i]);
    this.kept = kept;
    this.keptN = got;
  }

  private fillKept(h: number): void {
    const pool = this.pool;
    pool.dataOff[h] = pool.headroom;
    pool.next[h] = -1;
    this.gen.fill(pool, h);
  }

  /** Fill up to a burst and offer it to port queue q; returns the number the port took. */
  step(port: Port, q: number): number {
    const pend = this.pend;
    let k = this.pendN;
    const burst = this.burst;
    if (k < burst && this.keep > 0) {
      if (this.kept === null) this.takeKept();
      if (this.keptN > 0) k = this.stepKept(k);
    }
    if (k === 0) {
      const pool = this.pool;
      const fresh = this.fresh;
      const got = pool.alloc(fresh, burst);
      const gen = this.gen;
      for (let j = 0; j < got; j++) {
        const h = fresh[j];
        gen.fill(pool, h);
        pend[j] = h;
      }
      k = got;
    } else if (k < burst && this.keep === 0) {
      const pool = this.pool;
      const fresh = this.fresh;
      const got = pool.alloc(fresh, burst - k);
      const gen = this.gen;
      for (let j = 0; j < got; j++) {
        const h = fresh[j];
        gen.fill(pool, h);
        pend[k + j] = h;
      }
      k += got;
    }
    const sent = port.txBurst(q, pend, k);
    if (sent > 0 && sent < k) pend.copyWithin(0, sent, k);
    this.pendN = k - sent;
    this.retried += k - sent;
    return sent;
  }

  /** Add idle kept buffers to pend[k..burst), round-robin; returns the new count. */
  private stepKept(k: number): number {
    const pool = this.pool;
    const refcnt = pool.refcnt;
    const dataOff = pool.dataOff;
    const dataLen = pool.dataLen;
    const next = pool.next;
    const headroom = pool.headroom;
    const size = this.gen.size;
    const gen = this.gen;
    const kept = this.kept as Int32Array;
    const n = this.keptN;
    const pend = this.pend;
    const burst = this.burst;
    let pos = this.pos;
    // look a little past busy buffers (a port may complete out of order), not around the whole set
    let look = 2 * burst;
    while (k < burst && look-- > 0) {
      const h = kept[pos];
      if (++pos === n) pos = 0;
      if (refcnt[h] !== 1) continue; // still with a port
      if (dataOff[h] !== headroom || dataLen[h] !== size || next[h] !== -1) this.fillKept(h);
      else gen.refill(pool, h);
      refcnt[h] = 2;
      pend[k++] = h;
    }
    this.pos = pos;
    return k;
  }

  /** Give the pending frames back (to the pool, or kept buffers back to idle); returns how many there were. */
  discard(): number {
    const n = this.pendN;
    if (n > 0) this.pool.free(this.pend, n);
    this.pendN = 0;
    return n;
  }

  /**
   * discard(), then return the idle kept buffers to the pool. Kept buffers a
   * port still holds stay out of the pool (call after the ports have released
   * them, e.g. after closing them).
   */
  close(): void {
    this.discard();
    const kept = this.kept;
    if (kept !== null) {
      const refcnt = this.pool.refcnt;
      let j = 0;
      for (let i = 0; i < this.keptN; i++) if (refcnt[kept[i]] === 1) kept[j++] = kept[i];
      if (j > 0) this.pool.free(kept, j);
    }
    this.kept = new Int32Array(0);
    this.keptN = 0;
  }
}

export const CHECK_OK = 0;
export const CHECK_FOREIGN = 1;
export const CHECK_BAD = 2;

/** Check a received frame: ours and intact, not ours, or ours but damaged. */
export function checkFrame(d: Uint8Array, off: number, len: number): number {
  if (len < PAY + 12) return CHECK_FOREIGN;
  if (readU32(d, off + PAY) !== MAGIC) return CHECK_FOREIGN;
  const seq = readU32(d, off + PAY + 4);
  if (readU32(d, off + PAY + 8) !== ((MAGIC ^ seq ^ len) >>> 0)) return CHECK_BAD;
  for (let i = PAY + 12; i < len; i++) if (d[off + i] !== (i & 0xff)) return CHECK_BAD;
  return CHECK_OK;
}

export function frameSeq(d: Uint8Array, off: number): number {
  return readU32(d, off + PAY + 4);
}

/** 16 words d[w..w+16) = t[i..i+16). */
function copy16(d: Int32Array, w: number, t: Int32Array, i: number): void {
  d[w] = t[i];
  d[w + 1] = t[i + 1];
  d[w + 2] = t[i + 2];
  d[w + 3] = t[i + 3];
  d[w + 4] = t[i + 4];
  d[w + 5] = t[i + 5];
  d[w + 6] = t[i + 6];
  d[w + 7] = t[i + 7];
  d[w + 8] = t[i + 8];
  d[w + 9] = t[i + 9];
  d[w + 10] = t[i + 10];
  d[w + 11] = t[i + 11];
  d[w + 12] = t[i + 12];
  d[w + 13] = t[i + 13];
  d[w + 14] = t[i + 14];
  d[w + 15] = t[i + 15];
}

function writeU32(d: Uint8Array, o: number, v: number): void {
  d[o] = v >>> 24;
  d[o + 1] = (v >>> 16) & 0xff;
  d[o + 2] = (v >>> 8) & 0xff;
  d[o + 3] = v & 0xff;
}

function readU32(d: Uint8Array, o: number): number {
  return ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
}


/** Swap source and destination MAC in place. */
export function macSwap(d: Uint8Array, off: number): void {
  for (let i = 0; i < 6; i++) {
    const t = d[off + i];
    d[off + i] = d[off + 6 + i];
    d[off + 6 + i] = t;
  }
}
