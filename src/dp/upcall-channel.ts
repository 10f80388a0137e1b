/**
 * Upcalls and their answers between a PMD thread and the slow path through
 * shared memory instead of messages: two single-producer single-consumer rings
 * of fixed-size slots in one SharedArrayBuffer.
 *
 *   upcall slots   PMD -> main   one UpcallBatch per slot (ids, ports, keys, frames)
 *   answer slots   main -> PMD   one UpcallAnswer per slot (installs, replies, programs)
 *
 * Each ring is two free-running counters (slots published, slots released);
 * slots are filled and consumed in order, so a slot is its counter modulo the
 * slot count. Both sides read the other's slots in place through views made
 * once (no copy, no structured clone, no allocation per batch).
 *
 * Waking: the PMD thread polls the answer ring at its flush points; it sleeps
 * for an answer (waitForAnswer, bounded) only while its upcall queue is full
 * and the slow path is behind, and the main thread then notifies it. The main thread sleeps in Atomics.waitAsync on a doorbell word
 * while there is nothing to translate; the PMD bumps the doorbell after
 * publishing and calls Atomics.notify only when the main thread said it sleeps.
 * The main thread announces sleep, reads the doorbell, checks the ring, then
 * waits for the doorbell to change: a batch published in between either shows
 * in the check or changes the doorbell, so none is missed.
 *
 * When the upcall ring is full the PMD keeps collecting (UpcallBatcher) and
 * sends later in bigger batches (back-pressure); an answer that does not fit
 * a slot, or finds the ring full, is the caller's to send another way
 * (PmdThread posts it as a message).
 *
 * Where it runs: UpcallChannelPmd in a PMD worker, UpcallChannelMain on the
 * daemon's main thread; bench/micro/upcall.ts and the tests run both in one.
 */
import { FLOW_WORDS } from './flow-key.js';
import type { UpcallAnswer, UpcallAnswerBuilder, UpcallBatch, UpcallBatcher } from './upcall-batch.js';
import type { Datapath } from './datapath.js';
import { applyUpcallAnswer } from './upcall-batch.js';

/** The sizes of a channel. */
export interface UpcallChannelShape {
  /** Slots per ring (each direction). */
  slots: number;
  /** Upcalls per upcall slot (and installs, replies per answer slot). */
  upcalls: number;
  /** Frame bytes per upcall slot (at least one jumbo frame). */
  frameBytes: number;
  /** Action-program words per answer slot. */
  actWords: number;
}

export interface UpcallChannelInfo extends UpcallChannelShape {
  sab: SharedArrayBuffer;
}

export const DEFAULT_UPCALL_CHANNEL: UpcallChannelShape = { slots: 8, upcalls: 512, frameBytes: 64 * 1024, actWords: 8 * 1024 };

// control words (Int32 indices), each on its own 64-byte line
const C_UP_PROD = 0;
const C_UP_CONS = 16;
const C_ANS_PROD = 32;
const C_ANS_CONS = 48;
const C_BELL = 64;
const C_SLEEP = 80;
const C_PMD_SLEEP = 96;
const CTRL_BYTES = 448;
/** Largest frame an upcall carries (9018-byte jumbo and its tunnel headroom). */
const MIN_FRAME_BYTES = 16 * 1024;

/** Atomics.waitAsync (Node >= 16; not in this TypeScript lib). */
const waitAsync = (a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } =>
  (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }).waitAsync(a, i, v);

const al = (n: number): number => Math.ceil(n / 64) * 64;

interface Layout {
  upSlotBytes: number;
  ansSlotBytes: number;
  upBase: number;
  ansBase: number;
  total: number;
  // offsets within an upcall slot
  uIds: number;
  uPorts: number;
  uKeys: number;
  uFrameOff: number;
  uFrames: number;
  // offsets within an answer slot
  aInstKeys: number;
  aInstMasks: number;
  aInstOff: number;
  aInstLen: number;
  aInstXid: number;
  aRepIds: number;
  aRepOff: number;
  aRepLen: number;
  aRepPer: number;
  aActs: number;
}

function layout(s: UpcallChannelShape): Layout {
  const U = s.upcalls;
  const uIds = 64;
  const uPorts = al(uIds + U * 8);
  const uKeys = al(uPorts + U * 4);
  const uFrameOff = al(uKeys + U * FLOW_WORDS * 4);
  const uFrames = al(uFrameOff + (U + 1) * 4);
  const upSlotBytes = al(uFrames + s.frameBytes);
  const aInstKeys = 64;
  const aInstMasks = al(aInstKeys + U * FLOW_WORDS * 4);
  const aInstOff = al(aInstMasks + U * FLOW_WORDS * 4);
  const aInstLen = al(aInstOff + U * 4);
  const aInstXid = al(aInstLen + U * 4);
  const aRepIds = al(aInstXid + U * 4);
  const aRepOff = al(aRepIds + U * 8);
  const aRepLen = al(aRepOff + U * 4);
  const aRepPer = al(aRepLen + U * 4);
  const aActs = al(aRepPer + U);
  const ansSlotBytes = al(aActs + s.actWords * 4);
  const upBase = CTRL_BYTES;
  const ansBase = upBase + s.slots * upSlotBytes;
  return {
    upSlotBytes, ansSlotBytes, upBase, ansBase, total: ansBase + s.slots * ansSlotBytes,
    uIds, uPorts, uKeys, uFrameOff, uFrames,
    aInstKeys, aInstMasks, aInstOff, aInstLen, aInstXid, aRepIds, aRepOff, aRepLen, aRepPer, aActs,
  };
}

/** A new channel's shared memory (give the info to both sides). */
export function newUpcallChannel(shape: Partial<UpcallChannelShape> = {}): UpcallChannelInfo {
  const s = { ...DEFAULT_UPCALL_CHANNEL, ...shape };
  if (!(Number.isInteger(s.slots) && s.slots >= 1 && s.slots <= 1024)) throw new RangeError(`upcall channel slots must be in 1..1024, got ${s.slots}`);
  if (!(Number.isInteger(s.upcalls) && s.upcalls >= 1)) throw new RangeError(`upcalls per slot must be >= 1, got ${s.upcalls}`);
  if (!(s.frameBytes >= MIN_FRAME_BYTES)) throw new RangeError(`frame bytes per slot must be >= ${MIN_FRAME_BYTES}, got ${s.frameBytes}`);
  if (!(Number.isInteger(s.actWords) && s.actWords >= 1)) throw new RangeError(`action words per slot must be >= 1, got ${s.actWords}`);
  return { ...s, sab: new SharedArrayBuffer(layout(s).total) };
}

/** Views of every slot, made once (both sides). */
class Slots {
  readonly shape: UpcallChannelShape;
  readonly ctrl: Int32Array;
  readonly up: UpcallBatch[] = [];
  /** Per upcall slot: [n, frame bytes]. */
  readonly upHdr: Int32Array[] = [];
  readonly ans: UpcallAnswer[] = [];
  /** Per answer slot: [installs, replies]. */
  readonly ansHdr: Int32Array[] = [];

  constructor(info: UpcallChannelInfo, pmd: number) {
    const s = (this.shape = { slots: info.slots, upcalls: info.upcalls, frameBytes: info.frameBytes, actWords: info.actWords });
    const L = layout(s);
    if (info.sab.byteLength < L.total) throw new RangeError('upcall channel memory smaller than its shape');
    const sab = info.sab;
    const U = s.upcalls;
    this.ctrl = new Int32Array(sab, 0, CTRL_BYTES / 4);
    for (let i = 0; i < s.slots; i++) {
      const b = L.upBase + i * L.upSlotBytes;
      this.upHdr.push(new Int32Array(sab, b, 2));
      this.up.push({
        pmd,
        n: 0,
        ids: new Float64Array(sab, b + L.uIds, U),
        ports: new Int32Array(sab, b + L.uPorts, U),
        keys: new Uint32Array(sab, b + L.uKeys, U * FLOW_WORDS),
        frameOff: new Int32Array(sab, b + L.uFrameOff, U + 1),
        frames: new Uint8Array(sab, b + L.uFrames, s.frameBytes),
      });
      const a = L.ansBase + i * L.ansSlotBytes;
      this.ansHdr.push(new Int32Array(sab, a, 2));
      this.ans.push({
        nInstall: 0,
        instKeys: new Uint32Array(sab, a + L.aInstKeys, U * FLOW_WORDS),
        instMasks: new Uint32Array(sab, a + L.aInstMasks, U * FLOW_WORDS),
        instOff: new Int32Array(sab, a + L.aInstOff, U),
        instLen: new Int32Array(sab, a + L.aInstLen, U),
        instXid: new Int32Array(sab, a + L.aInstXid, U),
        nReply: 0,
        repIds: new Float64Array(sab, a + L.aRepIds, U),
        repOff: new Int32Array(sab, a + L.aRepOff, U),
        repLen: new Int32Array(sab, a + L.aRepLen, U),
        repPerPacket: new Uint8Array(sab, a + L.aRepPer, U),
        acts: new Int32Array(sab, a + L.aActs, s.actWords),
      });
    }
  }
}

/** The PMD thread's end: send upcall batches, apply answers. One thread at a time. */
export class UpcallChannelPmd {
  private readonly s: Slots;
  /** Batches sent, answers applied (counters of this side's ring positions). */
  private upProd: number;
  private ansCons: number;

  constructor(info: UpcallChannelInfo, pmd: number) {
    this.s = new Slots(info, pmd);
    this.upProd = Atomics.load(this.s.ctrl, C_UP_PROD);
    this.ansCons = Atomics.load(this.s.ctrl, C_ANS_CONS);
  }

  /**
   * Move what the batcher holds into free upcall slots (as much as fits; the
   * rest stays in the batcher for the next call) and ring the doorbell.
   * Returns the upcalls sent.
   */
  send(b: UpcallBatcher): number {
    const s = this.s;
    const c = s.ctrl;
    const n = s.shape.slots;
    let sent = 0;
    let p = this.upProd;
    while (b.count > 0 && ((p - Atomics.load(c, C_UP_CONS)) | 0) < n) {
      const i = p % n;
      const k = b.takeInto(s.up[i], s.shape.upcalls, s.shape.frameBytes);
      s.upHdr[i][0] = k;
      sent += k;
      p = (p + 1) | 0;
      Atomics.store(c, C_UP_PROD, p);
    }
    if (p !== this.upProd) {
      this.upProd = p;
      Atomics.add(c, C_BELL, 1);
      if (Atomics.load(c, C_SLEEP) === 1) Atomics.notify(c, C_BELL, 1);
    }
    return sent;
  }

  /** The slow path has batches it has not finished (it is translating, or about to). */
  get slowPathBusy(): boolean {
    const c = this.s.ctrl;
    return Atomics.load(c, C_UP_PROD) !== Atomics.load(c, C_UP_CONS);
  }

  /**
   * Sleep until the slow path publishes an answer, at most maxMs (the PMD's
   * upcall queue is full and the slow path is behind: with a CPU shared, the
   * time goes to the translations instead of to misses that would be dropped).
   * Returns whether an answer waits.
   */
  waitForAnswer(maxMs: number): boolean {
    const c = this.s.ctrl;
    Atomics.store(c, C_PMD_SLEEP, 1);
    const v = Atomics.load(c, C_ANS_PROD);
    if (v === this.ansCons) Atomics.wait(c, C_ANS_PROD, v, maxMs);
    Atomics.store(c, C_PMD_SLEEP, 0);
    return Atomics.load(c, C_ANS_PROD) !== this.ansCons;
  }

  /** Apply every published answer (megaflows, then held packets); returns how many answers. */
  receive(dp: Datapath, onError: (e: Error) => void): number {
    const s = this.s;
    const c = s.ctrl;
    const n = s.shape.slots;
    let k = 0;
    let q = this.ansCons;
    while (q !== Atomics.load(c, C_ANS_PROD)) {
      const i = q % n;
      const a = s.ans[i];
      a.nInstall = s.ansHdr[i][0];
      a.nReply = s.ansHdr[i][1];
      applyUpcallAnswer(dp, a, onError);
      q = (q + 1) | 0;
      Atomics.store(c, C_ANS_CONS, q);
      k++;
    }
    this.ansCons = q;
    return k;
  }
}

/** The slow path's end: take upcall batches, publish answers. One thread at a time. */
export class UpcallChannelMain {
  private readonly s: Slots;
  private upCons: number;
  private ansProd: number;
  private closed = false;
  private running = false;

  constructor(info: UpcallChannelInfo, pmd: number) {
    this.s = new Slots(info, pmd);
    this.upCons = Atomics.load(this.s.ctrl, C_UP_CONS);
    this.ansProd = Atomics.load(this.s.ctrl, C_ANS_PROD);
  }

  /** Upcall batches waiting. */
  get pending(): number {
    return (Atomics.load(this.s.ctrl, C_UP_PROD) - this.upCons) | 0;
  }

  /**
   * Hand every waiting batch to fn, in order (the batch is valid during the
   * call only: the slot is reused after it returns). Returns how many batches.
   */
  drain(fn: (b: UpcallBatch) => void): number {
    const s = this.s;
    const c = s.ctrl;
    const n = s.shape.slots;
    let k = 0;
    let q = this.upCons;
    while (!this.closed && q !== Atomics.load(c, C_UP_PROD)) {
      const i = q % n;
      const b = s.up[i];
      b.n = s.upHdr[i][0];
      try {
        fn(b);
      } finally {
        q = (q + 1) | 0;
        this.upCons = q;
        Atomics.store(c, C_UP_CONS, q);
      }
      k++;
    }
    return k;
  }

  /**
   * Publish the builder's answer in a free answer slot; false (nothing sent)
   * when the ring is full or the answer is larger than a slot: send it another way.
   */
  answer(out: UpcallAnswerBuilder): boolean {
    const s = this.s;
    const c = s.ctrl;
    const n = s.shape.slots;
    const p = this.ansProd;
    if (((p - Atomics.load(c, C_ANS_CONS)) | 0) >= n) return false;
    const i = p % n;
    if (!out.writeInto(s.ans[i], s.shape.upcalls, s.shape.actWords)) return false;
    s.ansHdr[i][0] = s.ans[i].nInstall;
    s.ansHdr[i][1] = s.ans[i].nReply;
    this.ansProd = (p + 1) | 0;
    Atomics.store(c, C_ANS_PROD, this.ansProd);
    if (Atomics.load(c, C_PMD_SLEEP) === 1) Atomics.notify(c, C_ANS_PROD, 1);
    return true;
  }

  /**
   * Call fn whenever batches wait (fn drains them), sleeping in between
   * (Atomics.waitAsync on the doorbell). Runs until close().
   */
  async run(fn: () => void): Promise<void> {
    if (this.running) return;
    this.running = true;
    const c = this.s.ctrl;
    try {
      while (!this.closed) {
        Atomics.store(c, C_SLEEP, 1);
        const bell = Atomics.load(c, C_BELL);
        if (this.pending === 0) {
          const w = waitAsync(c, C_BELL, bell);
          if (w.async) await w.value;
        }
        Atomics.store(c, C_SLEEP, 0);
        if (this.closed) break;
        fn();
        // let the rest of the event loop (control sockets, timers) in between two drains
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.running = false;
    }
  }

  /** Stop run() (wakes it). */
  close(): void {
    this.closed = true;
    Atomics.notify(this.s.ctrl, C_BELL);
  }
}
