/**
 * `tsvs memory`'s split of the RSS (src/util/memory.ts rssSplit): pages of a shared memfd mapping
 * count as guests' memory unless the mapping is one of the switch's own (given by start address).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SharedRegion } from '../../src/mem/region.js';
import { rssSplit } from '../../src/util/memory.js';

test('rssSplit: touched pages of a foreign memfd are guest memory, of an own one ownShared; own = RSS - guest', () => {
  const MiB = 1 << 20;
  const before = rssSplit([]);
  assert.ok(before);
  const guest = SharedRegion.create('split-guest', 8 * MiB);
  const pool = SharedRegion.create('split-pool', 4 * MiB);
  try {
    for (let o = 0; o < 6 * MiB; o += 4096) guest.bytes[o] = 1; // 6 MiB of the "guest" touched
    for (let o = 0; o < 3 * MiB; o += 4096) pool.bytes[o] = 1; // 3 MiB of the pool
    const s = rssSplit([pool.addr])!;
    assert.ok(s.guest >= 6 * MiB && s.guest < 6 * MiB + before.guest + MiB, `guest ${s.guest}`);
    assert.ok(s.ownShared >= 3 * MiB && s.ownShared < 4 * MiB + 1, `own shared ${s.ownShared}`);
    // the pool is the switch's own: counted in `own`, not in `guest`
    const asGuest = rssSplit([])!;
    assert.ok(asGuest.guest >= s.guest + 3 * MiB - 64 * 1024, 'without its address the pool would count as guest memory');
  } finally {
    guest.close();
    pool.close();
  }
});
