import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExactMatchCache } from '../../src/dp/emc.js';
import { FLOW_WORDS, hashKey, HASH_BASIS } from '../../src/dp/flow-key.js';

function k(i: number): Uint32Array {
  const key = new Uint32Array(FLOW_WORDS);
  key[0] = i; key[7] = i * 31; key[15] = i ^ 0x5555;
  return key;
}

test('insert/lookup/invalidate with insert-inv-prob 1', () => {
  const emc = new ExactMatchCache(1024, 1);
  for (let i = 0; i < 300; i++) emc.insert(k(i), 0, hashKey(k(i), 0, HASH_BASIS), i);
  let found = 0;
  for (let i = 0; i < 300; i++) {
    const v = emc.lookup(k(i), 0, hashKey(k(i), 0, HASH_BASIS));
    if (v >= 0) { assert.equal(v, i); found++; }
  }
  assert.ok(found > 250, `found ${found}`); // 2-way: few collisions at 30% load
  // A key differing in one word but forced to the same hash must miss.
  const other = k(5); other[11] = 1;
  assert.equal(emc.lookup(other, 0, hashKey(k(5), 0, HASH_BASIS)), -1);
  // Update in place.
  emc.insert(k(7), 0, hashKey(k(7), 0, HASH_BASIS), 4242);
  assert.equal(emc.lookup(k(7), 0, hashKey(k(7), 0, HASH_BASIS)), 4242);
  assert.equal(emc.invalidateValue(4242), 1);
  assert.equal(emc.lookup(k(7), 0, hashKey(k(7), 0, HASH_BASIS)), -1);
  const h9 = hashKey(k(9), 0, HASH_BASIS);
  if (emc.lookup(k(9), 0, h9) >= 0) {
    assert.ok(emc.invalidateKey(k(9), 0, h9));
    assert.equal(emc.lookup(k(9), 0, h9), -1);
  }
  emc.clear();
  assert.equal(emc.used, 0);
  assert.equal(emc.lookup(k(1), 0, hashKey(k(1), 0, HASH_BASIS)), -1);
  assert.ok(emc.hits > 0 && emc.misses > 0);
});

test('key offset in a burst array', () => {
  const emc = new ExactMatchCache(64, 1);
  const burst = new Uint32Array(FLOW_WORDS * 4);
  burst.set(k(3), FLOW_WORDS * 2);
  const h = hashKey(burst, FLOW_WORDS * 2, HASH_BASIS);
  emc.insert(burst, FLOW_WORDS * 2, h, 33);
  assert.equal(emc.lookup(k(3), 0, h), 33);
});

test('probabilistic insertion ~ 1/inv', () => {
  const emc = new ExactMatchCache(8192, 100);
  let ins = 0;
  for (let i = 0; i < 20000; i++) if (emc.insert(k(i), 0, hashKey(k(i), 0, HASH_BASIS), i)) ins++;
  assert.ok(ins > 120 && ins < 300, `inserted ${ins}`);
  const never = new ExactMatchCache(16, 0);
  assert.equal(never.insert(k(1), 0, 1, 1), false);
  assert.throws(() => new ExactMatchCache(1000), RangeError);
});

test('replacement when both candidates are taken', () => {
  const emc = new ExactMatchCache(2, 1);
  for (let i = 0; i < 10; i++) emc.insert(k(i), 0, i * 0x10001, i);
  assert.ok(emc.used <= 2);
  assert.equal(emc.lookup(k(9), 0, 9 * 0x10001), 9, 'the newest is always present');
});

test('shouldInsert + insertAlways == insert (same draws); the draw is 1 in inv; the setter checks its value', () => {
  for (const inv of [0, 1, 2, 3, 100, 0xffffffff]) {
    const a = new ExactMatchCache(64, inv, 77);
    const b = new ExactMatchCache(64, inv, 77);
    let n = 0;
    for (let i = 0; i < 30000; i++) {
      const key = k(i & 255);
      const h = hashKey(key, 0, HASH_BASIS);
      const ia = a.insert(key, 0, h, i);
      const ib = b.shouldInsert();
      if (ib) b.insertAlways(key, 0, h, i);
      assert.equal(ib, ia);
      if (ia) n++;
    }
    for (let i = 0; i < 256; i++) assert.equal(b.lookup(k(i), 0, hashKey(k(i), 0, HASH_BASIS)), a.lookup(k(i), 0, hashKey(k(i), 0, HASH_BASIS)));
    const want = inv === 0 ? 0 : 30000 / inv;
    assert.ok(Math.abs(n - want) <= 4 * Math.sqrt(want) + 1, `inv ${inv}: ${n} inserts, expected about ${want}`);
  }
  const emc = new ExactMatchCache(16, 5);
  emc.insertInvProb = 0;
  assert.equal(emc.shouldInsert(), false);
  emc.insertInvProb = 1;
  assert.equal(emc.shouldInsert(), true);
  for (const bad of [-1, 1.5, NaN, 2 ** 32]) assert.throws(() => { emc.insertInvProb = bad; }, RangeError);
});
