/**
 * Notification logic: vring_need_event, split flags and EVENT_IDX,
 * packed event suppression (ENABLE / DISABLE / DESC with wrap counters).
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  F_NOTIFY_ON_EMPTY,
  F_RING_PACKED,
  F_VERSION_1,
  RING_F_EVENT_IDX,
} from '../../src/virtio/features.js';
import {
  AV_FLAGS,
  AVAIL_F_NO_INTERRUPT,
  EV_FLAGS,
  needEvent,
  packedLayout,
  packedNeedEvent,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  US_FLAGS,
  USED_F_NO_NOTIFY,
  vringLayout,
} from '../../src/virtio/layout.js';
import { SplitDevice, SplitDriver } from '../../src/virtio/split-queue.js';
import { PackedDevice, PackedDriver } from '../../src/virtio/packed-queue.js';
import { makeGuardedMemory } from './harness.js';

const A = 0x100000;
const B = 0x800000;
const gm = makeGuardedMemory([
  { gpa: A, size: 64 * 1024 },
  { gpa: B, size: 64 * 1024 },
]);

const addrs = new Float64Array(8);
const lens = new Int32Array(8);
const toks = new Int32Array(8);
const out = new Uint8Array(8 * 2048);
const outOffs = new Int32Array(8).map((_, i) => i * 2048);
const outLens = new Int32Array(8);

function post1(drv: SplitDriver | PackedDriver, i: number): number {
  addrs[0] = B + i * 256;
  lens[0] = drv.hdrLen + 60;
  toks[0] = i;
  return drv.postTx(addrs, lens, toks, 1);
}

function splitPair(features: bigint, start: number): { drv: SplitDriver; dev: SplitDevice } {
  const l = vringLayout(A, 8);
  const drv = new SplitDriver(gm.mem, { size: 8, ...l, features, startIdx: start });
  const dev = new SplitDevice(gm.mem, { size: 8, ...l, features, lastAvailIdx: start });
  return { drv, dev };
}

function packedPair(features: bigint, start: number): { drv: PackedDriver; dev: PackedDevice } {
  const l = packedLayout(A, 5);
  const cfg = { size: 5, descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr, features };
  const drv = new PackedDriver(gm.mem, { ...cfg, startIdx: start });
  const dev = new PackedDevice(gm.mem, { ...cfg, lastAvailIdx: start });
  return { drv, dev };
}

test('needEvent: vring_need_event with 16-bit wrap', () => {
  assert.equal(needEvent(0, 1, 0), true);
  assert.equal(needEvent(7, 10, 6), true);
  assert.equal(needEvent(5, 10, 6), false); // passed before old
  assert.equal(needEvent(5, 5, 0), false); // entry 5 not yet written
  assert.equal(needEvent(5, 6, 5), true);
  assert.equal(needEvent(7, 6, 0), false);
  assert.equal(needEvent(0xffff, 0, 0xfffe), true); // crosses the wrap
  assert.equal(needEvent(0xfffe, 1, 0xffff), false); // passed before old
  assert.equal(needEvent(0xfffe, 3, 0xfff0), true);
  assert.equal(needEvent(3, 3, 3), false); // nothing new
});

test('packedNeedEvent: offset and wrap counter', () => {
  // size 8: written from pos 6 (wrap 1) through 1 -> now pos 2, wrap 0, 4 descriptors
  assert.equal(packedNeedEvent(7 | 0x8000, 8, 2, 0, 4), true); // slot 7 of the previous lap
  assert.equal(packedNeedEvent(1, 8, 2, 0, 4), true); // slot 1 of this lap
  assert.equal(packedNeedEvent(2, 8, 2, 0, 4), false); // slot 2 not yet written
  assert.equal(packedNeedEvent(5 | 0x8000, 8, 2, 0, 4), false); // before the first written
  assert.equal(packedNeedEvent(6 | 0x8000, 8, 2, 0, 4), true);
  assert.equal(packedNeedEvent(7 | 0x8000, 8, 0, 0, 1), true); // exact wrap
  assert.equal(packedNeedEvent(0, 8, 3, 1, 0), false);
  assert.equal(packedNeedEvent(4, 8, 3, 1, 8), true); // a whole ring
});

test('split without EVENT_IDX: NO_NOTIFY / NO_INTERRUPT flags', () => {
  const { drv, dev } = splitPair(F_VERSION_1, 0);
  assert.equal(post1(drv, 0), 1);
  assert.equal(drv.needsKick(), true);
  assert.equal(drv.needsKick(), false, 'nothing new since the last check');
  dev.setNotification(false);
  assert.equal(dev.ring.used16[US_FLAGS], USED_F_NO_NOTIFY);
  post1(drv, 1);
  assert.equal(drv.needsKick(), false);
  dev.setNotification(true);
  post1(drv, 2);
  assert.equal(drv.needsKick(), true);

  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), true);
  assert.equal(dev.needsInterrupt(), false, 'nothing pushed since');
  drv.setInterrupts(false);
  assert.equal(drv.ring.avail[AV_FLAGS], AVAIL_F_NO_INTERRUPT);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), false);
  drv.setInterrupts(true);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), true);
});

test('split NOTIFY_ON_EMPTY interrupts when the ring runs empty despite NO_INTERRUPT', () => {
  const { drv, dev } = splitPair(F_VERSION_1 | F_NOTIFY_ON_EMPTY, 0);
  drv.setInterrupts(false);
  post1(drv, 0);
  post1(drv, 1);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), false, 'ring not empty yet');
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), true, 'ring empty');
});

test('split EVENT_IDX: avail_event and used_event across the 16-bit wrap', () => {
  const start = 0xfffe;
  const { drv, dev } = splitPair(F_VERSION_1 | RING_F_EVENT_IDX, start);
  post1(drv, 0);
  assert.equal(drv.needsKick(), true, 'first buffer crosses avail_event = start');
  post1(drv, 1);
  assert.equal(drv.needsKick(), false, 'device has not moved avail_event');
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 2);
  // device published avail_event = 0x0000 (wrapped)
  post1(drv, 2);
  assert.equal(drv.needsKick(), true, 'crosses the new avail_event after the wrap');
  dev.setNotification(false);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 1);
  post1(drv, 3);
  assert.equal(drv.needsKick(), false, 'notifications off: avail_event left behind');
  dev.setNotification(true);
  // re-enabling races with the driver: the device must look again
  assert.equal(dev.hasAvail(), true);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 1);
  post1(drv, 4);
  assert.equal(drv.needsKick(), true);

  // interrupts: used_event starts at `start`; four used so far
  assert.equal(dev.needsInterrupt(), true);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), false, 'driver has not re-armed used_event');
  const t = new Int32Array(8);
  assert.equal(drv.reclaimTx(t, 8), 5);
  post1(drv, 7);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), true, 're-armed by the poll');
  drv.reclaimTx(t, 8);
  drv.setInterrupts(false);
  post1(drv, 5);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), false, 'used_event parked behind');
  drv.setInterrupts(true);
  // re-enabling races with the device: the driver polls once more (which re-arms used_event)
  assert.equal(drv.reclaimTx(t, 8), 1);
  post1(drv, 6);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 1), 1);
  assert.equal(dev.needsInterrupt(), true);
});

test('packed without EVENT_IDX: ENABLE / DISABLE', () => {
  const { drv, dev } = packedPair(F_VERSION_1 | F_RING_PACKED, 3 | 0x8000);
  post1(drv, 0);
  assert.equal(drv.needsKick(), true);
  dev.setNotification(false);
  assert.equal(dev.ring.deviceEvent[EV_FLAGS], RING_EVENT_FLAGS_DISABLE);
  post1(drv, 1);
  assert.equal(drv.needsKick(), false);
  dev.setNotification(true);
  post1(drv, 2);
  assert.equal(drv.needsKick(), true);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 3);
  assert.equal(dev.needsInterrupt(), true);
  drv.setInterrupts(false);
  post1(drv, 3);
  post1(drv, 4);
  assert.equal(post1(drv, 5), 0, 'ring full until reclaimed');
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 2);
  assert.equal(dev.needsInterrupt(), false);
  const t = new Int32Array(8);
  assert.equal(drv.reclaimTx(t, 8), 5);
  assert.deepEqual([...t.subarray(0, 5)], [0, 1, 2, 3, 4]);
  drv.setInterrupts(true);
  post1(drv, 6);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 1);
  assert.equal(dev.needsInterrupt(), true);
});

test('packed EVENT_IDX: DESC events with wrap counters', () => {
  const f = F_VERSION_1 | F_RING_PACKED | RING_F_EVENT_IDX;
  const { drv, dev } = packedPair(f, 4 | 0x8000); // size 5, last slot, wrap 1
  dev.setNotification(true); // DESC at (4, wrap 1)
  assert.equal(dev.ring.deviceEvent[EV_FLAGS], RING_EVENT_FLAGS_DESC);
  post1(drv, 0); // uses slot 4 -> wraps to 0, wrap 0
  assert.equal(drv.needsKick(), true);
  post1(drv, 1);
  assert.equal(drv.needsKick(), false, 'event still at slot 4 of the previous lap');
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 2); // event moves to (1, wrap 0)
  post1(drv, 2);
  assert.equal(drv.needsKick(), true);

  drv.setInterrupts(true); // DESC at the driver's used position (4, wrap 1)
  assert.equal(dev.needsInterrupt(), true, 'slot 4 used');
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 1);
  assert.equal(dev.needsInterrupt(), false, 'event not re-armed');
  const t = new Int32Array(8);
  assert.equal(drv.reclaimTx(t, 8), 3); // re-arms at (2, wrap 0)
  post1(drv, 3);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 1);
  assert.equal(dev.needsInterrupt(), true);
  drv.reclaimTx(t, 8);
  drv.setInterrupts(false);
  post1(drv, 4);
  assert.equal(dev.dequeueBurst(out, outOffs, 2048, outLens, 8), 1);
  assert.equal(dev.needsInterrupt(), false);
});
