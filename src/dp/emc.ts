/**
 * Exact-match cache (OVS EMC): a hash-indexed table of full flow keys ->
 * value (a megaflow handle). Each key has two candidate slots, taken from two
 * segments of its hash (like EM_FLOW_HASH_SEGS = 2). Insertion is
 * probabilistic: on average one insert per `insertInvProb` calls
 * (other_config:emc-insert-inv-prob, default 100; 1 = always, 0 = never), so
 * that a flood of short flows does not thrash the cache.
 *
 * Lookups compare the hash and then every key word (straight-line, most
 * variable words first, early exit). Zero allocation. Hashes are int32
 * (hashKey's value; any int32 works, it only has to be the same for equal keys).
 * Values are caller ids (>= 0); invalidate when the megaflow they name dies.
 */

import { FLOW_WORDS, assertUnrolledFlowWords } from './flow-key.js';

assertUnrolledFlowWords(19, 'ExactMatchCache.sameKey');

export const EMC_DEFAULT_ENTRIES = 8192;
export const EMC_DEFAULT_INSERT_INV_PROB = 100;

export class ExactMatchCache {
  readonly entries: number;
  private readonly shift: number;
  private readonly keys: Uint32Array;
  private readonly hashes: Int32Array;
  /** Value per slot, -1 = empty. */
  private readonly values: Int32Array;
  private rng: number;
  private inv = EMC_DEFAULT_INSERT_INV_PROB;
  /**
   * The insertion threshold as OVS keeps it (emc_insert_min = UINT32_MAX / inv, an insert when a
   * random u32 is <= it), stored with the sign bit flipped so that the test is one int32 compare
   * (a `% inv` of a u32 is a float modulo in V8, a call costing ~25 ns per miss). -2^31 with inv 0.
   */
  private insertMinS = 0;

  hits = 0;
  misses = 0;
  inserts = 0;
  /** Number of occupied slots. */
  used = 0;

  /** 1 in insertInvProb attempts really inserts (1: always); 0 disables insertion. */
  get insertInvProb(): number { return this.inv; }
  set insertInvProb(inv: number) {
    if (!(Number.isInteger(inv) && inv >= 0 && inv <= 0xffffffff)) throw new RangeError(`emc insert inverse probability must be an integer in 0..2^32-1, got ${inv}`);
    this.inv = inv;
    this.insertMinS = inv === 0 ? -0x80000000 : (Math.floor(0xffffffff / inv) ^ 0x80000000) | 0;
  }

  constructor(entries = EMC_DEFAULT_ENTRIES, insertInvProb = EMC_DEFAULT_INSERT_INV_PROB, seed = 0x9e3779b9) {
    if (entries < 2 || (entries & (entries - 1)) !== 0) throw new RangeError('EMC size must be a power of two >= 2');
    this.entries = entries;
    this.shift = 31 - Math.clz32(entries);
    this.keys = new Uint32Array(entries * FLOW_WORDS);
    this.hashes = new Int32Array(entries);
    this.values = new Int32Array(entries).fill(-1);
    this.insertInvProb = insertInvProb;
    this.rng = (seed | 0) || 1;
  }

  /** Value cached for this exact key (hash = hashKey(key)), or -1. */
  lookup(key: Uint32Array, keyOff: number, hash: number): number {
    hash |= 0;
    const m = this.entries - 1;
    const values = this.values;
    const hashes = this.hashes;
    const a = hash & m;
    if (hashes[a] === hash && values[a] >= 0 && this.sameKey(a, key, keyOff)) {
      this.hits++;
      return values[a];
    }
    const b = (hash >>> this.shift) & m;
    if (hashes[b] === hash && values[b] >= 0 && this.sameKey(b, key, keyOff)) {
      this.hits++;
      return values[b];
    }
    this.misses++;
    return -1;
  }

  /**
   * Maybe insert (subject to insertInvProb). If the key is present its value
   * is updated; otherwise an empty candidate is used, else the candidate with
   * the smaller stored hash is replaced (as OVS does). Returns whether it
   * inserted.
   */
  insert(key: Uint32Array, keyOff: number, hash: number, value: number): boolean {
    if (!this.shouldInsert()) return false;
    this.insertAlways(key, keyOff, hash, value);
    return true;
  }

  /**
   * The insertion draw of {@link insert} alone (the caller then hashes and calls insertAlways):
   * true always with insertInvProb 1, never with 0, else about 1 in insertInvProb calls.
   */
  shouldInsert(): boolean {
    const inv = this.inv;
    if (inv === 1) return true;
    if (inv === 0) return false;
    let x = this.rng;
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    this.rng = x;
    return (x ^ -0x80000000) <= this.insertMinS;
  }

  /** Insert unconditionally. */
  insertAlways(key: Uint32Array, keyOff: number, hash: number, value: number): void {
    hash |= 0;
    const m = this.entries - 1;
    const a = hash & m;
    const b = (hash >>> this.shift) & m;
    let slot: number;
    if (this.values[a] >= 0 && this.hashes[a] === hash && this.sameKey(a, key, keyOff)) slot = a;
    else if (this.values[b] >= 0 && this.hashes[b] === hash && this.sameKey(b, key, keyOff)) slot = b;
    else if (this.values[a] < 0) slot = a;
    else if (this.values[b] < 0) slot = b;
    else slot = (this.hashes[a] >>> 0) <= (this.hashes[b] >>> 0) ? a : b; // the smaller hash as u32, as before
    if (this.values[slot] < 0) this.used++;
    const base = slot * FLOW_WORDS;
    for (let w = 0; w < FLOW_WORDS; w++) this.keys[base + w] = key[keyOff + w];
    this.hashes[slot] = hash;
    this.values[slot] = value;
    this.inserts++;
  }

  /** Drop every entry whose value is `value`. Returns how many. */
  invalidateValue(value: number): number {
    let n = 0;
    for (let i = 0; i < this.entries; i++) {
      if (this.values[i] === value) { this.values[i] = -1; n++; }
    }
    this.used -= n;
    return n;
  }

  /** Drop the entry for this key, if cached. */
  invalidateKey(key: Uint32Array, keyOff: number, hash: number): boolean {
    hash |= 0;
    const m = this.entries - 1;
    let i = hash & m;
    for (let seg = 0; seg < 2; seg++) {
      if (this.values[i] >= 0 && this.hashes[i] === hash && this.sameKey(i, key, keyOff)) {
        this.values[i] = -1;
        this.used--;
        return true;
      }
      i = (hash >>> this.shift) & m;
    }
    return false;
  }

  /** Drop everything. */
  clear(): void {
    this.values.fill(-1);
    this.used = 0;
  }

  private sameKey(slot: number, key: Uint32Array, keyOff: number): boolean {
    const b = slot * FLOW_WORDS;
    const k = this.keys;
    const o = keyOff;
    // unrolled (a 16-step loop costs ~3x more here); the words that vary most between flows first
    // (W_TP, W_L3_SRC, W_L3_DST); literal indices: a module constant costs a load + TDZ check per use
    return k[b + 6] === key[o + 6] && k[b + 7] === key[o + 7] && k[b + 11] === key[o + 11] &&
      k[b] === key[o] && k[b + 1] === key[o + 1] && k[b + 2] === key[o + 2] && k[b + 3] === key[o + 3] &&
      k[b + 4] === key[o + 4] && k[b + 5] === key[o + 5] && k[b + 8] === key[o + 8] &&
      k[b + 9] === key[o + 9] && k[b + 10] === key[o + 10] && k[b + 12] === key[o + 12] &&
      k[b + 13] === key[o + 13] && k[b + 14] === key[o + 14] && k[b + 15] === key[o + 15] &&
      k[b + 16] === key[o + 16] && k[b + 17] === key[o + 17] && k[b + 18] === key[o + 18];
  }
}
