/**
 * virtio-user port: our virtio-net driver (DPDK's virtio-pmd without a VM)
 * talking to a vhost-user backend through {@link VhostUserFrontend}.
 *
 * Memory shared with the backend: one memfd region for all rings (allocated
 * once, big enough for either ring kind; every (re)connect builds fresh rings
 * in it) plus the mempool's own memfd region. Packet buffers are handed to
 * the backend by address: zero copy both ways.
 *
 *  - RX: buffers are posted at `bufAddr + headroom - hdrLen`, so the
 *    virtio-net header lands in the headroom and the frame at `headroom`
 *    (dataOff = headroom, dataLen = frame length). With MRG_RXBUF a frame
 *    spread over several buffers becomes a mempool segment chain.
 *  - TX: the header is written just before the frame (dataOff >= hdrLen is
 *    required; alloc gives `headroom`), the buffer goes out as one
 *    descriptor, and comes back to the pool when the backend has used it.
 *
 * Which handles sit in our rings is tracked in one byte per pool buffer, so a
 * disconnect returns every one of them to the pool.
 */
import type { Port, PortStats, LinkState } from './port.js';
import { newPortStats, BURST, countRxDrop, countTxDrop, tallyDrop } from './port.js';
import { Mempool } from '../mem/mempool.js';
import { SharedRegion } from '../mem/region.js';
import { GuestMemory } from '../mem/guest-memory.js';
import { VhostUserFrontend, type FrontendDevice, type FrontendSetup, type NegotiatedConfig, type VringAddrs } from '../vhost/frontend.js';
import type { Logger } from '../vhost/connection.js';
import { createDriverQueue, type DriverQueue } from '../virtio/index.js';
import { vringSize, vringLayout, packedVringSize, packedLayout } from '../virtio/layout.js';
import { driverIndirectSize } from '../virtio/driver-queue.js';

export interface VirtioUserOptions {
  /** Port name (default 'virtio-user0'). */
  name?: string;
  /** vhost-user socket path. */
  path: string;
  /** We listen, the backend connects (DPDK `server=1`). */
  server?: boolean;
  /** Queue pairs (default 1). */
  queues?: number;
  /** Packed rings (default false: split). */
  packed?: boolean;
  /** MAC address "aa:bb:cc:dd:ee:ff" (default: random, locally administered). */
  mac?: string;
  /** Ring size (default 256). */
  queueSize?: number;
  /** Negotiate MRG_RXBUF (default true). */
  mrgRxbuf?: boolean;
  eventIdx?: boolean;
  /**
   * Offer VIRTIO_F_IN_ORDER (default true, as DPDK's virtio-user): with it the
   * TX ring needs no free list and is reclaimed by count.
   */
  inOrder?: boolean;
  indirect?: boolean;
  /** Use this pool (must outlive the port); default: the port creates its own. */
  pool?: Mempool;
  /** Buffers in the port's own pool (default max(4096, 4 * queues * queueSize + 1024)). */
  poolSize?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Drop the connection when a reply takes longer (default 5000 ms). */
  replyTimeoutMs?: number;
  logger?: Logger;
}

/** Scratch entries per burst call (bursts larger than this are cut). */
const SCRATCH = 256;
/** Refill RX rings once at least this many slots are free. */
const RX_REFILL_MIN = 16;

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

export function parseMac(s: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(s);
  if (!m) throw new RangeError(`bad MAC address '${s}'`);
  return new Uint8Array(m.slice(1).map((x) => parseInt(x, 16)));
}

function randomMac(): Uint8Array {
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0] & 0xfe) | 0x02;
  return b;
}

export class VirtioUserPort implements Port, FrontendDevice {
  readonly name: string;
  readonly type = 'virtio-user';
  readonly stats: PortStats = newPortStats();
  readonly pool: Mempool;
  readonly frontend: VhostUserFrontend;
  readonly mac: Uint8Array;
  /** Queue pairs asked for. */
  readonly queues: number;
  readonly queueSize: number;

  private readonly ownsPool: boolean;
  private readonly rings: SharedRegion;
  private readonly vqStride: number;
  private readonly mem: GuestMemory;
  private readonly indirect: boolean;
  private rxq: DriverQueue[] = [];
  private txq: DriverQueue[] = [];
  private active = false;
  private nq = 0;
  private hdrLen = 12;
  private closed = false;
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
  /** pool.data as 32-bit words (null if not word-aligned); virtual address of pool.data[0]. */
  private readonly data32: Int32Array | null;
  private readonly poolVa: number;

  constructor(o: VirtioUserOptions) {
    this.name = o.name ?? 'virtio-user0';
    this.queues = o.queues ?? 1;
    this.queueSize = o.queueSize ?? 256;
    this.mac = o.mac ? parseMac(o.mac) : randomMac();
    this.indirect = o.indirect ?? false;
    if (!Number.isInteger(this.queues) || this.queues < 1 || this.queues > 127) throw new RangeError(`queues ${this.queues} must be in 1..127`);
    const qs = this.queueSize;
    if (o.pool) {
      this.pool = o.pool;
      this.ownsPool = false;
    } else {
      const count = o.poolSize ?? Math.max(4096, 4 * this.queues * qs + 1024);
      this.pool = Mempool.create({ name: this.name, count });
      this.ownsPool = true;
    }
    if (this.pool.headroom < 12) throw new RangeError(`mempool headroom ${this.pool.headroom} < 12: no room for the virtio-net header`);
    this.inRing = new Uint8Array(this.pool.count);
    const pd = this.pool.data;
    this.data32 = (pd.byteOffset & 3) === 0 ? new Int32Array(pd.buffer, pd.byteOffset, pd.length >> 2) : null;
    // pool.data is the whole pool region (bufAddr(h) = region.addr + bufBase + h * stride)
    this.poolVa = this.pool.bufAddr(0) - this.pool.bufBase;
    this.pendHead = new Int32Array(this.queues).fill(-1);
    this.pendTail = new Int32Array(this.queues).fill(-1);
    this.pendRemain = new Int32Array(this.queues);
    // one slot per vring, big enough for either ring kind (+ indirect tables)
    const ringBytes = Math.max(vringSize(qs), packedVringSize(qs)) + (this.indirect ? driverIndirectSize(qs) + 16 : 0);
    this.vqStride = alignUp(ringBytes, 4096);
    try {
      this.rings = SharedRegion.create(`tsvs-virtio-user-${this.name}`, this.vqStride * 2 * this.queues);
      this.mem = new GuestMemory([
        this.rings.asGuestRegion(this.rings.addr),
        this.pool.region.asGuestRegion(this.pool.region.addr),
      ]);
      this.frontend = new VhostUserFrontend(
        {
          path: o.path,
          server: o.server,
          queuePairs: this.queues,
          queueSize: qs,
          packed: o.packed,
          mrgRxbuf: o.mrgRxbuf,
          eventIdx: o.eventIdx,
          inOrder: o.inOrder ?? true,
          indirect: this.indirect,
          reconnectMinMs: o.reconnectMinMs,
          reconnectMaxMs: o.reconnectMaxMs,
          replyTimeoutMs: o.replyTimeoutMs,
          logger: o.logger,
        },
        this,
      );
      this.frontend.start();
    } catch (e) {
      (this as unknown as { frontend?: VhostUserFrontend }).frontend?.close();
      (this as unknown as { rings?: SharedRegion }).rings?.close();
      if (this.ownsPool) this.pool.close();
      throw e;
    }
  }

  get link(): LinkState {
    return this.active ? 'up' : 'down';
  }

  get nQueues(): number {
    return this.active ? this.nq : this.queues;
  }

  get status(): string {
    if (this.closed) return 'closed';
    if (this.active) {
      const broken = [...this.rxq, ...this.txq].some((d) => d.broken);
      return broken ? 'up, a queue is broken (backend returned a bad used entry)' : 'up';
    }
    const st = this.frontend.state;
    return this.frontend.lastError ? `${st}: ${this.frontend.lastError}` : st;
  }

  /** Resolve once the backend has accepted the rings. */
  waitUp(ms = 10000): Promise<void> {
    return this.frontend.waitUp(ms);
  }

  // ------------------------------------------------------------ FrontendDevice

  setup(cfg: NegotiatedConfig): FrontendSetup {
    this.releaseAll();
    const qs = cfg.queueSize;
    const vrings: VringAddrs[] = [];
    const rxq: DriverQueue[] = [];
    const txq: DriverQueue[] = [];
    for (let i = 0; i < 2 * cfg.queuePairs; i++) {
      const base = this.rings.addr + i * this.vqStride;
      let a: VringAddrs;
      let ringLen: number;
      if (cfg.packed) {
        const l = packedLayout(base, qs);
        a = { descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr };
        ringLen = packedVringSize(qs);
      } else {
        const l = vringLayout(base, qs);
        a = { descAddr: l.descAddr, availAddr: l.availAddr, usedAddr: l.usedAddr };
        ringLen = vringSize(qs);
      }
      const q = createDriverQueue(this.mem, {
        size: qs,
        features: cfg.features,
        descAddr: a.descAddr,
        availAddr: a.availAddr,
        usedAddr: a.usedAddr,
        indirectAddr: this.indirect ? alignUp(base + ringLen, 16) : undefined,
      });
      // we poll: ask the backend not to signal the call eventfd
      q.setInterrupts(false);
      vrings.push(a);
      (i & 1 ? txq : rxq).push(q);
    }
    this.rxq = rxq;
    this.txq = txq;
    this.nq = cfg.queuePairs;
    this.hdrLen = cfg.hdrLen;
    this.pendHead.fill(-1);
    this.pendTail.fill(-1);
    this.pendRemain.fill(0);
    // RX rings full before the backend sees them
    for (let q = 0; q < this.nq; q++) this.refillRx(q, false);
    return {
      regions: [
        { fd: this.rings.fd, addr: this.rings.addr, size: this.rings.size },
        { fd: this.pool.region.fd, addr: this.pool.region.addr, size: this.pool.region.size },
      ],
      vrings,
    };
  }

  up(): void {
    this.active = true;
    for (let q = 0; q < this.nq; q++) this.frontend.kick(2 * q);
  }

  down(reason: string): void {
    void reason;
    this.active = false;
    this.releaseAll();
    this.rxq = [];
    this.txq = [];
  }

  /** Every buffer in our rings (and half-assembled RX chains) back to the pool. */
  private releaseAll(): void {
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
    let left = free;
    while (left > 0) {
      const want = left < SCRATCH ? left : SCRATCH;
      const k = pool.alloc(tok, want);
      if (k === 0) {
        tallyDrop(this.stats.drops, 'rx-no-mbuf', 1);
        break;
      }
      for (let i = 0; i < k; i++) {
        addrs[i] = pool.bufAddr(tok[i]) + off;
        caps[i] = cap;
      }
      const p = d.postRx(addrs, caps, tok, k);
      for (let i = 0; i < p; i++) this.inRing[tok[i]] = 1;
      if (p < k) pool.free(tok, k - p, p);
      left -= p;
      if (p < k) break;
    }
    if (kick && d.needsKick()) this.frontend.kick(2 * q);
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
          countRxDrop(this.stats, 'rx-bad-chain', 1);
        }
        if (len < hdrLen || len > cap) {
          pool.freeOne(h);
          this.pendRemain[q] = nb - 1; // continuation buffers are dropped with it
          countRxDrop(this.stats, len < hdrLen ? 'rx-short' : 'rx-bad-len', 1);
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
            countRxDrop(this.stats, 'rx-bad-len', 1);
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
      countTxDrop(this.stats, this.closed ? 'tx-closed' : this.active ? 'tx-bad-queue' : 'tx-link-down', n);
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
    const base = this.poolVa;
    const addrs = this.addrs;
    const lens = this.lens;
    const tok = this.tok;
    const inRing = this.inRing;
    let j = 0;
    let bytes = 0;
    for (let i = 0; i < m; i++) {
      const h = handles[i];
      if (h < 0 || h >= count) {
        countTxDrop(this.stats, 'tx-bad-handle', 1);
        continue;
      }
      const off = dataOff[h];
      const len = dataLen[h];
      if (next[h] !== -1) {
        pool.freeOne(h);
        countTxDrop(this.stats, 'tx-multi-seg', 1);
        continue;
      }
      if (off < hdrLen || len <= 0 || off + len > bufSize) {
        pool.freeOne(h);
        countTxDrop(this.stats, off < hdrLen ? 'tx-no-headroom' : 'tx-bad-len', 1);
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
      addrs[j] = base + ho;
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
      countTxDrop(this.stats, 'tx-queue-refused', j - p);
    }
    if (p > 0 && d.needsKick()) this.frontend.kick(2 * q + 1);
    this.stats.txPackets += p;
    this.stats.txBytes += bytes;
    if (m < n) countTxDrop(this.stats, 'tx-no-room', n - m);
    return m;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.frontend.close();
    this.active = false;
    this.releaseAll();
    this.rxq = [];
    this.txq = [];
    this.rings.close();
    if (this.ownsPool) this.pool.close();
  }
}

export { BURST };
