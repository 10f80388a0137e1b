/**
 * IovaMap: our memory as a device doing DMA sees it. A PCI device (a virtio
 * NIC driven from userspace, no IOMMU) is handed physical addresses, so every
 * ring and packet buffer must sit in memory whose pages are resident, never
 * move, and are physically contiguous over the whole buffer: 2 MiB hugetlb
 * pages (SharedRegion.create({ hugepages })), one pagemap lookup per page.
 *
 * The result is a GuestMemory whose "guest physical" addresses are the
 * physical (IO virtual) addresses and whose frontend addresses are our own
 * virtual ones: the virtio driver queues (src/virtio) work on it unchanged,
 * and `iova(va, len)` translates a buffer once (-1 when it straddles two
 * pages that are not physically adjacent). Pages that are adjacent both
 * virtually and physically are merged into one window.
 */
import { GuestMemory, WINDOW_SIZE, type GuestRegion } from './guest-memory.js';
import { HUGE_PAGE_SIZE, type SharedRegion } from './region.js';
import { PAGEMAP_PAGE } from '../sys/pagemap.js';

/** Where physical addresses come from (a Pagemap, or a table in tests). */
export interface PhysSource {
  physOf(va: number): number;
}

export class IovaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IovaError';
  }
}

/** What IovaMap needs of a mapping: SharedRegion fits. */
export type MappedArea = Pick<SharedRegion, 'addr' | 'size' | 'views'>;

export class IovaMap {
  /** gpa = IOVA (physical address), uaddr = our virtual address. */
  readonly mem: GuestMemory;
  readonly pageSize: number;

  private constructor(mem: GuestMemory, pageSize: number) {
    this.mem = mem;
    this.pageSize = pageSize;
  }

  /**
   * Translate `areas` page by page. `pageSize` is the size of the pages
   * backing them (2 MiB hugepages by default): each page must be physically
   * contiguous, which is checked on its first and last 4 KiB (so memory that
   * is not really hugepage-backed is refused, not silently mistranslated).
   */
  static build(areas: readonly MappedArea[], src: PhysSource, pageSize = HUGE_PAGE_SIZE): IovaMap {
    if (!Number.isInteger(pageSize) || pageSize < PAGEMAP_PAGE || (pageSize & (pageSize - 1)) !== 0) {
      throw new IovaError(`page size ${pageSize} must be a power of two >= 4096`);
    }
    const regions: GuestRegion[] = [];
    for (const a of areas) {
      if (a.addr % pageSize !== 0 || a.size % pageSize !== 0) {
        throw new IovaError(`area 0x${a.addr.toString(16)}+${a.size} is not made of whole ${pageSize}-byte pages`);
      }
      let runVa = -1;
      let runPhys = -1;
      let runLen = 0;
      const flush = (): void => {
        if (runLen === 0) return;
        const off = runVa - a.addr;
        const w = Math.floor(off / WINDOW_SIZE);
        const view = a.views[w].subarray(off - w * WINDOW_SIZE, off - w * WINDOW_SIZE + runLen);
        regions.push({ gpa: runPhys, size: runLen, uaddr: runVa, views: [view] });
        runLen = 0;
      };
      for (let off = 0; off < a.size; off += pageSize) {
        const va = a.addr + off;
        const phys = src.physOf(va);
        if (pageSize > PAGEMAP_PAGE) {
          const last = src.physOf(va + pageSize - PAGEMAP_PAGE);
          if (last !== phys + pageSize - PAGEMAP_PAGE) {
            throw new IovaError(
              `memory at 0x${va.toString(16)} is not physically contiguous over ${pageSize >> 10} KiB: not backed by hugepages`,
            );
          }
        }
        // a run continues while both sides are adjacent and it stays inside one view window
        if (runLen > 0 && phys === runPhys + runLen && off % WINDOW_SIZE !== 0 && runLen + pageSize <= WINDOW_SIZE) {
          runLen += pageSize;
          continue;
        }
        flush();
        runVa = va;
        runPhys = phys;
        runLen = pageSize;
      }
      flush();
    }
    if (regions.length === 0) throw new IovaError('no memory to translate');
    return new IovaMap(new GuestMemory(regions), pageSize);
  }

  /** IOVA of [va, va+len) when it is one physically contiguous range of ours, else -1. */
  iova(va: number, len: number): number {
    return this.mem.uaddrToGpa(va, len);
  }
}
