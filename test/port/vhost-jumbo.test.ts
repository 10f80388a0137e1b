/**
 * Jumbo frames over vhost-user: a VhostUserPort (the switch side, with
 * 9216-byte buffers as `--max-mtu 9000` makes them) and our virtio-user
 * frontend in one process, 9014-byte frames both ways, split and packed
 * rings, with and without MRG_RXBUF; a frontend with small buffers gets the
 * frame as a segment chain (MRG_RXBUF); a switch with the default buffers
 * counts the frame as 'rx-too-big'. Contents are checked byte for byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import type { Port } from '../../src/port/port.js';
import { bufferLayout } from '../../src/daemon/switch.js';
import { waitFor, waitForOrTimeout } from '../harness/wait.js';

const quiet = { log: () => {} };
const FRAME = 9014;

function fill(pool: Mempool, h: number, len: number, seed: number): void {
  const o = pool.dataOffset(h);
  for (let i = 0; i < len; i++) pool.data[o + i] = (i * 7 + seed) & 0xff;
  pool.data.fill(0xff, o, o + 6); // broadcast destination
  pool.dataLen[h] = len;
  pool.pktLen[h] = len;
}

/** Gather a (possibly chained) packet's bytes. */
function bytesOf(pool: Mempool, h: number): Buffer {
  const parts: Uint8Array[] = [];
  for (let s = h; s !== -1; s = pool.next[s]) parts.push(pool.data.slice(pool.dataOffset(s), pool.dataOffset(s) + pool.dataLen[s]));
  return Buffer.concat(parts);
}

function expected(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  b.fill(0xff, 0, 6);
  return b;
}

/** Send one frame of `len` from `from` (its pool) and wait for it at `to`; returns the received handle or -1. */
async function oneFrame(from: Port, fromPool: Mempool, to: Port, len: number, seed: number): Promise<{ h: number; port: Port } | null> {
  const out = new Int32Array(32);
  assert.equal(fromPool.alloc(out, 1), 1);
  fill(fromPool, out[0], len, seed);
  const sent = from.txBurst(0, out, 1);
  if (sent < 1) fromPool.free(out, 1);
  const n = await waitForOrTimeout(
    () => {
      from.rxBurst(0, out, 0); // lets a virtio-user sender reclaim
      return to.rxBurst(0, out, 32);
    },
    { what: 'the frame at the other end', timeout: 2000, interval: 1 },
  );
  if (n === undefined) return null;
  assert.equal(n, 1);
  return { h: out[0], port: to };
}

async function pair(t: { after(fn: () => void | Promise<void>): void }, swBuf: number, feBuf: number, o: { packed?: boolean; mrgRxbuf?: boolean }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vjumbo-'));
  const swPool = Mempool.create({ name: 'sw', count: 2048, bufSize: swBuf });
  const fePool = Mempool.create({ name: 'fe', count: 2048, bufSize: feBuf });
  const sw = new VhostUserPort({ name: 'vm', path: path.join(dir, 'sock'), mempool: swPool, mtu: 9000, logger: quiet });
  const fe = new VirtioUserPort({ name: 'fe', path: path.join(dir, 'sock'), pool: fePool, packed: o.packed, mrgRxbuf: o.mrgRxbuf, logger: quiet });
  t.after(async () => {
    fe.close();
    await sw.closeAsync();
    swPool.close();
    fePool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(() => sw.link === 'up' && fe.link === 'up', { what: 'both links up', timeout: 10000, interval: 5, describe: () => sw.status ?? '' });
  return { sw, fe, swPool, fePool };
}

const big = bufferLayout(9000).bufSize;

for (const packed of [false, true]) {
  for (const mrgRxbuf of [true, false]) {
    test(`vhost-user ${packed ? 'packed' : 'split'} ${mrgRxbuf ? 'MRG_RXBUF' : 'no MRG_RXBUF'}: 9014-byte frames both ways with ${big}-byte buffers`, async (t) => {
      const { sw, fe, swPool, fePool } = await pair(t, big, big, { packed, mrgRxbuf });
      assert.equal(sw.device!.mtu, 9000, 'MTU offered in config space');
      for (let i = 0; i < 3; i++) {
        // guest -> switch (vhost-user rxBurst)
        const a = await oneFrame(fe, fePool, sw, FRAME - i, 10 + i);
        assert.ok(a, `switch received the frame ${JSON.stringify(sw.stats)}`);
        assert.deepEqual(bytesOf(swPool, a.h), expected(FRAME - i, 10 + i));
        swPool.freeOne(a.h);
        // switch -> guest (vhost-user txBurst)
        const b = await oneFrame(sw, swPool, fe, FRAME - i, 20 + i);
        assert.ok(b, `frontend received the frame ${JSON.stringify(sw.stats)} ${JSON.stringify(fe.stats)}`);
        assert.deepEqual(bytesOf(fePool, b.h), expected(FRAME - i, 20 + i));
        fePool.free(Int32Array.of(b.h), 1);
      }
      assert.equal(sw.stats.rxPackets, 3);
      assert.equal(sw.stats.txPackets, 3);
      assert.ok(sw.stats.rxBytes >= 3 * (FRAME - 2) && sw.stats.txBytes >= 3 * (FRAME - 2));
      assert.deepEqual(Object.entries(sw.stats.drops).filter(([, v]) => v > 0), []);
    });
  }
}

test('vhost-user MRG_RXBUF: a 9014-byte frame reaches a guest with 2048-byte buffers as a chain', async (t) => {
  const { sw, fe, swPool, fePool } = await pair(t, big, 2176, { mrgRxbuf: true });
  const b = await oneFrame(sw, swPool, fe, FRAME, 3);
  assert.ok(b, JSON.stringify(sw.stats));
  assert.ok(fePool.next[b.h] !== -1, 'spread over several guest buffers');
  assert.deepEqual(bytesOf(fePool, b.h), expected(FRAME, 3));
  fePool.free(Int32Array.of(b.h), 1);
});

test('vhost-user with default buffers: a 9014-byte guest frame is dropped as rx-too-big', async (t) => {
  const { sw, fe, fePool } = await pair(t, 2176, big, {});
  const a = await oneFrame(fe, fePool, sw, FRAME, 1);
  assert.equal(a, null);
  assert.equal(sw.stats.drops['rx-too-big'], 1, JSON.stringify(sw.stats));
  const ok = await oneFrame(fe, fePool, sw, 2048, 2);
  assert.ok(ok, 'a frame of exactly the buffer room passes');
});
