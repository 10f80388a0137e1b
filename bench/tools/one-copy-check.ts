/**
 * One copy sanity (not a benchmark): tsvs --one-copy on between two virtio-user ports of one
 * dpdk-testpmd (the p2p loop), then pmd-stats: how many frames went guest to guest in one copy.
 *   node dist/bench/tools/one-copy-check.js [on|off]
 */
import { startSwitch } from '../switches.js';
import { startLoopGenerator, waitLoopReady, measureLoop } from '../p2p.js';

const on = (process.argv[2] ?? 'on') === 'on';
const sw = await startSwitch(on ? 'tsvs-one-copy' : 'tsvs-pool', 1, 0);
const gen = await startLoopGenerator(sw, 0, 1);
try {
  await waitLoopReady(gen);
  for (const size of [64, 1518]) {
    const m = await measureLoop(gen, { size, variant: 'oneway', warmup: 1, seconds: 2 });
    console.log(`${size} B oneway: ${m.mpps12.toFixed(3)} Mpps, sent ${m.sent}, received ${m.received}`);
  }
  const st = await sw.tsvs!.pmdStats();
  console.log(JSON.stringify(st.map((s) => ({ rx: s.rxPackets, tx: s.txPackets, oneCopy: (s as unknown as { oneCopy: number }).oneCopy, drops: s.drops }))));
} finally {
  await gen.quit();
  await sw.stop();
}
