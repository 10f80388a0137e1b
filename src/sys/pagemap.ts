/**
 * Physical addresses of our own pages, from /proc/self/pagemap (one 64-bit
 * entry per 4 KiB virtual page: bit 63 present, bits 0-54 the page frame
 * number). The kernel shows frame numbers only to CAP_SYS_ADMIN (root);
 * others read 0. Control path only: a device driver translates its buffers
 * once, at setup (see src/mem/iova.ts).
 */
import * as fs from 'node:fs';

export const PAGEMAP_PAGE = 4096;
const PM_PRESENT = 1n << 63n;
const PM_PFN_MASK = (1n << 55n) - 1n;

export class PagemapError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PagemapError';
  }
}

/** Reads frame numbers of virtual pages of this process (or of `path`, e.g. for tests). */
export class Pagemap {
  private fd: number;
  private readonly buf = Buffer.alloc(8);

  constructor(path = '/proc/self/pagemap') {
    try {
      this.fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new PagemapError(`cannot open ${path}: ${(e as Error).message}`);
    }
  }

  /**
   * Physical address of virtual address `va` (which must be in a resident
   * page). Throws when the page is not present or the frame number is hidden
   * (not root).
   */
  physOf(va: number): number {
    if (!Number.isSafeInteger(va) || va < 0) throw new PagemapError(`bad virtual address ${va}`);
    const page = Math.floor(va / PAGEMAP_PAGE);
    const n = fs.readSync(this.fd, this.buf, 0, 8, page * 8);
    if (n !== 8) throw new PagemapError(`pagemap: short read for 0x${va.toString(16)}`);
    const e = this.buf.readBigUInt64LE(0);
    if ((e & PM_PRESENT) === 0n) throw new PagemapError(`page at 0x${va.toString(16)} is not resident (touch it first)`);
    const pfn = e & PM_PFN_MASK;
    if (pfn === 0n) {
      throw new PagemapError('pagemap hides physical frame numbers: run as root (CAP_SYS_ADMIN) to drive a device by DMA');
    }
    return Number(pfn) * PAGEMAP_PAGE + (va % PAGEMAP_PAGE);
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}
