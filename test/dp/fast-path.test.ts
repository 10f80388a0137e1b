/**
 * The per-packet fast paths give the same results as the straightforward ones:
 *  - extractKey (write-once, inlinable IPv4 TCP/UDP path) == the reference
 *    extractor (zero-fill then parse) on random and mutated frames;
 *  - hashKey spreads keys over EMC slots about as well as murmur3 over all words;
 *  - a Datapath fed whole bursts (runs of identical keys reuse one lookup)
 *    forwards, counts and caches exactly like one fed a packet at a time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  extractKey, extractKeyFull, hashKey, HASH_BASIS, FLOW_WORDS, KEY_MALFORMED, W_IN_PORT, W_TYPE_TCI, W_L3_SRC, W_L3_DST, W_TP,
  W_NW, W_VLAN2, keyFitsPrefix, prefixKeyWord,
} from '../../src/dp/flow-key.js';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath } from '../../src/dp/datapath.js';
import { OP_OUTPUT, OP_SET_DL_DST, OP_PUSH_VLAN, OP_POP_VLAN } from '../../src/dp/actions.js';
import { buildFrame, mac, type PacketDesc } from './frame-builder.js';
import { extractKeyRef, hashKeyMurmur } from './flow-key-ref.js';

const LONG = process.env.TSVS_LONG === '1';

const descArb: fc.Arbitrary<PacketDesc> = fc.record({
  l3: fc.constantFrom<PacketDesc['l3']>('ipv4', 'ipv4', 'ipv4', 'ipv6', 'arp', 'other'),
  proto: fc.constantFrom(6, 17, 17, 1, 58, 132, 44, 0),
  nVlan: fc.constantFrom(0, 0, 0, 1, 2),
  outerTpid: fc.constantFrom(0x8100, 0x88a8),
  tci: fc.integer({ min: 0, max: 0xffff }),
  tos: fc.integer({ min: 0, max: 255 }),
  ttl: fc.integer({ min: 0, max: 255 }),
  opt: fc.constantFrom(0, 0, 0, 1, 3),
  mf: fc.boolean(),
  fragOffset: fc.constantFrom(0, 0, 0, 1, 185),
  sport: fc.integer({ min: 0, max: 0xffff }),
  dport: fc.integer({ min: 0, max: 0xffff }),
  payload: fc.integer({ min: 0, max: 40 }),
  a: fc.integer({ min: 0, max: 255 }),
}).map((r) => {
  const ip = (n: number): number[] => (r.l3 === 'ipv6' ? Array.from({ length: 16 }, (_, i) => (n * 7 + i * 13) & 255) : [10, r.a, n, 1]);
  const vlans = r.nVlan === 0 ? [] : r.nVlan === 1 ? [{ tpid: r.outerTpid, tci: r.tci }] : [{ tpid: r.outerTpid, tci: r.tci }, { tpid: 0x8100, tci: r.tci ^ 0x0f0f }];
  return {
    dst: mac(r.a), src: mac(r.a + 1), vlans, l3: r.l3, proto: r.proto, tos: r.tos, ttl: r.ttl,
    srcIp: ip(r.a), dstIp: ip(r.a ^ 0x55), sport: r.sport, dport: r.dport, icmpType: r.sport & 255, icmpCode: r.dport & 255,
    ipOptWords: r.opt, mf: r.mf, fragOffset: r.fragOffset, arpOp: r.sport & 0x1ff, payload: r.payload,
    etherType: r.sport,
  };
});

test('extractKey == reference extractor: random frames, truncations, mutations, offsets', () => {
  const k1 = new Uint32Array(FLOW_WORDS + 4);
  const k2 = new Uint32Array(FLOW_WORDS + 4);
  const k3 = new Uint32Array(FLOW_WORDS + 4);
  fc.assert(fc.property(
    descArb, fc.integer({ min: 0, max: 16 }), fc.integer({ min: -2, max: 140 }),
    fc.array(fc.tuple(fc.integer({ min: 0, max: 80 }), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
    fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 7 }),
    (d, pre, cut, muts, ko, inPort) => {
      const f = buildFrame(d);
      const buf = new Uint8Array(pre + f.length + 8).fill(0xa5);
      buf.set(f, pre);
      for (const [at, v] of muts) if (pre + at < buf.length) buf[pre + at] = v;
      // cut: a length past the frame (clamped by the extractors) or a truncation
      const len = cut > f.length + 4 ? f.length : cut;
      k1.fill(0xdeadbeef); k2.fill(0x01234567); k3.fill(0x5a5a5a5a);
      const s1 = extractKey(buf, pre, len, inPort, k1, ko);
      const s2 = extractKeyRef(buf, pre, len, inPort, k2, ko);
      const s3 = extractKeyFull(buf, pre, len, inPort, k3, ko);
      assert.equal(s1, s2);
      assert.equal(s3, s2);
      assert.deepEqual(k1.subarray(ko, ko + FLOW_WORDS), k2.subarray(ko, ko + FLOW_WORDS));
      assert.deepEqual(k3.subarray(ko, ko + FLOW_WORDS), k2.subarray(ko, ko + FLOW_WORDS));
    }), { numRuns: LONG ? 200_000 : 6000 });
});

test('extractKey == reference on random bytes with chosen ethertypes and IPv4 first bytes', () => {
  const k1 = new Uint32Array(FLOW_WORDS);
  const k2 = new Uint32Array(FLOW_WORDS);
  fc.assert(fc.property(
    fc.uint8Array({ minLength: 0, maxLength: 90 }), fc.integer({ min: -3, max: 95 }), fc.integer({ min: -3, max: 95 }),
    fc.constantFrom(0x0800, 0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x1234), fc.constantFrom(0x45, 0x45, 0x46, 0x44, 0x55, -1),
    fc.constantFrom(6, 17, 1, 132, -1),
    (bytes, off, len, et, vihl, proto) => {
      const o = off < 0 ? 0 : off;
      if (bytes.length >= o + 14) { bytes[o + 12] = et >> 8; bytes[o + 13] = et & 255; }
      if (vihl >= 0 && bytes.length > o + 14) bytes[o + 14] = vihl;
      if (proto >= 0 && bytes.length > o + 23) bytes[o + 23] = proto;
      k1.fill(7); k2.fill(9);
      assert.equal(extractKey(bytes, off, len, 2, k1, 0), extractKeyRef(bytes, off, len, 2, k2, 0));
      assert.deepEqual(k1, k2);
    }), { numRuns: LONG ? 200_000 : 6000 });
});

test('prefixKeyWord == extractKey word by word on every frame keyFitsPrefix accepts', () => {
  const k = new Uint32Array(FLOW_WORDS);
  let fits = 0;
  fc.assert(fc.property(descArb, fc.boolean(), fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 9 }), (d0, plain, pre, inPort) => {
    // half the frames made plain IPv4 TCP/UDP (the frames keyFitsPrefix is for), the others as drawn
    const d: PacketDesc = plain ? { ...d0, l3: 'ipv4', proto: (d0.sport ?? 0) & 1 ? 6 : 17, vlans: [], ipOptWords: 0, mf: false, fragOffset: 0 } : d0;
    const f = buildFrame(d);
    const buf = new Uint8Array(pre + f.length + 4).fill(0x5a);
    buf.set(f, pre);
    if (!keyFitsPrefix(buf, pre, f.length)) return;
    fits++;
    assert.equal(extractKey(buf, pre, f.length, inPort, k, 0), 0);
    for (let w = 0; w < FLOW_WORDS; w++) assert.equal(prefixKeyWord(buf, pre, inPort, w), k[w], `word ${w}`);
  }), { numRuns: LONG ? 50_000 : 3000 });
  assert.ok(fits > 100, `${fits} frames fit`);
});

test('hashKey: deterministic, int32, spreads realistic and structured key sets over EMC slots like murmur3', () => {
  const k = new Uint32Array(FLOW_WORDS);
  const bits = 13; // the datapath EMC: 8192 entries, slots from bits [0,13) and [13,26)
  const m = (1 << bits) - 1;
  // key sets: 100k UDP flows (src ip, src port), swapped src/dst pairs, top-bit-only differences,
  // IPv6 addresses differing in upper words only, VLAN ids
  const sets: [string, (i: number, k: Uint32Array) => void][] = [
    ['udp 5-tuple', (i, key) => { key[W_L3_SRC] = 0xc6120000 + (i & 0xffff); key[W_TP] = ((0x0400 + (i >> 16)) << 24 | (i & 255) << 16 | 0x0401) >>> 0; }],
    ['src/dst swap', (i, key) => { const a = 0x0a000000 + (i >> 1); const b = 0x0a800000 + (i >> 1); key[W_L3_SRC] = i & 1 ? a : b; key[W_L3_DST] = i & 1 ? b : a; }],
    ['high bits', (i, key) => { key[W_L3_SRC] = ((i & 0xff) << 24) >>> 0; key[W_L3_DST] = ((i >> 8) << 24) >>> 0; key[W_IN_PORT] = (i >> 16) << 28; }],
    ['ipv6 upper', (i, key) => { key[W_TYPE_TCI] = 0x86dd0000; key[W_L3_SRC + 1] = i * 0x10000; key[W_L3_DST + 2] = (i >> 4) << 20; key[W_NW] = 17 << 24; }],
    ['vlan2', (i, key) => { key[W_VLAN2] = 0x1000 | (i & 0xfff); key[W_TYPE_TCI] = 0x08001000 | (i >> 12); }],
  ];
  for (const [name, fill] of sets) {
    const n = 50_000;
    const lo = new Set<number>(); const hi = new Set<number>(); const all = new Set<number>();
    const loRef = new Set<number>(); const hiRef = new Set<number>();
    for (let i = 0; i < n; i++) {
      k.fill(0);
      fill(i, k);
      const h = hashKey(k, 0, HASH_BASIS);
      assert.equal(h, h | 0, 'int32');
      assert.equal(hashKey(k, 0, HASH_BASIS), h);
      lo.add(h & m); hi.add((h >>> bits) & m); all.add(h);
      const r = hashKeyMurmur(k, 0, HASH_BASIS);
      loRef.add(r & m); hiRef.add((r >>> bits) & m);
    }
    // 50k keys into 8192 slots: a uniform hash fills ~99.8% of them
    assert.ok(lo.size > loRef.size * 0.98, `${name}: low slots ${lo.size} vs murmur ${loRef.size}`);
    assert.ok(hi.size > hiRef.size * 0.98, `${name}: high slots ${hi.size} vs murmur ${hiRef.size}`);
    assert.ok(all.size > n * 0.999, `${name}: ${n - all.size} full 32-bit collisions`);
  }
});

// ---------------------------------------------------------------------------
// Datapath: whole bursts vs one packet at a time

interface Rule { mask: Uint32Array; prog: Int32Array }

function frameFor(v: number, len: number): Uint8Array {
  // few distinct flows: v picks addresses/ports; some are ARP or VLAN-tagged or malformed
  const kind = v % 7;
  if (kind === 5) return buildFrame({ dst: mac(1), src: mac(2 + (v & 1)), l3: 'arp', srcIp: [1, 1, 1, v & 3], dstIp: [2, 2, 2, 2] });
  if (kind === 6) {
    const f = buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv4', proto: 17, srcIp: [10, 0, 0, 1], dstIp: [10, 0, 0, 2], sport: 1, dport: 2, payload: 20 });
    if (v & 8) f[14] = 0x35; // malformed: IP version 3
    return f;
  }
  return buildFrame({
    dst: mac(1 + (v & 1)), src: mac(2), l3: 'ipv4', proto: (v & 2) ? 6 : 17,
    vlans: (v & 4) ? [{ tpid: 0x8100, tci: 7 }] : [], srcIp: [10, 0, 0, (v >> 3) & 3], dstIp: [10, 0, 0, 9],
    sport: 1000 + ((v >> 5) & 1), dport: 53, payload: len,
  });
}

/** Megaflows the control path installs between bursts: [after burst b, the key of frame f, rule r]. */
type Install = [number, number, number];

function runScenario(frames: Uint8Array[], bursts: number[], rules: Rule[], inv: number, perPacket: boolean, review?: number, installs: Install[] = []) {
  const pool = Mempool.create({ count: 2048 });
  const ports = [1, 2, 3].map((i) => RingPort.create(`p${i}`, pool, 512));
  const peers = ports.map((p) => RingPort.attach(p.attachInfo(), pool));
  let upcallNo = 0;
  const dp: Datapath = new Datapath(pool, {
    upcall: (id, _port, _frame, key) => {
      // the slow path: rule by a deterministic choice; every third upcall is left unanswered (held)
      const r = rules[(key[W_TP] ^ key[W_L3_SRC] ^ key[1] ^ key[W_TYPE_TCI]) % rules.length];
      const n = upcallNo++;
      if (n % 3 === 2) return;
      dp.installFlow(key, r.mask, r.prog);
      dp.upcallReply(id, r.prog);
    },
  }, { emcEntries: 64, emcInsertInvProb: inv, rxBurst: perPacket ? 1 : 32, emcReviewPackets: review });
  ports.forEach((p, i) => dp.addPort(i + 1, p));
  dp.tick(1000); // flow 'used' times: the same clock in both runs
  const hs = new Int32Array(32);
  let at = 0;
  let bi = 0;
  for (const b of bursts) {
    const n = Math.min(b, frames.length - at);
    if (n <= 0) break;
    assert.equal(pool.alloc(hs, n), n);
    for (let i = 0; i < n; i++) {
      const f = frames[at + i];
      pool.data.set(f, pool.dataOffset(hs[i]));
      pool.dataLen[hs[i]] = f.length;
      pool.pktLen[hs[i]] = f.length;
    }
    assert.equal(peers[0].txBurst(0, hs, n), n);
    at += n;
    while (dp.pollOnce() > 0);
    for (const [after, f, r] of installs) {
      if (after !== bi) continue;
      const fr = frames[f % frames.length];
      const key = new Uint32Array(FLOW_WORDS);
      if (extractKey(fr, 0, fr.length, 1, key, 0) === KEY_MALFORMED) continue;
      const rule = rules[r % rules.length];
      dp.installFlow(key, rule.mask, rule.prog);
    }
    bi++;
  }
  const out: number[][][] = [];
  for (const p of peers) {
    const got: number[][] = [];
    for (;;) {
      const r = p.rxBurst(0, hs, 32);
      if (r === 0) break;
      for (let i = 0; i < r; i++) got.push(Array.from(pool.data.subarray(pool.dataOffset(hs[i]), pool.dataOffset(hs[i]) + pool.dataLen[hs[i]])));
      pool.free(hs, r);
    }
    out.push(got);
  }
  const { iterations: _i, busyIterations: _b, busyNs: _bn, idleNs: _in, ...stats } = dp.stats;
  const flows = dp.dumpFlows().map(({ created: _c, ...f }) => f);
  const emcActive = dp.emcActive;
  dp.drain();
  for (const p of [...peers, ...ports]) p.close();
  return { out, stats, flows, emcActive };
}

test('Datapath: bursts with runs of identical keys == one packet at a time (outputs, counters, flow stats)', () => {
  const full = (): Uint32Array => new Uint32Array(FLOW_WORDS).fill(0xffffffff);
  const inPortOnly = new Uint32Array(FLOW_WORDS); inPortOnly[W_IN_PORT] = 0xffffffff;
  const bySrc = new Uint32Array(FLOW_WORDS); bySrc[W_IN_PORT] = 0xffffffff; bySrc[W_L3_SRC] = 0xffffffff; bySrc[W_TYPE_TCI] = 0xffff0000;
  const rules: Rule[] = [
    { mask: full(), prog: Int32Array.from([OP_OUTPUT, 2]) },
    { mask: bySrc, prog: Int32Array.from([OP_SET_DL_DST, 0x0200, 0x77, OP_OUTPUT, 3, OP_PUSH_VLAN, 0x8100, 9, OP_OUTPUT, 2]) },
    { mask: full(), prog: Int32Array.from([]) },
    { mask: inPortOnly, prog: Int32Array.from([OP_POP_VLAN, OP_OUTPUT, 3]) },
    { mask: full(), prog: Int32Array.from([OP_OUTPUT, 9]) }, // port that does not exist
  ];
  fc.assert(fc.property(
    // long runs of a few keys: each element is (flow, repeat)
    fc.array(fc.tuple(fc.integer({ min: 0, max: 127 }), fc.integer({ min: 1, max: 12 })), { minLength: 1, maxLength: 40 }),
    fc.array(fc.integer({ min: 1, max: 32 }), { minLength: 1, maxLength: 60 }),
    fc.constantFrom(1, 1, 2, 100, 0), fc.integer({ min: 0, max: 4 }),
    (runs, bursts, inv, ruleShift) => {
      const frames: Uint8Array[] = [];
      for (const [v, rep] of runs) for (let r = 0; r < rep; r++) frames.push(frameFor(v, 20 + (r & 1) * 4));
      const allBursts = [...bursts];
      let total = allBursts.reduce((a, b) => a + b, 0);
      while (total < frames.length) { allBursts.push(32); total += 32; }
      const rs = rules.slice(ruleShift).concat(rules.slice(0, ruleShift));
      const a = runScenario(frames, allBursts, rs, inv, false);
      const b = runScenario(frames, allBursts, rs, inv, true);
      assert.deepEqual(a.out, b.out);
      assert.deepEqual(a.stats, b.stats);
      assert.deepEqual(a.flows, b.flows);
    }), { numRuns: LONG ? 2000 : 60 });
});

test('Datapath: with the EMC reviewed every few packets (on, bypassed, probed again) bursts == one packet at a time; runs go on across keys of one megaflow', () => {
  const inPortOnly = new Uint32Array(FLOW_WORDS); inPortOnly[W_IN_PORT] = 0xffffffff;
  const bySrc = new Uint32Array(FLOW_WORDS); bySrc[W_IN_PORT] = 0xffffffff; bySrc[W_L3_SRC] = 0xffffffff; bySrc[W_TYPE_TCI] = 0xffff0000;
  const byTp = new Uint32Array(FLOW_WORDS); byTp[W_IN_PORT] = 0xffffffff; byTp[W_TP] = 0xffffffff; byTp[W_TYPE_TCI] = 0xffff0000;
  const full = new Uint32Array(FLOW_WORDS).fill(0xffffffff);
  // rule sets: one megaflow for every key (one subtable: the EMC is bypassed), several masks
  // (overlapping megaflows, the EMC kept or bypassed by its hit share)
  const sets: Rule[][] = [
    [{ mask: inPortOnly, prog: Int32Array.from([OP_OUTPUT, 2]) }],
    [{ mask: bySrc, prog: Int32Array.from([OP_OUTPUT, 3]) }],
    [{ mask: inPortOnly, prog: Int32Array.from([OP_OUTPUT, 2]) }, { mask: full, prog: Int32Array.from([OP_OUTPUT, 3]) },
      { mask: byTp, prog: Int32Array.from([OP_SET_DL_DST, 0x0200, 0x77, OP_OUTPUT, 2]) }],
    [{ mask: bySrc, prog: Int32Array.from([OP_OUTPUT, 2]) }, { mask: full, prog: Int32Array.from([]) }, { mask: byTp, prog: Int32Array.from([OP_OUTPUT, 3]) }],
  ];
  let bypassedOnce = false;
  let keptOnce = false;
  fc.assert(fc.property(
    // (flow, repeat): many distinct keys, some in runs
    fc.array(fc.tuple(fc.integer({ min: 0, max: 127 }), fc.integer({ min: 1, max: 4 })), { minLength: 1, maxLength: 120 }),
    fc.array(fc.integer({ min: 1, max: 32 }), { minLength: 1, maxLength: 30 }),
    fc.constantFrom(1, 2, 100, 0), fc.integer({ min: 0, max: sets.length - 1 }), fc.constantFrom(1, 2, 5, 16, 64),
    // megaflows installed between bursts (control path): with overlapping masks the EMC may then hold
    // a flow other than the classifier's answer for a key (both valid): EMC on or bypassed must not mix
    fc.array(fc.tuple(fc.integer({ min: 0, max: 8 }), fc.nat(), fc.nat()), { maxLength: 6 }),
    (runs, bursts, inv, set, review, installs) => {
      const frames: Uint8Array[] = [];
      for (const [v, rep] of runs) for (let r = 0; r < rep; r++) frames.push(frameFor(v, 20 + (r & 1) * 4));
      const allBursts = [...bursts];
      let total = allBursts.reduce((x, y) => x + y, 0);
      while (total < frames.length) { allBursts.push(32); total += 32; }
      const a = runScenario(frames, allBursts, sets[set], inv, false, review, installs);
      const b = runScenario(frames, allBursts, sets[set], inv, true, review, installs);
      assert.deepEqual(a.out, b.out);
      assert.deepEqual(a.stats, b.stats);
      assert.deepEqual(a.flows, b.flows);
      assert.equal(a.emcActive, b.emcActive);
      if (a.emcActive) keptOnce = true; else bypassedOnce = true;
    }), {
    numRuns: LONG ? 2000 : 80,
    // found by a long run: one key in runs across review windows after an overlapping megaflow was installed
    examples: [[[[0, 1], [0, 1], [0, 4], [0, 1]], [5], 100, 2, 1, [[0, 0, 581498130]]]],
  });
  assert.ok(bypassedOnce && keptOnce, `the EMC was bypassed in some runs (${bypassedOnce}) and kept in others (${keptOnce})`);
});
