/**
 * The port layer (the architecture's "pmd" layer: poll-mode port drivers; the threads that poll them
 * are the datapath's PMD threads, src/dp/pmd-thread.ts, as OVS names them).
 *
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
 *
 * Where it runs: a port runs on the thread that opened it: in the daemon, the PMD worker that
 * polls it (src/dp/pmd-thread.ts); in tsvs testpmd and the tests, their own thread.
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

/**
 * Every reason a packet is dropped, in one place: what `port-stats`, `pmd-stats`, the
 * Prometheus metrics and the OVSDB statistics show. A const enum (tsc writes the string at
 * each use: no lookup in a hot path); a reason outside it (by name or as its text) does not compile. Kernel errors are
 * counted as 'rx-E<errno>' / 'tx-E<errno>' (e.g. tx-ENETDOWN).
 */
export const enum Drop {
  // ports, receive side
  /** The frame does not fit a packet buffer (or the pool's MTU). */
  RX_TOO_BIG = 'rx-too-big',
  RX_NO_HEADROOM = 'rx-no-headroom',
  /** Shorter than an Ethernet header. */
  RX_RUNT = 'rx-runt',
  /** Lost in the kernel's socket queue or ring (PACKET_STATISTICS). */
  RX_KERNEL_QUEUE_FULL = 'rx-kernel-queue-full',
  RX_NO_MBUF = 'rx-no-mbuf',
  RX_BAD_CHAIN = 'rx-bad-chain',
  RX_SHORT = 'rx-short',
  RX_BAD_LEN = 'rx-bad-len',
  RX_POOL_EXHAUSTED = 'rx-pool-exhausted',
  /** A guest's descriptor chain broke a virtio rule (the ring is then marked broken). */
  RX_BAD_GUEST_CHAIN = 'rx-bad-guest-chain',
  // ports, transmit side
  TX_CLOSED = 'tx-closed',
  TX_BAD_QUEUE = 'tx-bad-queue',
  /** The kernel would block (EAGAIN/ENOBUFS): returned to the caller, not taken. */
  TX_BUSY = 'tx-busy',
  TX_BAD_HANDLE = 'tx-bad-handle',
  TX_BAD_CHAIN = 'tx-bad-chain',
  TX_TOO_MANY_SEGS = 'tx-too-many-segs',
  TX_BAD_LEN = 'tx-bad-len',
  TX_LINK_DOWN = 'tx-link-down',
  /** virtio-user / virtio-pci: a chained packet where the device takes one buffer. */
  TX_MULTI_SEG = 'tx-multi-seg',
  /** vhost-user: a chained packet the guest's buffers cannot take. */
  TX_MULTI_SEGMENT = 'tx-multi-segment',
  TX_NO_HEADROOM = 'tx-no-headroom',
  TX_QUEUE_REFUSED = 'tx-queue-refused',
  TX_NO_ROOM = 'tx-no-room',
  TX_PEER_CLOSED = 'tx-peer-closed',
  /** The guest posted no RX buffers. */
  TX_NO_GUEST_BUFFERS = 'tx-no-guest-buffers',
  TX_TOO_BIG = 'tx-too-big',
  TX_BAD_GUEST_CHAIN = 'tx-bad-guest-chain',
  /** The ring to the PMD thread that owns the output port was full. */
  TX_CROSS_PMD_RING_FULL = 'tx-cross-pmd-ring-full',
  TX_QUEUE_FULL = 'tx-queue-full',
  // vxlan tunnel ports (src/port/vxlan.ts): underlay frames that are not our tunnel, inner frames that cannot go out
  RX_NOT_TUNNEL = 'rx-not-tunnel',
  RX_IP_OPTIONS = 'rx-ip-options',
  RX_IP_FRAGMENT = 'rx-ip-fragment',
  RX_WRONG_REMOTE = 'rx-wrong-remote',
  RX_BAD_VXLAN = 'rx-bad-vxlan',
  RX_WRONG_VNI = 'rx-wrong-vni',
  TX_NEIGH_UNRESOLVED = 'tx-neigh-unresolved',
  TX_CHAINED = 'tx-chained',
  TX_RUNT = 'tx-runt',
  TX_UNDERLAY_BUSY = 'tx-underlay-busy',
  // datapath (per PMD thread)
  PORT_DOWN = 'port-down',
  POOL_EXHAUSTED = 'pool-exhausted',
  /** No datapath flow and the upcall found no rule. */
  NO_RULE = 'no-rule',
  MALFORMED = 'malformed',
  UPCALL_QUEUE_FULL = 'upcall-queue-full',
  ACTION_ERROR = 'action-error',
  /** The rule's actions drop the packet. */
  ACTION_DROP = 'action-drop',
  COPY_TOO_BIG = 'copy-too-big',
}

/** A drop reason: one of {@link Drop} (by name or by its text), or a kernel errno on a kernel port. */
export type DropReason = Drop | `${Drop}` | `rx-E${string}` | `tx-E${string}`;

/** Add n to drops[reason] (a per-reason tally only: any total is the caller's). */
export function tallyDrop(drops: Record<string, number>, reason: DropReason, n: number): void {
  drops[reason] = (drops[reason] ?? 0) + n;
}

/** Count n packets dropped on receive for `reason`: stats.rxDropped and stats.drops[reason]. */
export function countRxDrop(stats: PortStats, reason: DropReason, n: number): void {
  stats.rxDropped += n;
  tallyDrop(stats.drops, reason, n);
}

/** Count n packets dropped on transmit for `reason`: stats.txDropped and stats.drops[reason]. */
export function countTxDrop(stats: PortStats, reason: DropReason, n: number): void {
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
