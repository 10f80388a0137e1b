/**
 * Upcalls in bulk between a PMD thread and the slow path (main thread): many
 * misses per batch and many flow installs per answer, as flat typed arrays,
 * carried in shared memory by upcall-channel.ts (an answer too large for its
 * slot goes as a message, its buffers transferred: build()).
 *
 *   PMD -> main   UpcallBatch:   n misses: id, in port, flow key (FLOW_WORDS
 *                                words), frame bytes (frames[frameOff[i]..frameOff[i+1]))
 *   main -> PMD   UpcallAnswer:  megaflows to install (key, mask, actions) and,
 *                                per held packet, the actions to run (or none: drop)
 *
 * Action programs live once in `acts`; installs and replies refer to them by
 * offset and length (the replies of one megaflow share its program).
 */
import { FLOW_WORDS } from './flow-key.js';
import type { Datapath } from './datapath.js';

export interface UpcallBatch {
  pmd: number;
  n: number;
  ids: Float64Array;
  ports: Int32Array;
  keys: Uint32Array;
  frameOff: Int32Array;
  frames: Uint8Array;
}

export interface UpcallAnswer {
  nInstall: number;
  /** Install i: key/mask words at i*FLOW_WORDS; actions acts[instOff[i] .. +instLen[i]). */
  instKeys: Uint32Array;
  instMasks: Uint32Array;
  instOff: Int32Array;
  instLen: Int32Array;
  /** Install i: the slow path's handle of its translation (Datapath.installFlowAt's xid). */
  instXid: Int32Array;
  nReply: number;
  /** Reply i: upcall id, actions acts[repOff[i] .. +repLen[i]) or none (repOff -1: drop). */
  repIds: Float64Array;
  repOff: Int32Array;
  repLen: Int32Array;
  /** 1: the answer is for this packet only; packets held behind it go up as upcalls of their own (packet-ins). */
  repPerPacket: Uint8Array;
  acts: Int32Array;
}

/** Collects misses in a PMD thread; takeInto() hands them over (into an upcall channel slot). */
export class UpcallBatcher {
  readonly pmd: number;
  private n = 0;
  private cap = 0;
  private ids!: Float64Array;
  private ports!: Int32Array;
  private keys!: Uint32Array;
  private frameOff!: Int32Array;
  private frames!: Uint8Array;
  private fb = 0;
  /** Upcalls without a packet (id < 0, setup only) kept at most; past it they are skipped. */
  private readonly setupBacklog: number;
  /** Setup-only upcalls skipped because the batcher already held setupBacklog upcalls. */
  setupSkipped = 0;

  /**
   * setupBacklog: while the batch holds this many upcalls (the slow path is
   * behind and the channel full), setup-only upcalls (UPCALL_NO_PACKET: their
   * packet was dropped past the upcall queue) are skipped: the flow's next
   * packet asks again. Upcalls that hold a packet are always kept (the upcall
   * queue bounds them).
   */
  constructor(pmd: number, initial = 256, setupBacklog = 4096) {
    this.pmd = pmd;
    this.setupBacklog = setupBacklog;
    this.alloc(initial, initial * 128);
  }

  get count(): number {
    return this.n;
  }

  private alloc(cap: number, frameBytes: number): void {
    this.cap = cap;
    this.ids = new Float64Array(cap);
    this.ports = new Int32Array(cap);
    this.keys = new Uint32Array(cap * FLOW_WORDS);
    this.frameOff = new Int32Array(cap + 1);
    this.frames = new Uint8Array(frameBytes);
    this.fb = 0;
    this.n = 0;
  }

  add(id: number, port: number, frame: Uint8Array, key: Uint32Array): void {
    this.addAt(id, port, frame, 0, frame.length, key);
  }

  /** add() with the frame as data[off .. off + len) (no view of it made). */
  addAt(id: number, port: number, data: Uint8Array, off: number, len: number, key: Uint32Array): void {
    let i = this.n;
    if (id < 0 && i >= this.setupBacklog) {
      this.setupSkipped++;
      return;
    }
    if (i === this.cap) this.growEntries();
    const fb = this.fb;
    if (fb + len > this.frames.length) this.growFrames(fb + len);
    this.ids[i] = id;
    this.ports[i] = port;
    const kb = i * FLOW_WORDS;
    for (let w = 0; w < FLOW_WORDS; w++) this.keys[kb + w] = key[w];
    this.frameOff[i] = fb;
    const f = this.frames;
    if (len <= 256) for (let b = 0; b < len; b++) f[fb + b] = data[off + b];
    else f.set(data.subarray(off, off + len), fb);
    this.fb = fb + len;
    this.n = ++i;
    this.frameOff[i] = this.fb;
  }

  private growEntries(): void {
    const c = this.cap * 2;
    const g = <T extends Float64Array | Int32Array | Uint32Array>(a: T, len: number): T => {
      const b = new (a.constructor as new (n: number) => T)(len);
      b.set(a);
      return b;
    };
    this.ids = g(this.ids, c);
    this.ports = g(this.ports, c);
    this.keys = g(this.keys, c * FLOW_WORDS);
    this.frameOff = g(this.frameOff, c + 1);
    this.cap = c;
  }

  private growFrames(need: number): void {
    let len = this.frames.length * 2;
    while (len < need) len *= 2;
    const b = new Uint8Array(len);
    b.set(this.frames.subarray(0, this.fb));
    this.frames = b;
  }

  /**
   * Move up to maxN upcalls (and at most maxFrameBytes of frames) into dst's
   * arrays (an upcall channel slot, see upcall-channel.ts); what does not fit
   * stays here, first in line for the next call. Returns how many moved (dst.n).
   */
  takeInto(dst: UpcallBatch, maxN: number, maxFrameBytes: number): number {
    const n = this.n;
    let k = n < maxN ? n : maxN;
    while (k > 0 && this.frameOff[k] > maxFrameBytes) k--;
    if (k === 0 && n > 0) throw new RangeError(`an upcall's frame (${this.frameOff[1]} bytes) is larger than a slot (${maxFrameBytes})`);
    const fb = this.frameOff[k];
    dst.ids.set(this.ids.subarray(0, k));
    dst.ports.set(this.ports.subarray(0, k));
    dst.keys.set(this.keys.subarray(0, k * FLOW_WORDS));
    dst.frameOff.set(this.frameOff.subarray(0, k + 1));
    dst.frames.set(this.frames.subarray(0, fb));
    dst.n = k;
    if (k < n) {
      // the rest moves to the front (rare: a batch larger than a slot)
      this.ids.copyWithin(0, k, n);
      this.ports.copyWithin(0, k, n);
      this.keys.copyWithin(0, k * FLOW_WORDS, n * FLOW_WORDS);
      for (let i = 0; i <= n - k; i++) this.frameOff[i] = this.frameOff[i + k] - fb;
      this.frames.copyWithin(0, fb, this.fb);
    } else this.frameOff[0] = 0;
    this.n = n - k;
    this.fb -= fb;
    return k;
  }
}

/**
 * hash -> value for one answer (install index, program offset): open
 * addressing in typed arrays, emptied in O(1) between answers by a generation
 * number (a Map cost two hashings and, for hashes past 2^30, a heap number
 * per upcall). Several values may share a hash: callers compare.
 */
class AnswerIndex {
  mask = 15;
  hashes = new Int32Array(16);
  vals = new Int32Array(16);
  gens = new Int32Array(16);
  gen = 1;
  private count = 0;

  clear(): void {
    this.count = 0;
    if (++this.gen === 0x7fffffff) {
      this.gens.fill(0);
      this.gen = 1;
    }
  }

  put(h: number, v: number): void {
    if (++this.count * 2 > this.hashes.length) this.grow();
    const m = this.mask;
    let i = h & m;
    while (this.gens[i] === this.gen) i = (i + 1) & m;
    this.gens[i] = this.gen;
    this.hashes[i] = h;
    this.vals[i] = v;
  }

  private grow(): void {
    const { hashes, vals, gens, gen } = this;
    const size = hashes.length * 2;
    this.hashes = new Int32Array(size);
    this.vals = new Int32Array(size);
    this.gens = new Int32Array(size);
    this.mask = size - 1;
    this.gen = 1;
    for (let i = 0; i < hashes.length; i++) {
      if (gens[i] !== gen) continue;
      let j = hashes[i] & this.mask;
      while (this.gens[j] === 1) j = (j + 1) & this.mask;
      this.gens[j] = 1;
      this.hashes[j] = hashes[i];
      this.vals[j] = vals[i];
    }
  }
}

/**
 * Builds answers on the main thread. One builder serves every batch (reset()
 * between them): its typed arrays grow and are kept; only the answer's own
 * arrays (sized to the content, transferred) are new per batch. Action
 * programs with the same words are stored once per answer (program()), so
 * the PMD thread keeps one copy of a program many megaflows share.
 */
export class UpcallAnswerBuilder {
  private nInst = 0;
  private nRep = 0;
  private nActs = 0;
  private instKeys: Uint32Array;
  private instMasks: Uint32Array;
  private instOff: Int32Array;
  private instLen: Int32Array;
  private instXid: Int32Array;
  private repIds: Float64Array;
  private repOff: Int32Array;
  private repLen: Int32Array;
  private repPerPacket: Uint8Array;
  private acts: Int32Array;
  /** key+mask hash -> install index (dedup of one megaflow's installs within the batch) */
  private readonly byHash = new AnswerIndex();
  /** program hash -> offset in acts (one copy of equal programs per answer) */
  private readonly progByHash = new AnswerIndex();
  /** The hash installed() computed last (pass it to install()). */
  lastHash = 0;

  constructor(maxReplies: number) {
    const n = Math.max(1, maxReplies);
    this.instKeys = new Uint32Array(n * FLOW_WORDS);
    this.instMasks = new Uint32Array(n * FLOW_WORDS);
    this.instOff = new Int32Array(n);
    this.instLen = new Int32Array(n);
    this.instXid = new Int32Array(n);
    this.repIds = new Float64Array(n);
    this.repOff = new Int32Array(n);
    this.repLen = new Int32Array(n);
    this.repPerPacket = new Uint8Array(n);
    this.acts = new Int32Array(n * 4);
  }

  /** Start a new answer of at most maxReplies replies. */
  reset(maxReplies: number): void {
    this.nInst = 0;
    this.nRep = 0;
    this.nActs = 0;
    this.byHash.clear();
    this.progByHash.clear();
    if (maxReplies > this.repIds.length) {
      let n = this.repIds.length;
      while (n < maxReplies) n *= 2;
      this.repIds = new Float64Array(n);
      this.repOff = new Int32Array(n);
      this.repLen = new Int32Array(n);
      this.repPerPacket = new Uint8Array(n);
    }
  }

  /** Store an action program (once per answer for equal programs); returns its offset (for install/reply). */
  program(actions: ArrayLike<number>): number {
    const len = actions.length;
    let h = (0x811c9dc5 ^ len) | 0;
    for (let i = 0; i < len; i++) h = Math.imul(h ^ actions[i], 0x01000193);
    const t = this.progByHash;
    for (let i = h & t.mask; t.gens[i] === t.gen; i = (i + 1) & t.mask) {
      if (t.hashes[i] !== h) continue;
      const prev = t.vals[i];
      if (prev + len > this.nActs) continue;
      let same = true;
      for (let k = 0; k < len && same; k++) same = this.acts[prev + k] === (actions[k] | 0);
      if (same) return prev;
    }
    const off = this.nActs;
    if (off + len > this.acts.length) {
      const b = new Int32Array(Math.max(this.acts.length * 2, off + len));
      b.set(this.acts.subarray(0, off));
      this.acts = b;
    }
    for (let i = 0; i < len; i++) this.acts[off + i] = actions[i];
    this.nActs = off + len;
    this.progByHash.put(h, off);
    return off;
  }

  /**
   * The program offset of a megaflow (key, mask) already installed in this
   * answer, or -1 (then program() and install() it, with lastHash).
   */
  installed(key: ArrayLike<number>, mask: ArrayLike<number>): number {
    let h = 0x811c9dc5 | 0;
    for (let i = 0; i < FLOW_WORDS; i++) {
      h = Math.imul(h ^ (key[i] >>> 0), 0x01000193);
      h = Math.imul(h ^ (mask[i] >>> 0), 0x01000193);
    }
    this.lastHash = h;
    const t = this.byHash;
    for (let s = h & t.mask; t.gens[s] === t.gen; s = (s + 1) & t.mask) {
      if (t.hashes[s] !== h) continue;
      const b = t.vals[s] * FLOW_WORDS;
      let same = true;
      for (let i = 0; i < FLOW_WORDS && same; i++) same = this.instKeys[b + i] === key[i] >>> 0 && this.instMasks[b + i] === mask[i] >>> 0;
      if (same) return this.instOff[t.vals[s]];
    }
    return -1;
  }

  install(key: ArrayLike<number>, mask: ArrayLike<number>, off: number, len: number, hash?: number, xid = -1): void {
    const j = this.nInst;
    if (j === this.instOff.length) this.growInstalls();
    const b = j * FLOW_WORDS;
    for (let i = 0; i < FLOW_WORDS; i++) {
      this.instKeys[b + i] = key[i] >>> 0;
      this.instMasks[b + i] = mask[i] >>> 0;
    }
    this.instOff[j] = off;
    this.instLen[j] = len;
    this.instXid[j] = xid;
    if (hash !== undefined) this.byHash.put(hash, j);
    this.nInst = j + 1;
  }

  private growInstalls(): void {
    const n = this.instOff.length * 2;
    const g = <T extends Uint32Array | Int32Array>(a: T, len: number): T => {
      const b = new (a.constructor as new (n: number) => T)(len);
      b.set(a);
      return b;
    };
    this.instKeys = g(this.instKeys, n * FLOW_WORDS);
    this.instMasks = g(this.instMasks, n * FLOW_WORDS);
    this.instOff = g(this.instOff, n);
    this.instLen = g(this.instLen, n);
    this.instXid = g(this.instXid, n);
  }

  /** off -1: no actions (the held packets are dropped as no-rule). At most maxReplies (of reset()) replies. */
  reply(id: number, off: number, len: number, perPacket = false): void {
    const j = this.nRep++;
    this.repIds[j] = id;
    this.repOff[j] = off;
    this.repLen[j] = len;
    this.repPerPacket[j] = perPacket ? 1 : 0;
  }

  /**
   * Copy the answer into dst's arrays (an upcall channel slot) when it fits
   * (at most maxN installs and replies, maxActs program words); false otherwise.
   */
  writeInto(dst: UpcallAnswer, maxN: number, maxActs: number): boolean {
    const ni = this.nInst;
    const nr = this.nRep;
    if (ni > maxN || nr > maxN || this.nActs > maxActs) return false;
    dst.instKeys.set(this.instKeys.subarray(0, ni * FLOW_WORDS));
    dst.instMasks.set(this.instMasks.subarray(0, ni * FLOW_WORDS));
    dst.instOff.set(this.instOff.subarray(0, ni));
    dst.instLen.set(this.instLen.subarray(0, ni));
    dst.instXid.set(this.instXid.subarray(0, ni));
    dst.repIds.set(this.repIds.subarray(0, nr));
    dst.repOff.set(this.repOff.subarray(0, nr));
    dst.repLen.set(this.repLen.subarray(0, nr));
    dst.repPerPacket.set(this.repPerPacket.subarray(0, nr));
    dst.acts.set(this.acts.subarray(0, this.nActs));
    dst.nInstall = ni;
    dst.nReply = nr;
    return true;
  }

  build(): { answer: UpcallAnswer; transfer: ArrayBuffer[] } {
    const ni = this.nInst;
    const nr = this.nRep;
    const answer: UpcallAnswer = {
      nInstall: ni,
      instKeys: this.instKeys.slice(0, ni * FLOW_WORDS),
      instMasks: this.instMasks.slice(0, ni * FLOW_WORDS),
      instOff: this.instOff.slice(0, ni),
      instLen: this.instLen.slice(0, ni),
      instXid: this.instXid.slice(0, ni),
      nReply: nr,
      repIds: this.repIds.slice(0, nr),
      repOff: this.repOff.slice(0, nr),
      repLen: this.repLen.slice(0, nr),
      repPerPacket: this.repPerPacket.slice(0, nr),
      acts: this.acts.slice(0, this.nActs),
    };
    const transfer = [answer.instKeys, answer.instMasks, answer.instOff, answer.instLen, answer.instXid, answer.repIds, answer.repOff, answer.repLen, answer.repPerPacket, answer.acts].map((a) => a.buffer as ArrayBuffer);
    return { answer, transfer };
  }
}

/**
 * Apply an answer in the PMD thread: megaflows first (in one go; megaflows
 * with one program share one copy of it), then the held packets. A refused
 * install (a bad program) is reported to onError and skipped.
 */
export function applyUpcallAnswer(dp: Datapath, r: UpcallAnswer, onError: (e: Error) => void): void {
  let progOff = -1;
  let prog: Int32Array | null = null;
  for (let i = 0; i < r.nInstall; i++) {
    try {
      const off = r.instOff[i];
      if (off !== progOff || prog === null || prog.length !== r.instLen[i]) {
        progOff = off;
        prog = r.acts.slice(off, off + r.instLen[i]);
      }
      dp.installFlowAt(r.instKeys, i * FLOW_WORDS, r.instMasks, i * FLOW_WORDS, prog, r.instXid[i]);
    } catch (e) {
      onError(e as Error);
    }
  }
  // replies of one megaflow (and of megaflows with one program) share one view of it
  let repOff = -1;
  let repProg: Int32Array | null = null;
  for (let i = 0; i < r.nReply; i++) {
    const off = r.repOff[i];
    const len = r.repLen[i];
    if (off >= 0 && (off !== repOff || repProg === null || repProg.length !== len)) {
      repOff = off;
      repProg = off === progOff && prog !== null && prog.length === len ? prog : r.acts.subarray(off, off + len);
    }
    dp.upcallReply(r.repIds[i], off < 0 ? null : repProg, r.repPerPacket[i] === 1, false);
  }
  // the held packets of every reply go out in bursts, not one burst per reply
  if (r.nReply > 0) dp.flushTx();
}
