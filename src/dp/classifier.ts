/**
 * Tuple-space-search classifier, the design of OVS dpcls: one subtable per
 * distinct mask, each a hash table keyed by the hash of (key & mask).
 *
 * Two lookups over the same structure:
 *  - lookup(): for datapath megaflows, which never overlap: the first
 *    subtable that has a match wins. Subtables are visited in order of
 *    recent hit count, re-ranked every RERANK_INTERVAL lookups (in place,
 *    insertion sort on a typed array: no allocation).
 *  - lookupPriority(): for OpenFlow tables: the highest-priority matching
 *    rule wins; among equal priorities the earliest inserted wins (a
 *    deterministic tie-break; OpenFlow leaves it undefined). Subtables are
 *    visited by decreasing maximum priority and the search stops as soon as
 *    no remaining subtable can beat the best match. If a wildcard array is
 *    given, the masks of all subtables that were examined are OR-ed into it:
 *    that is exactly what the decision depended on (megaflow un-wildcarding).
 *
 * Rules are identified by a handle (an entry index, reused after removal).
 * Each entry stores its masked key, priority, insertion sequence and the
 * caller's value. Entries with the same mask and the same masked key are
 * chained in one hash slot, sorted (priority desc, sequence asc).
 *
 * Lookups never allocate and never throw. Insert/remove are control path.
 */

import { FLOW_WORDS, HASH_BASIS, hashMaskedWords } from './flow-key.js';

const EMPTY = -1;
const TOMB = -2;
/** Lookups between two re-rankings of subtables by recent hits. */
export const RERANK_INTERVAL = 1 << 16;

class Subtable {
  readonly mask = new Uint32Array(FLOW_WORDS);
  /** Word indices with a non-zero mask, and how many. */
  readonly idx: Int32Array;
  readonly n: number;
  slots: Int32Array;
  hashes: Uint32Array;
  cap: number;
  used = 0;
  tombs = 0;
  count = 0;
  maxPrio = -Infinity;
  hits = 0;
  recent = 0;
  /** Hash of the mask (the key of Classifier.subByMask). */
  readonly maskHash: number;

  constructor(mask: Uint32Array, maskOff: number, maskHash: number) {
    const idx: number[] = [];
    for (let i = 0; i < FLOW_WORDS; i++) {
      this.mask[i] = mask[maskOff + i];
      if (this.mask[i] !== 0) idx.push(i);
    }
    this.idx = Int32Array.from(idx);
    this.n = idx.length;
    this.maskHash = maskHash;
    this.cap = 8;
    this.slots = new Int32Array(this.cap).fill(EMPTY);
    this.hashes = new Uint32Array(this.cap);
  }
}

export interface SubtableStats {
  /** Copy of the subtable mask (FLOW_WORDS words). */
  mask: Uint32Array;
  rules: number;
  hits: number;
  maxPriority: number;
}

export interface ClassifierStats {
  lookups: number;
  hits: number;
  misses: number;
  /** Subtables probed in total (lookups * average subtables visited). */
  probes: number;
  subtables: SubtableStats[];
}

export class Classifier {
  private cap: number;
  private eKey: Int32Array;
  private ePrio: Float64Array;
  private eSeq: Float64Array;
  private eValue: Int32Array;
  private eSub: Int32Array;
  private eNext: Int32Array;
  private freeHead = -1;
  private highWater = 0;
  private seq = 0;
  private nRules = 0;

  private subs: (Subtable | null)[] = [];
  /** Mask hash -> subtable index (a collision falls back to a scan: findSub). */
  private subByMask = new Map<number, number>();
  /** The subtable insert/findExact used last (checked first: installs come in runs of one mask). */
  private lastSub = -1;
  private rankHits = new Int32Array(8);
  private rankPrio = new Int32Array(8);
  private nSubs = 0;
  private sinceRerank = 0;

  /**
   * Changes with every insert, removal, re-rank and clear: whatever can change which rule
   * lookup() answers for a key (see hintOf).
   */
  version = 0;

  /** Counters. */
  lookups = 0;
  hits = 0;
  misses = 0;
  probes = 0;

  constructor(initialCapacity = 64) {
    this.cap = Math.max(4, initialCapacity | 0);
    this.eKey = new Int32Array(this.cap * FLOW_WORDS);
    this.ePrio = new Float64Array(this.cap);
    this.eSeq = new Float64Array(this.cap);
    this.eValue = new Int32Array(this.cap);
    this.eSub = new Int32Array(this.cap).fill(-1);
    this.eNext = new Int32Array(this.cap).fill(-1);
  }

  /** Number of rules. */
  get size(): number { return this.nRules; }
  /** Number of subtables (distinct masks). */
  get subtableCount(): number { return this.nSubs; }

  /** The value given at insert time. */
  valueOf(handle: number): number { return this.eValue[handle]; }
  /** The priority given at insert time. */
  priorityOf(handle: number): number { return this.ePrio[handle]; }
  /** Whether a handle designates a live rule. */
  isLive(handle: number): boolean {
    return handle >= 0 && handle < this.highWater && this.eSub[handle] >= 0;
  }

  /**
   * Insert a rule. key is masked internally (bits outside the mask are
   * ignored). Duplicates (same mask, masked key and priority) are allowed and
   * ordered by insertion. Returns the handle.
   */
  insert(key: Uint32Array, keyOff: number, mask: Uint32Array, maskOff: number,
    priority: number, value: number): number {
    this.version++;
    let si = this.findSub(mask, maskOff);
    if (si < 0) si = this.addSubtable(mask, maskOff, maskHash(mask, maskOff));
    const s = this.subs[si]!;
    const e = this.allocEntry();
    const base = e * FLOW_WORDS;
    for (let i = 0; i < FLOW_WORDS; i++) this.eKey[base + i] = key[keyOff + i] & s.mask[i];
    this.ePrio[e] = priority;
    this.eSeq[e] = this.seq++;
    this.eValue[e] = value | 0;
    this.eSub[e] = si;
    this.eNext[e] = -1;

    if ((s.used + s.tombs + 1) * 4 > s.cap * 3) this.rehash(s, s.count * 2 + 8);
    const h = hashMaskedWords(this.eKey as unknown as Uint32Array, base, s.mask, 0, s.idx, s.n, HASH_BASIS);
    const m = s.cap - 1;
    let i = h & m;
    let firstTomb = -1;
    for (;;) {
      const head = s.slots[i];
      if (head === EMPTY) break;
      if (head === TOMB) { if (firstTomb < 0) firstTomb = i; }
      else if (s.hashes[i] === h && this.sameEntryKey(head, e, s)) {
        // Chain into this slot, sorted by (priority desc, seq asc).
        if (this.before(e, head)) {
          this.eNext[e] = head;
          s.slots[i] = e;
        } else {
          let p = head;
          while (this.eNext[p] >= 0 && !this.before(e, this.eNext[p])) p = this.eNext[p];
          this.eNext[e] = this.eNext[p];
          this.eNext[p] = e;
        }
        this.afterInsert(s, priority);
        return e;
      }
      i = (i + 1) & m;
    }
    if (firstTomb >= 0) { i = firstTomb; s.tombs--; }
    s.slots[i] = e;
    s.hashes[i] = h;
    s.used++;
    this.afterInsert(s, priority);
    return e;
  }

  /** Remove a rule by handle. Returns false if the handle was not live. */
  remove(handle: number): boolean {
    if (!this.isLive(handle)) return false;
    this.version++;
    const si = this.eSub[handle];
    const s = this.subs[si]!;
    const base = handle * FLOW_WORDS;
    const h = hashMaskedWords(this.eKey as unknown as Uint32Array, base, s.mask, 0, s.idx, s.n, HASH_BASIS);
    const m = s.cap - 1;
    let i = h & m;
    for (;;) {
      const head = s.slots[i];
      if (head === EMPTY) throw new Error('classifier: corrupt (entry not found in its subtable)');
      if (head >= 0 && s.hashes[i] === h && this.sameEntryKey(head, handle, s)) {
        if (head === handle) {
          const nx = this.eNext[handle];
          if (nx >= 0) s.slots[i] = nx;
          else { s.slots[i] = TOMB; s.used--; s.tombs++; }
        } else {
          let p = head;
          while (this.eNext[p] !== handle) {
            p = this.eNext[p];
            if (p < 0) throw new Error('classifier: corrupt chain');
          }
          this.eNext[p] = this.eNext[handle];
        }
        break;
      }
      i = (i + 1) & m;
    }
    const prio = this.ePrio[handle];
    this.freeEntry(handle);
    this.nRules--;
    s.count--;
    if (s.count === 0) this.removeSubtable(si);
    else if (prio >= s.maxPrio) { this.recomputeMaxPrio(s); this.sortByPrio(); }
    return true;
  }

  /**
   * Megaflow lookup: handle of a rule whose (mask, masked key) matches the
   * key, or -1. Intended for non-overlapping rule sets (the first subtable
   * in hit-rank order that matches wins). Zero allocation.
   */
  lookup(key: Uint32Array, keyOff: number): number {
    this.lookups++;
    if (++this.sinceRerank >= RERANK_INTERVAL) this.rerank();
    const rank = this.rankHits;
    const subs = this.subs;
    for (let r = 0, nr = this.nSubs; r < nr; r++) {
      const s = subs[rank[r]]!;
      this.probes++;
      const e = this.probe(s, key, keyOff);
      if (e >= 0) {
        s.hits++;
        s.recent++;
        this.hits++;
        return e;
      }
    }
    this.misses++;
    return -1;
  }

  /**
   * A megaflow's hint: when handle f's subtable is the one lookup() probes first and holds no
   * chained duplicates, its significant word indices, mask words and masked key words go to
   * idx/mask/key (FLOW_WORDS long each) and their count is returned; otherwise -1. While
   * {@link version} stays the same, lookup() answers f for exactly the keys with
   * (key[idx[j]] & mask[j]) === key[j] for every j: the datapath checks the last packet's megaflow
   * that way (many flows of one megaflow: keys differ, the megaflow does not) with no hash and no
   * probe, and counts those answers with {@link creditHits}.
   */
  hintOf(f: number, idx: Int32Array, mask: Int32Array, key: Int32Array): number {
    if (!this.isLive(f) || this.nSubs === 0) return -1;
    const si = this.eSub[f];
    if (si !== this.rankHits[0]) return -1;
    const s = this.subs[si]!;
    if (s.count !== s.used) return -1;
    const base = f * FLOW_WORDS;
    for (let j = 0; j < s.n; j++) {
      const w = s.idx[j];
      idx[j] = w;
      mask[j] = s.mask[w];
      key[j] = this.eKey[base + w];
    }
    return s.n;
  }

  /**
   * Count n lookups answered by live megaflow f through its hint ({@link hintOf}) as lookup()
   * would have counted them (lookups, hits, probes, the subtable's hits for its ranking); a
   * re-rank that falls due happens here.
   */
  creditHits(f: number, n: number): void {
    const s = this.subs[this.eSub[f]]!;
    this.lookups += n;
    this.hits += n;
    this.probes += n;
    s.hits += n;
    s.recent += n;
    this.sinceRerank += n;
    if (this.sinceRerank >= RERANK_INTERVAL) this.rerank();
  }

  /**
   * Prioritized lookup (OpenFlow tables): handle of the highest-priority
   * matching rule (ties: earliest inserted), or -1. If wc is given, the masks
   * of every subtable examined are OR-ed into wc[wcOff..wcOff+FLOW_WORDS).
   */
  lookupPriority(key: Uint32Array, keyOff: number, wc?: Uint32Array, wcOff = 0): number {
    this.lookups++;
    let best = -1;
    let bestPrio = -Infinity;
    let bestSeq = Infinity;
    const rank = this.rankPrio;
    const subs = this.subs;
    for (let r = 0, nr = this.nSubs; r < nr; r++) {
      const s = subs[rank[r]]!;
      if (s.maxPrio < bestPrio) break;
      this.probes++;
      if (wc !== undefined) {
        const idx = s.idx;
        for (let j = 0; j < s.n; j++) wc[wcOff + idx[j]] |= s.mask[idx[j]];
      }
      const e = this.probe(s, key, keyOff);
      if (e >= 0) {
        const p = this.ePrio[e];
        if (p > bestPrio || (p === bestPrio && this.eSeq[e] < bestSeq)) {
          best = e; bestPrio = p; bestSeq = this.eSeq[e];
        }
      }
    }
    if (best >= 0) {
      const s = subs[this.eSub[best]]!;
      s.hits++;
      this.hits++;
    } else {
      this.misses++;
    }
    return best;
  }

  /**
   * Strict lookup: the rule with exactly this mask, masked key and priority
   * (earliest inserted if several), or -1.
   */
  findExact(key: Uint32Array, keyOff: number, mask: Uint32Array, maskOff: number, priority: number): number {
    const si = this.findSub(mask, maskOff);
    if (si < 0) return -1;
    const s = this.subs[si]!;
    let e = this.probe(s, key, keyOff);
    while (e >= 0) {
      if (this.ePrio[e] === priority) return e;
      e = this.eNext[e];
    }
    return -1;
  }

  /** Copy the masked key of a rule into out[outOff..]. */
  keyOf(handle: number, out: Uint32Array, outOff = 0): void {
    const base = handle * FLOW_WORDS;
    for (let i = 0; i < FLOW_WORDS; i++) out[outOff + i] = this.eKey[base + i];
  }

  /** Copy the mask of a rule into out[outOff..]. */
  maskOf(handle: number, out: Uint32Array, outOff = 0): void {
    const s = this.subs[this.eSub[handle]]!;
    for (let i = 0; i < FLOW_WORDS; i++) out[outOff + i] = s.mask[i];
  }

  /** Handles of all live rules into out (at least size long); returns how many. */
  handlesInto(out: Int32Array): number {
    let n = 0;
    for (let e = 0; e < this.highWater; e++) if (this.eSub[e] >= 0) out[n++] = e;
    return n;
  }

  /** Handles of all live rules (control path). */
  handles(): number[] {
    const out: number[] = [];
    for (let e = 0; e < this.highWater; e++) if (this.eSub[e] >= 0) out.push(e);
    return out;
  }

  /** Remove everything. */
  clear(): void {
    this.version++;
    for (let e = 0; e < this.highWater; e++) this.eSub[e] = -1;
    this.freeHead = -1;
    this.highWater = 0;
    this.nRules = 0;
    this.subs = [];
    this.subByMask.clear();
    this.lastSub = -1;
    this.nSubs = 0;
  }

  /** Counters and per-subtable statistics (control path). */
  stats(): ClassifierStats {
    const subtables: SubtableStats[] = [];
    for (let r = 0; r < this.nSubs; r++) {
      const s = this.subs[this.rankHits[r]]!;
      subtables.push({ mask: s.mask.slice(), rules: s.count, hits: s.hits, maxPriority: s.maxPrio });
    }
    return { lookups: this.lookups, hits: this.hits, misses: this.misses, probes: this.probes, subtables };
  }

  /** Re-sort subtables for lookup() by hits since the last re-rank. */
  rerank(): void {
    this.version++;
    this.sinceRerank = 0;
    const rank = this.rankHits;
    const subs = this.subs;
    for (let i = 1; i < this.nSubs; i++) {
      const v = rank[i];
      const hv = subs[v]!.recent;
      let j = i - 1;
      while (j >= 0 && subs[rank[j]]!.recent < hv) { rank[j + 1] = rank[j]; j--; }
      rank[j + 1] = v;
    }
    for (let i = 0; i < this.nSubs; i++) subs[rank[i]]!.recent = 0;
  }

  // -------------------------------------------------------------------------

  /** Chain head in s matching the key, or -1. */
  private probe(s: Subtable, key: Uint32Array, keyOff: number): number {
    const idx = s.idx;
    const n = s.n;
    const mask = s.mask;
    const h = hashMaskedWords(key, keyOff, mask, 0, idx, n, HASH_BASIS);
    const slots = s.slots;
    const hashes = s.hashes;
    const ek = this.eKey;
    const m = s.cap - 1;
    let i = h & m;
    for (;;) {
      const e = slots[i];
      if (e === EMPTY) return -1;
      if (e >= 0 && hashes[i] === h) {
        const base = e * FLOW_WORDS;
        let j = 0;
        for (; j < n; j++) {
          const w = idx[j];
          if ((key[keyOff + w] & mask[w]) !== ek[base + w]) break;
        }
        if (j === n) return e;
      }
      i = (i + 1) & m;
    }
  }

  private sameEntryKey(a: number, b: number, s: Subtable): boolean {
    const ba = a * FLOW_WORDS;
    const bb = b * FLOW_WORDS;
    for (let j = 0; j < s.n; j++) {
      const w = s.idx[j];
      if (this.eKey[ba + w] !== this.eKey[bb + w]) return false;
    }
    return true;
  }

  /** Whether entry a sorts before entry b in a chain. */
  private before(a: number, b: number): boolean {
    const pa = this.ePrio[a];
    const pb = this.ePrio[b];
    return pa > pb || (pa === pb && this.eSeq[a] < this.eSeq[b]);
  }

  private afterInsert(s: Subtable, priority: number): void {
    this.nRules++;
    s.count++;
    if (priority > s.maxPrio) {
      s.maxPrio = priority;
      this.sortByPrio();
    }
  }

  private rehash(s: Subtable, minCount: number): void {
    let cap = 8;
    while (cap * 3 < minCount * 4 + 4) cap <<= 1;
    const oldSlots = s.slots;
    const oldHashes = s.hashes;
    s.cap = cap;
    s.slots = new Int32Array(cap).fill(EMPTY);
    s.hashes = new Uint32Array(cap);
    s.used = 0;
    s.tombs = 0;
    const m = cap - 1;
    for (let k = 0; k < oldSlots.length; k++) {
      const e = oldSlots[k];
      if (e < 0) continue;
      const h = oldHashes[k];
      let i = h & m;
      while (s.slots[i] !== EMPTY) i = (i + 1) & m;
      s.slots[i] = e;
      s.hashes[i] = h;
      s.used++;
    }
  }

  private recomputeMaxPrio(s: Subtable): void {
    let mp = -Infinity;
    for (let k = 0; k < s.cap; k++) {
      const e = s.slots[k];
      if (e >= 0 && this.ePrio[e] > mp) mp = this.ePrio[e];
    }
    s.maxPrio = mp;
  }

  /** Index of the subtable with exactly this mask, or -1 (no allocation). */
  private findSub(mask: Uint32Array, maskOff: number): number {
    const last = this.lastSub;
    if (last >= 0) {
      const s = this.subs[last];
      if (s !== null && s !== undefined && sameMask(s.mask, mask, maskOff)) return last;
    }
    const si = this.subByMask.get(maskHash(mask, maskOff));
    if (si !== undefined) {
      const s = this.subs[si]!;
      if (sameMask(s.mask, mask, maskOff)) { this.lastSub = si; return si; }
    }
    // a hash collision (two masks, one hash): only one of them is in the map
    for (let i = 0; i < this.subs.length; i++) {
      const s = this.subs[i];
      if (s !== null && sameMask(s.mask, mask, maskOff)) { this.lastSub = i; return i; }
    }
    return -1;
  }

  private addSubtable(mask: Uint32Array, maskOff: number, maskId: number): number {
    let si = this.subs.indexOf(null);
    const s = new Subtable(mask, maskOff, maskId);
    if (si < 0) { si = this.subs.length; this.subs.push(s); } else this.subs[si] = s;
    if (!this.subByMask.has(maskId)) this.subByMask.set(maskId, si);
    this.lastSub = si;
    if (this.nSubs === this.rankHits.length) {
      const nh = new Int32Array(this.nSubs * 2); nh.set(this.rankHits); this.rankHits = nh;
      const np = new Int32Array(this.nSubs * 2); np.set(this.rankPrio); this.rankPrio = np;
    }
    this.rankHits[this.nSubs] = si;
    this.rankPrio[this.nSubs] = si;
    this.nSubs++;
    return si;
  }

  private removeSubtable(si: number): void {
    const s = this.subs[si]!;
    if (this.subByMask.get(s.maskHash) === si) this.subByMask.delete(s.maskHash);
    this.subs[si] = null;
    if (this.lastSub === si) this.lastSub = -1;
    for (const rank of [this.rankHits, this.rankPrio]) {
      let w = 0;
      for (let r = 0; r < this.nSubs; r++) if (rank[r] !== si) rank[w++] = rank[r];
    }
    this.nSubs--;
  }

  private sortByPrio(): void {
    const rank = this.rankPrio;
    const subs = this.subs;
    for (let i = 1; i < this.nSubs; i++) {
      const v = rank[i];
      const pv = subs[v]!.maxPrio;
      let j = i - 1;
      while (j >= 0 && subs[rank[j]]!.maxPrio < pv) { rank[j + 1] = rank[j]; j--; }
      rank[j + 1] = v;
    }
  }

  private allocEntry(): number {
    if (this.freeHead >= 0) {
      const e = this.freeHead;
      this.freeHead = this.eNext[e];
      return e;
    }
    if (this.highWater === this.cap) this.grow();
    return this.highWater++;
  }

  private freeEntry(e: number): void {
    this.eSub[e] = -1;
    this.eNext[e] = this.freeHead;
    this.freeHead = e;
  }

  private grow(): void {
    const cap = this.cap * 2;
    const k = new Int32Array(cap * FLOW_WORDS); k.set(this.eKey); this.eKey = k;
    const p = new Float64Array(cap); p.set(this.ePrio); this.ePrio = p;
    const q = new Float64Array(cap); q.set(this.eSeq); this.eSeq = q;
    const v = new Int32Array(cap); v.set(this.eValue); this.eValue = v;
    const s = new Int32Array(cap).fill(-1); s.set(this.eSub); this.eSub = s;
    const n = new Int32Array(cap).fill(-1); n.set(this.eNext); this.eNext = n;
    this.cap = cap;
  }
}

function maskHash(mask: Uint32Array, off: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < FLOW_WORDS; i++) h = Math.imul(h ^ mask[off + i], 0x01000193);
  return h;
}

function sameMask(a: Uint32Array, mask: Uint32Array, off: number): boolean {
  for (let i = 0; i < FLOW_WORDS; i++) if (a[i] !== mask[off + i] >>> 0) return false;
  return true;
}
