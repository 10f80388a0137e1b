/**
 * The slow path's record of every datapath flow it set up (OVS's ukeys):
 * per flow, the masked key and mask it was installed with, the translation
 * generation it was made under, the rules it hit and the packets/bytes already
 * credited to them. Held in typed arrays indexed by a handle (xid) that the
 * PMD thread keeps with the flow (Datapath.installFlowAt) and returns in its
 * flow dumps, so revalidation finds a flow's record without a search and a
 * new flow costs no allocation beyond its rule list (shared between flows
 * that hit the same rules).
 *
 * Lifetime: a record is freed when revalidation deletes its flow, or when a
 * pass does not meet it although it existed before the pass began (the flow
 * expired in the datapath, or an install of the same megaflow replaced it).
 */
import { FLOW_WORDS } from '../dp/flow-key.js';
import type { Rule } from '../ofproto/tables.js';

/** Translation generation meaning "never valid": the flow is translated in full by every pass. */
export const SIG_NONE = -1;

export class UkeyTable {
  private cap = 0;
  key = new Uint32Array(0);
  mask = new Uint32Array(0);
  sig = new Int32Array(0);
  at = new Float64Array(0);
  packets = new Float64Array(0);
  bytes = new Float64Array(0);
  /** Revalidation pass number when allocated / last met. */
  born = new Int32Array(0);
  seen = new Int32Array(0);
  rules: (Rule[] | null)[] = [];
  private free = new Int32Array(0);
  private nFree = 0;
  private hw = 0;
  /** Live records. */
  count = 0;
  /** The rule list stored last (reused by the next record that hit the same rules). */
  private lastRules: Rule[] = [];

  constructor(cap = 1024) {
    this.grow(cap);
  }

  alloc(): number {
    const x = this.nFree > 0 ? this.free[--this.nFree] : this.hw < this.cap ? this.hw++ : (this.grow(this.cap * 2), this.hw++);
    this.count++;
    return x;
  }

  release(x: number): void {
    if (!this.isLive(x)) return;
    this.rules[x] = null;
    this.free[this.nFree++] = x;
    this.count--;
  }

  isLive(x: number): boolean {
    return x >= 0 && x < this.hw && this.rules[x] !== null;
  }

  /** Whether record x was made for the flow (keys[keyOff..], masks[maskOff..]). */
  matches(x: number, keys: Uint32Array, keyOff: number, masks: Uint32Array, maskOff: number): boolean {
    const b = x * FLOW_WORDS;
    for (let i = 0; i < FLOW_WORDS; i++) if (this.key[b + i] !== keys[keyOff + i] || this.mask[b + i] !== masks[maskOff + i]) return false;
    return true;
  }

  /** Store the rules hit (a list equal to the last one stored is shared, not copied). */
  setRules(x: number, rules: readonly Rule[]): void {
    const last = this.lastRules;
    let same = last.length === rules.length;
    for (let i = 0; same && i < rules.length; i++) same = last[i] === rules[i];
    if (!same) this.lastRules = rules.slice();
    this.rules[x] = this.lastRules;
  }

  /** Free the records that existed before pass `pass` began and that it did not meet. */
  sweep(pass: number): number {
    let n = 0;
    for (let x = 0; x < this.hw; x++) {
      if (this.rules[x] !== null && this.born[x] < pass && this.seen[x] < pass) {
        this.release(x);
        n++;
      }
    }
    return n;
  }

  private grow(cap: number): void {
    const g = <T extends Uint32Array | Int32Array | Float64Array>(a: T, n: number): T => {
      const b = new (a.constructor as new (n: number) => T)(n);
      b.set(a);
      return b;
    };
    this.key = g(this.key, cap * FLOW_WORDS);
    this.mask = g(this.mask, cap * FLOW_WORDS);
    this.sig = g(this.sig, cap);
    this.at = g(this.at, cap);
    this.packets = g(this.packets, cap);
    this.bytes = g(this.bytes, cap);
    this.born = g(this.born, cap);
    this.seen = g(this.seen, cap);
    const f = new Int32Array(cap);
    f.set(this.free.subarray(0, this.nFree));
    this.free = f;
    for (let i = this.rules.length; i < cap; i++) this.rules.push(null);
    this.cap = cap;
  }
}
