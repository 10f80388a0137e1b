/**
 * Driver side against hand-written device behaviour: out-of-order completion,
 * IN_ORDER batches (one used entry for several buffers), bogus used ids.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F_IN_ORDER, F_RING_PACKED, F_VERSION_1 } from '../../src/virtio/features.js';
import { packedLayout, PDESC_F_AVAIL, PDESC_F_USED, vringLayout } from '../../src/virtio/layout.js';
import { SplitDriver } from '../../src/virtio/split-queue.js';
import { PackedDriver } from '../../src/virtio/packed-queue.js';
import { makeGuardedMemory } from './harness.js';

const A = 0x10000;
const B = 0x200000;
const gm = makeGuardedMemory([
  { gpa: A, size: 64 * 1024 },
  { gpa: B, size: 64 * 1024 },
]);
const dv = gm.dv;
const w32 = (gpa: number, v: number): void => dv.setUint32(gm.bigOff(gpa), v >>> 0, true);
const w16 = (gpa: number, v: number): void => dv.setUint16(gm.bigOff(gpa), v & 0xffff, true);
const r16 = (gpa: number): number => dv.getUint16(gm.bigOff(gpa), true);

const addrs = new Float64Array(16);
const lens = new Int32Array(16);
const toks = new Int32Array(16);
const out = new Int32Array(16);

function post(drv: SplitDriver | PackedDriver, tokens: number[]): number {
  tokens.forEach((t, i) => {
    addrs[i] = B + 256 * i;
    lens[i] = drv.hdrLen + 50;
    toks[i] = t;
  });
  return drv.postTx(addrs, lens, toks, tokens.length);
}

test('split driver: out-of-order completion keeps the free list whole', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1, startIdx: 0xfffe });
  assert.equal(post(drv, [10, 11, 12, 13]), 4);
  assert.equal(drv.freeCount, 4);
  const heads = [0, 1, 2, 3].map((i) => r16(l.availAddr + 4 + 2 * ((0xfffe + i) & 7)));
  // device completes #2, #0, #3, #1 (used idx wraps)
  [2, 0, 3, 1].forEach((k, i) => {
    const e = l.usedAddr + 4 + 8 * ((0xfffe + i) & 7);
    w32(e, heads[k]);
    w32(e + 4, 0);
  });
  w16(l.usedAddr + 2, (0xfffe + 4) & 0xffff);
  assert.equal(drv.reclaimTx(out, 16), 4);
  assert.deepEqual([...out.subarray(0, 4)], [12, 10, 13, 11]);
  assert.equal(drv.freeCount, 8);
  // all 8 descriptors can be posted again, each once
  assert.equal(post(drv, [0, 1, 2, 3, 4, 5, 6, 7]), 8);
  const all = new Set([0, 1, 2, 3, 4, 5, 6, 7].map((i) => r16(l.availAddr + 4 + 2 * ((0xfffe + 4 + i) & 7))));
  assert.equal(all.size, 8);
  assert.equal(post(drv, [99]), 0, 'ring full');
});

test('split driver IN_ORDER: a batch reported by its last entry', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1 | F_IN_ORDER });
  assert.equal(post(drv, [5, 6, 7]), 3);
  const last = r16(l.availAddr + 4 + 4);
  w32(l.usedAddr + 4 + 16, last); // only the third entry is written
  w16(l.usedAddr + 2, 3);
  assert.equal(drv.reclaimTx(out, 16), 3);
  assert.deepEqual([...out.subarray(0, 3)], [5, 6, 7]);
  assert.equal(drv.freeCount, 8);
});

test('split driver: a bogus used id breaks the queue instead of freeing twice', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1 });
  post(drv, [1]);
  w32(l.usedAddr + 4, 5); // never posted
  w16(l.usedAddr + 2, 1);
  assert.equal(drv.reclaimTx(out, 16), 0);
  assert.equal(drv.broken, true);
  assert.equal(drv.stats.badUsed, 1);
});

test('driver refuses buffers outside memory', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1 });
  addrs[0] = 0x900000;
  lens[0] = 100;
  assert.equal(drv.postTx(addrs, lens, toks, 1), 0);
  addrs[0] = B;
  lens[0] = 5; // shorter than the header
  assert.equal(drv.postTx(addrs, lens, toks, 1), 0);
  assert.equal(drv.postRx(addrs, new Int32Array([0]), toks, 1), 0);
  assert.equal(drv.stats.badBuf, 3);
  assert.equal(drv.freeCount, 8);
});

function packedUsed(l: { descAddr: number }, slot: number, id: number, wrap: number): void {
  const o = l.descAddr + 16 * slot;
  w32(o + 8, 0);
  w16(o + 12, id);
  w16(o + 14, wrap ? PDESC_F_AVAIL | PDESC_F_USED : 0);
}

test('packed driver: out-of-order ids', () => {
  const l = packedLayout(A, 5);
  const cfg = { size: 5, descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr };
  const drv = new PackedDriver(gm.mem, { ...cfg, features: F_VERSION_1 | F_RING_PACKED });
  assert.equal(post(drv, [20, 21, 22]), 3);
  const ids = [0, 1, 2].map((s) => r16(l.descAddr + 16 * s + 12));
  packedUsed(l, 0, ids[2], 1);
  packedUsed(l, 1, ids[0], 1);
  packedUsed(l, 2, ids[1], 1);
  assert.equal(drv.reclaimTx(out, 16), 3);
  assert.deepEqual([...out.subarray(0, 3)], [22, 20, 21]);
  assert.equal(drv.freeCount, 5);
  assert.equal(post(drv, [1, 2, 3, 4, 5]), 5, 'ids recycled');
  const ids2 = new Set([3, 4, 0, 1, 2].map((s) => r16(l.descAddr + 16 * s + 12)));
  assert.equal(ids2.size, 5);
});

test('packed driver IN_ORDER: one used descriptor for a batch, across the ring wrap', () => {
  const l = packedLayout(A, 5);
  const cfg = { size: 5, descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr };
  const drv = new PackedDriver(gm.mem, { ...cfg, features: F_VERSION_1 | F_RING_PACKED | F_IN_ORDER, startIdx: 3 | 0x8000 });
  assert.equal(post(drv, [30, 31, 32]), 3); // slots 3, 4, 0
  // the device writes one used descriptor at slot 3 with the id of the last buffer (slot 0)
  packedUsed(l, 3, 0, 1);
  assert.equal(drv.reclaimTx(out, 16), 3);
  assert.deepEqual([...out.subarray(0, 3)], [30, 31, 32]);
  assert.equal(drv.freeCount, 5);
  assert.equal(drv.reclaimTx(out, 16), 0);
  assert.equal(post(drv, [33]), 1); // slot 1, wrap 0
  packedUsed(l, 1, 1, 0);
  assert.equal(drv.reclaimTx(out, 16), 1);
  assert.equal(out[0], 33);
});

const r32 = (gpa: number): number => dv.getUint32(gm.bigOff(gpa), true);

test('split driver IN_ORDER postTxPrepared: descriptor = avail position, reclaim by count across the idx wrap', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1 | F_IN_ORDER, startIdx: 0xfffb });
  const n = 6;
  for (let i = 0; i < n; i++) {
    addrs[i] = B + 0x1000 * i + 0x100000000 * 0; // within memory
    lens[i] = drv.hdrLen + 60 + i;
    toks[i] = 100 + i;
  }
  assert.equal(drv.postTxPrepared(addrs, lens, toks, n), n);
  assert.equal(r16(l.availAddr + 2), (0xfffb + n) & 0xffff, 'avail idx published');
  for (let i = 0; i < n; i++) {
    const slot = (0xfffb + i) & 7;
    assert.equal(r16(l.availAddr + 4 + 2 * slot), slot, 'avail ring is the identity');
    const d = l.descAddr + 16 * slot;
    assert.equal(r32(d), B + 0x1000 * i);
    assert.equal(r32(d + 4), 0);
    assert.equal(r32(d + 8), drv.hdrLen + 60 + i);
    assert.equal(r16(d + 12), 0, 'no flags');
  }
  assert.equal(drv.freeCount, 2);
  assert.equal(drv.postTxPrepared(addrs, lens, toks, n), 2, 'only the free slots');
  // the device reports 5 used (used entries left unwritten: IN_ORDER lets the driver count)
  w16(l.usedAddr + 2, (0xfffb + 5) & 0xffff);
  assert.equal(drv.reclaimTx(out, 3), 3, 'at most max');
  assert.deepEqual([...out.subarray(0, 3)], [100, 101, 102]);
  assert.equal(drv.reclaimTx(out, 16), 2);
  assert.deepEqual([...out.subarray(0, 2)], [103, 104]);
  assert.equal(drv.freeCount, 5);
  assert.equal(drv.reclaimTx(out, 16), 0);
  // a used idx beyond what is outstanding breaks the queue
  w16(l.usedAddr + 2, (0xfffb + 9) & 0xffff);
  assert.equal(drv.reclaimTx(out, 16), 0);
  assert.equal(drv.broken, true);
  assert.equal(drv.stats.badUsed, 1);
  assert.equal(drv.postTxPrepared(addrs, lens, toks, 1), 0, 'broken queue takes nothing');
});

test('split driver IN_ORDER: postTx, postTxPrepared and a 64-bit address share one descriptor per position', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1 | F_IN_ORDER });
  assert.equal(post(drv, [1, 2]), 2);
  addrs[0] = 0x7f12_3456_7000;
  lens[0] = drv.hdrLen + 64;
  toks[0] = 3;
  assert.equal(drv.postTxPrepared(addrs, lens, toks, 1), 1);
  const d = l.descAddr + 16 * 2;
  assert.equal(r32(d), 0x3456_7000);
  assert.equal(r32(d + 4), 0x7f12);
  lens[0] = 3; // shorter than the header
  assert.equal(drv.postTxPrepared(addrs, lens, toks, 1), 0);
  assert.equal(drv.stats.badBuf, 1);
  w16(l.usedAddr + 2, 3);
  assert.equal(drv.reclaimTx(out, 16), 3);
  assert.deepEqual([...out.subarray(0, 3)], [1, 2, 3]);
});

test('postTxPrepared without IN_ORDER: free-list descriptors named in the avail ring, out-of-order completion', () => {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features: F_VERSION_1 });
  lens[0] = 5; // shorter than the header
  assert.equal(drv.postTxPrepared(addrs, lens, toks, 1), 0);
  assert.equal(drv.stats.badBuf, 1);
  for (let i = 0; i < 3; i++) {
    addrs[i] = B + 0x100 * i;
    lens[i] = drv.hdrLen + 64;
    toks[i] = 40 + i;
  }
  assert.equal(drv.postTxPrepared(addrs, lens, toks, 3), 3);
  const heads = [0, 1, 2].map((i) => r16(l.availAddr + 4 + 2 * i));
  assert.equal(new Set(heads).size, 3);
  heads.forEach((h, i) => assert.equal(r32(l.descAddr + 16 * h), B + 0x100 * i));
  // completed 2, 0, 1
  [2, 0, 1].forEach((k, i) => w32(l.usedAddr + 4 + 8 * i, heads[k]));
  w16(l.usedAddr + 2, 3);
  assert.equal(drv.reclaimTx(out, 16), 3);
  assert.deepEqual([...out.subarray(0, 3)], [42, 40, 41]);
  assert.equal(drv.freeCount, 8);
  // the whole ring again, each descriptor once, then full
  for (let i = 0; i < 8; i++) toks[i] = i;
  assert.equal(drv.postTxPrepared(addrs.fill(B), lens.fill(drv.hdrLen + 1), toks, 8), 8);
  assert.equal(new Set([0, 1, 2, 3, 4, 5, 6, 7].map((i) => r16(l.availAddr + 4 + 2 * ((3 + i) & 7)))).size, 8);
  assert.equal(drv.postTxPrepared(addrs, lens, toks, 1), 0, 'ring full');
  // a used id that is not outstanding breaks the queue
  w32(l.usedAddr + 4 + 8 * 3, 9);
  w16(l.usedAddr + 2, 4);
  assert.equal(drv.reclaimTx(out, 16), 0);
  assert.equal(drv.broken, true);
});
