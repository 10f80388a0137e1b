/**
 * The AF_PACKET PMD (DPDK net_af_packet, reduced): a Port over any kernel
 * interface (a veth end, a bridge, a NIC) through raw packet sockets.
 *
 *   new AfPacketPort(name, pool, { iface, queues?, mtu?, netns?, promisc?, up?, fanoutMode?, qdiscBypass?, rcvbuf?, fixOffloads? })
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
 * (withNetns in src/sys/netns.ts) and keep working from ours. Otherwise
 * the interface is looked up in the caller's namespace (run the process with
 * `ip netns exec NAME node ...` to reach devices elsewhere).
 *
 * Data path, rx (default): one memory-mapped TPACKET_V2 ring per queue
 * (PACKET_RX_RING, ~2048 frames, each big enough for a whole pool buffer,
 * at most 16 MiB). The kernel writes each frame with a tpacket2_hdr and
 * flips tp_status to TP_STATUS_USER; rxBurst walks frames from its cursor,
 * copies each into a pool buffer and hands the frame back
 * (TP_STATUS_KERNEL). No system call per burst, none when idle (a busy poll
 * reads one status word). The VLAN tag and checksum state come from the
 * frame header instead of PACKET_AUXDATA. If the kernel refuses the ring
 * (or rxRing: false, or TSVS_AFPACKET_RXRING=0) the port uses one recvmmsg()
 * per burst straight into pool buffers, and `status` says why.
 * Data path, tx (default): one sendmmsg() per tx burst (chained packets as
 * several iovecs). The kernel copies on send, so sent buffers are freed at
 * once. With txRing: true (or TSVS_AFPACKET_TXRING=1) packets are copied
 * into a TPACKET_V2 tx ring instead and one sendto() per burst sends them;
 * at 64 B over veth that measured ~7 % slower than sendmmsg (the per-frame
 * skb and veth work is the same, and the kernel's ring walk costs more than
 * the msghdr copies it saves), so it is off by default. No allocation
 * (except a subarray object per frame longer than 256 bytes copied to or
 * from a ring), no exceptions.
 *
 * Receive offloads (fixOffloads, default on, via PACKET_AUXDATA): a VLAN tag
 * the device stripped (veth does) is put back into the frame (using 4 bytes
 * of headroom), and a TCP/UDP/ICMPv6 checksum the local sender left to
 * offload (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY: e.g. UDP from a
 * namespace over a veth) is computed here, so forwarded frames are valid on
 * the wire. Not undone: GSO/GRO super-frames (a TCP sender over a veth with
 * TSO/GSO on hands over up to 64 KiB at once; they count as 'rx-too-big':
 * switch them off on the sending device, `ethtool -K DEV tso off gso off`).
 *
 * Frame size: a frame may be as long as a pool buffer's room (bufSize -
 * headroom), so jumbo frames need a pool with big buffers (the switch sizes
 * them from --max-mtu). `mtu` sets the device's MTU (it must fit the
 * buffers: mtu + 22 <= room, see FRAME_OVERHEAD in src/dp/port-factory.ts);
 * without it the device keeps its MTU, and received frames longer than the
 * room are dropped as 'rx-too-big' (recvmmsg reports the full length with
 * MSG_TRUNC, a ring frame its tp_len beyond tp_snaplen, so nothing truncated
 * is ever forwarded).
 *
 * Drops (stats.drops): 'rx-too-big' (frame larger than a pool buffer),
 * 'rx-runt' (ring frame shorter than an Ethernet header),
 * 'rx-no-headroom' (no room to re-insert a VLAN tag),
 * 'rx-kernel-queue-full' (rx ring or socket buffer full, from PACKET_STATISTICS:
 * see pollKernelStats), 'rx-E...' (other errors, e.g. rx-ENETDOWN);
 * tx: 'tx-busy' (EAGAIN/ENOBUFS: returned to the caller, not taken),
 * 'tx-E...' (frame refused, e.g. tx-EMSGSIZE, tx-ENETDOWN: taken and freed),
 * 'tx-bad-handle', 'tx-bad-chain', 'tx-bad-len', 'tx-too-many-segs',
 * 'tx-closed', 'tx-bad-queue'.
 *
 * Where it runs: in the PMD worker that polls the port (the daemon) or the thread that opened it.
 */
import type { Mempool } from '../mem/mempool.js';
import { closeQuiet, EAGAIN, EINTR, SysError } from '../sys/libc.js';
import { MSG_TRUNC, TP_STATUS_AVAILABLE, TP_STATUS_SEND_REQUEST, TP_STATUS_WRONG_FORMAT, TP_STATUS_KERNEL, TP_STATUS_USER, PACKET_FANOUT_HASH, PACKET_OUTGOING, TP_STATUS_CSUMNOTREADY, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID } from '../sys/netdev-native.js';
import { getHwAddr, getMtu, ifNameToIndex, openCtlSocket, setLinkUp, setMtu } from '../sys/if-ioctl.js';
import { openPacketSocket, packetStatistics } from '../sys/packet-socket.js';
import { mapPacketRings, packetRingLayout, releasePacketRings, type PacketRingLayout, type PacketRings, packetRingKick, TP2_TX_DATA, type PacketRingView, TP2_LEN, TP2_MAC, TP2_PKTTYPE, TP2_RX_MAC_MAX, TP2_SNAPLEN, TP2_VLAN_TCI, TP2_VLAN_TPID, unmapPacketRings } from '../sys/packet-ring.js';
import { withNetns } from '../sys/netns.js';
import { MmsgVec, recvmmsgBurst, sendmmsgBurst } from '../sys/packet-io.js';
import { KernelPort, L2_OVERHEAD, MAX_RX_BURST, MAX_TX_SEGS } from './kernel-port.js';
import { finishL4Checksum } from '../util/net.js';
import { PKT_F_CSUM_PARTIAL } from './port.js';
import { Drop, type DropReason } from './port.js';

const ENOBUFS = 105;
const EINVAL = 22;
/** cmsghdr (16) + tpacket_auxdata (20), rounded up. */
const AUX_CTRL = 48;


/** The L4 checksum a NIC finishes for CHECKSUM_PARTIAL frames (kept here for importers of this module). */
export { finishL4Checksum } from '../util/net.js';

const TX_VEC = 64;

/**
 * Copy len bytes from s8[a..] to d8[b..] (s32/d32: the same memory as 32-bit
 * words, or null): word by word when both ends are 4-aligned and the frame is
 * small, else one TypedArray.set (a subarray object per long frame: cheaper
 * than a native call).
 */
function copyBytes(s8: Uint8Array, s32: Int32Array | null, a: number, d8: Uint8Array, d32: Int32Array | null, b: number, len: number): void {
  if (len <= SMALL_COPY && ((a | b) & 3) === 0 && s32 !== null && d32 !== null) {
    let i = a >> 2;
    let j = b >> 2;
    const e = i + (len >> 2);
    while (i < e) d32[j++] = s32[i++];
    for (let k = len & ~3; k < len; k++) d8[b + k] = s8[a + k];
    return;
  }
  d8.set(s8.subarray(a, a + len), b);
}

export interface AfPacketPortOptions {
  /** Interface to bind (it must exist). */
  iface: string;
  /** Sockets (queue pairs), joined in one fanout group when > 1 (default 1). */
  queues?: number;
  /** Set this MTU on the device first (it must fit a pool buffer: mtu + 22 <= bufSize - headroom). Default: leave it. */
  mtu?: number;
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
  /**
   * Undo receive offloads with PACKET_AUXDATA (default true): put back the
   * VLAN tag the device stripped, and finish TCP/UDP/ICMPv6 checksums the
   * sending host left to offload (TP_STATUS_CSUMNOTREADY).
   */
  fixOffloads?: boolean;
  /**
   * Receive through a memory-mapped TPACKET_V2 ring per queue (PACKET_RX_RING;
   * default true): no system call per burst. When the kernel refuses the ring
   * the port falls back to recvmmsg() and says why in `status`. Without this
   * option, TSVS_AFPACKET_RXRING=0 in the environment turns rings off (for A/B measurements).
   */
  rxRing?: boolean;
  /**
   * Send through a memory-mapped TPACKET_V2 ring per queue (PACKET_TX_RING,
   * one sendto() per burst). Default false (sendmmsg; TSVS_AFPACKET_TXRING=1
   * in the environment turns it on).
   */
  txRing?: boolean;
  /** Frames per rx ring (default 2048; the ring is capped at 16 MiB per queue). */
  ringFrames?: number;
}

/** Ethernet header + one VLAN tag: the most a frame may exceed the MTU by on send. */
const TX_L2_MAX = 18;
/** Frames per tx ring (at most 4 MiB). */
const TX_RING_FRAMES = 512;

/** PACKET_RESERVE for rx rings: puts tp_mac at a multiple of 8 (66 + 6 = 72), so frames copy out in 32-bit words. */
const RX_RESERVE = 6;
/** Frames up to this length copy word by word in JS; longer ones with one TypedArray.set (faster from ~256 B). */
const SMALL_COPY = 256;

export class AfPacketPortError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'AfPacketPortError';
  }
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
  /** VLAN tags re-inserted and checksums finished on rx (PACKET_AUXDATA). */
  readonly fixOffloads: boolean;
  /** Frames whose VLAN tag was put back / whose L4 checksum was finished here. */
  readonly offloads = { vlanInserted: 0, csumFinished: 0 };
  /** How frames are received: 'ring' (PACKET_RX_RING, TPACKET_V2) or 'recvmmsg'. */
  readonly rxMode: 'ring' | 'recvmmsg';
  /** How frames are sent: 'ring' (PACKET_TX_RING, TPACKET_V2) or 'sendmmsg'. */
  readonly txMode: 'ring' | 'sendmmsg';
  /** Why a ring that was asked for is not used, or ''. */
  readonly ringProblem: string;
  private readonly rxVec: MmsgVec[];
  private readonly txVec: MmsgVec;
  /** Per queue: mapped rings (null: recvmmsg), ring views, next frame to look at. */
  private rings: (PacketRings | null)[];
  private rxRings: (PacketRingView | null)[];
  private txRings: (PacketRingView | null)[];
  /** Per queue, tx ring: byte offset of the next free frame we fill, of the oldest frame not yet taken by the kernel, and how many are not. */
  private readonly txOff: Int32Array;
  private readonly txHead: Int32Array;
  private readonly txPending: Int32Array;
  /** Per queue: byte offset in its ring of the next frame to look at. */
  private readonly rxOff: Int32Array;
  /** pool.data as 32-bit words (null when its buffer is not 4-aligned). */
  private readonly data32: Int32Array | null;

  /**
   * Throws SysError naming the call, errno and interface (e.g.
   * if_nametoindex ENODEV for a missing interface, EPERM without
   * CAP_NET_RAW); nothing stays open on failure.
   */
  constructor(name: string, pool: Mempool, opts: AfPacketPortOptions) {
    const queues = opts.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new RangeError(`afpacket ${opts.iface}: queues ${queues} must be in 1..64`);
    const room = pool.bufSize - pool.headroom;
    if (opts.mtu !== undefined && opts.mtu + L2_OVERHEAD > room) {
      throw new AfPacketPortError(`afpacket ${opts.iface}: mtu ${opts.mtu} + ${L2_OVERHEAD} exceeds the pool's ${room}-byte buffers`);
    }
    const make = () => {
      const fds: number[] = [];
      const rings: PacketRings[] = [];
      let ctl = -1;
      try {
        ifNameToIndex(opts.iface); // ENODEV naming the interface before anything else
        ctl = openCtlSocket();
        if (opts.mtu !== undefined) setMtu(opts.iface, opts.mtu, ctl);
        if (opts.up ?? true) setLinkUp(opts.iface, true, ctl);
        let fanoutId = -1;
        let ifindex = 0;
        let ignoreOutgoing = true;
        for (let q = 0; q < queues; q++) {
          const s = openPacketSocket(opts.iface, {
            promisc: opts.promisc ?? true,
            qdiscBypass: opts.qdiscBypass,
            rcvbuf: opts.rcvbuf,
            auxdata: opts.fixOffloads ?? true,
            fanout: queues > 1 ? { id: q === 0 ? undefined : fanoutId, mode: opts.fanoutMode ?? PACKET_FANOUT_HASH } : undefined,
          });
          fds.push(s.fd);
          fanoutId = s.fanoutId;
          ifindex = s.ifindex;
          ignoreOutgoing &&= s.ignoreOutgoing;
        }
        const mtu = getMtu(opts.iface, ctl);
        let ringProblem = '';
        const wantRx = opts.rxRing ?? process.env.TSVS_AFPACKET_RXRING !== '0';
        const wantTx = opts.txRing ?? process.env.TSVS_AFPACKET_TXRING === '1';
        const rxL = wantRx ? packetRingLayout(room, TP2_RX_MAC_MAX + RX_RESERVE, opts.ringFrames ?? 2048) : null;
        const txL = wantTx ? packetRingLayout(Math.max(mtu + TX_L2_MAX, 64), TP2_TX_DATA, TX_RING_FRAMES, 4 << 20) : null;
        // both rings, else rx only, else tx only, else none (recvmmsg/sendmmsg)
        const tries: [PacketRingLayout | null, PacketRingLayout | null][] = [];
        if (rxL !== null || txL !== null) tries.push([rxL, txL]);
        if (rxL !== null && txL !== null) tries.push([rxL, null], [null, txL]);
        for (const [rl, tl] of tries) {
          try {
            for (const fd of fds) rings.push(mapPacketRings(fd, rl, tl, rl !== null ? RX_RESERVE : 0));
            break;
          } catch (e) {
            for (let i = 0; i < rings.length; i++) releasePacketRings(fds[i], rings[i]);
            rings.length = 0;
            if (!(e instanceof SysError)) throw e;
            ringProblem ||= `${rl !== null ? 'rx' : ''}${rl !== null && tl !== null ? '+' : ''}${tl !== null ? 'tx' : ''} ring refused (${e.message})`;
          }
        }
        return { fds, ctl, fanoutId, ifindex, ignoreOutgoing, rings, ringProblem, mtu, mac: getHwAddr(opts.iface, ctl) };
      } catch (e) {
        for (const r of rings) unmapPacketRings(r);
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
    this.fixOffloads = opts.fixOffloads ?? true;
    this.rxVec = r.fds.map(() => {
      const v = new MmsgVec(MAX_RX_BURST, 1, this.fixOffloads ? AUX_CTRL : 0);
      v.useNames(!r.ignoreOutgoing);
      return v;
    });
    this.txVec = new MmsgVec(TX_VEC, MAX_TX_SEGS);
    this.txVec.useNames(false);
    this.rings = r.rings.length === r.fds.length ? r.rings : r.fds.map(() => null);
    this.rxRings = this.rings.map((x) => (x === null ? null : x.rx));
    this.txRings = this.rings.map((x) => (x === null ? null : x.tx));
    this.rxMode = this.rxRings[0] !== null ? 'ring' : 'recvmmsg';
    this.txMode = this.txRings[0] !== null ? 'ring' : 'sendmmsg';
    this.ringProblem = r.ringProblem;
    this.rxOff = new Int32Array(r.fds.length);
    this.txOff = new Int32Array(r.fds.length);
    this.txHead = new Int32Array(r.fds.length);
    this.txPending = new Int32Array(r.fds.length);
    const d = pool.data;
    this.data32 = (d.byteOffset & 3) === 0 ? new Int32Array(d.buffer, d.byteOffset, d.byteLength >> 2) : null;
  }

  /** How the port receives and sends (and why not through rings, if they were refused). */
  get status(): string {
    if (this.closed) return 'closed';
    const rl = this.rxRings[0]?.layout;
    const tl = this.txRings[0]?.layout;
    const rx = rl ? `rx: TPACKET_V2 ring, ${rl.frameNr} frames of ${rl.frameSize} B per queue` : 'rx: recvmmsg';
    const tx = tl ? `tx: TPACKET_V2 ring, ${tl.frameNr} frames of ${tl.frameSize} B per queue` : 'tx: sendmmsg';
    return `${rx}; ${tx}${this.ringProblem ? `; ${this.ringProblem}` : ''}`;
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    max = this.rxLimit(q, out, max);
    if (max === 0) return 0;
    const ring = this.rxRings[q];
    if (ring !== null) return this.rxRing(q, ring, out, max);
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
    const aux = this.fixOffloads;
    // entry i receives into the stash's i-th handle from the top
    for (let i = 0; i < k; i++) {
      const h = st[top - 1 - i];
      vec.setIov(i, base + h * stride + pool.dataOff[h], room);
      if (filter) vec.resetName(i);
      if (aux) vec.resetControl(i);
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
        this.rxDrop(Drop.RX_TOO_BIG);
        pool.freeOne(h);
        continue;
      }
      if (filter && vec.pktType(i) === PACKET_OUTGOING) {
        pool.freeOne(h);
        continue;
      }
      let flen = len;
      if (aux) {
        const status = vec.auxStatus(i);
        if (status > 0) {
          if ((status & TP_STATUS_VLAN_VALID) !== 0) {
            const off = pool.dataOff[h];
            if (off < 4) {
              this.rxDrop(Drop.RX_NO_HEADROOM);
              pool.freeOne(h);
              continue;
            }
            // move the MAC addresses 4 bytes up and put the tag between them and the ethertype
            const a = pool.bufBase + h * stride + off;
            const d = pool.data;
            d.copyWithin(a - 4, a, a + 12);
            const tpid = (status & TP_STATUS_VLAN_TPID_VALID) !== 0 ? vec.auxVlanTpid(i) : 0x8100;
            const tci = vec.auxVlanTci(i);
            d[a + 8] = tpid >> 8;
            d[a + 9] = tpid & 0xff;
            d[a + 10] = tci >> 8;
            d[a + 11] = tci & 0xff;
            pool.dataOff[h] = off - 4;
            flen += 4;
            this.offloads.vlanInserted++;
          }
          if ((status & TP_STATUS_CSUMNOTREADY) !== 0) {
            if (finishL4Checksum(pool.data, pool.dataOffset(h), flen)) this.offloads.csumFinished++;
            pool.flags[h] |= PKT_F_CSUM_PARTIAL;
          }
        }
      }
      pool.dataLen[h] = flen;
      pool.pktLen[h] = flen;
      out[n++] = h;
      bytes += flen;
    }
    top -= r;
    return this.rxDone(q, top, n, bytes);
  }

  /**
   * rxBurst through queue q's ring: copy out frames the kernel handed over
   * (tp_status & TP_STATUS_USER) from our cursor on, give each frame back
   * (TP_STATUS_KERNEL) once read. No system call.
   */
  private rxRing(q: number, ring: PacketRingView, out: Int32Array, max: number): number {
    const u32 = ring.u32;
    let fo = this.rxOff[q];
    if ((Atomics.load(u32, fo >> 2) & TP_STATUS_USER) === 0) return 0; // empty: the common idle case
    const st = this.refill(q, max);
    let top = this.stashLen[q];
    const pool = this.pool;
    const stride = pool.stride;
    const room = this.room;
    const src = ring.u8;
    const u16 = ring.u16;
    const d = pool.data;
    const filter = !this.ignoreOutgoing;
    const aux = this.fixOffloads;
    const frameSize = ring.frameSize;
    const frameSize2 = 2 * frameSize;
    const blockSize = ring.layout.blockSize;
    const blockMask = blockSize - 1;
    const ringBytes = blockSize * ring.layout.blockNr;
    let n = 0;
    let bytes = 0;
    while (n < max) {
      const status = Atomics.load(u32, fo >> 2);
      if ((status & TP_STATUS_USER) === 0) break;
      const len = u32[(fo + TP2_LEN) >> 2];
      const snap = u32[(fo + TP2_SNAPLEN) >> 2];
      const mac = u16[(fo + TP2_MAC) >> 1];
      if (len > room || snap < len || mac + len > frameSize) {
        this.rxDrop(Drop.RX_TOO_BIG);
      } else if (len < 14) {
        this.rxDrop(Drop.RX_RUNT); // not an Ethernet frame (the kernel never hands these over)
      } else if (filter && src[fo + TP2_PKTTYPE] === PACKET_OUTGOING) {
        // our own (or this host's) transmission: not for us
      } else {
        if (top === 0) break; // no buffer: leave the frame to the kernel's accounting (ring fills, drops)
        const h = st[--top];
        let off = pool.dataOff[h];
        const a = fo + mac;
        let flen = len;
        if (aux && (status & TP_STATUS_VLAN_VALID) !== 0) {
          if (off < 4) {
            this.rxDrop(Drop.RX_NO_HEADROOM);
            top++;
            Atomics.store(u32, fo >> 2, TP_STATUS_KERNEL);
            fo = (fo & blockMask) + frameSize2 <= blockSize ? fo + frameSize : (fo | blockMask) + 1 === ringBytes ? 0 : (fo | blockMask) + 1;
            continue;
          }
          off -= 4;
          const b = pool.bufBase + h * stride + off;
          this.copyOut(ring, a, b, 12);
          const tpid = (status & TP_STATUS_VLAN_TPID_VALID) !== 0 ? u16[(fo + TP2_VLAN_TPID) >> 1] : 0x8100;
          const tci = u16[(fo + TP2_VLAN_TCI) >> 1];
          d[b + 12] = tpid >> 8;
          d[b + 13] = tpid & 0xff;
          d[b + 14] = tci >> 8;
          d[b + 15] = tci & 0xff;
          this.copyOut(ring, a + 12, b + 16, len - 12);
          pool.dataOff[h] = off;
          flen += 4;
          this.offloads.vlanInserted++;
        } else {
          this.copyOut(ring, a, pool.bufBase + h * stride + off, len);
        }
        if (aux && (status & TP_STATUS_CSUMNOTREADY) !== 0) {
          if (finishL4Checksum(d, pool.bufBase + h * stride + off, flen)) this.offloads.csumFinished++;
          pool.flags[h] |= PKT_F_CSUM_PARTIAL;
        }
        pool.dataLen[h] = flen;
        pool.pktLen[h] = flen;
        out[n++] = h;
        bytes += flen;
      }
      Atomics.store(u32, fo >> 2, TP_STATUS_KERNEL);
      // next frame: in this block if a whole one fits after this, else the next block's first (blocks are powers of two)
      fo = (fo & blockMask) + frameSize2 <= blockSize ? fo + frameSize : (fo | blockMask) + 1 === ringBytes ? 0 : (fo | blockMask) + 1;
    }
    this.rxOff[q] = fo;
    return this.rxDone(q, top, n, bytes);
  }

  /** Copy len bytes from ring byte a to pool.data byte b. */
  private copyOut(ring: PacketRingView, a: number, b: number, len: number): void {
    copyBytes(ring.u8, ring.i32, a, this.pool.data, this.data32, b, len);
  }

  /**
   * txBurst through queue q's tx ring: copy each packet into the next free
   * frame (TP_STATUS_AVAILABLE), mark it TP_STATUS_SEND_REQUEST, then one
   * sendto(MSG_DONTWAIT) has the kernel take every requested frame. Frames
   * the kernel has not taken yet (EAGAIN) stay requested and go with the next
   * burst. Frames the kernel would refuse are dropped here first
   * ('tx-EMSGSIZE' beyond MTU + 14, or + 18 with an 802.1Q tag; 'tx-EINVAL'
   * under 14 bytes); on any other refusal (ENETDOWN ..., seen twice: a
   * socket error pending since a link flap is reported once) every frame not
   * yet taken is dropped with that reason.
   */
  private txRing(q: number, ring: PacketRingView, handles: Int32Array, n: number): number {
    const pool = this.pool;
    const stride = pool.stride;
    const u32 = ring.u32;
    const d = pool.data;
    const frameSize = ring.frameSize;
    const frameSize2 = 2 * frameSize;
    const blockSize = ring.layout.blockSize;
    const blockMask = blockSize - 1;
    const ringBytes = blockSize * ring.layout.blockNr;
    const mtu = this.mtu;
    const cap = frameSize - TP2_TX_DATA;
    let fo = this.txOff[q];
    let taken = 0;
    let queued = 0;
    while (taken < n) {
      const h = handles[taken];
      const segs = this.txSegments(h);
      if (segs === 0) {
        this.txTakeBad(h);
        taken++;
        continue;
      }
      let len = 0;
      for (let s = 0, seg = h; s < segs; s++, seg = pool.next[seg]) len += pool.dataLen[seg];
      if (len > mtu + 14 || len > cap || len < 14) {
        let ok = false;
        if (len >= 14 && len <= mtu + TX_L2_MAX && len <= cap && pool.dataLen[h] >= 14) {
          const a = pool.bufBase + h * stride + pool.dataOff[h];
          const et = (d[a + 12] << 8) | d[a + 13];
          ok = et === 0x8100; // the kernel allows the extra 4 bytes for 802.1Q only
        }
        if (!ok) {
          this.txDrop(len < 14 ? 'tx-EINVAL' : 'tx-EMSGSIZE');
          pool.freeOne(h);
          taken++;
          continue;
        }
      }
      if (Atomics.load(u32, fo >> 2) !== TP_STATUS_AVAILABLE) break; // ring full
      let b = fo + TP2_TX_DATA;
      for (let s = 0, seg = h; s < segs; s++, seg = pool.next[seg]) {
        const l = pool.dataLen[seg];
        copyBytes(d, this.data32, pool.bufBase + seg * stride + pool.dataOff[seg], ring.u8, ring.i32, b, l);
        b += l;
      }
      u32[(fo + TP2_LEN) >> 2] = len;
      Atomics.store(u32, fo >> 2, TP_STATUS_SEND_REQUEST);
      pool.freeOne(h);
      taken++;
      queued++;
      fo = (fo & blockMask) + frameSize2 <= blockSize ? fo + frameSize : (fo | blockMask) + 1 === ringBytes ? 0 : (fo | blockMask) + 1;
    }
    this.txOff[q] = fo;
    let pending = this.txPending[q] + queued;
    let sentPkts = 0;
    let sentBytes = 0;
    if (pending > 0) {
      const fd = this.fds[q];
      let r = packetRingKick(fd);
      if (r === -EINTR) r = packetRingKick(fd);
      const first = r < 0 && r !== -EAGAIN && r !== -ENOBUFS && r !== -EINTR ? -r : 0;
      let err = first;
      if (first !== 0) {
        // once more: a socket error left by a link flap (ENETDOWN) is reported once, the frames stay requested
        r = packetRingKick(fd);
        err = r < 0 && r !== -EAGAIN && r !== -ENOBUFS && r !== -EINTR ? -r : 0;
      }
      // count what the kernel took: the run from the head that is no longer requested
      let head = this.txHead[q];
      while (pending > 0) {
        const st = Atomics.load(u32, head >> 2);
        if (st === TP_STATUS_SEND_REQUEST || st === TP_STATUS_WRONG_FORMAT) break;
        sentPkts++;
        sentBytes += u32[(head + TP2_LEN) >> 2];
        pending--;
        head = (head & blockMask) + frameSize2 <= blockSize ? head + frameSize : (head | blockMask) + 1 === ringBytes ? 0 : (head | blockMask) + 1;
      }
      if (pending > 0 && (err !== 0 || Atomics.load(u32, head >> 2) === TP_STATUS_WRONG_FORMAT)) {
        // refused for good (the kernel stops at a frame it marks WRONG_FORMAT): drop the frames not taken and rewind
        this.txDrop(this.txErrReason(err || first || EINVAL), pending);
        let f = head;
        for (let i = 0; i < pending; i++) {
          Atomics.store(u32, f >> 2, TP_STATUS_AVAILABLE);
          f = (f & blockMask) + frameSize2 <= blockSize ? f + frameSize : (f | blockMask) + 1 === ringBytes ? 0 : (f | blockMask) + 1;
        }
        pending = 0;
        this.txOff[q] = head;
      }
      this.txHead[q] = head;
      this.txPending[q] = pending;
    }
    return this.txDone(taken, n, sentPkts, sentBytes);
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    n = this.txLimit(q, handles, n);
    if (n === 0) return 0;
    const ring = this.txRings[q];
    if (ring !== null) return this.txRing(q, ring, handles, n);
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
    return this.txDone(taken, n, sentPkts, sentBytes);
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
        if (s.drops > 0) this.rxDrop(Drop.RX_KERNEL_QUEUE_FULL, s.drops);
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
    const rings = this.rings;
    this.rxRings = this.rxRings.map(() => null);
    this.txRings = this.txRings.map(() => null);
    this.rings = rings.map(() => null);
    for (const r of rings) {
      if (r === null) continue;
      try {
        unmapPacketRings(r);
      } catch {
        /* already gone */
      }
    }
  }
}
