/**
 * Prometheus metrics of a running switch (`tsvs daemon --metrics ADDR:PORT`),
 * through prom-client. Every scrape takes one view of the switch (counters
 * from the PMD threads' shared-memory boards: no message to a PMD thread) and
 * renders it; the data path does not notice scrapes.
 *
 * Names follow Prometheus conventions (`_total` counters, base units:
 * seconds, bytes) and the vocabulary of OVS exporters where there is one
 * (interface rx/tx packets/bytes/dropped, link state, link resets, datapath
 * flows, PMD EMC/megaflow hits, upcalls).
 */
import * as http from 'node:http';
import { Registry, Counter, Gauge, collectDefaultMetrics } from 'prom-client';
import type { ObservableSwitch, SwitchView } from './view.js';
import { listen } from './listen.js';

export { parseListen, listen } from './listen.js';

type Labels = Record<string, string | number>;
type Rows = [Labels, number][];

interface MetricDef {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labels: string[];
  rows(v: SwitchView): Rows;
}

function portRows(v: SwitchView, f: (s: import('../dp/stats-board.js').BoardPort) => number): Rows {
  const out: Rows = [];
  const bridgeOf = new Map<string, string>();
  for (const b of v.bridges) for (const p of b.ports) bridgeOf.set(p.name, b.name);
  for (const pmd of v.pmds) {
    for (const p of pmd.board.ports) out.push([{ bridge: bridgeOf.get(p.name) ?? '', port: p.name }, f(p)]);
  }
  return out;
}

function pmdRows(v: SwitchView, f: (b: import('../dp/stats-board.js').BoardSnapshot) => number): Rows {
  return v.pmds.map((p) => [{ pmd: p.id }, f(p.board)]);
}

/** The metric table: one entry per exported family. */
export const METRICS: MetricDef[] = [
  { name: 'tsvs_interface_rx_packets_total', help: 'Packets received on the port', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.stats.rxPackets) },
  { name: 'tsvs_interface_tx_packets_total', help: 'Packets sent on the port', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.stats.txPackets) },
  { name: 'tsvs_interface_rx_bytes_total', help: 'Bytes received on the port', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.stats.rxBytes) },
  { name: 'tsvs_interface_tx_bytes_total', help: 'Bytes sent on the port', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.stats.txBytes) },
  { name: 'tsvs_interface_rx_dropped_total', help: 'Packets dropped on receive (no buffer, too big, bad descriptor chain, ...)', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.stats.rxDropped) },
  { name: 'tsvs_interface_tx_dropped_total', help: 'Packets the port refused to send (no room, link down, ...)', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.stats.txDropped) },
  {
    name: 'tsvs_interface_drops_total', help: 'Packets dropped by the port, by reason', type: 'counter', labels: ['bridge', 'port', 'reason'],
    rows: (v) => {
      const out: Rows = [];
      const bridgeOf = new Map<string, string>();
      for (const b of v.bridges) for (const p of b.ports) bridgeOf.set(p.name, b.name);
      for (const pmd of v.pmds) {
        for (const p of pmd.board.ports) for (const [r, n] of Object.entries(p.stats.drops)) out.push([{ bridge: bridgeOf.get(p.name) ?? '', port: p.name, reason: r }, n]);
      }
      return out;
    },
  },
  { name: 'tsvs_interface_link_state', help: 'Link state of the port (1 up, 0 down)', type: 'gauge', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => (p.link === 'up' ? 1 : 0)) },
  { name: 'tsvs_interface_link_resets_total', help: 'Times the link of the port changed state (up or down)', type: 'counter', labels: ['bridge', 'port'], rows: (v) => portRows(v, (p) => p.linkChanges) },
  {
    name: 'tsvs_interface_info', help: 'Port attributes (value 1)', type: 'gauge', labels: ['bridge', 'port', 'type', 'ofport', 'pmd'],
    rows: (v) => v.bridges.flatMap((b) => b.ports.map((p): [Labels, number] => [{ bridge: b.name, port: p.name, type: p.type, ofport: p.ofport, pmd: p.pmd }, 1])),
  },
  {
    name: 'tsvs_vhost_user_connection_state', help: 'vhost-user ports: 1 while the frontend is connected and the device is running', type: 'gauge', labels: ['bridge', 'port'],
    rows: (v) => portRows(v, (p) => (p.link === 'up' ? 1 : 0)).filter((_r, i) => vhostPorts(v)[i]),
  },
  {
    name: 'tsvs_vhost_user_reconnects_total', help: 'vhost-user ports: times the device came up again after its first start', type: 'counter', labels: ['bridge', 'port'],
    rows: (v) => portRows(v, (p) => p.reconnects).filter((_r, i) => vhostPorts(v)[i]),
  },
  { name: 'tsvs_pmd_rx_packets_total', help: 'Packets received by the PMD thread', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.rxPackets) },
  { name: 'tsvs_pmd_tx_packets_total', help: 'Packets sent by the PMD thread', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.txPackets) },
  { name: 'tsvs_pmd_emc_hits_total', help: 'Packets that hit the exact-match cache', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.emcHits) },
  { name: 'tsvs_pmd_megaflow_hits_total', help: 'Packets that hit the megaflow classifier', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.megaflowHits) },
  { name: 'tsvs_pmd_misses_total', help: 'Packets that missed both caches', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.misses) },
  { name: 'tsvs_pmd_upcalls_total', help: 'Upcalls sent to the slow path', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.upcalls) },
  { name: 'tsvs_pmd_upcalls_lost_total', help: 'Misses dropped because the upcall queue was full', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.upcallsLost) },
  { name: 'tsvs_pmd_busy_seconds_total', help: 'Time the PMD thread spent in polling passes that moved packets', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.busyNs / 1e9) },
  { name: 'tsvs_pmd_idle_seconds_total', help: 'Time the PMD thread spent in polling passes that found nothing', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.idleNs / 1e9) },
  { name: 'tsvs_pmd_iterations_total', help: 'Polling passes of the PMD thread', type: 'counter', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pmd.iterations) },
  {
    name: 'tsvs_pmd_processing_seconds_per_packet', help: 'Busy time per received packet since the thread started (rate(busy)/rate(rx) gives the recent figure)', type: 'gauge', labels: ['pmd'],
    rows: (v) => pmdRows(v, (b) => (b.pmd.rxPackets > 0 ? b.pmd.busyNs / 1e9 / b.pmd.rxPackets : 0)),
  },
  {
    name: 'tsvs_pmd_drops_total', help: 'Packets the datapath dropped, by reason', type: 'counter', labels: ['pmd', 'reason'],
    rows: (v) => v.pmds.flatMap((p) => Object.entries(p.board.pmd.drops).map(([r, n]): [Labels, number] => [{ pmd: p.id, reason: r }, n])),
  },
  { name: 'tsvs_datapath_flows', help: 'Datapath (megaflow) entries installed', type: 'gauge', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.flows) },
  { name: 'tsvs_upcall_queue_depth', help: 'Packets held while their upcall is in flight', type: 'gauge', labels: ['pmd'], rows: (v) => pmdRows(v, (b) => b.pendingUpcalls) },
  {
    name: 'tsvs_mempool_buffers', help: 'Packet buffers of the shared pool, by state (free, in_use)', type: 'gauge', labels: ['state'],
    rows: (v) => [[{ state: 'free' }, v.pool.free], [{ state: 'in_use' }, v.pool.count - v.pool.free]],
  },
  { name: 'tsvs_mempool_buffer_size_bytes', help: 'Bytes of one packet buffer (headroom included)', type: 'gauge', labels: [], rows: (v) => [[{}, v.pool.bufSize]] },
  {
    name: 'tsvs_mempool_alloc_failures_total', help: 'Buffer allocations that found the pool empty (PMD threads)', type: 'counter', labels: [],
    rows: (v) => [[{}, v.pmds.reduce((a, p) => a + p.board.poolAllocFail, 0)]],
  },
];

/** For each row of portRows(v): whether the port is vhost-user. */
function vhostPorts(v: SwitchView): boolean[] {
  const typeOf = new Map<string, string>();
  for (const b of v.bridges) for (const p of b.ports) typeOf.set(p.name, p.type);
  const out: boolean[] = [];
  for (const pmd of v.pmds) for (const p of pmd.board.ports) out.push((typeOf.get(p.name) ?? p.type).startsWith('vhost-user'));
  return out;
}

/** A registry whose metrics render `view()` at each scrape, plus the Node process metrics (RSS, CPU, heap). */
export function switchRegistry(sw: Pick<ObservableSwitch, 'view'>): { registry: Registry; render(): Promise<string> } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  let current: SwitchView | null = null;
  for (const m of METRICS) {
    const def = m;
    if (def.type === 'counter') {
      new Counter({
        name: def.name, help: def.help, labelNames: def.labels, registers: [registry],
        collect(this: Counter<string>) {
          this.reset();
          if (current) for (const [l, n] of def.rows(current)) this.inc(l, n > 0 ? n : 0);
        },
      });
    } else {
      new Gauge({
        name: def.name, help: def.help, labelNames: def.labels, registers: [registry],
        collect(this: Gauge<string>) {
          this.reset();
          if (current) for (const [l, n] of def.rows(current)) this.set(l, n);
        },
      });
    }
  }
  return {
    registry,
    async render(): Promise<string> {
      current = sw.view();
      try {
        return await registry.metrics();
      } finally {
        current = null;
      }
    },
  };
}

/** The /metrics endpoint. */
export async function startMetricsServer(sw: Pick<ObservableSwitch, 'view'>, host: string, port: number): Promise<{ server: http.Server; url: string; close(): Promise<void> }> {
  const reg = switchRegistry(sw);
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('tsvs: metrics are at /metrics\n');
      return;
    }
    reg.render().then(
      (text) => res.writeHead(200, { 'content-type': reg.registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`tsvs: ${e.message}\n`),
    );
  });
  const a = await listen(server, host, port);
  return {
    server,
    url: `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/metrics`,
    close: () => new Promise((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
}
