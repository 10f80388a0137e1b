/**
 * What the kernel-facing ports (TapPort, AfPacketPort) share: per-queue
 * stashes of pre-allocated rx buffers, drop accounting by reason (errno
 * reasons named once, then reused), link state from interface flags, and
 * close() that returns buffers and closes every fd.
 *
 * Where it runs: as its subclasses (af-packet.ts, tap.ts), in the PMD worker that polls the port.
 */
import type { Mempool } from '../mem/mempool.js';
import { closeQuiet, errnoName } from '../sys/libc.js';
import { IFF_RUNNING, IFF_UP } from '../sys/netdev-native.js';
import { getIfFlags } from '../sys/if-ioctl.js';
import { countRxDrop, countTxDrop, newPortStats, type LinkState, type Port, type PortStats } from './port.js';
import { Drop, type DropReason } from './port.js';

/** Most packets one rxBurst returns (bigger `max` is clamped). */
export const MAX_RX_BURST = 64;
/** Most segments of one chained packet on tx (longer chains are dropped as 'tx-too-many-segs'). */
export const MAX_TX_SEGS = 16;
/**
 * Room for an Ethernet header plus two VLAN tags (QinQ) on top of the MTU: a
 * port of MTU M needs M + L2_OVERHEAD bytes of buffer room (bufSize - headroom).
 * The same as FRAME_OVERHEAD in src/dp/port-factory.ts, which the switch sizes its buffers by.
 */
export const L2_OVERHEAD = 22;

export abstract class KernelPort implements Port {
  abstract readonly type: string;
  readonly name: string;
  readonly pool: Mempool;
  readonly nQueues: number;
  readonly stats: PortStats = newPortStats();
  /** Kernel interface name (in its namespace). */
  readonly ifname: string;
  /** Network namespace the device lives in (undefined: ours at open time). */
  readonly netns: string | undefined;
  /** One fd per queue (readable when frames wait: watch it to avoid busy polling). */
  readonly fds: readonly number[];
  /** Bytes a frame may have in one pool buffer (bufSize - headroom). */
  readonly room: number;

  protected closed = false;
  /** AF_INET socket made in the device's namespace, for interface ioctls. */
  protected readonly ctlFd: number;
  /** Native address of buffer 0's first byte. */
  protected readonly base: number;
  private readonly stash: Int32Array[];
  protected readonly stashLen: Int32Array;
  private readonly tmp = new Int32Array(MAX_RX_BURST);
  private readonly rxReasons: DropReason[] = [];
  private readonly txReasons: DropReason[] = [];

  protected constructor(name: string, pool: Mempool, ifname: string, netns: string | undefined, fds: number[], ctlFd: number) {
    this.name = name;
    this.pool = pool;
    this.ifname = ifname;
    this.netns = netns;
    this.fds = fds;
    this.ctlFd = ctlFd;
    this.nQueues = fds.length;
    this.room = pool.bufSize - pool.headroom;
    this.base = pool.region.addr + pool.bufBase;
    this.stash = fds.map(() => new Int32Array(MAX_RX_BURST));
    this.stashLen = new Int32Array(fds.length);
  }

  /** Up when the interface is administratively up and has carrier (a control-path ioctl). */
  get link(): LinkState {
    if (this.closed) return 'down';
    try {
      const f = getIfFlags(this.ifname, this.ctlFd);
      return (f & IFF_UP) !== 0 && (f & IFF_RUNNING) !== 0 ? 'up' : 'down';
    } catch {
      return 'down';
    }
  }

  abstract rxBurst(q: number, out: Int32Array, max: number): number;
  abstract txBurst(q: number, handles: Int32Array, n: number): number;

  /**
   * Top queue q's stash up to `want` (<= MAX_RX_BURST) buffers if the pool
   * has them (an idle queue holds at most one burst's worth); returns the
   * stash (handles in [0, stashLen[q])). Use the top entries first.
   */
  protected refill(q: number, want: number): Int32Array {
    const st = this.stash[q];
    const len = this.stashLen[q];
    if (len < want) {
      const k = this.pool.alloc(this.tmp, want - len);
      for (let i = 0; i < k; i++) st[len + i] = this.tmp[i];
      this.stashLen[q] = len + k;
    }
    return st;
  }

  /**
   * rxBurst's entry check: how many frames queue q may return now (max
   * clamped to out.length and MAX_RX_BURST); 0 when closed or q is no queue.
   */
  protected rxLimit(q: number, out: Int32Array, max: number): number {
    if (this.closed || q < 0 || q >= this.nQueues) return 0;
    if (max > out.length) max = out.length;
    if (max > MAX_RX_BURST) max = MAX_RX_BURST;
    return max > 0 ? max : 0;
  }

  /** rxBurst's end: `top` stashed buffers left on queue q, n frames of `bytes` received. Returns n. */
  protected rxDone(q: number, top: number, n: number, bytes: number): number {
    this.stashLen[q] = top;
    this.stats.rxPackets += n;
    this.stats.rxBytes += bytes;
    return n;
  }

  /**
   * txBurst's entry check: n clamped to handles.length; 0 when closed or q is
   * no queue (then all n are counted as dropped, 'tx-closed' / 'tx-bad-queue').
   */
  protected txLimit(q: number, handles: Int32Array, n: number): number {
    if (n > handles.length) n = handles.length;
    if (n <= 0) return 0;
    if (this.closed || q < 0 || q >= this.nQueues) {
      this.txDrop(this.closed ? Drop.TX_CLOSED : Drop.TX_BAD_QUEUE, n);
      return 0;
    }
    return n;
  }

  /**
   * txBurst's end: handles[0..taken) were taken (sent, or dropped and freed),
   * the rest of n count as 'tx-busy'; `sent` frames of `bytes` went out. Returns taken.
   */
  protected txDone(taken: number, n: number, sent: number, bytes: number): number {
    if (taken < n) this.txDrop(Drop.TX_BUSY, n - taken);
    this.stats.txPackets += sent;
    this.stats.txBytes += bytes;
    return taken;
  }

  protected rxDrop(reason: DropReason, n = 1): void {
    countRxDrop(this.stats, reason, n);
  }

  protected txDrop(reason: DropReason, n = 1): void {
    countTxDrop(this.stats, reason, n);
  }

  /** 'rx-EIO' style reason for an errno, built once per errno. */
  protected rxErrReason(errno: number): DropReason {
    return this.rxReasons[errno] ??= `rx-${errnoName(errno)}` as DropReason;
  }

  protected txErrReason(errno: number): DropReason {
    return this.txReasons[errno] ??= `tx-${errnoName(errno)}` as DropReason;
  }

  /** Why the last txSegments() call refused a packet (counted by the caller when it takes it). */
  protected txBad: DropReason = Drop.TX_BAD_HANDLE;

  /**
   * Validate packet h for tx: returns its segment count (1..MAX_TX_SEGS), or
   * 0 with the reason in txBad. Does not count anything.
   */
  protected txSegments(h: number): number {
    const pool = this.pool;
    if (h < 0 || h >= pool.count) {
      this.txBad = Drop.TX_BAD_HANDLE;
      return 0;
    }
    let segs = 0;
    let seg = h;
    const bufSize = pool.bufSize;
    while (seg !== -1) {
      if (seg < 0 || seg >= pool.count) {
        this.txBad = Drop.TX_BAD_CHAIN;
        return 0;
      }
      if (++segs > MAX_TX_SEGS) {
        this.txBad = Drop.TX_TOO_MANY_SEGS;
        return 0;
      }
      const off = pool.dataOff[seg];
      const len = pool.dataLen[seg];
      if (off < 0 || len < 0 || off + len > bufSize) {
        this.txBad = Drop.TX_BAD_LEN;
        return 0;
      }
      seg = pool.next[seg];
    }
    return segs;
  }

  /** Take a packet refused by txSegments: count the drop and free it (if the handle is valid). */
  protected txTakeBad(h: number): void {
    this.txDrop(this.txBad);
    if (h >= 0 && h < this.pool.count) this.pool.freeOne(h);
  }

  /** Release hook for subclasses (native vectors ...), run before fds close. */
  protected releaseExtra(): void {}

  /**
   * Return stashed buffers to the pool and close every fd. Idempotent.
   * Close ports before their Mempool (this writes into the pool's memory).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.releaseExtra();
    for (let q = 0; q < this.nQueues; q++) {
      this.pool.free(this.stash[q], this.stashLen[q]);
      this.stashLen[q] = 0;
    }
    for (const fd of this.fds) closeQuiet(fd);
    closeQuiet(this.ctlFd);
  }
}
