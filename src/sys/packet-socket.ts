/**
 * AF_PACKET raw sockets: open one bound to an interface (promiscuous, fanout
 * group, buffer sizes, qdisc bypass, auxdata) and read its kernel counters.
 *
 * Where it runs: control path of an af-packet port, in the thread that opens it (the PMD worker
 * in the daemon; the main thread in tests and tools).
 */
import { SysError, closeQuiet, koffi } from './libc.js';
import { AF_PACKET, E, ETH_P_ALL, PACKET_ADD_MEMBERSHIP, PACKET_AUXDATA, PACKET_FANOUT, PACKET_FANOUT_FLAG_UNIQUEID, PACKET_FANOUT_HASH, PACKET_IGNORE_OUTGOING, PACKET_MR_PROMISC, PACKET_QDISC_BYPASS, PACKET_STATISTICS, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW, SOL_PACKET, SOL_SOCKET, SO_RCVBUF, SO_SNDBUF, c_bind, c_getsockopt, c_setsockopt, c_socket, fail, scratch, scratchAddr, sdv, setsockoptInt } from './netdev-native.js';
import { ifNameToIndex } from './if-ioctl.js';

export interface PacketSocketOptions {
  /** Receive every frame on the link, not only those addressed to us (default true). */
  promisc?: boolean;
  /** Do not receive frames sent from this host, ours included (default true; Linux 4.20+). */
  ignoreOutgoing?: boolean;
  /**
   * Join PACKET_FANOUT group `id` (0..65535) with `mode` (default
   * PACKET_FANOUT_HASH); without id the kernel makes a new unique group
   * (PACKET_FANOUT_FLAG_UNIQUEID) whose id is returned as fanoutId.
   */
  fanout?: { id?: number; mode?: number };
  /** SO_RCVBUF / SO_SNDBUF in bytes (the kernel doubles them). */
  rcvbuf?: number;
  sndbuf?: number;
  /** Bypass the qdisc on send (PACKET_QDISC_BYPASS). Default false. */
  qdiscBypass?: boolean;
  /** Deliver a tpacket_auxdata cmsg with each frame (PACKET_AUXDATA: VLAN tag, checksum state). Default false. */
  auxdata?: boolean;
}

/**
 * A non-blocking, close-on-exec AF_PACKET/SOCK_RAW socket bound to ifname for
 * ETH_P_ALL. Created with protocol 0 and bound with ETH_P_ALL, so it never sees
 * frames of other interfaces. Throws SysError (ENODEV naming the interface,
 * EPERM without CAP_NET_RAW, ...); the socket is closed on failure.
 * Returns { fd, ifindex, ignoreOutgoing, fanoutId }: ignoreOutgoing tells
 * whether the kernel accepted PACKET_IGNORE_OUTGOING (otherwise filter on
 * sll_pkttype); fanoutId is the PACKET_FANOUT group joined (-1: none).
 */
export function openPacketSocket(ifname: string, o: PacketSocketOptions = {}): { fd: number; ifindex: number; ignoreOutgoing: boolean; fanoutId: number } {
  const ifindex = ifNameToIndex(ifname);
  const fd = c_socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail('socket(AF_PACKET)', ifname);
  try {
    let ignoreOutgoing = false;
    if (o.ignoreOutgoing ?? true) {
      sdv.setInt32(0, 1, true);
      if (c_setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, scratchAddr, 4) === 0) ignoreOutgoing = true;
      else if (koffi.errno() !== E.ENOPROTOOPT) fail('setsockopt(PACKET_IGNORE_OUTGOING)', ifname);
    }
    if (o.rcvbuf !== undefined) setsockoptInt(fd, SOL_SOCKET, SO_RCVBUF, o.rcvbuf, 'setsockopt(SO_RCVBUF)', ifname);
    if (o.sndbuf !== undefined) setsockoptInt(fd, SOL_SOCKET, SO_SNDBUF, o.sndbuf, 'setsockopt(SO_SNDBUF)', ifname);
    if (o.qdiscBypass) setsockoptInt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1, 'setsockopt(PACKET_QDISC_BYPASS)', ifname);
    if (o.auxdata) setsockoptInt(fd, SOL_PACKET, PACKET_AUXDATA, 1, 'setsockopt(PACKET_AUXDATA)', ifname);
    // struct sockaddr_ll { u16 family; be16 protocol; i32 ifindex; u16 hatype; u8 pkttype; u8 halen; u8 addr[8]; }
    scratch.fill(0, 0, 20);
    sdv.setUint16(0, AF_PACKET, true);
    sdv.setUint16(2, ETH_P_ALL, false);
    sdv.setInt32(4, ifindex, true);
    if (c_bind(fd, scratchAddr, 20) < 0) fail('bind(AF_PACKET)', ifname);
    if (o.promisc ?? true) {
      // struct packet_mreq { i32 ifindex; u16 type; u16 alen; u8 address[8]; }
      scratch.fill(0, 0, 16);
      sdv.setInt32(0, ifindex, true);
      sdv.setUint16(4, PACKET_MR_PROMISC, true);
      if (c_setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, scratchAddr, 16) < 0) fail('setsockopt(PACKET_ADD_MEMBERSHIP)', ifname);
    }
    let fanoutId = -1;
    if (o.fanout) {
      const mode = o.fanout.mode ?? PACKET_FANOUT_HASH;
      const id = o.fanout.id;
      if (id === undefined) {
        // the kernel picks an unused group id; read it back for the other members
        setsockoptInt(fd, SOL_PACKET, PACKET_FANOUT, (mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16, 'setsockopt(PACKET_FANOUT)', `${ifname}: new group`);
        sdv.setUint32(16, 4, true);
        if (c_getsockopt(fd, SOL_PACKET, PACKET_FANOUT, scratchAddr, scratchAddr + 16) < 0) fail('getsockopt(PACKET_FANOUT)', ifname);
        fanoutId = sdv.getUint32(0, true) & 0xffff;
      } else {
        if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new SysError('setsockopt(PACKET_FANOUT)', E.EINVAL, `${ifname}: group id ${id}`);
        setsockoptInt(fd, SOL_PACKET, PACKET_FANOUT, id | (mode << 16), 'setsockopt(PACKET_FANOUT)', `${ifname}: group ${id}`);
        fanoutId = id;
      }
    }
    return { fd, ifindex, ignoreOutgoing, fanoutId };
  } catch (e) {
    closeQuiet(fd);
    throw e;
  }
}

/** Kernel rx counters of a packet socket (PACKET_STATISTICS; reading resets them). */
export function packetStatistics(fd: number): { packets: number; drops: number } {
  sdv.setUint32(16, 8, true);
  if (c_getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, scratchAddr, scratchAddr + 16) < 0) fail('getsockopt(PACKET_STATISTICS)', `fd ${fd}`);
  return { packets: sdv.getUint32(0, true), drops: sdv.getUint32(4, true) };
}
