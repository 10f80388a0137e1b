/**
 * Guest memory: the table of regions a vhost-user frontend shares with us
 * (SET_MEM_TABLE / ADD_MEM_REG), and checked translation of guest-physical
 * (GPA) and frontend-virtual (user) addresses into views of our mappings.
 *
 * Design rules (hostile guest):
 *  - every translation checks the whole [addr, addr+len) range against one
 *    window; a range that leaves memory or straddles two regions is refused;
 *  - addresses are JS numbers; anything at or above 2^53 (including every
 *    64-bit wire value that would wrap at 2^64) is refused before arithmetic,
 *    so no overflow can turn an out-of-bounds range into an in-bounds one;
 *  - a region larger than the window size (1 GiB: a koffi view over 4 GiB aborts the process, docs/interop.md#node-and-koffi) is split
 *    into several windows; copies may cross windows of the same region since
 *    those are contiguous in guest address space;
 *  - a region given by its mapped address (not views) gets the view of each
 *    window on first use (a view costs V8 a full GC for its external memory,
 *    so a big guest that touches little of its memory costs little).
 *
 * The hot path uses the number-based methods, which never allocate and never
 * throw: they return -1 / false on a bad range.
 */

import { copyWords, WORD_COPY_MAX } from './copy.js';
import * as libc from '../sys/libc.js';

/** Largest address we accept: beyond this, doubles stop being exact. */
export const MAX_ADDR = Number.MAX_SAFE_INTEGER;
/** Largest single translated length (a descriptor length is 32-bit). */
export const MAX_LEN = 0xffffffff;
/** Window size for mapping big regions (koffi views over 4 GiB abort). */
export const WINDOW_SIZE = 1 << 30;
/** Copies up to this size go 4 bytes at a time (no subarray allocation). */
const SMALL_COPY = WORD_COPY_MAX;

/** Copy len bytes; offsets are relative to each array (and its DataView). */
function copySmall(
  dst: Uint8Array, ddv: DataView, dw: Int32Array | null, doff: number,
  src: Uint8Array, sdv: DataView, sw: Int32Array | null, soff: number, len: number,
): void {
  let i = 0;
  if (dw !== null && sw !== null && ((doff | soff) & 3) === 0) {
    // both sides 4-byte aligned (the common case: mbuf data and virtio buffers): whole words
    const n = len >> 2;
    copyWords(dw, doff >> 2, sw, soff >> 2, n);
    i = n << 2;
  } else {
    for (; i + 4 <= len; i += 4) ddv.setUint32(doff + i, sdv.getUint32(soff + i, true), true);
  }
  for (; i < len; i++) dst[doff + i] = src[soff + i];
}

/** Int32 view over the same bytes, when the array starts on a 4-byte boundary. */
function wordsOf(b: Uint8Array): Int32Array | null {
  return (b.byteOffset & 3) === 0 ? new Int32Array(b.buffer, b.byteOffset, b.byteLength >> 2) : null;
}

function doublesOf(b: Uint8Array): Float64Array | null {
  return (b.byteOffset & 7) === 0 ? new Float64Array(b.buffer, b.byteOffset, b.byteLength >> 3) : null;
}

/** One region as described by the frontend, plus our view of its bytes. */
export interface GuestRegion {
  /** Guest physical address of the region start. */
  gpa: number;
  /** Size in bytes. */
  size: number;
  /** Frontend (QEMU/DPDK process) virtual address of the region start. */
  uaddr: number;
  /** Offset in the region's fd where the mapping starts (informational here). */
  mmapOffset?: number;
  /**
   * Views of the region bytes, each covering [i*WINDOW_SIZE, ...) of the region.
   * A region of at most WINDOW_SIZE has exactly one view. Omit (or leave
   * empty) and give `addr` to have windows viewed on first use.
   */
  views?: Uint8Array[];
  /** Our address of the whole region, mapped contiguously (lazy views). */
  addr?: number;
}

const NO_BYTES = new Uint8Array(0);
const NO_DV = new DataView(NO_BYTES.buffer);

/** A contiguous, mapped piece of guest memory. */
export interface MemWindow {
  readonly region: number;
  readonly gpa: number;
  readonly uaddr: number;
  readonly size: number;
  /** Empty until first used, for a window of a lazily viewed region (the translation methods view it). */
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  /** Int32 view of the window (null if not 4-byte aligned). */
  readonly w32: Int32Array | null;
  /** Float64 view of the window, for 8-byte copies (null if not 8-byte aligned; see mem/copy.ts). */
  readonly f64: Float64Array | null;
  /** Our address of the window when it is viewed lazily, else -1. */
  readonly addr: number;
}

type MutWindow = { -readonly [K in keyof MemWindow]: MemWindow[K] };

export class GuestMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

/** Convert a 64-bit wire value (two u32 halves) to a number, or -1 if >= 2^53. */
export function u64ToAddr(hi: number, lo: number): number {
  if (hi >>> 0 > 0x1fffff) return -1;
  return (hi >>> 0) * 0x100000000 + (lo >>> 0);
}

/** Convert a bigint to an address number, or -1 if negative or >= 2^53. */
export function bigToAddr(v: bigint): number {
  if (v < 0n || v > BigInt(MAX_ADDR)) return -1;
  return Number(v);
}

function validAddr(a: number): boolean {
  return a >= 0 && a <= MAX_ADDR && Number.isInteger(a);
}

export class GuestMemory {
  readonly regions: readonly GuestRegion[];
  /** Windows sorted by gpa. */
  readonly windows: readonly MemWindow[];
  /** Windows sorted by uaddr. */
  private readonly byUaddr: readonly MemWindow[];
  private last = 0;
  private released = false;
  /**
   * Offset within `windows[i].bytes` of the last successful translation.
   * Set by {@link findGpa} and {@link findUaddr}.
   */
  off = 0;

  // Two cached DataViews for the other side of copies (in practice the mempool and a header scratch array).
  private arrA: Uint8Array | null = null;
  private dvA: DataView | null = null;
  /** Int32 view matching arrA (valid right after viewOf). */
  private w32A: Int32Array | null = null;
  private arrB: Uint8Array | null = null;
  private dvB: DataView | null = null;
  private w32B: Int32Array | null = null;

  /** A DataView over arr (and its Int32 view in w32A), from a two-entry cache (most recent in slot A). */
  private viewOf(arr: Uint8Array): DataView {
    if (arr === this.arrA) return this.dvA!;
    if (arr === this.arrB) {
      const a = this.arrA;
      const d = this.dvA;
      const w = this.w32A;
      this.arrA = arr;
      this.dvA = this.dvB;
      this.w32A = this.w32B;
      this.arrB = a;
      this.dvB = d;
      this.w32B = w;
      return this.dvA!;
    }
    this.arrB = this.arrA;
    this.dvB = this.dvA;
    this.w32B = this.w32A;
    this.arrA = arr;
    this.dvA = new DataView(arr.buffer, arr.byteOffset, arr.byteLength);
    this.w32A = wordsOf(arr);
    return this.dvA;
  }

  constructor(regions: GuestRegion[]) {
    const wins: MemWindow[] = [];
    regions.forEach((r, ri) => {
      if (!validAddr(r.gpa) || !validAddr(r.uaddr) || !Number.isInteger(r.size) || r.size <= 0) {
        throw new GuestMemoryError(`region ${ri}: invalid gpa/uaddr/size (${r.gpa}/${r.uaddr}/${r.size})`);
      }
      if (r.gpa + r.size > MAX_ADDR || r.uaddr + r.size > MAX_ADDR) {
        throw new GuestMemoryError(`region ${ri}: end beyond 2^53`);
      }
      const nwin = Math.ceil(r.size / WINDOW_SIZE);
      const views = r.views ?? [];
      const lazy = views.length === 0 && r.addr !== undefined;
      if (lazy) {
        if (!(Number.isInteger(r.addr) && r.addr! > 0 && r.addr! + r.size <= MAX_ADDR)) {
          throw new GuestMemoryError(`region ${ri}: invalid mapped address ${r.addr}`);
        }
      } else if (views.length !== nwin) {
        throw new GuestMemoryError(`region ${ri}: expected ${nwin} views, got ${views.length}`);
      }
      for (let w = 0; w < nwin; w++) {
        const wsize = Math.min(WINDOW_SIZE, r.size - w * WINDOW_SIZE);
        if (lazy) {
          wins.push({
            region: ri, gpa: r.gpa + w * WINDOW_SIZE, uaddr: r.uaddr + w * WINDOW_SIZE, size: wsize,
            bytes: NO_BYTES, dv: NO_DV, w32: null, f64: null, addr: r.addr! + w * WINDOW_SIZE,
          });
          continue;
        }
        const bytes = views[w];
        if (bytes.byteLength < wsize) {
          throw new GuestMemoryError(`region ${ri}: view ${w} has ${bytes.byteLength} bytes, needs ${wsize}`);
        }
        const b = bytes.byteLength === wsize ? bytes : bytes.subarray(0, wsize);
        wins.push({
          region: ri,
          gpa: r.gpa + w * WINDOW_SIZE,
          uaddr: r.uaddr + w * WINDOW_SIZE,
          size: wsize,
          bytes: b,
          dv: new DataView(b.buffer, b.byteOffset, b.byteLength),
          w32: wordsOf(b),
          f64: doublesOf(b),
          addr: -1,
        });
      }
    });
    const byGpa = wins.slice().sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < byGpa.length; i++) {
      const p = byGpa[i - 1];
      if (p.gpa + p.size > byGpa[i].gpa) {
        throw new GuestMemoryError(`regions ${p.region} and ${byGpa[i].region} overlap in guest physical space`);
      }
    }
    const byU = wins.slice().sort((a, b) => a.uaddr - b.uaddr);
    for (let i = 1; i < byU.length; i++) {
      const p = byU[i - 1];
      if (p.uaddr + p.size > byU[i].uaddr) {
        throw new GuestMemoryError(`regions ${p.region} and ${byU[i].region} overlap in frontend address space`);
      }
    }
    this.regions = regions;
    this.windows = byGpa;
    this.byUaddr = byU;
    // the translation cache starts at window 0: it must be viewed
    if (byGpa.length > 0 && byGpa[0].bytes === NO_BYTES) this.viewWindow(byGpa[0]);
  }

  /** Make the views of a lazily viewed window. False once released. */
  private viewWindow(w: MemWindow): boolean {
    if (this.released) return false;
    const m = w as MutWindow;
    const b = new Uint8Array(libc.view(w.addr, w.size));
    m.bytes = b;
    m.dv = new DataView(b.buffer, 0, b.byteLength);
    m.w32 = wordsOf(b);
    m.f64 = doublesOf(b);
    return true;
  }

  /** Windows viewed so far (lazily viewed regions make views on first use). */
  get viewedWindows(): number {
    let n = 0;
    for (const w of this.windows) if (w.bytes !== NO_BYTES) n++;
    return n;
  }

  /**
   * Drop every view (before the memory is unmapped). Translations fail from
   * now on (views are not re-made).
   */
  release(): void {
    this.released = true;
    for (const w of this.windows) {
      const m = w as MutWindow;
      m.bytes = NO_BYTES;
      m.dv = NO_DV;
      m.w32 = null;
      m.f64 = null;
      m.size = 0;
    }
    this.arrA = this.arrB = null;
    this.dvA = this.dvB = null;
    this.w32A = this.w32B = null;
  }

  /** Total bytes of guest memory. */
  get totalSize(): number {
    let s = 0;
    for (const r of this.regions) s += r.size;
    return s;
  }

  /**
   * Find the window holding all of [gpa, gpa+len). Returns its index in
   * `windows` and sets `this.off`, or -1. Never throws, never allocates.
   */
  findGpa(gpa: number, len: number): number {
    if (!(gpa >= 0 && gpa <= MAX_ADDR) || !(len >= 0 && len <= MAX_LEN)) return -1;
    if (Math.floor(gpa) !== gpa || Math.floor(len) !== len) return -1;
    const ws = this.windows;
    let w = ws[this.last];
    if (w !== undefined && gpa >= w.gpa && gpa - w.gpa + len <= w.size) {
      this.off = gpa - w.gpa;
      return this.last;
    }
    // binary search: last window with start <= gpa
    let lo = 0;
    let hi = ws.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (ws[mid].gpa <= gpa) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return -1;
    w = ws[found];
    if (gpa - w.gpa + len > w.size) return -1;
    if (w.bytes === NO_BYTES && !this.viewWindow(w)) return -1;
    this.last = found;
    this.off = gpa - w.gpa;
    return found;
  }

  /** Translate a frontend virtual address to a guest physical one, or -1. */
  uaddrToGpa(uaddr: number, len: number): number {
    if (!(uaddr >= 0 && uaddr <= MAX_ADDR) || !(len >= 0 && len <= MAX_LEN)) return -1;
    if (Math.floor(uaddr) !== uaddr || Math.floor(len) !== len) return -1;
    const ws = this.byUaddr;
    let lo = 0;
    let hi = ws.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (ws[mid].uaddr <= uaddr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return -1;
    const w = ws[found];
    if (uaddr - w.uaddr + len > w.size) return -1;
    return w.gpa + (uaddr - w.uaddr);
  }

  /** Translate a frontend virtual address range to a window index (sets `off`), or -1. */
  findUaddr(uaddr: number, len: number): number {
    const gpa = this.uaddrToGpa(uaddr, len);
    return gpa < 0 ? -1 : this.findGpa(gpa, len);
  }

  /**
   * Checked view of [gpa, gpa+len): throws GuestMemoryError on a bad range.
   * Control path only (allocates a subarray).
   */
  slice(gpa: number, len: number): Uint8Array {
    const i = this.findGpa(gpa, len);
    if (i < 0) throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+${len} is not inside one mapped region`);
    const w = this.windows[i];
    return w.bytes.subarray(this.off, this.off + len);
  }

  /** True if every byte of [gpa, gpa+len) is mapped (may span windows of one region). */
  contains(gpa: number, len: number): boolean {
    if (len === 0) return this.findGpa(gpa, 0) >= 0;
    let a = gpa;
    let left = len;
    if (!(gpa >= 0 && gpa <= MAX_ADDR) || !(len > 0 && len <= MAX_LEN)) return false;
    while (left > 0) {
      const i = this.findGpa(a, 1);
      if (i < 0) return false;
      const w = this.windows[i];
      const n = Math.min(left, w.size - this.off);
      a += n;
      left -= n;
    }
    return true;
  }

  /**
   * Copy guest bytes [gpa, gpa+len) to dst[dstOff..]. Returns false (copying
   * nothing) if any byte is unmapped. Never throws.
   */
  read(gpa: number, dst: Uint8Array, dstOff: number, len: number): boolean {
    if (dstOff < 0 || dstOff + len > dst.length) return false;
    const i = this.findGpa(gpa, len);
    if (i >= 0) {
      const w = this.windows[i];
      const o = this.off;
      if (len <= SMALL_COPY) copySmall(dst, this.viewOf(dst), this.w32A, dstOff, w.bytes, w.dv, w.w32, o, len);
      else dst.set(w.bytes.subarray(o, o + len), dstOff);
      return true;
    }
    if (!this.contains(gpa, len)) return false;
    let a = gpa;
    let left = len;
    let d = dstOff;
    while (left > 0) {
      const wi = this.findGpa(a, 1);
      const w = this.windows[wi];
      const n = Math.min(left, w.size - this.off);
      dst.set(w.bytes.subarray(this.off, this.off + n), d);
      a += n;
      d += n;
      left -= n;
    }
    return true;
  }

  /**
   * Copy src[srcOff..srcOff+len) into guest memory at gpa. Returns false
   * (writing nothing) if any byte is unmapped. Never throws.
   */
  write(gpa: number, src: Uint8Array, srcOff: number, len: number): boolean {
    if (srcOff < 0 || srcOff + len > src.length) return false;
    const i = this.findGpa(gpa, len);
    if (i >= 0) {
      const w = this.windows[i];
      const o = this.off;
      if (len <= SMALL_COPY) copySmall(w.bytes, w.dv, w.w32, o, src, this.viewOf(src), this.w32A, srcOff, len);
      else w.bytes.set(src.subarray(srcOff, srcOff + len), o);
      return true;
    }
    if (!this.contains(gpa, len)) return false;
    let a = gpa;
    let left = len;
    let s = srcOff;
    while (left > 0) {
      const wi = this.findGpa(a, 1);
      const w = this.windows[wi];
      const n = Math.min(left, w.size - this.off);
      w.bytes.set(src.subarray(s, s + n), this.off);
      a += n;
      s += n;
      left -= n;
    }
    return true;
  }
}
