/**
 * SharedRegion: memory backed by a memfd, mapped MAP_SHARED, viewable as typed
 * arrays, and shareable with other processes by passing its fd (SCM_RIGHTS)
 * or with worker threads by passing its address (see {@link SharedRegion.attach}).
 * Big regions are mapped in windows of at most 1 GiB.
 */
import * as libc from '../sys/libc.js';
import { WINDOW_SIZE, type GuestRegion } from './guest-memory.js';

/** Size of the hugetlb pages SharedRegion.create({ hugepages }) uses. */
export const HUGE_PAGE_SIZE = 2 * 1024 * 1024;

export interface RegionAttachInfo {
  addr: number;
  size: number;
  /** The mapping is hugetlb-backed. */
  hugepages?: boolean;
  /** The memfd (fds are process-wide, so a worker may share it with peers; it stays owned by the creator). */
  fd: number;
}

export class SharedRegion {
  /** The memfd (or -1 when attached by address in a worker). */
  fd: number;
  readonly size: number;
  /** Mapped address of window 0. */
  readonly addr: number;
  /** One Uint8Array per window of at most WINDOW_SIZE bytes. */
  readonly views: Uint8Array[];
  /** Backed by 2 MiB hugetlb pages (create with `hugepages`). */
  hugepages = false;
  private readonly ownsMapping: boolean;
  private readonly mapAddrs: number[];
  private closed = false;

  private constructor(fd: number, size: number, mapAddrs: number[], owns: boolean) {
    this.fd = fd;
    this.size = size;
    this.mapAddrs = mapAddrs;
    this.addr = mapAddrs[0];
    this.ownsMapping = owns;
    this.views = mapAddrs.map((a, i) => new Uint8Array(libc.view(a, Math.min(WINDOW_SIZE, size - i * WINDOW_SIZE))));
  }

  /**
   * Create a new zero-filled region of `size` bytes (rounded up to 4 KiB).
   * With `hugepages`, the memfd is backed by 2 MiB hugetlb pages (rounded up
   * to 2 MiB, every page faulted in here, so it is resident and has a fixed
   * physical address: what a device doing DMA needs, see src/mem/iova.ts).
   * With `sealable`, the memfd allows seals, so whoever it is shared with can
   * seal it against shrinking (a vhost-user backend does).
   */
  static create(name: string, size: number, opts: { hugepages?: boolean; sealable?: boolean } = {}): SharedRegion {
    if (!(size > 0) || !Number.isInteger(size)) throw new RangeError(`SharedRegion size must be a positive integer, got ${size}`);
    const huge = opts.hugepages === true;
    const page = huge ? HUGE_PAGE_SIZE : 4096;
    const sz = Math.ceil(size / page) * page;
    const fd = libc.memfdCreate(name, (huge ? libc.MFD_HUGETLB | libc.MFD_HUGE_2MB : 0) | (opts.sealable ? libc.MFD_ALLOW_SEALING : 0));
    try {
      libc.ftruncate(fd, sz);
      let r: SharedRegion;
      try {
        r = SharedRegion.mapFd(fd, sz, 0);
      } catch (e) {
        if (huge && e instanceof libc.SysError && e.code === 'ENOMEM') {
          throw new RangeError(
            `not enough free 2 MiB hugepages for ${sz >> 20} MiB (${name}): reserve more, e.g. ` +
              '`echo 256 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` (see HugePages_Free in /proc/meminfo)',
          );
        }
        throw e;
      }
      r.hugepages = huge;
      if (huge) for (let w = 0; w < r.views.length; w++) for (let o = 0; o < r.views[w].length; o += page) r.views[w][o] = 0;
      return r;
    } catch (e) {
      libc.closeQuiet(fd);
      throw e;
    }
  }

  /**
   * Map an fd received from elsewhere. The region takes ownership of fd (it is
   * closed by close()). On failure the fd is NOT closed; the caller decides.
   */
  static fromFd(fd: number, size: number, offset = 0): SharedRegion {
    return SharedRegion.mapFd(fd, size, offset);
  }

  private static mapFd(fd: number, size: number, offset: number): SharedRegion {
    const addrs: number[] = [];
    try {
      for (let off = 0; off < size; off += WINDOW_SIZE) {
        addrs.push(libc.mmap(fd, Math.min(WINDOW_SIZE, size - off), offset + off));
      }
    } catch (e) {
      addrs.forEach((a, i) => libc.munmap(a, Math.min(WINDOW_SIZE, size - i * WINDOW_SIZE)));
      throw e;
    }
    return new SharedRegion(fd, size, addrs, true);
  }

  /** Info a worker thread needs to attach to this mapping. Single-window regions only. */
  attachInfo(): RegionAttachInfo {
    if (this.mapAddrs.length !== 1) throw new RangeError('attachInfo: region spans several windows');
    return { addr: this.addr, size: this.size, fd: this.fd, hugepages: this.hugepages };
  }

  /** In a worker thread of the same process: views over an existing mapping (not owned). */
  static attach(info: RegionAttachInfo): SharedRegion {
    const r = new SharedRegion(info.fd ?? -1, info.size, [info.addr], false);
    r.hugepages = info.hugepages === true;
    return r;
  }

  /** The first window as bytes (the whole region when size <= 1 GiB). */
  get bytes(): Uint8Array {
    return this.views[0];
  }

  /** Describe this region for GuestMemory at the given guest address. */
  asGuestRegion(gpa: number, uaddr = this.addr): GuestRegion {
    return { gpa, size: this.size, uaddr, mmapOffset: 0, views: this.views };
  }

  /**
   * Unmap and close. Views handed out before must no longer be used (the
   * arrays are detached by dropping references; touching them after close is
   * a use-after-unmap).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    (this.views as Uint8Array[]).length = 0;
    if (this.ownsMapping) {
      this.mapAddrs.forEach((a, i) => libc.munmap(a, Math.min(WINDOW_SIZE, this.size - i * WINDOW_SIZE)));
      libc.closeQuiet(this.fd);
    }
    this.fd = -1;
  }
}
