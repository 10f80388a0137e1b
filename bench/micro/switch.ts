/**
 * Micro-benchmark of the switch's data path with real vhost-user ports, in
 * one thread: two VhostUserPorts (backends) in a Datapath with the rules
 * in_port=1 -> 2 and 2 -> 1, each with one of our VirtioUserPorts as the
 * frontend (over a unix socket, shared memfd memory). The frontend of port 1
 * sends bursts of 64-byte frames, the datapath polls, the frontend of port 2
 * takes them back. Only the datapath's pollOnce() is timed: the ns per packet
 * of the switch's own work (vhost-user rx, flow key, caches, actions,
 * vhost-user tx), the same work a PMD thread does in `tsvs daemon`.
 *
 * With --stages, the measured run is repeated under V8's sampling profiler
 * (node:inspector) and the samples inside pollOnce are attributed to the
 * stage of their innermost known function: rx (vhost-user dequeue, buffers),
 * parse (flow key), lookup (hash, EMC, megaflow classifier), actions (action
 * programs, per-port batching), tx (vhost-user enqueue, buffers freed),
 * datapath (the per-packet loop itself) and poll (polling and bookkeeping).
 * Each stage's share times the unprofiled ns/packet gives ns/packet by stage.
 *
 * --one-copy on: one copy guest-to-guest (src/port/one-copy.ts); default off (the pool path).
 * --burst N: frames the sender posts per pass (default 32): smaller bursts show the per-pass cost.
 * --lines N (with --stages): also print, on stderr, the N source lines with the most samples inside
 * pollOnce (self time, V8's position ticks), as ns/packet: where inside a stage the time goes.
 *
 *   node dist/bench/micro/switch.js [--packets N] [--size BYTES] [--flows N] [--burst N] [--stages [--lines N]] [--one-copy on|off]
 */
import { parseArgs } from 'node:util';
import { Session } from 'node:inspector/promises';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { Datapath } from '../../src/dp/datapath.js';
import { FLOW_WORDS, W_IN_PORT } from '../../src/dp/flow-key.js';
import { OP_OUTPUT } from '../../src/dp/actions.js';
import { TrafficGen } from '../../src/app/traffic.js';
import { BURST } from '../../src/port/port.js';

const { values } = parseArgs({
  options: {
    packets: { type: 'string', default: '5000000' }, size: { type: 'string', default: '64' }, flows: { type: 'string', default: '1' },
    stages: { type: 'boolean', default: false },
    lines: { type: 'string', default: '0' },
    burst: { type: 'string', default: String(BURST) },
    'one-copy': { type: 'string', default: 'off' },
  },
});
const total = Number(values.packets);
const size = Number(values.size);
const flows = Number(values.flows);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-micro-switch-'));
const quiet = { log: () => {} };
const swPool = Mempool.create({ count: 8192 });
const p1 = new VhostUserPort({ name: 'vm1', path: path.join(dir, 'vm1'), mempool: swPool, logger: quiet });
const p2 = new VhostUserPort({ name: 'vm2', path: path.join(dir, 'vm2'), mempool: swPool, logger: quiet });
const mask = new Uint32Array(FLOW_WORDS);
mask[W_IN_PORT] = 0xffffffff;
const dp = new Datapath(swPool, {
  upcall: (id, port, _f, key) => {
    const prog = Int32Array.from([OP_OUTPUT, port === 1 ? 2 : 1]);
    dp.installFlow(key, mask, prog);
    dp.upcallReply(id, prog);
  },
}, { oneCopy: values['one-copy'] === 'on' });
dp.addPort(1, p1);
dp.addPort(2, p2);
const f1 = new VirtioUserPort({ name: 'f1', path: path.join(dir, 'vm1') });
const f2 = new VirtioUserPort({ name: 'f2', path: path.join(dir, 'vm2') });
const t0w = Date.now();
while (p1.link !== 'up' || p2.link !== 'up' || f1.link !== 'up' || f2.link !== 'up') {
  if (Date.now() - t0w > 10000) throw new Error('vhost-user ports did not come up');
  await new Promise((r) => setTimeout(r, 10));
}
const gen = new TrafficGen({ size, flows });
const burst = Number(values.burst);
if (!(Number.isInteger(burst) && burst >= 1 && burst <= BURST)) throw new Error(`--burst must be 1..${BURST}`);
const bufs = new Int32Array(BURST);
const fp = f1.pool;
const rp = f2.pool;

function run(packets: number): { ns: number; moved: number; wallMs: number } {
  let moved = 0;
  let received = 0;
  let dpNs = 0;
  const t0 = performance.now();
  while (moved < packets) {
    const k = fp.alloc(bufs, burst);
    for (let i = 0; i < k; i++) gen.fill(fp, bufs[i]);
    const s = f1.txBurst(0, bufs, k);
    if (s < k) fp.free(bufs, k - s, s);
    const t = performance.now();
    moved += dp.pollOnce();
    dpNs += (performance.now() - t) * 1e6;
    const r = f2.rxBurst(0, bufs, BURST);
    received += r;
    rp.free(bufs, r);
  }
  for (let i = 0; i < 100; i++) {
    dp.pollOnce();
    const r = f2.rxBurst(0, bufs, BURST);
    received += r;
    rp.free(bufs, r);
  }
  if (received !== moved) throw new Error(`sent ${moved} through the switch, received ${received}`);
  return { ns: dpNs / moved, moved, wallMs: performance.now() - t0 };
}

run(Math.min(500000, total)); // warm-up (JIT, first touch of the shared memory)
const m = run(total);
const stages = values.stages ? await stageProfile(total, m.ns) : undefined;
console.log(JSON.stringify({
  size, flows, burst, oneCopy: dp.oneCopy, oneCopyPackets: dp.counters[15], packets: m.moved, nsPerPacketSwitch: +m.ns.toFixed(1), mppsSwitchAlone: +(1e3 / m.ns).toFixed(2),
  mppsWholeLoop: +(m.moved / m.wallMs / 1e3).toFixed(3),
  drops: { ...p1.stats.drops, ...p2.stats.drops, ...dp.stats.drops },
  ...(stages ? { stages } : {}),
}));
f1.close();
f2.close();
await Promise.all([p1.closeAsync(), p2.closeAsync()]);
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
  positionTicks?: { line: number; ticks: number }[];
}

/** Stage of a function (by name and file), or undefined for functions that do not define one. */
function stageOf(fn: string, url: string): string | undefined {
  const file = url.slice(url.lastIndexOf('/') + 1);
  if (fn === 'rxBurst' && file === 'vhost-user.js') return 'rx';
  if (fn === 'txBurst' && file === 'vhost-user.js') return 'tx';
  if (fn === 'flushPort' || fn === 'flushAll' || fn === 'endOneCopyBurst') return 'tx';
  if (fn === 'materialize' || fn === 'materializeBurst') return 'datapath';
  if (file === 'flow-key.js') return fn.startsWith('hash') ? 'lookup' : 'parse';
  if (file === 'emc.js' || file === 'classifier.js') return 'lookup';
  if (file === 'actions.js' || fn === 'runActions' || fn === 'enqueueTx' || fn === 'outputCopies') return 'actions';
  if (fn === 'processBurst') return 'datapath';
  if (fn === 'pollOnce') return 'poll';
  return undefined;
}

/** Run `packets` again under the sampling profiler; ns/packet by stage (shares of `nsPerPacket`). */
async function stageProfile(packets: number, nsPerPacket: number): Promise<Record<string, number>> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 50 });
  await session.post('Profiler.start');
  run(packets);
  const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: { nodes: ProfileNode[]; samples: number[] } };
  session.disconnect();
  const parent = new Map<number, number>();
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  // stage of a node: its innermost ancestor-or-self with a stage, if pollOnce is on its stack
  const memo = new Map<number, string | null>();
  const stage = (id: number): string | null => {
    const hit = memo.get(id);
    if (hit !== undefined) return hit;
    let s: string | null = null;
    let inPoll = false;
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const st = stageOf(n.callFrame.functionName, n.callFrame.url);
      if (st !== undefined && s === null) s = st;
      if (n.callFrame.functionName === 'pollOnce') inPoll = true;
    }
    const r = inPoll ? s : null;
    memo.set(id, r);
    return r;
  };
  const count = new Map<string, number>();
  let total = 0;
  for (const id of profile.samples) {
    const s = stage(id);
    if (s === null) continue;
    count.set(s, (count.get(s) ?? 0) + 1);
    total++;
  }
  const nLines = Number(values.lines);
  if (nLines > 0) {
    // self samples by source line, for nodes under pollOnce
    const byLine = new Map<string, number>();
    for (const n of profile.nodes) {
      if (stage(n.id) === null) continue;
      const file = n.callFrame.url.slice(n.callFrame.url.lastIndexOf('/') + 1);
      for (const pt of n.positionTicks ?? []) {
        const k = `${file}:${pt.line} ${n.callFrame.functionName}`;
        byLine.set(k, (byLine.get(k) ?? 0) + pt.ticks);
      }
    }
    const rows = [...byLine].sort((a, b) => b[1] - a[1]).slice(0, nLines);
    for (const [k, c] of rows) process.stderr.write(`${((c / Math.max(1, total)) * nsPerPacket).toFixed(1).padStart(6)} ns  ${k}\n`);
  }
  const out: Record<string, number> = {};
  for (const k of ['rx', 'parse', 'lookup', 'actions', 'tx', 'datapath', 'poll']) out[k] = +(((count.get(k) ?? 0) / Math.max(1, total)) * nsPerPacket).toFixed(1);
  return out;
}
