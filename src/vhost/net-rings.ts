/**
 * The data-path object of a vhost-user net device, built from a published
 * {@link DataPathDescription} in any thread: device queues over the guest
 * rings (split or packed, from src/virtio), the call fds, and the lease that
 * lets the control side stop it at a burst boundary.
 *
 * Ring 2q is the guest's RX queue of pair q (we enqueue), ring 2q+1 its TX
 * queue (we dequeue). Kicks are suppressed (we poll); calls are sent only
 * when the device queue says the driver asked for one.
 *
 * Where it runs: on the thread that polls the port's rings (in the daemon, the port's PMD worker).
 */
import * as libc from '../sys/libc.js';
import { createDeviceQueue, type DeviceQueue } from '../virtio/index.js';
import { DataPathLease, type DataPathDescription } from './ring-lease.js';

export class NetDataPath {
  readonly lease: DataPathLease;
  /** Indexed by ring; null where the ring is not part of this generation. */
  readonly rings: (DeviceQueue | null)[];
  readonly callFds: Int32Array;
  /** Call eventfd writes that failed (counter full / fd gone). */
  callErrors = 0;

  private constructor(lease: DataPathLease, rings: (DeviceQueue | null)[], callFds: Int32Array) {
    this.lease = lease;
    this.rings = rings;
    this.callFds = callFds;
  }

  /**
   * Attach to a description. Returns null if it is already revoked. Throws
   * (VirtqueueError, GuestMemoryError) if a ring cannot be mapped; the lease
   * is released in that case.
   */
  static attach(desc: DataPathDescription): NetDataPath | null {
    const lease = DataPathLease.attach(desc);
    if (!lease) return null;
    try {
      const rings: (DeviceQueue | null)[] = desc.queues.map((q, i) =>
        q
          ? createDeviceQueue(lease.mem, {
              size: q.size,
              descAddr: q.desc,
              availAddr: q.avail,
              usedAddr: q.used,
              features: desc.features,
              // the generation's start, or where a data path that detached before us left off
              lastAvailIdx: lease.savedAvail(i),
            })
          : null,
      );
      const callFds = Int32Array.from(desc.queues.map((q) => (q ? q.callFd : -1)));
      // live migration: every guest write of this generation is logged (set before the first write)
      const dl = lease.dirtyLog;
      if (dl !== null) rings.forEach((r, i) => r?.setDirtyLog(dl, desc.queues[i]?.logUsed ?? -1));
      for (const r of rings) r?.setNotification(false); // we poll: ask the driver not to kick
      const dp = new NetDataPath(lease, rings, callFds);
      lease.onDetaching(() => {
        rings.forEach((r, i) => {
          if (r) lease.saveIndices(i, r.lastAvailIdx, (r as unknown as { lastUsedIdx: number }).lastUsedIdx ?? r.lastAvailIdx);
        });
      });
      return dp;
    } catch (e) {
      lease.detach();
      throw e;
    }
  }

  /** Current generation still valid (call at each burst boundary)? */
  valid(): boolean {
    return this.lease.valid();
  }

  enabled(ring: number): boolean {
    return this.lease.enabled(ring);
  }

  /** After a burst on ring i: signal the driver if it asked for it. */
  notify(i: number): void {
    const r = this.rings[i];
    if (r === null || !r.needsInterrupt()) return;
    const fd = this.callFds[i];
    if (fd < 0) return;
    try {
      if (!libc.eventfdWrite(fd, 1)) this.callErrors++;
    } catch {
      this.callErrors++;
    }
  }

  /** Stop using guest memory (saves ring positions for the control side). */
  detach(): void {
    this.lease.detach();
  }
}
