// Rings across worker_threads: SPSC (order kept, nothing lost) over a SharedArrayBuffer and over
// a memfd region (koffi view), and MPMC with 2 producers + 2 consumers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { Ring } from '../../src/ring/ring.js';
import { SharedRegion } from '../../src/mem/region.js';
import { runWorker } from '../fixtures/run-worker.js';

const LONG = process.env.TSVS_LONG === '1';

for (const backing of ['sab', 'memfd'] as const) {
  test(`SPSC across two workers over ${backing}: ${LONG ? 20 : 2} M handles in order`, { timeout: 60000 }, async (t) => {
    const n = (LONG ? 20 : 2) * 1000 * 1000;
    const workers: Worker[] = [];
    let ringSpec: object;
    let region: SharedRegion | null = null;
    if (backing === 'sab') {
      const r = Ring.create(1024, 'spsc');
      ringSpec = { sab: r.bytes, offset: 0 };
    } else {
      region = SharedRegion.create('ring-thr', 4096 + Ring.bytesNeeded(1024));
      Ring.init(region.bytes, 4096, 1024, 'spsc');
      ringSpec = { region: region.attachInfo(), offset: 4096 };
    }
    t.after(async () => {
      await Promise.all(workers.map((w) => w.terminate()));
      region?.close();
    });
    const t0 = performance.now();
    const [cons] = await Promise.all([
      runWorker({ role: 'consume-spsc', ring: ringSpec, n }, workers),
      runWorker({ role: 'produce', ring: ringSpec, id: 0, n }, workers),
    ]);
    const ms = performance.now() - t0;
    t.diagnostic(`${(n / ms / 1000).toFixed(1)} M handles/s (incl. worker start)`);
    assert.deepEqual(cons.errors, []);
    assert.equal(cons.got, n);
  });
}

test('MPMC across 2 producer + 2 consumer workers: nothing lost or duplicated, per-producer order kept', { timeout: 60000 }, async (t) => {
  const nProd = 2;
  const perProducer = (LONG ? 5000 : 300) * 1000;
  const total = nProd * perProducer;
  const r = Ring.create(512, 'mpmc');
  const seen = new Uint8Array(new SharedArrayBuffer(total));
  const done = new SharedArrayBuffer(4);
  const workers: Worker[] = [];
  t.after(() => Promise.all(workers.map((w) => w.terminate())));
  const ringSpec = { sab: r.bytes, offset: 0 };
  const cdata = { role: 'consume-mpmc', ring: ringSpec, seen, done, total, perProducer, nProd };
  const results = await Promise.all([
    runWorker(cdata, workers),
    runWorker(cdata, workers),
    runWorker({ role: 'produce', ring: ringSpec, id: 0, n: perProducer }, workers),
    runWorker({ role: 'produce', ring: ringSpec, id: 1, n: perProducer }, workers),
  ]);
  assert.deepEqual(results[0].errors, []);
  assert.deepEqual(results[1].errors, []);
  assert.equal(results[0].got + results[1].got, total);
  t.diagnostic(`consumer split ${results[0].got} / ${results[1].got}`);
  let missing = 0;
  for (let i = 0; i < total; i++) if (seen[i] !== 1) missing++;
  assert.equal(missing, 0, 'every handle seen exactly once');
  assert.equal(r.count(), 0);
});
