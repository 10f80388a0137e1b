/** TrafficGen frames: intact for checkFrame, valid IPv4 checksum for every flow, seq increasing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { TrafficGen, checkFrame, frameSeq, CHECK_OK, CHECK_BAD } from '../../src/app/traffic.js';

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
