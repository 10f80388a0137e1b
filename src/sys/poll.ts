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

/** A watch on one fd; close it BEFORE closing the fd. */
export class FdWatch {
  private handle: ReturnType<typeof koffi.node.poll> | null;
  constructor(fd: number, opts: { readable?: boolean; writable?: boolean }, cb: (ev: Readiness) => void) {
    this.handle = koffi.node.poll(fd, { readable: opts.readable ?? true, writable: opts.writable ?? false, disconnect: true }, cb);
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
