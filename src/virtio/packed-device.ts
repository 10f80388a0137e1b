/**
 * Device side of a packed virtqueue (virtio 1.2 §2.8): PackedDevice, hostile guest. Uses the
 * views and constants of layout.ts; the burst algorithms live in
 * DeviceQueue.
 *
 * Config: `availAddr` is the Driver Area (driver event suppression),
 * `usedAddr` the Device Area (device event suppression). Indices are
 * encoded like vhost-user's vring base: bits 0-14 ring position, bit 15
 * wrap counter.
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import {
  DescWord,
  PackedU16,
  RingBits,
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  DESC_SIZE,
  EV_FLAGS,
  EV_OFF_WRAP,
  mapPackedRing,
  packedIsAvail,
  packedUsedBits,
  type PackedRing,
  pdFlags,
  pdId,
  PDESC_ADDR,
  PDESC_FLAGS,
  PDESC_ID,
  PDESC_LEN,
  readAddr,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  decodePackedIdx,
  packedWantsEvent,
} from './layout.js';
import {
  DeviceQueue,
  type DeviceQueueConfig,
  DQ_STOP,
  INDIRECT_MAX,
  PEEK_BROKEN,
  PEEK_NONE,
  V_BAD_INDIRECT,
  V_OK,
} from './device-queue.js';

/** Device side of a packed virtqueue. */
export class PackedDevice extends DeviceQueue {
  readonly ring: PackedRing;
  private availPos: number;
  private availWrap: number;
  private peekPos: number;
  private peekWrap: number;
  /** Ring slots in the current reservation. */
  private peekSlots = 0;
  private usedPos: number;
  private usedWrap: number;
  /** Slots marked used since the last needsInterrupt(). */
  private usedSince = 0;
  /** Avail position (with wrap) last written to the device event area. */
  private publishedEvent = -1;
  /** Guest address of the descriptor ring (used descriptors are written there: logged while logging). */
  private readonly descGpa: number;

  constructor(mem: GuestMemory, cfg: DeviceQueueConfig) {
    super(mem, cfg.size, cfg.features);
    this.ring = mapPackedRing(mem, {
      size: cfg.size,
      descAddr: cfg.descAddr,
      driverEventAddr: cfg.availAddr,
      deviceEventAddr: cfg.usedAddr,
    });
    this.descGpa = cfg.descAddr;
    const [pos, wrap] = decodePackedIdx(cfg.lastAvailIdx, cfg.size, 'lastAvailIdx');
    this.availPos = this.peekPos = this.usedPos = pos;
    this.availWrap = this.peekWrap = this.usedWrap = wrap;
  }

  get lastAvailIdx(): number {
    return this.availPos | (this.availWrap << 15);
  }

  /** Next used position with the used wrap counter in bit 15. */
  get lastUsedIdx(): number {
    return this.usedPos | (this.usedWrap << 15);
  }

  hasAvail(): boolean {
    if (this.broken) return false;
    return packedIsAvail(Atomics.load(this.ring.desc16, pdFlags(this.availPos)), this.availWrap);
  }

  /**
   * Descriptors the driver has made available from our position, counted up to
   * `max` (a packed ring has no index to read: the flags of each slot say). An
   * upper bound on the chains available (a chain may take several slots).
   */
  availCount(max = this.size): number {
    if (this.broken) return 0;
    const d16 = this.ring.desc16;
    const size = this.size;
    if (max > size) max = size;
    let pos = this.availPos;
    let wrap = this.availWrap;
    let n = 0;
    while (n < max && packedIsAvail(Atomics.load(d16, PackedU16.PER_DESC * pos + PackedU16.FLAGS), wrap)) {
      n++;
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
    }
    return n;
  }

  /** Between chains (no reservation): next avail slot and wrap, and next used slot and wrap. */
  private setCursors(pos: number, wrap: number, usedPos: number, usedWrap: number): void {
    this.availPos = this.peekPos = pos;
    this.availWrap = this.peekWrap = wrap;
    this.usedPos = usedPos;
    this.usedWrap = usedWrap;
  }

  /** Slots taken by the fast path and not yet marked used (in ring order), and how many. */
  private deferPos: Int32Array | null = null;
  private deferN = 0;
  /** Used wrap counter of each deferred slot. */
  private deferWrap: Uint8Array | null = null;

  /**
   * Guest TX fast path (dequeueBurst, dequeueBurstDeferred): chains of one
   * read-only descriptor inside one memory window, copied by words, their
   * slots recorded and marked used by {@link releaseDeferred} (flags stored
   * last, in ring order; dequeueBurst releases at the end of the burst, one
   * copy after the burst's frames have gone out); anything else, in ring
   * order, through the general {@link dequeueOne} (marked used at once).
   * tLen null: whole frames; else tails past `priv` bytes (see takeFrame).
   */
  protected override dequeueFast(
    dst: Uint8Array, dstOffs: Int32Array, cap: number, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, n: number,
  ): number {
    if (n > dstOffs.length) n = dstOffs.length;
    if (n > lens.length) n = lens.length;
    if (this.deferPos === null || this.deferPos.length < n) {
      this.deferPos = new Int32Array(Math.max(n, 256)); // once per queue (bursts are at most 256)
      this.deferWrap = new Uint8Array(this.deferPos.length);
    }
    const dp = this.deferPos;
    const dwr = this.deferWrap as Uint8Array;
    const d16 = this.ring.desc16;
    const d32 = this.ring.desc32;
    const size = this.size;
    const dw = this.wordsOfCaller(dst);
    const dlen = dst.length;
    let pos = this.availPos;
    let wrap = this.availWrap;
    let up = this.usedPos;
    let uw = this.usedWrap;
    let got = 0;
    let fast = 0;
    let fastBytes = 0;
    for (let c = 0; c < n; c++) {
      const fl = Atomics.load(d16, PackedU16.PER_DESC * pos + PackedU16.FLAGS);
      if (((fl >>> RingBits.PACKED_AVAIL_BIT) & 1) !== wrap || ((fl >>> RingBits.PACKED_USED_BIT) & 1) === wrap) break; // not available: nothing more
      const o = pos << DescWord.SHIFT;
      const d0 = dstOffs[got];
      if ((fl & RingBits.PACKED_LOW_MASK) === 0 && up === pos && dw !== null && (d0 & 3) === 0) {
        // each descriptor word is read once: the guest may change them while we look
        const len = d32[o + DescWord.LEN];
        const so = this.txFrameOffset(d32[o + DescWord.ADDR_HI], d32[o + DescWord.ADDR_LO], len, d0, cap, dlen);
        if (so >= 0) {
          const flen = len - this.hdrLen;
          this.takeFrame(dst, dw, d0, so, flen, priv, tWin, tW32, tOff, tLen, got);
          lens[got++] = flen;
          fastBytes += flen;
          // the used length now (the slot is still the device's: the driver reads it once the flags say
          // used), the flags at release; a later chain that runs around the ring into this slot then
          // reads what it reads without deferral
          d32[o + DescWord.LEN] = 0;
          dp[fast] = pos;
          dwr[fast] = uw;
          if (++pos === size) {
            pos = 0;
            wrap ^= 1;
          }
          up = pos;
          if (pos === 0) uw ^= 1;
          fast++;
          continue;
        }
      }
      // general path for this chain (checks and counts everything; copies the whole frame; marks it
      // used now, at a later slot than the deferred ones: the driver reads used slots in ring order, so
      // it sees this one only after releaseDeferred has marked those before it)
      this.setCursors(pos, wrap, up, uw);
      const r = this.dequeueOne(dst, d0, cap);
      pos = this.availPos;
      wrap = this.availWrap;
      up = this.usedPos;
      uw = this.usedWrap;
      if (r === DQ_STOP) break;
      if (r >= 0) {
        if (tLen !== null) tLen[got] = 0;
        lens[got++] = r;
      }
    }
    this.setCursors(pos, wrap, up, uw);
    this.deferN = fast;
    this.countFast(fast, fastBytes);
    return got;
  }

  /** Mark the deferred slots used (their length 0 was written when they were taken), in ring order; then publish. */
  override releaseDeferred(): void {
    const k = this.deferN;
    if (k > 0) {
      this.deferN = 0;
      if (!this.broken) {
        const dp = this.deferPos as Int32Array;
        const dwr = this.deferWrap as Uint8Array;
        const d16 = this.ring.desc16;
        for (let j = 0; j < k; j++) {
          const pos = dp[j];
          Atomics.store(d16, PackedU16.PER_DESC * pos + PackedU16.FLAGS, dwr[j] ? RingBits.PACKED_USED_WRAP1 : 0);
        }
        this.usedSince += k;
      }
    }
    this.publish();
  }

  /**
   * Guest RX fast path (enqueueBurst, enqueueBurstTails): a frame into one
   * device-writable descriptor that holds header + frame, inside one memory
   * window, word-aligned, marked used in place, a tail (tLen[i] > 0) written
   * straight from the source guest (putFrame). Anything else goes through the
   * general {@link enqueueOne}, a tail first copied in. Published; lastDirect set.
   */
  protected override enqueueFast(
    src: Uint8Array, srcOffs: Int32Array, lens: Int32Array, priv: number,
    tWin: (Uint8Array | null)[], tW32: (Int32Array | null)[], tOff: Int32Array, tLen: Int32Array | null, n: number,
  ): number {
    if (n > srcOffs.length) n = srcOffs.length;
    if (n > lens.length) n = lens.length;
    this.badInBurst = 0;
    const d16 = this.ring.desc16;
    const d32 = this.ring.desc32;
    const size = this.size;
    const hdrLen = this.hdrLen;
    const sw = this.wordsOfCaller(src);
    const slen = src.length;
    let pos = this.availPos;
    let wrap = this.availWrap;
    let up = this.usedPos;
    let uw = this.usedWrap;
    let fast = 0;
    let fastBytes = 0;
    let direct = 0;
    let i = 0;
    for (; i < n; i++) {
      const flen = lens[i];
      const so = srcOffs[i];
      const tl = tLen !== null ? tLen[i] : 0;
      if (up === pos && hdrLen === 12 && sw !== null && flen >= 0 && so >= 0 && so + flen <= slen && (so & 3) === 0) {
        const fl = Atomics.load(d16, PackedU16.PER_DESC * pos + PackedU16.FLAGS);
        const o = pos << DescWord.SHIFT;
        // each descriptor word is read once: the guest may change them while we look (a length
        // checked here and re-read for the window check would let a write run past the window)
        if (((fl >>> RingBits.PACKED_AVAIL_BIT) & 1) === wrap && ((fl >>> RingBits.PACKED_USED_BIT) & 1) !== wrap && (fl & RingBits.PACKED_LOW_MASK) === DESC_F_WRITE) {
          const total = hdrLen + flen;
          const wo = this.rxBufferOffset(d32[o + DescWord.ADDR_HI], d32[o + DescWord.ADDR_LO], d32[o + DescWord.LEN], total);
          if (wo >= 0) {
            const put = this.putFrame(wo, src, sw, so, flen, priv, tWin, tW32, tOff, tl, i);
            if (put < 0) {
              this.stats.badFrame++; // inconsistent tail description (a caller error): dropped
              continue;
            }
            direct += put;
            d32[o + DescWord.LEN] = total;
            Atomics.store(d16, PackedU16.PER_DESC * pos + PackedU16.FLAGS, (uw ? RingBits.PACKED_USED_WRAP1 : 0) | DESC_F_WRITE);
            if (++pos === size) {
              pos = 0;
              wrap ^= 1;
            }
            up = pos;
            if (pos === 0) uw ^= 1;
            fastBytes += flen;
            fast++;
            continue;
          }
        }
      }
      // general path for this frame (a tail first joins the private part)
      if (tl > 0) this.materializeTail(src, so, flen, priv, tWin[i], tW32[i], tOff[i], tl);
      this.setCursors(pos, wrap, up, uw);
      const ok = this.enqueueOne(src, so, flen);
      pos = this.availPos;
      wrap = this.availWrap;
      up = this.usedPos;
      uw = this.usedWrap;
      if (!ok) break;
    }
    this.setCursors(pos, wrap, up, uw);
    this.usedSince += fast;
    this.countFast(fast, fastBytes);
    this.publish();
    this.lastDirect = direct;
    return i;
  }

  protected peekChain(write: boolean): number {
    const size = this.size;
    if (this.peekSlots >= size) return PEEK_NONE;
    const pos = this.peekPos;
    const fl0 = Atomics.load(this.ring.desc16, PackedU16.PER_DESC * pos + PackedU16.FLAGS);
    if (!packedIsAvail(fl0, this.peekWrap)) return PEEK_NONE;
    const dv = this.ring.desc;
    const k = this.resN;
    const segStart = this.segN;
    this.walkTotal = 0;
    let p = pos;
    let w = this.peekWrap;
    let slots = 0;
    let id = 0;
    let v = V_OK;
    for (;;) {
      if (slots >= size) {
        // NEXT on every descriptor of the ring: we cannot find where the chain ends
        this.stats.loop++;
        this.markBroken(`a chain from slot ${pos} has NEXT on every descriptor of the ring (size ${size})`);
        this.segN = segStart;
        return PEEK_BROKEN;
      }
      const o = p * DESC_SIZE;
      const fl = slots === 0 ? fl0 : dv.getUint16(o + PDESC_FLAGS, true);
      id = dv.getUint16(o + PDESC_ID, true);
      slots++;
      if (v === V_OK) {
        const addr = readAddr(dv, o + PDESC_ADDR);
        const len = dv.getUint32(o + PDESC_LEN, true);
        if ((fl & DESC_F_INDIRECT) !== 0) {
          v = !this.indirect || slots !== 1 || (fl & DESC_F_NEXT) !== 0 ? V_BAD_INDIRECT : this.walkIndirect(addr, len, write);
        } else {
          v = this.addSeg(addr, len, fl, write);
        }
      }
      if (++p === size) {
        p = 0;
        w ^= 1;
      }
      if ((fl & DESC_F_NEXT) === 0) break;
    }
    this.peekPos = p;
    this.peekWrap = w;
    this.peekSlots += slots;
    return this.reserve(k, id, slots, segStart, v); // the buffer id is in the last descriptor
  }

  /** Indirect table: len/16 packed descriptors, used in order. */
  private walkIndirect(addr: number, len: number, write: boolean): number {
    if (len === 0 || len % DESC_SIZE !== 0 || len > INDIRECT_MAX * DESC_SIZE || addr < 0) return V_BAD_INDIRECT;
    const mem = this.mem;
    const wi = mem.findGpa(addr, len);
    if (wi < 0) return V_BAD_INDIRECT;
    const dv = mem.windows[wi].dv;
    const base = mem.off;
    const n = len / DESC_SIZE;
    for (let j = 0; j < n; j++) {
      const o = base + j * DESC_SIZE;
      const fl = dv.getUint16(o + PDESC_FLAGS, true);
      if ((fl & DESC_F_INDIRECT) !== 0) return V_BAD_INDIRECT;
      const v = this.addSeg(readAddr(dv, o + PDESC_ADDR), dv.getUint32(o + PDESC_LEN, true), fl, write);
      if (v !== V_OK) return v;
    }
    return V_OK;
  }

  protected commit(write: boolean): void {
    const size = this.size;
    const dv = this.ring.desc;
    const d16 = this.ring.desc16;
    let p = this.usedPos;
    let w = this.usedWrap;
    let firstPos = -1;
    let firstFlags = 0;
    let slots = 0;
    for (let j = 0; j < this.resN; j++) {
      const len = this.resLen[j];
      dv.setUint32(p * DESC_SIZE + PDESC_LEN, len, true);
      d16[pdId(p)] = this.resId[j];
      const flags = packedUsedBits(w) | (write && len > 0 ? DESC_F_WRITE : 0);
      // the first used descriptor of a multi-buffer frame is exposed last
      if (j === 0) {
        firstPos = p;
        firstFlags = flags;
      } else {
        Atomics.store(d16, pdFlags(p), flags);
      }
      const s = this.resSlots[j];
      slots += s;
      p += s;
      if (p >= size) {
        p -= size;
        w ^= 1;
      }
    }
    if (firstPos >= 0) Atomics.store(d16, pdFlags(firstPos), firstFlags);
    if (this.dirty !== null) this.logCommit(write, slots);
    this.usedPos = p;
    this.usedWrap = w;
    this.usedSince += slots;
    this.availPos = this.peekPos;
    this.availWrap = this.peekWrap;
    this.peekSlots = 0;
    this.stats.chains += this.resN;
    this.resN = 0;
    this.segN = 0;
  }

  /** Logging: the buffers filled (guest RX) and the `slots` descriptors written back as used from usedPos. */
  private logCommit(write: boolean, slots: number): void {
    if (write) this.logReservedBuffers();
    if (this.ringLogGpa < 0 || this.dirty === null) return;
    const p = this.usedPos;
    const first = Math.min(slots, this.size - p);
    this.dirty.mark(this.descGpa + DESC_SIZE * p, DESC_SIZE * first);
    if (slots > first) this.dirty.mark(this.descGpa, DESC_SIZE * (slots - first));
  }

  protected rewind(): void {
    this.peekPos = this.availPos;
    this.peekWrap = this.availWrap;
    this.peekSlots = 0;
    this.resN = 0;
    this.segN = 0;
  }

  protected publish(): void {
    if (this.eventIdx && this.notifyEnabled) {
      const ev = this.availPos | (this.availWrap << 15);
      if (ev !== this.publishedEvent) {
        Atomics.store(this.ring.deviceEvent, EV_OFF_WRAP, ev);
        this.publishedEvent = ev;
        this.logRingWrite(2 * EV_OFF_WRAP, 2);
      }
    }
  }

  needsInterrupt(): boolean {
    if (this.broken) return false;
    const c = this.usedSince;
    if (c === 0) return false;
    this.usedSince = 0;
    return packedWantsEvent(this.ring.driverEvent, this.eventIdx, this.size, this.usedPos, this.usedWrap, c);
  }

  setNotification(enable: boolean): void {
    if (this.broken) return;
    this.notifyEnabled = enable;
    const ev = this.ring.deviceEvent;
    if (!enable) {
      Atomics.store(ev, EV_FLAGS, RING_EVENT_FLAGS_DISABLE);
    } else if (this.eventIdx) {
      const e = this.availPos | (this.availWrap << 15);
      Atomics.store(ev, EV_OFF_WRAP, e);
      this.publishedEvent = e;
      Atomics.store(ev, EV_FLAGS, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(ev, EV_FLAGS, RING_EVENT_FLAGS_ENABLE);
    }
    this.logRingWrite(0, 4); // the Device Area (after the writes: the log bit must not precede the data)
  }
}
