/** The package entry point exposes the library, and a minimal program on it works. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tsvs from '../src/index.js';

test('public API: a mempool, a ring port pair and a burst through them', () => {
  for (const name of ['Mempool', 'SharedRegion', 'GuestMemory', 'VhostUserPort', 'VirtioUserPort', 'TapPort', 'AfPacketPort', 'RingPort', 'Datapath', 'Switch', 'Testpmd', 'parseFlow', 'SysError', 'UnixSocket']) {
    assert.equal(typeof (tsvs as Record<string, unknown>)[name], 'function', name);
  }
  const pool = tsvs.Mempool.create({ count: 256 });
  const a = tsvs.RingPort.create('a', pool, 64);
  const b = tsvs.RingPort.attach(a.attachInfo(), pool);
  const bufs = new Int32Array(tsvs.BURST);
  assert.equal(pool.alloc(bufs, 4), 4);
  for (let i = 0; i < 4; i++) {
    pool.data[pool.dataOffset(bufs[i])] = 0x42 + i;
    pool.dataLen[bufs[i]] = 60;
  }
  assert.equal(a.txBurst(0, bufs, 4), 4);
  const got = new Int32Array(tsvs.BURST);
  assert.equal(b.rxBurst(0, got, tsvs.BURST), 4);
  assert.deepEqual(Array.from(got.subarray(0, 4), (h) => pool.data[pool.dataOffset(h)]), [0x42, 0x43, 0x44, 0x45]);
  pool.free(got, 4);
  b.close();
  a.close();
  pool.close();
});
