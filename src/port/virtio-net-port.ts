/**
 * The data path of our virtio-net driver (DPDK's virtio-pmd), shared by every
 * transport: virtio-user (rings shared with a vhost-user backend, src/port/virtio-user.ts)
 * and virtio-pci (a real PCI device from userspace, src/port/virtio-pci.ts).
 * The transport sets the queues up (installQueues) and says how a queue is
 * notified; this class owns the burst rx/tx over the driver queues of
 * src/virtio.
 *
 *  - RX: buffers are posted at `iova(buf) + headroom - hdrLen`, so the
 *    virtio-net header lands in the headroom and the frame at `headroom`
 *    (dataOff = headroom, dataLen = frame length). With MRG_RXBUF a frame
 *    spread over several buffers becomes a mempool segment chain.
 *  - TX: the header is written just before the frame (dataOff >= hdrLen is
 *    required; alloc gives `headroom`), the buffer goes out as one
 *    descriptor, and comes back to the pool when the device has used it.
 *
 * Addresses the device sees come from `bufIova[h]`, the device address of
 * buffer h's start, filled once by the transport (our virtual address for
 * virtio-user, the physical one for virtio-pci): one table lookup per packet,
 * no translation callback. The driver queues check and dereference them
 * through their GuestMemory, whose "guest physical" space is that same
 * address space.
 *
 * Which handles sit in our rings is tracked in one byte per pool buffer, so a
 * disconnect or reset returns every one of them to the pool.
 *
 * Where it runs: as its subclasses (virtio-user.ts, virtio-pci.ts), in the PMD worker that polls
 * the port.
 */
import type { Port, PortStats, LinkState } from './port.js';
import { newPortStats, countRxDrop, countTxDrop, tallyDrop } from './port.js';
import type { Mempool } from '../mem/mempool.js';
import type { DriverQueue } from '../virtio/index.js';
import { Drop, type DropReason } from './port.js';

/** Scratch entries per burst call (bursts larger than this are cut). */
const SCRATCH = 256;
/** Refill RX rings once at least this many slots are free. */
const RX_REFILL_MIN = 16;

export abstract class VirtioNetPort implements Port {
  readonly name: string;
  abstract readonly type: string;
  readonly stats: PortStats = newPortStats();
  readonly pool: Mempool;
  /** Queue pairs asked for. */
  readonly queues: number;

  protected readonly ownsPool: boolean;
  protected rxq: DriverQueue[] = [];
  protected txq: DriverQueue[] = [];
  protected active = false;
  protected nq = 0;
  protected hdrLen = 12;
  protected closed = false;
  /** Device address of each pool buffer's start (see the module comment). */
  protected readonly bufIova: Float64Array;
  /** 1 while the handle sits in one of our rings. */
  private readonly inRing: Uint8Array;
  /** Per RX queue: chain being assembled (MRG_RXBUF), -1 none; tail; buffers still to come. */
  private readonly pendHead: Int32Array;
  private readonly pendTail: Int32Array;
  private readonly pendRemain: Int32Array;

  // hot-path scratch
  private readonly tok = new Int32Array(SCRATCH);
  private readonly lens = new Int32Array(SCRATCH);
  private readonly nbufs = new Int32Array(SCRATCH);
  private readonly addrs = new Float64Array(SCRATCH);
  private readonly caps = new Int32Array(SCRATCH);
  /** pool.data as 32-bit words (null if not word-aligned). */
  private readonly data32: Int32Array | null;

  protected constructor(name: string, queues: number, pool: Mempool, ownsPool: boolean) {
    this.name = name;
    this.queues = queues;
    this.pool = pool;
    this.ownsPool = ownsPool;
    if (pool.headroom < 12) throw new RangeError(`mempool headroom ${pool.headroom} < 12: no room for the virtio-net header`);
    this.inRing = new Uint8Array(pool.count);
    this.bufIova = new Float64Array(pool.count);
    const pd = pool.data;
    this.data32 = (pd.byteOffset & 3) === 0 ? new Int32Array(pd.buffer, pd.byteOffset, pd.length >> 2) : null;
    this.pendHead = new Int32Array(queues).fill(-1);
    this.pendTail = new Int32Array(queues).fill(-1);
    this.pendRemain = new Int32Array(queues);
  }

  abstract get link(): LinkState;
  abstract get nQueues(): number;
  abstract close(): void;
  /** Notify the device that virtqueue `vq` (2q: RX of pair q, 2q+1: TX) has new buffers. */
  protected abstract notify(vq: number): void;

  /** Status of the queues while up ('up', or which problem a queue has). */
  protected queueStatus(): string {
    const broken = [...this.rxq, ...this.txq].some((d) => d.broken);
    return broken ? 'up, a queue is broken (device returned a bad used entry)' : 'up';
  }

  /**
   * Take fresh queues (after negotiation): whatever was in the old ones goes
   * back to the pool, the RX rings are filled (without notifying: the caller
   * starts the device and notifies).
   */
  protected installQueues(rxq: DriverQueue[], txq: DriverQueue[], hdrLen: number): void {
    this.releaseAll();
    this.rxq = rxq;
    this.txq = txq;
    this.nq = Math.min(rxq.length, txq.length);
    this.hdrLen = hdrLen;
    this.pendHead.fill(-1);
    this.pendTail.fill(-1);
    this.pendRemain.fill(0);
    for (let q = 0; q < this.nq; q++) this.refillRx(q, false);
  }

  /** Forget the queues (device gone or reset): buffers back to the pool. */
  protected dropQueues(): void {
    this.active = false;
    this.releaseAll();
    this.rxq = [];
    this.txq = [];
  }

  /** Every buffer in our rings (and half-assembled RX chains) back to the pool. */
  protected releaseAll(): void {
    const pool = this.pool;
    const inRing = this.inRing;
    const tok = this.tok;
    let k = 0;
    for (let h = 0; h < inRing.length; h++) {
      if (inRing[h] === 0) continue;
      inRing[h] = 0;
      tok[k++] = h;
      if (k === tok.length) {
        pool.free(tok, k);
        k = 0;
      }
    }
    if (k > 0) pool.free(tok, k);
    for (let q = 0; q < this.pendHead.length; q++) {
      const h = this.pendHead[q];
      if (h >= 0) pool.freeOne(h); // frees the whole chain
      this.pendHead[q] = -1;
      this.pendRemain[q] = 0;
    }
  }

  // ------------------------------------------------------------ data path

  /** Post fresh buffers into RX queue q's free slots. */
  private refillRx(q: number, kick: boolean): void {
    const d = this.rxq[q];
    const pool = this.pool;
    const free = d.freeCount;
    if (free === 0) return;
    const tok = this.tok;
    const addrs = this.addrs;
    const caps = this.caps;
    const hdrLen = this.hdrLen;
    const off = pool.headroom - hdrLen;
    const cap = pool.bufSize - pool.headroom + hdrLen;
    const iova = this.bufIova;
    let left = free;
    while (left > 0) {
      const want = left < SCRATCH ? left : SCRATCH;
      const k = pool.alloc(tok, want);
      if (k === 0) {
        tallyDrop(this.stats.drops, Drop.RX_NO_MBUF, 1);
        break;
      }
      for (let i = 0; i < k; i++) {
        addrs[i] = iova[tok[i]] + off;
        caps[i] = cap;
      }
      const p = d.postRx(addrs, caps, tok, k);
      for (let i = 0; i < p; i++) this.inRing[tok[i]] = 1;
      if (p < k) pool.free(tok, k - p, p);
      left -= p;
      if (p < k) break;
    }
    if (kick && d.needsKick()) this.notify(2 * q);
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    if (!this.active || q < 0 || q >= this.nq) return 0;
    const d = this.rxq[q];
    if (max > out.length) max = out.length;
    if (max > SCRATCH) max = SCRATCH;
    const tok = this.tok;
    const lens = this.lens;
    const nbufs = this.nbufs;
    const n = d.pollRx(tok, lens, max, nbufs);
    const pool = this.pool;
    const dataOff = pool.dataOff;
    const dataLen = pool.dataLen;
    const pktLen = pool.pktLen;
    const next = pool.next;
    const inRing = this.inRing;
    const hdrLen = this.hdrLen;
    const headroom = pool.headroom;
    const cap = pool.bufSize - headroom + hdrLen;
    let k = 0;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const h = tok[i];
      inRing[h] = 0;
      const len = lens[i];
      const nb = nbufs[i];
      if (nb >= 1) {
        // first buffer of a frame
        const prev = this.pendHead[q];
        if (prev >= 0) {
          // the device started a new frame before finishing the last one
          pool.freeOne(prev);
          this.pendHead[q] = -1;
          countRxDrop(this.stats, Drop.RX_BAD_CHAIN, 1);
        }
        if (len < hdrLen || len > cap) {
          pool.freeOne(h);
          this.pendRemain[q] = nb - 1; // continuation buffers are dropped with it
          countRxDrop(this.stats, len < hdrLen ? Drop.RX_SHORT : Drop.RX_BAD_LEN, 1);
          continue;
        }
        dataOff[h] = headroom;
        dataLen[h] = len - hdrLen;
        pktLen[h] = len - hdrLen;
        if (nb === 1) {
          out[k++] = h;
          bytes += len - hdrLen;
        } else {
          this.pendHead[q] = h;
          this.pendTail[q] = h;
          this.pendRemain[q] = nb - 1;
        }
      } else {
        // continuation buffer (MRG_RXBUF): no header in it
        const head = this.pendHead[q];
        if (head < 0 || len > cap) {
          pool.freeOne(h);
          if (this.pendRemain[q] > 0) this.pendRemain[q]--;
          if (head >= 0) {
            pool.freeOne(head);
            this.pendHead[q] = -1;
            countRxDrop(this.stats, Drop.RX_BAD_LEN, 1);
          }
          continue;
        }
        dataOff[h] = headroom - hdrLen;
        dataLen[h] = len;
        pktLen[head] += len;
        next[this.pendTail[q]] = h;
        this.pendTail[q] = h;
        if (--this.pendRemain[q] === 0) {
          out[k++] = head;
          bytes += pktLen[head];
          this.pendHead[q] = -1;
        }
      }
    }
    if (n > 0) {
      this.stats.rxPackets += k;
      this.stats.rxBytes += bytes;
    }
    if (d.freeCount >= RX_REFILL_MIN) this.refillRx(q, true);
    return k;
  }

  /** Give used TX buffers back to the pool. */
  private reclaimTx(q: number): void {
    const d = this.txq[q];
    const tok = this.tok;
    const inRing = this.inRing;
    for (;;) {
      const k = d.reclaimTx(tok, SCRATCH);
      if (k === 0) return;
      for (let i = 0; i < k; i++) inRing[tok[i]] = 0;
      this.pool.free(tok, k);
      if (k < SCRATCH) return;
    }
  }

  /** TX buffers of queue q the backend has not consumed yet (reclaims first); 0 when down. */
  txInFlight(q: number): number {
    if (!this.active || q < 0 || q >= this.nq) return 0;
    this.reclaimTx(q);
    const d = this.txq[q];
    return d.size - d.freeCount;
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    if (n > handles.length) n = handles.length;
    if (n <= 0) return 0;
    if (!this.active || q < 0 || q >= this.nq) {
      countTxDrop(this.stats, this.closed ? Drop.TX_CLOSED : this.active ? Drop.TX_BAD_QUEUE : Drop.TX_LINK_DOWN, n);
      return 0;
    }
    const d = this.txq[q];
    this.reclaimTx(q);
    let m = d.freeCount;
    if (m > n) m = n;
    if (m > SCRATCH) m = SCRATCH;
    const pool = this.pool;
    const count = pool.count;
    const dataOff = pool.dataOff;
    const dataLen = pool.dataLen;
    const next = pool.next;
    const bufSize = pool.bufSize;
    const stride = pool.stride;
    const hdrLen = this.hdrLen;
    // the net header (all zero: no offloads) goes just before the frame; as
    // 32-bit words when header and buffers are word-aligned
    const words = this.data32 !== null && (hdrLen & 3) === 0;
    const data32 = this.data32 as Int32Array;
    const data = pool.data;
    const bufBase = pool.bufBase;
    const iova = this.bufIova;
    const addrs = this.addrs;
    const lens = this.lens;
    const tok = this.tok;
    const inRing = this.inRing;
    let j = 0;
    let bytes = 0;
    for (let i = 0; i < m; i++) {
      const h = handles[i];
      if (h < 0 || h >= count) {
        countTxDrop(this.stats, Drop.TX_BAD_HANDLE, 1);
        continue;
      }
      const off = dataOff[h];
      const len = dataLen[h];
      if (next[h] !== -1) {
        pool.freeOne(h);
        countTxDrop(this.stats, Drop.TX_MULTI_SEG, 1);
        continue;
      }
      if (off < hdrLen || len <= 0 || off + len > bufSize) {
        pool.freeOne(h);
        countTxDrop(this.stats, off < hdrLen ? Drop.TX_NO_HEADROOM : Drop.TX_BAD_LEN, 1);
        continue;
      }
      const ho = bufBase + h * stride + off - hdrLen; // header offset in pool.data
      if (words && (ho & 3) === 0) {
        // written only when not already zero (as DPDK's virtio does): a recycled
        // buffer's header line then stays clean, valid in the backend's cache
        const w = ho >> 2;
        if (hdrLen === 12) {
          if ((data32[w] | data32[w + 1] | data32[w + 2]) !== 0) {
            data32[w] = 0;
            data32[w + 1] = 0;
            data32[w + 2] = 0;
          }
        } else {
          for (let x = 0; x < hdrLen >> 2; x++) if (data32[w + x] !== 0) data32[w + x] = 0;
        }
      } else {
        data.fill(0, ho, ho + hdrLen);
      }
      addrs[j] = iova[h] + off - hdrLen;
      lens[j] = len + hdrLen;
      tok[j] = h;
      inRing[h] = 1;
      bytes += len;
      j++;
    }
    // the buffers are the pool's (inside guest memory by construction) and their headers are written
    const p = j > 0 ? d.postTxPrepared(addrs, lens, tok, j) : 0;
    if (p < j) {
      // the queue refused a buffer (broken queue or a bug): drop, do not leak
      for (let i = p; i < j; i++) {
        inRing[tok[i]] = 0;
        bytes -= lens[i] - hdrLen;
      }
      pool.free(tok, j - p, p);
      countTxDrop(this.stats, Drop.TX_QUEUE_REFUSED, j - p);
    }
    if (p > 0 && d.needsKick()) this.notify(2 * q + 1);
    this.stats.txPackets += p;
    this.stats.txBytes += bytes;
    if (m < n) countTxDrop(this.stats, Drop.TX_NO_ROOM, n - m);
    return m;
  }

}
