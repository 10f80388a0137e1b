/**
 * p2p-modes: start the tsvs switch and the io-loop generator N times and, for each start,
 * measure 64 B one way a few times and read the PMD's stats (passes, burst sizes, cycles),
 * to tell apart run-to-run modes of the same build. Diagnostic, not a scenario.
 *   node dist/bench/tools/p2p-modes.js [starts] [windows]
 */
import { startSwitch } from '../switches.js';
import { probeCpuLink } from '../cpu-link.js';
import { startLoopGenerator, waitLoopReady, measureLoop } from '../p2p.js';

const starts = Number(process.argv[2] ?? 4);
const windows = Number(process.argv[3] ?? 3);
const swCpu = 0;
const genCpu = 1;
for (let s = 0; s < starts; s++) {
  const before = await probeCpuLink(0, 1);
  const sw = await startSwitch('tsvs', swCpu, genCpu);
  const gen = await startLoopGenerator(sw, genCpu, swCpu);
  try {
    await waitLoopReady(gen);
    await measureLoop(gen, { size: 64, variant: 'bidir', warmup: 0, seconds: 2 });
    const r: string[] = [];
    for (let w = 0; w < windows; w++) {
      await sw.tsvs!.cli('pmd-stats-clear');
      const m = await measureLoop(gen, { size: 64, variant: 'oneway', warmup: 0.5, seconds: 2 });
      const ps = (await sw.tsvs!.rpc<{ iterations: number; busyIterations: number; rxPackets: number; busyNs: number; idleNs: number }[]>('pmd-stats'))[0];
      r.push(`${m.mpps12.toFixed(2)} (${(ps.rxPackets / ps.busyIterations).toFixed(1)} pkt/busy pass, ${(ps.busyIterations / ps.iterations * 100).toFixed(0)}% passes busy, ${((ps.busyNs + ps.idleNs) / ps.iterations).toFixed(0)} ns/pass, busy time ${(ps.busyNs / (ps.busyNs + ps.idleNs) * 100).toFixed(0)}%)`);
    }
    console.log(`start ${s + 1}: link before ${before.rttNs.toFixed(0)} ns: ${r.join(' ')} Mpps`);
  } finally {
    await gen.quit();
    await sw.stop();
  }
  console.log(`  link after ${(await probeCpuLink(0, 1)).rttNs.toFixed(0)} ns`);
}
