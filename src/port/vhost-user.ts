/**
 * The vhost-user PMD (DPDK net_vhost): a Port whose peer is a VM or a
 * virtio-user process speaking vhost-user on a unix socket.
 *
 *   rxBurst(q) = frames the guest transmitted on its TX ring 2q+1 (copied into mbufs)
 *   txBurst(q) = frames copied into the guest's RX ring 2q (mbufs freed after the copy)
 *
 * Two ways to build one:
 *   new VhostUserPort({ path, mempool, ... })      owns the backend (socket, protocol);
 *                                                   data path in the same thread.
 *   VhostUserPort.ringsOnly({ name, mempool, queues })
 *                                                   the rings only, no socket or protocol
 *                                                   (e.g. in another thread): feed it
 *                                                   port.setDataPath(desc) with the
 *                                                   descriptions the owning side's
 *                                                   backend emits ('datapath' event).
 *
 * Hot path: one atomic load per burst to check the generation, no allocation.
 *
 * Where it runs: in the PMD worker that polls the port (the daemon), both the rings and the
 * vhost-user protocol (the backend's socket is served on that worker's event loop).
 */
import type { Mempool } from '../mem/mempool.js';
import { VhostUserBackend } from '../vhost/backend.js';
import type { GuestMemoryInfo } from '../vhost/backend-protocol.js';
import { NetDevice } from '../vhost/net-device.js';
import { NetDataPath } from '../vhost/net-rings.js';
import { defaultLogger, type Logger } from '../vhost/connection.js';
import type { DataPathDescription } from '../vhost/ring-lease.js';
import type { DeviceQueueStats } from '../virtio/device-queue.js';
import { L2_OVERHEAD } from './kernel-port.js';
import { BURST, countTxDrop, newPortStats, tallyDrop, type LinkState, type Port, type PortStats } from './port.js';
import { Drop, type DropReason } from './port.js';
import { ONE_COPY_PRIVATE, type OneCopyPort, type OneCopyTails } from './one-copy.js';

export interface VhostUserPortOptions {
  /** Port name (default: the socket path). */
  name?: string;
  /** vhost-user socket path. */
  path: string;
  /** Connect to a listening frontend (QEMU server=on / virtio-user server=1). Default false: we listen. */
  client?: boolean;
  /** Queue pairs (default 1). */
  queues?: number;
  /** MAC in the device config space. */
  mac?: string;
  /** MTU in the device config space (default 1500). */
  mtu?: number;
  /** Largest MTU a guest may set (NET_SET_MTU); default: the largest whose frames fit the pool's buffers. */
  maxMtu?: number;
  /** Virtio features to withhold (e.g. F_RING_PACKED). */
  disableFeatures?: bigint;
  mempool: Mempool;
  logger?: Logger;
  /** Client mode: max reconnect backoff (default 1000 ms). */
  reconnectMaxMs?: number;
  /** Most guest memory a frontend may share (bytes; default 1 TiB) and how the user raises it (named in the refusal). */
  maxGuestMemory?: number;
  maxGuestMemoryName?: string;
}

export interface VhostUserRingsOnlyOptions {
  name: string;
  mempool: Mempool;
  queues?: number;
  logger?: Logger;
}

/** RARP frame length (Ethernet header + 28-byte ARP-format body), padded to the minimum. */
const RARP_LEN = 60;

export class VhostUserPort implements Port, OneCopyPort {
  readonly name: string;
  readonly type = 'vhost-user';
  readonly nQueues: number;
  /** The backend (null for a rings-only port). */
  readonly backend: VhostUserBackend | null;
  readonly device: NetDevice | null;
  private readonly pool: Mempool;
  private readonly log: Logger;
  private dp: NetDataPath | null = null;
  private pending: DataPathDescription | null = null;
  private closed = false;
  private statusText = 'waiting for frontend';
  private pendingRarp: Uint8Array | null = null;
  /** Owner ports: the backend's latest description (what a thread polling this port runs on). */
  private lastDesc: DataPathDescription | null = null;
  /** Set while another thread polls this port's rings: new descriptions go there (see handOff). */
  private forward: ((d: DataPathDescription | null) => void) | null = null;

  // burst scratch (no allocation per burst)
  private readonly offs = new Int32Array(BURST * 8);
  private readonly lens = new Int32Array(BURST * 8);
  private readonly cap: number;
  /** One copy (one-copy.ts): the PMD thread's tail table, or null (pool path). */
  private tails: OneCopyTails | null = null;
  /** Ring whose last rx burst is held (chains not yet returned to the guest), or -1. */
  private held = -1;
  // tails of a burst (rx: as dequeued; tx: gathered from the table)
  private readonly tWin: (Uint8Array | null)[] = new Array<Uint8Array | null>(BURST * 8).fill(null);
  private readonly tW32: (Int32Array | null)[] = new Array<Int32Array | null>(BURST * 8).fill(null);
  private readonly tOff = new Int32Array(BURST * 8);
  private readonly tLen = new Int32Array(BURST * 8);

  private readonly s: PortStats = newPortStats();
  /** Device-queue counters of data paths already detached, folded into stats. */
  private readonly folded = { rxBad: 0, rxTooBig: 0, txTooBig: 0, txBad: 0 };

  constructor(opts: VhostUserPortOptions | (VhostUserRingsOnlyOptions & { ringsOnly: true })) {
    const ringsOnly = 'ringsOnly' in opts;
    this.name = opts.name ?? (ringsOnly ? 'vhost-user' : (opts as VhostUserPortOptions).path);
    this.pool = opts.mempool;
    this.log = opts.logger ?? defaultLogger;
    this.nQueues = opts.queues ?? 1;
    this.cap = this.pool.bufSize - this.pool.headroom;
    if (ringsOnly) {
      this.device = null;
      this.backend = null;
      this.statusText = 'waiting for data path';
      return;
    }
    const o = opts as VhostUserPortOptions;
    this.device = new NetDevice(
      { queuePairs: this.nQueues, mac: o.mac, mtu: o.mtu, disableFeatures: o.disableFeatures, maxMtu: o.maxMtu ?? Math.max(68, Math.min(65535, this.cap - L2_OVERHEAD)) },
      (mac) => this.injectRarp(mac),
    );
    this.backend = new VhostUserBackend({
      path: o.path,
      client: o.client,
      device: this.device,
      logger: this.log,
      name: this.name,
      reconnectMaxMs: o.reconnectMaxMs,
      maxGuestMemory: o.maxGuestMemory,
      maxGuestMemoryName: o.maxGuestMemoryName,
    });
    this.backend.on('datapath', (d) => {
      this.lastDesc = d;
      if (this.forward !== null) this.forward(d);
      else this.setDataPath(d);
    });
    this.backend.on('connect', () => (this.statusText = 'frontend connected'));
    this.backend.on('disconnect', (r) => (this.statusText = r ? `frontend disconnected: ${r}` : 'frontend disconnected'));
    this.backend.start();
  }

  /** A port of rings only, whose backend runs elsewhere (e.g. in another thread): feed it setDataPath(). */
  static ringsOnly(opts: VhostUserRingsOnlyOptions): VhostUserPort {
    return new VhostUserPort({ ...opts, ringsOnly: true });
  }

  get link(): LinkState {
    const dp = this.dp;
    if (dp !== null && dp.valid() && this.brokenRing(dp) < 0) {
      for (let q = 0; q < this.nQueues; q++) if (dp.rings[2 * q] && dp.rings[2 * q + 1] && dp.enabled(2 * q) && dp.enabled(2 * q + 1)) return 'up';
    }
    return 'down';
  }

  get status(): string {
    const problem = this.backend?.problem;
    if (problem) return problem;
    const dp = this.dp;
    const b = dp !== null ? this.brokenRing(dp) : -1;
    if (dp !== null && b >= 0) {
      return (
        `ring ${b} (guest ${b & 1 ? 'TX' : 'RX'}) marked broken: ${dp.rings[b]!.brokenReason}; ` +
        'no traffic until the frontend resets the device or reconnects'
      );
    }
    return this.statusText;
  }

  /** The first ring of the data path marked broken by its device queue, or -1. */
  private brokenRing(dp: NetDataPath): number {
    const r = dp.rings;
    for (let i = 0; i < r.length; i++) if (r[i] !== null && r[i]!.broken) return i;
    return -1;
  }

  /** The guest memory the frontend shares now and how it is protected against truncation (null: none). */
  get memory(): GuestMemoryInfo | null {
    return this.backend?.memoryInfo ?? null;
  }

  /** Counters (drops by reason include the guest-ring violations seen by the device queues). */
  get stats(): PortStats {
    const s = this.s;
    let rxBad = this.folded.rxBad;
    let rxTooBig = this.folded.rxTooBig;
    let txTooBig = this.folded.txTooBig;
    let txBad = this.folded.txBad;
    const dp = this.dp;
    if (dp) {
      // a plain loop: the stats board reads this every 10 ms from the poll loop (no closure per read)
      const rings = dp.rings;
      for (let i = 0; i < rings.length; i++) {
        const r = rings[i];
        if (!r) continue;
        if (i & 1) {
          rxBad += badCount(r.stats);
          rxTooBig += r.stats.tooBig;
        } else {
          txBad += badCount(r.stats);
          txTooBig += r.stats.tooBig;
        }
      }
    }
    setDrop(s, Drop.RX_BAD_GUEST_CHAIN, rxBad);
    setDrop(s, Drop.RX_TOO_BIG, rxTooBig);
    setDrop(s, Drop.TX_TOO_BIG, txTooBig);
    setDrop(s, Drop.TX_BAD_GUEST_CHAIN, txBad);
    return s;
  }

  /** Replace the data path (null: stop). Called by the backend event, or by a worker's message handler. */
  setDataPath(desc: DataPathDescription | null): void {
    this.dropDataPath();
    if (this.closed || !desc) {
      this.pending = null;
      if (!this.closed) this.statusText = this.backend?.connected ? 'frontend connected, rings not ready' : 'no data path';
      return;
    }
    this.pending = desc;
    this.tryAttach();
  }

  /**
   * Hand the data path to another thread (PMD rx-queue rebalancing): detach
   * here, which saves where every ring stopped in the shared control block,
   * so the next owner resumes there (nothing taken twice or skipped). An owner
   * port keeps its backend (socket, protocol) and passes the backend's later
   * descriptions to `forward`; a rings-only port is done after this (close it).
   * Returns the description the next owner should attach, and the counters,
   * which move with the polling (see carryStats).
   */
  handOff(forward: ((d: DataPathDescription | null) => void) | null): { desc: DataPathDescription | null; stats: PortStats } {
    const desc = this.backend !== null ? this.lastDesc : (this.dp?.lease.desc ?? this.pending);
    this.dropDataPath();
    this.pending = null;
    const stats = this.stats;
    const snap = { ...stats, drops: { ...stats.drops } };
    this.forward = forward;
    if (forward !== null) this.statusText = 'polled by another PMD thread';
    return { desc, stats: snap };
  }

  /** An owner port polls its rings again (after handOff): the backend's latest description. */
  takeBack(): void {
    this.forward = null;
    this.setDataPath(this.lastDesc);
  }

  /** Continue the counters of the port's previous poller (call before attaching a data path). */
  carryStats(snap: PortStats): void {
    const s = this.s;
    s.rxPackets = snap.rxPackets;
    s.rxBytes = snap.rxBytes;
    s.txPackets = snap.txPackets;
    s.txBytes = snap.txBytes;
    s.rxDropped = snap.rxDropped;
    s.txDropped = snap.txDropped;
    const drops: Record<string, number> = { ...snap.drops };
    this.folded.rxBad = drops[Drop.RX_BAD_GUEST_CHAIN] ?? 0;
    this.folded.rxTooBig = drops[Drop.RX_TOO_BIG] ?? 0;
    this.folded.txTooBig = drops[Drop.TX_TOO_BIG] ?? 0;
    this.folded.txBad = drops[Drop.TX_BAD_GUEST_CHAIN] ?? 0;
    for (const k of [Drop.RX_BAD_GUEST_CHAIN, Drop.RX_TOO_BIG, Drop.TX_TOO_BIG, Drop.TX_BAD_GUEST_CHAIN]) delete drops[k];
    s.drops = drops;
  }

  /** Queue a RARP announcement for `mac` (sent on the next rxBurst of queue 0). */
  injectRarp(mac: Uint8Array): void {
    this.pendingRarp = mac.slice(0, 6);
  }

  private tryAttach(): void {
    const desc = this.pending;
    if (!desc) return;
    this.pending = null;
    try {
      this.dp = NetDataPath.attach(desc);
      if (this.dp) this.statusText = 'running';
    } catch (e) {
      this.statusText = `rings unusable: ${(e as Error).message}`;
      this.log.log('warn', `${this.name}: data path generation ${desc.generation}: ${(e as Error).message}`);
      this.dp = null;
    }
  }

  private dropDataPath(): void {
    const dp = this.dp;
    if (!dp) return;
    if (this.held >= 0) this.rxReleaseOn(dp);
    dp.rings.forEach((r, i) => {
      if (!r) return;
      if (i & 1) {
        this.folded.rxBad += badCount(r.stats);
        this.folded.rxTooBig += r.stats.tooBig;
      } else {
        this.folded.txBad += badCount(r.stats);
        this.folded.txTooBig += r.stats.tooBig;
      }
    });
    dp.detach();
    this.dp = null;
  }

  /** Current data path if still valid (detaches a revoked one). */
  private active(): NetDataPath | null {
    const dp = this.dp;
    // chains held for one copy: keep this data path (and its memory) until rxRelease
    if (this.held >= 0) return dp;
    if (dp !== null) {
      if (dp.valid()) return dp;
      this.dropDataPath();
    }
    if (this.pending !== null) this.tryAttach();
    return this.dp;
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    const dp = this.active();
    if (dp === null || q < 0 || q >= this.nQueues) return 0;
    if (this.held >= 0) this.rxReleaseOn(dp); // a caller that did not release (the datapath always does)
    if (max > out.length) max = out.length;
    if (max > this.offs.length) max = this.offs.length;
    let extra = 0;
    if (this.pendingRarp !== null && q === 0 && max > 0) extra = this.emitRarp(out);
    const ri = 2 * q + 1;
    const vq = dp.rings[ri];
    if (vq === null || max - extra <= 0) return extra;
    // buffers for what the guest has posted, not a whole burst's worth every time
    const want = vq.availCount(max - extra);
    if (want === 0 || !dp.enabled(ri)) return extra;
    const pool = this.pool;
    const got = extra === 0 ? pool.alloc(out, want) : pool.alloc(out.subarray(extra), want);
    if (got === 0) {
      // The guest's frames stay in its ring; counted, not lost.
      tallyDrop(this.s.drops, Drop.RX_POOL_EXHAUSTED, 1);
      return extra;
    }
    const offs = this.offs;
    for (let i = 0; i < got; i++) offs[i] = pool.dataOffset(out[extra + i]);
    const lens = this.lens;
    const t = this.tails;
    if (t !== null) {
      // one copy: the private part now, the tails described in t, the chains held until rxRelease
      if (extra > 0) t.len[out[0]] = 0;
      const tLen = this.tLen;
      const n = vq.dequeueBurstDeferred(pool.data, offs, this.cap, lens, ONE_COPY_PRIVATE, this.tWin, this.tW32, this.tOff, tLen, got);
      let bytes = 0;
      for (let i = 0; i < n; i++) {
        const h = out[extra + i];
        pool.dataLen[h] = lens[i];
        pool.pktLen[h] = lens[i];
        bytes += lens[i];
        const tl = tLen[i];
        t.len[h] = tl;
        if (tl > 0) {
          t.win[h] = this.tWin[i];
          t.w32[h] = this.tW32[i];
          t.off[h] = this.tOff[i];
        }
      }
      if (n < got) pool.free(out, got - n, extra + n);
      if (n > 0) {
        this.s.rxPackets += n;
        this.s.rxBytes += bytes;
      }
      this.held = ri;
      if (extra + n === 0) this.rxReleaseOn(dp); // nothing for the datapath (bad chains only): return them now
      return extra + n;
    }
    const n = vq.dequeueBurst(pool.data, offs, this.cap, lens, got);
    // frame k landed at offs[k] = buffer out[extra+k]
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const h = out[extra + i];
      pool.dataLen[h] = lens[i];
      pool.pktLen[h] = lens[i];
      bytes += lens[i];
    }
    if (n < got) pool.free(out, got - n, extra + n);
    if (n > 0) {
      this.s.rxPackets += n;
      this.s.rxBytes += bytes;
    }
    dp.notify(ri);
    return extra + n;
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    if (n <= 0) return 0;
    const pool = this.pool;
    const dp = this.active();
    const ri = 2 * q;
    const vq = dp !== null && q >= 0 && q < this.nQueues ? dp.rings[ri] : null;
    if (dp === null || vq === null || !dp.enabled(ri)) {
      countTxDrop(this.s, Drop.TX_LINK_DOWN, n);
      pool.free(handles, n);
      return n;
    }
    const offs = this.offs;
    const lens = this.lens;
    const t = this.tails;
    const tLen = this.tLen;
    let done = 0;
    while (done < n) {
      const m = Math.min(n - done, offs.length);
      let k = 0;
      let tails = 0;
      let multi = 0;
      for (let i = 0; i < m; i++) {
        const h = handles[done + i];
        if (pool.next[h] !== -1) {
          // multi-segment mbufs are not supported by this PMD: drop
          countTxDrop(this.s, Drop.TX_MULTI_SEGMENT, 1);
          multi++;
          offs[k] = 0;
          lens[k] = -1; // enqueueBurst counts it as badFrame and skips it
          if (t !== null) tLen[k] = 0;
          k++;
          continue;
        }
        offs[k] = pool.dataOffset(h);
        lens[k] = pool.dataLen[h];
        if (t !== null) {
          const tl = t.len[h];
          tLen[k] = tl;
          if (tl > 0) {
            this.tWin[k] = t.win[h];
            this.tW32[k] = t.w32[h];
            this.tOff[k] = t.off[h];
            tails++;
          }
        }
        k++;
      }
      const before = vq.stats.pkts;
      const bytesBefore = vq.stats.bytes;
      let consumed: number;
      if (tails > 0) {
        consumed = vq.enqueueBurstTails(pool.data, offs, lens, ONE_COPY_PRIVATE, this.tWin, this.tW32, this.tOff, tLen, k);
        t!.direct += vq.lastDirect;
      } else {
        consumed = vq.enqueueBurst(pool.data, offs, lens, k);
      }
      const sent = vq.stats.pkts - before;
      this.s.txPackets += sent;
      this.s.txBytes += vq.stats.bytes - bytesBefore;
      if (consumed < k) {
        countTxDrop(this.s, Drop.TX_NO_GUEST_BUFFERS, k - consumed);
      }
      // consumed-but-not-sent frames (too big / bad chains) are counted via device stats
      this.s.txDropped += consumed - sent - (multi > 0 ? countMultiseg(lens, consumed) : 0);
      done += m;
      if (consumed < k) break;
    }
    if (done < n) {
      countTxDrop(this.s, Drop.TX_NO_GUEST_BUFFERS, n - done);
    }
    pool.free(handles, n);
    dp.notify(ri);
    return n;
  }

  /** One copy (one-copy.ts): use the PMD thread's tail table (null: back to the pool path). */
  useOneCopy(t: OneCopyTails | null): boolean {
    if (this.held >= 0 && this.dp !== null) this.rxReleaseOn(this.dp);
    this.tails = t;
    return true;
  }

  /** One copy: return to the guest the chains the last rxBurst of queue q held, and signal it. */
  rxRelease(q: number): void {
    void q;
    const dp = this.dp;
    if (this.held < 0 || dp === null) {
      this.held = -1;
      return;
    }
    this.rxReleaseOn(dp);
  }

  private rxReleaseOn(dp: NetDataPath): void {
    const ri = this.held;
    this.held = -1;
    const vq = dp.rings[ri];
    if (vq === null || vq === undefined) return;
    vq.releaseDeferred();
    dp.notify(ri);
  }

  /** Build a RARP frame announcing pendingRarp into a fresh mbuf at out[0]. */
  private emitRarp(out: Int32Array): number {
    const mac = this.pendingRarp as Uint8Array;
    this.pendingRarp = null;
    const pool = this.pool;
    const got = pool.alloc(out, 1);
    if (got === 0) return 0;
    const h = out[0];
    const b = pool.data;
    const o = pool.dataOffset(h);
    b.fill(0, o, o + RARP_LEN);
    b.fill(0xff, o, o + 6); // broadcast
    b.set(mac, o + 6);
    b[o + 12] = 0x80; // ethertype 0x8035 (RARP)
    b[o + 13] = 0x35;
    b[o + 15] = 1; // htype ethernet
    b[o + 16] = 0x08; // ptype IPv4
    b[o + 18] = 6;
    b[o + 19] = 4;
    b[o + 21] = 3; // opcode: reverse request
    b.set(mac, o + 22); // sender hw
    b.set(mac, o + 32); // target hw
    pool.dataLen[h] = RARP_LEN;
    pool.pktLen[h] = RARP_LEN;
    this.s.rxPackets++;
    this.s.rxBytes += RARP_LEN;
    return 1;
  }

  /** Stop: detach the data path, disconnect, unmap, close fds and the socket. */
  close(): void {
    void this.closeAsync();
  }

  /** close() that resolves when the backend has released everything. */
  async closeAsync(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dropDataPath();
    this.pending = null;
    this.statusText = 'closed';
    if (this.backend) await this.backend.close();
  }
}

function badCount(s: DeviceQueueStats): number {
  return s.badChain + s.badAddr + s.loop + s.badIndirect + s.short + s.badIndex + s.badHead;
}

function setDrop(s: PortStats, reason: DropReason, v: number): void {
  if (v > 0 || reason in s.drops) s.drops[reason] = v;
}

function countMultiseg(lens: Int32Array, n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) if (lens[i] === -1) c++;
  return c;
}
