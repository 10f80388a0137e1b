/**
 * Rates between two views of the switch (tsvs top, the web dashboard): per
 * port packets/bits/drops per second, per PMD busy %, ns per packet and
 * cache-hit ratios, per datapath flow packets per second.
 */
import type { SwitchView, DpFlowRow } from './view.js';
import type { BoardPort } from '../dp/stats-board.js';

export interface Sample {
  view: SwitchView;
  flows: DpFlowRow[];
}

export interface PortRate {
  name: string;
  bridge: string;
  link: string;
  pmd: number;
  rxPps: number;
  txPps: number;
  rxBps: number;
  txBps: number;
  dropPps: number;
  drops: Record<string, number>;
  rxTotal: number;
  txTotal: number;
}

export interface PmdRate {
  id: number;
  cpu: number | null;
  busyPct: number;
  nsPerPacket: number;
  rxPps: number;
  emcPct: number;
  megaflowPct: number;
  upcallPps: number;
  flows: number;
  pendingUpcalls: number;
}

export interface FlowRate {
  key: string;
  pmd: number;
  match: string;
  actions: string;
  pps: number;
  bps: number;
  packets: number;
}

export interface Rates {
  dt: number;
  ports: PortRate[];
  pmds: PmdRate[];
  flows: FlowRate[];
  pool: SwitchView['pool'];
  totalFlows: number;
}

/** Rates between two samples (a first sample alone gives zero rates). */
export function computeRates(prev: Sample | null, cur: Sample): Rates {
  const dt = prev ? Math.max(1e-3, (cur.view.timeMs - prev.view.timeMs) / 1000) : 1;
  const topo = new Map<string, { bridge: string; link: string; pmd: number }>();
  for (const b of cur.view.bridges) for (const p of b.ports) topo.set(p.name, { bridge: b.name, link: p.link, pmd: p.pmd });
  const prevPorts = new Map<string, BoardPort>();
  if (prev) for (const pm of prev.view.pmds) for (const p of pm.board.ports) prevPorts.set(p.name, p);
  const ports: PortRate[] = [];
  for (const pm of cur.view.pmds) {
    for (const p of pm.board.ports) {
      const q = prevPorts.get(p.name);
      const d = (a: number, b: number | undefined): number => (b === undefined || a < b ? 0 : (a - b) / dt);
      const drops: Record<string, number> = {};
      for (const [r, n] of Object.entries(p.stats.drops)) {
        const v = d(n, q?.stats.drops[r] ?? (q ? 0 : undefined));
        if (v > 0) drops[r] = v;
      }
      const t = topo.get(p.name);
      ports.push({
        name: p.name, bridge: t?.bridge ?? '', link: t?.link ?? p.link, pmd: pm.id,
        rxPps: d(p.stats.rxPackets, q?.stats.rxPackets), txPps: d(p.stats.txPackets, q?.stats.txPackets),
        rxBps: 8 * d(p.stats.rxBytes, q?.stats.rxBytes), txBps: 8 * d(p.stats.txBytes, q?.stats.txBytes),
        dropPps: d(p.stats.rxDropped + p.stats.txDropped, q ? q.stats.rxDropped + q.stats.txDropped : undefined),
        drops, rxTotal: p.stats.rxPackets, txTotal: p.stats.txPackets,
      });
    }
  }
  const pmds: PmdRate[] = cur.view.pmds.map((pm) => {
    const b = pm.board.pmd;
    const a = prev?.view.pmds.find((x) => x.id === pm.id)?.board.pmd;
    const dd = (k: 'busyNs' | 'idleNs' | 'rxPackets' | 'emcHits' | 'megaflowHits' | 'upcalls'): number => (a ? Math.max(0, b[k] - a[k]) : b[k]);
    const busy = dd('busyNs');
    const idle = dd('idleNs');
    const rx = dd('rxPackets');
    return {
      id: pm.id, cpu: pm.cpu, busyPct: busy + idle > 0 ? (100 * busy) / (busy + idle) : 0, nsPerPacket: rx > 0 ? busy / rx : 0,
      rxPps: a ? rx / dt : 0, emcPct: rx > 0 ? (100 * dd('emcHits')) / rx : 0, megaflowPct: rx > 0 ? (100 * dd('megaflowHits')) / rx : 0,
      upcallPps: a ? dd('upcalls') / dt : 0, flows: pm.board.flows, pendingUpcalls: pm.board.pendingUpcalls,
    };
  });
  const prevFlows = new Map<string, DpFlowRow>();
  if (prev) for (const f of prev.flows) prevFlows.set(`${f.pmd}:${f.id}`, f);
  const flows: FlowRate[] = cur.flows.map((f) => {
    const key = `${f.pmd}:${f.id}`;
    const q = prevFlows.get(key);
    return {
      key, pmd: f.pmd, match: f.match, actions: f.actions, packets: f.packets,
      pps: q && f.packets >= q.packets ? (f.packets - q.packets) / dt : 0, bps: q && f.bytes >= q.bytes ? (8 * (f.bytes - q.bytes)) / dt : 0,
    };
  });
  flows.sort((x, y) => y.pps - x.pps || y.packets - x.packets);
  return { dt, ports, pmds, flows, pool: cur.view.pool, totalFlows: cur.flows.length };
}

