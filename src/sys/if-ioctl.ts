/**
 * Interface control through ioctls on an AF_INET control socket: index by
 * name, flags (up, running, promisc), MTU, hardware address. Interface names
 * resolve in the namespace the control socket was made in.
 *
 * Where it runs: control path of a kernel port, in the thread that opens it (the PMD worker in the
 * daemon; the main thread in tests and tools).
 */
import { SysError, closeQuiet, koffi } from './libc.js';
import { AF_INET, E, IFF_UP, SIOCGIFFLAGS, SIOCGIFHWADDR, SIOCGIFMTU, SIOCSIFFLAGS, SIOCSIFMTU, SOCK_CLOEXEC, SOCK_DGRAM, c_if_nametoindex, c_ioctl, c_socket, checkIfname, fail, ifreq, scratch, scratchAddr, sdv } from './netdev-native.js';

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
