/**
 * Kernel network devices through koffi: AF_PACKET raw sockets, TAP devices
 * (/dev/net/tun), interface flags/MTU ioctls and network namespaces (setns).
 *
 * Control-path calls throw {@link SysError} naming the call, the errno and the
 * interface; on every error path the fds opened so far are closed. Hot-path
 * calls ({@link rawRead}, {@link rawWrite}, {@link recvmmsgBurst},
 * {@link sendmmsgBurst}) never throw and never allocate: they take native
 * addresses (numbers) and return a count or a negative errno.
 *
 * Network namespaces: a socket or TAP device belongs to the namespace of the
 * thread that creates it, and keeps working from any namespace afterwards.
 * {@link withNetns} switches the calling (main) thread into a named namespace
 * (`ip netns add NAME` -> /run/netns/NAME), runs a synchronous function and
 * switches back. Only the calling thread moves; other threads (libuv pool,
 * workers) are unaffected. Alternatively run the whole process under
 * `ip netns exec NAME node ...`.
 */
import { constants as osConstants } from 'node:os';
import { koffi, SysError, closeQuiet, mmap, munmap, view } from './libc.js';

const libc = koffi.load('libc.so.6');
const E = osConstants.errno;

// --- raw bindings (private) ---
const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_bind = libc.func('bind', 'int', ['int', 'uint64_t', 'uint32_t']);
const c_setsockopt = libc.func('setsockopt', 'int', ['int', 'int', 'int', 'uint64_t', 'uint32_t']);
const c_getsockopt = libc.func('getsockopt', 'int', ['int', 'int', 'int', 'uint64_t', 'uint64_t']);
const c_ioctl = libc.func('ioctl', 'int', ['int', 'unsigned long', 'uint64_t']);
const c_open = libc.func('open', 'int', ['str', 'int', 'int']);
const c_if_nametoindex = libc.func('unsigned int if_nametoindex(const char *name)');
const c_setns = libc.func('int setns(int fd, int nstype)');
const c_read = libc.func('read', 'long', ['int', 'uint64_t', 'size_t']);
const c_write = libc.func('write', 'long', ['int', 'uint64_t', 'size_t']);
const c_recvmmsg = libc.func('recvmmsg', 'int', ['int', 'uint64_t', 'unsigned int', 'int', 'uint64_t']);
const c_sendmmsg = libc.func('sendmmsg', 'int', ['int', 'uint64_t', 'unsigned int', 'int']);
const c_writev = libc.func('writev', 'long', ['int', 'uint64_t', 'int']);
const c_readv = libc.func('readv', 'long', ['int', 'uint64_t', 'int']);
const c_memmove = libc.func('memmove', 'uint64_t', ['uint64_t', 'uint64_t', 'size_t']);
const c_sendto = libc.func('sendto', 'long', ['int', 'uint64_t', 'size_t', 'int', 'uint64_t', 'uint32_t']);

// --- constants (linux/if_packet.h, linux/if_tun.h, linux/sockios.h) ---
export const AF_INET = 2;
export const AF_PACKET = 17;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const O_RDWR = 2;
export const O_RDONLY = 0;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const ETH_P_ALL = 0x0003;
export const SOL_SOCKET = 1;
export const SO_RCVBUF = 8;
export const SO_SNDBUF = 7;
export const SOL_PACKET = 263;
export const PACKET_ADD_MEMBERSHIP = 1;
export const PACKET_MR_PROMISC = 1;
export const PACKET_STATISTICS = 6;
export const PACKET_AUXDATA = 8;
export const TP_STATUS_CSUMNOTREADY = 0x8;
export const TP_STATUS_VLAN_VALID = 0x10;
export const TP_STATUS_VLAN_TPID_VALID = 0x40;
export const PACKET_FANOUT = 18;
export const PACKET_QDISC_BYPASS = 20;
export const PACKET_IGNORE_OUTGOING = 23;
export const PACKET_FANOUT_HASH = 0;
export const PACKET_FANOUT_LB = 1;
export const PACKET_FANOUT_CPU = 2;
export const PACKET_FANOUT_QM = 5;
export const PACKET_FANOUT_FLAG_UNIQUEID = 0x2000;
export const PACKET_OUTGOING = 4;
export const PACKET_RX_RING = 5;
export const PACKET_VERSION = 10;
export const PACKET_RESERVE = 12;
export const PACKET_TX_RING = 13;
export const PACKET_LOSS = 14;
export const TPACKET_V2 = 1;
/** tp_status of an rx ring frame: the kernel owns it (0) / we do (TP_STATUS_USER). */
export const TP_STATUS_KERNEL = 0;
export const TP_STATUS_USER = 0x1;
/** tp_status of a tx ring frame: free (0), ours to send (SEND_REQUEST), in flight, refused. */
export const TP_STATUS_AVAILABLE = 0;
export const TP_STATUS_SEND_REQUEST = 0x1;
export const TP_STATUS_SENDING = 0x2;
export const TP_STATUS_WRONG_FORMAT = 0x4;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;
export const TUNSETIFF = 0x400454ca;
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;
export const IFF_PROMISC = 0x100;
export const SIOCGIFFLAGS = 0x8913;
export const SIOCSIFFLAGS = 0x8914;
export const SIOCGIFMTU = 0x8921;
export const SIOCSIFMTU = 0x8922;
export const SIOCGIFHWADDR = 0x8927;
export const CLONE_NEWNET = 0x40000000;
/** Longest interface name (IFNAMSIZ - 1). */
export const IFNAMSIZ_MAX = 15;

// Native scratch for control-path structures (ifreq, sockaddr_ll, sockopt values).
const SCRATCH = 256;
const scratchPtr = koffi.alloc('uint8_t', SCRATCH);
const scratchAddr = Number(koffi.address(scratchPtr));
const scratch = new Uint8Array(koffi.view(scratchPtr, SCRATCH));
const sdv = new DataView(scratch.buffer);

function fail(call: string, detail?: string): never {
  throw new SysError(call, koffi.errno(), detail);
}

/** Throws SysError(EINVAL) unless name is a valid interface name. */
export function checkIfname(name: string, call = 'ifname'): void {
  const b = Buffer.byteLength(name);
  if (b === 0 || b > IFNAMSIZ_MAX || name.includes('/') || name.includes('\0') || /\s/.test(name)) {
    throw new SysError(call, E.EINVAL, `bad interface name ${JSON.stringify(name)}`);
  }
}

/** Fill scratch[0..40) with a zeroed struct ifreq naming ifname. */
function ifreq(ifname: string): void {
  scratch.fill(0, 0, 40);
  scratch.set(Buffer.from(ifname), 0);
}

function ifreqName(): string {
  const end = scratch.indexOf(0);
  return Buffer.from(scratch.subarray(0, end < 0 || end > 16 ? 16 : end)).toString();
}

/** if_nametoindex; throws SysError('if_nametoindex', ENODEV, name) when there is no such interface. */
export function ifNameToIndex(ifname: string): number {
  checkIfname(ifname, 'if_nametoindex');
  const idx = c_if_nametoindex(ifname);
  if (idx === 0) {
    const e = koffi.errno();
    throw new SysError('if_nametoindex', e === 0 ? E.ENODEV : e, ifname);
  }
  return idx;
}

/**
 * An AF_INET datagram socket for interface ioctls. Interface names resolve in
 * the namespace the socket was created in: a port opened in another
 * namespace keeps one of these (made there) for its control calls.
 */
export function openCtlSocket(): number {
  const fd = c_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail('socket(AF_INET)');
  return fd;
}

/** Run fn with ctlFd, or with a throwaway control socket of the current namespace. */
function withCtlSocket<T>(ctlFd: number | undefined, fn: (fd: number) => T): T {
  if (ctlFd !== undefined) return fn(ctlFd);
  const fd = openCtlSocket();
  try {
    return fn(fd);
  } finally {
    closeQuiet(fd);
  }
}

function ifIoctl(fd: number, req: number, call: string, ifname: string): void {
  if (c_ioctl(fd, req, scratchAddr) < 0) fail(call, ifname);
}

/** Interface flags (IFF_*) via SIOCGIFFLAGS. */
export function getIfFlags(ifname: string, ctlFd?: number): number {
  checkIfname(ifname, 'SIOCGIFFLAGS');
  return withCtlSocket(ctlFd, (fd) => {
    ifreq(ifname);
    ifIoctl(fd, SIOCGIFFLAGS, 'ioctl(SIOCGIFFLAGS)', ifname);
    return sdv.getUint16(16, true);
  });
}

/** Set (and clear) interface flags via SIOCGIFFLAGS + SIOCSIFFLAGS. */
export function setIfFlags(ifname: string, set: number, clear = 0, ctlFd?: number): void {
  checkIfname(ifname, 'SIOCSIFFLAGS');
  withCtlSocket(ctlFd, (fd) => {
    ifreq(ifname);
    ifIoctl(fd, SIOCGIFFLAGS, 'ioctl(SIOCGIFFLAGS)', ifname);
    const flags = (sdv.getUint16(16, true) | set) & ~clear;
    sdv.setUint16(16, flags & 0xffff, true);
    ifIoctl(fd, SIOCSIFFLAGS, 'ioctl(SIOCSIFFLAGS)', ifname);
  });
}

/** Bring an interface up (IFF_UP). */
export function setLinkUp(ifname: string, up = true, ctlFd?: number): void {
  if (up) setIfFlags(ifname, IFF_UP, 0, ctlFd);
  else setIfFlags(ifname, 0, IFF_UP, ctlFd);
}

/** MTU via SIOCGIFMTU. */
export function getMtu(ifname: string, ctlFd?: number): number {
  checkIfname(ifname, 'SIOCGIFMTU');
  return withCtlSocket(ctlFd, (fd) => {
    ifreq(ifname);
    ifIoctl(fd, SIOCGIFMTU, 'ioctl(SIOCGIFMTU)', ifname);
    return sdv.getInt32(16, true);
  });
}

/** Set the MTU via SIOCSIFMTU. */
export function setMtu(ifname: string, mtu: number, ctlFd?: number): void {
  checkIfname(ifname, 'SIOCSIFMTU');
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new SysError('ioctl(SIOCSIFMTU)', E.EINVAL, `${ifname}: mtu ${mtu}`);
  withCtlSocket(ctlFd, (fd) => {
    ifreq(ifname);
    sdv.setInt32(16, mtu, true);
    ifIoctl(fd, SIOCSIFMTU, 'ioctl(SIOCSIFMTU)', ifname);
  });
}

/** Hardware (MAC) address via SIOCGIFHWADDR, as 6 bytes. */
export function getHwAddr(ifname: string, ctlFd?: number): Uint8Array {
  checkIfname(ifname, 'SIOCGIFHWADDR');
  return withCtlSocket(ctlFd, (fd) => {
    ifreq(ifname);
    ifIoctl(fd, SIOCGIFHWADDR, 'ioctl(SIOCGIFHWADDR)', ifname);
    return scratch.slice(18, 24); // ifr_hwaddr: sa_family(2) + sa_data
  });
}

function setsockoptInt(fd: number, level: number, opt: number, v: number, call: string, detail: string): void {
  sdv.setInt32(0, v, true);
  if (c_setsockopt(fd, level, opt, scratchAddr, 4) < 0) fail(call, detail);
}

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

// ------------------------------------------------------- PACKET_MMAP rings

/**
 * struct tpacket2_hdr (32 bytes) at the start of every TPACKET_V2 ring frame:
 * u32 tp_status, u32 tp_len, u32 tp_snaplen, u16 tp_mac, u16 tp_net,
 * u32 tp_sec, u32 tp_nsec, u16 tp_vlan_tci, u16 tp_vlan_tpid, u8 pad[4];
 * then (rx) a struct sockaddr_ll at TPACKET_ALIGN(32) = 32. Byte offsets.
 */
export const TP2_STATUS = 0;
export const TP2_LEN = 4;
export const TP2_SNAPLEN = 8;
export const TP2_MAC = 12;
export const TP2_VLAN_TCI = 24;
export const TP2_VLAN_TPID = 26;
/** sll_pkttype of the sockaddr_ll after the header (rx). */
export const TP2_PKTTYPE = 32 + 10;
/** TPACKET2_HDRLEN: TPACKET_ALIGN(sizeof(tpacket2_hdr)) + sizeof(sockaddr_ll). */
export const TPACKET2_HDRLEN = 52;
/** Where a tx frame's data starts (TPACKET2_HDRLEN - sizeof(sockaddr_ll)). */
export const TP2_TX_DATA = 32;
/**
 * Most bytes between an rx frame's start and its tp_mac (Ethernet, no
 * vnet header): TPACKET_ALIGN(TPACKET2_HDRLEN + 16) + reserve - 14 <= 80 + reserve.
 */
export const TP2_RX_MAC_MAX = 80;

/** struct tpacket_req: the geometry of one ring. */
export interface PacketRingLayout {
  /** Bytes per block (a multiple of the page size; frames never straddle blocks). */
  blockSize: number;
  blockNr: number;
  /** Bytes per frame (a multiple of 16). */
  frameSize: number;
  frameNr: number;
}

/**
 * A ring geometry whose frames carry `payload` bytes after `headBytes` of
 * header (frame size rounded up to 16), about `frames` frames but at most
 * `maxBytes` in all (and at least 2 blocks).
 */
export function packetRingLayout(payload: number, headBytes: number, frames: number, maxBytes = 16 << 20): PacketRingLayout {
  if (!Number.isInteger(payload) || payload < 64 || payload > 1 << 20 || !Number.isInteger(frames) || frames < 1) {
    throw new RangeError(`packetRingLayout(${payload}, ${frames}): payload in 64..2^20, frames >= 1`);
  }
  const frameSize = (payload + headBytes + 15) & ~15;
  let blockSize = 1 << 16; // a power of two (walkers rely on it)
  while (blockSize < frameSize) blockSize *= 2;
  const perBlock = Math.floor(blockSize / frameSize);
  let blockNr = Math.ceil(frames / perBlock);
  const maxBlocks = Math.floor(maxBytes / blockSize);
  if (blockNr > maxBlocks) blockNr = maxBlocks;
  if (blockNr < 2) blockNr = 2;
  return { blockSize, blockNr, frameSize, frameNr: blockNr * perBlock };
}

/**
 * One mapped ring, with views over it. Frame i starts at byte
 * {@link frameOffset}(i) of u8 (u32/u16 index it >> 2 / >> 1; frames are
 * 16-aligned). tp_status words are shared with the kernel: read and write
 * them with Atomics on u32 (Int32 semantics are not needed: values are small).
 */
export class PacketRingView {
  readonly layout: PacketRingLayout;
  readonly frameSize: number;
  readonly frameNr: number;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  /** Native address of frame 0. */
  readonly addr: number;
  private readonly perBlock: number;
  constructor(layout: PacketRingLayout, addr: number) {
    this.layout = layout;
    this.frameSize = layout.frameSize;
    this.frameNr = layout.frameNr;
    this.perBlock = Math.floor(layout.blockSize / layout.frameSize);
    this.addr = addr;
    const ab = view(addr, layout.blockSize * layout.blockNr);
    this.u8 = new Uint8Array(ab);
    this.u16 = new Uint16Array(ab);
    this.u32 = new Uint32Array(ab);
    this.i32 = new Int32Array(ab);
  }
  /** Byte offset of frame i in the ring (frames do not cross block boundaries). */
  frameOffset(i: number): number {
    const b = Math.floor(i / this.perBlock);
    return b * this.layout.blockSize + (i - b * this.perBlock) * this.frameSize;
  }
}

/** The rings of one packet socket, mapped in one piece (rx ring first). */
export interface PacketRings {
  rx: PacketRingView | null;
  tx: PacketRingView | null;
  /** Mapping address and length (for munmap). */
  addr: number;
  size: number;
}

function setRing(fd: number, opt: number, l: PacketRingLayout | null, call: string): void {
  scratch.fill(0, 0, 16);
  if (l !== null) {
    sdv.setUint32(0, l.blockSize, true);
    sdv.setUint32(4, l.blockNr, true);
    sdv.setUint32(8, l.frameSize, true);
    sdv.setUint32(12, l.frameNr, true);
  }
  if (c_setsockopt(fd, SOL_PACKET, opt, scratchAddr, 16) < 0) fail(call, `fd ${fd}`);
}

/**
 * Switch packet socket fd to TPACKET_V2, give it an rx ring and/or a tx ring
 * (PACKET_RX_RING / PACKET_TX_RING) and map them. `reserve` is
 * PACKET_RESERVE (bytes left free before each received frame's network
 * header, which moves tp_mac). Throws SysError naming the refused call (e.g.
 * setsockopt(PACKET_RX_RING) ENOMEM); on failure the rings are released again
 * and the socket works as before (recv/send), except that its version is V2.
 */
export function mapPacketRings(fd: number, rx: PacketRingLayout | null, tx: PacketRingLayout | null, reserve = 0): PacketRings {
  setsockoptInt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2, 'setsockopt(PACKET_VERSION)', `fd ${fd}`);
  if (reserve > 0) setsockoptInt(fd, SOL_PACKET, PACKET_RESERVE, reserve, 'setsockopt(PACKET_RESERVE)', `fd ${fd}`);
  let haveRx = false;
  let haveTx = false;
  try {
    if (rx !== null) {
      setRing(fd, PACKET_RX_RING, rx, 'setsockopt(PACKET_RX_RING)');
      haveRx = true;
    }
    if (tx !== null) {
      setRing(fd, PACKET_TX_RING, tx, 'setsockopt(PACKET_TX_RING)');
      haveTx = true;
    }
    const rxBytes = rx === null ? 0 : rx.blockSize * rx.blockNr;
    const txBytes = tx === null ? 0 : tx.blockSize * tx.blockNr;
    const size = rxBytes + txBytes;
    if (size === 0) throw new SysError('mapPacketRings', E.EINVAL, 'no ring asked for');
    const addr = mmap(fd, size);
    try {
      return { rx: rx === null ? null : new PacketRingView(rx, addr), tx: tx === null ? null : new PacketRingView(tx, addr + rxBytes), addr, size };
    } catch (e) {
      munmap(addr, size);
      throw e;
    }
  } catch (e) {
    // a zeroed tpacket_req frees an unmapped ring
    if (haveRx) c_setsockopt(fd, SOL_PACKET, PACKET_RX_RING, (scratch.fill(0, 0, 16), scratchAddr), 16);
    if (haveTx) c_setsockopt(fd, SOL_PACKET, PACKET_TX_RING, (scratch.fill(0, 0, 16), scratchAddr), 16);
    throw e;
  }
}

/** Unmap rings mapped by {@link mapPacketRings} (drop their views first). */
export function unmapPacketRings(r: PacketRings): void {
  munmap(r.addr, r.size);
}

/**
 * Unmap fd's rings and give them back to the kernel (zeroed tpacket_req), so
 * the socket receives and sends through recv/send again. Never throws.
 */
export function releasePacketRings(fd: number, r: PacketRings): void {
  try {
    munmap(r.addr, r.size);
  } catch {
    /* not mapped */
  }
  scratch.fill(0, 0, 16);
  if (r.rx !== null) c_setsockopt(fd, SOL_PACKET, PACKET_RX_RING, scratchAddr, 16);
  scratch.fill(0, 0, 16);
  if (r.tx !== null) c_setsockopt(fd, SOL_PACKET, PACKET_TX_RING, scratchAddr, 16);
}

/**
 * sendto(fd, NULL, 0, MSG_DONTWAIT): have the kernel send every tx ring frame
 * marked TP_STATUS_SEND_REQUEST. Bytes queued, or -errno. Never throws.
 */
export function packetRingKick(fd: number): number {
  const r = c_sendto(fd, 0, 0, MSG_DONTWAIT, 0, 0) as number;
  return r < 0 ? -koffi.errno() : r;
}

export interface TapOptions {
  /** One fd per queue; >1 requires IFF_MULTI_QUEUE (set automatically). */
  queues?: number;
  /** Force IFF_MULTI_QUEUE even for one queue (to attach to a multi_queue persistent tap). */
  multiQueue?: boolean;
}

/**
 * Create or attach to TAP device ifname (IFF_TAP | IFF_NO_PI, plus
 * IFF_MULTI_QUEUE when queues > 1): one non-blocking, close-on-exec fd per
 * queue. A name containing '%d' lets the kernel pick; the real name is
 * returned. Throws SysError('ioctl(TUNSETIFF)', errno, ifname) (EBUSY if a
 * non-multiqueue tap is already attached, EINVAL on a queue-mode mismatch,
 * EPERM without CAP_NET_ADMIN); all fds are closed on failure.
 */
export function openTap(ifname: string, o: TapOptions = {}): { fds: number[]; ifname: string } {
  checkIfname(ifname, 'ioctl(TUNSETIFF)');
  const queues = o.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > 256) throw new SysError('ioctl(TUNSETIFF)', E.EINVAL, `${ifname}: ${queues} queues`);
  const flags = IFF_TAP | IFF_NO_PI | (queues > 1 || o.multiQueue ? IFF_MULTI_QUEUE : 0);
  const fds: number[] = [];
  let name = ifname;
  try {
    for (let q = 0; q < queues; q++) {
      const fd = c_open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
      if (fd < 0) fail('open(/dev/net/tun)', name);
      fds.push(fd);
      ifreq(name);
      sdv.setUint16(16, flags, true);
      if (c_ioctl(fd, TUNSETIFF, scratchAddr) < 0) fail('ioctl(TUNSETIFF)', name);
      name = ifreqName();
    }
    return { fds, ifname: name };
  } catch (e) {
    for (const fd of fds) closeQuiet(fd);
    throw e;
  }
}

/**
 * Run fn with the calling thread inside network namespace `netns` (a name
 * under /run/netns, or an absolute path to a netns file such as
 * /proc/PID/ns/net), then switch back. fn must be synchronous. Sockets and
 * TAP devices created inside stay in that namespace.
 */
export function withNetns<T>(netns: string, fn: () => T): T {
  const target = netns.startsWith('/') ? netns : `/run/netns/${netns}`;
  if (!netns.startsWith('/') && (netns.includes('/') || netns === '' || netns === '.' || netns === '..')) {
    throw new SysError('setns', E.EINVAL, `bad namespace name ${JSON.stringify(netns)}`);
  }
  const orig = c_open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC, 0);
  if (orig < 0) fail('open(/proc/thread-self/ns/net)');
  const nsfd = c_open(target, O_RDONLY | O_CLOEXEC, 0);
  if (nsfd < 0) {
    const e = koffi.errno();
    closeQuiet(orig);
    throw new SysError('open(netns)', e, target);
  }
  try {
    if (c_setns(nsfd, CLONE_NEWNET) < 0) fail('setns', target);
    try {
      return fn();
    } finally {
      if (c_setns(orig, CLONE_NEWNET) < 0) {
        // Staying in the wrong namespace silently would be worse than dying.
        const err = new SysError('setns(back)', koffi.errno(), 'cannot return to the original network namespace');
        process.emitWarning(err);
        throw err;
      }
    }
  } finally {
    closeQuiet(nsfd);
    closeQuiet(orig);
  }
}

// ---------------------------------------------------------------- hot path

/** read(fd, addr, len): bytes read, or -errno (e.g. -EAGAIN). Never throws. */
export function rawRead(fd: number, addr: number, len: number): number {
  const r = c_read(fd, addr, len) as number;
  return r < 0 ? -koffi.errno() : r;
}

/** write(fd, addr, len): bytes written, or -errno. Never throws. */
export function rawWrite(fd: number, addr: number, len: number): number {
  const r = c_write(fd, addr, len) as number;
  return r < 0 ? -koffi.errno() : r;
}

/** memmove(dst, src, len) between native addresses. */
export function rawCopy(dst: number, src: number, len: number): void {
  c_memmove(dst, src, len);
}

const TWO32 = 4294967296;

/**
 * A preallocated native vector of struct mmsghdr (64 B each: msghdr 56 +
 * msg_len 4 + pad), each with up to `maxSeg` iovecs and one sockaddr_ll, for
 * recvmmsg/sendmmsg (and readv/writev of one entry) without allocation. Fill
 * entries with {@link setIov}/{@link setIovCount}; after recvmmsg read
 * {@link msgLen}, {@link msgFlags} and {@link pktType}.
 */
export class MmsgVec {
  readonly n: number;
  readonly maxSeg: number;
  /** Native address of entry 0. */
  readonly addr: number;
  private readonly dv: DataView;
  private readonly u8: Uint8Array;
  private readonly iovOff: number;
  private readonly saOff: number;
  private ptr: unknown;

  /** Control (cmsg) bytes per entry (0: none). */
  readonly ctrlLen: number;
  private readonly ctrlOff: number;

  constructor(n: number, maxSeg = 1, ctrlLen = 0) {
    if (!Number.isInteger(n) || n < 1 || n > 1024 || !Number.isInteger(maxSeg) || maxSeg < 1 || maxSeg > 64 || !Number.isInteger(ctrlLen) || ctrlLen < 0 || ctrlLen > 1024) {
      throw new RangeError(`MmsgVec(${n}, ${maxSeg}, ${ctrlLen}): n in 1..1024, maxSeg in 1..64, ctrlLen in 0..1024`);
    }
    this.n = n;
    this.maxSeg = maxSeg;
    this.ctrlLen = (ctrlLen + 7) & ~7;
    this.iovOff = 64 * n;
    this.saOff = this.iovOff + 16 * maxSeg * n;
    this.ctrlOff = this.saOff + 24 * n;
    const size = this.ctrlOff + this.ctrlLen * n;
    this.ptr = koffi.alloc('uint8_t', size);
    this.addr = Number(koffi.address(this.ptr));
    this.u8 = new Uint8Array(koffi.view(this.ptr, size));
    this.u8.fill(0);
    this.dv = new DataView(this.u8.buffer);
    for (let i = 0; i < n; i++) {
      const m = 64 * i;
      this.set64(m + 0, this.addr + this.saOff + 24 * i); // msg_name
      this.dv.setUint32(m + 8, 20, true); // msg_namelen
      this.set64(m + 16, this.iovAddr(i)); // msg_iov
      this.set64(m + 24, 1); // msg_iovlen
      if (this.ctrlLen > 0) {
        this.set64(m + 32, this.addr + this.ctrlOff + this.ctrlLen * i); // msg_control
        this.set64(m + 40, this.ctrlLen); // msg_controllen
      }
    }
  }

  /** Re-arm entry i's msg_controllen for receive (the kernel shrinks it to what it wrote). */
  resetControl(i: number): void {
    this.dv.setUint32(64 * i + 40, this.ctrlLen, true);
  }

  /**
   * After a receive with PACKET_AUXDATA on: tp_status of entry i's
   * tpacket_auxdata (TP_STATUS_CSUMNOTREADY, TP_STATUS_VLAN_VALID ...), or -1
   * when the entry carries no such cmsg. {@link auxVlanTci}/{@link auxVlanTpid}
   * are valid only when this is not -1.
   */
  auxStatus(i: number): number {
    const cl = this.dv.getUint32(64 * i + 40, true);
    if (cl < 36) return -1; // cmsghdr(16) + tpacket_auxdata(20)
    const c = this.ctrlOff + this.ctrlLen * i;
    if (this.dv.getInt32(c + 8, true) !== SOL_PACKET || this.dv.getInt32(c + 12, true) !== PACKET_AUXDATA) return -1;
    return this.dv.getUint32(c + 16, true);
  }

  auxVlanTci(i: number): number {
    return this.dv.getUint16(this.ctrlOff + this.ctrlLen * i + 16 + 16, true);
  }

  auxVlanTpid(i: number): number {
    return this.dv.getUint16(this.ctrlOff + this.ctrlLen * i + 16 + 18, true);
  }

  private set64(off: number, v: number): void {
    this.dv.setUint32(off, v >>> 0, true);
    this.dv.setUint32(off + 4, Math.floor(v / TWO32), true);
  }

  /** Native address of entry i's iovec array (for readv/writev). */
  iovAddr(i: number): number {
    return this.addr + this.iovOff + 16 * this.maxSeg * i;
  }

  /** Release the native block (drop this object afterwards; no call may use it again). */
  free(): void {
    if (this.ptr !== null) {
      koffi.free(this.ptr);
      this.ptr = null;
    }
  }

  /** Point segment seg (default 0) of entry i at [addr, addr+len). */
  setIov(i: number, addr: number, len: number, seg = 0): void {
    const o = this.iovOff + 16 * (this.maxSeg * i + seg);
    this.set64(o, addr);
    this.set64(o + 8, len);
  }

  /** Number of iovecs used by entry i (msg_iovlen). */
  setIovCount(i: number, count: number): void {
    this.set64(64 * i + 24, count);
  }

  /** Re-arm entry i's msg_namelen for receive (an in/out field). */
  resetName(i: number): void {
    this.dv.setUint32(64 * i + 8, 20, true);
  }

  /** Give all entries a msg_name (receive: learn sll_pkttype) or none (send on a bound socket). */
  useNames(on: boolean): void {
    for (let i = 0; i < this.n; i++) {
      this.set64(64 * i, on ? this.addr + this.saOff + 24 * i : 0);
      this.dv.setUint32(64 * i + 8, on ? 20 : 0, true);
    }
  }

  /** Bytes received/sent for entry i (msg_len). */
  msgLen(i: number): number {
    return this.dv.getUint32(64 * i + 56, true);
  }

  /** msg_flags of entry i after a receive (MSG_TRUNC ...). */
  msgFlags(i: number): number {
    return this.dv.getInt32(64 * i + 48, true);
  }

  /** sll_pkttype of entry i after a receive (PACKET_HOST, PACKET_OUTGOING ...). */
  pktType(i: number): number {
    return this.u8[this.saOff + 24 * i + 10];
  }
}

/**
 * recvmmsg(fd, &vec[0], n, MSG_DONTWAIT|MSG_TRUNC): messages received, or
 * -errno. With MSG_TRUNC a packet socket reports each frame's full length in
 * msgLen even when it did not fit. Never throws.
 */
export function recvmmsgBurst(fd: number, vec: MmsgVec, n: number): number {
  const r = c_recvmmsg(fd, vec.addr, n, MSG_DONTWAIT | MSG_TRUNC, 0) as number;
  return r < 0 ? -koffi.errno() : r;
}

/** sendmmsg(fd, &vec[start], n, MSG_DONTWAIT): messages sent, or -errno. Never throws. */
export function sendmmsgBurst(fd: number, vec: MmsgVec, start: number, n: number): number {
  const r = c_sendmmsg(fd, vec.addr + 64 * start, n, MSG_DONTWAIT) as number;
  return r < 0 ? -koffi.errno() : r;
}

/** readv(fd, entry i's iovecs, count): bytes read, or -errno. Never throws. */
export function readvEntry(fd: number, vec: MmsgVec, i: number, count: number): number {
  const r = c_readv(fd, vec.iovAddr(i), count) as number;
  return r < 0 ? -koffi.errno() : r;
}

/**
 * A process-wide 64 KiB native block whose contents nobody reads: the last
 * iovec of a read, so that a frame longer than its buffer shows up as a
 * return value above the buffer size (devices like tun truncate silently).
 */
export const TRASH_LEN = 65536;
const trashPtr = koffi.alloc('uint8_t', TRASH_LEN);
export const TRASH_ADDR = Number(koffi.address(trashPtr));

/** writev(fd, entry i's iovecs, count): bytes written, or -errno. Never throws. */
export function writevEntry(fd: number, vec: MmsgVec, i: number, count: number): number {
  const r = c_writev(fd, vec.iovAddr(i), count) as number;
  return r < 0 ? -koffi.errno() : r;
}
