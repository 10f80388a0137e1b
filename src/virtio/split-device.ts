/**
 * Device side of a split virtqueue (virtio 1.2 §2.7): SplitDevice, the
 * vhost-user backend's view of a hostile guest's ring. Uses the views and
 * constants of layout.ts; the burst algorithms live in DeviceQueue.
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import {
  DescWord,
  RingBits,
  UsedWord,
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
  DQ_STOP,
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
  /**
   * The guest RX touch ({@link touchRx}) on (default). The fast-vs-general differential test turns
   * it off to compare guest memory byte for byte; test/virtio/fastpath.test.ts checks the touch itself.
   */
  static rxTouch = true;

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
  /** Avail idx read by availCount() and not yet used by a burst, or -1. */
  private availSeen = -1;


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

  availCount(max = this.size): number {
    if (this.broken) return 0;
    const ai = Atomics.load(this.ring.avail, AV_IDX);
    this.availSeen = ai; // the next burst starts from this read (one atomic load per burst, not two)
    const n = (ai - this.lastAvail) & 0xffff;
    const m = max < this.size ? max : this.size;
    return n > m ? m : n;
  }

  /** Between chains: next avail entry to consume (and peek) and next used entry to write. */
  private setCursors(lastAvail: number, lastUsed: number): void {
    this.lastAvail = lastAvail;
    this.peekIdx = lastAvail;
    this.lastUsed = lastUsed;
  }

  /**
   * Guest TX fast path (dequeueBurst, dequeueBurstDeferred): chains of one
   * read-only descriptor (header and frame in one buffer, the layout of DPDK's
   * virtio and of Linux virtio-net with VERSION_1) inside one memory window,
   * copied by 32-bit words; anything else, in ring order, through the general
   * {@link dequeueOne}, which checks and counts every rule. Same results as the
   * general path, by construction and by test. Used entries are written, the
   * used index is published by the caller (releaseDeferred). tLen null: whole
   * frames; else tails past `priv` bytes (see takeFrame).
   */
  protected override dequeueFast(
    dst: Uint8Array, dstOffs: Int32Array, cap: number, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, n: number,
  ): number {
    if (n > dstOffs.length) n = dstOffs.length;
    if (n > lens.length) n = lens.length;
    const avail = this.ring.avail;
    let la = this.lastAvail;
    // availCount's read, if it was the last one and still ahead of us; else a fresh one
    const seen = this.availSeen;
    this.availSeen = -1;
    const sp = (seen - la) & 0xffff;
    const ai = seen >= 0 && sp > 0 && sp <= this.size ? seen : Atomics.load(avail, AV_IDX);
    const pending = (ai - la) & 0xffff;
    if (pending === 0) return 0;
    if (pending > this.size) {
      this.badAvailIndex(ai);
      return 0;
    }
    this.availCache = ai;
    if (n > pending) n = pending;
    if (n >= 4) this.touch(la, n); // a few frames: nothing to overlap
    const d32 = this.ring.desc32;
    const used32 = this.ring.used32;
    const mask = this.mask;
    const size = this.size;
    const dw = this.wordsOfCaller(dst);
    const dlen = dst.length;
    let lu = this.lastUsed;
    let got = 0;
    let fast = 0;
    let fastBytes = 0;
    for (let c = 0; c < n; c++) {
      const head = avail[AV_RING + (la & mask)];
      const o = head << DescWord.SHIFT;
      const d0 = dstOffs[got];
      if (head < size && (d32[o + DescWord.FLAGS_NEXT] & RingBits.SPLIT_FLAGS_MASK) === 0 && dw !== null && (d0 & 3) === 0) {
        // each descriptor word is read once: the guest may change them while we look
        const len = d32[o + DescWord.LEN];
        const so = this.txFrameOffset(d32[o + DescWord.ADDR_HI], d32[o + DescWord.ADDR_LO], len, d0, cap, dlen);
        if (so >= 0) {
          const flen = len - this.hdrLen;
          this.takeFrame(dst, dw, d0, so, flen, priv, tWin, tW32, tOff, tLen, got);
          lens[got++] = flen;
          fastBytes += flen;
          const e = UsedWord.ELEM0 + UsedWord.PER_ELEM * (lu & mask);
          used32[e] = head;
          used32[e + 1] = 0;
          lu = (lu + 1) & 0xffff;
          la = (la + 1) & 0xffff;
          fast++;
          continue;
        }
      }
      // general path for this chain (it checks and counts everything; copies the whole frame)
      this.setCursors(la, lu);
      const r = this.dequeueOne(dst, d0, cap);
      la = this.lastAvail;
      lu = this.lastUsed;
      if (r === DQ_STOP) break;
      if (r >= 0) {
        if (tLen !== null) tLen[got] = 0;
        lens[got++] = r;
      }
    }
    this.setCursors(la, lu);
    this.countFast(fast, fastBytes);
    return got;
  }

  /** Loads whose values nobody uses (see touch). */
  private sink = 0;

  /**
   * Bring the next n avail entries from la and their descriptors into the
   * cache, with independent loads before the burst's loop (as DPDK's
   * rte_prefetch0): the driver's core wrote them, and the loop's dependent
   * loads would wait for each line in turn. The values are not used: the loop
   * reads what it uses once, itself. (Touching each buffer's first line as well
   * made p2p 64 B 2-8% slower, near CPUs and far alike, measured inside one run
   * 2026-12-03 19:37-19:40 UTC: the copy's own loads overlap well enough.)
   */
  private touch(la: number, n: number): void {
    const avail = this.ring.avail;
    const d32 = this.ring.desc32;
    const mask = this.mask;
    const size = this.size;
    let acc = 0;
    for (let c = 0; c < n; c++) {
      const head = avail[AV_RING + ((la + c) & mask)];
      if (head < size) acc ^= d32[(head << DescWord.SHIFT) + DescWord.ADDR_LO];
    }
    this.sink = acc;
  }

  /**
   * Guest RX: take ownership of the lines the next n frames will be written to
   * (each buffer's first word and the word where frame c would end) with
   * independent stores before the burst's copy loop, so the reads-for-ownership
   * of a whole burst overlap instead of waiting for each frame in turn (the
   * driver's core read these lines last). The stores write zeros where the
   * copy writes next; a buffer whose frame goes elsewhere (a frame before it did
   * not fit, the burst ended) keeps them, which the spec allows for a
   * device-writable buffer the driver made available, and the guest reads only
   * its used length. (Writing back the value read instead keeps the memory as
   * it was but waits for each load: 4% slower near, the far gain lost; in-run
   * A/B 20:04-20:05 UTC.) Only single device-writable descriptors (what the
   * fast loop takes) inside the fast window; each descriptor word is read once;
   * never while dirty logging is on (the fast paths do not run then).
   */
  private touchRx(la: number, n: number, lens: Int32Array): void {
    const fw = this.fwW32;
    if (fw === null) return;
    const avail = this.ring.avail;
    const d32 = this.ring.desc32;
    const mask = this.mask;
    const size = this.size;
    const base = this.fwGpa;
    const wlen = this.fwEnd - base;
    for (let c = 0; c < n; c++) {
      const head = avail[AV_RING + ((la + c) & mask)];
      if (head >= size) continue;
      const o = head << DescWord.SHIFT;
      if ((d32[o + DescWord.FLAGS_NEXT] & RingBits.SPLIT_FLAGS_MASK) !== DESC_F_WRITE) continue;
      const hi = d32[o + DescWord.ADDR_HI];
      if (hi > RingBits.ADDR_HI_MAX) continue;
      const blen = d32[o + DescWord.LEN];
      const off = hi * RingBits.ADDR_HI_UNIT + d32[o + DescWord.ADDR_LO] - base;
      const end = this.hdrLen + lens[c];
      if ((off & 3) !== 0 || off < 0 || end > blen || end < 16 || off + end > wlen) continue;
      fw[off >> 2] = 0;
      fw[(off + end - 4) >> 2] = 0;
    }
  }

  /** Count and report an avail index more than the queue size ahead of ours (the queue breaks). */
  private badAvailIndex(ai: number): void {
    const la = this.lastAvail;
    this.stats.badIndex++;
    this.markBroken(`the driver's avail index ${ai} is ${(ai - la) & 0xffff} entries past ours (${la}): more than the queue size ${this.size}`);
  }

  /**
   * Guest RX fast path (enqueueBurst, enqueueBurstTails): a frame into one
   * device-writable descriptor that holds header + frame (DPDK's virtio and
   * Linux virtio-net post such buffers with MRG_RXBUF), inside one memory
   * window, word-aligned, a tail (tLen[i] > 0) written straight from the
   * source guest (putFrame). Anything else goes through the general
   * {@link enqueueOne}, a tail first copied in. Published; lastDirect set.
   */
  protected override enqueueFast(
    src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, n: number,
  ): number {
    if (n > srcOffs.length) n = srcOffs.length;
    if (n > lens.length) n = lens.length;
    this.badInBurst = 0;
    const avail = this.ring.avail;
    const ai = Atomics.load(avail, AV_IDX);
    let la = this.lastAvail;
    let pending = (ai - la) & 0xffff;
    if (pending > this.size) {
      this.badAvailIndex(ai);
      return 0;
    }
    this.availCache = ai;
    const hdrLen = this.hdrLen;
    const sw = this.wordsOfCaller(src);
    if (pending >= 4 && n >= 4) {
      const m = n < pending ? n : pending;
      this.touch(la, m);
      if (SplitDevice.rxTouch && hdrLen === 12 && sw !== null) this.touchRx(la, m, lens);
    }
    const d32 = this.ring.desc32;
    const used32 = this.ring.used32;
    const mask = this.mask;
    const size = this.size;
    const slen = src.length;
    let lu = this.lastUsed;
    let fast = 0;
    let fastBytes = 0;
    let direct = 0;
    let i = 0;
    for (; i < n; i++) {
      const flen = lens[i];
      const so = srcOffs[i];
      const tl = tLen !== null ? tLen[i] : 0;
      if (pending > 0 && hdrLen === 12 && sw !== null && flen >= 0 && so >= 0 && so + flen <= slen && (so & 3) === 0) {
        const head = avail[AV_RING + (la & mask)];
        const o = head << DescWord.SHIFT;
        // each descriptor word is read once: the guest may change them while we look (a length
        // checked here and re-read for the window check would let a write run past the window)
        if (head < size && (d32[o + DescWord.FLAGS_NEXT] & RingBits.SPLIT_FLAGS_MASK) === DESC_F_WRITE) {
          const total = hdrLen + flen;
          const wo = this.rxBufferOffset(d32[o + DescWord.ADDR_HI], d32[o + DescWord.ADDR_LO], d32[o + DescWord.LEN], total);
          if (wo >= 0) {
            const put = this.putFrame(wo, src, sw, so, flen, priv, tWin, tW32, tOff, tl, i);
            if (put < 0) {
              this.stats.badFrame++; // inconsistent tail description (a caller error): dropped
              continue;
            }
            direct += put;
            const e = UsedWord.ELEM0 + UsedWord.PER_ELEM * (lu & mask);
            used32[e] = head;
            used32[e + 1] = total;
            lu = (lu + 1) & 0xffff;
            la = (la + 1) & 0xffff;
            pending--;
            fastBytes += flen;
            fast++;
            continue;
          }
        }
      }
      // general path for this frame (a tail first joins the private part)
      if (tl > 0) this.materializeTail(src, so, flen, priv, tWin[i], tW32[i], tOff[i], tl);
      this.setCursors(la, lu);
      const ok = this.enqueueOne(src, so, flen);
      la = this.lastAvail;
      lu = this.lastUsed;
      if (!ok) break;
      pending = (this.availCache - la) & 0xffff;
    }
    this.setCursors(la, lu);
    this.countFast(fast, fastBytes);
    this.publish();
    this.lastDirect = direct;
    return i;
  }

  protected peekChain(write: boolean): number {
    const pos = this.peekIdx;
    if (pos === this.availCache) {
      const ai = Atomics.load(this.ring.avail, AV_IDX);
      if (((ai - this.lastAvail) & 0xffff) > this.size) {
        this.badAvailIndex(ai);
        return PEEK_BROKEN;
      }
      this.availCache = ai;
      if (ai === pos) return PEEK_NONE;
    }
    const head = this.ring.avail[AV_RING + (pos & this.mask)];
    if (head >= this.size) {
      this.stats.badHead++;
      this.markBroken(`avail entry ${pos} names descriptor ${head}, outside the queue (size ${this.size})`);
      return PEEK_BROKEN;
    }
    this.peekIdx = (pos + 1) & 0xffff;
    const k = this.resN;
    const segStart = this.segN;
    this.walkTotal = 0;
    return this.reserve(k, head, 1, segStart, this.walk(head, write));
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

  protected commit(write: boolean): void {
    const used32 = this.ring.used32;
    const mask = this.mask;
    let u = this.lastUsed;
    for (let j = 0; j < this.resN; j++) {
      const e = usElem(u & mask);
      used32[e] = this.resId[j];
      used32[e + 1] = this.resLen[j];
      u = (u + 1) & 0xffff;
    }
    if (this.dirty !== null) this.logCommit(write);
    this.lastUsed = u;
    this.lastAvail = (this.lastAvail + this.resN) & 0xffff;
    this.peekIdx = this.lastAvail;
    this.stats.chains += this.resN;
    this.resN = 0;
    this.segN = 0;
  }

  /** Logging: the buffers filled (guest RX) and the used elements written by commit(). */
  private logCommit(write: boolean): void {
    if (write) this.logReservedBuffers();
    let u = this.lastUsed;
    for (let j = 0; j < this.resN; j++) {
      this.logRingWrite(4 * usElem(u & this.mask), 8);
      u = (u + 1) & 0xffff;
    }
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
      if (this.dirty !== null) {
        this.logRingWrite(2 * US_IDX, 2);
        if (this.eventIdx && this.notifyEnabled) this.logRingWrite(2 * usAvailEvent(this.size), 2);
      }
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
      if (enable) {
        Atomics.store(this.ring.used16, usAvailEvent(this.size), this.lastAvail);
        this.logRingWrite(2 * usAvailEvent(this.size), 2);
      }
    } else {
      Atomics.store(this.ring.used16, US_FLAGS, enable ? 0 : USED_F_NO_NOTIFY);
      this.logRingWrite(2 * US_FLAGS, 2);
    }
  }
}
