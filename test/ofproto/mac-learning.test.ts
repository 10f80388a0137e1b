import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MacLearningTable, isMulticastMac } from '../../src/ofproto/mac-learning.js';

const A = 0x020000000001;
const B = 0x020000000002;

test('learn, refresh, move, per-VLAN, multicast ignored', () => {
  const t = new MacLearningTable();
  const v0 = t.version;
  assert.equal(t.learn(0, A, 1, 0), 'new');
  assert.ok(t.version > v0);
  const v1 = t.version;
  assert.equal(t.learn(0, A, 1, 1000), 'refreshed');
  assert.equal(t.version, v1, 'refresh does not bump');
  assert.equal(t.lookup(0, A, 1000), 1);
  assert.equal(t.lookup(10, A, 1000), undefined, 'other VLAN');
  assert.equal(t.learn(0, A, 2, 2000), 'moved');
  assert.ok(t.version > v1);
  assert.equal(t.lookup(0, A, 2000), 2);
  assert.equal(t.learn(0, 0x010000000001, 3, 0), 'ignored');
  assert.ok(isMulticastMac(0xffffffffffff));
  assert.ok(!isMulticastMac(A));
  assert.equal(t.moved, 1);
  assert.match(t.format(5000), /\n {4}2 {5}0 {2}02:00:00:00:00:01 {4}3$/);
});

test('aging: lookup ignores stale entries, expire removes them', () => {
  const t = new MacLearningTable({ agingSec: 300 });
  t.learn(0, A, 1, 0);
  t.learn(0, B, 2, 100_000);
  assert.equal(t.lookup(0, A, 299_999), 1);
  assert.equal(t.lookup(0, A, 300_000), undefined);
  const v = t.version;
  assert.equal(t.expire(300_000), 1);
  assert.ok(t.version > v);
  assert.equal(t.size, 1);
  assert.equal(t.expire(399_999), 0);
  assert.equal(t.expire(400_000), 1);
  // An aged-out entry is relearned as new (even on another port).
  t.learn(0, A, 1, 0);
  assert.equal(t.learn(0, A, 5, 500_000), 'new');
});

test('max entries: least recently learned is evicted', () => {
  const t = new MacLearningTable({ maxEntries: 3 });
  for (let i = 1; i <= 3; i++) t.learn(0, 0x020000000000 + i, i, i);
  t.learn(0, 0x020000000001, 1, 10); // refresh #1 -> #2 is now the oldest
  t.learn(0, 0x020000000004, 4, 11);
  assert.equal(t.size, 3);
  assert.equal(t.evicted, 1);
  assert.equal(t.lookup(0, 0x020000000002, 12), undefined);
  assert.equal(t.lookup(0, 0x020000000001, 12), 1);
  assert.equal(t.flushPort(1), 1);
  assert.equal(t.lookup(0, 0x020000000001, 12), undefined);
  t.flush();
  assert.equal(t.size, 0);
});
