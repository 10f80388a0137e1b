import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Mempool, MempoolError, PORT_NONE, DEFAULT_BUF_SIZE, DEFAULT_HEADROOM } from '../../src/mem/mempool.js';
import { SharedRegion } from '../../src/mem/region.js';
import * as libc from '../../src/sys/libc.js';

test('create: defaults, layout, buffers inside the region and disjoint', (t) => {
  const pool = Mempool.create({ name: 't', count: 100 });
  t.after(() => pool.close());
  assert.equal(pool.count, 100);
  assert.equal(pool.bufSize, DEFAULT_BUF_SIZE);
  assert.equal(pool.bufSize, 2048 + 128);
  assert.equal(pool.headroom, DEFAULT_HEADROOM);
  assert.equal(pool.available(), 100);
  assert.ok(pool.region.fd >= 0);
  assert.equal(pool.data, pool.region.bytes);
  assert.ok(pool.stride >= pool.bufSize && pool.stride % 64 === 0);
  assert.equal(pool.bufAddrOffset(1) - pool.bufAddrOffset(0), pool.stride);
  assert.ok(pool.bufAddrOffset(99) + pool.bufSize <= pool.data.length);
  assert.equal(pool.bufAddrOffset(0) % 64, 0);
  const h = pool.allocOne();
  assert.equal(pool.dataOffset(h), pool.bufAddrOffset(h) + 128);
  assert.equal(pool.bufAddr(h), pool.region.addr + pool.bufAddrOffset(h));
  pool.dataOff[h] = 64; // prepend a header into the headroom
  assert.equal(pool.dataOffset(h), pool.bufAddrOffset(h) + 64);
});

test('create: bad options are typed errors', () => {
  assert.throws(() => Mempool.create({ count: 0 }), MempoolError);
  assert.throws(() => Mempool.create({ count: 8, bufSize: 100, headroom: 100 }), MempoolError);
  assert.throws(() => Mempool.create({ count: 8, cacheSize: 10000 }), MempoolError);
  assert.throws(() => Mempool.create({ count: 1 << 20, bufSize: 4096 }), /at most/);
});

test('alloc and free everything, exhaustion counted not thrown', (t) => {
  const pool = Mempool.create({ count: 1000, bufSize: 256, headroom: 32 });
  t.after(() => pool.close());
  const all = new Int32Array(1200);
  assert.equal(pool.alloc(all, 1200), 1000);
  assert.equal(pool.stats.allocFail, 200);
  const set = new Set(all.subarray(0, 1000));
  assert.equal(set.size, 1000);
  for (const h of set) assert.ok(h >= 0 && h < 1000);
  assert.equal(pool.available(), 0);
  assert.equal(pool.allocOne(), -1);
  assert.equal(pool.stats.allocFail, 201);
  assert.equal(pool.alloc(all, 32), 0);
  assert.equal(pool.stats.allocFail, 233);
  // refill the array from the set and free in bursts from offsets
  const hs = Int32Array.from(set);
  for (let i = 0; i < 1000; i += 32) pool.free(hs, Math.min(32, 1000 - i), i);
  assert.equal(pool.available(), 1000);
  assert.equal(pool.stats.badFree, 0);
  assert.equal(pool.alloc(all, 1000), 1000);
  assert.equal(new Set(all.subarray(0, 1000)).size, 1000);
});

test('metadata is reset on alloc', (t) => {
  const pool = Mempool.create({ count: 4, cacheSize: 0 });
  t.after(() => pool.close());
  const out = new Int32Array(4);
  assert.equal(pool.alloc(out, 4), 4);
  for (const h of out) {
    pool.dataOff[h] = 7;
    pool.dataLen[h] = 60;
    pool.pktLen[h] = 60;
    pool.port[h] = 3;
    pool.hash[h] = 99;
    pool.flags[h] = 5;
  }
  pool.next[out[0]] = out[1];
  pool.free(out, 1); // frees the 2-segment chain out[0] -> out[1]
  pool.free(out, 2, 2);
  assert.equal(pool.available(), 4);
  assert.equal(pool.alloc(out, 4), 4);
  for (const h of out) {
    assert.equal(pool.dataOff[h], 128);
    assert.equal(pool.dataLen[h], 0);
    assert.equal(pool.pktLen[h], 0);
    assert.equal(pool.port[h], PORT_NONE);
    assert.equal(pool.refcnt[h], 1);
    assert.equal(pool.next[h], -1);
    assert.equal(pool.hash[h], 0);
    assert.equal(pool.flags[h], 0);
  }
});

test('refcnt > 1: free decrements, last free returns the buffer', (t) => {
  const pool = Mempool.create({ count: 8 });
  t.after(() => pool.close());
  const h = pool.allocOne();
  pool.refcnt[h] = 3;
  pool.freeOne(h);
  assert.equal(pool.refcnt[h], 2);
  assert.equal(pool.available(), 7);
  pool.freeOne(h);
  assert.equal(pool.available(), 7);
  pool.freeOne(h);
  assert.equal(pool.refcnt[h], 0);
  assert.equal(pool.available(), 8);
  assert.equal(pool.stats.badFree, 0);
});

test('hostile frees: bad handles, double free and chain loops are counted, never thrown', (t) => {
  const pool = Mempool.create({ count: 8 });
  t.after(() => pool.close());
  const a = pool.allocOne();
  const b = pool.allocOne();
  pool.freeOne(-5);
  pool.freeOne(8);
  pool.freeOne(1e9);
  assert.equal(pool.stats.badFree, 3);
  pool.freeOne(a);
  pool.freeOne(a);
  assert.equal(pool.stats.badFree, 4, 'double free detected');
  // a loop b -> c -> b: both freed once, the loop stops at the already-free segment
  const c = pool.allocOne();
  pool.next[b] = c;
  pool.next[c] = b;
  pool.freeOne(b);
  assert.equal(pool.stats.badFree, 5);
  assert.equal(pool.available(), 8);
  const out = new Int32Array(8);
  assert.equal(pool.alloc(out, 8), 8);
  assert.equal(new Set(out).size, 8, 'no handle duplicated by the hostile frees');
  pool.free(out, 100); // n beyond the array is clamped
  assert.equal(pool.available(), 8);
});

test('attach validates; fromFd maps the same pool (as another process would)', (t) => {
  const pool = Mempool.create({ count: 16, name: 'fd' });
  t.after(() => pool.close());
  const info = pool.attachInfo();
  assert.deepEqual(JSON.parse(JSON.stringify(info)), info, 'attach info is plain data');
  const same = Mempool.attach(info);
  assert.equal(same.id, pool.id);
  const h = same.allocOne();
  same.flushCache();
  assert.equal(pool.available(), 15);
  pool.freeOne(h);
  assert.throws(() => Mempool.attach({ ...info, id: info.id ^ 1 }), MempoolError);
  const other = Mempool.fromFd(libc.dup(pool.region.fd));
  t.after(() => other.close());
  assert.equal(other.id, pool.id);
  assert.notEqual(other.region.addr, pool.region.addr, 'a second mapping');
  const h2 = other.allocOne();
  other.data[other.dataOffset(h2)] = 0x77;
  other.flushCache();
  assert.equal(pool.data[pool.dataOffset(h2)], 0x77);
  assert.equal(pool.available(), 15);
  // a region that holds something else
  const junk = SharedRegion.create('junk', 4096);
  const fd = libc.dup(junk.fd);
  junk.close();
  assert.throws(() => Mempool.fromFd(fd), /bad magic/);
  libc.close(fd);
});

test('per-thread cache: frees stay local until the flush threshold, then go back in bulk', (t) => {
  const pool = Mempool.create({ count: 1024, cacheSize: 64 });
  t.after(() => pool.close());
  const view = Mempool.attach(pool.attachInfo()); // a second "thread" seeing the shared ring only
  const out = new Int32Array(512);
  assert.equal(pool.alloc(out, 10), 10);
  assert.equal(pool.cached(), 64, 'refilled to cacheSize');
  assert.equal(view.available(), 1024 - 74);
  assert.equal(pool.alloc(out, 500), 500, 'large request goes to the ring directly');
  pool.free(out, 500);
  assert.ok(pool.cached() <= 96, `cache bounded (${pool.cached()})`);
  pool.flushCache();
  assert.equal(pool.cached(), 0);
  assert.equal(view.available(), 1024 - 10);
});

test('property: random alloc/free sequences never duplicate a handle and lose nothing', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 200 }),
      fc.constantFrom(0, 1, 4, 32),
      fc.array(
        fc.oneof(
          fc.record({ op: fc.constant('alloc' as const), n: fc.integer({ min: 0, max: 80 }) }),
          fc.record({ op: fc.constant('free' as const), n: fc.integer({ min: 0, max: 80 }), from: fc.nat() }),
          fc.record({ op: fc.constant('ref' as const), from: fc.nat() }),
          fc.record({ op: fc.constant('flush' as const) }),
        ),
        { maxLength: 80 },
      ),
      (count, cacheSize, ops) => {
        const pool = Mempool.create({ count, cacheSize: Math.min(cacheSize, count), bufSize: 64, headroom: 16 });
        try {
          const held: number[] = [];
          const refs = new Map<number, number>();
          const out = new Int32Array(80);
          let fails = 0;
          for (const o of ops) {
            if (o.op === 'alloc') {
              const k = pool.alloc(out, o.n);
              assert.equal(k, Math.min(o.n, count - refs.size), 'single thread: everything free is allocatable');
              fails += o.n - k;
              for (let i = 0; i < k; i++) {
                const h = out[i];
                assert.ok(h >= 0 && h < count);
                assert.ok(!refs.has(h), `handle ${h} handed out twice`);
                assert.equal(pool.refcnt[h], 1);
                refs.set(h, 1);
                held.push(h);
              }
            } else if (o.op === 'free' && held.length > 0) {
              const start = o.from % held.length;
              const take = held.splice(start, o.n);
              for (const h of take) {
                const r = refs.get(h)! - 1;
                // each entry of `held` is one reference
                if (r === 0) refs.delete(h);
                else refs.set(h, r);
              }
              pool.free(Int32Array.from(take), take.length);
            } else if (o.op === 'ref' && held.length > 0) {
              const h = held[o.from % held.length];
              pool.refcnt[h]++;
              refs.set(h, refs.get(h)! + 1);
              held.push(h);
            } else if (o.op === 'flush') {
              pool.flushCache();
            }
            assert.equal(pool.available(), count - refs.size);
            assert.equal(pool.stats.allocFail, fails);
            assert.equal(pool.stats.badFree, 0);
          }
        } finally {
          pool.close();
        }
      },
    ),
    { numRuns: 150 },
  );
});
