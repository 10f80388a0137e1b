/**
 * Device side against hand-built hostile rings: each violation is dropped,
 * handed back and counted by its reason; unrecoverable ones break the queue.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  F_VERSION_1,
  F_RING_PACKED,
  NET_F_MRG_RXBUF,
  RING_F_INDIRECT_DESC,
} from '../../src/virtio/features.js';
import {
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  packedLayout,
  PDESC_F_AVAIL,
  PDESC_F_USED,
  vringLayout,
} from '../../src/virtio/layout.js';
import { SplitDevice } from '../../src/virtio/split-queue.js';
import { PackedDevice } from '../../src/virtio/packed-queue.js';
import { VirtqueueError } from '../../src/virtio/errors.js';
import { makeGuardedMemory } from './harness.js';

const A = 0x10000;
const B = 0x200000;
const gm = makeGuardedMemory([
  { gpa: A, size: 64 * 1024 },
  { gpa: B, size: 64 * 1024 },
]);
const dv = gm.dv;
const w64 = (gpa: number, v: number): void => {
  const o = gm.bigOff(gpa);
  dv.setUint32(o, v % 0x100000000, true);
  dv.setUint32(o + 4, Math.floor(v / 0x100000000), true);
};
const w32 = (gpa: number, v: number): void => dv.setUint32(gm.bigOff(gpa), v >>> 0, true);
const w16 = (gpa: number, v: number): void => dv.setUint16(gm.bigOff(gpa), v & 0xffff, true);
const r16 = (gpa: number): number => dv.getUint16(gm.bigOff(gpa), true);
const r32 = (gpa: number): number => dv.getUint32(gm.bigOff(gpa), true);

const out = new Uint8Array(8 * 4096);
const outOffs = new Int32Array(8).map((_, i) => i * 4096);
const outLens = new Int32Array(8);

class SplitRig {
  readonly l = vringLayout(A, 8);
  readonly dev: SplitDevice;
  avail = 0;
  constructor(features = F_VERSION_1 | RING_F_INDIRECT_DESC, readonly size = 8) {
    gm.view(A, 64 * 1024).fill(0);
    this.l = vringLayout(A, size);
    this.dev = new SplitDevice(gm.mem, { size, ...this.l, features });
  }
  desc(i: number, addr: number, len: number, flags: number, next = 0): void {
    const o = this.l.descAddr + 16 * i;
    w64(o, addr);
    w32(o + 8, len);
    w16(o + 12, flags);
    w16(o + 14, next);
  }
  push(head: number): void {
    w16(this.l.availAddr + 4 + 2 * (this.avail % this.size), head);
    this.avail = (this.avail + 1) & 0xffff;
    w16(this.l.availAddr + 2, this.avail);
  }
  used(i: number): [number, number] {
    const e = this.l.usedAddr + 4 + 8 * (i % this.size);
    return [r32(e), r32(e + 4)];
  }
  get usedIdx(): number {
    return r16(this.l.usedAddr + 2);
  }
  deq(cap = 4096): number {
    return this.dev.dequeueBurst(out, outOffs, cap, outLens, 8);
  }
}

/** A TX frame: 12-byte header then `len` bytes of value `v`, at gpa. */
function frameAt(gpa: number, len: number, v: number): void {
  gm.view(gpa, 12).fill(0);
  gm.view(gpa + 12, len).fill(v);
}

test('constructor refuses bad sizes and ring placement (VirtqueueError)', () => {
  const l = vringLayout(A, 8);
  const bad = (cfg: object, code: string): void =>
    assert.throws(
      () => new SplitDevice(gm.mem, { size: 8, ...l, features: F_VERSION_1, ...cfg }),
      (e: unknown) => e instanceof VirtqueueError && e.code === code,
    );
  bad({ size: 6 }, 'BAD_SIZE');
  bad({ size: 0 }, 'BAD_SIZE');
  bad({ size: 65536 }, 'BAD_SIZE');
  bad({ descAddr: A + 8 }, 'MISALIGNED');
  bad({ usedAddr: A + 64 * 1024 - 16 }, 'BAD_ADDR'); // runs off the region
  bad({ availAddr: 0x900000 }, 'BAD_ADDR');
  bad({ lastAvailIdx: 70000 }, 'BAD_INDEX');
  assert.throws(
    () => new PackedDevice(gm.mem, { size: 7, descAddr: A, availAddr: A + 112, usedAddr: A + 116, features: F_RING_PACKED, lastAvailIdx: 7 }),
    (e: unknown) => e instanceof VirtqueueError && e.code === 'BAD_INDEX',
  );
  // odd packed sizes are fine
  new PackedDevice(gm.mem, { size: 7, descAddr: A, availAddr: A + 112, usedAddr: A + 116, features: F_RING_PACKED });
});

test('split TX: gather across descriptors, zero-length ones, header split anywhere', () => {
  const r = new SplitRig();
  // header split 5+7, then 0-length, then payload in two pieces
  frameAt(B, 100, 0xab);
  r.desc(0, B, 5, DESC_F_NEXT, 1);
  r.desc(1, B + 5, 7, DESC_F_NEXT, 2);
  r.desc(2, B + 0x8000, 0, DESC_F_NEXT, 3);
  r.desc(3, B + 12, 60, DESC_F_NEXT, 4);
  r.desc(4, B + 72, 40, 0);
  r.push(0);
  assert.equal(r.deq(), 1);
  assert.equal(outLens[0], 100);
  assert.ok(out.subarray(0, 100).every((b) => b === 0xab));
  assert.equal(r.usedIdx, 1);
  assert.deepEqual(r.used(0), [0, 0]);
  assert.equal(r.dev.stats.pkts, 1);
});

test('split TX: each violation is handed back and counted', () => {
  const r = new SplitRig();
  const s = r.dev.stats;
  frameAt(B, 64, 1);
  // loop: 1 -> 2 -> 1
  r.desc(1, B, 12, DESC_F_NEXT, 2);
  r.desc(2, B + 12, 10, DESC_F_NEXT, 1);
  r.push(1);
  // outside memory
  r.desc(3, 0x900000, 100, 0);
  r.push(3);
  // straddles the end of a region
  r.desc(4, B + 64 * 1024 - 50, 100, 0);
  r.push(4);
  // device-writable buffer in a TX chain
  r.desc(5, B, 76, DESC_F_WRITE);
  r.push(5);
  // next out of range
  r.desc(6, B, 12, DESC_F_NEXT, 9);
  r.push(6);
  // header only
  r.desc(7, B, 12, 0);
  r.push(7);
  // too big for cap
  r.desc(0, B, 76, 0);
  r.push(0);
  assert.equal(r.dev.dequeueBurst(out, outOffs, 63, outLens, 8), 0);
  assert.deepEqual(
    [s.loop, s.badAddr, s.badChain, s.short, s.tooBig, s.pkts, s.chains],
    [1, 2, 2, 1, 1, 0, 7],
  );
  assert.equal(r.usedIdx, 7);
  for (let i = 0; i < 7; i++) assert.equal(r.used(i)[1], 0);
  assert.deepEqual(r.used(0), [1, 0]);
  assert.equal(r.dev.broken, false);
  // the queue still works
  r.push(0);
  assert.equal(r.deq(), 1);
  assert.equal(outLens[0], 64);
  assert.ok(gm.guardsIntact());
});

test('split: a chain as long as the queue is fine, one more is a loop', () => {
  const r = new SplitRig(F_VERSION_1, 4);
  frameAt(B, 100, 7);
  r.desc(0, B, 12, DESC_F_NEXT, 1);
  r.desc(1, B + 12, 30, DESC_F_NEXT, 2);
  r.desc(2, B + 42, 30, DESC_F_NEXT, 3);
  r.desc(3, B + 72, 40, 0);
  r.push(0);
  assert.equal(r.deq(), 1);
  assert.equal(outLens[0], 100);
  r.desc(3, B + 72, 40, DESC_F_NEXT, 0);
  r.push(0);
  assert.equal(r.deq(), 0);
  assert.equal(r.dev.stats.loop, 1);
});

test('split indirect: valid table, and every bad form', () => {
  const r = new SplitRig();
  const s = r.dev.stats;
  const T = A + 0x8000;
  frameAt(B, 50, 9);
  const table = (t: number, entries: [number, number, number, number][]): void =>
    entries.forEach(([a, l, f, n], k) => {
      w64(t + 16 * k, a);
      w32(t + 16 * k + 8, l);
      w16(t + 16 * k + 12, f);
      w16(t + 16 * k + 14, n);
    });
  table(T, [
    [B, 12, DESC_F_NEXT, 1],
    [B + 12, 50, 0, 0],
  ]);
  r.desc(0, T, 32, DESC_F_INDIRECT);
  r.push(0);
  assert.equal(r.deq(), 1);
  assert.equal(outLens[0], 50);
  assert.equal(s.badIndirect, 0);
  // length not a multiple of 16
  r.desc(1, T, 24, DESC_F_INDIRECT);
  r.push(1);
  // INDIRECT together with NEXT
  r.desc(2, T, 32, DESC_F_INDIRECT | DESC_F_NEXT, 0);
  r.push(2);
  // nested table
  table(T + 0x100, [[T, 32, DESC_F_INDIRECT, 0]]);
  r.desc(3, T + 0x100, 16, DESC_F_INDIRECT);
  r.push(3);
  // table outside memory
  r.desc(4, 0x900000, 32, DESC_F_INDIRECT);
  r.push(4);
  // empty table, and a huge one
  r.desc(5, T, 0, DESC_F_INDIRECT);
  r.push(5);
  r.desc(6, T, 16 * 4096, DESC_F_INDIRECT);
  r.push(6);
  assert.equal(r.deq(), 0);
  assert.equal(s.badIndirect, 6);
  // a loop inside a table is bounded by the table length
  table(T + 0x200, [
    [B, 12, DESC_F_NEXT, 1],
    [B + 12, 10, DESC_F_NEXT, 0],
  ]);
  r.desc(7, T + 0x200, 32, DESC_F_INDIRECT);
  r.push(7);
  // next beyond the table
  table(T + 0x300, [[B, 12, DESC_F_NEXT, 5]]);
  r.desc(0, T + 0x300, 16, DESC_F_INDIRECT);
  r.push(0);
  assert.equal(r.deq(), 0);
  assert.equal(s.loop, 1);
  assert.equal(s.badChain, 1);
  // without the feature, INDIRECT is a violation
  const r2 = new SplitRig(F_VERSION_1);
  r2.desc(0, T, 32, DESC_F_INDIRECT);
  r2.push(0);
  assert.equal(r2.deq(), 0);
  assert.equal(r2.dev.stats.badIndirect, 1);
});

test('split: avail idx jumping past the size and a bad head break the queue', () => {
  const r = new SplitRig();
  w16(r.l.availAddr + 2, 9); // 9 > size 8
  assert.equal(r.deq(), 0);
  assert.equal(r.dev.stats.badIndex, 1);
  assert.equal(r.dev.broken, true);
  assert.equal(r.dev.hasAvail(), false);
  const r2 = new SplitRig();
  frameAt(B, 10, 1);
  r2.desc(0, B, 22, 0);
  r2.push(0);
  r2.push(8); // head >= size
  r2.push(0);
  assert.equal(r2.deq(), 1, 'chains before the bad head are delivered');
  assert.equal(r2.dev.stats.badHead, 1);
  assert.equal(r2.dev.broken, true);
  assert.equal(r2.usedIdx, 1);
  r2.push(0);
  assert.equal(r2.deq(), 0);
});

test('split RX: too big without MRG keeps the chain; zero-capacity chain; readable buffer', () => {
  const r = new SplitRig(F_VERSION_1);
  const s = r.dev.stats;
  const src = new Uint8Array(4096).fill(0x42);
  const so = new Int32Array([0, 0, 0]);
  r.desc(0, B, 12 + 100, DESC_F_WRITE);
  r.push(0);
  assert.equal(r.dev.enqueueBurst(src, so, new Int32Array([101, 100]), 2), 2);
  assert.equal(s.tooBig, 1);
  assert.equal(s.pkts, 1);
  assert.deepEqual(r.used(0), [0, 112]);
  // zero-capacity chain, then a readable one, then a good one
  r.desc(1, B, 0, DESC_F_WRITE);
  r.desc(2, B, 500, 0);
  r.desc(3, B + 1000, 500, DESC_F_WRITE);
  r.push(1);
  r.push(2);
  r.push(3);
  assert.equal(r.dev.enqueueBurst(src, so, new Int32Array([300]), 1), 1);
  assert.equal(s.badChain, 2);
  assert.deepEqual([r.used(1), r.used(2), r.used(3)], [[1, 0], [2, 0], [3, 312]]);
  assert.ok(gm.view(B + 1000 + 12, 300).every((b) => b === 0x42));
  // no buffers: nothing consumed, counted
  assert.equal(r.dev.enqueueBurst(src, so, new Int32Array([10]), 1), 0);
  assert.equal(s.noBufs, 1);
});

test('split RX with MRG_RXBUF: frame over several chains, waits for enough buffers', () => {
  const r = new SplitRig(F_VERSION_1 | NET_F_MRG_RXBUF);
  const src = new Uint8Array(4096);
  for (let i = 0; i < src.length; i++) src[i] = i & 0xff;
  r.desc(0, B, 1000, DESC_F_WRITE);
  r.desc(1, B + 1000, 1000, DESC_F_WRITE);
  r.push(0);
  r.push(1);
  // needs 3 buffers: nothing consumed yet
  assert.equal(r.dev.enqueueBurst(src, new Int32Array([0]), new Int32Array([2500]), 1), 0);
  assert.equal(r.dev.stats.noBufs, 1);
  assert.equal(r.usedIdx, 0);
  r.desc(2, B + 2000, 1000, DESC_F_WRITE);
  r.push(2);
  assert.equal(r.dev.enqueueBurst(src, new Int32Array([0]), new Int32Array([2500]), 1), 1);
  assert.deepEqual([r.used(0), r.used(1), r.used(2)], [[0, 1000], [1, 1000], [2, 512]]);
  assert.equal(r16(B + 10), 3, 'num_buffers');
  const got = gm.view(B + 12, 2500);
  for (let i = 0; i < 2500; i++) assert.equal(got[i], i & 0xff);
});

class PackedRig {
  readonly size = 5;
  readonly l = packedLayout(A, 5);
  readonly dev: PackedDevice;
  pos = 0;
  wrap = 1;
  constructor(features = F_VERSION_1 | F_RING_PACKED | RING_F_INDIRECT_DESC) {
    gm.view(A, 64 * 1024).fill(0);
    this.dev = new PackedDevice(gm.mem, {
      size: 5,
      descAddr: this.l.descAddr,
      availAddr: this.l.driverEventAddr,
      usedAddr: this.l.deviceEventAddr,
      features,
    });
  }
  /** Append one descriptor with the current wrap's avail bits. Returns its slot. */
  add(addr: number, len: number, flags: number, id: number): number {
    const o = this.l.descAddr + 16 * this.pos;
    w64(o, addr);
    w32(o + 8, len);
    w16(o + 12, id);
    w16(o + 14, flags | (this.wrap ? PDESC_F_AVAIL : PDESC_F_USED));
    const slot = this.pos;
    if (++this.pos === this.size) {
      this.pos = 0;
      this.wrap ^= 1;
    }
    return slot;
  }
  deq(): number {
    return this.dev.dequeueBurst(out, outOffs, 4096, outLens, 8);
  }
}

test('packed: buffer id from the last descriptor, used descriptors skip chains', () => {
  const r = new PackedRig();
  frameAt(B, 30, 3);
  r.add(B, 12, DESC_F_NEXT, 999);
  r.add(B + 12, 30, 0, 77); // id in the last descriptor
  r.add(B, 42, 0, 78);
  assert.equal(r.deq(), 2);
  assert.equal(r16(r.l.descAddr + 12), 77);
  assert.equal(r16(r.l.descAddr + 14), PDESC_F_AVAIL | PDESC_F_USED);
  assert.equal(r16(r.l.descAddr + 32 + 12), 78, 'second used descriptor after the 2-slot chain');
  assert.equal(r.dev.lastAvailIdx, 3 | 0x8000);
});

test('packed: indirect inside a chain is dropped with the right slot count; endless chain breaks', () => {
  const r = new PackedRig();
  const s = r.dev.stats;
  frameAt(B, 20, 5);
  r.add(B, 12, DESC_F_NEXT, 1);
  r.add(A + 0x8000, 16, DESC_F_INDIRECT, 1); // INDIRECT in a NEXT list
  r.add(B, 32, 0, 2);
  assert.equal(r.deq(), 1);
  assert.equal(s.badIndirect, 1);
  assert.equal(outLens[0], 20);
  assert.equal(r.dev.lastAvailIdx, 3 | 0x8000);
  // every descriptor NEXT: no end within the ring
  for (let i = 0; i < 5; i++) r.add(B, 12, DESC_F_NEXT, i);
  assert.equal(r.deq(), 0);
  assert.equal(s.loop, 1);
  assert.equal(r.dev.broken, true);
});

test('packed RX: writable chain gets used length and WRITE flag; direction checked', () => {
  const r = new PackedRig();
  const src = new Uint8Array(100).fill(9);
  r.add(B, 12, 0, 4); // readable in RX: violation
  r.add(B + 0x1000, 200, DESC_F_WRITE, 5);
  assert.equal(r.dev.enqueueBurst(src, new Int32Array([0]), new Int32Array([100]), 1), 1);
  assert.equal(r.dev.stats.badChain, 1);
  assert.equal(r32(r.l.descAddr + 16 + 8), 112);
  assert.equal(r16(r.l.descAddr + 16 + 14), PDESC_F_AVAIL | PDESC_F_USED | DESC_F_WRITE);
  assert.ok(gm.view(B + 0x1000 + 12, 100).every((b) => b === 9));
});
