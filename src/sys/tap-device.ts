/**
 * TAP devices through /dev/net/tun (TUNSETIFF): create or attach, one fd per queue.
 *
 * Where it runs: control path of a tap port, in the thread that opens it (the PMD worker in the
 * daemon; the main thread in tests and tools).
 */
import { SysError, closeQuiet } from './libc.js';
import { E, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, O_CLOEXEC, O_NONBLOCK, O_RDWR, TUNSETIFF, c_ioctl, c_open, checkIfname, fail, ifreq, ifreqName, scratchAddr, sdv } from './netdev-native.js';

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
