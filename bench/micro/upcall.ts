/**
 * Micro-benchmark of flow setup through the exception path, stage by stage, in
 * one thread (no vhost-user, no thread hand-off): the pieces the daemon runs
 * in its PMD thread and its main thread, called as they call them.
 *
 *   pmd: rx + miss      Datapath.pollOnce on a ring port fed with new flows:
 *                       parse, EMC and megaflow misses, hold the packet, queue
 *                       the upcall (UpcallBatcher, flushed every 32 passes as
 *                       the PMD loop does)
 *   main: translate     translateUpcalls (src/daemon/upcall-handler.ts): the
 *                       OpenFlow translation of every miss into one answer
 *   pmd: install        applyUpcallAnswer: megaflow installs, held packets run
 *   main: revalidate    one revalidation pass over all flows right after setup
 *                       (each flow takes its upcall's translation), and one
 *                       steady pass (cached translations): flow dump + check
 *
 * Rules as the `flowsetup` bench scenario (an exact nw_src rule makes every
 * source address its own megaflow); `--flows N` flows offered (default 100000:
 * 65,536 distinct sources). Prints ns per new megaflow for each stage; a
 * stage's time over the flows it set up, so the columns add up.
 * Run: node dist/bench/micro/upcall.js [--flows N] [--reps R]
 */
import { parseArgs } from 'node:util';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath } from '../../src/dp/datapath.js';
import { FLOW_WORDS } from '../../src/dp/flow-key.js';
import { UpcallBatcher, UpcallAnswerBuilder, applyUpcallAnswer } from '../../src/dp/upcall-batch.js';
import { TrafficGen } from '../../src/app/traffic.js';
import { Bridge } from '../../src/daemon/bridge.js';
import { translateUpcalls, type UpcallHandlerHooks } from '../../src/daemon/upcall-handler.js';

export const FLOWSETUP_RULES = ['priority=10,ip,nw_src=203.0.113.9,actions=drop', 'priority=1,in_port=1,actions=output:2', 'priority=1,in_port=2,actions=drop'];

export interface UpcallStages {
  flows: number;
  upcalls: number;
  /** ns per new megaflow, by stage */
  pmdRxMiss: number;
  mainTranslate: number;
  pmdInstall: number;
  revalidateFirst: number;
  revalidateSteady: number;
  total: number;
  /** new megaflows per second if one CPU ran all stages and nothing else */
  setupRatePerCpu: number;
}

export function runUpcallStages(nFlows: number): UpcallStages {
  const pool = Mempool.create({ count: 8192 });
  const a = RingPort.create('a', pool, 1024);
  const b = RingPort.create('b', pool, 1024);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const batcher = new UpcallBatcher(0);
  const dp = new Datapath(pool, { upcall: (id, port, frame, key) => batcher.add(id, port, frame, key) });
  dp.addPort(1, a);
  dp.addPort(2, b);
  const br = new Bridge('br0');
  br.ports.set(1, 'a');
  br.ports.set(2, 'b');
  for (const f of FLOWSETUP_RULES) br.addFlow(f, (n) => ({ a: 1, b: 2 })[n]);
  const hooks: UpcallHandlerHooks = {
    bridgeOf: (p) => (p === 1 || p === 2 ? br : undefined),
    xlateError: () => undefined,
    packetIns: () => undefined,
  };
  const out = new UpcallAnswerBuilder(256);
  const gen = new TrafficGen({ size: 64, flows: nFlows });
  const bufs = new Int32Array(32);
  let tPmd = 0;
  let tMain = 0;
  let tInst = 0;
  let quiet = 0;
  let lastFlows = -1;
  const sink = (): void => {
    const r = peerB.rxBurst(0, bufs, 32);
    if (r > 0) pool.free(bufs, r);
  };
  // until a whole cycle of the generator's flows passes without a new megaflow
  while (quiet < nFlows) {
    for (let k = 0; k < 32; k++) {
      const n = pool.alloc(bufs, 32);
      for (let i = 0; i < n; i++) gen.fill(pool, bufs[i]);
      const s = peerA.txBurst(0, bufs, n);
      if (s < n) pool.free(bufs, n - s, s);
      const t = performance.now();
      dp.pollOnce();
      tPmd += performance.now() - t;
      sink();
    }
    if (batcher.count > 0) {
      const t0 = performance.now();
      const { batch } = batcher.take();
      translateUpcalls(batch, out, Date.now(), hooks);
      const { answer } = out.build();
      const t1 = performance.now();
      applyUpcallAnswer(dp, answer, (e) => { throw e; });
      const t2 = performance.now();
      tMain += t1 - t0;
      tInst += t2 - t1;
      sink();
    }
    if (dp.flowCount === lastFlows) quiet += 32 * 32;
    else quiet = 0;
    lastFlows = dp.flowCount;
  }
  const flows = dp.flowCount;
  const pass = (): number => {
    const t = performance.now();
    const sig = br.xlateSig();
    br.beginPass();
    const fl = dp.dumpFlowsPacked();
    let stale = 0;
    for (let i = 0; i < fl.ids.length; i++) {
      const r = br.revalidate(fl.keys, i * FLOW_WORDS, fl.masks, i * FLOW_WORDS, Date.now(), fl.packets[i], fl.bytes[i], fl.xids[i], fl.ids[i], sig);
      if (r !== null) stale++;
    }
    br.endPass();
    if (stale > flows / 2) throw new Error(`revalidation translated ${stale} of ${flows} flows in full`);
    return performance.now() - t;
  };
  const tFirst = pass();
  const tSteady = pass();
  const per = (ms: number): number => +((ms * 1e6) / flows).toFixed(0);
  const r: UpcallStages = {
    flows,
    upcalls: dp.stats.upcalls,
    pmdRxMiss: per(tPmd),
    mainTranslate: per(tMain),
    pmdInstall: per(tInst),
    revalidateFirst: per(tFirst),
    revalidateSteady: per(tSteady),
    total: 0,
    setupRatePerCpu: 0,
  };
  r.total = r.pmdRxMiss + r.mainTranslate + r.pmdInstall + r.revalidateFirst;
  r.setupRatePerCpu = Math.round(1e9 / r.total);
  a.close();
  b.close();
  return r;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { flows: { type: 'string', default: '100000' }, reps: { type: 'string', default: '3' } } });
  for (let i = 0; i < Number(values.reps); i++) console.log(JSON.stringify(runUpcallStages(Number(values.flows))));
}
