/**
 * Device side of a virtqueue (the vhost-user backend's view), common to the
 * split and packed ring kinds.
 *
 * The guest is hostile. The data path (`dequeueBurst`, `enqueueBurst`,
 * notifications) never throws and allocates nothing of its own (guest-memory
 * copies go through GuestMemory.read/write, which take a subarray per copy).
 * A ring kind supplies four primitives:
 *
 *  - `peekChain(write)`: walk the next chain after the peek cursor, checking
 *    every descriptor, record its segments (guest ranges already checked
 *    against GuestMemory) and append it to the reservation;
 *  - `commit()`: return every reserved chain to the driver as used, with
 *    the lengths in `resLen`, and move the avail cursor past them;
 *  - `rewind()`: forget the reservation (nothing consumed);
 *  - `publish()`: end of burst, make the used entries visible.
 *
 * On top of them this class implements guest TX (dequeue: gather, strip
 * the net header) and guest RX (enqueue: header + frame, MRG_RXBUF) once.
 * A chain that violates the rules is returned to the driver with used
 * length 0 and counted in `stats` by reason; errors that make the ring
 * unusable (bad avail index, bad head, endless packed chain) set `broken`,
 * after which every call is a no-op.
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import { VirtqueueError } from './errors.js';
import {
  F_IN_ORDER,
  F_NOTIFY_ON_EMPTY,
  NET_F_MRG_RXBUF,
  RING_F_EVENT_IDX,
  RING_F_INDIRECT_DESC,
} from './features.js';
import { DESC_F_WRITE, RingBits } from './layout.js';
import { initNetHdr, netHdrLen } from './net-header.js';
import { copyBytes, copyDoubles, copyWords, WORD_COPY_MAX } from '../mem/copy.js';
import type { DirtyLog } from '../mem/dirty-log.js';

const EMPTY_BYTES = new Uint8Array(0);
/** Tail arrays for the fast paths called without tails (tLen null): never read. */
const NO_WIN: (Uint8Array | null)[] = [];
const NO_W32: (Int32Array | null)[] = [];
const NO_OFF = new Int32Array(0);

/** Most guest segments (non-empty descriptors) gathered for one frame. */
export const SEG_MAX = 1024;
/** Most descriptors in one indirect table. */
export const INDIRECT_MAX = 1024;
/** Most chains one received frame may span with MRG_RXBUF (also bounded by the queue size). */
export const MRG_CHAINS_MAX = 1024;

/** Counters of a device queue (a plain object: read or reset fields freely). */
export interface DeviceQueueStats {
  /** Frames delivered (dequeue: to the caller; enqueue: to the guest). */
  pkts: number;
  /** Frame bytes delivered, net header excluded. */
  bytes: number;
  /** Chains handed back to the driver as used (delivered or dropped). */
  chains: number;
  /** enqueueBurst stopped because the guest had no (or not enough) buffers. */
  noBufs: number;
  /** TX frame larger than `cap`; RX frame that cannot fit the guest's buffers. */
  tooBig: number;
  /** TX chain without payload (at most a net header). */
  short: number;
  /** Direction violation, `next` out of range, too many segments, RX chain of zero capacity. */
  badChain: number;
  /** A buffer outside guest memory. */
  badAddr: number;
  /** Chain longer than the queue size (or its indirect table): a NEXT loop. */
  loop: number;
  /** Bad indirect descriptor: not negotiated, nested, with NEXT, bad length, unmapped table. */
  badIndirect: number;
  /** Split: avail idx moved by more than the queue size (queue broken). */
  badIndex: number;
  /** Split: head index >= size (queue broken). */
  badHead: number;
  /** enqueueBurst: a frame whose srcOffs/lens do not fit `src` (caller error), dropped. */
  badFrame: number;
}

export function newDeviceQueueStats(): DeviceQueueStats {
  return {
    pkts: 0,
    bytes: 0,
    chains: 0,
    noBufs: 0,
    tooBig: 0,
    short: 0,
    badChain: 0,
    badAddr: 0,
    loop: 0,
    badIndirect: 0,
    badIndex: 0,
    badHead: 0,
    badFrame: 0,
  };
}

/**
 * Queue configuration, both ring kinds. Addresses are guest-physical.
 * For packed rings `availAddr` is the Driver Area (driver event suppression)
 * and `usedAddr` the Device Area (device event suppression), as in the
 * virtio transports and vhost-user SET_VRING_ADDR.
 */
export interface VirtqueueConfig {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** Negotiated features. */
  features: bigint;
}

export interface DeviceQueueConfig extends VirtqueueConfig {
  /**
   * Index of the next avail entry (vhost-user SET_VRING_BASE). Split: 16-bit
   * free-running index. Packed: bits 0-14 position, bit 15 avail wrap counter.
   * Default 0 (split) / 0x8000 (packed: position 0, wrap counter 1).
   */
  lastAvailIdx?: number;
}

/** peekChain results (>= 0: total bytes of the chain's buffers). */
export const PEEK_NONE = -1;
export const PEEK_BROKEN = -2;
export const PEEK_BAD = -3;
export const PEEK_SEGS_FULL = -4;

/** Violation codes returned by the walkers (0 = ok). */
export const V_OK = 0;
export const V_BAD_CHAIN = 1;
export const V_BAD_ADDR = 2;
export const V_LOOP = 3;
export const V_BAD_INDIRECT = 4;
export const V_SEGS_FULL = 5;

/** dequeueOne results besides a frame length (>= 0). */
export const DQ_DROPPED = -1;
export const DQ_STOP = -2;

export abstract class DeviceQueue {
  readonly mem: GuestMemory;
  readonly size: number;
  readonly features: bigint;
  /** Net header length (10 or 12). */
  readonly hdrLen: number;
  readonly mrgRxbuf: boolean;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly inOrder: boolean;
  readonly notifyOnEmpty: boolean;
  readonly stats: DeviceQueueStats = newDeviceQueueStats();
  /** Set on an unrecoverable guest error; the queue then does nothing. */
  broken = false;
  /** Why the queue was marked broken ('' while it is not), for the port's status. */
  brokenReason = '';

  // gathered segments of the reserved chains
  protected readonly segAddr = new Float64Array(SEG_MAX);
  protected readonly segLen = new Float64Array(SEG_MAX);
  protected segN = 0;
  /** Sum of segment lengths of the chain being walked. */
  protected walkTotal = 0;

  // reservation: chains peeked but not yet committed
  protected readonly resMax: number;
  /** Split: head index; packed: buffer id. */
  protected readonly resId: Int32Array;
  /** Packed: ring slots of the chain. */
  protected readonly resSlots: Int32Array;
  /** segN after the chain. */
  protected readonly resSegEnd: Int32Array;
  /** Used length to report, set before commit(). */
  protected readonly resLen: Int32Array;
  protected resN = 0;
  /** Whether the driver asked for notifications (setNotification). */
  protected notifyEnabled = true;

  private readonly hdr = new Uint8Array(12);
  /** Bad chains handed back during the current enqueue burst. */
  protected badInBurst = 0;

  /**
   * Live migration: the dirty log, or null (logging off). While it is set,
   * every write of guest memory is logged through {@link logGuestWrite} (the
   * one hook): the ring kinds' burst fast paths test it once per burst and
   * hand the whole burst to the general path, whose commit() logs the
   * buffers it filled and the ring entries it wrote; publish() and
   * setNotification() log their ring words. A new path that writes guest
   * memory must do the same (fall back while logging, or call the hook).
   */
  protected dirty: DirtyLog | null = null;
  /**
   * Guest address the frontend gave for logging ring writes (vhost-user
   * SET_VRING_ADDR log_guest_addr with VHOST_VRING_F_LOG: the used ring, or
   * the packed Device Area), or -1: ring writes are not logged.
   */
  protected ringLogGpa = -1;

  /**
   * Turn dirty logging on (log non-null) or off. `ringLogGpa`: where the
   * used area's writes are logged (-1: not at all, as without
   * VHOST_VRING_F_LOG). Call between bursts.
   */
  setDirtyLog(log: DirtyLog | null, ringLogGpa = -1): void {
    this.dirty = log;
    this.ringLogGpa = log !== null ? ringLogGpa : -1;
  }

  /** Is dirty logging on? */
  get logging(): boolean {
    return this.dirty !== null;
  }

  /** The one logging hook: guest range [gpa, gpa+len) was written by the device. */
  protected logGuestWrite(gpa: number, len: number): void {
    const d = this.dirty;
    if (d !== null) d.mark(gpa, len);
  }

  /** Used-area bytes [off, off+len) were written (logged at the frontend's log address, if it gave one). */
  protected logRingWrite(off: number, len: number): void {
    const d = this.dirty;
    if (d !== null && this.ringLogGpa >= 0) d.mark(this.ringLogGpa + off, len);
  }

  /** While logging: the buffers of the reserved chains written by the device (the first resLen[j] bytes of chain j). */
  protected logReservedBuffers(): void {
    const d = this.dirty;
    if (d === null) return;
    let s = 0;
    for (let j = 0; j < this.resN; j++) {
      const end = this.resSegEnd[j];
      let left = this.resLen[j];
      for (; s < end && left > 0; s++) {
        const n = this.segLen[s] < left ? this.segLen[s] : left;
        d.mark(this.segAddr[s], n);
        left -= n;
      }
      s = end;
    }
  }

  /** Mark the queue unusable (once), with the reason shown to the operator. */
  protected markBroken(why: string): void {
    if (!this.broken) this.brokenReason = why;
    this.broken = true;
  }

  protected constructor(mem: GuestMemory, size: number, features: bigint) {
    if (typeof features !== 'bigint') throw new VirtqueueError('BAD_CONFIG', 'features must be a bigint');
    this.mem = mem;
    this.size = size;
    this.features = features;
    this.hdrLen = netHdrLen(features);
    this.mrgRxbuf = (features & NET_F_MRG_RXBUF) !== 0n;
    this.eventIdx = (features & RING_F_EVENT_IDX) !== 0n;
    this.indirect = (features & RING_F_INDIRECT_DESC) !== 0n;
    this.inOrder = (features & F_IN_ORDER) !== 0n;
    this.notifyOnEmpty = (features & F_NOTIFY_ON_EMPTY) !== 0n;
    this.resMax = Math.min(size, MRG_CHAINS_MAX);
    this.resId = new Int32Array(this.resMax + 1);
    this.resSlots = new Int32Array(this.resMax + 1);
    this.resSegEnd = new Int32Array(this.resMax + 1);
    this.resLen = new Int32Array(this.resMax + 1);
  }

  // Fast-path cache (ring kinds' burst fast paths): the guest-memory window of the last buffer
  // (gpa range, bytes, u32 view), and the caller's buffer array with its u32 view (the mempool's data).
  protected fwGpa = 0;
  protected fwEnd = 0;
  protected fwBytes: Uint8Array = EMPTY_BYTES;
  protected fwW32: Int32Array | null = null;
  protected fwF64: Float64Array | null = null;
  private xArr: Uint8Array = EMPTY_BYTES;
  private xW32: Int32Array | null = null;
  private xF64: Float64Array | null = null;

  /** Make window wi of guest memory the fast-path window. */
  protected useWindow(wi: number): void {
    const w = this.mem.windows[wi];
    this.fwGpa = w.gpa;
    this.fwEnd = w.gpa + w.size;
    this.fwBytes = w.bytes;
    this.fwW32 = w.w32;
    this.fwF64 = w.f64;
  }

  /** u32 view of the caller's array (one-entry cache), or null if it is not 4-byte aligned. */
  protected wordsOfCaller(a: Uint8Array): Int32Array | null {
    if (a !== this.xArr) this.viewCaller(a);
    return this.xW32;
  }

  /** Float64 view of the caller's array (same cache), or null if it is not 8-byte aligned. */
  protected doublesOfCaller(a: Uint8Array): Float64Array | null {
    if (a !== this.xArr) this.viewCaller(a);
    return this.xF64;
  }

  private viewCaller(a: Uint8Array): void {
    this.xArr = a;
    this.xW32 = (a.byteOffset & 3) === 0 ? new Int32Array(a.buffer, a.byteOffset, a.byteLength >> 2) : null;
    this.xF64 = (a.byteOffset & 7) === 0 ? new Float64Array(a.buffer, a.byteOffset, a.byteLength >> 3) : null;
  }


  /**
   * Fast paths: the offset of guest range [addr, addr+len) in the fast window
   * (switching to the window that holds it), or -1 if no single window does.
   */
  protected windowOffset(addr: number, len: number): number {
    if (!(addr >= this.fwGpa && addr + len <= this.fwEnd)) {
      const wi = this.mem.findGpa(addr, len);
      if (wi < 0) return -1;
      this.useWindow(wi);
    }
    return this.fwW32 === null ? -1 : addr - this.fwGpa;
  }

  /** dst[d0, d0+flen) = fast-window bytes from wo (d0, wo 4-aligned; the caller checked both ranges). */
  protected copyOut(dst: Uint8Array, dw: Int32Array, d0: number, wo: number, flen: number): void {
    if (flen <= WORD_COPY_MAX) {
      const fb = this.fwBytes;
      const sd = this.fwF64;
      const dd = ((d0 | wo) & 7) === 0 && sd !== null ? this.doublesOfCaller(dst) : null;
      if (dd !== null) {
        const n8 = flen >> 3;
        copyDoubles(dd, d0 >> 3, sd!, wo >> 3, n8);
        for (let k = n8 << 3; k < flen; k++) dst[d0 + k] = fb[wo + k];
        return;
      }
      const nw = flen >> 2;
      copyWords(dw, d0 >> 2, this.fwW32 as Int32Array, wo >> 2, nw);
      for (let k = nw << 2; k < flen; k++) dst[d0 + k] = fb[wo + k];
    } else {
      dst.set(this.fwBytes.subarray(wo, wo + flen), d0);
    }
  }

  /**
   * Fast-window bytes at wo (4-aligned; the caller checked the room) = a 12-byte
   * net header with num_buffers 1, then src[so, so+flen) (so 4-aligned).
   */
  protected writeIn(wo: number, src: Uint8Array, sw: Int32Array, so: number, flen: number): void {
    const dw = this.fwW32 as Int32Array;
    const h4 = wo >> 2;
    dw[h4] = 0;
    dw[h4 + 1] = 0;
    dw[h4 + 2] = 0x10000; // bytes 8-11: csum_offset 0, num_buffers 1
    if (flen <= WORD_COPY_MAX) {
      const fb = this.fwBytes;
      const fo = wo + 12;
      const dd = this.fwF64;
      const sd = ((fo | so) & 7) === 0 && dd !== null ? this.doublesOfCaller(src) : null;
      if (sd !== null) {
        const n8 = flen >> 3;
        copyDoubles(dd!, fo >> 3, sd, so >> 3, n8);
        for (let k = n8 << 3; k < flen; k++) fb[fo + k] = src[so + k];
        return;
      }
      const nw = flen >> 2;
      copyWords(dw, h4 + 3, sw, so >> 2, nw);
      for (let k = nw << 2; k < flen; k++) fb[fo + k] = src[so + k];
    } else {
      this.fwBytes.set(src.subarray(so, so + flen), wo + 12);
    }
  }

  /**
   * Fast paths, guest TX: a descriptor (address words hi/lo, length len, each read
   * once by the caller) that holds net header + a frame of len - hdrLen bytes,
   * inside one memory window, word-aligned, the frame fitting `cap` and
   * dst[d0, +flen) (dlen: dst.length). Returns the frame's offset in the fast
   * window, or -1 (the general path takes the chain).
   */
  protected txFrameOffset(hi: number, lo: number, len: number, d0: number, cap: number, dlen: number): number {
    const flen = len - this.hdrLen;
    if (hi > RingBits.ADDR_HI_MAX || !(flen > 0 && flen <= cap && d0 >= 0 && d0 + flen <= dlen)) return -1;
    const wo = this.windowOffset(hi * RingBits.ADDR_HI_UNIT + lo, len);
    const so = wo + this.hdrLen;
    return wo >= 0 && (so & 3) === 0 ? so : -1;
  }

  /**
   * Fast paths, guest TX: frame `got` (flen bytes at fast-window offset so) to
   * dst[d0..]. With tails (tLen not null) only its first `priv` bytes are
   * copied and the rest is described as its tail (tWin/tW32/tOff/tLen[got]),
   * left in guest memory; tLen[got] 0: copied whole.
   */
  protected takeFrame(
    dst: Uint8Array, dw: Int32Array, d0: number, so: number, flen: number, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, got: number,
  ): void {
    if (tLen !== null) {
      if (flen > priv) {
        // the private part now; the tail stays in the guest's buffer, which stays the guest's until release
        this.copyOut(dst, dw, d0, so, priv);
        tWin[got] = this.fwBytes;
        tW32[got] = this.fwW32;
        tOff[got] = so + priv;
        tLen[got] = flen - priv;
        return;
      }
      tLen[got] = 0;
    }
    this.copyOut(dst, dw, d0, so, flen);
  }

  /**
   * Fast paths, guest RX: a device-writable descriptor (hi/lo/len read once by
   * the caller) that holds `total` bytes (12-byte header + frame) inside one
   * memory window, word-aligned: its offset in the fast window, or -1.
   */
  protected rxBufferOffset(hi: number, lo: number, len: number, total: number): number {
    if (hi > RingBits.ADDR_HI_MAX || len < total) return -1;
    const wo = this.windowOffset(hi * RingBits.ADDR_HI_UNIT + lo, len);
    return wo >= 0 && (wo & 3) === 0 ? wo : -1;
  }

  /**
   * Fast paths, guest RX: header + frame i at fast-window offset wo, the frame
   * being src[so, +flen) or, with a tail (tl = tLen[i] > 0), src[so, +priv)
   * and tl bytes of another guest's memory at tWin[i][tOff[i]..]. Returns 0
   * (no tail), 1 (the tail went straight from the other guest) or -1 (an
   * inconsistent tail description, a caller error: nothing written).
   */
  protected putFrame(
    wo: number, src: Uint8Array, sw: Int32Array, so: number, flen: number, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tl: number, i: number,
  ): number {
    if (tl <= 0) {
      this.writeIn(wo, src, sw, so, flen);
      return 0;
    }
    const tw = tWin[i];
    const toff = tOff[i];
    if (tw === null || priv + tl !== flen || toff < 0 || toff + tl > tw.length) return -1;
    this.writeIn(wo, src, sw, so, priv);
    copyBytes(this.fwBytes, this.fwW32, wo + 12 + priv, tw, tW32[i], toff, tl);
    return 1;
  }

  /** Fast paths: count the chains/frames/bytes a burst moved itself (no publish). */
  protected countFast(fast: number, fastBytes: number): void {
    const st = this.stats;
    st.chains += fast;
    st.pkts += fast;
    st.bytes += fastBytes;
  }

  // ---- ring-kind primitives ----
  protected abstract peekChain(write: boolean): number;
  protected abstract commit(write: boolean): void;
  protected abstract rewind(): void;
  protected abstract publish(): void;
  /** True if the driver has made at least one buffer available. */
  abstract hasAvail(): boolean;
  /** How many chains the driver has made available, at most `max` (split: exact; packed: an upper bound). */
  abstract availCount(max?: number): number;
  /** After a burst: should the driver be interrupted (call fd)? Consumes the pending state. */
  abstract needsInterrupt(): boolean;
  /** Ask the driver to send (true) or not send (false) available-buffer notifications (kicks). */
  abstract setNotification(enable: boolean): void;
  /** Index of the next avail entry, for GET_VRING_BASE (packed: wrap counter in bit 15). */
  abstract get lastAvailIdx(): number;
  /** Next used index the device writes (packed: used wrap counter in bit 15). Equals lastAvailIdx between bursts. */
  abstract get lastUsedIdx(): number;

  /**
   * Check one descriptor's buffer and record it as a segment. `flags` are the
   * descriptor flags; `write` the direction the chain must have.
   */
  protected addSeg(addr: number, len: number, flags: number, write: boolean): number {
    if (((flags & DESC_F_WRITE) !== 0) !== write) return V_BAD_CHAIN;
    if (len === 0) return V_OK;
    if (addr < 0 || !this.mem.contains(addr, len)) return V_BAD_ADDR;
    const n = this.segN;
    if (n >= SEG_MAX) return V_SEGS_FULL;
    this.segAddr[n] = addr;
    this.segLen[n] = len;
    this.segN = n + 1;
    this.walkTotal += len;
    return V_OK;
  }

  /**
   * Record the chain just walked as reservation k (id: split head or packed
   * buffer id; slots: ring slots it took; segStart: segN before the walk;
   * v: the walker's verdict). Returns peekChain's result for it.
   */
  protected reserve(k: number, id: number, slots: number, segStart: number, v: number): number {
    this.resId[k] = id;
    this.resSlots[k] = slots;
    this.resN = k + 1;
    if (v !== V_OK) {
      this.segN = segStart;
      this.resSegEnd[k] = segStart;
      return this.violation(v);
    }
    this.resSegEnd[k] = this.segN;
    return this.walkTotal;
  }

  /** Count a walker violation; returns the peekChain code for it. */
  protected violation(v: number): number {
    const s = this.stats;
    switch (v) {
      case V_BAD_ADDR:
        s.badAddr++;
        break;
      case V_LOOP:
        s.loop++;
        break;
      case V_BAD_INDIRECT:
        s.badIndirect++;
        break;
      case V_SEGS_FULL:
        return PEEK_SEGS_FULL; // counted by the caller, depending on context
      default:
        s.badChain++;
    }
    return PEEK_BAD;
  }

  /**
   * Guest TX: pop up to `n` available chains; for each valid one copy the
   * frame (net header stripped) to dst[dstOffs[i]..] (at most `cap` bytes),
   * its length to lens[i]. Every popped chain is returned used (length 0).
   * Returns frames delivered (<= n). Never throws. A ring kind supplies a
   * fast path for common chains ({@link dequeueFast}) that falls back to
   * {@link dequeueOne} for the rest; while dirty logging is on only the
   * general path runs (it logs what it writes).
   */
  dequeueBurst(dst: Uint8Array, dstOffs: Int32Array, cap: number, lens: Int32Array, n: number): number {
    if (this.broken) return 0;
    this.releaseDeferred(); // a caller that did not release: never leave chains behind
    const got = this.dirty !== null ? this.dequeueChains(dst, dstOffs, cap, lens, null, n) : this.dequeueFast(dst, dstOffs, cap, lens, 0, NO_WIN, NO_W32, NO_OFF, null, n);
    this.releaseDeferred();
    return got;
  }

  /**
   * A guest TX burst, not published (dequeueBurst and dequeueBurstDeferred
   * publish or release): by default the general path; a ring kind overrides
   * it with its fast path. tLen null: whole frames; else, for frames the fast
   * path takes, only `priv` bytes copied and the tail described (takeFrame),
   * the chain kept from the driver until {@link releaseDeferred}.
   */
  protected dequeueFast(
    dst: Uint8Array, dstOffs: Int32Array, cap: number, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, n: number,
  ): number {
    void priv;
    void tWin;
    void tW32;
    void tOff;
    return this.dequeueChains(dst, dstOffs, cap, lens, tLen, n);
  }

  /** The general guest TX burst: chains one by one, each returned used at once (not published); tails none. */
  protected dequeueChains(dst: Uint8Array, dstOffs: Int32Array, cap: number, lens: Int32Array, tLen: Int32Array | null, n: number): number {
    if (n > dstOffs.length) n = dstOffs.length;
    if (n > lens.length) n = lens.length;
    let got = 0;
    for (let c = 0; c < n; c++) {
      const r = this.dequeueOne(dst, dstOffs[got], cap);
      if (r === DQ_STOP) break;
      if (r >= 0) {
        if (tLen !== null) tLen[got] = 0;
        lens[got++] = r;
      }
    }
    return got;
  }

  /**
   * Pop the next available chain the general way (any layout, every rule
   * checked) and return it used. Returns the frame length copied to dst[d0..],
   * DQ_DROPPED if the chain carried no deliverable frame (counted by reason),
   * or DQ_STOP if nothing is available or the queue broke. Does not publish.
   */
  protected dequeueOne(dst: Uint8Array, d0: number, cap: number): number {
    const r = this.peekChain(false);
    if (r === PEEK_NONE || r === PEEK_BROKEN) return DQ_STOP;
    const st = this.stats;
    const hdrLen = this.hdrLen;
    let out = DQ_DROPPED;
    if (r === PEEK_SEGS_FULL) {
      st.badChain++;
    } else if (r >= 0) {
      const flen = r - hdrLen;
      if (flen <= 0) {
        st.short++;
      } else if (flen > cap || !(d0 >= 0) || d0 + flen > dst.length) {
        st.tooBig++;
      } else if (this.gather(dst, d0, hdrLen)) {
        out = flen;
        st.pkts++;
        st.bytes += flen;
      } else {
        st.badAddr++;
      }
    }
    this.resLen[0] = 0;
    this.commit(false);
    return out;
  }

  /** Copy the recorded segments, minus the first `skip` bytes, to dst[d..]. */
  private gather(dst: Uint8Array, d: number, skip: number): boolean {
    const mem = this.mem;
    for (let s = 0; s < this.segN; s++) {
      let a = this.segAddr[s];
      let l = this.segLen[s];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      a += skip;
      l -= skip;
      skip = 0;
      if (!mem.read(a, dst, d, l)) return false;
      d += l;
    }
    return true;
  }

  /**
   * Guest RX: write net header + frame i (src[srcOffs[i]..+lens[i]]) into
   * device-writable chains, in order. With MRG_RXBUF a frame may span several
   * chains (num_buffers says how many); without it one chain must hold
   * header + frame, else the frame is dropped (stats.tooBig) and the chain
   * kept. Returns the number of frames consumed from the front (delivered or
   * dropped with a counted reason); it is less than `n` when the guest ran
   * out of buffers (stats.noBufs) or the queue broke. Never throws. A ring
   * kind supplies a fast path ({@link enqueueFast}); while dirty logging is on
   * only the general path runs.
   */
  enqueueBurst(src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, n: number): number {
    this.lastDirect = 0;
    if (this.broken) return 0;
    if (this.dirty !== null) return this.enqueueFrames(src, srcOffs, lens, n);
    return this.enqueueFast(src, srcOffs, lens, 0, NO_WIN, NO_W32, NO_OFF, null, n);
  }

  /**
   * A guest RX burst, published, lastDirect set: by default the general path
   * (tails copied in first); a ring kind overrides it with its fast path, which
   * writes a frame's tail (tLen[i] > 0, see putFrame) straight from the other
   * guest. tLen null: no tails.
   */
  protected enqueueFast(
    src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, n: number,
  ): number {
    if (tLen !== null) this.materializeTails(src, srcOffs, lens, priv, tWin, tW32, tOff, tLen, n);
    return this.enqueueFrames(src, srcOffs, lens, n);
  }

  /** The general guest RX burst: frame by frame, then published. */
  protected enqueueFrames(src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, n: number): number {
    if (n > srcOffs.length) n = srcOffs.length;
    if (n > lens.length) n = lens.length;
    this.badInBurst = 0;
    let i = 0;
    for (; i < n; i++) if (!this.enqueueOne(src, srcOffs[i], lens[i])) break;
    this.publish();
    return i;
  }

  // ---- one copy guest-to-guest (src/port/one-copy.ts has the design) ----

  /** Frames of the last {@link enqueueBurstTails} whose tail went straight from the source guest into this one. */
  lastDirect = 0;

  /**
   * Guest TX with deferred release (one copy): like {@link dequeueBurst}, but a
   * frame longer than `priv` bytes that the ring kind's fast path takes is copied
   * only up to `priv` bytes; the rest (its tail) stays in guest memory and is
   * described by tWin[i] (window bytes), tW32[i] (its word view), tOff[i] (offset
   * of the tail in the window) and tLen[i] (tail bytes; 0: the whole frame was
   * copied). The chains are not returned to the driver (used index / flags not
   * published) until {@link releaseDeferred}: the tails stay the driver's
   * buffers, unchanged by any rule of ours, until then. While dirty logging is
   * on nothing is deferred (every tLen is 0, the chains are published).
   */
  dequeueBurstDeferred(
    dst: Uint8Array, dstOffs: Int32Array, cap: number, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array, n: number,
  ): number {
    if (this.broken) return 0;
    this.releaseDeferred(); // a caller that did not release: never leave chains behind
    if (n > tLen.length) n = tLen.length;
    if (this.dirty !== null) {
      const got = this.dequeueChains(dst, dstOffs, cap, lens, tLen, n);
      this.releaseDeferred();
      return got;
    }
    return this.dequeueFast(dst, dstOffs, cap, lens, priv, tWin, tW32, tOff, tLen, n);
  }

  /** Return to the driver the chains {@link dequeueBurstDeferred} kept (publish them as used). */
  releaseDeferred(): void {
    this.publish();
  }

  /**
   * Guest RX with tails (one copy): frame i is src[srcOffs[i], +priv) followed by
   * tLen[i] bytes of another guest's memory at tWin[i][tOff[i]..] (tLen[i] 0: the
   * whole frame, lens[i] bytes, is in src). The ring kind's fast path writes the
   * tail straight from the other guest; every other case first copies the tail
   * into src after the private part (the buffer has room: the frame was sized to
   * it), then goes the ordinary way. lastDirect says how many went straight.
   * Returns as {@link enqueueBurst}.
   */
  enqueueBurstTails(
    src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array, n: number,
  ): number {
    this.lastDirect = 0;
    if (this.broken) return 0;
    if (n > tLen.length) n = tLen.length;
    if (this.dirty !== null) {
      this.materializeTails(src, srcOffs, lens, priv, tWin, tW32, tOff, tLen, n);
      return this.enqueueFrames(src, srcOffs, lens, n);
    }
    return this.enqueueFast(src, srcOffs, lens, priv, tWin, tW32, tOff, tLen, n);
  }

  /** Copy the tails of frames [0, n) into src after their private parts. */
  private materializeTails(
    src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array, n: number,
  ): void {
    if (n > srcOffs.length) n = srcOffs.length;
    if (n > lens.length) n = lens.length;
    for (let i = 0; i < n; i++) if (tLen[i] > 0) this.materializeTail(src, srcOffs[i], lens[i], priv, tWin[i], tW32[i], tOff[i], tLen[i]);
  }

  /** Copy a frame's tail into src after its private part (when it fits where the frame says it is). */
  protected materializeTail(src: Uint8Array, so: number, flen: number, priv: number, tw: Uint8Array | null, tw32: Int32Array | null, toff: number, tlen: number): void {
    if (tw === null || !(so >= 0 && priv + tlen === flen && so + flen <= src.length && toff >= 0 && toff + tlen <= tw.length)) return;
    copyBytes(src, this.wordsOfCaller(src), so + priv, tw, tw32, toff, tlen);
  }

  /**
   * Deliver one frame the general way (any chain layout, MRG_RXBUF spans).
   * Returns true if the frame was consumed (delivered, or dropped with a
   * counted reason), false if the guest has no buffers for it or the queue
   * broke (the frame stays the caller's). Does not publish.
   */
  protected enqueueOne(src: Uint8Array, so: number, flen: number): boolean {
    const st = this.stats;
    if (!(flen >= 0 && so >= 0 && so + flen <= src.length)) {
      st.badFrame++;
      return true;
    }
    const hdrLen = this.hdrLen;
    const mrg = this.mrgRxbuf;
    const total = hdrLen + flen;
    let cap = 0;
    for (;;) {
      const r = this.peekChain(true);
      if (r === PEEK_BROKEN) {
        this.rewind();
        return false;
      }
      if (r === PEEK_NONE) {
        this.rewind();
        st.noBufs++;
        return false;
      }
      if (r === PEEK_SEGS_FULL && this.resN > 1) {
        // this frame needs more segments than we gather at once
        this.rewind();
        st.tooBig++;
        return true;
      }
      if (r < 0 || r === 0) {
        if (r === 0) st.badChain++;
        else if (r === PEEK_SEGS_FULL) st.badChain++;
        if (this.resN === 1) {
          // a lone bad chain: hand it back, try again with the next one
          this.resLen[0] = 0;
          this.commit(true);
          if (++this.badInBurst > this.size) return false; // bounded: a guest may keep adding bad chains
          continue;
        }
        // bad chain after good ones reserved for this frame: drop the frame
        // and hand back all of them unwritten
        for (let j = 0; j < this.resN; j++) this.resLen[j] = 0;
        this.commit(true);
        return true;
      }
      cap += r;
      if (cap >= total) break;
      if (!mrg || this.resN >= this.resMax) {
        this.rewind();
        st.tooBig++;
        return true;
      }
    }
    initNetHdr(this.hdr, 0, hdrLen, mrg ? this.resN : 1);
    this.scatter(src, so, total);
    this.commit(true);
    st.pkts++;
    st.bytes += flen;
    return true;
  }

  /** Write header + frame (total bytes) across the reserved chains, setting resLen. */
  private scatter(src: Uint8Array, so: number, total: number): void {
    const mem = this.mem;
    const hdr = this.hdr;
    const hdrLen = this.hdrLen;
    let p = 0;
    let s = 0;
    for (let j = 0; j < this.resN; j++) {
      const end = this.resSegEnd[j];
      let w = 0;
      for (; s < end && p < total; s++) {
        const a = this.segAddr[s];
        const n = Math.min(this.segLen[s], total - p);
        let off = 0;
        if (p < hdrLen) {
          off = Math.min(n, hdrLen - p);
          mem.write(a, hdr, p, off);
          p += off;
        }
        if (off < n) {
          mem.write(a + off, src, so + p - hdrLen, n - off);
          p += n - off;
        }
        w += n;
      }
      s = end;
      this.resLen[j] = w;
    }
  }
}
