/**
 * Lock-free rings of u32 handles over shared memory (DPDK rte_ring style).
 *
 * The ring lives in any Uint8Array whose buffer is a SharedArrayBuffer or a
 * koffi view of a MAP_SHARED mapping (memfd): only Atomics.load/store/
 * compareExchange are used on the indices, never Atomics.wait.
 *
 * Layout at `offset` (offset must be 4-aligned; 64-aligned is best):
 *
 *   line 0  [0..64)    magic, size, flags, capacity
 *   line 1  [64..128)  producer head   (CAS target of multi-producers)
 *   line 2  [128..192) producer tail   (published entries; read by consumers)
 *   line 3  [192..256) consumer head   (CAS target of multi-consumers)
 *   line 4  [256..320) consumer tail   (freed slots; read by producers)
 *   [320..320+4*size)  slots (u32 handles)
 *
 * Head and tail indices are free-running u32 counters (stored as i32 and
 * compared with wrap-around arithmetic), so the full `size` slots are usable.
 *
 * Enqueue (multi-producer): CAS the producer head forward to reserve slots,
 * write them, wait until earlier reservations have been published (producer
 * tail == our old head), then store the new tail. Single-producer mode skips
 * the CAS and the wait. Dequeue is symmetric. A Ring object keeps per-instance
 * caches of the other side's tail in single modes, so each instance must be
 * used by one thread at a time (attach a separate instance per thread).
 */
import { schedYield } from '../sys/libc.js';

export type RingMode = 'spsc' | 'mpmc' | 'mpsc' | 'spmc';

export class RingError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'RingError';
  }
}

const MAGIC = 0x474e4952; // 'RING' little-endian
const HEADER_BYTES = 320;
/** Largest ring: 2^28 slots (1 GiB of slots). */
export const RING_MAX_SIZE = 1 << 28;

// i32 word indices within the header
const W_MAGIC = 0;
const W_SIZE = 1;
const W_FLAGS = 2;
const W_CAP = 3;
const W_PROD_HEAD = 16;
const W_PROD_TAIL = 32;
const W_CONS_HEAD = 48;
const W_CONS_TAIL = 64;

const F_MP = 1;
const F_MC = 2;

/** Spins on another thread's pending publication before yielding the CPU. */
const SPINS_BEFORE_YIELD = 128;
/** Inconsistent index snapshots tolerated before an operation gives up (returns 0). */
const MAX_STALE_RETRIES = 1 << 16;

function modeFlags(mode: RingMode): number {
  switch (mode) {
    case 'spsc':
      return 0;
    case 'mpmc':
      return F_MP | F_MC;
    case 'mpsc':
      return F_MP;
    case 'spmc':
      return F_MC;
    default:
      throw new RingError(`unknown ring mode ${String(mode)}`);
  }
}

function flagsMode(f: number): RingMode {
  return (['spsc', 'mpsc', 'spmc', 'mpmc'] as const)[f & 3];
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Smallest power of two >= n (n >= 1). */
export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

type HandleArray = Int32Array | Uint32Array;

export class Ring {
  /** Number of slots (power of two). */
  readonly size: number;
  /** Usable entries (= size). */
  readonly capacity: number;
  readonly mask: number;
  readonly mode: RingMode;
  /** The bytes the ring lives in (post a SAB-backed one to a worker, then Ring.attach). */
  readonly bytes: Uint8Array;
  readonly offset: number;
  private readonly h: Int32Array;
  private readonly slots: Int32Array;
  private readonly mp: boolean;
  private readonly mc: boolean;
  /** Single-producer: last seen consumer tail. */
  private consTailCache: number;
  /** Single-consumer: last seen producer tail. */
  private prodTailCache: number;
  private readonly one = new Int32Array(1);
  /** First slot index reserved by the last claim() (multi-producer/consumer). */
  private claimed = 0;

  private constructor(bytes: Uint8Array, offset: number) {
    if (!Number.isInteger(offset) || offset < 0 || (bytes.byteOffset + offset) % 4 !== 0) {
      throw new RingError(`ring offset ${offset} must be a non-negative multiple of 4`);
    }
    if (offset + HEADER_BYTES > bytes.length) throw new RingError('ring header beyond the end of the bytes');
    const h = new Int32Array(bytes.buffer, bytes.byteOffset + offset, HEADER_BYTES / 4);
    if (Atomics.load(h, W_MAGIC) !== MAGIC) throw new RingError(`no ring at offset ${offset} (bad magic)`);
    const size = h[W_SIZE];
    const flags = h[W_FLAGS];
    if (!isPow2(size) || size > RING_MAX_SIZE || h[W_CAP] !== size || (flags & ~3) !== 0) {
      throw new RingError(`corrupt ring header at offset ${offset} (size ${size}, flags ${flags})`);
    }
    if (offset + Ring.bytesNeeded(size) > bytes.length) throw new RingError(`ring of ${size} slots does not fit in the bytes`);
    this.bytes = bytes;
    this.offset = offset;
    this.h = h;
    this.size = size;
    this.capacity = size;
    this.mask = size - 1;
    this.mp = (flags & F_MP) !== 0;
    this.mc = (flags & F_MC) !== 0;
    this.mode = flagsMode(flags);
    this.slots = new Int32Array(bytes.buffer, bytes.byteOffset + offset + HEADER_BYTES, size);
    this.consTailCache = Atomics.load(h, W_CONS_TAIL);
    this.prodTailCache = Atomics.load(h, W_PROD_TAIL);
  }

  /** Bytes a ring of `size` slots occupies (header + slots), a multiple of 64. */
  static bytesNeeded(size: number): number {
    if (!isPow2(size) || size > RING_MAX_SIZE) throw new RingError(`ring size ${size} must be a power of two <= ${RING_MAX_SIZE}`);
    return HEADER_BYTES + Math.ceil((size * 4) / 64) * 64;
  }

  /**
   * Write a fresh, empty ring header at `offset` and open it. Nobody may be
   * using a ring at that place while this runs.
   */
  static init(bytes: Uint8Array, offset: number, size: number, mode: RingMode = 'spsc'): Ring {
    const need = Ring.bytesNeeded(size);
    const flags = modeFlags(mode);
    if (!Number.isInteger(offset) || offset < 0 || (bytes.byteOffset + offset) % 4 !== 0) {
      throw new RingError(`ring offset ${offset} must be a non-negative multiple of 4`);
    }
    if (offset + need > bytes.length) throw new RingError(`ring needs ${need} bytes at ${offset}, have ${bytes.length - offset}`);
    const h = new Int32Array(bytes.buffer, bytes.byteOffset + offset, HEADER_BYTES / 4);
    Atomics.store(h, W_MAGIC, 0);
    h.fill(0);
    h[W_SIZE] = size;
    h[W_FLAGS] = flags;
    h[W_CAP] = size;
    Atomics.store(h, W_MAGIC, MAGIC);
    return new Ring(bytes, offset);
  }

  /** Open a ring someone else initialised (validates the header). */
  static attach(bytes: Uint8Array, offset: number): Ring {
    return new Ring(bytes, offset);
  }

  /** A ring in its own new SharedArrayBuffer (post `ring.bytes` to a worker, then Ring.attach(bytes, 0)). */
  static create(size: number, mode: RingMode = 'spsc'): Ring {
    const bytes = new Uint8Array(new SharedArrayBuffer(Ring.bytesNeeded(size)));
    return Ring.init(bytes, 0, size, mode);
  }

  /** Entries currently in the ring (a snapshot). */
  count(): number {
    const c = (Atomics.load(this.h, W_PROD_TAIL) - Atomics.load(this.h, W_CONS_TAIL)) | 0;
    return c < 0 ? 0 : c > this.capacity ? this.capacity : c;
  }

  /** Free slots (a snapshot). */
  free(): number {
    return this.capacity - this.count();
  }

  /**
   * Enqueue up to n handles from src[start..start+n); returns how many were
   * enqueued (0..n). Never blocks except, in multi-producer mode, for the
   * short wait on earlier producers' publication.
   */
  enqueueBurst(src: HandleArray, n: number, start = 0): number {
    return this.mp ? this.mpEnqueue(src, n, start, false) : this.spEnqueue(src, n, start, false);
  }

  /** All-or-nothing enqueue: returns n or 0. */
  enqueueBulk(src: HandleArray, n: number, start = 0): number {
    return this.mp ? this.mpEnqueue(src, n, start, true) : this.spEnqueue(src, n, start, true);
  }

  /** Dequeue up to n handles into dst[start..); returns how many. */
  dequeueBurst(dst: HandleArray, n: number, start = 0): number {
    return this.mc ? this.mcDequeue(dst, n, start, false) : this.scDequeue(dst, n, start, false);
  }

  /** All-or-nothing dequeue: returns n or 0. */
  dequeueBulk(dst: HandleArray, n: number, start = 0): number {
    return this.mc ? this.mcDequeue(dst, n, start, true) : this.scDequeue(dst, n, start, true);
  }

  /** Enqueue one handle; false when full. */
  enqueueOne(v: number): boolean {
    this.one[0] = v;
    return this.enqueueBurst(this.one, 1) === 1;
  }

  /** Dequeue one handle (must be < 2^31), or -1 when empty. */
  dequeueOne(): number {
    return this.dequeueBurst(this.one, 1) === 1 ? this.one[0] : -1;
  }

  // --- producers ---

  private spEnqueue(src: HandleArray, n: number, start: number, fixed: boolean): number {
    if (n <= 0) return 0;
    const h = this.h;
    const cap = this.capacity;
    const head = h[W_PROD_TAIL]; // we are the only writer
    let used = (head - this.consTailCache) | 0;
    if (used < 0 || used > cap || cap - used < n) {
      this.consTailCache = Atomics.load(h, W_CONS_TAIL);
      used = (head - this.consTailCache) | 0;
      if (used < 0 || used > cap) return 0; // corrupt indices: refuse rather than overwrite
    }
    let k = cap - used;
    if (k >= n) k = n;
    else if (fixed) return 0;
    if (k === 0) return 0;
    this.copyIn(src, start, head, k);
    Atomics.store(h, W_PROD_TAIL, (head + k) | 0);
    return k;
  }

  private mpEnqueue(src: HandleArray, n: number, start: number, fixed: boolean): number {
    if (n <= 0) return 0;
    const k = this.claim(true, n, fixed);
    if (k === 0) return 0;
    const head = this.claimed;
    this.copyIn(src, start, head, k);
    this.publish(W_PROD_TAIL, head, k);
    return k;
  }

  private copyIn(src: HandleArray, start: number, head: number, k: number): void {
    const slots = this.slots;
    const idx = head & this.mask;
    const first = this.size - idx;
    if (k <= first) {
      for (let i = 0; i < k; i++) slots[idx + i] = src[start + i];
    } else {
      for (let i = 0; i < first; i++) slots[idx + i] = src[start + i];
      for (let i = first; i < k; i++) slots[i - first] = src[start + i];
    }
  }

  // --- consumers ---

  private scDequeue(dst: HandleArray, n: number, start: number, fixed: boolean): number {
    if (n <= 0) return 0;
    const h = this.h;
    const cap = this.capacity;
    const head = h[W_CONS_TAIL]; // we are the only writer
    let avail = (this.prodTailCache - head) | 0;
    if (avail < n || avail > cap) {
      this.prodTailCache = Atomics.load(h, W_PROD_TAIL);
      avail = (this.prodTailCache - head) | 0;
      if (avail < 0 || avail > cap) return 0;
    }
    let k = avail;
    if (k >= n) k = n;
    else if (fixed) return 0;
    if (k === 0) return 0;
    this.copyOut(dst, start, head, k);
    Atomics.store(h, W_CONS_TAIL, (head + k) | 0);
    return k;
  }

  private mcDequeue(dst: HandleArray, n: number, start: number, fixed: boolean): number {
    if (n <= 0) return 0;
    const k = this.claim(false, n, fixed);
    if (k === 0) return 0;
    const head = this.claimed;
    this.copyOut(dst, start, head, k);
    this.publish(W_CONS_TAIL, head, k);
    return k;
  }

  private copyOut(dst: HandleArray, start: number, head: number, k: number): void {
    const slots = this.slots;
    const idx = head & this.mask;
    const first = this.size - idx;
    if (k <= first) {
      for (let i = 0; i < k; i++) dst[start + i] = slots[idx + i];
    } else {
      for (let i = 0; i < first; i++) dst[start + i] = slots[idx + i];
      for (let i = first; i < k; i++) dst[start + i] = slots[i - first];
    }
  }

  // --- multi-producer / multi-consumer steps (shared by mpEnqueue and mcDequeue) ---

  /**
   * Reserve up to n slots by moving a head forward with CAS: producers claim
   * free slots (producer head, bounded by the consumer tail), consumers
   * claim filled ones (consumer head, bounded by the producer tail).
   * Returns how many (0: none, or fewer than n when fixed); the first one's
   * index is left in `claimed`.
   */
  private claim(prod: boolean, n: number, fixed: boolean): number {
    const h = this.h;
    const cap = this.capacity;
    const headW = prod ? W_PROD_HEAD : W_CONS_HEAD;
    const limitW = prod ? W_CONS_TAIL : W_PROD_TAIL;
    let retries = 0;
    for (;;) {
      const head = Atomics.load(h, headW);
      const limit = Atomics.load(h, limitW);
      // slots filled between consumer tail and producer head (prod) / consumer head and producer tail
      const filled = prod ? (head - limit) | 0 : (limit - head) | 0;
      if (filled < 0 || filled > cap) {
        // stale head read: retry with a fresh one (bounded, in case the shared indices are corrupt)
        if (++retries > MAX_STALE_RETRIES) return 0;
        continue;
      }
      let k = prod ? cap - filled : filled;
      if (k >= n) k = n;
      else if (fixed) return 0;
      if (k === 0) return 0;
      if (Atomics.compareExchange(h, headW, head, (head + k) | 0) === head) {
        this.claimed = head;
        return k;
      }
    }
  }

  /**
   * Publish the k slots claimed at head: wait until every earlier claim has
   * been published (tail word == head), then move the tail to head + k.
   */
  private publish(tailW: number, head: number, k: number): void {
    const h = this.h;
    let spins = 0;
    while (Atomics.load(h, tailW) !== head) {
      if (++spins === SPINS_BEFORE_YIELD) {
        spins = 0;
        schedYield();
      }
    }
    Atomics.store(h, tailW, (head + k) | 0);
  }
}
