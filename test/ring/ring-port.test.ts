import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort, RingPortError } from '../../src/port/ring-port.js';
import * as libc from '../../src/sys/libc.js';
import { idle } from '../fixtures/ring-roles.js';

const WORKER = new URL('../fixtures/ring-worker.js', import.meta.url);
const LONG = process.env.TSVS_LONG === '1';

function fill(pool: Mempool, h: number, seq: number): number {
  const len = 60 + (seq % 200);
  const off = pool.dataOffset(h);
  const d = pool.data;
  d[off] = seq & 0xff;
  d[off + 1] = (seq >> 8) & 0xff;
  d[off + 2] = (seq >> 16) & 0xff;
  for (let j = 3; j < len; j++) d[off + j] = (seq + j) & 0xff;
  pool.dataLen[h] = len;
  pool.pktLen[h] = len;
  return len;
}

test('same thread: both ends, stats, link, drops, close returns buffers', (t) => {
  const pool = Mempool.create({ count: 256, cacheSize: 0 });
  t.after(() => pool.close());
  const a = RingPort.create('p0', pool, 64);
  assert.equal(a.type, 'ring');
  assert.equal(a.nQueues, 1);
  assert.equal(a.link, 'down', 'no peer yet');
  const b = RingPort.attach(a.attachInfo(), pool);
  assert.equal(a.link, 'up');
  assert.equal(b.link, 'up');
  assert.throws(() => RingPort.attach(a.attachInfo(), pool), /already open/);
  const other = Mempool.create({ count: 8 });
  const c = RingPort.create('c', pool, 64);
  assert.throws(() => RingPort.attach(c.attachInfo(), other), /different mempool/);
  assert.throws(() => RingPort.create('bad', pool, 100), RingPortError);
  c.close();
  other.close();

  const out = new Int32Array(100);
  assert.equal(pool.alloc(out, 100), 100);
  let bytes = 0;
  for (let i = 0; i < 100; i++) bytes += fill(pool, out[i], i);
  assert.equal(a.txBurst(0, out, 100), 64, 'ring of 64 takes 64');
  assert.equal(a.stats.txPackets, 64);
  assert.equal(a.stats.drops['tx-no-room'], 36);
  assert.equal(a.stats.txDropped, 36);
  let bytes64 = 0;
  for (let i = 0; i < 64; i++) bytes64 += pool.pktLen[out[i]];
  assert.equal(a.stats.txBytes, bytes64);
  assert.equal(b.rxPending(0), 64);
  const rx = new Int32Array(32);
  assert.equal(b.rxBurst(0, rx, 32), 32);
  assert.deepEqual([...rx], [...out.subarray(0, 32)]);
  assert.equal(b.rxBurst(5, rx, 32), 0, 'bad queue');
  assert.equal(b.txBurst(9, rx, 32), 0, 'bad queue');
  assert.equal(b.stats.drops['tx-bad-queue'], 32);
  // b sends 32 back; a leaves them unread
  assert.equal(b.txBurst(0, rx, 32), 32);
  // b closes with 32 packets unread in its rx: they go back to the pool
  b.close();
  assert.equal(a.link, 'down');
  assert.equal(a.txBurst(0, out, 36), 0);
  assert.equal(a.stats.drops['tx-peer-closed'], 36);
  pool.free(out, 36, 64);
  assert.equal(pool.available(), 256 - 32, 'a still has 32 packets waiting in its rx');
  a.close();
  assert.equal(pool.available(), 256, 'the last closer drained everything');
  assert.equal(bytes > 0, true);
});

test('fromFd opens the peer end over the memfd (another process does the same)', (t) => {
  const pool = Mempool.create({ count: 64 });
  t.after(() => pool.close());
  const a = RingPort.create('fd', pool, 16, { queues: 2 });
  const b = RingPort.fromFd(libc.dup(a.region.fd), pool);
  assert.equal(b.side, 1);
  assert.equal(b.nQueues, 2);
  const h = new Int32Array(1);
  h[0] = pool.allocOne();
  fill(pool, h[0], 7);
  assert.equal(b.txBurst(1, h, 1), 1);
  const r = new Int32Array(4);
  assert.equal(a.rxBurst(0, r, 4), 0, 'other queue');
  assert.equal(a.rxBurst(1, r, 4), 1);
  assert.equal(r[0], h[0]);
  assert.equal(a.stats.rxBytes, 67);
  pool.free(r, 1);
  b.close();
  a.close();
  assert.equal(pool.available(), 64);
});

test(`across two workers: ${LONG ? 2000 : 100} k packets echoed with payload intact`, { timeout: 60000 }, async (t) => {
  const n = (LONG ? 2000 : 100) * 1000;
  const pool = Mempool.create({ name: 'rp', count: 2048 });
  const port = RingPort.create('rp', pool, 512);
  const w = new Worker(WORKER, { workerData: { role: 'ringport-echo', pool: pool.attachInfo(), port: port.attachInfo(), n } });
  t.after(async () => {
    await w.terminate();
    port.close();
    pool.close();
  });
  let failed: unknown = null;
  w.once('error', (e) => (failed = e));
  const answer = new Promise<any>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  const tx = new Int32Array(32);
  const rx = new Int32Array(32);
  let sent = 0;
  let got = 0;
  let txBytes = 0;
  const errors: string[] = [];
  const deadline = performance.now() + 30000;
  let loops = 0;
  let empty = 0;
  // Spin on the main thread (a PMD loop); the worker answers on its own thread.
  while (got < n) {
    if ((++loops & 1023) === 0 && (performance.now() > deadline || failed)) break;
    if (sent < n) {
      const k = pool.alloc(tx, Math.min(32, n - sent));
      let b = 0;
      for (let i = 0; i < k; i++) b += fill(pool, tx[i], sent + i);
      const s = port.txBurst(0, tx, k);
      for (let i = s; i < k; i++) b -= pool.pktLen[tx[i]];
      pool.free(tx, k - s, s);
      sent += s;
      txBytes += b;
    }
    const r = port.rxBurst(0, rx, 32);
    for (let i = 0; i < r; i++) {
      const h = rx[i];
      const off = pool.dataOffset(h);
      const d = pool.data;
      const seq = d[off] | (d[off + 1] << 8) | (d[off + 2] << 16);
      if (seq !== ((got + i) & 0xffffff) && errors.length < 5) errors.push(`expected ${got + i}, got ${seq}`);
      const len = pool.pktLen[h];
      if (len !== 60 + (seq % 200) && errors.length < 5) errors.push(`packet ${seq}: length ${len}`);
      for (let j = 3; j < len; j++) {
        if (d[off + j] !== (((seq + j) & 0xff) ^ 0xff)) {
          if (errors.length < 5) errors.push(`packet ${seq}: byte ${j}`);
          break;
        }
      }
    }
    pool.free(rx, r);
    got += r;
    empty = r === 0 ? idle(empty) : 0;
  }
  assert.equal(failed, null);
  assert.deepEqual(errors, []);
  assert.equal(got, n);
  const res = await answer;
  assert.deepEqual(res.errors, []);
  assert.equal(res.link, 'up');
  assert.equal(res.got, n);
  assert.equal(res.stats.rxPackets, n);
  assert.equal(res.stats.txPackets, n);
  assert.equal(res.stats.rxBytes, txBytes);
  assert.equal(port.stats.txPackets, n);
  assert.equal(port.stats.rxPackets, n);
  assert.equal(port.stats.txBytes, txBytes);
  assert.equal(port.stats.rxBytes, txBytes);
  assert.equal(port.link, 'down', 'the worker closed its end');
  port.close();
  assert.equal(pool.available(), 2048, 'every buffer back (worker flushed its cache)');
});
