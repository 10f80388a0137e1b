/**
 * PMD rx-queue load balancing, as OVS's pmd-auto-lb and pmd-rxq-rebalance:
 * the load of every rx queue is its busy time measured in the PMD threads
 * (Datapath.chargePass), sampled here every `intervalMs`; a dry run assigns
 * queues to threads by load ("group": the heaviest first, each to the least
 * loaded thread) and the switch moves what changed.
 *
 * The unit that moves is a port (all its rx queues together, because one data
 * path serves a vhost-user device's rings), and only vhost-user ports move:
 * the other port types (tap, afpacket, virtio-user, virtio-pci) own file
 * descriptors or devices opened in their thread and stay there; their load
 * counts where they are.
 *
 * Pure logic: no threads, no timers (the switch drives it).
 */

/** One rx queue as a sample shows it. */
export interface RxqSample {
  port: number;
  name: string;
  queue: number;
  pmd: number;
  busyNs: number;
  rxPackets: number;
  movable: boolean;
}

/** The PMD threads' counters at one moment. */
export interface LoadSample {
  t: number;
  /** pmd id -> total (busy + idle) and busy time, ns. */
  pmds: Map<number, { totalNs: number; busyNs: number }>;
  rxqs: RxqSample[];
}

/** One rx queue's load over the window: its share of its PMD thread's time (0..1). */
export interface RxqLoad {
  port: number;
  name: string;
  queue: number;
  pmd: number;
  load: number;
  /** Packets received on the queue by its current thread. */
  rxPackets: number;
  movable: boolean;
}

const key = (port: number, queue: number): number => port * 65536 + queue;

/**
 * Loads over the window between `old` and `now` (the newest sample). A queue
 * that moved (or appeared) within the window is measured from where it
 * arrived: its busy time since then over its thread's time since then.
 * `pmdBusy`: each thread's busy share over the window.
 */
export function loadsBetween(old: LoadSample | undefined, now: LoadSample): { rxqs: RxqLoad[]; pmdBusy: Map<number, number> } {
  const before = new Map<number, RxqSample>();
  if (old) for (const r of old.rxqs) before.set(key(r.port, r.queue), r);
  const pmdBusy = new Map<number, number>();
  for (const [id, p] of now.pmds) {
    const o = old?.pmds.get(id);
    const dt = p.totalNs - (o?.totalNs ?? 0);
    pmdBusy.set(id, dt > 0 ? (p.busyNs - (o?.busyNs ?? 0)) / dt : 0);
  }
  const rxqs: RxqLoad[] = now.rxqs.map((r) => {
    const p = now.pmds.get(r.pmd);
    const b = before.get(key(r.port, r.queue));
    const same = b !== undefined && b.pmd === r.pmd && b.busyNs <= r.busyNs;
    const o = same ? old?.pmds.get(r.pmd) : undefined;
    // without an earlier sample on this thread: since the queue came to it (its busy time over the thread's whole time)
    const dt = p ? p.totalNs - (o?.totalNs ?? 0) : 0;
    const busy = r.busyNs - (same ? b.busyNs : 0);
    return { port: r.port, name: r.name, queue: r.queue, pmd: r.pmd, load: dt > 0 ? Math.min(1, Math.max(0, busy / dt)) : 0, rxPackets: r.rxPackets, movable: r.movable };
  });
  return { rxqs, pmdBusy };
}

/** The load of each PMD thread (sum of its queues' loads) under an assignment port -> pmd. */
export function pmdLoads(rxqs: RxqLoad[], pmds: number[], place: (r: RxqLoad) => number): Map<number, number> {
  const m = new Map<number, number>(pmds.map((id) => [id, 0]));
  for (const r of rxqs) {
    const id = place(r);
    m.set(id, (m.get(id) ?? 0) + r.load);
  }
  return m;
}

/** Variance of the threads' loads (in percent squared, as OVS computes it). */
export function variance(loads: Map<number, number>): number {
  const v = [...loads.values()].map((x) => x * 100);
  if (v.length === 0) return 0;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  return v.reduce((a, b) => a + (b - mean) * (b - mean), 0) / v.length;
}

export interface Plan {
  /** port number -> PMD thread id, for every movable port. */
  placement: Map<number, number>;
  /** Ports whose thread changes. */
  moves: { port: number; name: string; from: number; to: number }[];
  /** Thread loads now and after the plan (0..1 each). */
  before: Map<number, number>;
  after: Map<number, number>;
  /** Variance improvement of the plan over now, percent (OVS's pmd-auto-lb-improvement-threshold compares with it). */
  improvement: number;
}

/**
 * Dry run: ports (the sum of their queues' loads) sorted by load, heaviest
 * first, each to the PMD thread with the least load so far; ports that cannot
 * move count where they are. Ties keep a port where it is, then the lower id.
 */
export function planRebalance(rxqs: RxqLoad[], pmds: number[]): Plan {
  const ports = new Map<number, { name: string; load: number; pmd: number; movable: boolean }>();
  for (const r of rxqs) {
    const p = ports.get(r.port);
    if (p) {
      p.load += r.load;
      p.movable &&= r.movable;
    } else ports.set(r.port, { name: r.name, load: r.load, pmd: r.pmd, movable: r.movable });
  }
  const load = new Map<number, number>(pmds.map((id) => [id, 0]));
  for (const p of ports.values()) if (!p.movable) load.set(p.pmd, (load.get(p.pmd) ?? 0) + p.load);
  const movable = [...ports.entries()].filter(([, p]) => p.movable).sort((a, b) => b[1].load - a[1].load || a[0] - b[0]);
  const placement = new Map<number, number>();
  const moves: Plan['moves'] = [];
  for (const [no, p] of movable) {
    let best = -1;
    let bestLoad = Infinity;
    for (const id of pmds) {
      const l = load.get(id)!;
      // a port stays where it is unless another thread is strictly less loaded
      if (l < bestLoad - 1e-9 || (Math.abs(l - bestLoad) <= 1e-9 && id === p.pmd)) {
        best = id;
        bestLoad = l;
      }
    }
    if (best < 0) best = p.pmd;
    load.set(best, bestLoad + p.load);
    placement.set(no, best);
    if (best !== p.pmd) moves.push({ port: no, name: p.name, from: p.pmd, to: best });
  }
  const before = pmdLoads(rxqs, pmds, (r) => r.pmd);
  const after = pmdLoads(rxqs, pmds, (r) => placement.get(r.port) ?? r.pmd);
  const vb = variance(before);
  const va = variance(after);
  const improvement = vb > 0 ? ((vb - va) * 100) / vb : 0;
  return { placement, moves, before, after, improvement };
}

/** pmd-auto-lb settings (OVS other_config names and defaults, the interval in minutes as OVS's). */
export interface AutoLbConfig {
  enabled: boolean;
  /** A rebalance is considered when a PMD thread's busy share reaches this, percent (default 95). */
  loadThreshold: number;
  /** ... and done when the dry run improves the load variance by at least this, percent (default 25). */
  improvementThreshold: number;
  /** Minimum time between two automatic rebalances, minutes (default 1; fractions allowed here). */
  rebalIntervalMin: number;
}

export const AUTO_LB_DEFAULTS: AutoLbConfig = { enabled: false, loadThreshold: 95, improvementThreshold: 25, rebalIntervalMin: 1 };

/**
 * Should the automatic mode rebalance now? Every sample of the window shows a
 * thread at or above the load threshold (OVS: overloaded for all its
 * intervals), and the dry run improves the variance enough.
 */
export function autoLbDecision(cfg: AutoLbConfig, windowBusy: Map<number, number>[], plan: Plan): { go: boolean; why: string } {
  if (!cfg.enabled) return { go: false, why: 'pmd-auto-lb is off' };
  if (windowBusy.length === 0) return { go: false, why: 'no load samples yet' };
  const over = windowBusy.every((m) => [...m.values()].some((b) => b * 100 >= cfg.loadThreshold));
  if (!over) return { go: false, why: `no PMD thread at ${cfg.loadThreshold}% load over the whole window` };
  if (plan.moves.length === 0) return { go: false, why: 'the dry run moves nothing' };
  if (plan.improvement < cfg.improvementThreshold) return { go: false, why: `variance improvement ${plan.improvement.toFixed(0)}% < ${cfg.improvementThreshold}%` };
  return { go: true, why: `variance improvement ${plan.improvement.toFixed(0)}%` };
}
