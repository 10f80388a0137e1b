/**
 * Micro-benchmark of the datapath alone (no vhost-user): two ring ports in
 * one thread, one megaflow in_port=1 -> output:2, 64-byte frames. Reports ns
 * per packet for the datapath's own work (parse, caches, actions, batching):
 * the mean over the run and the median over segments of 64k packets (less
 * sensitive to other processes on a shared machine).
 * Run: node dist/bench/micro/datapath.js [--flows N] [--packets N]
 */
import { parseArgs } from 'node:util';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath } from '../../src/dp/datapath.js';
import { FLOW_WORDS, W_IN_PORT } from '../../src/dp/flow-key.js';
import { OP_OUTPUT } from '../../src/dp/actions.js';
import { TrafficGen } from '../../src/app/traffic.js';

const { values } = parseArgs({ options: { flows: { type: 'string', default: '1' }, packets: { type: 'string', default: '5000000' } } });
const flows = Number(values.flows);
const total = Number(values.packets);
const pool = Mempool.create({ count: 4096 });
const a = RingPort.create('a', pool, 1024);
const b = RingPort.create('b', pool, 1024);
const peerA = RingPort.attach(a.attachInfo(), pool);
const peerB = RingPort.attach(b.attachInfo(), pool);
const prog = Int32Array.from([OP_OUTPUT, 2]);
const mask = new Uint32Array(FLOW_WORDS);
mask[W_IN_PORT] = 0xffffffff;
mask[4] = 0xffff0000;
const dp = new Datapath(pool, {
  upcall: (id, _port, _f, key) => {
    dp.installFlow(key, mask, prog);
    dp.upcallReply(id, prog);
  },
});
dp.addPort(1, a);
dp.addPort(2, b);
const gen = new TrafficGen({ size: 64, flows });
const bufs = new Int32Array(32);
let moved = 0;
let dpNs = 0;
// per-segment ns/packet too: the median is robust against the other processes on a shared machine
const SEG = 64 * 1024;
const segs: number[] = [];
let segNs = 0;
let segPkts = 0;
const t0 = performance.now();
while (moved < total) {
  const k = pool.alloc(bufs, 32);
  for (let i = 0; i < k; i++) gen.fill(pool, bufs[i]);
  const s = peerA.txBurst(0, bufs, k);
  if (s < k) pool.free(bufs, k - s, s);
  const t = performance.now();
  const got = dp.pollOnce();
  const ns = (performance.now() - t) * 1e6;
  moved += got;
  dpNs += ns;
  segNs += ns;
  segPkts += got;
  if (segPkts >= SEG) {
    segs.push(segNs / segPkts);
    segNs = 0;
    segPkts = 0;
  }
  const r = peerB.rxBurst(0, bufs, 32);
  pool.free(bufs, r);
}
const wall = performance.now() - t0;
segs.sort((x, y) => x - y);
const median = segs.length > 0 ? segs[segs.length >> 1] : dpNs / moved;
console.log(JSON.stringify({ flows, packets: moved, nsPerPacketDatapath: +(dpNs / moved).toFixed(1), nsPerPacketMedian: +median.toFixed(1), mppsWholeLoop: +(moved / wall / 1e3).toFixed(3), stats: { emc: dp.stats.emcHits, megaflow: dp.stats.megaflowHits, upcalls: dp.stats.upcalls } }));
