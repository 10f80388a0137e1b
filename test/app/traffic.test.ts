/** TrafficGen frames: intact for checkFrame, valid IPv4 checksum for every flow, seq increasing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { TrafficGen, TxStream, checkFrame, frameSeq, CHECK_OK, CHECK_BAD } from '../../src/app/traffic.js';

function ipSumOk(d: Uint8Array, o: number): boolean {
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += (d[o + i] << 8) | d[o + i + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

test('TrafficGen.fill: frames check OK, IPv4 checksum valid per flow, at odd and even data offsets', () => {
  const pool = Mempool.create({ name: 'traffic-test', count: 64, bufSize: 128 + 9088 });
  try {
    const h = new Int32Array(1);
    for (const size of [60, 64, 65, 127, 128, 129, 257, 1518, 9018]) {
      for (const flows of [1, 3, 70000]) {
        const gen = new TrafficGen({ size, flows });
        for (let i = 0; i < 5; i++) {
          assert.equal(pool.alloc(h, 1), 1);
          if (i === 3) pool.dataOff[h[0]] = 129; // unaligned start: the byte path
          gen.fill(pool, h[0]);
          const off = pool.dataOffset(h[0]);
          assert.equal(pool.dataLen[h[0]], size);
          assert.equal(checkFrame(pool.data, off, size), CHECK_OK, `size ${size} flows ${flows} #${i}`);
          assert.equal(frameSeq(pool.data, off), i);
          assert.ok(ipSumOk(pool.data, off + 14), `IPv4 checksum, size ${size} flows ${flows} #${i}`);
          if (flows > 1) assert.equal(pool.data[off + 29], i % flows);
          pool.data[off + size - 1] ^= 1;
          if (size > 54) assert.equal(checkFrame(pool.data, off, size), CHECK_BAD, 'damage is seen');
          pool.free(h, 1);
        }
      }
    }
  } finally {
    pool.close();
  }
});

/**
 * A port with a FIFO of `depth` in-flight frames: each txBurst first completes
 * (checks and frees) the frames beyond what may stay in flight, like a
 * device ring reclaimed by the driver.
 */
class FifoPort {
  readonly name = 'fifo';
  readonly type = 'test';
  readonly nQueues = 1;
  readonly link = 'up' as const;
  readonly stats = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, rxDropped: 0, txDropped: 0, drops: {} };
  readonly fifo: number[] = [];
  bad = 0;
  seqs: number[] = [];
  room = true;
  constructor(readonly pool: Mempool, readonly depth: number, readonly onTake?: (h: number) => void) {}
  rxBurst(): number {
    return 0;
  }
  txBurst(_q: number, handles: Int32Array, n: number): number {
    if (!this.room) return 0;
    const tmp = new Int32Array(1);
    while (this.fifo.length > 0 && this.fifo.length + n > this.depth) {
      tmp[0] = this.fifo.shift() as number;
      this.pool.free(tmp, 1);
    }
    for (let i = 0; i < n; i++) {
      const h = handles[i];
      const off = this.pool.dataOffset(h);
      if (checkFrame(this.pool.data, off, this.pool.dataLen[h]) !== CHECK_OK) this.bad++;
      this.seqs.push(frameSeq(this.pool.data, off));
      this.onTake?.(h);
      this.fifo.push(h);
    }
    this.stats.txPackets += n;
    return n;
  }
  drain(): void {
    const tmp = new Int32Array(this.fifo);
    this.pool.free(tmp, tmp.length);
    this.fifo.length = 0;
  }
  close(): void {}
}

test('TxStream with kept buffers: intact frames, fresh sequence numbers, pool untouched in steady state, all back on close', () => {
  for (const size of [64, 1518]) {
    const pool = Mempool.create({ name: 'txstream-test', count: 2048, bufSize: 128 + 1536 });
    try {
      const gen = new TrafficGen({ size, flows: 5 });
      let moved = 0;
      const port = new FifoPort(pool, 100, (h) => {
        // a port that moves a frame's start (e.g. pushes a header) leaves a layout the stream must not trust
        if (++moved === 300) pool.dataOff[h] += 4;
      });
      const tx = new TxStream(pool, gen, 32, 512);
      const avail0 = pool.available();
      let sent = 0;
      for (let i = 0; i < 200; i++) sent += tx.step(port as never, 0);
      assert.equal(sent, 6400);
      assert.equal(port.bad, 0, 'every frame intact when sent');
      assert.deepEqual(port.seqs.slice(0, 3), [512, 513, 514], 'numbered after the initial fills');
      assert.ok(port.seqs.every((s, i) => i === 0 || s === port.seqs[i - 1] + 1), 'sequence numbers consecutive');
      assert.equal(avail0 - pool.available(), 512, 'only the kept set is out of the pool');
      // a refusing port: frames stay pending, nothing more is taken from the pool
      port.room = false;
      for (let i = 0; i < 5; i++) assert.equal(tx.step(port as never, 0), 0);
      assert.equal(tx.pendN, 32);
      assert.equal(avail0 - pool.available(), 512);
      port.room = true;
      port.drain();
      tx.close();
      assert.equal(pool.available(), avail0, 'every buffer back in the pool');
      for (let h = 0; h < pool.count; h++) assert.ok(pool.refcnt[h] === 0, `refcnt of ${h}`);
    } finally {
      pool.close();
    }
  }
});

test('TxStream without kept buffers allocates per frame and frees pending frames on discard', () => {
  const pool = Mempool.create({ name: 'txstream-test2', count: 512 });
  try {
    const port = new FifoPort(pool, 64);
    const tx = new TxStream(pool, new TrafficGen({ size: 60 }), 32, 0);
    const avail0 = pool.available();
    for (let i = 0; i < 20; i++) tx.step(port as never, 0);
    assert.equal(port.bad, 0);
    assert.deepEqual(port.seqs.slice(0, 2), [0, 1]);
    port.room = false;
    tx.step(port as never, 0);
    assert.equal(tx.discard(), 32);
    port.drain();
    assert.equal(pool.available(), avail0);
  } finally {
    pool.close();
  }
});
