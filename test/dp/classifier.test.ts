import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Classifier, RERANK_INTERVAL } from '../../src/dp/classifier.js';
import { FLOW_WORDS } from '../../src/dp/flow-key.js';

/** Fields used by the random rules: (word, mask bits) with small value domains. */
const SLOTS: [number, number][] = [[0, 0xffffffff], [4, 0xffff0000], [5, 0xff000000], [6, 0xffff], [7, 0xffffff00], [7, 0xff], [11, 0xffffffff], [3, 0xf0]];

interface R { key: Uint32Array; mask: Uint32Array; prio: number; seq: number; live: boolean; h: number }

const arbKeyVals = fc.array(fc.integer({ min: 0, max: 1 }), { minLength: SLOTS.length, maxLength: SLOTS.length });
const arbRule = fc.record({
  use: fc.array(fc.boolean(), { minLength: SLOTS.length, maxLength: SLOTS.length }),
  vals: arbKeyVals,
  prio: fc.integer({ min: 0, max: 3 }),
});

function mkKey(vals: number[]): Uint32Array {
  const k = new Uint32Array(FLOW_WORDS);
  vals.forEach((v, i) => {
    const [w, m] = SLOTS[i];
    // Spread the small value over the mask's bits (lowest set bit scaled).
    const low = m & -m;
    k[w] = (k[w] | ((Math.imul(v, low) >>> 0) & m)) >>> 0;
  });
  return k;
}
function mkMask(use: boolean[]): Uint32Array {
  const m = new Uint32Array(FLOW_WORDS);
  use.forEach((u, i) => { if (u) m[SLOTS[i][0]] = (m[SLOTS[i][0]] | SLOTS[i][1]) >>> 0; });
  return m;
}
function matches(r: R, k: Uint32Array): boolean {
  for (let i = 0; i < FLOW_WORDS; i++) if (((r.key[i] ^ k[i]) & r.mask[i]) !== 0) return false;
  return true;
}
function linearBest(rules: R[], k: Uint32Array): R | undefined {
  let best: R | undefined;
  for (const r of rules) {
    if (!r.live || !matches(r, k)) continue;
    if (!best || r.prio > best.prio || (r.prio === best.prio && r.seq < best.seq)) best = r;
  }
  return best;
}

test('priority lookup equals a linear scan, also after removals; wc is sufficient', () => {
  fc.assert(fc.property(
    fc.array(arbRule, { minLength: 1, maxLength: 40 }),
    fc.array(arbKeyVals, { minLength: 1, maxLength: 30 }),
    fc.array(fc.nat(), { maxLength: 25 }),
    (rs, keys, removals) => {
      const c = new Classifier(4);
      const rules: R[] = rs.map((r, seq) => {
        const mask = mkMask(r.use);
        const key = mkKey(r.vals);
        for (let i = 0; i < FLOW_WORDS; i++) key[i] &= mask[i];
        const noise = mkKey(r.vals.map((v) => v ^ 3)); // bits outside the mask are ignored
        const k2 = key.map((v, i) => (v | (noise[i] & ~mask[i])) >>> 0);
        return { key, mask, prio: r.prio, seq, live: true, h: c.insert(k2, 0, mask, 0, r.prio, seq) };
      });
      const check = (): void => {
        assert.equal(c.size, rules.filter((r) => r.live).length);
        for (const kv of keys) {
          const k = mkKey(kv);
          const wc = new Uint32Array(FLOW_WORDS);
          const h = c.lookupPriority(k, 0, wc);
          const exp = linearBest(rules, k);
          assert.equal(h < 0 ? -1 : c.valueOf(h), exp ? exp.seq : -1);
          // Any key agreeing with k on wc gets the same answer (megaflow property).
          for (const kv2 of keys) {
            const k2 = mkKey(kv2);
            let same = true;
            for (let i = 0; i < FLOW_WORDS; i++) if (((k[i] ^ k2[i]) & wc[i]) !== 0) same = false;
            if (same) {
              const e2 = linearBest(rules, k2);
              assert.equal(e2?.seq ?? -1, exp?.seq ?? -1);
            }
          }
        }
      };
      check();
      for (const x of removals) {
        const r = rules[x % rules.length];
        assert.equal(c.remove(r.h), r.live);
        r.live = false;
      }
      check();
      // Re-insert some after removal (handle reuse).
      for (const r of rules.slice(0, 5)) {
        if (r.live) continue;
        r.seq = rules.length + r.seq; // later insertion
        r.h = c.insert(r.key, 0, r.mask, 0, r.prio, r.seq);
        r.live = true;
      }
      check();
      // findExact
      for (const r of rules) {
        if (!r.live) continue;
        const h = c.findExact(r.key, 0, r.mask, 0, r.prio);
        assert.ok(h >= 0);
        assert.equal(c.priorityOf(h), r.prio);
      }
    }), { numRuns: 300 });
});

test('megaflow lookup (non-overlapping) equals the unique match', () => {
  fc.assert(fc.property(
    fc.array(arbRule, { minLength: 1, maxLength: 60 }),
    fc.array(arbKeyVals, { minLength: 1, maxLength: 40 }),
    fc.array(fc.nat(), { maxLength: 20 }),
    (rs, keys, removals) => {
      const c = new Classifier(4);
      const rules: R[] = [];
      const overlaps = (a: R, b: R): boolean => {
        for (let i = 0; i < FLOW_WORDS; i++) if (((a.key[i] ^ b.key[i]) & a.mask[i] & b.mask[i]) !== 0) return false;
        return true;
      };
      for (const r of rs) {
        const mask = mkMask(r.use);
        const key = mkKey(r.vals).map((v, i) => (v & mask[i]) >>> 0);
        const cand: R = { key, mask, prio: 0, seq: rules.length, live: true, h: -1 };
        if (rules.some((o) => overlaps(o, cand))) continue;
        cand.h = c.insert(key, 0, mask, 0, 0, cand.seq);
        rules.push(cand);
      }
      const check = (): void => {
        for (const kv of keys) {
          const k = mkKey(kv);
          const h = c.lookup(k, 0);
          const exp = rules.filter((r) => r.live && matches(r, k));
          assert.ok(exp.length <= 1);
          assert.equal(h < 0 ? -1 : c.valueOf(h), exp.length ? exp[0].seq : -1);
        }
      };
      check();
      c.rerank();
      check();
      for (const x of removals) {
        const r = rules[x % rules.length];
        c.remove(r.h);
        r.live = false;
      }
      check();
      const st = c.stats();
      assert.equal(st.subtables.reduce((a, s) => a + s.rules, 0), c.size);
    }), { numRuns: 300 });
});

test('counters, ranking by hits, many rules in one subtable', () => {
  const c = new Classifier();
  const m1 = new Uint32Array(FLOW_WORDS); m1[0] = 0xffffffff;
  const m2 = new Uint32Array(FLOW_WORDS); m2[6] = 0xffff;
  const k = new Uint32Array(FLOW_WORDS);
  for (let i = 0; i < 5000; i++) { k[0] = i; c.insert(k, 0, m1, 0, 0, i); }
  k.fill(0);
  k[6] = 80; k[0] = 99999;
  c.insert(k, 0, m2, 0, 0, 777777);
  assert.equal(c.subtableCount, 2);
  for (let i = 0; i < RERANK_INTERVAL + 10; i++) {
    k[0] = 100000 + (i & 7); // only the port-80 rule matches
    assert.equal(c.valueOf(c.lookup(k, 0)), 777777);
  }
  const st = c.stats();
  assert.equal(st.subtables[0].rules, 1, 'hot subtable ranked first after re-rank');
  assert.ok(st.subtables[0].hits > RERANK_INTERVAL);
  k[0] = 4321; k[6] = 81;
  assert.equal(c.valueOf(c.lookup(k, 0)), 4321);
  k[0] = 999999;
  assert.equal(c.lookup(k, 0), -1);
  assert.ok(c.misses >= 1);
  for (let i = 0; i < 5000; i += 2) {
    k.fill(0); k[0] = i;
    assert.ok(c.remove(c.findExact(k, 0, m1, 0, 0)));
  }
  for (let i = 0; i < 5000; i++) {
    k.fill(0); k[0] = i;
    const h = c.lookup(k, 0);
    assert.equal(h >= 0, i % 2 === 1);
  }
  assert.equal(c.remove(-1), false);
  c.clear();
  assert.equal(c.size, 0);
  assert.equal(c.lookup(k, 0), -1);
});

test('catch-all rule (empty mask) and equal-priority ties', () => {
  const c = new Classifier();
  const z = new Uint32Array(FLOW_WORDS);
  const k = new Uint32Array(FLOW_WORDS);
  const a = c.insert(k, 0, z, 0, 5, 1);
  const b = c.insert(k, 0, z, 0, 5, 2);
  assert.equal(c.valueOf(c.lookupPriority(k, 0)), 1);
  c.remove(a);
  assert.equal(c.valueOf(c.lookupPriority(k, 0)), 2);
  const m = new Uint32Array(FLOW_WORDS); m[0] = 0xffffffff;
  k[0] = 3;
  c.insert(k, 0, m, 0, 5, 3);
  assert.equal(c.valueOf(c.lookupPriority(k, 0)), 2, 'tie: earlier inserted wins');
  c.remove(b);
  assert.equal(c.valueOf(c.lookupPriority(k, 0)), 3);
});

test('tie across subtables after the higher rule of one is removed', () => {
  const c = new Classifier();
  const mA = new Uint32Array(FLOW_WORDS); mA[0] = 0xffffffff;
  const mB = new Uint32Array(FLOW_WORDS); mB[6] = 0xffff;
  const k = new Uint32Array(FLOW_WORDS); k[0] = 1; k[6] = 2;
  c.insert(k, 0, mA, 0, 5, 100); // A: prio 5, earliest
  const hb = c.insert(k, 0, mB, 0, 7, 101); // B: prio 7 (ranked first)
  c.insert(k, 0, mB, 0, 5, 102); // B: prio 5, later than A's
  c.remove(hb);
  assert.equal(c.valueOf(c.lookupPriority(k, 0)), 100);
});

test('hintOf: while the version holds, a key matches the hint of f exactly when lookup() answers f (overlapping rules, duplicates, removals, re-ranks); creditHits counts as lookup()', () => {
  fc.assert(fc.property(
    fc.array(arbRule, { minLength: 1, maxLength: 30 }),
    fc.array(fc.tuple(arbKeyVals, fc.nat()), { minLength: 1, maxLength: 60 }),
    fc.array(fc.nat(), { maxLength: 10 }),
    fc.boolean(),
    (rs, probes, removals, dup) => {
      const c = new Classifier(4);
      const ref = new Classifier(4); // the same rules, asked with lookup() only
      const hs: number[] = [];
      const dups: number[] = [];
      for (const r of rs) {
        const mask = mkMask(r.use);
        const key = mkKey(r.vals);
        hs.push(c.insert(key, 0, mask, 0, 0, hs.length));
        ref.insert(key, 0, mask, 0, 0, hs.length - 1);
        if (dup && r.prio === 0) { dups.push(c.insert(key, 0, mask, 0, 0, -1)); ref.insert(key, 0, mask, 0, 0, -1); } // a chain
      }
      for (const x of removals) {
        const h = hs[x % hs.length];
        const v0 = c.version;
        assert.equal(c.remove(h), ref.remove(h));
        assert.ok(c.version !== v0 || !ref.isLive(h));
      }
      const idx = new Int32Array(FLOW_WORDS), mask = new Int32Array(FLOW_WORDS), hk = new Int32Array(FLOW_WORDS);
      let hint = -1, n = -1, ver = -1;
      probes.forEach(([kv, pick], i) => {
        const k = mkKey(kv);
        if (i % 17 === 16) { c.rerank(); ref.rerank(); }
        const want = ref.lookup(k, 0);
        let got: number;
        let viaHint = false;
        if (n >= 0 && ver === c.version) {
          let j = 0;
          for (; j < n; j++) if ((k[idx[j]] & mask[j]) !== hk[j]) break;
          viaHint = j === n;
        }
        if (viaHint) { got = hint; c.creditHits(hint, 1); } else got = c.lookup(k, 0);
        assert.equal(got, want);
        // a hint that does not match must not be lookup()'s answer: exactly the keys lookup() gives f
        if (n >= 0 && ver === c.version && !viaHint) assert.notEqual(want, hint);
        // the next hint: lookup()'s answer, or a random rule (a chain's head or a duplicate behind it)
        const f = pick % 3 === 0 ? hs[pick % hs.length] : pick % 3 === 1 && dups.length > 0 ? dups[pick % dups.length] : got;
        if (f >= 0) { hint = f; ver = c.version; n = c.hintOf(f, idx, mask, hk); }
      });
      assert.deepEqual(c.stats(), ref.stats());
    }), { numRuns: 300 });
});

test('the version changes at insert, remove, re-rank (also the automatic one) and clear; a hint is only given for the first-ranked subtable without chains', () => {
  const c = new Classifier();
  const m1 = new Uint32Array(FLOW_WORDS); m1[0] = 0xffffffff;
  const m2 = new Uint32Array(FLOW_WORDS); m2[0] = 0xffffffff; m2[7] = 0xffffffff;
  const k = new Uint32Array(FLOW_WORDS); k[0] = 1; k[7] = 9;
  const idx = new Int32Array(FLOW_WORDS), mask = new Int32Array(FLOW_WORDS), hk = new Int32Array(FLOW_WORDS);
  let v = c.version;
  const a = c.insert(k, 0, m1, 0, 0, 1);
  assert.notEqual(c.version, v); v = c.version;
  const b = c.insert(k, 0, m2, 0, 0, 2);
  assert.notEqual(c.version, v); v = c.version;
  assert.equal(c.hintOf(a, idx, mask, hk), 1);
  assert.deepEqual([idx[0], mask[0] >>> 0, hk[0]], [0, 0xffffffff, 1]);
  assert.equal(c.hintOf(b, idx, mask, hk), -1, 'b is not in the first-ranked subtable');
  // b's subtable gets the hits: after the automatic re-rank it is first
  for (let i = 0; i < RERANK_INTERVAL; i++) c.creditHits(b, 1);
  assert.notEqual(c.version, v); v = c.version;
  assert.equal(c.hintOf(b, idx, mask, hk), 2);
  assert.equal(c.hintOf(a, idx, mask, hk), -1);
  assert.equal(c.lookup(k, 0), b);
  // a chained duplicate in b's subtable: no hint (the chain head may not be b)
  c.insert(k, 0, m2, 0, 0, 3);
  assert.equal(c.hintOf(b, idx, mask, hk), -1);
  v = c.version;
  c.clear();
  assert.notEqual(c.version, v);
  assert.equal(c.hintOf(b, idx, mask, hk), -1);
});
