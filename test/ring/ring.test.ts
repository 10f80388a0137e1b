import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Ring, RingError, type RingMode } from '../../src/ring/ring.js';
import { SharedRegion } from '../../src/mem/region.js';

const MODES: RingMode[] = ['spsc', 'mpmc', 'mpsc', 'spmc'];

test('bytesNeeded: power-of-two sizes only, header + slots rounded to 64', () => {
  assert.equal(Ring.bytesNeeded(1), 320 + 64);
  assert.equal(Ring.bytesNeeded(1024), 320 + 4096);
  assert.throws(() => Ring.bytesNeeded(0), RingError);
  assert.throws(() => Ring.bytesNeeded(1000), RingError);
  assert.throws(() => Ring.bytesNeeded(-8), RingError);
});

for (const mode of MODES) {
  test(`${mode}: fill, overfill, drain, wrap-around, bulk all-or-nothing`, () => {
    const r = Ring.create(8, mode);
    assert.equal(r.mode, mode);
    assert.equal(r.count(), 0);
    assert.equal(r.free(), 8);
    const src = Int32Array.from({ length: 10 }, (_, i) => 100 + i);
    assert.equal(r.enqueueBurst(src, 10), 8, 'burst takes what fits');
    assert.equal(r.count(), 8);
    assert.equal(r.enqueueBurst(src, 1), 0, 'full');
    const dst = new Int32Array(16);
    assert.equal(r.dequeueBurst(dst, 5), 5);
    assert.deepEqual([...dst.subarray(0, 5)], [100, 101, 102, 103, 104]);
    assert.equal(r.enqueueBulk(src, 6), 0, 'bulk of 6 into 5 free slots refused');
    assert.equal(r.count(), 3);
    assert.equal(r.enqueueBulk(src, 5, 5), 5, 'bulk from an offset');
    assert.equal(r.dequeueBulk(dst, 9), 0, 'bulk of 9 from 8 refused');
    assert.equal(r.dequeueBurst(dst, 16, 2), 8, 'dequeue into an offset, across the wrap');
    assert.deepEqual([...dst.subarray(2, 10)], [105, 106, 107, 105, 106, 107, 108, 109]);
    assert.equal(r.dequeueBurst(dst, 4), 0, 'empty');
    assert.equal(r.dequeueOne(), -1);
    assert.ok(r.enqueueOne(42));
    assert.equal(r.dequeueOne(), 42);
  });
}

test('u32 handles round-trip through Uint32Array', () => {
  const r = Ring.create(4, 'mpmc');
  const src = new Uint32Array([0xffffffff, 0x80000000, 0, 7]);
  assert.equal(r.enqueueBurst(src, 4), 4);
  const dst = new Uint32Array(4);
  assert.equal(r.dequeueBurst(dst, 4), 4);
  assert.deepEqual([...dst], [...src]);
});

test('indices wrap past 2^32 without losing entries', () => {
  const r = Ring.create(16, 'mpmc');
  // move all four counters to just below 2^32 (stored as i32 -1 - 5)
  const h = new Int32Array(r.bytes.buffer, 0, 80);
  for (const w of [16, 32, 48, 64]) h[w] = -6;
  const r2 = Ring.attach(r.bytes, 0);
  const src = Int32Array.from({ length: 16 }, (_, i) => i);
  const dst = new Int32Array(16);
  for (let round = 0; round < 5; round++) {
    assert.equal(r2.enqueueBurst(src, 11), 11);
    assert.equal(r2.count(), 11);
    assert.equal(r2.dequeueBurst(dst, 16), 11);
    assert.deepEqual([...dst.subarray(0, 11)], [...src.subarray(0, 11)]);
  }
  const s = Ring.create(16, 'spsc');
  const hs = new Int32Array(s.bytes.buffer, 0, 80);
  for (const w of [16, 32, 48, 64]) hs[w] = -6;
  const s2 = Ring.attach(s.bytes, 0);
  for (let round = 0; round < 5; round++) {
    assert.equal(s2.enqueueBurst(src, 13), 13);
    assert.equal(s2.dequeueBurst(dst, 16), 13);
    assert.deepEqual([...dst.subarray(0, 13)], [...src.subarray(0, 13)]);
  }
});

test('init/attach at an offset in a memfd region; attach validates the header', () => {
  const region = SharedRegion.create('ring-test', 65536);
  try {
    const a = Ring.init(region.bytes, 4096, 256, 'mpmc');
    assert.ok(a.enqueueOne(9));
    const b = Ring.attach(region.bytes, 4096);
    assert.equal(b.size, 256);
    assert.equal(b.mode, 'mpmc');
    assert.equal(b.count(), 1);
    assert.equal(b.dequeueOne(), 9);
    assert.throws(() => Ring.attach(region.bytes, 0), /bad magic/);
    assert.throws(() => Ring.attach(region.bytes, 4098), /multiple of 4/);
    assert.throws(() => Ring.init(region.bytes, 65536 - 320, 256, 'spsc'), RingError);
    // a hostile size field
    const h = new Int32Array(region.bytes.buffer, 4096, 4);
    h[1] = 1 << 27;
    assert.throws(() => Ring.attach(region.bytes, 4096), RingError);
    h[1] = 100;
    assert.throws(() => Ring.attach(region.bytes, 4096), /corrupt/);
  } finally {
    region.close();
  }
});

test('corrupt indices: operations return 0 instead of overwriting or hanging', () => {
  for (const mode of MODES) {
    const r = Ring.create(8, mode);
    const h = new Int32Array(r.bytes.buffer, 0, 80);
    h[16] = h[32] = 1000; // producer 1000 ahead of consumer: impossible for capacity 8
    const r2 = Ring.attach(r.bytes, 0);
    const buf = new Int32Array(4);
    assert.equal(r2.enqueueBurst(buf, 4), 0, mode);
    h[48] = h[64] = 2000; // consumer ahead of producer
    const r3 = Ring.attach(r.bytes, 0);
    assert.equal(r3.dequeueBurst(buf, 4), 0, mode);
  }
});

test('property: any interleaving of bursts behaves like a FIFO queue of capacity size', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...MODES),
      fc.constantFrom(1, 2, 8, 32),
      fc.array(fc.record({ enq: fc.boolean(), n: fc.integer({ min: 0, max: 40 }), bulk: fc.boolean() }), { maxLength: 60 }),
      (mode, size, ops) => {
        const r = Ring.create(size, mode);
        const model: number[] = [];
        let next = 1;
        const buf = new Int32Array(64);
        for (const op of ops) {
          if (op.enq) {
            for (let i = 0; i < op.n; i++) buf[i] = next + i;
            const room = size - model.length;
            const expect = op.bulk ? (op.n <= room ? op.n : 0) : Math.min(op.n, room);
            const k = op.bulk ? r.enqueueBulk(buf, op.n) : r.enqueueBurst(buf, op.n);
            assert.equal(k, expect);
            for (let i = 0; i < k; i++) model.push(next + i);
            next += k;
          } else {
            const expect = op.bulk ? (op.n <= model.length ? op.n : 0) : Math.min(op.n, model.length);
            const k = op.bulk ? r.dequeueBulk(buf, op.n) : r.dequeueBurst(buf, op.n);
            assert.equal(k, expect);
            assert.deepEqual([...buf.subarray(0, k)], model.splice(0, k));
          }
          assert.equal(r.count(), model.length);
          assert.equal(r.free(), size - model.length);
        }
      },
    ),
    { numRuns: 300 },
  );
});
