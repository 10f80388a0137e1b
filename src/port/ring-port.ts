/**
 * The ring PMD (DPDK net_ring): a Port made of rings over shared memory, for
 * connecting two apps, threads or processes that share one Mempool.
 *
 * One memfd region holds a small header and, per queue, two rings of mbuf
 * handles: ring[q][0] carries side 0 -> side 1, ring[q][1] side 1 -> side 0.
 * Side s transmits on ring[q][s] and receives on ring[q][1-s]. Packets are
 * passed by handle; the bytes stay in the shared pool (zero copy).
 *
 *   RingPort.create(name, pool, size)      side 0, owns the region
 *   port.attachInfo()                      -> post to a worker
 *   RingPort.attach(info, pool)            side 1 in a worker (pool = Mempool.attach(...))
 *   RingPort.fromFd(fd, pool)              side 1 in another process (fd = port.region.fd)
 *
 * The creator must close last when the peer is a worker thread of the same
 * process (the worker's views point into the creator's mapping).
 *
 * Where it runs: each end in the thread that opened it (the two ends may be in different threads
 * or processes).
 */
import { Ring, RingError } from '../ring/ring.js';
import { SharedRegion, type RegionAttachInfo } from '../mem/region.js';
import type { Mempool } from '../mem/mempool.js';
import * as libc from '../sys/libc.js';
import { countTxDrop, newPortStats, type LinkState, type Port, type PortStats } from './port.js';
import { Drop, type DropReason } from './port.js';

export class RingPortError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'RingPortError';
  }
}

export interface RingPortAttachInfo {
  name: string;
  /** The side the receiver of this info takes (0 or 1). */
  side: number;
  region: RegionAttachInfo;
  poolId: number;
}

export interface RingPortOptions {
  /** Queue pairs (default 1). Each queue end is used by one thread at a time (SPSC rings). */
  queues?: number;
}

const MAGIC = 0x50474e52; // 'RNGP'
const HEADER_BYTES = 64;
const H_MAGIC = 0;
const H_SIZE = 1;
const H_QUEUES = 2;
const H_POOL = 3;
const H_STATE0 = 4; // + side
const H_CLOSERS = 6;
const ST_NONE = 0;
const ST_OPEN = 1;
const ST_CLOSED = 2;
const MAX_QUEUES = 64;

function layoutBytes(size: number, queues: number): number {
  return HEADER_BYTES + queues * 2 * Ring.bytesNeeded(size);
}

function ringOffset(size: number, q: number, dir: number): number {
  return HEADER_BYTES + (q * 2 + dir) * Ring.bytesNeeded(size);
}

export class RingPort implements Port {
  readonly type = 'ring';
  readonly name: string;
  readonly nQueues: number;
  readonly stats: PortStats = newPortStats();
  /** 0 for the creator, 1 for the peer. */
  readonly side: number;
  readonly size: number;
  readonly region: SharedRegion;
  readonly pool: Mempool;
  private readonly rx: Ring[];
  private readonly tx: Ring[];
  private readonly hdr: Int32Array;
  private readonly ownsRegion: boolean;
  private closed = false;
  private readonly scratch = new Int32Array(64);

  private constructor(name: string, region: SharedRegion, pool: Mempool, side: number, owns: boolean) {
    const bytes = region.bytes;
    if (bytes.length < HEADER_BYTES) throw new RingPortError('region too small for a ring port');
    const hdr = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_BYTES / 4);
    if (Atomics.load(hdr, H_MAGIC) !== MAGIC) throw new RingPortError('region holds no ring port (bad magic)');
    const size = hdr[H_SIZE];
    const queues = hdr[H_QUEUES];
    if (!(queues >= 1 && queues <= MAX_QUEUES)) throw new RingPortError(`corrupt ring port header (queues ${queues})`);
    if (hdr[H_POOL] !== pool.id) throw new RingPortError(`ring port ${name}: the peer uses a different mempool (id ${hdr[H_POOL]}, ours ${pool.id})`);
    this.name = name;
    this.region = region;
    this.pool = pool;
    this.side = side;
    this.size = size;
    this.nQueues = queues;
    this.hdr = hdr;
    this.ownsRegion = owns;
    this.rx = [];
    this.tx = [];
    try {
      if (layoutBytes(size, queues) > bytes.length) throw new RingPortError('ring port rings beyond the region');
      for (let q = 0; q < queues; q++) {
        this.tx.push(Ring.attach(bytes, ringOffset(size, q, side)));
        this.rx.push(Ring.attach(bytes, ringOffset(size, q, 1 - side)));
      }
    } catch (e) {
      if (e instanceof RingError) throw new RingPortError(`corrupt ring port ${name}: ${e.message}`);
      throw e;
    }
  }

  /** Create side 0 with `size` slots per ring (power of two). */
  static create(name: string, pool: Mempool, size = 1024, opts: RingPortOptions = {}): RingPort {
    const queues = opts.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > MAX_QUEUES) throw new RingPortError(`queues ${queues} must be in 1..${MAX_QUEUES}`);
    let need: number;
    try {
      need = layoutBytes(size, queues);
    } catch (e) {
      throw new RingPortError(`ring port ${name}: ${(e as Error).message}`);
    }
    const region = SharedRegion.create(`tsvs-ring-${name}`, need);
    try {
      const bytes = region.bytes;
      const hdr = new Int32Array(bytes.buffer, bytes.byteOffset, HEADER_BYTES / 4);
      hdr[H_SIZE] = size;
      hdr[H_QUEUES] = queues;
      hdr[H_POOL] = pool.id;
      for (let q = 0; q < queues; q++) {
        Ring.init(bytes, ringOffset(size, q, 0), size, 'spsc');
        Ring.init(bytes, ringOffset(size, q, 1), size, 'spsc');
      }
      hdr[H_STATE0] = ST_OPEN;
      Atomics.store(hdr, H_MAGIC, MAGIC);
      return new RingPort(name, region, pool, 0, true);
    } catch (e) {
      region.close();
      throw e;
    }
  }

  /** What the peer needs (in a worker thread of this process) to open the other side. */
  attachInfo(): RingPortAttachInfo {
    return { name: this.name, side: 1 - this.side, region: this.region.attachInfo(), poolId: this.pool.id };
  }

  /** Open the peer side in a worker thread; `pool` is the worker's attachment of the same Mempool. */
  static attach(info: RingPortAttachInfo, pool: Mempool): RingPort {
    if (info.side !== 0 && info.side !== 1) throw new RingPortError(`bad side ${info.side}`);
    const p = new RingPort(info.name, SharedRegion.attach(info.region), pool, info.side, false);
    p.claimSide();
    return p;
  }

  /**
   * Open a side in another process from the port's memfd (`port.region.fd`,
   * inherited or received over a unix socket). Takes ownership of fd.
   */
  static fromFd(fd: number, pool: Mempool, opts: { name?: string; side?: number } = {}): RingPort {
    const side = opts.side ?? 1;
    if (side !== 0 && side !== 1) throw new RingPortError(`bad side ${side}`);
    const region = SharedRegion.fromFd(fd, libc.fdSize(fd));
    try {
      const p = new RingPort(opts.name ?? 'ring', region, pool, side, true);
      p.claimSide();
      return p;
    } catch (e) {
      region.fd = -1; // on failure the fd stays the caller's
      region.close();
      throw e;
    }
  }

  private claimSide(): void {
    const prev = Atomics.compareExchange(this.hdr, H_STATE0 + this.side, ST_NONE, ST_OPEN);
    if (prev !== ST_NONE) {
      this.closed = true;
      throw new RingPortError(`ring port ${this.name}: side ${this.side} is already ${prev === ST_OPEN ? 'open' : 'closed'}`);
    }
  }

  /** Up while both sides are open. */
  get link(): LinkState {
    if (this.closed) return 'down';
    return Atomics.load(this.hdr, H_STATE0 + 1 - this.side) === ST_OPEN ? 'up' : 'down';
  }

  /** Packets waiting to be received on queue q. */
  rxPending(q = 0): number {
    return q >= 0 && q < this.nQueues && !this.closed ? this.rx[q].count() : 0;
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    if (this.closed || q < 0 || q >= this.nQueues) return 0;
    const n = this.rx[q].dequeueBurst(out, max > out.length ? out.length : max);
    if (n > 0) {
      const pktLen = this.pool.pktLen;
      let bytes = 0;
      for (let i = 0; i < n; i++) bytes += pktLen[out[i]];
      this.stats.rxPackets += n;
      this.stats.rxBytes += bytes;
    }
    return n;
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    if (n > handles.length) n = handles.length;
    if (n <= 0) return 0;
    if (this.closed || q < 0 || q >= this.nQueues) {
      countTxDrop(this.stats, this.closed ? Drop.TX_CLOSED : Drop.TX_BAD_QUEUE, n);
      return 0;
    }
    if (Atomics.load(this.hdr, H_STATE0 + 1 - this.side) === ST_CLOSED) {
      countTxDrop(this.stats, Drop.TX_PEER_CLOSED, n);
      return 0;
    }
    // Sum lengths before the enqueue: once taken, the peer owns the buffers.
    const pktLen = this.pool.pktLen;
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += pktLen[handles[i]];
    const k = this.tx[q].enqueueBurst(handles, n);
    for (let i = k; i < n; i++) bytes -= pktLen[handles[i]];
    this.stats.txPackets += k;
    this.stats.txBytes += bytes;
    if (k < n) countTxDrop(this.stats, Drop.TX_NO_ROOM, n - k);
    return k;
  }

  /**
   * Close this side. Packets waiting for us go back to the pool; the second
   * side to close also drains what it sent and nobody received.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.hdr, H_STATE0 + this.side, ST_CLOSED);
    // Drain what was sent to us first; only then count ourselves closed, so
    // the second closer (sole consumer left) may drain our rx rings' peers.
    for (let q = 0; q < this.nQueues; q++) this.drain(this.rx[q]);
    if (Atomics.add(this.hdr, H_CLOSERS, 1) === 1) {
      for (let q = 0; q < this.nQueues; q++) this.drain(this.tx[q]);
    }
    if (this.ownsRegion) this.region.close();
  }

  private drain(r: Ring): void {
    const buf = this.scratch;
    for (;;) {
      const n = r.dequeueBurst(buf, buf.length);
      if (n === 0) break;
      this.pool.free(buf, n);
    }
  }
}
