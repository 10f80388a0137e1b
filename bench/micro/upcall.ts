/**
 * Micro-benchmark of flow setup through the exception path, stage by stage, in
 * one thread (no vhost-user, no thread hand-off): the pieces the daemon runs
 * in its PMD thread and its main thread, called as they call them.
 *
 *   pmd: rx + miss      Datapath.pollOnce on a ring port fed with new flows:
 *                       parse, EMC and megaflow misses, hold the packet, queue
 *                       the upcall (UpcallBatcher, into the upcall channel every
 *                       32 passes as the PMD loop does)
 *   main: translate     translateUpcalls (src/daemon/upcall-handler.ts) read in
 *                       place in the channel: the OpenFlow translation of every
 *                       miss into one answer per slot, published in the channel
 *   pmd: install        UpcallChannelPmd.receive: megaflow installs, held packets run
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
import { UpcallBatcher, UpcallAnswerBuilder } from '../../src/dp/upcall-batch.js';
import { UpcallChannelMain, UpcallChannelPmd, newUpcallChannel } from '../../src/dp/upcall-channel.js';
import { TrafficGen } from '../../src/app/traffic.js';
import { Bridge } from '../../src/daemon/bridge.js';
import { translateUpcalls, type UpcallHandlerHooks } from '../../src/daemon/upcall-handler.js';

export const FLOWSETUP_RULES = ['priority=10,ip,nw_src=203.0.113.9,actions=drop', 'priority=1,in_port=1,actions=output:2', 'priority=1,in_port=2,actions=drop'];

/**
 * The exception path in one thread, as the daemon runs it in two: a datapath
 * with two ring ports (1 'a' fed by a generator of nFlows flows, 2 'b' drained),
 * one bridge with FLOWSETUP_RULES, and an upcall channel between the two sides
 * (the PMD's end and the main thread's end on the same shared memory).
 * Also used by test/daemon/ukeys.test.ts.
 */
export function upcallRig(nFlows: number, poolCount = 8192) {
  const pool = Mempool.create({ count: poolCount });
  const a = RingPort.create('a', pool, 1024);
  const b = RingPort.create('b', pool, 1024);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const batcher = new UpcallBatcher(0);
  const dp = new Datapath(pool, {
    upcall: (id, port, frame, key) => batcher.add(id, port, frame, key),
    upcallAt: (id, port, data, off, len, key) => batcher.addAt(id, port, data, off, len, key),
  });
  dp.addPort(1, a);
  dp.addPort(2, b);
  const br = new Bridge('br0');
  br.ports.set(1, 'a');
  br.ports.set(2, 'b');
  const resolve = (n: string): number | undefined => ({ a: 1, b: 2 })[n];
  for (const f of FLOWSETUP_RULES) br.addFlow(f, resolve);
  const hooks: UpcallHandlerHooks = {
    bridgeOf: (p) => (p === 1 || p === 2 ? br : undefined),
    xlateError: () => undefined,
    packetIns: () => undefined,
  };
  const chan = newUpcallChannel();
  const pmdEnd = new UpcallChannelPmd(chan, 0);
  const mainEnd = new UpcallChannelMain(chan, 0);
  const out = new UpcallAnswerBuilder(256);
  const gen = new TrafficGen({ size: 64, flows: nFlows });
  const bufs = new Int32Array(32);
  let received = 0;
  const fail = (e: Error): void => {
    throw e;
  };
  const translate = (u: Parameters<typeof translateUpcalls>[0]): void => {
    translateUpcalls(u, out, Date.now(), hooks);
    if (!mainEnd.answer(out)) throw new Error('answer did not fit the channel');
  };
  return {
    pool, dp, br, batcher, resolve,
    /** Generator frames into port a: up to n (one burst). */
    offer(n: number): void {
      const k = pool.alloc(bufs, Math.min(32, n));
      for (let i = 0; i < k; i++) gen.fill(pool, bufs[i]);
      const s = peerA.txBurst(0, bufs, k);
      if (s < k) pool.free(bufs, k - s, s);
    },
    /** PMD side: upcalls collected so far into the channel. */
    sendUpcalls: (): number => pmdEnd.send(batcher),
    /** Main side: translate every waiting batch and publish the answers. */
    translate: (): number => mainEnd.drain(translate),
    /** PMD side: apply the answers (installs, held packets). */
    install: (): number => pmdEnd.receive(dp, fail),
    /** What came out of port b (freed); returns how many. */
    sink(): number {
      let n = 0;
      for (let r; (r = peerB.rxBurst(0, bufs, 32)) > 0; n += r) pool.free(bufs, r);
      received += n;
      return n;
    },
    received: (): number => received,
    /** Offer `packets` frames (bursts of 32); upcalls sent, translated and answered after every 4 bursts. */
    send(packets: number): void {
      for (let sent = 0; sent < packets;) {
        for (let k = 0; k < 4 && sent < packets; k++) {
          const n = Math.min(32, packets - sent);
          this.offer(n);
          sent += n;
          dp.pollOnce();
        }
        if (batcher.count > 0) {
          this.sendUpcalls();
          this.translate();
          this.install();
          dp.pollOnce();
        }
        this.sink();
      }
    },
    /**
     * One revalidation pass as Switch.revalidatePass: ids of the flows that no
     * longer stand (removed), and how many flows were translated in full.
     */
    pass(): { gone: number[]; translated: number } {
      const sig = br.xlateSig();
      br.beginPass();
      const fl = dp.dumpFlowsPacked();
      const gone: number[] = [];
      let translated = 0;
      for (let i = 0; i < fl.ids.length; i++) {
        const ko = i * FLOW_WORDS;
        const r = br.revalidate(fl.keys, ko, fl.masks, ko, Date.now(), fl.packets[i], fl.bytes[i], fl.xids[i], fl.ids[i], sig);
        if (r === null) continue;
        translated++;
        let same = r.actions.length === fl.actOff[i + 1] - fl.actOff[i];
        for (let j = 0; same && j < FLOW_WORDS; j++) same = r.mask[j] === fl.masks[ko + j];
        for (let j = 0; same && j < r.actions.length; j++) same = r.actions[j] === fl.acts[fl.actOff[i] + j];
        if (!same) {
          gone.push(fl.ids[i]);
          br.forgetFlow(fl.xids[i], fl.ids[i]);
          dp.removeFlow(fl.ids[i]);
        }
      }
      br.endPass();
      return { gone, translated };
    },
    close(): void {
      a.close();
      b.close();
    },
  };
}

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
  const rig = upcallRig(nFlows);
  const dp = rig.dp;
  let tPmd = 0;
  let tMain = 0;
  let tInst = 0;
  let quiet = 0;
  let lastFlows = -1;
  // until a whole cycle of the generator's flows passes without a new megaflow
  while (quiet < nFlows) {
    for (let k = 0; k < 32; k++) {
      rig.offer(32);
      const t = performance.now();
      dp.pollOnce();
      tPmd += performance.now() - t;
      rig.sink();
    }
    if (rig.batcher.count > 0) {
      const t0 = performance.now();
      rig.sendUpcalls();
      const t1 = performance.now();
      rig.translate();
      const t2 = performance.now();
      rig.install();
      const t3 = performance.now();
      tPmd += t1 - t0;
      tMain += t2 - t1;
      tInst += t3 - t2;
      rig.sink();
    }
    if (dp.flowCount === lastFlows) quiet += 32 * 32;
    else quiet = 0;
    lastFlows = dp.flowCount;
  }
  const flows = dp.flowCount;
  const pass = (): number => {
    const t = performance.now();
    const { translated } = rig.pass();
    if (translated > flows / 2) throw new Error(`revalidation translated ${translated} of ${flows} flows in full`);
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
  rig.close();
  return r;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { flows: { type: 'string', default: '100000' }, reps: { type: 'string', default: '3' } } });
  for (let i = 0; i < Number(values.reps); i++) console.log(JSON.stringify(runUpcallStages(Number(values.flows))));
}
