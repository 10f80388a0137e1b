/**
 * What observing costs, measured piece by piece (no peers, one process):
 *  - the PMD thread's board publication (every 10 ms from its loop): ns per
 *    publish with N ports, and the share of a PMD thread's time that makes;
 *  - one Prometheus scrape of a switch with those ports (board read + render
 *    through prom-client): ms of main-thread time, once a second.
 * Run: node dist/bench/micro/observe.js [--ports 4]
 */
import { parseArgs } from 'node:util';
import { StatsBoardWriter, StatsBoardReader, newBoardBuffer, type BoardPortSource } from '../../src/dp/stats-board.js';
import { newPortStats } from '../../src/port/port.js';
import { switchRegistry } from '../../src/metrics/prometheus.js';
import type { SwitchView } from '../../src/metrics/view.js';
import type { PmdStats } from '../../src/dp/datapath.js';

const { values } = parseArgs({ options: { ports: { type: 'string', default: '4' } } });
const nPorts = Number(values.ports);
const buf = newBoardBuffer();
const w = new StatsBoardWriter(buf);
const r = new StatsBoardReader(buf);
const pmd: PmdStats = {
  iterations: 1, busyIterations: 1, rxPackets: 1, emcHits: 1, megaflowHits: 1, misses: 1, upcalls: 1, upcallsCoalesced: 0,
  upcallsLost: 0, txPackets: 1, busyNs: 1, idleNs: 1, rxNs: 0, processNs: 0, txNs: 0, oneCopy: 0, drops: { 'no-rule': 1, 'tx-queue-full': 2 },
};
const ports: [number, BoardPortSource][] = [];
for (let i = 0; i < nPorts; i++) {
  const s = newPortStats();
  s.drops['tx-no-room'] = 1;
  s.drops['rx-too-big'] = 1;
  ports.push([i + 1, { name: `vm${i + 1}`, type: 'vhost-user', link: 'up', nQueues: 1, stats: s }]);
}
const extra = { flows: 10, pending: 0, poolAvailable: 100, poolCount: 200, poolAllocFail: 0, nowMs: 0 };
const rxq = (): number => 5;

function timeIt(n: number, fn: (i: number) => void): number {
  for (let i = 0; i < Math.min(n, 1000); i++) fn(i);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn(i);
  return ((performance.now() - t0) * 1e6) / n;
}

const publishNs = timeIt(200_000, (i) => {
  pmd.rxPackets = i;
  ports[0][1].stats.rxPackets = i;
  extra.nowMs = i;
  w.publish(pmd, extra, ports, rxq);
});
const readNs = timeIt(50_000, () => r.read());
const view = (): SwitchView => ({
  timeMs: Date.now(),
  pmds: [{ id: 0, cpu: 1, board: r.read() }],
  bridges: [{ name: 'br0', ports: ports.map(([no, p]) => ({ bridge: 'br0', name: p.name, ofport: no, type: p.type, link: 'up', status: '', error: '', pmd: 0 })) }],
  pool: { count: 16384, free: 16000, bufSize: 2176 },
});
const reg = switchRegistry({ view });
let bytes = 0;
for (let i = 0; i < 50; i++) bytes = (await reg.render()).length;
const t0 = performance.now();
const N = 500;
for (let i = 0; i < N; i++) await reg.render();
const scrapeMs = (performance.now() - t0) / N;
const out = {
  ports: nPorts,
  publishNs: Math.round(publishNs),
  publishShareOfPmdAt100Hz: (publishNs * 100) / 1e9,
  boardReadNs: Math.round(readNs),
  scrapeMs: Number(scrapeMs.toFixed(3)),
  scrapeBytes: bytes,
  scrapeShareOfOneCpuAt1Hz: scrapeMs / 1000,
};
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
