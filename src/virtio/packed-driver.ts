/**
 * Driver side of a packed virtqueue (virtio 1.2 §2.8): PackedDriver, our own ring. Uses the
 * views and constants of layout.ts; the burst algorithms live in
 * DriverQueue.
 *
 * Config: `availAddr` is the Driver Area (driver event suppression),
 * `usedAddr` the Device Area (device event suppression). Indices are
 * encoded like vhost-user's vring base: bits 0-14 ring position, bit 15
 * wrap counter.
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import {
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  DESC_SIZE,
  EV_FLAGS,
  EV_OFF_WRAP,
  mapPackedRing,
  packedAvailBits,
  packedIsUsed,
  packedUsedBits,
  type PackedRing,
  pdFlags,
  pdId,
  PDESC_ADDR,
  PDESC_FLAGS,
  PDESC_ID,
  PDESC_LEN,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  writeAddr,
  decodePackedIdx,
  HOST_LITTLE_ENDIAN,
  PDESC_F_AVAIL,
  PDESC_F_USED,
  packedWantsEvent,
} from './layout.js';
import { DriverQueue, type DriverQueueConfig, DRIVER_INDIRECT_ENTRIES } from './driver-queue.js';

/** Driver side of a packed virtqueue. */
export class PackedDriver extends DriverQueue {
  readonly ring: PackedRing;
  private availPos: number;
  private availWrap: number;
  private usedPos: number;
  private usedWrap: number;
  private numFree: number;
  /** Descriptors made available since the last needsKick(). */
  private kickAdded = 0;
  /** Free buffer ids (not IN_ORDER; with IN_ORDER the id is the head position). */
  private readonly idNext: Uint16Array;
  private idHead = 0;
  private readonly slotsOf: Uint16Array;
  /** IN_ORDER: head position of the last buffer of a batch the device used at once, or -1. */
  private batchEnd = -1;
  private batchLen = 0;
  /** Descriptor ring as u32 words (entry i: [4i]=addr lo, [4i+1]=addr hi, [4i+2]=len); null when not little-endian. */
  private readonly desc32: Uint32Array | null;
  /** One direct descriptor per buffer on a little-endian host: postTxPrepared and reclaimTx work on whole bursts. */
  private readonly fastTx: boolean;

  constructor(mem: GuestMemory, cfg: DriverQueueConfig) {
    super(mem, cfg);
    this.ring = mapPackedRing(mem, {
      size: cfg.size,
      descAddr: cfg.descAddr,
      driverEventAddr: cfg.availAddr,
      deviceEventAddr: cfg.usedAddr,
    });
    const size = cfg.size;
    const [pos, wrap] = decodePackedIdx(cfg.startIdx, size, 'startIdx');
    // zero the ring; descriptors before `pos` look used in this lap, the rest in the previous lap
    new Uint8Array(this.ring.desc.buffer, this.ring.desc.byteOffset, this.ring.desc.byteLength).fill(0);
    this.ring.driverEvent.fill(0);
    this.ring.deviceEvent.fill(0);
    for (let i = 0; i < size; i++) this.ring.desc16[pdFlags(i)] = packedUsedBits(i < pos ? wrap : wrap ^ 1);
    this.availPos = this.usedPos = pos;
    this.availWrap = this.usedWrap = wrap;
    this.numFree = size;
    this.idNext = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.idNext[i] = i + 1;
    this.slotsOf = new Uint16Array(size);
    const d = this.ring.desc;
    this.desc32 = HOST_LITTLE_ENDIAN ? new Uint32Array(d.buffer, d.byteOffset, d.byteLength >> 2) : null;
    this.fastTx = this.desc32 !== null && this.ind === null && !this.hdrSplit;
  }

  get freeCount(): number {
    return this.numFree;
  }

  protected postOne(addr: number, len: number, token: number, write: boolean): number {
    const hdrLen = this.hdrLen;
    const size = this.size;
    const two = len > hdrLen;
    const wf = write ? DESC_F_WRITE : 0;
    const need = this.ind === null && this.hdrSplit && two ? 2 : 1;
    if (this.numFree < need) return 0;
    const dv = this.ring.desc;
    const d16 = this.ring.desc16;
    const head = this.availPos;
    const hw = this.availWrap;
    let id: number;
    if (this.inOrder) {
      id = head;
    } else {
      id = this.idHead;
      this.idHead = this.idNext[id];
    }
    const o = head * DESC_SIZE;
    let headFlags: number;
    if (this.ind !== null) {
      const t = this.ind;
      const to = id * DRIVER_INDIRECT_ENTRIES * DESC_SIZE;
      writeAddr(t, to + PDESC_ADDR, addr);
      t.setUint32(to + PDESC_LEN, two ? hdrLen : len, true);
      t.setUint16(to + PDESC_ID, 0, true);
      t.setUint16(to + PDESC_FLAGS, wf, true);
      if (two) {
        writeAddr(t, to + DESC_SIZE + PDESC_ADDR, addr + hdrLen);
        t.setUint32(to + DESC_SIZE + PDESC_LEN, len - hdrLen, true);
        t.setUint16(to + DESC_SIZE + PDESC_ID, 0, true);
        t.setUint16(to + DESC_SIZE + PDESC_FLAGS, wf, true);
      }
      writeAddr(dv, o + PDESC_ADDR, this.indGpa + to);
      dv.setUint32(o + PDESC_LEN, (two ? 2 : 1) * DESC_SIZE, true);
      headFlags = DESC_F_INDIRECT | packedAvailBits(hw);
    } else if (need === 2) {
      let p1 = head + 1;
      let w1 = hw;
      if (p1 === size) {
        p1 = 0;
        w1 ^= 1;
      }
      const o1 = p1 * DESC_SIZE;
      writeAddr(dv, o1 + PDESC_ADDR, addr + hdrLen);
      dv.setUint32(o1 + PDESC_LEN, len - hdrLen, true);
      d16[pdId(p1)] = id;
      Atomics.store(d16, pdFlags(p1), wf | packedAvailBits(w1));
      writeAddr(dv, o + PDESC_ADDR, addr);
      dv.setUint32(o + PDESC_LEN, hdrLen, true);
      headFlags = wf | DESC_F_NEXT | packedAvailBits(hw);
    } else {
      writeAddr(dv, o + PDESC_ADDR, addr);
      dv.setUint32(o + PDESC_LEN, len, true);
      headFlags = wf | packedAvailBits(hw);
    }
    d16[pdId(head)] = id;
    this.tokenOf[id] = token;
    this.addrOf[id] = addr;
    this.slotsOf[id] = need;
    this.busy[id] = 1;
    // expose the head last
    Atomics.store(d16, pdFlags(head), headFlags);
    let p = head + need;
    if (p >= size) {
      p -= size;
      this.availWrap ^= 1;
    }
    this.availPos = p;
    this.numFree -= need;
    this.kickAdded += need;
    return 1;
  }

  protected flushAvail(): void {
    // each head's flags store already published it
  }

  private bad(): number {
    this.stats.badUsed++;
    this.broken = true;
    return 0;
  }

  protected popUsed(): number {
    const pos = this.usedPos;
    let id: number;
    let len: number;
    if (this.batchEnd >= 0) {
      // IN_ORDER batch: buffers up to batchEnd were used without their own descriptor
      id = pos;
      if (this.busy[id] === 0) return this.bad();
      if (id === this.batchEnd) {
        len = this.batchLen;
        this.batchEnd = -1;
      } else {
        len = 0;
      }
    } else {
      const fl = Atomics.load(this.ring.desc16, pdFlags(pos));
      if (!packedIsUsed(fl, this.usedWrap)) return 0;
      id = this.ring.desc16[pdId(pos)];
      len = this.ring.desc.getUint32(pos * DESC_SIZE + PDESC_LEN, true);
      if (id >= this.size || this.busy[id] === 0) return this.bad();
      if (this.inOrder && id !== pos) {
        this.batchEnd = id;
        this.batchLen = len;
        id = pos;
        len = 0;
        if (this.busy[id] === 0) return this.bad();
      }
    }
    this.usedToken = this.tokenOf[id];
    this.usedLen = len;
    this.usedAddr = this.addrOf[id];
    this.busy[id] = 0;
    const s = this.slotsOf[id];
    let p = pos + s;
    if (p >= this.size) {
      p -= this.size;
      this.usedWrap ^= 1;
    }
    this.usedPos = p;
    this.numFree += s;
    if (!this.inOrder) {
      this.idNext[id] = this.idHead;
      this.idHead = id;
    }
    return 1;
  }

  override postTxPrepared(addrs: Float64Array, lens: Int32Array, tokens: Int32Array, n: number): number {
    if (!this.fastTx) return super.postTxPrepared(addrs, lens, tokens, n);
    if (this.broken) return 0;
    n = this.burstFit(n, this.numFree, addrs, lens, tokens);
    const d32 = this.desc32 as Uint32Array;
    const d16 = this.ring.desc16;
    const size = this.size;
    const hdrLen = this.hdrLen;
    const inOrder = this.inOrder;
    const tokenOf = this.tokenOf;
    const addrOf = this.addrOf;
    const slotsOf = this.slotsOf;
    const busy = this.busy;
    const pos0 = this.availPos;
    const wrap0 = this.availWrap;
    let pos = pos0;
    let wrap = wrap0;
    let firstFlags = 0;
    let i = 0;
    for (; i < n; i++) {
      const a = addrs[i];
      const l = lens[i];
      if (!(l >= hdrLen && a >= 0)) {
        this.stats.badBuf++;
        break;
      }
      let id = pos;
      if (!inOrder) {
        id = this.idHead;
        this.idHead = this.idNext[id];
      }
      const o = pos << 2;
      d32[o] = a >>> 0;
      d32[o + 1] = (a / 0x100000000) >>> 0;
      d32[o + 2] = l;
      d16[8 * pos + 6] = id;
      const fl = wrap ? PDESC_F_AVAIL : PDESC_F_USED;
      // the burst's first descriptor is made available last, so the device sees the burst at once
      if (i === 0) firstFlags = fl;
      else d16[8 * pos + 7] = fl;
      tokenOf[id] = tokens[i];
      addrOf[id] = a;
      slotsOf[id] = 1;
      busy[id] = 1;
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
    }
    if (i > 0) {
      Atomics.store(d16, 8 * pos0 + 7, firstFlags);
      this.availPos = pos;
      this.availWrap = wrap;
      this.numFree -= i;
      this.kickAdded += i;
    }
    return i;
  }

  override reclaimTx(tokensOut: Int32Array, max: number): number {
    if (!this.fastTx || !this.inOrder) return super.reclaimTx(tokensOut, max);
    if (this.broken) return 0;
    if (max > tokensOut.length) max = tokensOut.length;
    // IN_ORDER: one used descriptor may stand for a batch ending at its id; buffers are taken by position
    const d16 = this.ring.desc16;
    const size = this.size;
    const busy = this.busy;
    const tokenOf = this.tokenOf;
    let pos = this.usedPos;
    let wrap = this.usedWrap;
    let k = 0;
    scan: while (k < max) {
      let end = this.batchEnd;
      if (end < 0) {
        const fl = Atomics.load(d16, 8 * pos + 7);
        const av = (fl >>> 7) & 1;
        const us = (fl >>> 15) & 1;
        if (av !== us || us !== wrap) break;
        end = d16[8 * pos + 6];
        if (end >= size || busy[end] === 0) {
          this.bad();
          break;
        }
        this.batchLen = this.ring.desc.getUint32(pos * DESC_SIZE + PDESC_LEN, true);
      }
      // positions pos..end (ring order) were used
      for (;;) {
        if (busy[pos] === 0) {
          // the batch runs past what is outstanding
          this.bad();
          break scan;
        }
        busy[pos] = 0;
        tokensOut[k++] = tokenOf[pos];
        const last = pos === end;
        if (++pos === size) {
          pos = 0;
          wrap ^= 1;
        }
        if (last) {
          this.batchEnd = -1;
          break;
        }
        if (k === max) {
          this.batchEnd = end; // the rest of this batch next time
          break;
        }
      }
    }
    if (k > 0) {
      this.usedPos = pos;
      this.usedWrap = wrap;
      this.numFree += k;
      if (this.intrEnabled && this.eventIdx) this.rearmInterrupts();
    }
    return k;
  }

  needsKick(): boolean {
    const c = this.kickAdded;
    if (c === 0) return false;
    this.kickAdded = 0;
    return packedWantsEvent(this.ring.deviceEvent, this.eventIdx, this.size, this.availPos, this.availWrap, c);
  }

  setInterrupts(enable: boolean): void {
    this.intrEnabled = enable;
    const ev = this.ring.driverEvent;
    if (!enable) {
      Atomics.store(ev, EV_FLAGS, RING_EVENT_FLAGS_DISABLE);
    } else if (this.eventIdx) {
      Atomics.store(ev, EV_OFF_WRAP, this.usedPos | (this.usedWrap << 15));
      Atomics.store(ev, EV_FLAGS, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(ev, EV_FLAGS, RING_EVENT_FLAGS_ENABLE);
    }
  }

  protected rearmInterrupts(): void {
    Atomics.store(this.ring.driverEvent, EV_OFF_WRAP, this.usedPos | (this.usedWrap << 15));
  }
}
