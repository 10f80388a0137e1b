/**
 * memory: resident memory (VmRSS from /proc/PID/status) of each switch with
 * two vhost-user ports, idle (ports configured, no frontend connected) and
 * under load (p2p bidir 64 B loop; the peak of samples every 200 ms).
 * If tsvs's vhost-user port is unavailable, tsvs is measured with two
 * afpacket ports in namespaces instead (and the row says so).
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep, rssKiB } from './proc.js';
import { startSwitch, SWITCH_KINDS, type SwitchUnderTest } from './switches.js';
import { startLoopGenerator, measureLoop, waitLoopReady } from './p2p.js';
import { kernelTopology } from './kernel.js';
import { linkCounters, trafgenConfig, Trafgen, kernelAvailable, trafgenAvailable } from './peers/kernel.js';

async function sampleWhile<T>(pid: number, f: () => Promise<T>): Promise<{ r: T; peak: number }> {
  let peak = 0;
  const t = setInterval(() => {
    const r = rssKiB(pid);
    if (r) peak = Math.max(peak, r.vmRss);
  }, 200);
  try {
    const r = await f();
    const last = rssKiB(pid);
    if (last) peak = Math.max(peak, last.vmRss);
    return { r, peak };
  } finally {
    clearInterval(t);
  }
}

async function tsvsAfpacket(ctx: BenchContext, c: Collector): Promise<void> {
  const why = kernelAvailable() ?? trafgenAvailable();
  if (why) throw new Unavailable(why);
  const k = await kernelTopology(true, ctx.swCpu, 79);
  try {
    const pid = k.daemon!.pid;
    await sleep(1000);
    const idle = rssKiB(pid);
    if (idle) {
      c.add('idle, 2 afpacket ports', 'VmRSS', 'tsvs', 'MiB', idle.vmRss / 1024);
      c.add('idle, 2 afpacket ports', 'RssShmem', 'tsvs', 'MiB', idle.rssShmem / 1024);
    }
    const { topo } = k;
    const tg = Trafgen.start({ ns: topo.a, dev: 'a0', cpu: ctx.genCpu, config: trafgenConfig({ size: 64, dstMac: topo.macB, srcMac: topo.macA, srcIp: topo.ipA, dstIp: topo.ipB }) });
    try {
      const { peak } = await sampleWhile(pid, async () => {
        await sleep((ctx.warmup + ctx.seconds) * 1000);
        return linkCounters(topo.b, 'b0');
      });
      c.add('load, 2 afpacket ports', 'VmRSS peak', 'tsvs', 'MiB', peak / 1024);
    } finally {
      await tg.stop();
    }
  } finally {
    await k.close();
  }
}

export async function runMemory(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('memory', 'resident memory of the switch process (VmRSS), MiB');
  c.note('OVS-DPDK and DPDK testpmd run with --no-huge: their DPDK memory (-m 4096 / -m 1024) is ordinary memory, counted in RSS as it is touched.');
  for (let rep = 0; rep < Math.min(ctx.reps, 2); rep++) {
    for (const kind of rotate(wanted(ctx, SWITCH_KINDS), rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`memory rep ${rep + 1}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      try {
        try {
          sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu);
        } catch (e) {
          if (kind === 'tsvs' && e instanceof Unavailable) {
            c.note(`tsvs measured with afpacket ports: ${e.message}`);
            await tsvsAfpacket(ctx, c);
            continue;
          }
          throw e;
        }
        await sleep(1000);
        const idle = rssKiB(sw.pid);
        if (idle) {
          c.add('idle, 2 vhost-user ports', 'VmRSS', kind, 'MiB', idle.vmRss / 1024);
          c.add('idle, 2 vhost-user ports', 'RssShmem', kind, 'MiB', idle.rssShmem / 1024);
        }
        const gen = await startLoopGenerator(sw, ctx.genCpu, ctx.swCpu);
        try {
          await waitLoopReady(gen);
          const s = sw;
          const { peak } = await sampleWhile(s.pid, () => measureLoop(gen, { size: 64, variant: 'bidir', warmup: ctx.warmup, seconds: ctx.seconds }));
          c.add('load (p2p bidir 64B)', 'VmRSS peak', kind, 'MiB', peak / 1024);
        } finally {
          await gen.quit();
        }
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`memory ${kind} failed: ${errText(e)}`);
          c.markUnavailable(kind, `failed: ${errText(e)}`);
        }
      } finally {
        await sw?.stop();
      }
    }
  }
  return c.result();
}

export const memory: Scenario = { name: 'memory', title: 'switch memory', run: runMemory };
