import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory, GuestMemoryError, WINDOW_SIZE, u64ToAddr, bigToAddr, MAX_ADDR } from '../../src/mem/guest-memory.js';
import { SharedRegion } from '../../src/mem/region.js';

/** Two regions like QEMU with a hole: [0x0, 64K) at uaddr U1 and [0x100000, +32K) at uaddr U2. */
function twoRegions(): { mem: GuestMemory; backing: Uint8Array[] } {
  const a = new Uint8Array(65536);
  const b = new Uint8Array(32768);
  const mem = new GuestMemory([
    { gpa: 0, size: a.length, uaddr: 0x7f0000000000, views: [a] },
    { gpa: 0x100000, size: b.length, uaddr: 0x7e0000000000, views: [b] },
  ]);
  return { mem, backing: [a, b] };
}

function inBounds(gpa: number, len: number): boolean {
  return (gpa >= 0 && gpa + len <= 65536) || (gpa >= 0x100000 && gpa + len <= 0x100000 + 32768);
}

test('translation agrees with a reference model on random ranges', () => {
  const { mem } = twoRegions();
  const addr = fc.oneof(
    fc.integer({ min: 0, max: 0x200000 }),
    fc.constantFrom(0, 65535, 65536, 0xfffff, 0x100000, 0x100000 + 32767, 0x100000 + 32768, MAX_ADDR, MAX_ADDR - 1),
    fc.double({ min: -1e20, max: 1e20, noNaN: true }),
  );
  const len = fc.oneof(fc.integer({ min: 0, max: 70000 }), fc.constantFrom(0, 1, 0xffffffff, 0x100000000, -1));
  fc.assert(
    fc.property(addr, len, (g, l) => {
      const expect = Number.isInteger(g) && Number.isInteger(l) && l >= 0 && l <= 0xffffffff && inBounds(g, l);
      const i = mem.findGpa(g, l);
      assert.equal(i >= 0, expect, `findGpa(${g}, ${l})`);
      if (i >= 0) {
        const w = mem.windows[i];
        assert.ok(mem.off + l <= w.size && mem.off >= 0);
        assert.ok(w.gpa + mem.off === g, "translated offset maps back to the address");
      }
    }),
    { numRuns: 20000 },
  );
});

test('64-bit wire values that wrap at 2^64 are refused before arithmetic', () => {
  const { mem } = twoRegions();
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 32n) - 1n }), (g, l) => {
      const a = bigToAddr(g);
      const hi = Number(g >> 32n);
      const lo = Number(g & 0xffffffffn);
      assert.equal(u64ToAddr(hi, lo), a);
      if (a < 0) {
        assert.equal(mem.findGpa(a, Number(l)), -1);
        return;
      }
      const ok = mem.findGpa(a, Number(l)) >= 0;
      assert.equal(ok, inBounds(a, Number(l)) && Number(l) <= 0xffffffff);
    }),
    { numRuns: 20000 },
  );
  // 2^64 - 16 + 32 would wrap to 16, which is in bounds if computed in 64 bits
  assert.equal(bigToAddr(0xfffffffffffffff0n), -1);
  assert.equal(u64ToAddr(0xffffffff, 0xfffffff0), -1);
  assert.equal(mem.findGpa(-16, 32), -1);
});

test('frontend addresses translate to guest physical with bounds', () => {
  const { mem } = twoRegions();
  assert.equal(mem.uaddrToGpa(0x7f0000000000 + 100, 10), 100);
  assert.equal(mem.uaddrToGpa(0x7e0000000000 + 10, 10), 0x100000 + 10);
  assert.equal(mem.uaddrToGpa(0x7e0000000000 + 32760, 16), -1, 'crosses the end');
  assert.equal(mem.uaddrToGpa(0x7e0000000000 - 1, 2), -1, 'before the start');
  assert.equal(mem.uaddrToGpa(0, 1), -1);
});

test('read/write copy exactly and refuse partial ranges without touching memory', () => {
  const { mem, backing } = twoRegions();
  const src = new Uint8Array(100).map((_, i) => i + 1);
  assert.ok(mem.write(65536 - 100, src, 0, 100));
  assert.deepEqual(backing[0].subarray(65436), src);
  const snapshot = backing[0].slice();
  assert.equal(mem.write(65536 - 50, src, 0, 100), false, 'straddles the end of region 0');
  assert.deepEqual(backing[0], snapshot, 'nothing written on failure');
  const dst = new Uint8Array(100);
  assert.ok(mem.read(65536 - 100, dst, 0, 100));
  assert.deepEqual(dst, src);
  assert.equal(mem.read(0x100000 + 32768 - 10, dst, 0, 11), false);
  assert.equal(mem.read(0, dst, 50, 51), false, 'destination too small');
  assert.throws(() => mem.slice(65530, 10), GuestMemoryError);
});

test('overlapping regions and bad views are rejected', () => {
  const a = new Uint8Array(4096);
  assert.throws(() => new GuestMemory([
    { gpa: 0, size: 4096, uaddr: 0x10000, views: [a] },
    { gpa: 2048, size: 4096, uaddr: 0x20000, views: [a] },
  ]), /overlap/);
  assert.throws(() => new GuestMemory([
    { gpa: 0, size: 4096, uaddr: 0x10000, views: [a] },
    { gpa: 8192, size: 4096, uaddr: 0x10800, views: [a] },
  ]), /overlap in frontend/);
  assert.throws(() => new GuestMemory([{ gpa: 0, size: 8192, uaddr: 0, views: [a] }]), /needs 8192/);
  assert.throws(() => new GuestMemory([{ gpa: MAX_ADDR - 10, size: 4096, uaddr: 0, views: [a] }]), /2\^53/);
});

test('a region bigger than one window (5 GiB, mapped from a sparse memfd) works across windows', (t) => {
  const size = 5 * 1024 * 1024 * 1024;
  const r = SharedRegion.create('big', size);
  t.after(() => r.close());
  assert.equal(r.views.length, 5);
  // QEMU-like table: 0..3G at offset 0 and 4G..5G; here one 5 GiB region at gpa 0x100000000 (4 GiB)
  const mem = new GuestMemory([r.asGuestRegion(0x100000000)]);
  assert.equal(mem.windows.length, 5);
  const edge = 0x100000000 + 2 * WINDOW_SIZE - 8;
  const src = new Uint8Array(16).fill(0x77);
  assert.equal(mem.findGpa(edge, 16), -1, 'translate is per window');
  assert.ok(mem.contains(edge, 16));
  assert.ok(mem.write(edge, src, 0, 16), 'copy crosses windows of one region');
  assert.equal(r.views[1][WINDOW_SIZE - 1], 0x77);
  assert.equal(r.views[2][7], 0x77);
  const back = new Uint8Array(16);
  assert.ok(mem.read(edge, back, 0, 16));
  assert.deepEqual(back, src);
  assert.equal(mem.findGpa(0x100000000 + size - 1, 2), -1);
  assert.ok(mem.findGpa(0x100000000 + size - 2, 2) >= 0);
});

test('up to 509 regions (CONFIGURE_MEM_SLOTS)', () => {
  const regions = [];
  for (let i = 0; i < 509; i++) regions.push({ gpa: i * 8192, size: 4096, uaddr: 0x40000000 + i * 4096, views: [new Uint8Array(4096)] });
  const mem = new GuestMemory(regions);
  for (let i = 0; i < 509; i += 17) {
    assert.ok(mem.findGpa(i * 8192 + 100, 100) >= 0);
    assert.equal(mem.findGpa(i * 8192 + 4000, 100), -1);
    assert.equal(mem.uaddrToGpa(0x40000000 + i * 4096 + 5, 1), i * 8192 + 5);
  }
});
