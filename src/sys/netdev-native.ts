/**
 * The base of the kernel network device modules (if-ioctl.ts, packet-socket.ts,
 * packet-ring.ts, tap-device.ts, netns.ts, packet-io.ts): the libc bindings
 * through koffi, the constants of linux/if_packet.h, linux/if_tun.h and
 * linux/sockios.h, and the native scratch block that control-path calls fill
 * (struct ifreq, sockaddr_ll, sockopt values). The bindings, the scratch block
 * and the helpers are for those modules; the constants are public.
 *
 * Control-path calls throw {@link SysError} naming the call, the errno and the
 * interface; on every error path the fds opened so far are closed. Hot-path
 * calls (packet-io.ts) never throw and never allocate: they take native
 * addresses (numbers) and return a count or a negative errno.
 *
 * Where it runs: in whichever thread opens or polls a kernel port (the PMD worker in the daemon;
 * the main thread in tests and tools); the scratch block is per thread (module state).
 */
import { constants as osConstants } from 'node:os';
import { koffi, SysError } from './libc.js';

export const libc = koffi.load('libc.so.6');
export const E = osConstants.errno;

// --- raw bindings (private) ---
export const c_socket = libc.func('int socket(int domain, int type, int protocol)');
export const c_bind = libc.func('bind', 'int', ['int', 'uint64_t', 'uint32_t']);
export const c_setsockopt = libc.func('setsockopt', 'int', ['int', 'int', 'int', 'uint64_t', 'uint32_t']);
export const c_getsockopt = libc.func('getsockopt', 'int', ['int', 'int', 'int', 'uint64_t', 'uint64_t']);
export const c_ioctl = libc.func('ioctl', 'int', ['int', 'unsigned long', 'uint64_t']);
export const c_open = libc.func('open', 'int', ['str', 'int', 'int']);
export const c_if_nametoindex = libc.func('unsigned int if_nametoindex(const char *name)');
export const c_setns = libc.func('int setns(int fd, int nstype)');
export const c_read = libc.func('read', 'long', ['int', 'uint64_t', 'size_t']);
export const c_write = libc.func('write', 'long', ['int', 'uint64_t', 'size_t']);
export const c_recvmmsg = libc.func('recvmmsg', 'int', ['int', 'uint64_t', 'unsigned int', 'int', 'uint64_t']);
export const c_sendmmsg = libc.func('sendmmsg', 'int', ['int', 'uint64_t', 'unsigned int', 'int']);
export const c_writev = libc.func('writev', 'long', ['int', 'uint64_t', 'int']);
export const c_readv = libc.func('readv', 'long', ['int', 'uint64_t', 'int']);
export const c_memmove = libc.func('memmove', 'uint64_t', ['uint64_t', 'uint64_t', 'size_t']);
export const c_sendto = libc.func('sendto', 'long', ['int', 'uint64_t', 'size_t', 'int', 'uint64_t', 'uint32_t']);

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
export const SCRATCH = 256;
export const scratchPtr = koffi.alloc('uint8_t', SCRATCH);
export const scratchAddr = Number(koffi.address(scratchPtr));
export const scratch = new Uint8Array(koffi.view(scratchPtr, SCRATCH));
export const sdv = new DataView(scratch.buffer);

export function fail(call: string, detail?: string): never {
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
export function ifreq(ifname: string): void {
  scratch.fill(0, 0, 40);
  scratch.set(Buffer.from(ifname), 0);
}

export function ifreqName(): string {
  const end = scratch.indexOf(0);
  return Buffer.from(scratch.subarray(0, end < 0 || end > 16 ? 16 : end)).toString();
}

export function setsockoptInt(fd: number, level: number, opt: number, v: number, call: string, detail: string): void {
  sdv.setInt32(0, v, true);
  if (c_setsockopt(fd, level, opt, scratchAddr, 4) < 0) fail(call, detail);
}
