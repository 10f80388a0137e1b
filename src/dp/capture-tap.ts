/**
 * Packet capture taps: copies (never steals) the frames of one port into a
 * bounded ring in shared memory, for `tsvs capture`. The PMD thread that
 * polls the port writes; the main thread reads. A full ring drops the copy
 * and counts it (overflow); the PMD never waits. With no tap the datapath
 * pays one null check per burst.
 *
 * Ring layout (SharedArrayBuffer): Int32 header [0] head (slots written),
 * [1] tail (slots read), [2] overflow, [3] slots, [4] snaplen, [5] frames
 * seen; then `slots` slots of SLOT_HDR + snaplen bytes:
 * Float64 timestamp (ms since epoch), Int32 original length, Int32
 * captured length | direction << 24 (1 rx, 2 tx), then the frame.
 */
import type { Mempool } from '../mem/mempool.js';
import { copyWords } from '../mem/copy.js';

export const DIR_RX = 1;
export const DIR_TX = 2;
const HDR_BYTES = 32;
const SLOT_HDR = 16;

export interface CaptureRingInfo {
  buf: SharedArrayBuffer;
  slots: number;
  snaplen: number;
}

export function newCaptureRing(slots: number, snaplen: number): CaptureRingInfo {
  if (!Number.isInteger(slots) || slots < 1 || slots > 1 << 16) throw new RangeError(`capture ring slots ${slots} must be 1..65536`);
  snaplen = Math.max(64, Math.min(65528, (snaplen + 7) & ~7));
  const buf = new SharedArrayBuffer(HDR_BYTES + slots * (SLOT_HDR + snaplen));
  const h = new Int32Array(buf, 0, 8);
  h[3] = slots;
  h[4] = snaplen;
  return { buf, slots, snaplen };
}

/** The writer: one per capture, in the PMD thread that polls the port. */
export class CaptureTap {
  readonly id: number;
  readonly portNo: number;
  /** DIR_RX | DIR_TX. */
  readonly dirs: number;
  private readonly hdr: Int32Array;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly f64: Float64Array;
  private readonly slots: number;
  private readonly snaplen: number;
  private readonly stride: number;
  private head: number;

  constructor(id: number, portNo: number, dirs: number, buf: SharedArrayBuffer) {
    this.id = id;
    this.portNo = portNo;
    this.dirs = dirs;
    this.hdr = new Int32Array(buf, 0, 8);
    this.slots = this.hdr[3];
    this.snaplen = this.hdr[4];
    this.stride = SLOT_HDR + this.snaplen;
    this.words = new Int32Array(buf);
    this.bytes = new Uint8Array(buf);
    this.f64 = new Float64Array(buf);
    this.head = Atomics.load(this.hdr, 0);
  }

  /** Copy handles[0..n) (frames of this tap's port going in direction dir). */
  copy(pool: Mempool, words: Int32Array | null, handles: Int32Array, n: number, dir: number, nowMs: number): void {
    if ((this.dirs & dir) === 0) return;
    const hdr = this.hdr;
    const tail = Atomics.load(hdr, 1);
    const data = pool.data;
    let head = this.head;
    let lost = 0;
    for (let i = 0; i < n; i++) {
      if (head - tail >= this.slots) {
        lost++;
        continue;
      }
      const h = handles[i];
      const off = pool.dataOffset(h);
      const len = pool.dataLen[h];
      const cap = len < this.snaplen ? len : this.snaplen;
      const slot = HDR_BYTES + (head % this.slots) * this.stride;
      this.f64[slot >> 3] = nowMs;
      this.words[(slot >> 2) + 2] = len;
      this.words[(slot >> 2) + 3] = cap | (dir << 24);
      const d = slot + SLOT_HDR;
      if ((off & 3) === 0 && words !== null) {
        const nw = cap >> 2;
        copyWords(this.words, d >> 2, words, off >> 2, nw);
        for (let k = nw << 2; k < cap; k++) this.bytes[d + k] = data[off + k];
      } else {
        for (let k = 0; k < cap; k++) this.bytes[d + k] = data[off + k];
      }
      head++;
    }
    this.head = head;
    Atomics.add(hdr, 5, n);
    if (lost > 0) Atomics.add(hdr, 2, lost);
    Atomics.store(hdr, 0, head);
  }
}

/** The taps of one PMD thread; the datapath calls rx/tx once per burst only while there is one. */
export class CaptureSet {
  private taps: CaptureTap[] = [];
  private readonly pool: Mempool;
  /** The pool's bytes as 32-bit words (word copies of aligned frames), when aligned. */
  private readonly words: Int32Array | null;

  constructor(pool: Mempool) {
    this.pool = pool;
    const d = pool.data;
    this.words = d.byteOffset % 4 === 0 ? new Int32Array(d.buffer, d.byteOffset, d.length >> 2) : null;
  }

  get size(): number {
    return this.taps.length;
  }

  add(tap: CaptureTap): void {
    this.taps = [...this.taps, tap];
  }

  remove(id: number): boolean {
    const before = this.taps.length;
    this.taps = this.taps.filter((t) => t.id !== id);
    return this.taps.length !== before;
  }

  /** A burst of port portNo in direction dir (DIR_RX, DIR_TX): copied by the taps on that port (one clock read). */
  burst(portNo: number, handles: Int32Array, n: number, dir: number): void {
    const taps = this.taps;
    let now = 0;
    for (let i = 0; i < taps.length; i++) {
      if (taps[i].portNo !== portNo) continue;
      if (now === 0) now = performance.timeOrigin + performance.now();
      taps[i].copy(this.pool, this.words, handles, n, dir, now);
    }
  }
}

export interface CapturedFrame {
  tsMs: number;
  dir: 'rx' | 'tx';
  origLen: number;
  data: Uint8Array;
}

/** The reader (main thread). */
export class CaptureReader {
  private readonly hdr: Int32Array;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly f64: Float64Array;
  private readonly slots: number;
  private readonly stride: number;

  constructor(buf: SharedArrayBuffer) {
    this.hdr = new Int32Array(buf, 0, 8);
    this.slots = this.hdr[3];
    this.stride = SLOT_HDR + this.hdr[4];
    this.words = new Int32Array(buf);
    this.bytes = new Uint8Array(buf);
    this.f64 = new Float64Array(buf);
  }

  /** Copies dropped because the ring was full. */
  get overflow(): number {
    return Atomics.load(this.hdr, 2);
  }

  /** Frames the tap saw (captured or not). */
  get seen(): number {
    return Atomics.load(this.hdr, 5);
  }

  /** Take up to max frames out of the ring. */
  drain(max = Infinity): CapturedFrame[] {
    const out: CapturedFrame[] = [];
    const head = Atomics.load(this.hdr, 0);
    let tail = Atomics.load(this.hdr, 1);
    while (tail !== head && out.length < max) {
      const slot = HDR_BYTES + (tail % this.slots) * this.stride;
      const w = this.words[(slot >> 2) + 3];
      const cap = w & 0xffffff;
      out.push({
        tsMs: this.f64[slot >> 3], dir: w >>> 24 === DIR_TX ? 'tx' : 'rx', origLen: this.words[(slot >> 2) + 2],
        data: this.bytes.slice(slot + SLOT_HDR, slot + SLOT_HDR + cap),
      });
      tail++;
    }
    Atomics.store(this.hdr, 1, tail);
    return out;
  }
}
