/**
 * Fuzz: random and mutated descriptor tables, rings, indirect tables and
 * indices against the device side (split and packed). Asserts the device
 * never throws, never writes outside guest memory (guard bytes around every
 * region stay intact), keeps its books (every popped TX chain is delivered or
 * counted by reason) and that the violation counters are reached.
 *
 * 100k+ rounds in the normal suite; TSVS_LONG=1 runs 20x more.
 * TSVS_FUZZ_SEED=<n> picks the seed (printed on failure).
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  F_IN_ORDER,
  F_NOTIFY_ON_EMPTY,
  F_RING_PACKED,
  F_VERSION_1,
  NET_F_MRG_RXBUF,
  RING_F_EVENT_IDX,
  RING_F_INDIRECT_DESC,
} from '../../src/virtio/features.js';
import {
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  PDESC_F_AVAIL,
  PDESC_F_USED,
} from '../../src/virtio/layout.js';
import { createDeviceQueue } from '../../src/virtio/index.js';
import type { DeviceQueue, DeviceQueueStats } from '../../src/virtio/device-queue.js';
import { VirtqueueError } from '../../src/virtio/errors.js';
import { makeGuardedMemory, Rng } from './harness.js';

const A = 0x1000; // rings, indirect tables, some data
const A_SIZE = 16 * 1024;
const B = 0x20000; // data
const B_SIZE = 16 * 1024;
const C = B + B_SIZE; // adjacent to B in guest-physical space
const C_SIZE = 8 * 1024;
const gm = makeGuardedMemory([
  { gpa: A, size: A_SIZE },
  { gpa: B, size: B_SIZE },
  { gpa: C, size: C_SIZE },
]);
const dv = gm.dv;

const LONG = process.env.TSVS_LONG === '1';
const ROUNDS = LONG ? 3_000_000 : 300_000;
const ROUNDS_PER_EPISODE = 12;

const dst = new Uint8Array(16 * 4096);
const dstOffs = new Int32Array(16).map((_, i) => i * 4096);
const outLens = new Int32Array(16);
const src = new Uint8Array(16 * 4096);
const srcOffs = new Int32Array(16);
const inLens = new Int32Array(16);

function w64(gpa: number, v: number): void {
  const o = gm.bigOff(gpa);
  dv.setUint32(o, v % 0x100000000, true);
  dv.setUint32(o + 4, Math.floor(v / 0x100000000) >>> 0, true);
}
const w32 = (gpa: number, v: number): void => dv.setUint32(gm.bigOff(gpa), v >>> 0, true);
const w16 = (gpa: number, v: number): void => dv.setUint16(gm.bigOff(gpa), v & 0xffff, true);
const r16 = (gpa: number): number => dv.getUint16(gm.bigOff(gpa), true);

function randAddr(r: Rng): number {
  switch (r.int(10)) {
    case 0:
      return A + r.int(A_SIZE);
    case 1:
    case 2:
    case 3:
      return B + r.int(B_SIZE);
    case 4:
      return C + r.int(C_SIZE);
    case 5:
      return B + B_SIZE - r.int(64); // straddles into C
    case 6:
      return C + C_SIZE - r.int(64); // runs off the end
    case 7:
      return r.u32(); // mostly unmapped
    case 8:
      return r.pick([0, 0x1fffff * 0x100000000, 0xffffffff * 0x100000000 + 0xfff, A - 8, 0x8000]);
    default:
      return B + 16 * r.int(B_SIZE / 16);
  }
}

function randLen(r: Rng): number {
  switch (r.int(8)) {
    case 0:
      return 0;
    case 1:
    case 2:
      return 1 + r.int(64);
    case 3:
      return r.int(2000);
    case 4:
      return r.int(20000);
    case 5:
      return r.pick([0xffffffff, 0x80000000, 16 * 1025, 12, 10]);
    default:
      return 16 * (1 + r.int(6));
  }
}

interface Episode {
  packed: boolean;
  size: number;
  features: bigint;
  desc: number;
  avail: number;
  used: number;
  dev: DeviceQueue;
}

/** Write a plausible chain (direction `write`) at table `tbl` (entries `n`) starting at index `at`. */
function plausibleSplitChain(r: Rng, tbl: number, n: number, at: number, write: boolean, indirect: boolean): void {
  const len = 1 + r.int(3);
  let idx = at;
  for (let j = 0; j < len; j++) {
    const o = tbl + 16 * idx;
    const nxt = r.chance(0.9) ? (idx + 1) % n : r.int(n);
    if (indirect && j === 0 && r.chance(0.3)) {
      // an indirect table in A, 1..4 entries
      const cnt = 1 + r.int(4);
      const t = A + 8192 + 16 * r.int(256 - cnt);
      for (let k = 0; k < cnt; k++) {
        w64(t + 16 * k, B + r.int(B_SIZE - 2048));
        w32(t + 16 * k + 8, r.int(1600));
        w16(t + 16 * k + 12, (write ? DESC_F_WRITE : 0) | (k < cnt - 1 ? DESC_F_NEXT : 0));
        w16(t + 16 * k + 14, k + 1);
      }
      w64(o, t);
      w32(o + 8, 16 * cnt);
      w16(o + 12, DESC_F_INDIRECT);
      w16(o + 14, 0);
      return;
    }
    w64(o, B + r.int(B_SIZE - 2048));
    w32(o + 8, r.int(1600));
    w16(o + 12, (write ? DESC_F_WRITE : 0) | (j < len - 1 ? DESC_F_NEXT : 0));
    w16(o + 14, nxt);
    idx = nxt;
  }
}

function newEpisode(r: Rng): Episode | null {
  const packed = r.chance(0.5);
  const size = packed ? 1 + r.int(33) : 1 << r.int(6);
  let features = 0n;
  if (packed) features |= F_RING_PACKED;
  if (r.chance(0.5)) features |= F_VERSION_1;
  if (r.chance(0.5)) features |= NET_F_MRG_RXBUF;
  if (r.chance(0.6)) features |= RING_F_INDIRECT_DESC;
  if (r.chance(0.5)) features |= RING_F_EVENT_IDX;
  if (r.chance(0.3)) features |= F_IN_ORDER;
  if (r.chance(0.2)) features |= F_NOTIFY_ON_EMPTY;
  let desc = A + 16 * r.int(64);
  let avail = packed ? desc + 16 * size + 4 * r.int(4) : desc + 16 * size + 2 * r.int(8);
  let used = packed ? avail + 4 + 4 * r.int(4) : Math.ceil((avail + 6 + 2 * size) / 4) * 4 + 4 * r.int(8);
  if (r.chance(0.03)) {
    // invalid placement or size: the constructor must refuse it with a VirtqueueError
    switch (r.int(4)) {
      case 0:
        desc += 2;
        break;
      case 1:
        used = C + C_SIZE - 4;
        break;
      case 2:
        avail = 0x900000;
        break;
      default:
        return tryBad(r, packed, features, desc, avail, used);
    }
  }
  const lastAvailIdx = packed ? r.int(size) | (r.chance(0.5) ? 0x8000 : 0) : r.int(0x10000);
  // scribble over the ring areas (the device must cope with any content)
  for (let a = desc; a < used + 8 * size + 8 && a < A + A_SIZE - 4; a += 4) w32(a, r.chance(0.3) ? r.u32() : 0);
  let dev: DeviceQueue;
  try {
    dev = createDeviceQueue(gm.mem, { size, descAddr: desc, availAddr: avail, usedAddr: used, features, lastAvailIdx });
  } catch (e) {
    assert.ok(e instanceof VirtqueueError, `constructor threw ${String(e)}`);
    return null;
  }
  if (!packed) w16(avail + 2, lastAvailIdx); // start with an empty ring most of the time
  return { packed, size, features, desc, avail, used, dev };
}

function tryBad(r: Rng, packed: boolean, features: bigint, desc: number, avail: number, used: number): null {
  const size = r.pick([0, 3, 65536, 40000, 1.5, -1]);
  if (packed && size === 3) return null; // valid for packed
  assert.throws(
    () => createDeviceQueue(gm.mem, { size, descAddr: desc, availAddr: avail, usedAddr: used, features }),
    (e: unknown) => e instanceof VirtqueueError,
  );
  return null;
}

/** Mutate the rings of an episode for one round. */
function mutate(r: Rng, ep: Episode, write: boolean): void {
  const { size, desc } = ep;
  const dev = ep.dev;
  const indirect = (ep.features & RING_F_INDIRECT_DESC) !== 0n;
  if (!ep.packed) {
    const last = dev.lastAvailIdx;
    // a few plausible chains, then random damage
    const nch = r.int(4);
    for (let c = 0; c < nch; c++) {
      const head = r.int(size);
      plausibleSplitChain(r, desc, size, head, r.chance(0.85) ? write : !write, indirect);
      w16(ep.avail + 4 + 2 * ((last + c) % size), head);
    }
    const ndmg = r.int(3);
    for (let k = 0; k < ndmg; k++) {
      const o = desc + 16 * r.int(size);
      switch (r.int(5)) {
        case 0:
          w64(o, randAddr(r));
          break;
        case 1:
          w32(o + 8, randLen(r));
          break;
        case 2:
          w16(o + 12, r.chance(0.8) ? r.int(8) : r.u32());
          break;
        case 3:
          w16(o + 14, r.chance(0.8) ? r.int(size) : r.u32());
          break;
        default:
          w16(ep.avail + 4 + 2 * r.int(size), r.chance(0.9) ? r.int(size) : r.u32());
      }
    }
    // random indirect table content
    if (r.chance(0.2)) {
      const t = A + 8192 + 16 * r.int(256);
      for (let k = 0; k < 4 && t + 16 * k + 16 <= A + A_SIZE; k++) {
        w64(t + 16 * k, randAddr(r));
        w32(t + 16 * k + 8, randLen(r));
        w16(t + 16 * k + 12, r.int(8));
        w16(t + 16 * k + 14, r.int(6));
      }
    }
    let idx = (last + nch) & 0xffff;
    if (r.chance(0.1)) idx = (last + r.int(size + 1)) & 0xffff;
    if (r.chance(0.01)) idx = r.u32() & 0xffff;
    w16(ep.avail + 2, idx);
    if (r.chance(0.2)) w16(ep.avail, r.int(2)); // flags
    if (r.chance(0.2)) w16(ep.avail + 4 + 2 * size, r.u32()); // used_event
  } else {
    // packed: write chains at the device's avail position with the right wrap bits (mostly)
    const base = dev.lastAvailIdx;
    let pos = base & 0x7fff;
    let wrap = base >>> 15;
    const nch = r.int(4);
    for (let c = 0; c < nch; c++) {
      const len = 1 + r.int(3);
      for (let j = 0; j < len; j++) {
        const o = desc + 16 * pos;
        const avail = r.chance(0.9) ? (wrap ? PDESC_F_AVAIL : PDESC_F_USED) : r.int(2) * PDESC_F_AVAIL | r.int(2) * PDESC_F_USED;
        let fl = (r.chance(0.85) ? (write ? DESC_F_WRITE : 0) : write ? 0 : DESC_F_WRITE) | (j < len - 1 ? DESC_F_NEXT : 0);
        if (indirect && len === 1 && r.chance(0.3)) {
          const cnt = 1 + r.int(4);
          const t = A + 8192 + 16 * r.int(256 - cnt);
          for (let k = 0; k < cnt; k++) {
            w64(t + 16 * k, r.chance(0.9) ? B + r.int(B_SIZE - 2048) : randAddr(r));
            w32(t + 16 * k + 8, r.int(1600));
            w16(t + 16 * k + 12, 0);
            w16(t + 16 * k + 14, r.chance(0.9) ? fl & DESC_F_WRITE : r.int(8));
          }
          w64(o, t);
          w32(o + 8, r.chance(0.9) ? 16 * cnt : randLen(r));
          fl = DESC_F_INDIRECT;
        } else {
          w64(o, r.chance(0.9) ? B + r.int(B_SIZE - 2048) : randAddr(r));
          w32(o + 8, r.chance(0.9) ? r.int(1600) : randLen(r));
        }
        w16(o + 12, r.u32());
        w16(o + 14, fl | avail);
        if (++pos === size) {
          pos = 0;
          wrap ^= 1;
        }
      }
    }
    const ndmg = r.int(3);
    for (let k = 0; k < ndmg; k++) {
      const o = desc + 16 * r.int(size);
      switch (r.int(4)) {
        case 0:
          w64(o, randAddr(r));
          break;
        case 1:
          w32(o + 8, randLen(r));
          break;
        case 2:
          w16(o + 14, r.u32());
          break;
        default:
          w16(o + 14, r16(o + 14) | DESC_F_NEXT);
      }
    }
    if (r.chance(0.2)) {
      // everything NEXT: an endless chain
      if (r.chance(0.1)) for (let i = 0; i < size; i++) w16(desc + 16 * i + 14, r16(desc + 16 * i + 14) | DESC_F_NEXT);
    }
    if (r.chance(0.2)) w32(ep.avail, r.u32()); // driver event suppression
  }
}

const REASONS: (keyof DeviceQueueStats)[] = ['short', 'tooBig', 'badChain', 'badAddr', 'loop', 'badIndirect'];

test(`device fuzz: ${ROUNDS} rounds of hostile rings`, () => {
  const seed = Number(process.env.TSVS_FUZZ_SEED ?? 0x5eed1234);
  const r = new Rng(seed);
  const total: Record<string, number> = {};
  const bump = (s: DeviceQueueStats): void => {
    for (const k of Object.keys(s) as (keyof DeviceQueueStats)[]) total[k] = (total[k] ?? 0) + s[k];
  };
  let rounds = 0;
  let episodes = 0;
  let brokenEpisodes = 0;
  while (rounds < ROUNDS) {
    const ep = newEpisode(r);
    rounds++;
    if (ep === null) continue;
    episodes++;
    const dev = ep.dev;
    for (let k = 0; k < ROUNDS_PER_EPISODE && rounds < ROUNDS; k++, rounds++) {
      const ctx = `seed ${seed} round ${rounds}`;
      const write = r.chance(0.5);
      mutate(r, ep, write);
      const before = { ...dev.stats };
      const lastBefore = dev.lastAvailIdx;
      const wasBroken = dev.broken;
      const n = 1 + r.int(8);
      try {
        if (!write) {
          const cap = r.chance(0.8) ? 4096 : r.int(4097);
          const got = dev.dequeueBurst(dst, dstOffs, cap, outLens, n);
          assert.ok(got >= 0 && got <= n, ctx);
          for (let i = 0; i < got; i++) assert.ok(outLens[i] > 0 && outLens[i] <= cap, ctx);
          const s = dev.stats;
          const dChains = s.chains - before.chains;
          let dCounted = s.pkts - before.pkts;
          for (const k2 of REASONS) dCounted += s[k2] - before[k2];
          // a packed chain without end is counted as a loop and breaks the queue without being popped
          if (ep.packed && dev.broken && !wasBroken) dCounted -= s.loop - before.loop;
          assert.equal(dChains, dCounted, `${ctx}: every popped TX chain is delivered or counted`);
          assert.equal(s.pkts - before.pkts, got, ctx);
        } else {
          for (let i = 0; i < n; i++) {
            srcOffs[i] = i * 4096;
            inLens[i] = r.chance(0.95) ? r.int(4000) : r.pick([-1, 5000, 0x7fffffff]);
          }
          const c = dev.enqueueBurst(src, srcOffs, inLens, n);
          assert.ok(c >= 0 && c <= n, ctx);
          const s = dev.stats;
          assert.ok(s.chains - before.chains >= s.pkts - before.pkts, ctx);
          assert.ok(s.pkts - before.pkts <= c, ctx);
        }
        if (!ep.packed) assert.equal((dev.lastAvailIdx - lastBefore) & 0xffff, (dev.stats.chains - before.chains) & 0xffff, ctx);
        dev.hasAvail();
        dev.needsInterrupt();
        if (r.chance(0.1)) dev.setNotification(r.chance(0.5));
      } catch (e) {
        assert.fail(`${ctx}: device threw ${e instanceof Error ? e.stack : String(e)}`);
      }
      if (wasBroken) {
        assert.equal(dev.stats.chains, before.chains, `${ctx}: a broken queue does nothing`);
      }
      assert.ok(gm.guardsIntact(), `${ctx}: guard bytes changed`);
      if (dev.broken) break;
    }
    if (dev.broken) {
      brokenEpisodes++;
      assert.equal(dev.dequeueBurst(dst, dstOffs, 4096, outLens, 8), 0);
      assert.equal(dev.enqueueBurst(src, srcOffs, inLens, 1), 0);
      assert.equal(dev.hasAvail(), false);
      assert.equal(dev.needsInterrupt(), false);
    }
    bump(dev.stats);
  }
  if (process.env.TSVS_FUZZ_VERBOSE) console.log(JSON.stringify({ episodes, brokenEpisodes, ...total }));
  // the fuzzer reaches every reason, and real traffic too
  for (const k of [...REASONS, 'badIndex', 'badHead', 'noBufs', 'pkts', 'badFrame'] as const) {
    assert.ok((total[k] ?? 0) > 0, `fuzz never produced ${k}: ${JSON.stringify(total)}`);
  }
  assert.ok(brokenEpisodes > 0 && episodes > 1000, `episodes ${episodes}, broken ${brokenEpisodes}`);
});
