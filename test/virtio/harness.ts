/**
 * Test harness for the virtio layer: guest memory made of regions that are
 * subarrays of one bigger buffer, with guard bytes around every region that
 * must stay untouched.
 */

import { GuestMemory, type GuestRegion } from '../../src/mem/guest-memory.js';

export const GUARD_BYTE = 0x5a;
const GUARD = 4096;

export interface RegionSpec {
  gpa: number;
  size: number;
}

export interface GuardedMemory {
  mem: GuestMemory;
  big: Uint8Array;
  /** Offset of each region in `big`. */
  offs: number[];
  specs: RegionSpec[];
  /** True if every guard byte still holds GUARD_BYTE. */
  guardsIntact(): boolean;
  /** Host view of guest bytes (test side, unchecked). */
  view(gpa: number, len: number): Uint8Array;
  dv: DataView;
  /** Offset in `big` of a gpa. */
  bigOff(gpa: number): number;
}

export function makeGuardedMemory(specs: RegionSpec[], guard = GUARD): GuardedMemory {
  let total = guard;
  const offs: number[] = [];
  for (const s of specs) {
    offs.push(total);
    total += s.size + guard;
  }
  const big = new Uint8Array(total);
  big.fill(GUARD_BYTE);
  const regions: GuestRegion[] = specs.map((s, i) => {
    big.fill(0, offs[i], offs[i] + s.size);
    return { gpa: s.gpa, size: s.size, uaddr: 0x7f0000000000 + s.gpa, views: [big.subarray(offs[i], offs[i] + s.size)] };
  });
  const mem = new GuestMemory(regions);
  const guardRanges: [number, number][] = [];
  let prev = 0;
  for (let i = 0; i < specs.length; i++) {
    guardRanges.push([prev, offs[i]]);
    prev = offs[i] + specs[i].size;
  }
  guardRanges.push([prev, total]);
  const refGuard = Buffer.alloc(guard * 2, GUARD_BYTE);
  const bigOff = (gpa: number): number => {
    for (let i = 0; i < specs.length; i++) {
      if (gpa >= specs[i].gpa && gpa < specs[i].gpa + specs[i].size) return offs[i] + (gpa - specs[i].gpa);
    }
    throw new Error(`gpa 0x${gpa.toString(16)} not in test memory`);
  };
  return {
    mem,
    big,
    offs,
    specs,
    guardsIntact(): boolean {
      for (const [a, b] of guardRanges) {
        const got = Buffer.from(big.buffer, big.byteOffset + a, b - a);
        if (!got.equals(refGuard.subarray(0, b - a))) return false;
      }
      return true;
    },
    view(gpa: number, len: number): Uint8Array {
      const o = bigOff(gpa);
      return big.subarray(o, o + len);
    },
    dv: new DataView(big.buffer, big.byteOffset, big.byteLength),
    bigOff,
  };
}

/** Deterministic frame content for packet `idx` of stream `seed`. */
export function fillFrame(dst: Uint8Array, off: number, len: number, seed: number, idx: number): void {
  let x = (seed * 0x9e3779b1 + idx * 0x85ebca6b + 1) >>> 0;
  for (let j = 0; j < len; j++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    dst[off + j] = x & 0xff;
  }
}

/** Does dst[off..off+len) hold the content fillFrame would write? Returns the first bad index or -1. */
export function checkFrame(src: Uint8Array, off: number, len: number, seed: number, idx: number): number {
  let x = (seed * 0x9e3779b1 + idx * 0x85ebca6b + 1) >>> 0;
  for (let j = 0; j < len; j++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (src[off + j] !== (x & 0xff)) return j;
  }
  return -1;
}

/** Small fast PRNG (xorshift32) for the fuzzer. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x1234567;
  }
  u32(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.s = x;
    return x;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n);
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
}
