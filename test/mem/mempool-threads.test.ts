// Two worker threads allocate and free from one shared pool at the same time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { Mempool } from '../../src/mem/mempool.js';
import { runWorker } from '../fixtures/run-worker.js';

const LONG = process.env.TSVS_LONG === '1';

for (const cacheSize of [32, 0]) {
  test(`two workers alloc/free concurrently (cache ${cacheSize}): no buffer shared, none lost`, { timeout: 60000 }, async (t) => {
    // small pool so the workers run into exhaustion and fight over the last buffers
    const pool = Mempool.create({ name: 'thr', count: 128, bufSize: 256, headroom: 64, cacheSize });
    const workers: Worker[] = [];
    t.after(async () => {
      await Promise.all(workers.map((w) => w.terminate()));
      pool.close();
    });
    const iterations = LONG ? 500_000 : 50_000;
    const info = pool.attachInfo();
    const barrier = new SharedArrayBuffer(4);
    const rs = await Promise.all(
      [1, 2].map((id) => runWorker({ role: 'pool-churn', pool: info, id, iterations, barrier, parties: 2 }, workers)),
    );
    for (const r of rs) {
      assert.deepEqual(r.errors, []);
      assert.equal(r.badFree, 0);
      t.diagnostic(`worker allocated ${r.allocated}, allocFail ${r.allocFail}`);
    }
    assert.ok(rs[0].allocFail + rs[1].allocFail > 0, 'the pool did run dry (contention was real)');
    assert.equal(pool.available(), 128);
    const all = new Int32Array(128);
    assert.equal(pool.alloc(all, 128), 128);
    assert.equal(new Set(all).size, 128, 'every handle exactly once');
  });
}
