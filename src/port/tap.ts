/**
 * The TAP PMD (DPDK net_tap, reduced): a Port over a Linux TAP device. Frames
 * the kernel sends out of the tap interface are received here; frames sent
 * here appear as received on the interface.
 *
 *   new TapPort(name, pool, { ifname, queues?, mtu?, netns?, up? })
 *
 * Creates the tap (or attaches to an existing persistent one, e.g. made by
 * `ip tuntap add dev X mode tap [multi_queue]`), optionally sets its MTU and
 * brings it up. One non-blocking fd per queue (IFF_MULTI_QUEUE when
 * queues > 1); the kernel spreads its frames over the queues by flow hash.
 * A non-persistent tap disappears when the port closes.
 *
 * Namespaces: with `netns` the device is created inside that namespace
 * (`ip netns add NAME`; the calling thread switches in and back, see
 * withNetns in src/sys/netns.ts); the port then works from our namespace.
 *
 * Data path: one readv() per received frame (stopping at EAGAIN) straight
 * into a pool buffer, with a trash block behind it so that a frame longer
 * than the buffer (tun truncates silently) is seen and dropped; one write() (writev for chains) per sent frame. No
 * allocation, no exceptions. Frames are plain Ethernet (IFF_NO_PI, no
 * virtio-net header, so the kernel hands us fully checksummed frames).
 *
 * Frame size: a frame may be as long as a pool buffer's room (bufSize -
 * headroom); jumbo frames need a pool with big buffers (the switch sizes
 * them from --max-mtu). Longer frames are seen whole thanks to the trash
 * block and dropped as 'rx-too-big', never forwarded truncated.
 *
 * Drops (stats.drops): 'rx-too-big' (frame larger than a pool buffer),
 * 'rx-E...' (other read errors); tx: 'tx-busy' (EAGAIN: returned to the
 * caller, not taken), 'tx-E...' (the kernel refused the frame, e.g. EIO
 * while the device is down, EINVAL for a frame below 14 bytes: taken and
 * freed), 'tx-bad-handle', 'tx-bad-chain', 'tx-bad-len', 'tx-too-many-segs',
 * 'tx-closed', 'tx-bad-queue'.
 *
 * Where it runs: in the PMD worker that polls the port (the daemon) or the thread that opened it.
 */
import type { Mempool } from '../mem/mempool.js';
import { closeQuiet, EAGAIN, EINTR } from '../sys/libc.js';
import { getHwAddr, getMtu, openCtlSocket, setLinkUp, setMtu } from '../sys/if-ioctl.js';
import { openTap } from '../sys/tap-device.js';
import { withNetns } from '../sys/netns.js';
import { MmsgVec, readvEntry, rawWrite, TRASH_ADDR, TRASH_LEN, writevEntry } from '../sys/packet-io.js';
import { KernelPort, L2_OVERHEAD, MAX_TX_SEGS } from './kernel-port.js';
import { Drop, type DropReason } from './port.js';


export interface TapPortOptions {
  /** Interface name (max 15 bytes); 'tap%d' lets the kernel pick (see port.ifname). */
  ifname: string;
  /** Queue pairs (default 1); > 1 uses IFF_MULTI_QUEUE. */
  queues?: number;
  /** Set this MTU on the device (it must fit a pool buffer: mtu + 22 <= bufSize - headroom, see L2_OVERHEAD). */
  mtu?: number;
  /** Create the device in this network namespace (a name under /run/netns or an absolute path). */
  netns?: string;
  /** Bring the link up (default true). */
  up?: boolean;
  /** Attach with IFF_MULTI_QUEUE even for one queue (to match a multi_queue persistent tap). */
  multiQueue?: boolean;
}

export class TapPortError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'TapPortError';
  }
}

export class TapPort extends KernelPort {
  readonly type = 'tap';
  /** Device MTU when opened. */
  readonly mtu: number;
  /** The interface's MAC address (6 bytes) when opened. */
  readonly mac: Uint8Array;
  private readonly iov = new MmsgVec(1, MAX_TX_SEGS);
  /** rx: [pool buffer][trash], so an oversized frame reads as more than `room` bytes. */
  private readonly rxIov = new MmsgVec(1, 2);

  /**
   * Throws SysError (naming the call, errno and interface) when the device
   * cannot be made or configured, TapPortError when the MTU does not fit the
   * pool's buffers; nothing stays open on failure.
   */
  constructor(name: string, pool: Mempool, opts: TapPortOptions) {
    const room = pool.bufSize - pool.headroom;
    if (opts.mtu !== undefined && opts.mtu + L2_OVERHEAD > room) {
      throw new TapPortError(`tap ${opts.ifname}: mtu ${opts.mtu} + ${L2_OVERHEAD} exceeds the pool's ${room}-byte buffers`);
    }
    const make = (): { fds: number[]; ifname: string; ctl: number; mtu: number; mac: Uint8Array } => {
      const t = openTap(opts.ifname, { queues: opts.queues, multiQueue: opts.multiQueue });
      let ctl = -1;
      try {
        ctl = openCtlSocket();
        if (opts.mtu !== undefined) setMtu(t.ifname, opts.mtu, ctl);
        if (opts.up ?? true) setLinkUp(t.ifname, true, ctl);
        return { fds: t.fds, ifname: t.ifname, ctl, mtu: getMtu(t.ifname, ctl), mac: getHwAddr(t.ifname, ctl) };
      } catch (e) {
        for (const fd of t.fds) closeQuiet(fd);
        closeQuiet(ctl);
        throw e;
      }
    };
    const r = opts.netns !== undefined ? withNetns(opts.netns, make) : make();
    super(name, pool, r.ifname, opts.netns, r.fds, r.ctl);
    this.rxIov.setIov(0, TRASH_ADDR, TRASH_LEN, 1);
    this.mtu = r.mtu;
    this.mac = r.mac;
  }

  rxBurst(q: number, out: Int32Array, max: number): number {
    max = this.rxLimit(q, out, max);
    if (max === 0) return 0;
    const st = this.refill(q, max);
    const fd = this.fds[q];
    const pool = this.pool;
    const base = this.base;
    const stride = pool.stride;
    const room = this.room;
    const rxIov = this.rxIov;
    let top = this.stashLen[q];
    let n = 0;
    let bytes = 0;
    let tries = 2 * max;
    while (n < max && top > 0 && tries-- > 0) {
      const h = st[top - 1];
      const off = pool.dataOff[h];
      rxIov.setIov(0, base + h * stride + off, room, 0);
      const r = readvEntry(fd, rxIov, 0, 2);
      if (r < 0) {
        if (r === -EAGAIN) break;
        if (r === -EINTR) continue;
        this.rxDrop(this.rxErrReason(-r));
        break;
      }
      if (r > room) {
        this.rxDrop(Drop.RX_TOO_BIG);
        continue;
      }
      if (r === 0) break;
      top--;
      pool.dataLen[h] = r;
      pool.pktLen[h] = r;
      out[n++] = h;
      bytes += r;
    }
    return this.rxDone(q, top, n, bytes);
  }

  txBurst(q: number, handles: Int32Array, n: number): number {
    n = this.txLimit(q, handles, n);
    if (n === 0) return 0;
    const fd = this.fds[q];
    const pool = this.pool;
    const base = this.base;
    const stride = pool.stride;
    let sent = 0;
    let bytes = 0;
    let i = 0;
    for (; i < n; i++) {
      const h = handles[i];
      const segs = this.txSegments(h);
      if (segs === 0) {
        this.txTakeBad(h);
        continue;
      }
      let r: number;
      if (segs === 1) {
        r = rawWrite(fd, base + h * stride + pool.dataOff[h], pool.dataLen[h]);
      } else {
        let seg = h;
        for (let s = 0; s < segs; s++) {
          this.iov.setIov(0, base + seg * stride + pool.dataOff[seg], pool.dataLen[seg], s);
          seg = pool.next[seg];
        }
        r = writevEntry(fd, this.iov, 0, segs);
      }
      if (r < 0) {
        if (r === -EINTR) {
          i--;
          continue;
        }
        if (r === -EAGAIN) break;
        this.txDrop(this.txErrReason(-r));
        pool.freeOne(h);
        continue;
      }
      sent++;
      bytes += r;
      pool.freeOne(h);
    }
    return this.txDone(i, n, sent, bytes);
  }

  protected override releaseExtra(): void {
    this.iov.free();
    this.rxIov.free();
  }
}
