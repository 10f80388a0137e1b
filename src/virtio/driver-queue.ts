/**
 * Driver side of a virtqueue (our virtio-user frontend, like DPDK's
 * virtio-pmd), common to the split and packed ring kinds.
 *
 * The memory is ours and trusted, but addresses still go through
 * GuestMemory (findGpa) so a caller bug cannot scribble outside it. Tokens
 * are caller-chosen int32 values handed back when the device is done with a
 * buffer; no allocation on the data path.
 *
 * Descriptor layout chosen per buffer:
 *  - with INDIRECT_DESC negotiated and `indirectAddr` given: one ring slot
 *    pointing at a 2-entry table [net header][payload];
 *  - legacy header without ANY_LAYOUT (and not VERSION_1): two chained ring
 *    descriptors [net header][payload], as legacy devices expect;
 *  - otherwise: one descriptor for header + payload.
 *
 * Received frames with MRG_RXBUF may span several buffers; pollRx reports
 * each buffer as its own token and, if `nbufsOut` is given, sets
 * nbufsOut[i] = num_buffers for the first buffer of a frame and 0 for the
 * continuation buffers (without MRG_RXBUF every buffer is a frame: 1).
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import { VirtqueueError } from './errors.js';
import {
  F_ANY_LAYOUT,
  F_IN_ORDER,
  F_VERSION_1,
  NET_F_MRG_RXBUF,
  RING_F_EVENT_IDX,
  RING_F_INDIRECT_DESC,
} from './features.js';
import { DESC_SIZE, mapArea } from './layout.js';
import { getNumBuffers, netHdrLen } from './net-header.js';
import type { VirtqueueConfig } from './device-queue.js';

/** Entries of each per-buffer indirect table the driver builds. */
export const DRIVER_INDIRECT_ENTRIES = 2;
/** Bytes of indirect-table area a driver needs for a queue of `size`. */
export const driverIndirectSize = (size: number): number => size * DRIVER_INDIRECT_ENTRIES * DESC_SIZE;

export interface DriverQueueConfig extends VirtqueueConfig {
  /**
   * GPA of an area of driverIndirectSize(size) bytes (16-aligned) for indirect
   * tables; used only when INDIRECT_DESC is negotiated.
   */
  indirectAddr?: number;
  /**
   * Initial index. Split: avail and used idx (16-bit). Packed: ring position
   * (0..size-1, wrap counters 1). Default 0. The ring memory is zeroed by
   * the constructor, then set up for this index.
   */
  startIdx?: number;
}

export interface DriverQueueStats {
  /** A buffer address/length outside memory, or shorter than the net header (posting stopped). */
  badBuf: number;
  /** The device returned an id that is not outstanding (queue marked broken). */
  badUsed: number;
}

export abstract class DriverQueue {
  readonly mem: GuestMemory;
  readonly size: number;
  readonly features: bigint;
  readonly hdrLen: number;
  readonly mrgRxbuf: boolean;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  /** Buffers go through a 2-entry indirect table. */
  readonly useIndirect: boolean;
  /** Header and payload in separate descriptors (legacy without ANY_LAYOUT). */
  readonly hdrSplit: boolean;
  readonly stats: DriverQueueStats = { badBuf: 0, badUsed: 0 };
  broken = false;

  /** Indirect table area (whole), if used, and its GPA. */
  protected readonly ind: DataView | null;
  protected readonly indGpa: number;
  /** Per key (split: head desc; packed: buffer id): token, buffer address. */
  protected readonly tokenOf: Int32Array;
  protected readonly addrOf: Float64Array;
  /** 1 while the buffer at that key is with the device. */
  protected readonly busy: Uint8Array;
  /** Set by popUsed(). */
  protected usedToken = 0;
  protected usedLen = 0;
  protected usedAddr = 0;
  /** Continuation buffers left of the current merged RX frame. */
  private rxRemain = 0;
  /** Interrupts wanted (setInterrupts). */
  protected intrEnabled = true;

  protected constructor(mem: GuestMemory, cfg: DriverQueueConfig) {
    if (typeof cfg.features !== 'bigint') throw new VirtqueueError('BAD_CONFIG', 'features must be a bigint');
    const f = cfg.features;
    this.mem = mem;
    this.size = cfg.size;
    this.features = f;
    this.hdrLen = netHdrLen(f);
    this.mrgRxbuf = (f & NET_F_MRG_RXBUF) !== 0n;
    this.eventIdx = (f & RING_F_EVENT_IDX) !== 0n;
    this.inOrder = (f & F_IN_ORDER) !== 0n;
    this.hdrSplit = (f & (F_VERSION_1 | F_ANY_LAYOUT)) === 0n;
    this.useIndirect = (f & RING_F_INDIRECT_DESC) !== 0n && cfg.indirectAddr !== undefined;
    if (this.useIndirect) {
      const len = driverIndirectSize(cfg.size);
      const m = mapArea(mem, cfg.indirectAddr as number, len, DESC_SIZE, 'indirect table area');
      this.ind = new DataView(m.buffer, m.byteOffset, len);
      this.indGpa = cfg.indirectAddr as number;
    } else {
      this.ind = null;
      this.indGpa = -1;
    }
    this.tokenOf = new Int32Array(cfg.size);
    this.addrOf = new Float64Array(cfg.size);
    this.busy = new Uint8Array(cfg.size);
  }

  /** Post one buffer; 1 = posted, 0 = ring full. */
  protected abstract postOne(addr: number, len: number, token: number, write: boolean): number;
  /** Make the posted buffers visible to the device. */
  protected abstract flushAvail(): void;
  /** Take the next used buffer: 1 (usedToken/usedLen/usedAddr set) or 0. */
  protected abstract popUsed(): number;
  /** Re-arm used_event / driver event after consuming used buffers (interrupts on). */
  protected abstract rearmInterrupts(): void;
  /** After posting: must the device be notified (kicked)? Consumes the pending state. */
  abstract needsKick(): boolean;
  /** Ask the device for (true) or against (false) used-buffer interrupts. */
  abstract setInterrupts(enable: boolean): void;
  /** Free descriptor slots in the ring. */
  abstract get freeCount(): number;

  /**
   * Post TX buffers: addrs[i] holds a net header (zeroed here) followed by
   * the frame; lens[i] = hdrLen + frame length. Returns the number posted
   * (fewer when the ring is full or a buffer is bad).
   */
  postTx(addrs: Float64Array, lens: Int32Array, tokens: Int32Array, n: number): number {
    if (this.broken) return 0;
    n = Math.min(n, addrs.length, lens.length, tokens.length);
    const mem = this.mem;
    const hdrLen = this.hdrLen;
    let i = 0;
    for (; i < n; i++) {
      const a = addrs[i];
      const l = lens[i];
      if (!(l >= hdrLen)) {
        this.stats.badBuf++;
        break;
      }
      const wi = mem.findGpa(a, hdrLen);
      if (wi < 0 || !mem.contains(a, l)) {
        this.stats.badBuf++;
        break;
      }
      // the whole header fits in window wi (findGpa checked it)
      mem.windows[wi].bytes.fill(0, mem.off, mem.off + hdrLen);
      if (this.postOne(a, l, tokens[i], false) === 0) break;
    }
    if (i > 0) this.flushAvail();
    return i;
  }

  /** n clamped to the free descriptors and the lengths of the three burst arrays (fast paths: one descriptor per buffer). */
  protected burstFit(n: number, free: number, addrs: Float64Array, lens: Int32Array, tokens: Int32Array): number {
    if (n > free) n = free;
    if (n > addrs.length) n = addrs.length;
    if (n > lens.length) n = lens.length;
    if (n > tokens.length) n = tokens.length;
    return n;
  }

  /**
   * Post TX buffers whose net header the caller has already written (zeroed):
   * like postTx, but nothing in the buffers is touched, so the queue needs no
   * access to them. addrs[i] must lie in guest memory (checked here on the
   * generic path; the split fast path, one direct descriptor per buffer,
   * trusts the caller, who vouches for its own buffers: a wrong address
   * reaches only the device, which checks every address it is given).
   * Returns the number posted.
   */
  postTxPrepared(addrs: Float64Array, lens: Int32Array, tokens: Int32Array, n: number): number {
    if (this.broken) return 0;
    n = Math.min(n, addrs.length, lens.length, tokens.length);
    const hdrLen = this.hdrLen;
    let i = 0;
    for (; i < n; i++) {
      const a = addrs[i];
      const l = lens[i];
      if (!(l >= hdrLen) || !this.mem.contains(a, l)) {
        this.stats.badBuf++;
        break;
      }
      if (this.postOne(a, l, tokens[i], false) === 0) break;
    }
    if (i > 0) this.flushAvail();
    return i;
  }

  /** Take back up to `max` TX buffers the device is done with. Returns the count. */
  reclaimTx(tokensOut: Int32Array, max: number): number {
    if (this.broken) return 0;
    if (max > tokensOut.length) max = tokensOut.length;
    let k = 0;
    while (k < max && this.popUsed() === 1) tokensOut[k++] = this.usedToken;
    if (k > 0 && this.intrEnabled && this.eventIdx) this.rearmInterrupts();
    return k;
  }

  /** Post RX buffers of caps[i] bytes at addrs[i]. Returns the number posted. */
  postRx(addrs: Float64Array, caps: Int32Array, tokens: Int32Array, n: number): number {
    if (this.broken) return 0;
    n = Math.min(n, addrs.length, caps.length, tokens.length);
    let i = 0;
    for (; i < n; i++) {
      const a = addrs[i];
      const c = caps[i];
      if (!(c > 0) || !this.mem.contains(a, c)) {
        this.stats.badBuf++;
        break;
      }
      if (this.postOne(a, c, tokens[i], true) === 0) break;
    }
    if (i > 0) this.flushAvail();
    return i;
  }

  /**
   * Take up to `max` filled RX buffers: tokensOut[i], lensOut[i] (bytes written
   * by the device, net header included) and optionally nbufsOut[i] (see the
   * module comment). Returns the count.
   */
  pollRx(tokensOut: Int32Array, lensOut: Int32Array, max: number, nbufsOut?: Int32Array): number {
    if (this.broken) return 0;
    max = Math.min(max, tokensOut.length, lensOut.length, nbufsOut === undefined ? max : nbufsOut.length);
    let k = 0;
    while (k < max && this.popUsed() === 1) {
      tokensOut[k] = this.usedToken;
      lensOut[k] = this.usedLen;
      let nb = 1;
      if (this.mrgRxbuf) {
        if (this.rxRemain > 0) {
          nb = 0;
          this.rxRemain--;
        } else {
          const wi = this.mem.findGpa(this.usedAddr, this.hdrLen);
          if (wi >= 0 && this.usedLen >= this.hdrLen) nb = getNumBuffers(this.mem.windows[wi].bytes, this.mem.off);
          if (nb < 1) nb = 1;
          this.rxRemain = nb - 1;
        }
      }
      if (nbufsOut !== undefined) nbufsOut[k] = nb;
      k++;
    }
    if (k > 0 && this.intrEnabled && this.eventIdx) this.rearmInterrupts();
    return k;
  }
}
