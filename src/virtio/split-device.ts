/**
 * Device side of a split virtqueue (virtio 1.2 §2.7): SplitDevice, the
 * vhost-user backend's view of a hostile guest's ring. Uses the views and
 * constants of layout.ts; the burst algorithms live in DeviceQueue.
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
  DESC_FLAGS,
  DESC_LEN,
  DESC_NEXT,
  DESC_SIZE,
  mapSplitRing,
  needEvent,
  readAddr,
  type SplitRing,
  US_FLAGS,
  US_IDX,
  usAvailEvent,
  USED_F_NO_NOTIFY,
  usElem,
  checkSplitIdx,
} from './layout.js';
import {
  DeviceQueue,
  type DeviceQueueConfig,
  INDIRECT_MAX,
  PEEK_BROKEN,
  PEEK_NONE,
  V_BAD_CHAIN,
  V_BAD_INDIRECT,
  V_LOOP,
  V_OK,
} from './device-queue.js';

/** Device side of a split virtqueue. */
export class SplitDevice extends DeviceQueue {
  readonly ring: SplitRing;
  private readonly mask: number;
  /** Next avail entry to consume (committed), 16-bit. */
  private lastAvail: number;
  /** Next avail entry to peek, 16-bit. */
  private peekIdx: number;
  /** Last avail idx read from the ring. */
  private availCache: number;
  /** Next used entry to write, 16-bit. */
  private lastUsed: number;
  /** Used idx last stored to the ring. */
  private publishedUsed: number;
  /** Used idx at the last needsInterrupt(). */
  private signalledUsed: number;

  constructor(mem: GuestMemory, cfg: DeviceQueueConfig) {
    super(mem, cfg.size, cfg.features);
    this.ring = mapSplitRing(mem, cfg, this.eventIdx);
    this.mask = cfg.size - 1;
    const idx = checkSplitIdx(cfg.lastAvailIdx, 'lastAvailIdx');
    this.lastAvail = idx;
    this.peekIdx = idx;
    this.availCache = idx;
    this.lastUsed = idx;
    this.publishedUsed = idx;
    this.signalledUsed = idx;
  }

  get lastAvailIdx(): number {
    return this.lastAvail;
  }

  /** Next used index this device will write (16-bit). */
  get lastUsedIdx(): number {
    return this.lastUsed;
  }

  hasAvail(): boolean {
    if (this.broken) return false;
    return Atomics.load(this.ring.avail, AV_IDX) !== this.lastAvail;
  }

  protected peekChain(write: boolean): number {
    const pos = this.peekIdx;
    if (pos === this.availCache) {
      const ai = Atomics.load(this.ring.avail, AV_IDX);
      if (((ai - this.lastAvail) & 0xffff) > this.size) {
        this.stats.badIndex++;
        this.broken = true;
        return PEEK_BROKEN;
      }
      this.availCache = ai;
      if (ai === pos) return PEEK_NONE;
    }
    const head = this.ring.avail[AV_RING + (pos & this.mask)];
    if (head >= this.size) {
      this.stats.badHead++;
      this.broken = true;
      return PEEK_BROKEN;
    }
    this.peekIdx = (pos + 1) & 0xffff;
    const k = this.resN;
    const segStart = this.segN;
    this.walkTotal = 0;
    const v = this.walk(head, write);
    this.resId[k] = head;
    this.resSlots[k] = 1;
    this.resN = k + 1;
    if (v !== V_OK) {
      this.segN = segStart;
      this.resSegEnd[k] = segStart;
      return this.violation(v);
    }
    this.resSegEnd[k] = this.segN;
    return this.walkTotal;
  }

  /** Walk the chain at `head`, recording segments. Returns a violation code. */
  private walk(head: number, write: boolean): number {
    const mem = this.mem;
    let dv = this.ring.desc;
    let base = 0;
    let n = this.size; // entries of the current table
    let budget = n; // descriptors we may still visit in it
    let inIndirect = false;
    let idx = head;
    for (;;) {
      if (budget-- <= 0) return V_LOOP;
      const o = base + idx * DESC_SIZE;
      const addr = readAddr(dv, o + DESC_ADDR);
      const len = dv.getUint32(o + DESC_LEN, true);
      const flags = dv.getUint16(o + DESC_FLAGS, true);
      if ((flags & DESC_F_INDIRECT) !== 0) {
        if (!this.indirect || inIndirect || (flags & DESC_F_NEXT) !== 0) return V_BAD_INDIRECT;
        if (len === 0 || len % DESC_SIZE !== 0 || len > INDIRECT_MAX * DESC_SIZE || addr < 0) return V_BAD_INDIRECT;
        const wi = mem.findGpa(addr, len);
        if (wi < 0) return V_BAD_INDIRECT;
        dv = mem.windows[wi].dv;
        base = mem.off;
        n = len / DESC_SIZE;
        budget = n;
        inIndirect = true;
        idx = 0;
        continue;
      }
      const v = this.addSeg(addr, len, flags, write);
      if (v !== V_OK) return v;
      if ((flags & DESC_F_NEXT) === 0) return V_OK;
      idx = dv.getUint16(o + DESC_NEXT, true);
      if (idx >= n) return V_BAD_CHAIN;
    }
  }

  protected commit(_write: boolean): void {
    const used32 = this.ring.used32;
    const mask = this.mask;
    let u = this.lastUsed;
    for (let j = 0; j < this.resN; j++) {
      const e = usElem(u & mask);
      used32[e] = this.resId[j];
      used32[e + 1] = this.resLen[j];
      u = (u + 1) & 0xffff;
    }
    this.lastUsed = u;
    this.lastAvail = (this.lastAvail + this.resN) & 0xffff;
    this.peekIdx = this.lastAvail;
    this.stats.chains += this.resN;
    this.resN = 0;
    this.segN = 0;
  }

  protected rewind(): void {
    this.peekIdx = this.lastAvail;
    this.resN = 0;
    this.segN = 0;
  }

  protected publish(): void {
    if (this.lastUsed !== this.publishedUsed) {
      // Atomics.store orders the used elements before the index
      Atomics.store(this.ring.used16, US_IDX, this.lastUsed);
      this.publishedUsed = this.lastUsed;
      if (this.eventIdx && this.notifyEnabled) Atomics.store(this.ring.used16, usAvailEvent(this.size), this.lastAvail);
    }
  }

  needsInterrupt(): boolean {
    if (this.broken) return false;
    const nu = this.publishedUsed;
    const old = this.signalledUsed;
    if (nu === old) return false;
    this.signalledUsed = nu;
    const avail = this.ring.avail;
    if (this.eventIdx) return needEvent(Atomics.load(avail, avUsedEvent(this.size)), nu, old);
    if (this.notifyOnEmpty && Atomics.load(avail, AV_IDX) === this.lastAvail) return true;
    return (Atomics.load(avail, AV_FLAGS) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  setNotification(enable: boolean): void {
    if (this.broken) return;
    this.notifyEnabled = enable;
    if (this.eventIdx) {
      if (enable) Atomics.store(this.ring.used16, usAvailEvent(this.size), this.lastAvail);
    } else {
      Atomics.store(this.ring.used16, US_FLAGS, enable ? 0 : USED_F_NO_NOTIFY);
    }
  }
}
