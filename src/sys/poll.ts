/**
 * Readiness of fds on Node's event loop (libuv poll through koffi): the
 * control path waits for sockets and eventfds without a busy loop.
 */
import { koffi, pollFds, POLLIN, POLLOUT, POLLRDHUP } from './libc.js';

export interface Readiness {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
}

// koffi.node.poll() defines the PollHandle class anew on every call (koffi 2.16: PollHandle::Define
// per call), and V8 keeps every function template for the life of the isolate: a few KB of heap that
// never come back per watch, i.e. per vhost-user connection (issue 18, defect 5). The class koffi
// exports, defined once at load, does the same without the leak.
const PollHandleCtor = koffi.node.PollHandle as unknown as new (fd: number) => InstanceType<typeof koffi.node.PollHandle>;

// The active watches of this thread (module state is per isolate: each worker has its own), so that
// a thread that keeps its event loop waiting (a PMD thread's poll loop, src/dp/pmd-thread.ts) can ask
// whether any of them has something for its callbacks without running the loop: watchesReady().
const active = new Set<FdWatch>();
let pollSet = new Uint8Array(0);
let pollCount = 0;
let pollDirty = false;

/** A watch on one fd; close it BEFORE closing the fd. */
export class FdWatch {
  private handle: InstanceType<typeof koffi.node.PollHandle> | null;
  /** poll(2) events this watch waits for (the peer's hang-up always counts). */
  readonly events: number;
  constructor(
    readonly fd: number,
    opts: { readable?: boolean; writable?: boolean },
    cb: (ev: Readiness) => void,
  ) {
    const h = new PollHandleCtor(fd);
    const readable = opts.readable ?? true;
    const writable = opts.writable ?? false;
    try {
      h.start({ readable, writable, disconnect: true }, cb);
    } catch (e) {
      h.close();
      throw e;
    }
    this.handle = h;
    this.events = (readable ? POLLIN : 0) | (writable ? POLLOUT : 0) | POLLRDHUP;
    active.add(this);
    pollDirty = true;
  }
  /** Let the process exit even while this watch is active. */
  unref(): this {
    this.handle?.unref();
    return this;
  }
  close(): void {
    if (this.handle) {
      this.handle.stop();
      this.handle.close();
      this.handle = null;
      active.delete(this);
      pollDirty = true;
    }
  }
}

// Waits of this thread that resolve through the event loop without an fd to watch (an
// Atomics.waitAsync, as a vhost-user revoke waiting for another thread): while any is held, a thread
// that runs its event loop only now and then must run it after every slice.
let heldTurns = 0;

/** A wait that resolves on the event loop starts (pair with {@link releaseTurns}). */
export function holdTurns(): void {
  heldTurns++;
}

/** The wait started by {@link holdTurns} ended. */
export function releaseTurns(): void {
  if (heldTurns > 0) heldTurns--;
}

/** Whether a wait that resolves on the event loop is pending on this thread. */
export function turnsHeld(): boolean {
  return heldTurns > 0;
}

/** How many watches are active on this thread. */
export function activeWatches(): number {
  return active.size;
}

/**
 * Whether any active watch of this thread has an event waiting for its callback (one poll(2)
 * over their fds, not waiting; about a microsecond). For a thread that runs its event loop only
 * now and then: true means it should let the loop run. A failed poll(2) counts as ready.
 */
export function watchesReady(): boolean {
  if (active.size === 0) return false;
  if (pollDirty) {
    pollDirty = false;
    if (pollSet.length < active.size * 8) pollSet = new Uint8Array(active.size * 16);
    const dv = new DataView(pollSet.buffer);
    pollCount = 0;
    for (const w of active) {
      dv.setInt32(pollCount * 8, w.fd, true);
      dv.setInt16(pollCount * 8 + 4, w.events, true);
      dv.setInt16(pollCount * 8 + 6, 0, true);
      pollCount++;
    }
  }
  return pollFds(pollSet, pollCount, 0) !== 0;
}

/** Watch fd for readability; cb runs on the event loop. */
export function watchReadable(fd: number, cb: (ev: Readiness) => void): FdWatch {
  return new FdWatch(fd, { readable: true }, cb);
}
