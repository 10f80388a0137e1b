/**
 * Property tests: a driver and a device of the same ring kind on the same
 * GuestMemory exchange random packets in both directions under every feature
 * combination, across 16-bit index wrap-around (split) and ring wrap (packed).
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  F_ANY_LAYOUT,
  F_IN_ORDER,
  F_RING_PACKED,
  F_VERSION_1,
  NET_F_MRG_RXBUF,
  RING_F_EVENT_IDX,
  RING_F_INDIRECT_DESC,
} from '../../src/virtio/features.js';
import { packedLayout, vringLayout } from '../../src/virtio/layout.js';
import { getNumBuffers, netHdrLen } from '../../src/virtio/net-header.js';
import { createDeviceQueue, createDriverQueue } from '../../src/virtio/index.js';
import type { DeviceQueue } from '../../src/virtio/device-queue.js';
import type { DriverQueue } from '../../src/virtio/driver-queue.js';
import { checkFrame, fillFrame, makeGuardedMemory } from './harness.js';

const A = 0x10000; // rings and indirect tables
const B = 0x40000000; // packet buffers (not adjacent to A)
const MIB = 1 << 20;
const gm = makeGuardedMemory([
  { gpa: A, size: 4 * MIB },
  { gpa: B, size: 8 * MIB },
]);
const TX_RING = A;
const TX_IND = A + MIB;
const RX_RING = A + 2 * MIB;
const RX_IND = A + 3 * MIB;
/** Buffers per pool (a 32768 ring is not filled, its indices still wrap). */
const POOL_SLOTS = 300;
const TX_POOL = B;
const RX_POOL = B + 4 * MIB;
const MAX_FRAME = 9000;
const TX_STRIDE = 9024;

export interface ExchangeParams {
  packed: boolean;
  version1: boolean;
  anyLayout: boolean;
  mrg: boolean;
  indirect: boolean;
  eventIdx: boolean;
  inOrder: boolean;
  size: number;
  txStart: number;
  rxStart: number;
  txLens: number[];
  rxLens: number[];
  /** RX buffer size with MRG_RXBUF; without it, the largest frame. */
  rxCap: number;
  bursts: number[];
  seed: number;
}

function featuresOf(p: ExchangeParams): bigint {
  let f = 0n;
  if (p.packed) f |= F_RING_PACKED;
  if (p.version1) f |= F_VERSION_1;
  if (p.anyLayout) f |= F_ANY_LAYOUT;
  if (p.mrg) f |= NET_F_MRG_RXBUF;
  if (p.indirect) f |= RING_F_INDIRECT_DESC;
  if (p.eventIdx) f |= RING_F_EVENT_IDX;
  if (p.inOrder) f |= F_IN_ORDER;
  return f;
}

function ringCfg(p: ExchangeParams, base: number): { descAddr: number; availAddr: number; usedAddr: number } {
  if (p.packed) {
    const l = packedLayout(base, p.size);
    return { descAddr: l.descAddr, availAddr: l.driverEventAddr, usedAddr: l.deviceEventAddr };
  }
  return vringLayout(base, p.size);
}

export function exchange(p: ExchangeParams): void {
  const features = featuresOf(p);
  const hdrLen = netHdrLen(features);
  const size = p.size;
  const mem = gm.mem;
  const txRing = ringCfg(p, TX_RING);
  const rxRing = ringCfg(p, RX_RING);
  const drvTx: DriverQueue = createDriverQueue(mem, { size, ...txRing, features, indirectAddr: TX_IND, startIdx: p.txStart });
  const drvRx: DriverQueue = createDriverQueue(mem, { size, ...rxRing, features, indirectAddr: RX_IND, startIdx: p.rxStart });
  const devTx: DeviceQueue = createDeviceQueue(mem, { size, ...txRing, features, lastAvailIdx: p.txStart });
  const devRx: DeviceQueue = createDeviceQueue(mem, { size, ...rxRing, features, lastAvailIdx: p.rxStart });
  assert.equal(devTx.lastAvailIdx, p.txStart);

  // how many buffers can be outstanding at once
  const perBuf = p.indirect ? 1 : drvTx.hdrSplit ? 2 : 1;
  const maxBufs = Math.floor(size / perBuf);
  assert.ok(maxBufs >= 1);
  const rxCap = p.mrg ? p.rxCap : hdrLen + p.rxCap;
  const rxLimit = p.mrg ? Math.min(MAX_FRAME, Math.min(maxBufs, 1024) * rxCap - hdrLen) : p.rxCap;
  const rxLens = p.rxLens.map((l) => 1 + ((l - 1) % rxLimit));
  const txLens = p.txLens;
  const rxStride = Math.ceil(rxCap / 8) * 8;

  const B32 = 64;
  const addrs = new Float64Array(B32);
  const lens = new Int32Array(B32);
  const tokens = new Int32Array(B32);
  const tokOut = new Int32Array(B32);
  const lenOut = new Int32Array(B32);
  const nbOut = new Int32Array(B32);
  const dst = new Uint8Array(B32 * MAX_FRAME);
  const dstOffs = new Int32Array(B32).map((_, i) => i * MAX_FRAME);
  const src = new Uint8Array(B32 * MAX_FRAME);
  const srcOffs = new Int32Array(B32).map((_, i) => i * MAX_FRAME);
  const frame = new Uint8Array(MAX_FRAME + 2 * hdrLen + rxCap);

  const txFree: number[] = [];
  const rxFree: number[] = [];
  for (let i = Math.min(size, POOL_SLOTS) - 1; i >= 0; i--) {
    txFree.push(i);
    rxFree.push(i);
  }
  let txPosted = 0;
  let txRecv = 0;
  let rxSent = 0;
  let rxGot = 0;
  let cur: number[] = []; // [slot, len] pairs of the frame being reassembled
  let curNb = 0;
  const seedTx = p.seed;
  const seedRx = p.seed ^ 0x5555;

  for (let iter = 0; txRecv < txLens.length || rxGot < rxLens.length; iter++) {
    assert.ok(iter < 20000, `no progress: tx ${txRecv}/${txLens.length} rx ${rxGot}/${rxLens.length}`);
    const b = p.bursts[iter % p.bursts.length];

    // ---- guest TX: driver posts, device dequeues ----
    let k = 0;
    while (k < b && txPosted + k < txLens.length && txFree.length > 0) {
      const slot = txFree.pop() as number;
      const a = TX_POOL + slot * TX_STRIDE;
      const l = txLens[txPosted + k];
      gm.view(a, hdrLen).fill(0xee); // the driver must zero it
      fillFrame(gm.view(a + hdrLen, l), 0, l, seedTx, txPosted + k);
      addrs[k] = a;
      lens[k] = hdrLen + l;
      tokens[k] = slot;
      k++;
    }
    const posted = drvTx.postTx(addrs, lens, tokens, k);
    for (let j = k - 1; j >= posted; j--) txFree.push(tokens[j]);
    txPosted += posted;
    drvTx.needsKick();
    const got = devTx.dequeueBurst(dst, dstOffs, MAX_FRAME, lenOut, b);
    for (let i = 0; i < got; i++) {
      assert.equal(lenOut[i], txLens[txRecv], `tx frame ${txRecv} length`);
      const bad = checkFrame(dst, dstOffs[i], lenOut[i], seedTx, txRecv);
      assert.equal(bad, -1, `tx frame ${txRecv} differs at byte ${bad}`);
      txRecv++;
    }
    devTx.needsInterrupt();
    const rc = drvTx.reclaimTx(tokOut, B32);
    for (let i = 0; i < rc; i++) txFree.push(tokOut[i]);

    // ---- guest RX: driver posts buffers, device enqueues frames ----
    k = 0;
    while (k < b && rxFree.length > 0) {
      const slot = rxFree.pop() as number;
      addrs[k] = RX_POOL + slot * rxStride;
      lens[k] = rxCap;
      tokens[k] = slot;
      k++;
    }
    const rposted = drvRx.postRx(addrs, lens, tokens, k);
    for (let j = k - 1; j >= rposted; j--) rxFree.push(tokens[j]);
    drvRx.needsKick();
    const m = Math.min(b, rxLens.length - rxSent);
    for (let j = 0; j < m; j++) {
      fillFrame(src, srcOffs[j], rxLens[rxSent + j], seedRx, rxSent + j);
      lens[j] = rxLens[rxSent + j];
    }
    const c = devRx.enqueueBurst(src, srcOffs, lens, m);
    rxSent += c;
    devRx.needsInterrupt();
    const r = drvRx.pollRx(tokOut, lenOut, B32, nbOut);
    for (let i = 0; i < r; i++) {
      const slot = tokOut[i];
      if (nbOut[i] > 0) {
        assert.equal(cur.length, 0, 'new frame while one is incomplete');
        curNb = nbOut[i];
        if (!p.mrg) assert.equal(curNb, 1);
      } else {
        assert.ok(p.mrg && cur.length > 0, 'continuation buffer without a frame');
      }
      cur.push(slot, lenOut[i]);
      if (cur.length / 2 === curNb) {
        let n = 0;
        for (let j = 0; j < cur.length; j += 2) {
          const l = cur[j + 1];
          assert.ok(l > 0 && l <= rxCap, `buffer len ${l}`);
          frame.set(gm.view(RX_POOL + cur[j] * rxStride, l), n);
          n += l;
          rxFree.push(cur[j]);
        }
        if (hdrLen === 12) assert.equal(getNumBuffers(frame, 0), p.mrg ? curNb : 1);
        assert.equal(n - hdrLen, rxLens[rxGot], `rx frame ${rxGot} length`);
        const bad = checkFrame(frame, hdrLen, n - hdrLen, seedRx, rxGot);
        assert.equal(bad, -1, `rx frame ${rxGot} differs at byte ${bad}`);
        rxGot++;
        cur = [];
      }
    }
  }
  assert.equal(rxSent, rxLens.length);
  for (const d of [devTx, devRx]) {
    const s = d.stats;
    assert.equal(d.broken, false);
    assert.equal(s.badChain + s.badAddr + s.loop + s.badIndirect + s.badIndex + s.badHead + s.tooBig + s.short, 0, JSON.stringify(s));
  }
  assert.equal(devTx.stats.pkts, txLens.length);
  assert.equal(devRx.stats.pkts, rxLens.length);
  assert.equal(drvTx.broken || drvRx.broken, false);
  assert.ok(gm.guardsIntact(), 'guard bytes changed');
}

const arbParams: fc.Arbitrary<ExchangeParams> = fc
  .record({
    packed: fc.boolean(),
    version1: fc.boolean(),
    anyLayout: fc.boolean(),
    mrg: fc.boolean(),
    indirect: fc.boolean(),
    eventIdx: fc.boolean(),
    inOrder: fc.boolean(),
    sizeExp: fc.integer({ min: 0, max: 8 }),
    psize: fc.integer({ min: 1, max: 300 }),
    nearWrap: fc.boolean(),
    back: fc.integer({ min: 0, max: 70 }),
    raw: fc.integer({ min: 0, max: 0xffff }),
    wrapBit: fc.boolean(),
    txLens: fc.array(fc.integer({ min: 1, max: MAX_FRAME }), { maxLength: 40 }),
    rxLens: fc.array(fc.integer({ min: 1, max: MAX_FRAME }), { maxLength: 40 }),
    rxCap: fc.oneof(fc.constantFrom(64, 128, 1514, 2048, 4096), fc.integer({ min: 16, max: MAX_FRAME })),
    bursts: fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }),
    seed: fc.integer({ min: 0, max: 0x7fffffff }),
  })
  .map((r) => {
    const hdrSplit = !r.version1 && !r.anyLayout && !r.indirect;
    let size = r.packed ? r.psize : 1 << r.sizeExp;
    if (hdrSplit && size < 2) size = 2;
    const start = (back: number, raw: number, wrap: boolean): number => {
      if (!r.packed) return r.nearWrap ? (0x10000 - back) & 0xffff : raw & 0xffff;
      const pos = r.nearWrap ? Math.max(0, size - 1 - (back % size)) : raw % size;
      return pos | (wrap ? 0x8000 : 0);
    };
    const txStart = start(r.back, r.raw, r.wrapBit);
    const rxStart = start((r.back * 3) % 70, r.raw * 7, !r.wrapBit);
    return {
      packed: r.packed,
      version1: r.version1,
      anyLayout: r.anyLayout,
      mrg: r.mrg,
      indirect: r.indirect,
      eventIdx: r.eventIdx,
      inOrder: r.inOrder,
      size,
      txStart,
      rxStart,
      txLens: r.txLens,
      rxLens: r.rxLens,
      rxCap: r.mrg ? r.rxCap : Math.min(MAX_FRAME, r.rxCap),
      bursts: r.bursts,
      seed: r.seed,
    };
  });

const LONG = process.env.TSVS_LONG === '1';

test('driver and device exchange random packets, all feature combinations', () => {
  fc.assert(fc.property(arbParams, (p) => exchange(p)), { numRuns: LONG ? 3000 : 400 });
});

test('every feature combination at least once (split and packed, near wrap)', () => {
  for (let m = 0; m < 128; m++) {
    const packed = (m & 64) !== 0;
    const size = packed ? 7 : 8;
    exchange({
      packed,
      version1: (m & 1) !== 0,
      anyLayout: (m & 2) !== 0,
      mrg: (m & 4) !== 0,
      indirect: (m & 8) !== 0,
      eventIdx: (m & 16) !== 0,
      inOrder: (m & 32) !== 0,
      size,
      txStart: packed ? 5 | 0x8000 : 0xfffd,
      rxStart: packed ? 3 : 0xfffa,
      txLens: [1, 60, 1514, 9000, 2, 3000, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 100],
      rxLens: [1, 60, 1514, 9000, 2, 3000, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 100],
      rxCap: (m & 4) !== 0 ? 1514 : 9000,
      bursts: [3, 1, 8],
      seed: m,
    });
  }
});

test('largest queue size (32768), split and packed', () => {
  for (const packed of [false, true]) {
    exchange({
      packed,
      version1: true,
      anyLayout: false,
      mrg: true,
      indirect: false,
      eventIdx: true,
      inOrder: false,
      size: 32768,
      txStart: packed ? 32760 | 0x8000 : 0xfff0,
      rxStart: packed ? 32765 : 0xfffe,
      txLens: Array.from({ length: 50 }, (_, i) => 1 + ((i * 997) % 9000)),
      rxLens: Array.from({ length: 50 }, (_, i) => 1 + ((i * 1231) % 9000)),
      rxCap: 2048,
      bursts: [32],
      seed: 42,
    });
  }
});
