/**
 * Driver side of a split virtqueue (virtio 1.2 §2.7): SplitDriver, our own
 * rings (virtio-user). Uses the views and constants of layout.ts; the burst
 * algorithms live in DriverQueue.
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import {
  AV_FLAGS,
  AV_IDX,
  AV_RING,
  AVAIL_F_NO_INTERRUPT,
  avUsedEvent,
  DESC_ADDR,
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  DESC_FLAGS,
  DESC_LEN,
  DESC_NEXT,
  DESC_SIZE,
  mapSplitRing,
  needEvent,
  type SplitRing,
  US_FLAGS,
  US_IDX,
  usAvailEvent,
  USED_F_NO_NOTIFY,
  usElem,
  writeAddr,
  checkSplitIdx,
  HOST_LITTLE_ENDIAN,
} from './layout.js';
import { DriverQueue, type DriverQueueConfig, DRIVER_INDIRECT_ENTRIES } from './driver-queue.js';

/** Driver side of a split virtqueue. */
export class SplitDriver extends DriverQueue {
  readonly ring: SplitRing;
  private readonly mask: number;
  /** Free descriptor list (shadow links; chains keep their links while in use). */
  private readonly next: Uint16Array;
  private freeHead = 0;
  private numFree: number;
  /** Descriptors of the chain at each head. */
  private readonly chainLen: Uint16Array;
  /** IN_ORDER: head posted at each avail position. */
  private readonly pend: Uint16Array;
  private availIdx: number;
  private publishedAvail: number;
  /** Avail idx at the last needsKick(). */
  private kickedAvail: number;
  /** Next used entry to consume. */
  private usedIdx: number;
  private usedCache: number;
  /**
   * IN_ORDER with one ring descriptor per buffer: the buffer made available at
   * position p always uses descriptor p & mask, so the avail ring is the
   * identity (written once), there is no free list, and used buffers are
   * reclaimed by count (the used entries need not be read).
   */
  private readonly slotHead: boolean;
  /** One direct descriptor per buffer on a little-endian host: postTxPrepared writes desc32 words. */
  private readonly fastTx: boolean;

  constructor(mem: GuestMemory, cfg: DriverQueueConfig) {
    super(mem, cfg);
    this.ring = mapSplitRing(mem, cfg, this.eventIdx);
    const size = cfg.size;
    this.mask = size - 1;
    const start = checkSplitIdx(cfg.startIdx, 'startIdx');
    // zero the ring (it is ours), then set the start index
    new Uint8Array(this.ring.desc.buffer, this.ring.desc.byteOffset, this.ring.desc.byteLength).fill(0);
    this.ring.avail.fill(0);
    this.ring.used16.fill(0);
    this.ring.avail[AV_IDX] = start;
    this.ring.used16[US_IDX] = start;
    if (this.eventIdx) {
      this.ring.avail[avUsedEvent(size)] = start;
      this.ring.used16[usAvailEvent(size)] = start;
    }
    this.next = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.next[i] = i + 1;
    this.numFree = size;
    this.chainLen = new Uint16Array(size);
    this.pend = new Uint16Array(size);
    this.availIdx = start;
    this.publishedAvail = start;
    this.kickedAvail = start;
    this.usedIdx = start;
    this.usedCache = start;
    this.slotHead = this.inOrder && !this.hdrSplit;
    this.fastTx = !this.hdrSplit && this.ind === null && HOST_LITTLE_ENDIAN;
    if (this.slotHead) for (let i = 0; i < size; i++) this.ring.avail[AV_RING + i] = i;
  }

  get freeCount(): number {
    return this.numFree;
  }

  protected postOne(addr: number, len: number, token: number, write: boolean): number {
    const hdrLen = this.hdrLen;
    const two = len > hdrLen; // payload beyond the header: a second element
    const wf = write ? DESC_F_WRITE : 0;
    const dv = this.ring.desc;
    const slotHead = this.slotHead;
    const head = slotHead ? this.availIdx & this.mask : this.freeHead;
    let need: number;
    if (this.ind !== null) {
      need = 1;
      if (this.numFree < 1) return 0;
      const t = this.ind;
      const to = head * DRIVER_INDIRECT_ENTRIES * DESC_SIZE;
      writeAddr(t, to + DESC_ADDR, addr);
      t.setUint32(to + DESC_LEN, two ? hdrLen : len, true);
      t.setUint16(to + DESC_FLAGS, wf | (two ? DESC_F_NEXT : 0), true);
      t.setUint16(to + DESC_NEXT, 1, true);
      if (two) {
        writeAddr(t, to + DESC_SIZE + DESC_ADDR, addr + hdrLen);
        t.setUint32(to + DESC_SIZE + DESC_LEN, len - hdrLen, true);
        t.setUint16(to + DESC_SIZE + DESC_FLAGS, wf, true);
        t.setUint16(to + DESC_SIZE + DESC_NEXT, 0, true);
      }
      const o = head * DESC_SIZE;
      writeAddr(dv, o + DESC_ADDR, this.indGpa + to);
      dv.setUint32(o + DESC_LEN, (two ? 2 : 1) * DESC_SIZE, true);
      dv.setUint16(o + DESC_FLAGS, DESC_F_INDIRECT, true);
      dv.setUint16(o + DESC_NEXT, 0, true);
    } else if (this.hdrSplit && two) {
      need = 2;
      if (this.numFree < 2) return 0;
      const d1 = this.next[head];
      const o0 = head * DESC_SIZE;
      const o1 = d1 * DESC_SIZE;
      writeAddr(dv, o0 + DESC_ADDR, addr);
      dv.setUint32(o0 + DESC_LEN, hdrLen, true);
      dv.setUint16(o0 + DESC_FLAGS, wf | DESC_F_NEXT, true);
      dv.setUint16(o0 + DESC_NEXT, d1, true);
      writeAddr(dv, o1 + DESC_ADDR, addr + hdrLen);
      dv.setUint32(o1 + DESC_LEN, len - hdrLen, true);
      dv.setUint16(o1 + DESC_FLAGS, wf, true);
      dv.setUint16(o1 + DESC_NEXT, 0, true);
    } else {
      need = 1;
      if (this.numFree < 1) return 0;
      const o = head * DESC_SIZE;
      writeAddr(dv, o + DESC_ADDR, addr);
      dv.setUint32(o + DESC_LEN, len, true);
      dv.setUint16(o + DESC_FLAGS, wf, true);
      dv.setUint16(o + DESC_NEXT, 0, true);
    }
    this.tokenOf[head] = token;
    this.addrOf[head] = addr;
    if (slotHead) {
      // need is 1 here (hdrSplit is off); the avail ring already holds the identity
      this.numFree--;
      this.availIdx = (this.availIdx + 1) & 0xffff;
      return 1;
    }
    // take `need` descriptors off the free list
    let last = head;
    for (let j = 1; j < need; j++) last = this.next[last];
    this.freeHead = this.next[last];
    this.numFree -= need;
    this.chainLen[head] = need;
    this.busy[head] = 1;
    const slot = this.availIdx & this.mask;
    this.ring.avail[AV_RING + slot] = head;
    this.pend[slot] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return 1;
  }

  protected flushAvail(): void {
    if (this.availIdx !== this.publishedAvail) {
      Atomics.store(this.ring.avail, AV_IDX, this.availIdx);
      this.publishedAvail = this.availIdx;
    }
  }

  protected popUsed(): number {
    const u = this.usedIdx;
    if (u === this.usedCache) {
      const c = Atomics.load(this.ring.used16, US_IDX);
      if (c === u) return 0;
      if (((c - u) & 0xffff) > ((this.publishedAvail - u) & 0xffff)) {
        // more used than outstanding: the device is broken
        this.stats.badUsed++;
        this.broken = true;
        return 0;
      }
      this.usedCache = c;
    }
    const e = usElem(u & this.mask);
    let head: number;
    if (this.slotHead) {
      // outstanding buffers are exactly positions usedIdx..availIdx (the count was checked)
      head = u & this.mask;
      this.usedLen = this.ring.used32[e + 1];
      this.usedToken = this.tokenOf[head];
      this.usedAddr = this.addrOf[head];
      this.numFree++;
      this.usedIdx = (u + 1) & 0xffff;
      return 1;
    }
    if (this.inOrder) {
      head = this.pend[u & this.mask];
      if (this.busy[head] === 0) {
        this.stats.badUsed++;
        this.broken = true;
        return 0;
      }
    } else {
      head = this.ring.used32[e];
      if (head >= this.size || this.busy[head] === 0) {
        this.stats.badUsed++;
        this.broken = true;
        return 0;
      }
    }
    this.usedLen = this.ring.used32[e + 1];
    this.usedToken = this.tokenOf[head];
    this.usedAddr = this.addrOf[head];
    this.busy[head] = 0;
    // give the chain's descriptors back (its shadow links are intact)
    const k = this.chainLen[head];
    let last = head;
    for (let j = 1; j < k; j++) last = this.next[last];
    this.next[last] = this.freeHead;
    this.freeHead = head;
    this.numFree += k;
    this.usedIdx = (u + 1) & 0xffff;
    return 1;
  }

  override postTxPrepared(addrs: Float64Array, lens: Int32Array, tokens: Int32Array, n: number): number {
    if (!this.fastTx) return super.postTxPrepared(addrs, lens, tokens, n);
    if (this.broken) return 0;
    n = this.burstFit(n, this.numFree, addrs, lens, tokens);
    const d32 = this.ring.desc32;
    const tokenOf = this.tokenOf;
    const addrOf = this.addrOf;
    const mask = this.mask;
    const hdrLen = this.hdrLen;
    const slotHead = this.slotHead;
    let ai = this.availIdx;
    let i = 0;
    for (; i < n; i++) {
      const a = addrs[i];
      const l = lens[i];
      if (!(l >= hdrLen && a >= 0)) {
        this.stats.badBuf++;
        break;
      }
      const slot = ai & mask;
      let head = slot; // IN_ORDER: descriptor = avail position (the avail ring holds the identity)
      if (!slotHead) {
        // from the free list, named in the avail ring
        head = this.freeHead;
        this.freeHead = this.next[head];
        this.chainLen[head] = 1;
        this.busy[head] = 1;
        this.ring.avail[AV_RING + slot] = head;
        this.pend[slot] = head;
      }
      const o = head << 2;
      d32[o] = a >>> 0; // addr lo (ToUint32 is the value mod 2^32)
      d32[o + 1] = (a / 0x100000000) >>> 0;
      d32[o + 2] = l;
      d32[o + 3] = 0; // flags 0 (device-readable, no next), next 0
      tokenOf[head] = tokens[i];
      addrOf[head] = a;
      ai = (ai + 1) & 0xffff;
    }
    if (i > 0) {
      this.numFree -= i;
      this.availIdx = ai;
      Atomics.store(this.ring.avail, AV_IDX, ai);
      this.publishedAvail = ai;
    }
    return i;
  }

  override reclaimTx(tokensOut: Int32Array, max: number): number {
    if (!this.slotHead) return super.reclaimTx(tokensOut, max);
    if (this.broken) return 0;
    if (max > tokensOut.length) max = tokensOut.length;
    const u = this.usedIdx;
    const c = Atomics.load(this.ring.used16, US_IDX);
    let k = (c - u) & 0xffff;
    if (k === 0) return 0;
    if (k > ((this.publishedAvail - u) & 0xffff)) {
      // more used than outstanding: the device is broken
      this.stats.badUsed++;
      this.broken = true;
      return 0;
    }
    this.usedCache = c;
    if (k > max) k = max;
    const tokenOf = this.tokenOf;
    const mask = this.mask;
    for (let i = 0; i < k; i++) tokensOut[i] = tokenOf[(u + i) & mask];
    this.numFree += k;
    this.usedIdx = (u + k) & 0xffff;
    if (this.intrEnabled && this.eventIdx) this.rearmInterrupts();
    return k;
  }

  needsKick(): boolean {
    const nw = this.publishedAvail;
    const old = this.kickedAvail;
    if (nw === old) return false;
    this.kickedAvail = nw;
    if (this.eventIdx) return needEvent(Atomics.load(this.ring.used16, usAvailEvent(this.size)), nw, old);
    return (Atomics.load(this.ring.used16, US_FLAGS) & USED_F_NO_NOTIFY) === 0;
  }

  setInterrupts(enable: boolean): void {
    this.intrEnabled = enable;
    if (this.eventIdx) {
      const ev = enable ? this.usedIdx : (this.usedIdx - this.size - 1) & 0xffff;
      Atomics.store(this.ring.avail, avUsedEvent(this.size), ev);
    } else {
      Atomics.store(this.ring.avail, AV_FLAGS, enable ? 0 : AVAIL_F_NO_INTERRUPT);
    }
  }

  protected rearmInterrupts(): void {
    Atomics.store(this.ring.avail, avUsedEvent(this.size), this.usedIdx);
  }
}
