/**
 * The AF_PACKET PMD (DPDK net_af_packet, reduced): a Port over any kernel
 * interface (a veth end, a bridge, a NIC) through raw packet sockets.
 *
 *   new AfPacketPort(name, pool, { iface, queues?, netns?, promisc?, up?, fanoutMode?, qdiscBypass? })
 *
 * One non-blocking AF_PACKET/SOCK_RAW socket per queue, bound to the
 * interface for every protocol (ETH_P_ALL), promiscuous by default
 * (PACKET_ADD_MEMBERSHIP/PACKET_MR_PROMISC, dropped by the kernel when the
 * socket closes). With queues > 1 the sockets form one PACKET_FANOUT group
 * (the kernel picks a unique id; PACKET_FANOUT_HASH by default) so each
 * received frame goes to exactly one queue. Frames this host sends on the
 * interface, our own transmissions included, are not received
 * (PACKET_IGNORE_OUTGOING; on kernels before 4.20 they are filtered by
 * sll_pkttype == PACKET_OUTGOING instead).
 *
 * Namespaces: with `netns` the sockets are made inside that namespace
 * (withNetns in src/sys/netdev.ts) and keep working from ours. Otherwise
 * the interface is looked up in the caller's namespace (run the process with
 * `ip netns exec NAME node ...` to reach devices elsewhere).
 *
 * Data path: one recvmmsg() per rx burst straight into pool buffers, one
 * sendmmsg() per tx burst (chained packets as several iovecs). The kernel
 * copies on send, so sent buffers are freed at once. No allocation, no
 * exceptions.
 *
 * Known limits of plain AF_PACKET: the kernel strips a VLAN tag on receive
 * when the device offloads it (veth does) and it is not re-inserted here;
 * frames the local stack sends with checksum offload (CHECKSUM_PARTIAL, e.g.
 * TCP/UDP over a veth) arrive with an unfinished checksum: switch tx
 * checksumming off on the sending veth (`ethtool -K DEV tx off`) when
 * forwarding such traffic elsewhere. ICMP and ARP are unaffected.
 *
 * Drops (stats.drops): 'rx-too-big' (frame larger than a pool buffer),
 * 'rx-kernel-queue-full' (socket buffer overflow, from PACKET_STATISTICS:
 * see pollKernelStats), 'rx-E...' (other errors, e.g. rx-ENETDOWN);
 * tx: 'tx-busy' (EAGAIN/ENOBUFS: returned to the caller, not taken),
 * 'tx-E...' (frame refused, e.g. tx-EMSGSIZE, tx-ENETDOWN: taken and freed),
 * 'tx-bad-handle', 'tx-bad-chain', 'tx-bad-len', 'tx-too-many-segs',
 * 'tx-closed', 'tx-bad-queue'.
 */
import type { Mempool } from '../mem/mempool.js';
import { closeQuiet, EAGAIN, EINTR } from '../sys/libc.js';
import {
  getHwAddr,
  getMtu,
  ifNameToIndex,
  MmsgVec,
  MSG_TRUNC,
  openCtlSocket,
  openPacketSocket,
  PACKET_FANOUT_HASH,
  PACKET_OUTGOING,
  packetStatistics,
  recvmmsgBurst,
  sendmmsgBurst,
  setLinkUp,
  withNetns,
} from '../sys/netdev.js';
import { KernelPort, MAX_RX_BURST, MAX_TX_SEGS } from './kernel-port.js';

const ENOBUFS = 105;
const TX_VEC = 64;

export interface AfPacketPortOptions {
  /** Interface to bind (it must exist). */
  iface: string;
  /** Sockets (queue pairs), joined in one fanout group when > 1 (default 1). */
  queues?: number;
  /** Open inside this network namespace (a name under /run/netns or an absolute path). */
  netns?: string;
  /** Promiscuous mode (default true). */
  promisc?: boolean;
  /** Bring the interface up (default true). */
  up?: boolean;
  /** PACKET_FANOUT mode for queues > 1 (default PACKET_FANOUT_HASH). */
  fanoutMode?: number;
  /** PACKET_QDISC_BYPASS on tx (default false). */
  qdiscBypass?: boolean;
  /** SO_RCVBUF in bytes (default: the kernel's). */
  rcvbuf?: number;
}

export class AfPacketPort extends KernelPort {
  readonly type = 'afpacket';
  readonly ifindex: number;
  /** Device MTU when opened. */
  readonly mtu: number;
  /** The interface's MAC address (6 bytes) when opened. */
  readonly mac: Uint8Array;
  /** PACKET_FANOUT group id (-1 with one queue). */
  readonly fanoutId: number;
  /** Whether the kernel drops our outgoing frames for us (PACKET_IGNORE_OUTGOING). */
  readonly ignoreOutgoing: boolean;
  private readonly rxVec: MmsgVec[];
  private readonly txVec: MmsgVec;

  /**
   * Throws SysError naming the call, errno and interface (e.g.
   * if_nametoindex ENODEV for a missing interface, EPERM without
   * CAP_NET_RAW); nothing stays open on failure.
   */
  constructor(name: string, pool: Mempool, opts: AfPacketPortOptions) {
    const queues = opts.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new RangeError(`afpacket ${opts.iface}: queues ${queues} must be in 1..64`);
    const make = () => {
      const fds: number[] = [];
      let ctl = -1;
      try {
        ifNameToIndex(opts.iface); // ENODEV naming the interface before anything else
        ctl = openCtlSocket();
        if (opts.up ?? true) setLinkUp(opts.iface, true, ctl);
        let fanoutId = -1;
        let ifindex = 0;
        let ignoreOutgoing = true;
        for (let q = 0; q < queues; q++) {
          const s = openPacketSocket(opts.iface, {
            promisc: opts.promisc ?? true,
            qdiscBypass: opts.qdiscBypass,
            rcvbuf: opts.rcvbuf,
            fanout: queues > 1 ? { id: q === 0 ? undefined : fanoutId, mode: opts.fanoutMode ?? PACKET_FANOUT_HASH } : undefined,
          });
          fds.push(s.fd);
          fanoutId = s.fanoutId;
          ifindex = s.ifindex;
          ignoreOutgoing &&= s.ignoreOutgoing;
        }
        return { fds, ctl, fanoutId, ifindex, ignoreOutgoing, mtu: getMtu(opts.iface, ctl), mac: getHwAddr(opts.iface, ctl) };
      } catch (e) {
        for (const fd of fds) closeQuiet(fd);
        closeQuiet(ctl);
        throw e;
      }
    };
    const r = opts.netns !== undefined ? withNetns(opts.netns, make) : make();
    super(name, pool, opts.iface, opts.netns, r.fds, r.ctl);
    this.ifindex = r.ifindex;
    this.mtu = r.mtu;
    this.mac = r.mac;
    this.fanoutId = r.fanoutId;
    this.ignoreOutgoing = r.ignoreOutgoing;
    this.rxVec = r.fds.map(() => {
      const v = new MmsgVec(MAX_RX_BURST, 1);
      v.useNames(!r.ignoreOutgoing);
      return v;
    });
    this.txVec = new MmsgVec(TX_VEC, MAX_TX_SEGS);
    this.txVec.useNames(false);
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    if (this.closed || q < 0 || q >= this.nQueues) return 0;
    if (max > out.length) max = out.length;
    if (max > MAX_RX_BURST) max = MAX_RX_BURST;
    if (max <= 0) return 0;
    const st = this.refill(q, max);
    let top = this.stashLen[q];
    const k = top < max ? top : max;
    if (k === 0) return 0;
    const pool = this.pool;
    const base = this.base;
    const stride = pool.stride;
    const room = this.room;
    const vec = this.rxVec[q];
    const filter = !this.ignoreOutgoing;
    // entry i receives into the stash's i-th handle from the top
    for (let i = 0; i < k; i++) {
      const h = st[top - 1 - i];
      vec.setIov(i, base + h * stride + pool.dataOff[h], room);
      if (filter) vec.resetName(i);
    }
    let r = recvmmsgBurst(this.fds[q], vec, k);
    if (r < 0 && r === -EINTR) r = recvmmsgBurst(this.fds[q], vec, k);
    if (r <= 0) {
      if (r < 0 && r !== -EAGAIN && r !== -EINTR) this.rxDrop(this.rxErrReason(-r));
      return 0;
    }
    let n = 0;
    let bytes = 0;
    for (let i = 0; i < r; i++) {
      const h = st[top - 1 - i];
      const len = vec.msgLen(i);
      if (len > room || (vec.msgFlags(i) & MSG_TRUNC) !== 0) {
        this.rxDrop('rx-too-big');
        pool.freeOne(h);
        continue;
      }
      if (filter && vec.pktType(i) === PACKET_OUTGOING) {
        pool.freeOne(h);
        continue;
      }
      pool.dataLen[h] = len;
      pool.pktLen[h] = len;
      out[n++] = h;
      bytes += len;
    }
    top -= r;
    this.stashLen[q] = top;
    this.stats.rxPackets += n;
    this.stats.rxBytes += bytes;
    return n;
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    if (n > handles.length) n = handles.length;
    if (n <= 0) return 0;
    if (this.closed || q < 0 || q >= this.nQueues) {
      this.txDrop(this.closed ? 'tx-closed' : 'tx-bad-queue', n);
      return 0;
    }
    const fd = this.fds[q];
    const pool = this.pool;
    const base = this.base;
    const stride = pool.stride;
    const vec = this.txVec;
    let taken = 0; // handles[0..taken) are done (sent, or dropped and freed)
    let sentPkts = 0;
    let sentBytes = 0;
    while (taken < n) {
      // Queue up to TX_VEC valid packets from handles[taken..); stop before an invalid one.
      let m = 0;
      while (taken + m < n && m < TX_VEC) {
        const h = handles[taken + m];
        const segs = this.txSegments(h);
        if (segs === 0) break;
        let seg = h;
        for (let s = 0; s < segs; s++) {
          vec.setIov(m, base + seg * stride + pool.dataOff[seg], pool.dataLen[seg], s);
          seg = pool.next[seg];
        }
        vec.setIovCount(m, segs);
        m++;
      }
      if (m === 0) {
        // handles[taken] is invalid: take and drop it
        this.txTakeBad(handles[taken]);
        taken++;
        continue;
      }
      let r = sendmmsgBurst(fd, vec, 0, m);
      if (r === -EINTR) r = sendmmsgBurst(fd, vec, 0, m);
      if (r > 0) {
        // r < m: the next frame hit an error, seen again (as r < 0) on the next round
        for (let i = 0; i < r; i++) {
          sentBytes += vec.msgLen(i);
          pool.freeOne(handles[taken + i]);
        }
        sentPkts += r;
        taken += r;
        continue;
      }
      if (r === 0 || r === -EAGAIN || r === -ENOBUFS || r === -EINTR) break;
      // the first frame was refused for good: drop it and go on
      this.txDrop(this.txErrReason(-r));
      pool.freeOne(handles[taken]);
      taken++;
    }
    if (taken < n) this.txDrop('tx-busy', n - taken);
    this.stats.txPackets += sentPkts;
    this.stats.txBytes += sentBytes;
    return taken;
  }

  /**
   * Fold the kernel's per-socket rx counters (PACKET_STATISTICS, reset on
   * read) into stats: frames lost because a socket buffer was full count as
   * 'rx-kernel-queue-full'. Control path; close() calls it too.
   */
  pollKernelStats(): void {
    if (this.closed) return;
    for (const fd of this.fds) {
      try {
        const s = packetStatistics(fd);
        if (s.drops > 0) this.rxDrop('rx-kernel-queue-full', s.drops);
      } catch {
        /* socket gone: nothing to fold */
      }
    }
  }

  override close(): void {
    if (this.closed) return;
    this.pollKernelStats();
    super.close();
  }

  protected override releaseExtra(): void {
    for (const v of this.rxVec) v.free();
    this.txVec.free();
  }
}
