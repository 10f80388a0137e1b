/**
 * Hand-off of a vhost-user device's data-path state from the protocol side
 * (main thread) to whoever runs the rings (same thread or a worker).
 *
 * The protocol side publishes a {@link DataPathDescription}: a plain,
 * postMessage-able object (mapped addresses of the guest memory regions, ring
 * GPAs, sizes, features, start indices, call fds) plus a small control block
 * (Int32Array over a SharedArrayBuffer) shared by all threads:
 *
 *   word GEN    generation currently valid (0 = none). Bumped/zeroed by the
 *               control side to revoke a description.
 *   word USERS  number of data-path leases attached to the current generation.
 *   per queue q, at QBASE + q*QWORDS:
 *     +0 ENABLED  1 if the ring is enabled (SET_VRING_ENABLE), read every burst
 *     +1 AVAIL    last_avail_idx (packed: bit 15 = wrap counter) - written on detach
 *     +2 USED     last_used_idx (packed: bit 15 = wrap counter) - written on detach
 *
 * Protocol: a data path calls {@link DataPathLease.attach} (USERS++, then checks
 * GEN; fails on a stale description), checks {@link DataPathLease.valid} at
 * each burst boundary, and on a change calls {@link DataPathLease.detach}
 * (write back ring indices, USERS--, notify). The control side revokes with
 * {@link ControlBlock.revoke}: GEN := 0, detaches leases of this thread
 * directly, then waits until USERS == 0 before it unmaps or reads indices.
 * Because a lease increments USERS before reading GEN and the control side
 * writes GEN before reading USERS (both sequentially consistent), no lease
 * can use memory the control side believes released.
 *
 * Where it runs: the control side (publish, revoke) on the thread that runs the port's vhost-user
 * protocol (in the daemon, the port's PMD worker); a lease on whichever thread runs the rings (the
 * same worker, or another thread the description is posted to).
 */
import { GuestMemory, type GuestRegion } from '../mem/guest-memory.js';
import { DirtyLog } from '../mem/dirty-log.js';
import * as libc from '../sys/libc.js';
import { holdTurns, releaseTurns } from '../sys/poll.js';

export const CB_GEN = 0;
export const CB_USERS = 1;
export const CB_QBASE = 4;
export const CB_QWORDS = 4;
export const CBQ_ENABLED = 0;
export const CBQ_AVAIL = 1;
export const CBQ_USED = 2;

export interface DataPathRegion {
  gpa: number;
  uaddr: number;
  size: number;
  /** Our (backend process) virtual address of the region, mapped in one piece (viewed in <= 1 GiB windows on first use). */
  addr: number;
}

export interface DataPathQueue {
  /** Virtqueue index. */
  index: number;
  /** Queue size (descriptors). */
  size: number;
  /** Guest physical addresses of the ring areas (packed: avail = driver event, used = device event). */
  desc: number;
  avail: number;
  used: number;
  /** Start indices (packed: bit 15 = wrap counter). */
  lastAvailIdx: number;
  lastUsedIdx: number;
  /** eventfd to signal the driver, or -1 (driver polls). */
  callFd: number;
  /**
   * Live migration: guest address at which writes to the used area are
   * logged (SET_VRING_ADDR log_guest_addr with VHOST_VRING_F_LOG), or -1.
   * Only meaningful while the description has a `log`.
   */
  logUsed: number;
}

/** The dirty log of live migration (SET_LOG_BASE), mapped by the control side. */
export interface DataPathLog {
  /** Our address of the bitmap (the mapping's start plus the frontend's mmap offset). */
  addr: number;
  /** Bytes of bitmap. */
  size: number;
}

/** Everything a data path needs, postMessage-able (no views, no functions). */
export interface DataPathDescription {
  generation: number;
  /** Negotiated virtio features. */
  features: bigint;
  packed: boolean;
  eventIdx: boolean;
  /** virtio-net header length implied by the features (device-specific users may ignore). */
  regions: DataPathRegion[];
  /** Indexed by virtqueue index; null where a ring is not ready. */
  queues: (DataPathQueue | null)[];
  /** Dirty logging on (VHOST_F_LOG_ALL negotiated and a log shared): every guest write is logged there. Else null. */
  log: DataPathLog | null;
  /** The control block (see the module comment). */
  control: SharedArrayBuffer;
}

/** Control-block size for n virtqueues. */
export function controlBlockBytes(nQueues: number): number {
  return 4 * (CB_QBASE + CB_QWORDS * nQueues);
}

// Leases attached in THIS thread, per control block, so the control side can
// detach them synchronously (no burst can be in flight in our own thread).
const localLeases = new Map<SharedArrayBuffer, Set<DataPathLease>>();

/**
 * A data path's hold on one generation: guest memory views re-made from the
 * description's addresses. Create with {@link DataPathLease.attach}.
 */
export class DataPathLease {
  readonly desc: DataPathDescription;
  readonly ctrl: Int32Array;
  readonly generation: number;
  /** Guest memory over the description's windows (views made in this thread). */
  readonly mem: GuestMemory;
  /** The dirty log (view made in this thread) while the description has one, else null. */
  readonly dirtyLog: DirtyLog | null;
  private attached = true;
  private readonly onDetach: (() => void)[] = [];

  private constructor(desc: DataPathDescription, ctrl: Int32Array, mem: GuestMemory, dirtyLog: DirtyLog | null) {
    this.desc = desc;
    this.ctrl = ctrl;
    this.generation = desc.generation;
    this.mem = mem;
    this.dirtyLog = dirtyLog;
  }

  /** Attach to a description; null if it was already revoked. */
  static attach(desc: DataPathDescription): DataPathLease | null {
    const ctrl = new Int32Array(desc.control);
    Atomics.add(ctrl, CB_USERS, 1);
    if (Atomics.load(ctrl, CB_GEN) !== desc.generation || desc.generation === 0) {
      release(ctrl);
      return null;
    }
    let mem: GuestMemory;
    try {
      const regions: GuestRegion[] = desc.regions.map((r) => ({
        gpa: r.gpa,
        size: r.size,
        uaddr: r.uaddr,
        addr: r.addr,
      }));
      mem = new GuestMemory(regions);
    } catch (e) {
      release(ctrl);
      throw e;
    }
    let dirtyLog: DirtyLog | null = null;
    if (desc.log) {
      try {
        dirtyLog = new DirtyLog(new Uint8Array(libc.view(desc.log.addr, desc.log.size)));
      } catch (e) {
        mem.release();
        release(ctrl);
        throw e;
      }
    }
    const lease = new DataPathLease(desc, ctrl, mem, dirtyLog);
    let set = localLeases.get(desc.control);
    if (!set) localLeases.set(desc.control, (set = new Set()));
    set.add(lease);
    return lease;
  }

  get isAttached(): boolean {
    return this.attached;
  }

  /**
   * Still the current generation? Call at each burst boundary. A plain load, not Atomics.load
   * (a builtin call of ~10 ns in Node 20, several per pass): safety does not rest on seeing a
   * revoke at once but on USERS (the control side unmaps nothing until this lease has detached,
   * and attach/revoke keep their sequentially consistent accesses), so a revoke seen a pass later
   * only delays the hand-off by that pass. x86 keeps loads in order and V8 keeps typed-array
   * accesses in program order.
   */
  valid(): boolean {
    return this.attached && this.ctrl[CB_GEN] === this.generation;
  }

  /** Is ring q enabled? A plain load, as in {@link valid}: a change is seen by the next burst. */
  enabled(q: number): boolean {
    return this.ctrl[CB_QBASE + CB_QWORDS * q + CBQ_ENABLED] === 1;
  }

  /** Register a callback run at detach, before indices are written back (e.g. to save ring positions). */
  onDetaching(cb: () => void): void {
    this.onDetach.push(cb);
  }

  /**
   * Where ring q stands in this generation: its start position, or where the
   * last data path that detached from it left off (a data path handed from one
   * thread to another resumes there, nothing is taken twice).
   */
  savedAvail(q: number): number {
    return Atomics.load(this.ctrl, CB_QBASE + CB_QWORDS * q + CBQ_AVAIL);
  }

  /** Record a ring's positions for the control side (call from onDetaching callbacks). */
  saveIndices(q: number, lastAvail: number, lastUsed: number): void {
    Atomics.store(this.ctrl, CB_QBASE + CB_QWORDS * q + CBQ_AVAIL, lastAvail);
    Atomics.store(this.ctrl, CB_QBASE + CB_QWORDS * q + CBQ_USED, lastUsed);
  }

  /** Stop using the memory: run detach callbacks, release views, USERS--. Idempotent. */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    for (const cb of this.onDetach) {
      try {
        cb();
      } catch {
        /* a callback must not keep the lease alive */
      }
    }
    this.onDetach.length = 0;
    // Drop our views before the control side may unmap.
    this.mem.release();
    this.dirtyLog?.release();
    const set = localLeases.get(this.desc.control);
    if (set) {
      set.delete(this);
      if (set.size === 0) localLeases.delete(this.desc.control);
    }
    release(this.ctrl);
  }
}

// Atomics.waitAsync is in Node 20 but not in the ES2022 lib typings.
type WaitAsyncResult = { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, t: number): WaitAsyncResult }).waitAsync;

function release(ctrl: Int32Array): void {
  Atomics.sub(ctrl, CB_USERS, 1);
  Atomics.notify(ctrl, CB_USERS);
}

/** The control side's handle on a control block. */
export class ControlBlock {
  readonly sab: SharedArrayBuffer;
  readonly words: Int32Array;
  readonly nQueues: number;
  private lastGen = 0;

  constructor(nQueues: number) {
    this.nQueues = nQueues;
    this.sab = new SharedArrayBuffer(controlBlockBytes(nQueues));
    this.words = new Int32Array(this.sab);
  }

  get generation(): number {
    return Atomics.load(this.words, CB_GEN);
  }

  get users(): number {
    return Atomics.load(this.words, CB_USERS);
  }

  /** Next generation number (not yet published). */
  nextGeneration(): number {
    this.lastGen = (this.lastGen + 1) & 0x7fffffff || 1;
    return this.lastGen;
  }

  setQueue(q: number, enabled: boolean, lastAvail: number, lastUsed: number): void {
    const b = CB_QBASE + CB_QWORDS * q;
    Atomics.store(this.words, b + CBQ_ENABLED, enabled ? 1 : 0);
    Atomics.store(this.words, b + CBQ_AVAIL, lastAvail);
    Atomics.store(this.words, b + CBQ_USED, lastUsed);
  }

  setEnabled(q: number, enabled: boolean): void {
    Atomics.store(this.words, CB_QBASE + CB_QWORDS * q + CBQ_ENABLED, enabled ? 1 : 0);
  }

  indices(q: number): { lastAvail: number; lastUsed: number } {
    const b = CB_QBASE + CB_QWORDS * q;
    return { lastAvail: Atomics.load(this.words, b + CBQ_AVAIL), lastUsed: Atomics.load(this.words, b + CBQ_USED) };
  }

  /** Make generation gen current (leases for it may attach). */
  publish(gen: number): void {
    Atomics.store(this.words, CB_GEN, gen);
  }

  /**
   * Revoke the current generation and resolve once no lease uses it. Leases
   * of this thread are detached at once; others (workers) detach at their
   * next burst boundary. `onSlow` is called every `slowMs` while waiting.
   */
  async revoke(onSlow?: (waitedMs: number, users: number) => void, slowMs = 1000): Promise<void> {
    Atomics.store(this.words, CB_GEN, 0);
    const local = localLeases.get(this.sab);
    if (local) for (const l of [...local]) l.detach();
    if (Atomics.load(this.words, CB_USERS) <= 0) return;
    // the wait resolves on this thread's event loop: a PMD thread must keep turning it (src/sys/poll.ts)
    holdTurns();
    try {
      const t0 = Date.now();
      let nextSlow = slowMs;
      for (;;) {
        const u = Atomics.load(this.words, CB_USERS);
        if (u <= 0) return;
        const w = waitAsync(this.words, CB_USERS, u, 50);
        if (w.async) await w.value;
        const waited = Date.now() - t0;
        if (waited >= nextSlow) {
          onSlow?.(waited, Atomics.load(this.words, CB_USERS));
          nextSlow += slowMs;
        }
      }
    } finally {
      releaseTurns();
    }
  }
}
