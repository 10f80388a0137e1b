/**
 * Differential test of the device fast paths (split and packed): the ring kind's own
 * dequeueBurst/enqueueBurst (one-descriptor chains copied by words) against
 * the general DeviceQueue algorithm on an identical copy of guest memory.
 * Rings hold a mix of what the fast paths take (single descriptors, aligned
 * or not, in one region or straddling two) and what they must hand to the
 * general path (chains, indirect tables, wrong direction, bad addresses,
 * bad heads and indices). After every burst the results, the counters, the
 * ring positions and every byte of both memories must be equal.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F_RING_PACKED, F_VERSION_1, NET_F_MRG_RXBUF, RING_F_EVENT_IDX, RING_F_INDIRECT_DESC } from '../../src/virtio/features.js';
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, PDESC_F_AVAIL, PDESC_F_USED } from '../../src/virtio/layout.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { SplitDevice } from '../../src/virtio/split-device.js';
import { PackedDevice } from '../../src/virtio/packed-device.js';
import { makeGuardedMemory, Rng, type GuardedMemory } from './harness.js';

const A = 0x1000; // rings and indirect tables
const A_SIZE = 16 * 1024;
const B = 0x20000; // buffers
const B_SIZE = 32 * 1024;
const C = B + B_SIZE; // adjacent region: buffers may straddle B and C
const C_SIZE = 8 * 1024;
const SPECS = [
  { gpa: A, size: A_SIZE },
  { gpa: B, size: B_SIZE },
  { gpa: C, size: C_SIZE },
];
const ROUNDS = process.env.TSVS_LONG === '1' ? 400_000 : 40_000;

interface Pair {
  fast: SplitDevice;
  slow: SplitDevice;
}

function general<T extends DeviceQueue>(dev: T): T {
  // the base-class algorithms, bypassing the overrides: the burst entry points and the fast paths
  // they call (before 2026-12-03 only the entry points were replaced, and they call this.*Fast: the
  // test compared the fast paths with themselves)
  const d = dev as unknown as { dequeueBurst: unknown; enqueueBurst: unknown; dequeueFast: unknown; enqueueFast: unknown };
  const base = DeviceQueue.prototype as unknown as { dequeueFast: unknown; enqueueFast: unknown };
  d.dequeueBurst = DeviceQueue.prototype.dequeueBurst;
  d.enqueueBurst = DeviceQueue.prototype.enqueueBurst;
  d.dequeueFast = base.dequeueFast;
  d.enqueueFast = base.enqueueFast;
  return dev;
}

function bufAddr(r: Rng): number {
  switch (r.int(12)) {
    case 0:
      return B + B_SIZE - r.int(100); // straddles into C
    case 1:
      return C + C_SIZE - r.int(100); // runs off the end
    case 2:
      return r.u32(); // mostly unmapped
    case 3:
      return 0x1fffff * 0x100000000 + r.int(4096); // high, unmapped
    case 4:
      return B + 1 + r.int(B_SIZE - 4096); // unaligned
    default:
      return B + 4 * r.int((B_SIZE - 4096) / 4);
  }
}

function bufLen(r: Rng, write: boolean): number {
  switch (r.int(10)) {
    case 0:
      return r.int(14); // at most a header
    case 1:
      return r.pick([0xffffffff, 0x80000000, 20000]);
    case 2:
      return 12 + r.int(200);
    default:
      return write ? 64 + r.int(1600) : 13 + r.int(1600);
  }
}

/** Private part of one copy in these tests (the switch uses ONE_COPY_PRIVATE). */
const PRIV = 64;

/** Caller and result arrays for one burst on each of the two devices. */
class BurstArrays {
  // one copy: tails (rx: as the fast device describes them; tx: another "guest" holding them)
  readonly tWin: (Uint8Array | null)[] = new Array<Uint8Array | null>(32).fill(null);
  readonly tW32: (Int32Array | null)[] = new Array<Int32Array | null>(32).fill(null);
  readonly tOff = new Int32Array(32);
  readonly tLen = new Int32Array(32);
  readonly other = new Uint8Array(32 * 2048 + 8);
  readonly other32 = new Int32Array(this.other.buffer);
  readonly src1 = new Uint8Array(32 * 2048 + 8);
  readonly dst1 = new Uint8Array(32 * 2048);
  readonly dst2 = new Uint8Array(32 * 2048);
  readonly src = new Uint8Array(32 * 2048 + 8);
  readonly offs = new Int32Array(32);
  readonly lens1 = new Int32Array(32);
  readonly lens2 = new Int32Array(32);
  readonly inLens = new Int32Array(32);
}

/**
 * One random burst of n frames (guest RX if `write`, else guest TX) on the
 * fast and the general device, and everything they must agree on: the
 * result, frame lengths and bytes, counters, broken state, ring positions,
 * interrupts, every byte of both memories, the guard bytes. Returns the
 * frames the fast device moved.
 */
function burstBoth(r: Rng, round: number, fast: DeviceQueue, slow: DeviceQueue, write: boolean, n: number, b: BurstArrays, g1: GuardedMemory, g2: GuardedMemory): number {
  const { dst1, dst2, src, offs, lens1, lens2, inLens } = b;
  let moved: number;
  // one copy: the fast device takes tails (deferred release on TX, frames from two places on RX)
  const oneCopy = r.chance(0.5);
  const { tWin, tW32, tOff, tLen } = b;
  if (write) {
    for (let i = 0; i < n; i++) {
      offs[i] = r.chance(0.9) ? 2048 * i : 2048 * i + 1 + r.int(3);
      inLens[i] = r.chance(0.97) ? 14 + r.int(1600) : r.pick([-1, 0, 5000, 40000]);
      for (let k = 0; k < 64; k++) src[offs[i] + k] = r.int(256);
    }
    const before = fast.stats.pkts;
    let a: number;
    if (oneCopy) {
      // frame i: its first PRIV bytes in src1, the rest (a tail) in `other` (another guest), src1 garbage there
      b.src1.set(src.subarray(0, 2048 * n + 8));
      tLen.fill(0);
      // a 5000/40000-byte frame reads the next frames' bytes too: no tails in such a burst (src1 differs there)
      let overlap = false;
      for (let i = 0; i < n; i++) if (inLens[i] > 2040) overlap = true;
      for (let i = 0; i < n && !overlap; i++) {
        const l = inLens[i];
        if (l > PRIV && r.chance(0.9)) {
          const to = 2048 * i + (r.chance(0.9) ? 0 : 1 + r.int(3));
          b.other.set(src.subarray(offs[i] + PRIV, offs[i] + l), to);
          b.src1.fill(0xaa, offs[i] + PRIV, offs[i] + l);
          tWin[i] = b.other;
          tW32[i] = r.chance(0.9) ? b.other32 : null;
          tOff[i] = to;
          tLen[i] = l - PRIV;
        }
      }
      a = fast.enqueueBurstTails(overlap ? src : b.src1, offs, inLens, PRIV, tWin, tW32, tOff, tLen, n);
    } else {
      a = fast.enqueueBurst(src, offs, inLens, n);
    }
    const c: number = slow.enqueueBurst(src, offs, inLens, n);
    assert.equal(a, c, `round ${round}: enqueue consumed ${JSON.stringify(fast.stats)} ${JSON.stringify(slow.stats)}`);
    moved = fast.stats.pkts - before;
  } else {
    for (let i = 0; i < n; i++) offs[i] = r.chance(0.95) ? 2048 * i : 2048 * i + 1 + r.int(3);
    const cap = r.chance(0.95) ? 2048 : 100;
    let a: number;
    if (oneCopy) {
      a = fast.dequeueBurstDeferred(dst1, offs, cap, lens1, PRIV, tWin, tW32, tOff, tLen, n);
      // the tails are still in guest memory (the chains not yet returned): copy them in, then release
      for (let i = 0; i < a; i++) {
        if (tLen[i] === 0) continue;
        assert.equal(tLen[i], lens1[i] - PRIV, `round ${round}: tail ${i} is the frame past the private part`);
        dst1.set(tWin[i]!.subarray(tOff[i], tOff[i] + tLen[i]), offs[i] + PRIV);
      }
      fast.releaseDeferred();
    } else {
      a = fast.dequeueBurst(dst1, offs, cap, lens1, n);
    }
    const c: number = slow.dequeueBurst(dst2, offs, cap, lens2, n);
    assert.equal(a, c, `round ${round}: dequeue delivered ${JSON.stringify(fast.stats)} ${JSON.stringify(slow.stats)}`);
    for (let i = 0; i < a; i++) {
      assert.equal(lens1[i], lens2[i], `round ${round}: frame ${i} length`);
      assert.ok(Buffer.from(dst1.buffer, offs[i], lens1[i]).equals(Buffer.from(dst2.buffer, offs[i], lens2[i])), `round ${round}: frame ${i} bytes`);
    }
    moved = a;
  }
  assert.deepEqual(fast.stats, slow.stats, `round ${round}: counters`);
  assert.equal(fast.broken, slow.broken, `round ${round}: broken`);
  assert.equal(fast.lastAvailIdx, slow.lastAvailIdx, `round ${round}: last avail`);
  assert.equal(fast.lastUsedIdx, slow.lastUsedIdx, `round ${round}: last used`);
  assert.equal(fast.needsInterrupt(), slow.needsInterrupt(), `round ${round}: interrupt`);
  assert.ok(Buffer.from(g1.big.buffer).equals(Buffer.from(g2.big.buffer)), `round ${round}: guest memory differs (write ${write}, one copy ${oneCopy})`);
  assert.ok(g1.guardsIntact(), `round ${round}: guard bytes`);
  return moved;
}

test(`split fast paths equal the general path (${ROUNDS} bursts)`, () => {
  // the RX touch writes zeros into buffers a burst may not fill (allowed; tested on its own below)
  SplitDevice.rxTouch = false;
  try {
  const r = new Rng(Number(process.env.TSVS_FUZZ_SEED ?? 0xfa57));
  const g1 = makeGuardedMemory(SPECS);
  const g2 = makeGuardedMemory(SPECS);
  const b = new BurstArrays();
  const { dst1, dst2, src, offs, lens1, lens2, inLens } = b;
  let pair: Pair | null = null;
  let ring = { desc: 0, avail: 0, used: 0, size: 0, write: false, idx: 0 };
  let fastTaken = 0;
  let episodes = 0;
  const w = (g: GuardedMemory, gpa: number, bytes: number, v: number): void => {
    const o = g.bigOff(gpa);
    if (bytes === 2) g.dv.setUint16(o, v & 0xffff, true);
    else if (bytes === 4) g.dv.setUint32(o, v >>> 0, true);
    else {
      g.dv.setUint32(o, v % 0x100000000, true);
      g.dv.setUint32(o + 4, Math.floor(v / 0x100000000) >>> 0, true);
    }
  };
  for (let round = 0; round < ROUNDS; round++) {
    if (pair === null || r.chance(0.02)) {
      const size = 1 << (1 + r.int(6));
      let features = F_VERSION_1;
      if (r.chance(0.5)) features |= NET_F_MRG_RXBUF;
      if (r.chance(0.5)) features |= RING_F_INDIRECT_DESC;
      if (r.chance(0.3)) features |= RING_F_EVENT_IDX;
      if (r.chance(0.1)) features &= ~F_VERSION_1; // legacy 10-byte header: general path only
      const desc = A;
      const avail = A + 16 * size;
      const used = Math.ceil((avail + 6 + 2 * size + 2) / 4) * 4;
      g1.big.fill(0, g1.offs[0], g1.offs[0] + A_SIZE);
      const idx = r.int(0x10000);
      w(g1, avail + 2, 2, idx);
      g2.big.set(g1.big);
      const cfg = { size, descAddr: desc, availAddr: avail, usedAddr: used, features, lastAvailIdx: idx };
      pair = { fast: new SplitDevice(g1.mem, cfg), slow: general(new SplitDevice(g2.mem, cfg)) };
      ring = { desc, avail, used, size, write: r.chance(0.5), idx };
      episodes++;
    }
    const fast: SplitDevice = pair.fast;
    const slow: SplitDevice = pair.slow;
    if (r.chance(0.05)) ring.write = !ring.write;
    // post some chains (mostly single descriptors, the fast path's case)
    // a driver only moves avail idx forward (the general path caches it across bursts), and never
    // more than the queue size past the device (else both sides break the queue the same way)
    const last = ring.idx;
    const nch = r.int(ring.size - ((last - fast.lastAvailIdx) & 0xffff) + 1);
    for (let c = 0; c < nch; c++) {
      const head = r.int(ring.size);
      const o = ring.desc + 16 * head;
      const dirOk = r.chance(0.95);
      const dirFlag = (ring.write === dirOk) ? DESC_F_WRITE : 0;
      const kind = r.int(10);
      if (kind < 7) {
        w(g1, o, 8, bufAddr(r));
        w(g1, o + 8, 4, bufLen(r, ring.write));
        w(g1, o + 12, 2, dirFlag);
      } else if (kind < 9) {
        // two descriptors: header, then data
        const nxt = (head + 1) % ring.size;
        w(g1, o, 8, B + 4 * r.int(1000));
        w(g1, o + 8, 4, r.pick([10, 12, 0, 20]));
        w(g1, o + 12, 2, dirFlag | DESC_F_NEXT);
        w(g1, o + 14, 2, nxt);
        const o2 = ring.desc + 16 * nxt;
        w(g1, o2, 8, bufAddr(r));
        w(g1, o2 + 8, 4, bufLen(r, ring.write));
        w(g1, o2 + 12, 2, dirFlag);
      } else {
        const t = A + 12 * 1024 + 16 * r.int(64);
        w(g1, t, 8, bufAddr(r));
        w(g1, t + 8, 4, bufLen(r, ring.write));
        w(g1, t + 12, 2, dirFlag);
        w(g1, o, 8, t);
        w(g1, o + 8, 4, 16);
        w(g1, o + 12, 2, DESC_F_INDIRECT);
      }
      w(g1, ring.avail + 4 + 2 * ((last + c) & (ring.size - 1)), 2, r.chance(0.995) ? head : ring.size + r.int(100));
    }
    let newIdx = (last + nch) & 0xffff;
    // a jump past the size breaks the queue; the general path notices when it next reads the
    // index, the fast path at once: then only safety is compared, and the episode ends
    const jump = r.chance(0.005);
    if (jump) newIdx = (fast.lastAvailIdx + ring.size + 1 + r.int(1000)) & 0xffff;
    w(g1, ring.avail + 2, 2, newIdx);
    ring.idx = newIdx;
    // mirror the driver's writes into the second memory
    g2.big.set(g1.big.subarray(g1.offs[0], g1.offs[0] + A_SIZE), g2.offs[0]);
    const n = 1 + r.int(32);
    if (jump) {
      if (ring.write) {
        fast.enqueueBurst(src, offs, inLens, n);
        slow.enqueueBurst(src, offs, inLens, n);
      } else {
        fast.dequeueBurst(dst1, offs, 2048, lens1, n);
        slow.dequeueBurst(dst2, offs, 2048, lens2, n);
      }
      assert.ok(fast.broken, `round ${round}: a jump breaks the queue`);
      assert.ok(g1.guardsIntact() && g2.guardsIntact(), `round ${round}: guard bytes`);
      pair = null;
      continue;
    }
    fastTaken += burstBoth(r, round, fast, slow, ring.write, n, b, g1, g2);
    if (fast.broken) pair = null;
  }
  assert.ok(episodes > 10, 'several ring configurations');
  assert.ok(fastTaken > ROUNDS, `the bursts moved frames (${fastTaken})`);
  } finally {
    SplitDevice.rxTouch = true;
  }
});

test(`packed fast paths equal the general path (${ROUNDS} bursts)`, () => {
  const r = new Rng(Number(process.env.TSVS_FUZZ_SEED ?? 0xbac4ed));
  const g1 = makeGuardedMemory(SPECS);
  const g2 = makeGuardedMemory(SPECS);
  const b = new BurstArrays();
  const w = (gpa: number, bytes: number, v: number): void => {
    const o = g1.bigOff(gpa);
    if (bytes === 2) g1.dv.setUint16(o, v & 0xffff, true);
    else if (bytes === 4) g1.dv.setUint32(o, v >>> 0, true);
    else {
      g1.dv.setUint32(o, v % 0x100000000, true);
      g1.dv.setUint32(o + 4, Math.floor(v / 0x100000000) >>> 0, true);
    }
  };
  let fast: PackedDevice | null = null;
  let slow: PackedDevice | null = null;
  let size = 0;
  let write = false;
  // the driver's next slot and wrap counter
  let drvPos = 0;
  let drvWrap = 1;
  let episodes = 0;
  let moved = 0;
  for (let round = 0; round < ROUNDS; round++) {
    if (fast === null || slow === null || r.chance(0.02)) {
      size = 1 + r.int(64);
      let features = F_VERSION_1 | F_RING_PACKED;
      if (r.chance(0.5)) features |= NET_F_MRG_RXBUF;
      if (r.chance(0.5)) features |= RING_F_INDIRECT_DESC;
      if (r.chance(0.3)) features |= RING_F_EVENT_IDX;
      g1.big.fill(0, g1.offs[0], g1.offs[0] + A_SIZE);
      g2.big.set(g1.big);
      drvPos = r.int(size);
      drvWrap = r.int(2);
      const cfg = { size, descAddr: A, availAddr: A + 16 * size, usedAddr: A + 16 * size + 4, features, lastAvailIdx: drvPos | (drvWrap << 15) };
      fast = new PackedDevice(g1.mem, cfg);
      slow = general(new PackedDevice(g2.mem, cfg) as unknown as SplitDevice) as unknown as PackedDevice;
      write = r.chance(0.5);
      episodes++;
    }
    if (r.chance(0.05)) write = !write;
    // slots the device has not consumed yet belong to it
    const devIdx = fast.lastAvailIdx;
    const outstanding = ((drvPos + drvWrap * size) - ((devIdx & 0x7fff) + (devIdx >>> 15) * size) + 2 * size) % (2 * size);
    let free = size - outstanding;
    const nch = r.int(8);
    for (let c = 0; c < nch && free > 0; c++) {
      const dirOk = r.chance(0.95);
      const dirFlag = (write === dirOk) ? DESC_F_WRITE : 0;
      const kind = r.int(10);
      const k = kind >= 7 && kind < 9 && free >= 2 ? 2 : 1;
      const head = drvPos;
      for (let j = 0; j < k; j++) {
        const o = A + 16 * drvPos;
        let fl = dirFlag | (j < k - 1 ? DESC_F_NEXT : 0) | (drvWrap ? PDESC_F_AVAIL : PDESC_F_USED);
        if (kind === 9) {
          const t = A + 12 * 1024 + 16 * r.int(64);
          w(t, 8, bufAddr(r));
          w(t + 8, 4, bufLen(r, write));
          w(t + 12, 2, 0);
          w(t + 14, 2, dirFlag);
          w(o, 8, t);
          w(o + 8, 4, 16);
          fl = DESC_F_INDIRECT | (drvWrap ? PDESC_F_AVAIL : PDESC_F_USED);
        } else if (k === 2 && j === 0) {
          w(o, 8, B + 4 * r.int(1000));
          w(o + 8, 4, r.pick([10, 12, 0, 20]));
        } else {
          w(o, 8, bufAddr(r));
          w(o + 8, 4, bufLen(r, write));
        }
        if (r.chance(0.01)) fl ^= 1 << r.int(16); // damage: any flag bit, availability included
        w(o + 12, 2, head);
        w(o + 14, 2, fl);
        if (++drvPos === size) {
          drvPos = 0;
          drvWrap ^= 1;
        }
        free--;
      }
    }
    g2.big.set(g1.big.subarray(g1.offs[0], g1.offs[0] + A_SIZE), g2.offs[0]);
    const n = 1 + r.int(32);
    const m = burstBoth(r, round, fast, slow, write, n, b, g1, g2);
    if (!write) moved += m;
    if (fast.broken) fast = null;
    else if (fast.lastUsedIdx !== fast.lastAvailIdx) fast = null; // (never between bursts) start over
  }
  assert.ok(episodes > 10, 'several ring configurations');
  assert.ok(moved > ROUNDS / 4, `the bursts moved frames (${moved})`);
});

test('a guest changing a descriptor length while the device reads it cannot push a write past guest memory', () => {
  // found in review: the RX fast path checked the length and then re-read it for the window check
  const flipping = (arr: Uint32Array, idx: number, first: number, later: number): Uint32Array => {
    let reads = 0;
    return new Proxy(arr, {
      get(t, p) {
        if (p === String(idx)) return ++reads === 1 ? first : later;
        const v = Reflect.get(t, p, t) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
  };
  const src = new Uint8Array(4096).fill(0x33);
  for (const packed of [false, true]) {
    const g = makeGuardedMemory(SPECS);
    const features = F_VERSION_1 | (packed ? F_RING_PACKED : 0n);
    const addr = C + C_SIZE - 64; // 64 bytes before the end of guest memory
    const w32 = (gpa: number, v: number): void => g.dv.setUint32(g.bigOff(gpa), v, true);
    const w16 = (gpa: number, v: number): void => g.dv.setUint16(g.bigOff(gpa), v, true);
    w32(A, addr);
    w32(A + 4, 0);
    w32(A + 8, 64);
    let dev: SplitDevice | PackedDevice;
    if (packed) {
      w16(A + 12, 0);
      w16(A + 14, DESC_F_WRITE | PDESC_F_AVAIL);
      dev = new PackedDevice(g.mem, { size: 8, descAddr: A, availAddr: A + 128, usedAddr: A + 132, features });
    } else {
      w16(A + 12, DESC_F_WRITE);
      w16(A + 0x400 + 4, 0); // avail ring[0] = head 0
      w16(A + 0x400 + 2, 1); // avail idx 1
      dev = new SplitDevice(g.mem, { size: 8, descAddr: A, availAddr: A + 0x400, usedAddr: A + 0x800, features });
    }
    // the length word reads 4096 first, 64 afterwards
    (dev.ring as { desc32: Uint32Array }).desc32 = flipping(dev.ring.desc32, 2, 4096, 64);
    assert.doesNotThrow(() => dev.enqueueBurst(src, Int32Array.of(0), Int32Array.of(1500), 1), packed ? 'packed' : 'split');
    assert.ok(g.guardsIntact(), `${packed ? 'packed' : 'split'}: nothing written past guest memory`);
    assert.equal(dev.stats.pkts, 0, 'the frame did not fit the 64-byte buffer');
  }
});

test('availCount: split reads the index, packed counts available slots from its position (with wrap), both capped', () => {
  const g = makeGuardedMemory(SPECS);
  const size = 8;
  const w32 = (gpa: number, v: number): void => g.dv.setUint32(g.bigOff(gpa), v, true);
  const w16 = (gpa: number, v: number): void => g.dv.setUint16(g.bigOff(gpa), v, true);
  // packed, starting at slot 6 with wrap counter 1: slots 6, 7 then 0, 1, 2 (wrap 0) made available
  const dev = new PackedDevice(g.mem, { size, descAddr: A, availAddr: A + 128, usedAddr: A + 132, features: F_VERSION_1 | F_RING_PACKED, lastAvailIdx: 6 | 0x8000 });
  const slots: [number, number][] = [[6, 1], [7, 1], [0, 0], [1, 0], [2, 0]];
  for (const [slot, wrap] of slots) {
    w32(A + 16 * slot, B + 2048 * slot);
    w32(A + 16 * slot + 4, 0);
    w32(A + 16 * slot + 8, 12 + 64);
    w16(A + 16 * slot + 12, slot);
    w16(A + 16 * slot + 14, wrap ? PDESC_F_AVAIL : PDESC_F_USED);
  }
  assert.equal(dev.availCount(), 5);
  assert.equal(dev.availCount(3), 3);
  const dst = new Uint8Array(4 * 2048);
  assert.equal(dev.dequeueBurst(dst, Int32Array.of(0, 2048), 2048, new Int32Array(2), 2), 2);
  assert.equal(dev.availCount(), 3, 'after the wrap');
  // split: the avail index says it, capped by max and by the size
  const sdev = new SplitDevice(g.mem, { size, descAddr: A + 0x1000, availAddr: A + 0x1400, usedAddr: A + 0x1800, features: F_VERSION_1 });
  w16(A + 0x1400 + 2, 5);
  assert.equal(sdev.availCount(), 5);
  assert.equal(sdev.availCount(2), 2);
});

test('split guest RX: the burst touch writes only inside the buffers the guest made available, and delivered frames are exact', () => {
  // the RX fast path stores into the next buffers before its copy loop (touchRx, to overlap the
  // reads-for-ownership); a frame that does not fit shifts later frames to other buffers
  const g = makeGuardedMemory(SPECS);
  g.view(B, B_SIZE).fill(0x77);
  const SLOT = 256;
  const BUF = 128;
  const QS = 16;
  const w32 = (gpa: number, v: number): void => g.dv.setUint32(g.bigOff(gpa), v, true);
  const w16 = (gpa: number, v: number): void => g.dv.setUint16(g.bigOff(gpa), v, true);
  for (let i = 0; i < QS; i++) {
    w32(A + 16 * i, B + i * SLOT);
    w32(A + 16 * i + 4, 0);
    w32(A + 16 * i + 8, BUF);
    w16(A + 16 * i + 12, DESC_F_WRITE);
    w16(A + 0x400 + 4 + 2 * i, i);
  }
  w16(A + 0x400 + 2, QS);
  const dev = new SplitDevice(g.mem, { size: QS, descAddr: A, availAddr: A + 0x400, usedAddr: A + 0x800, features: F_VERSION_1 });
  const src = new Uint8Array(8192);
  for (let i = 0; i < src.length; i++) src[i] = (i * 7 + 3) & 0xff;
  const offs = Int32Array.from({ length: 10 }, (_, i) => 512 * i);
  const lens = Int32Array.of(64, 64, 64, 64, 200, 64, 64, 64, 64, 100);
  // burst 1 (two frames: selects the fast window), burst 2 (eight frames, the 200-byte one does not fit)
  assert.equal(dev.enqueueBurst(src, offs, lens, 2), 2);
  assert.equal(dev.enqueueBurst(src, offs.subarray(2), lens.subarray(2), 8), 8);
  assert.equal(dev.stats.tooBig, 1);
  assert.equal(dev.stats.pkts, 9);
  const delivered = [0, 1, 2, 3, 5, 6, 7, 8, 9];
  assert.equal(g.dv.getUint16(g.bigOff(A + 0x800 + 2), true), delivered.length, 'used index');
  for (let u = 0; u < delivered.length; u++) {
    const f = delivered[u];
    const id = g.dv.getUint32(g.bigOff(A + 0x800 + 4 + 8 * u), true);
    const len = g.dv.getUint32(g.bigOff(A + 0x800 + 8 + 8 * u), true);
    assert.equal(id, u, `used[${u}] names buffer ${u}`);
    assert.equal(len, 12 + lens[f], `used[${u}] length`);
    const got = g.view(B + id * SLOT, len);
    assert.deepEqual([...got.subarray(0, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], `header of frame ${f}`);
    assert.deepEqual(got.subarray(12), src.subarray(offs[f], offs[f] + lens[f]), `bytes of frame ${f}`);
  }
  for (let i = 0; i < QS; i++) {
    const gap = g.view(B + i * SLOT + BUF, SLOT - BUF);
    assert.ok(gap.every((b) => b === 0x77), `nothing written past buffer ${i}`);
  }
  assert.ok(g.view(B + QS * SLOT, B_SIZE - QS * SLOT).every((b) => b === 0x77), 'nothing written past the buffers');
  assert.ok(g.guardsIntact());
});

test('split guest RX: the burst touch leaves read-only buffers and indirect tables alone', () => {
  // found in review: the touch wrote into every available descriptor's buffer, read-only ones and
  // indirect tables (whose first entry then sent a frame to a wrong address) included
  const g = makeGuardedMemory(SPECS);
  g.view(B, B_SIZE).fill(0x77);
  const SLOT = 256;
  const QS = 16;
  const TABLE = A + 0x1000;
  const w32 = (gpa: number, v: number): void => g.dv.setUint32(g.bigOff(gpa), v, true);
  const w16 = (gpa: number, v: number): void => g.dv.setUint16(g.bigOff(gpa), v, true);
  for (let i = 0; i < QS; i++) {
    let flags = DESC_F_WRITE;
    let addr = B + i * SLOT;
    let len = 128;
    if (i === 3 || i === 6) flags = 0; // read-only: not for guest RX
    if (i === 5) {
      flags = DESC_F_INDIRECT; // a table of one writable descriptor
      addr = TABLE;
      len = 16;
    }
    w32(A + 16 * i, addr);
    w32(A + 16 * i + 4, 0);
    w32(A + 16 * i + 8, len);
    w16(A + 16 * i + 12, flags);
    w16(A + 0x400 + 4 + 2 * i, i);
  }
  w32(TABLE, B + 5 * SLOT);
  w32(TABLE + 4, 0);
  w32(TABLE + 8, 128);
  w16(TABLE + 12, DESC_F_WRITE);
  const table = g.view(TABLE, 16).slice();
  w16(A + 0x400 + 2, QS);
  const dev = new SplitDevice(g.mem, { size: QS, descAddr: A, availAddr: A + 0x400, usedAddr: A + 0x800, features: F_VERSION_1 | RING_F_INDIRECT_DESC });
  const src = new Uint8Array(8192).fill(0xab);
  const offs = Int32Array.from({ length: 10 }, (_, i) => 512 * i);
  const lens = new Int32Array(10).fill(64);
  assert.equal(SplitDevice.rxTouch, true);
  assert.equal(dev.enqueueBurst(src, offs, lens, 2), 2, 'two frames select the fast window');
  const ro3 = g.view(B + 3 * SLOT, SLOT).slice();
  const ro6 = g.view(B + 6 * SLOT, SLOT).slice();
  dev.enqueueBurst(src, offs.subarray(2), lens.subarray(2), 8);
  assert.deepEqual(g.view(TABLE, 16), table, 'the indirect table is unchanged');
  assert.deepEqual(g.view(B + 3 * SLOT, SLOT), ro3, 'read-only buffer 3 is unchanged');
  assert.deepEqual(g.view(B + 6 * SLOT, SLOT), ro6, 'read-only buffer 6 is unchanged');
  assert.ok(g.guardsIntact());
});
