/**
 * Readiness of fds on Node's event loop (libuv poll through koffi): the
 * control path waits for sockets and eventfds without a busy loop.
 */
import { koffi } from './libc.js';

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

/** A watch on one fd; close it BEFORE closing the fd. */
export class FdWatch {
  private handle: InstanceType<typeof koffi.node.PollHandle> | null;
  constructor(fd: number, opts: { readable?: boolean; writable?: boolean }, cb: (ev: Readiness) => void) {
    const h = new PollHandleCtor(fd);
    try {
      h.start({ readable: opts.readable ?? true, writable: opts.writable ?? false, disconnect: true }, cb);
    } catch (e) {
      h.close();
      throw e;
    }
    this.handle = h;
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
    }
  }
}

/** Watch fd for readability; cb runs on the event loop. */
export function watchReadable(fd: number, cb: (ev: Readiness) => void): FdWatch {
  return new FdWatch(fd, { readable: true }, cb);
}
