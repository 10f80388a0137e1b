/** Unit tests: the stats board (shared-memory counters, layout changes, link changes), capture rings, pcap records. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { StatsBoardWriter, StatsBoardReader, newBoardBuffer } from '../../src/dp/stats-board.js';
import { newCaptureRing, CaptureTap, CaptureReader, DIR_RX, DIR_TX } from '../../src/dp/capture-tap.js';
import { Mempool } from '../../src/mem/mempool.js';
import { newPortStats } from '../../src/port/port.js';
import { pcapHeader, pcapRecord, frameSummary } from '../../src/capture/pcap.js';
import type { PmdStats } from '../../src/dp/datapath.js';

function pmdStats(): PmdStats {
  return {
    iterations: 0, busyIterations: 0, rxPackets: 0, emcHits: 0, megaflowHits: 0, misses: 0, upcalls: 0, upcallsCoalesced: 0,
    upcallsLost: 0, txPackets: 0, busyNs: 0, idleNs: 0, rxNs: 0, processNs: 0, txNs: 0, oneCopy: 0, drops: {},
  };
}
const extra = (nowMs: number) => ({ flows: 3, pending: 2, poolAvailable: 10, poolCount: 16, poolAllocFail: 1, nowMs });

test('stats board: counters, drop reasons appearing, ports coming and going, link changes and reconnects', () => {
  const buf = newBoardBuffer();
  const w = new StatsBoardWriter(buf);
  const r = new StatsBoardReader(buf);
  const s = pmdStats();
  const a = { name: 'a', type: 'vhost-user', link: 'down', nQueues: 1, stats: newPortStats() };
  const b = { name: 'b', type: 'tap', link: 'up', nQueues: 2, stats: newPortStats() };
  w.publish(s, extra(1), [[1, a]], () => 0);
  let snap = r.read();
  assert.equal(snap.ports.length, 1);
  assert.equal(snap.ports[0].link, 'down');
  assert.equal(snap.flows, 3);
  assert.equal(snap.pendingUpcalls, 2);
  s.rxPackets = 123;
  s.drops['no-rule'] = 7;
  a.stats.rxPackets = 5;
  a.stats.drops['tx-no-room'] = 4;
  a.link = 'up';
  w.publish(s, extra(2), [[1, a], [2, b]], (n, q) => n * 100 + q);
  snap = r.read();
  assert.equal(snap.pmd.rxPackets, 123);
  assert.deepEqual(snap.pmd.drops, { 'no-rule': 7 });
  assert.deepEqual(snap.ports.map((p) => [p.portNo, p.name, p.link, p.stats.rxPackets]), [[1, 'a', 'up', 5], [2, 'b', 'up', 0]]);
  assert.deepEqual(snap.ports[0].stats.drops, { 'tx-no-room': 4 });
  assert.deepEqual(snap.ports[1].rxq, [200, 201]);
  assert.equal(snap.ports[0].linkChanges, 1);
  assert.equal(snap.ports[0].reconnects, 0, 'the first up is not a reconnect');
  a.link = 'down';
  w.publish(s, extra(3), [[1, a], [2, b]], () => 0);
  a.link = 'up';
  w.publish(s, extra(4), [[1, a], [2, b]], () => 0);
  snap = r.read();
  assert.equal(snap.ports[0].linkChanges, 3);
  assert.equal(snap.ports[0].reconnects, 1);
  w.publish(s, extra(5), [[2, b]], () => 0);
  snap = r.read();
  assert.deepEqual(snap.ports.map((p) => p.name), ['b']);
  assert.equal(snap.publishedMs, 5);
});

test('stats board: a reader on another thread never sees a torn update', async () => {
  const buf = newBoardBuffer();
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const f = new Float64Array(workerData.buf, 16, 8);
     const h = new Int32Array(workerData.buf, 0, 4);
     let v = 0;
     const end = Date.now() + 300;
     while (Date.now() < end) { Atomics.add(h, 0, 1); v++; for (let i = 0; i < 8; i++) f[i] = v; Atomics.add(h, 0, 1); }
     parentPort.postMessage(v);`,
    { eval: true, workerData: { buf } },
  );
  const r = new StatsBoardReader(buf);
  let reads = 0;
  const done = new Promise<number>((res) => worker.once('message', res));
  let finished = false;
  void done.then(() => (finished = true));
  while (!finished) {
    const s = r.read();
    // fields 0..7 of the PMD slots were all written with the same value
    const vals = [s.pmd.iterations, s.pmd.busyIterations, s.pmd.rxPackets, s.pmd.emcHits, s.pmd.megaflowHits, s.pmd.misses, s.pmd.upcalls, s.pmd.upcallsCoalesced];
    assert.ok(vals.every((x) => x === vals[0]), `consistent: ${vals}`);
    reads++;
    if (reads % 100 === 0) await new Promise((res) => setImmediate(res));
  }
  await worker.terminate();
  assert.ok(reads > 10);
});

test('capture ring: copies frames with direction and length, counts overflow, never blocks', () => {
  const pool = Mempool.create({ count: 64 });
  try {
    const ring = newCaptureRing(4, 100);
    const tap = new CaptureTap(1, 7, DIR_RX, ring.buf);
    const rd = new CaptureReader(ring.buf);
    const hs = new Int32Array(6);
    assert.equal(pool.alloc(hs, 6), 6);
    for (let i = 0; i < 6; i++) {
      const off = pool.dataOffset(hs[i]);
      pool.dataLen[hs[i]] = 60 + i * 20;
      for (let k = 0; k < pool.dataLen[hs[i]]; k++) pool.data[off + k] = (i + k) & 0xff;
    }
    const words = new Int32Array(pool.data.buffer, pool.data.byteOffset, pool.data.length >> 2);
    tap.copy(pool, words, hs, 6, DIR_TX, 1000); // not captured: rx only
    assert.equal(rd.drain().length, 0);
    tap.copy(pool, words, hs, 6, DIR_RX, 1234.5);
    assert.equal(rd.overflow, 2, 'a 4-slot ring takes 4 of 6');
    const got = rd.drain();
    assert.equal(got.length, 4);
    got.forEach((f, i) => {
      assert.equal(f.dir, 'rx');
      assert.equal(f.tsMs, 1234.5);
      assert.equal(f.origLen, 60 + i * 20);
      assert.equal(f.data.length, Math.min(104, 60 + i * 20), 'snaplen rounded up to 8');
      assert.ok(f.data.every((x, k) => x === ((i + k) & 0xff)));
    });
    tap.copy(pool, words, hs, 1, DIR_RX, 2000);
    assert.equal(rd.drain().length, 1, 'room again after the reader drained');
    pool.free(hs, 6);
  } finally {
    pool.close();
  }
});

test('pcap: file header and records as libpcap writes them; frame summaries', () => {
  const h = pcapHeader(9216);
  assert.equal(h.toString('hex'), 'd4c3b2a1020004000000000000000000' + '00240000' + '01000000');
  const rec = pcapRecord(1700000000123.456, new Uint8Array([1, 2, 3]), 60);
  assert.equal(rec.readUInt32LE(0), 1700000000);
  assert.equal(rec.readUInt32LE(4), 123456);
  assert.equal(rec.readUInt32LE(8), 3);
  assert.equal(rec.readUInt32LE(12), 60);
  const f = new Uint8Array(42);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45], 0);
  f[23] = 17;
  f.set([10, 0, 0, 1, 10, 0, 0, 2, 0x04, 0x00, 0x00, 0x35], 26);
  assert.equal(frameSummary(f), '02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10.0.0.1 > 10.0.0.2, udp 1024 > 53');
});
