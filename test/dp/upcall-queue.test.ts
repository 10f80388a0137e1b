/**
 * The upcall queue: a burst of new flows that fits it (MAX_PENDING = 2048 held
 * packets) loses nothing; past it, packets are dropped and counted
 * (upcallsLost, drop reason upcall-queue-full) but their flows are still set up
 * (an upcall without a packet, UPCALL_NO_PACKET), so the next packets hit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath, UPCALL_NO_PACKET } from '../../src/dp/datapath.js';
import { FLOW_WORDS, W_IN_PORT } from '../../src/dp/flow-key.js';
import { OP_OUTPUT } from '../../src/dp/actions.js';

/** UDP frame of flow i (source IP 10.1.i>>8.i&255). */
function frame(i: number): Uint8Array {
  const f = new Uint8Array(64);
  f.set([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17], 0);
  f.set([10, 1, i >> 8, i & 255, 10, 0, 0, 2], 26);
  f.set([0x30, 0x39, 0x00, 0x35], 34);
  return f;
}

function offer(pool: Mempool, peer: RingPort, dp: Datapath, from: number, n: number): void {
  const hs = new Int32Array(32);
  for (let i = 0; i < n; i += 32) {
    const k = Math.min(32, n - i);
    assert.equal(pool.alloc(hs, k), k);
    for (let j = 0; j < k; j++) {
      pool.data.set(frame(from + i + j), pool.dataOffset(hs[j]));
      pool.dataLen[hs[j]] = 64;
      pool.pktLen[hs[j]] = 64;
    }
    assert.equal(peer.txBurst(0, hs, k), k);
    while (dp.pollOnce() > 0);
  }
}

function drain(pool: Mempool, peer: RingPort): number {
  const hs = new Int32Array(32);
  let total = 0;
  for (let n; (n = peer.rxBurst(0, hs, 32)) > 0; total += n) pool.free(hs, n);
  return total;
}

test('a burst of new flows that fits the upcall queue loses nothing; past it, drops are counted and flows still set up', () => {
  const pool = Mempool.create({ count: 8192 });
  const a = RingPort.create('a', pool, 1024);
  const b = RingPort.create('b', pool, 4096);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const ups: { id: number; key: Uint32Array }[] = [];
  const dp = new Datapath(pool, { upcall: (id, _p, _f, key) => ups.push({ id, key: key.slice() }) });
  dp.addPort(1, a);
  dp.addPort(2, b);
  const mask = new Uint32Array(FLOW_WORDS).fill(0xffffffff);
  const prog = Int32Array.from([OP_OUTPUT, 2]);
  const answer = (): void => {
    for (const u of ups.splice(0)) {
      dp.installFlow(u.key, mask, prog);
      dp.upcallReply(u.id, prog);
    }
  };

  offer(pool, peerA, dp, 0, 2048);
  assert.equal(ups.length, 2048, 'one upcall per new flow');
  assert.equal(dp.pendingUpcalls, 2048);
  assert.equal(dp.stats.upcallsLost, 0, 'no failed upcall for a burst that fits the queue');
  answer();
  assert.equal(drain(pool, peerB), 2048, 'every held packet forwarded once answered');
  assert.equal(dp.flowCount, 2048);

  // 2048 more new flows fill the queue again; 100 beyond that are dropped, counted, and still set up
  offer(pool, peerA, dp, 4096, 2048 + 100);
  assert.equal(dp.stats.upcallsLost, 100);
  assert.equal(dp.stats.drops['upcall-queue-full'], 100);
  assert.equal(ups.filter((u) => u.id === UPCALL_NO_PACKET).length, 100, 'flow setup continues past the queue');
  answer();
  assert.equal(drain(pool, peerB), 2048, 'the held packets go out; the dropped ones do not');
  assert.equal(dp.flowCount, 2048 + 2048 + 100, 'every offered flow has its megaflow');
  offer(pool, peerA, dp, 4096 + 2048, 100);
  assert.equal(ups.length, 0, 'the flows set up past the queue hit');
  assert.equal(drain(pool, peerB), 100);
  pool.flushCache();
  assert.equal(pool.available(), pool.count - 0, 'every buffer back');
});
