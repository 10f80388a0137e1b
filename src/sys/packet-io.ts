/**
 * The hot path of kernel ports: read/write/readv/writev of one frame and
 * recvmmsg/sendmmsg bursts through a preallocated native vector (MmsgVec).
 * Never throws, never allocates: native addresses in, a count or -errno out.
 *
 * Where it runs: in the PMD worker that polls an af-packet or tap port.
 */
import { koffi } from './libc.js';
import { MSG_DONTWAIT, MSG_TRUNC, PACKET_AUXDATA, SOL_PACKET, c_memmove, c_read, c_readv, c_recvmmsg, c_sendmmsg, c_write, c_writev } from './netdev-native.js';

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
