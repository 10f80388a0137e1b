/**
 * The dirty-page log of live migration: one bit per 4 KiB page of guest
 * physical memory (bit p%8 of byte p/8 for page p = gpa / 4096), in memory
 * shared with the frontend (vhost-user SET_LOG_BASE with LOG_SHMFD). The
 * frontend (QEMU) clears the bits it has copied with atomic exchanges while
 * we set them, so every mark is an atomic OR (a locked instruction: it also
 * orders our earlier write of the page's data before the bit becomes
 * visible), never a plain read-modify-write and never skipped because the
 * bit looked set.
 *
 * Owned by whoever holds the view: release() before the mapping goes away.
 */

export const LOG_PAGE_SHIFT = 12;
export const LOG_PAGE_SIZE = 1 << LOG_PAGE_SHIFT;

const NO_BITS = new Uint8Array(0);

export class DirtyLog {
  private bits: Uint8Array;
  /** Pages marked (one count per page per mark call; repeats included). */
  marks = 0;
  /** Writes whose pages lie beyond the log (the frontend's log is too small for them). */
  outside = 0;

  /** `bits`: a view of the shared bitmap (its length in bytes covers length*8 pages). */
  constructor(bits: Uint8Array) {
    this.bits = bits;
  }

  /** Bytes of bitmap (0 after release). */
  get size(): number {
    return this.bits.length;
  }

  /** Mark the pages of guest range [gpa, gpa+len) dirty. Never throws. */
  mark(gpa: number, len: number): void {
    if (!(len > 0 && gpa >= 0)) return;
    const bits = this.bits;
    if (bits.length === 0) return;
    const first = Math.floor(gpa / LOG_PAGE_SIZE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    for (let p = first; p <= last; p++) {
      const i = Math.floor(p / 8);
      if (i >= bits.length) {
        this.outside++;
        return;
      }
      Atomics.or(bits, i, 1 << (p & 7));
      this.marks++;
    }
  }

  /** Is page `page` marked (tests, tools)? */
  isDirty(page: number): boolean {
    const i = Math.floor(page / 8);
    return i < this.bits.length && (this.bits[i] & (1 << (page & 7))) !== 0;
  }

  /** Drop the view (before the bitmap is unmapped); marks are ignored afterwards. */
  release(): void {
    this.bits = NO_BITS;
  }
}

/** Pages set in a bitmap (ascending): for tests and diagnostics. */
export function dirtyPages(bits: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    if (b === 0) continue;
    for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
  }
  return out;
}
