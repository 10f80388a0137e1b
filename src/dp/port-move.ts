/**
 * Moving a vhost-user port's polling from one PMD thread's datapath to
 * another's (rx-queue rebalancing), with no frame lost or reordered. Each
 * thread has one PortMover over its Datapath; the switch calls release() on
 * the old thread, then adopt() on the new one with what release() returned.
 *
 * release (old thread): send what is batched for the port; detach from its
 *   rings (their positions are saved in the device's shared control block);
 *   from now on reach the port through `ring` (a CrossPmdTxPort), and hand over
 *   the cross-thread rings other threads fill for the port, untouched. An
 *   owner port keeps its backend (socket, protocol) here, "parked", and passes
 *   the backend's later data-path descriptions to `forward`.
 * drain (every other thread, between the two): send what is in the rings
 *   other threads filled, so what the old poller forwarded goes out before
 *   what the new one will forward.
 * adopt (new thread): drain its own rings likewise; send first, in order, what
 *   this thread had queued for the port while another polled it (its
 *   CrossPmdTxPort's ring); then poll the
 *   port: the parked owner if it is coming home, else a data-path-only port
 *   attached at the saved positions; drain the handed rings from now on.
 * Counters move with the polling (carryStats).
 */
import type { Mempool } from '../mem/mempool.js';
import { VhostUserPort } from '../port/vhost-user.js';
import type { PortStats } from '../port/port.js';
import type { DataPathDescription } from '../vhost/ring-lease.js';
import type { Datapath } from './datapath.js';
import { CrossPmdTxPort } from './cross-pmd-port.js';

/** What a thread gives up when a port moves away (postMessage-able). */
export interface PortRelease {
  desc: DataPathDescription | null;
  stats: PortStats;
  nQueues: number;
  /** Cross-thread rings into the port (and the id of the thread filling each); the new poller drains them on. */
  sources: { from: number; ring: Uint8Array }[];
}

export class PortMover {
  /** Ports whose backend lives here while another thread polls their rings. */
  private readonly parked = new Map<number, VhostUserPort>();

  constructor(
    private readonly dp: Datapath,
    private readonly pool: Mempool,
    /** This thread's id (rings it fills itself are not drained as sources). */
    private readonly self: number,
  ) {}

  /** Can this port move (a vhost-user port polled here)? */
  movable(portNo: number): boolean {
    return this.dp.port(portNo) instanceof VhostUserPort;
  }

  release(portNo: number, ring: Uint8Array, forward: (desc: DataPathDescription | null) => void): PortRelease {
    const dp = this.dp;
    const p = dp.port(portNo);
    if (!(p instanceof VhostUserPort)) throw new Error(`port ${portNo} cannot move (only vhost-user ports move between PMD threads)`);
    dp.removePort(portNo); // sends what is batched for it first
    const sources = dp.takeTxSources(portNo);
    let rel: { desc: DataPathDescription | null; stats: PortStats };
    if (p.backend !== null) {
      this.parked.set(portNo, p);
      rel = p.handOff(forward);
    } else {
      rel = p.handOff(null);
      p.close();
    }
    dp.addPort(portNo, new CrossPmdTxPort(p.name, ring));
    return { ...rel, nQueues: p.nQueues, sources };
  }

  adopt(portNo: number, name: string, rel: PortRelease): void {
    const dp = this.dp;
    const old = dp.port(portNo);
    if (old !== null && !(old instanceof CrossPmdTxPort)) throw new Error(`port ${portNo} is already polled here`);
    if (old !== null) dp.removePort(portNo);
    // frames the releasing thread forwarded (through rings) before it let go go out first
    dp.drainTxSources();
    const owner = this.parked.get(portNo);
    let p: VhostUserPort;
    if (owner !== undefined) {
      this.parked.delete(portNo);
      p = owner;
      p.carryStats(rel.stats);
      p.takeBack();
    } else {
      p = VhostUserPort.ringsOnly({ name, mempool: this.pool, queues: rel.nQueues });
      p.carryStats(rel.stats);
      p.setDataPath(rel.desc);
    }
    dp.addPort(portNo, p);
    if (old instanceof CrossPmdTxPort) dp.drainToPort(portNo, old.ringBytes);
    for (const s of rel.sources) if (s.from !== this.self) dp.addTxSource(portNo, s.ring, s.from);
  }

  /** A later description from the port's backend, for a port polled here without its backend. */
  setDataPath(portNo: number, desc: DataPathDescription | null): void {
    const p = this.dp.port(portNo);
    if (p instanceof VhostUserPort && p.backend === null) p.setDataPath(desc);
  }

  /** Close a parked backend (port deleted); true if there was one. */
  closeParked(portNo: number): boolean {
    const p = this.parked.get(portNo);
    if (p === undefined) return false;
    this.parked.delete(portNo);
    p.close();
    return true;
  }

  closeAll(): void {
    for (const p of this.parked.values()) p.close();
    this.parked.clear();
  }
}
