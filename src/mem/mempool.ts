/**
 * Mempool: fixed-size packet buffers in one shared memfd region (DPDK
 * rte_mempool + rte_mbuf, reduced). A packet is a handle (0..count-1); its
 * metadata lives in typed arrays indexed by handle, its bytes in `data`.
 *
 * Region layout (all offsets 64-aligned, buffers page-aligned):
 *
 *   [0..64)            header: magic, version, count, bufSize, headroom,
 *                      stride, metaOff, metaStride, ringOff, bufOff, id
 *   metaOff + i*metaStride   one i32 array per metadata field (see META_FIELDS)
 *   ringOff            MPMC ring of free handles (src/ring)
 *   bufOff + h*stride  buffer h: [headroom][packet data ...] (bufSize bytes)
 *
 * The free list is the shared MPMC ring. Each Mempool object (one per thread
 * or process) keeps a private cache of up to `cacheSize` handles, moved to
 * and from the ring in bulk, so allocation and free take no atomic
 * read-modify-write per packet. Handles sitting in another thread's cache
 * are not visible to available(); size pools with that in mind (or call
 * flushCache() when a thread goes idle).
 */
import { SharedRegion, type RegionAttachInfo } from './region.js';
import * as libc from '../sys/libc.js';
// The free list reuses the ring layer's lock-free ring (the ring module only
// depends on src/sys, so there is no import cycle).
import { Ring, nextPow2 } from '../ring/ring.js';

export class MempoolError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'MempoolError';
  }
}

export interface MempoolAttachInfo {
  name: string;
  region: RegionAttachInfo;
  count: number;
  bufSize: number;
  headroom: number;
  cacheSize: number;
  id: number;
}

export interface MempoolStats {
  /** Buffers asked for but not available (sum of n - k over alloc calls; allocOne misses count 1). */
  allocFail: number;
  /** Frees of an invalid handle, of a buffer already free, or a segment chain that was too long. */
  badFree: number;
}

export const DEFAULT_HEADROOM = 128;
export const DEFAULT_BUF_SIZE = 2048 + DEFAULT_HEADROOM;
export const MAX_CACHE_SIZE = 512;
/** Value of `port[h]` after alloc. */
export const PORT_NONE = -1;

const MAGIC = 0x4655424d; // 'MBUF'
const VERSION = 2;
const H_MAGIC = 0;
const H_VERSION = 1;
const H_COUNT = 2;
const H_BUFSIZE = 3;
const H_HEADROOM = 4;
const H_STRIDE = 5;
const H_METAOFF = 6;
const H_METASTRIDE = 7;
const H_RINGOFF = 8;
const H_BUFOFF = 9;
const H_ID = 10;
const H_NMETA = 11;
const HEADER_BYTES = 64;
/** Per-buffer i32 arrays: the 8 fields below, then USER_WORDS words for upper layers. */
const N_FIELDS = 8;
/**
 * Per-buffer words an upper layer may use (as DPDK's mbuf dynamic fields), shared by every thread
 * attached to the pool, so the value travels with the handle across threads. Not reset on alloc:
 * the layer that reads one writes it first. Used: 0..2 by tunnel ports (src/port/vxlan.ts TunnelMeta).
 */
export const USER_WORDS = 3;
const N_META = N_FIELDS + USER_WORDS;
/** Largest region we map as one view (and can share with workers by address). */
const MAX_REGION = 1 << 30;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

export class Mempool {
  readonly name: string;
  readonly count: number;
  readonly bufSize: number;
  readonly headroom: number;
  /** Bytes between consecutive buffers (bufSize rounded up to 64). */
  readonly stride: number;
  /** Random id of this pool, shared by all attachments (lets peers check they use the same pool). */
  readonly id: number;
  readonly region: SharedRegion;
  readonly data: Uint8Array;
  /** Offset in `data` of buffer 0. */
  readonly bufBase: number;

  /** Packet start relative to the buffer start (alloc sets headroom). */
  readonly dataOff: Int32Array;
  /** Bytes in this segment. */
  readonly dataLen: Int32Array;
  /** Total packet length (meaningful in the first segment). */
  readonly pktLen: Int32Array;
  /** Input port (alloc sets PORT_NONE). */
  readonly port: Int32Array;
  /** References; 0 = free. alloc sets 1. */
  readonly refcnt: Int32Array;
  /** Next segment handle, or -1. */
  readonly next: Int32Array;
  /** Flow hash (alloc sets 0). */
  readonly hash: Int32Array;
  /** Offload / driver flags (alloc sets 0). */
  readonly flags: Int32Array;
  /** USER_WORDS per-buffer words for upper layers (see USER_WORDS). */
  readonly user: readonly Int32Array[];

  readonly stats: MempoolStats = { allocFail: 0, badFree: 0 };
  readonly cacheSize: number;

  private readonly ring: Ring;
  private readonly cache: Int32Array;
  private cacheLen = 0;
  private readonly flushThresh: number;
  private readonly ownsRegion: boolean;
  private closed = false;

  private constructor(name: string, region: SharedRegion, cacheSize: number | undefined, owns: boolean) {
    const bytes = region.bytes;
    if (bytes.length < HEADER_BYTES) throw new MempoolError('region too small for a mempool header');
    const hd = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_BYTES / 4);
    if (Atomics.load(hd, H_MAGIC) !== MAGIC || hd[H_VERSION] !== VERSION) throw new MempoolError('region holds no mempool (bad magic/version)');
    const count = hd[H_COUNT];
    const bufSize = hd[H_BUFSIZE];
    const headroom = hd[H_HEADROOM];
    const stride = hd[H_STRIDE];
    const metaOff = hd[H_METAOFF];
    const metaStride = hd[H_METASTRIDE];
    const ringOff = hd[H_RINGOFF];
    const bufOff = hd[H_BUFOFF];
    const ok =
      count > 0 && bufSize > 0 && headroom >= 0 && headroom < bufSize && stride >= bufSize && stride % 64 === 0 &&
      hd[H_NMETA] === N_META && metaOff >= HEADER_BYTES && metaOff % 64 === 0 && metaStride >= count * 4 && metaStride % 64 === 0 &&
      ringOff >= metaOff + N_META * metaStride && ringOff % 64 === 0 &&
      bufOff >= ringOff + Ring.bytesNeeded(nextPow2(count)) && bufOff + count * stride <= bytes.length;
    if (!ok) throw new MempoolError('corrupt mempool header');
    this.name = name;
    this.region = region;
    this.data = bytes;
    this.count = count;
    this.bufSize = bufSize;
    this.headroom = headroom;
    this.stride = stride;
    this.bufBase = bufOff;
    this.id = hd[H_ID];
    this.ownsRegion = owns;
    const meta = (i: number) => new Int32Array(bytes.buffer, bytes.byteOffset + metaOff + i * metaStride, count);
    this.dataOff = meta(0);
    this.dataLen = meta(1);
    this.pktLen = meta(2);
    this.port = meta(3);
    this.refcnt = meta(4);
    this.next = meta(5);
    this.hash = meta(6);
    this.flags = meta(7);
    this.user = Object.freeze(Array.from({ length: USER_WORDS }, (_, i) => meta(N_FIELDS + i)));
    this.ring = Ring.attach(bytes, ringOff);
    if (this.ring.mode !== 'mpmc' || this.ring.capacity < count) throw new MempoolError('corrupt mempool free ring');
    const cs = cacheSize ?? Math.min(256, Math.floor(count / 8));
    if (!Number.isInteger(cs) || cs < 0 || cs > MAX_CACHE_SIZE) throw new MempoolError(`cacheSize ${cs} must be an integer in 0..${MAX_CACHE_SIZE}`);
    this.cacheSize = cs;
    this.flushThresh = cs === 0 ? 1 : Math.ceil(cs * 1.5);
    // room for a refill to cacheSize + n (n < 2.5 * cacheSize on the cached path)
    this.cache = new Int32Array(3 * cs + 2);
  }

  /**
   * Create a pool of `count` buffers in a new memfd region. `hugepages`: in
   * 2 MiB hugetlb pages (for devices doing DMA: src/mem/iova.ts); pick a
   * bufSize whose 64-aligned stride divides 2 MiB (e.g. 2048) so that no
   * buffer straddles two pages.
   */
  static create(opts: { name?: string; count: number; bufSize?: number; headroom?: number; cacheSize?: number; hugepages?: boolean }): Mempool {
    const name = opts.name ?? 'mempool';
    const count = opts.count;
    const bufSize = opts.bufSize ?? DEFAULT_BUF_SIZE;
    const headroom = opts.headroom ?? DEFAULT_HEADROOM;
    if (!Number.isInteger(count) || count < 1 || count > 1 << 24) throw new MempoolError(`count ${count} must be an integer in 1..2^24`);
    if (!Number.isInteger(bufSize) || bufSize < 64 || bufSize > 1 << 20) throw new MempoolError(`bufSize ${bufSize} must be an integer in 64..2^20`);
    if (!Number.isInteger(headroom) || headroom < 0 || headroom >= bufSize) throw new MempoolError(`headroom ${headroom} must be in 0..bufSize-1`);
    const stride = align(bufSize, 64);
    const metaOff = HEADER_BYTES;
    const metaStride = align(count * 4, 64);
    const ringOff = metaOff + N_META * metaStride;
    const ringSize = nextPow2(count);
    const bufOff = align(ringOff + Ring.bytesNeeded(ringSize), 4096);
    const total = bufOff + count * stride;
    if (total > MAX_REGION) throw new MempoolError(`mempool of ${count} x ${bufSize} B needs ${total} bytes; at most ${MAX_REGION} supported`);
    const region = SharedRegion.create(`tsvs-mempool-${name}`, total, { hugepages: opts.hugepages, sealable: true });
    try {
      const bytes = region.bytes;
      const hd = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_BYTES / 4);
      hd[H_VERSION] = VERSION;
      hd[H_COUNT] = count;
      hd[H_BUFSIZE] = bufSize;
      hd[H_HEADROOM] = headroom;
      hd[H_STRIDE] = stride;
      hd[H_METAOFF] = metaOff;
      hd[H_METASTRIDE] = metaStride;
      hd[H_RINGOFF] = ringOff;
      hd[H_BUFOFF] = bufOff;
      // an identity to tell pools apart (attach, ring ports), not a secret: Math.random, not node:crypto (whose
      // module every thread that creates or attaches a pool would otherwise load)
      hd[H_ID] = 1 + Math.floor(Math.random() * 0x7ffffffe);
      hd[H_NMETA] = N_META;
      const ring = Ring.init(bytes, ringOff, ringSize, 'mpmc');
      const all = new Int32Array(count);
      for (let i = 0; i < count; i++) all[i] = i;
      if (ring.enqueueBulk(all, count) !== count) throw new MempoolError('internal: free ring too small');
      const next = new Int32Array(bytes.buffer, bytes.byteOffset + metaOff + 5 * metaStride, count);
      next.fill(-1);
      Atomics.store(hd, H_MAGIC, MAGIC);
      return new Mempool(name, region, opts.cacheSize, true);
    } catch (e) {
      region.close();
      throw e;
    }
  }

  /** Info for another thread of this process: post it, then Mempool.attach(info) there. */
  attachInfo(): MempoolAttachInfo {
    return {
      name: this.name,
      region: this.region.attachInfo(),
      count: this.count,
      bufSize: this.bufSize,
      headroom: this.headroom,
      cacheSize: this.cacheSize,
      id: this.id,
    };
  }

  /** The same pool in a worker thread (does not own the mapping: the creator must outlive it). */
  static attach(info: MempoolAttachInfo): Mempool {
    const p = new Mempool(info.name, SharedRegion.attach(info.region), info.cacheSize, false);
    if (p.id !== info.id || p.count !== info.count || p.bufSize !== info.bufSize || p.headroom !== info.headroom) {
      throw new MempoolError('attach: the region at that address is a different mempool');
    }
    return p;
  }

  /**
   * The same pool in another process, from its memfd (region.fd passed over a
   * unix socket or as an inherited fd). Takes ownership of fd.
   */
  static fromFd(fd: number, opts: { name?: string; cacheSize?: number } = {}): Mempool {
    const region = SharedRegion.fromFd(fd, libc.fdSize(fd));
    try {
      return new Mempool(opts.name ?? 'mempool', region, opts.cacheSize, true);
    } catch (e) {
      region.fd = -1; // on failure the fd stays the caller's
      region.close();
      throw e;
    }
  }

  /** Byte offset in `data` of buffer h's start (before the headroom). */
  bufAddrOffset(h: number): number {
    return this.bufBase + h * this.stride;
  }

  /** Byte offset in `data` of the packet's first byte. */
  dataOffset(h: number): number {
    return this.bufBase + h * this.stride + this.dataOff[h];
  }

  /** Process virtual address of buffer h's start (for drivers that hand addresses to a peer). */
  bufAddr(h: number): number {
    return this.region.addr + this.bufBase + h * this.stride;
  }

  /** Buffers free in the shared ring plus this object's cache (other threads' caches excluded). */
  available(): number {
    return this.ring.count() + this.cacheLen;
  }

  /** Buffers in this object's private cache. */
  cached(): number {
    return this.cacheLen;
  }

  /**
   * Allocate up to n buffers into out[0..k); returns k. Metadata is reset
   * (dataOff = headroom, lengths 0, refcnt 1, next -1, port PORT_NONE).
   * Shortfall is counted in stats.allocFail.
   */
  alloc(out: Int32Array, n: number): number {
    if (n <= 0) return 0;
    if (n > out.length) n = out.length;
    const cache = this.cache;
    let k = 0;
    let len = this.cacheLen;
    if (len < n) {
      const rest = n - len;
      if (rest >= this.cacheSize) {
        // big request: take the cache, then straight from the ring
        for (; k < len; k++) out[k] = cache[--this.cacheLen];
        k += this.ring.dequeueBurst(out, rest, k);
        len = 0;
      } else {
        // refill the cache so that cacheSize remain after taking n
        let want = this.cacheSize + n - len;
        if (want > cache.length - len) want = cache.length - len;
        len += this.ring.dequeueBurst(cache, want, len);
        this.cacheLen = len;
      }
    }
    if (k === 0) {
      const take = len < n ? len : n;
      for (; k < take; k++) out[k] = cache[--len];
      this.cacheLen = len;
    }
    const headroom = this.headroom;
    const dataOff = this.dataOff;
    const dataLen = this.dataLen;
    const pktLen = this.pktLen;
    const port = this.port;
    const refcnt = this.refcnt;
    const next = this.next;
    const hash = this.hash;
    const flags = this.flags;
    for (let i = 0; i < k; i++) {
      const h = out[i];
      dataOff[h] = headroom;
      dataLen[h] = 0;
      pktLen[h] = 0;
      port[h] = PORT_NONE;
      refcnt[h] = 1;
      next[h] = -1;
      hash[h] = 0;
      flags[h] = 0;
    }
    if (k < n) this.stats.allocFail += n - k;
    return k;
  }

  private readonly one = new Int32Array(1);

  /** One buffer, or -1 when the pool is exhausted (counted in stats.allocFail). */
  allocOne(): number {
    return this.alloc(this.one, 1) === 1 ? this.one[0] : -1;
  }

  /**
   * Free handles[start..start+n): for each packet, every segment of its
   * chain drops one reference and returns to the pool when none is left.
   * Invalid handles and double frees are counted in stats.badFree, never thrown.
   */
  free(handles: Int32Array, n: number, start = 0): void {
    const end = start + n > handles.length ? handles.length : start + n;
    const count = this.count;
    const refcnt = this.refcnt;
    const next = this.next;
    for (let i = start; i < end; i++) {
      let seg = handles[i];
      let steps = 0;
      while (seg !== -1) {
        if (seg < 0 || seg >= count || ++steps > count) {
          this.stats.badFree++;
          break;
        }
        const nxt = next[seg];
        const r = refcnt[seg];
        if (r === 1) {
          refcnt[seg] = 0;
          this.put(seg);
        } else if (r <= 0) {
          this.stats.badFree++; // already free
          break;
        } else if (Atomics.sub(refcnt, seg, 1) === 1) {
          this.put(seg);
        }
        seg = nxt;
      }
    }
  }

  freeOne(h: number): void {
    this.one[0] = h;
    this.free(this.one, 1);
  }

  private put(h: number): void {
    const cache = this.cache;
    cache[this.cacheLen++] = h;
    if (this.cacheLen >= this.flushThresh) {
      const extra = this.cacheLen - this.cacheSize;
      const done = this.ring.enqueueBurst(cache, extra, this.cacheSize);
      this.cacheLen -= done;
      if (this.cacheLen === cache.length) {
        // ring refused (only possible after undetected double frees): drop it
        this.cacheLen--;
        this.stats.badFree++;
      }
    }
  }

  /** Return this object's cached buffers to the shared ring (call when a thread goes idle or exits). */
  flushCache(): void {
    if (this.cacheLen > 0) {
      const done = this.ring.enqueueBurst(this.cache, this.cacheLen, 0);
      if (done < this.cacheLen) this.stats.badFree += this.cacheLen - done;
      this.cacheLen = 0;
    }
  }

  /**
   * Flush the cache and release the mapping (when this object owns it).
   * Buffers still held by the caller are simply forgotten.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.flushCache();
    if (this.ownsRegion) this.region.close();
  }
}
