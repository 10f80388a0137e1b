/**
 * The TX fast paths of the drivers (postTxPrepared, burst reclaimTx) against
 * the real device queues, split and packed, with and without IN_ORDER:
 * random burst sizes on both sides, every frame arrives intact and in order,
 * every token comes back exactly once, the ring ends empty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { F_IN_ORDER, F_RING_PACKED, F_VERSION_1, RING_F_EVENT_IDX } from '../../src/virtio/features.js';
import { packedLayout, vringLayout } from '../../src/virtio/layout.js';
import { createDeviceQueue, createDriverQueue } from '../../src/virtio/index.js';
import { makeGuardedMemory } from './harness.js';

const RING = 0x10000;
const BUFS = 0x100000;
const NBUF = 64;
const BUF = 256;

function run(packed: boolean, inOrder: boolean, size: number, start: number, steps: { post: number; dev: number; rec: number }[]): void {
  const gm = makeGuardedMemory([
    { gpa: RING, size: 64 * 1024 },
    { gpa: BUFS, size: NBUF * BUF },
  ]);
  const features = F_VERSION_1 | RING_F_EVENT_IDX | (inOrder ? F_IN_ORDER : 0n) | (packed ? F_RING_PACKED : 0n);
  const cfg = packed
    ? (() => {
        const l = packedLayout(RING, size);
        return { size, descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr, features };
      })()
    : { size, ...vringLayout(RING, size), features };
  // packed: ring position | wrap counter << 15 (the vhost-user vring base encoding)
  const startIdx = packed ? (start % size) | (start & 0x8000) : start;
  const drv = createDriverQueue(gm.mem, { ...cfg, startIdx });
  const dev = createDeviceQueue(gm.mem, { ...cfg, lastAvailIdx: startIdx });
  const hdr = drv.hdrLen;
  // buffers: token t uses buffer t % NBUF; a buffer is reused only after its token came back
  const free: number[] = Array.from({ length: NBUF }, (_, i) => i);
  const addrs = new Float64Array(64);
  const lens = new Int32Array(64);
  const toks = new Int32Array(64);
  const back = new Int32Array(64);
  const dst = new Uint8Array(64 * BUF);
  const dstOffs = Int32Array.from({ length: 64 }, (_, i) => i * BUF);
  const dlens = new Int32Array(64);
  let nextTok = 0;
  let nextSeen = 0;
  const outstanding = new Set<number>();
  const bufOf = new Map<number, number>();
  const step = (post: number, devN: number, rec: number): void => {
    let k = 0;
    while (k < post && free.length > 0) {
      const b = free.pop() as number;
      const t = nextTok + k;
      const frameLen = 20 + (t % 50);
      const a = BUFS + b * BUF;
      const v = gm.view(a, hdr + frameLen);
      v.fill(0, 0, hdr);
      for (let i = 0; i < frameLen; i++) v[hdr + i] = (t * 7 + i) & 0xff;
      addrs[k] = a;
      lens[k] = hdr + frameLen;
      toks[k] = t;
      bufOf.set(t, b);
      k++;
    }
    const p = drv.postTxPrepared(addrs, lens, toks, k);
    assert.ok(p <= k);
    for (let i = 0; i < p; i++) outstanding.add(toks[i]);
    for (let i = p; i < k; i++) free.push(bufOf.get(toks[i]) as number);
    nextTok += p;
    const got = dev.dequeueBurst(dst, dstOffs, BUF, dlens, devN);
    for (let i = 0; i < got; i++) {
      const t = nextSeen++;
      const frameLen = 20 + (t % 50);
      assert.equal(dlens[i], frameLen, `frame ${t} length`);
      for (let j = 0; j < frameLen; j++) if (dst[dstOffs[i] + j] !== ((t * 7 + j) & 0xff)) assert.fail(`frame ${t} byte ${j}`);
    }
    const r = drv.reclaimTx(back, rec);
    for (let i = 0; i < r; i++) {
      const t = back[i];
      assert.ok(outstanding.delete(t), `token ${t} returned once`);
      free.push(bufOf.get(t) as number);
    }
  };
  for (const s of steps) step(s.post, s.dev, s.rec);
  // drain
  for (let i = 0; i < 4 * size && outstanding.size > 0; i++) step(0, 64, 64);
  assert.equal(outstanding.size, 0, 'every token back');
  assert.equal(nextSeen, nextTok, 'every frame delivered');
  assert.equal(drv.freeCount, size);
  assert.equal(drv.broken, false);
  assert.equal(dev.broken, false);
  assert.ok(gm.guardsIntact());
}

test('TX fast paths against the real device queues (split/packed, IN_ORDER or not)', () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.boolean(),
      fc.constantFrom(4, 8, 16, 32),
      fc.integer({ min: 0, max: 0xffff }),
      fc.array(fc.record({ post: fc.integer({ min: 0, max: 40 }), dev: fc.integer({ min: 0, max: 40 }), rec: fc.integer({ min: 1, max: 40 }) }), { maxLength: 60 }),
      (packed, inOrder, size, start, steps) => run(packed, inOrder, size, start, steps),
    ),
    { numRuns: process.env.TSVS_LONG ? 2000 : 150 },
  );
});
