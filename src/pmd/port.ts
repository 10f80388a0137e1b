/**
 * The one burst interface every port driver implements (DPDK's rte_eth_dev ops,
 * reduced to what the datapath needs). The datapath never branches on port type.
 *
 * Packets are mempool buffer handles (see src/mem/mempool.ts). Ownership:
 *  - rxBurst fills `out[0..n)` with handles the caller now owns;
 *  - txBurst takes ownership of the handles it reports as sent (it frees them
 *    once the device has consumed them); the caller keeps and must free or
 *    retry the rest, and the port counts those in stats.txDropped and
 *    stats.drops[reason] (link down, no room, ...). Neither call throws or
 *    allocates on the hot path.
 */
import type { Mempool } from '../mem/mempool.js';

export const BURST = 32;

/**
 * Mempool flags bit (pool.flags[h]): the sender left a checksum to offload
 * (CHECKSUM_PARTIAL); the receiving driver finished the outermost L4 checksum
 * only. A tunnel port that decapsulates such a frame finishes the inner one.
 */
export const PKT_F_CSUM_PARTIAL = 1;

/** Counters every port keeps; drops are split by reason. */
export interface PortStats {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  /** rx drops: no mempool buffer, frame too big, malformed chain ... */
  rxDropped: number;
  /** tx drops: no room in the peer's queue, port down ... */
  txDropped: number;
  /** Drop counts by reason, e.g. { 'tx-no-room': 3, 'rx-bad-chain': 1 }. */
  drops: Record<string, number>;
}

export function newPortStats(): PortStats {
  return { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, rxDropped: 0, txDropped: 0, drops: {} };
}

/** Add n to drops[reason] (a per-reason tally only: any total is the caller's). */
export function tallyDrop(drops: Record<string, number>, reason: string, n: number): void {
  drops[reason] = (drops[reason] ?? 0) + n;
}

/** Count n packets dropped on receive for `reason`: stats.rxDropped and stats.drops[reason]. */
export function countRxDrop(stats: PortStats, reason: string, n: number): void {
  stats.rxDropped += n;
  tallyDrop(stats.drops, reason, n);
}

/** Count n packets dropped on transmit for `reason`: stats.txDropped and stats.drops[reason]. */
export function countTxDrop(stats: PortStats, reason: string, n: number): void {
  stats.txDropped += n;
  tallyDrop(stats.drops, reason, n);
}

export type LinkState = 'up' | 'down';

export interface Port {
  readonly name: string;
  /** Driver type, e.g. 'vhost-user', 'virtio-user', 'tap', 'afpacket', 'ring'. */
  readonly type: string;
  /** Number of rx (= tx) queues currently usable. */
  readonly nQueues: number;
  readonly link: LinkState;
  readonly stats: PortStats;
  /** Receive up to max packets from queue q into out; returns the count. */
  rxBurst(q: number, out: Int32Array, max: number): number;
  /** Send handles[0..n) on queue q; returns how many were taken. */
  txBurst(q: number, handles: Int32Array, n: number): number;
  /** Release everything (buffers go back to the pool, memory unmapped, fds closed). */
  close(): void;
  /** Optional: human-readable status/error (e.g. 'guest memory not shared'). */
  readonly status?: string;
}

export type { Mempool };
