/**
 * Output to a port polled by another PMD thread. The sending PMD sees a
 * CrossPmdTxPort (no rx queues) whose txBurst enqueues buffer handles into a
 * single-producer/single-consumer ring; the owning PMD drains that ring into
 * the real port's txBurst (Datapath.addTxSource). Buffers come from the one
 * shared mempool, so a handle means the same buffer in every thread.
 *
 * Where it runs: CrossPmdTxPort in the sending PMD worker; the ring is drained by the PMD worker
 * that owns the port.
 */
import { Ring } from '../ring/ring.js';
import { newPortStats, type LinkState, type Port, type PortStats } from '../port/port.js';
import { Drop, type DropReason } from '../port/port.js';

export class CrossPmdTxPort implements Port {
  readonly name: string;
  readonly type = 'cross-pmd';
  readonly nQueues = 0;
  readonly stats: PortStats = newPortStats();
  private readonly ring: Ring;
  /** The ring's bytes (the port's owner drains them; a port moving here drains what is left). */
  readonly ringBytes: Uint8Array;

  constructor(name: string, ringBytes: Uint8Array) {
    this.name = name;
    this.ringBytes = ringBytes;
    this.ring = Ring.attach(ringBytes, 0);
  }

  get link(): LinkState {
    return 'up';
  }

  rxBurst(): number {
    return 0;
  }

  txBurst(_q: number, handles: Int32Array, n: number): number {
    const k = this.ring.enqueueBurst(handles, n);
    this.stats.txPackets += k;
    if (k < n) {
      this.stats.txDropped += n - k;
      this.stats.drops[Drop.TX_CROSS_PMD_RING_FULL] = (this.stats.drops[Drop.TX_CROSS_PMD_RING_FULL] ?? 0) + (n - k);
    }
    return k;
  }

  close(): void {
    /* the ring belongs to the owner side */
  }
}

/** A fresh ring to carry handles from one PMD to another (postMessage ring.bytes). */
export function newCrossPmdRing(size = 2048): Ring {
  return Ring.create(size, 'spsc');
}
