/**
 * memory: resident memory (VmRSS from /proc/PID/status) of each switch with
 * two vhost-user ports, idle (ports configured, no frontend connected) and
 * under load (p2p bidir 64 B loop; the peak of samples every 200 ms).
 * If tsvs's vhost-user port is unavailable, tsvs is measured with two
 * afpacket ports in namespaces instead (and the row says so).
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep, rssKiB, peerResidentKiB } from './proc.js';
import { startSwitch, SWITCH_KINDS, type SwitchUnderTest } from './switches.js';
import { startLoopGenerator, measureLoop, waitLoopReady } from './p2p.js';
import { kernelTopology } from './kernel.js';
import { linkCounters, trafgenConfig, Trafgen, kernelAvailable, trafgenAvailable } from './peers/kernel.js';

interface Peak {
  vmRss: number;
  rssAnon: number;
  rssShmem: number;
}

/** Peak VmRSS / RssAnon / RssShmem (KiB, each its own maximum) while f runs. */
async function sampleWhile<T>(pid: number, f: () => Promise<T>): Promise<{ r: T; peak: Peak }> {
  const peak: Peak = { vmRss: 0, rssAnon: 0, rssShmem: 0 };
  const sample = (): void => {
    const r = rssKiB(pid);
    if (!r) return;
    peak.vmRss = Math.max(peak.vmRss, r.vmRss);
    peak.rssAnon = Math.max(peak.rssAnon, r.rssAnon);
    peak.rssShmem = Math.max(peak.rssShmem, r.rssShmem);
  };
  const t = setInterval(sample, 200);
  try {
    const r = await f();
    sample();
    return { r, peak };
  } finally {
    clearInterval(t);
  }
}

function addPeak(c: Collector, cs: string, subject: string, p: Peak): void {
  c.add(cs, 'VmRSS peak', subject, 'MiB', p.vmRss / 1024);
  c.add(cs, 'RssAnon peak', subject, 'MiB', p.rssAnon / 1024);
  c.add(cs, 'RssShmem peak', subject, 'MiB', p.rssShmem / 1024);
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
      c.add('idle, 2 afpacket ports', 'RssAnon', 'tsvs', 'MiB', idle.rssAnon / 1024);
      c.add('idle, 2 afpacket ports', 'RssShmem', 'tsvs', 'MiB', idle.rssShmem / 1024);
    }
    const { topo } = k;
    const tg = Trafgen.start({ ns: topo.a, dev: 'a0', cpu: ctx.genCpu, config: trafgenConfig({ size: 64, dstMac: topo.macB, srcMac: topo.macA, srcIp: topo.ipA, dstIp: topo.ipB }) });
    try {
      const { peak } = await sampleWhile(pid, async () => {
        await sleep((ctx.warmup + ctx.seconds) * 1000);
        return linkCounters(topo.b, 'b0');
      });
      addPeak(c, 'load, 2 afpacket ports', 'tsvs', peak);
    } finally {
      await tg.stop();
    }
  } finally {
    await k.close();
  }
}

export async function runMemory(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('memory', 'resident memory of the switch process (VmRSS), MiB');
  c.note('RssShmem includes the frontend\'s memory that a vhost-user backend maps (DPDK virtio-user shares its whole --no-huge -m 1024 region) as pages are touched: it is the peer\'s memory, not the switch\'s own; RssAnon is the process\'s own heap.');
  c.note('"own (RSS - frontend memory)": the resident pages of mappings the frontend (testpmd) also maps, i.e. its guest memory, taken out of the RSS: what the switch itself costs. For tsvs that includes its packet pool (its own memfd).');
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
          c.add('idle, 2 vhost-user ports', 'RssAnon', kind, 'MiB', idle.rssAnon / 1024);
          c.add('idle, 2 vhost-user ports', 'RssShmem', kind, 'MiB', idle.rssShmem / 1024);
        }
        const gen = await startLoopGenerator(sw, ctx.genCpu, ctx.swCpu);
        try {
          await waitLoopReady(gen);
          const s = sw;
          const { peak } = await sampleWhile(s.pid, () => measureLoop(gen, { size: 64, variant: 'bidir', warmup: ctx.warmup, seconds: ctx.seconds }));
          addPeak(c, 'load (p2p bidir 64B)', kind, peak);
          // after the load, frontend still attached: the part of the RSS that is the frontend's memory
          const end = rssKiB(s.pid);
          const peer = peerResidentKiB(s.pid, gen.pid);
          if (end && Number.isFinite(peer)) {
            c.add('after load, frontend attached', 'VmRSS', kind, 'MiB', end.vmRss / 1024);
            c.add('after load, frontend attached', 'frontend memory in RSS', kind, 'MiB', peer / 1024);
            c.add('after load, frontend attached', 'own (RSS - frontend memory)', kind, 'MiB', (end.vmRss - peer) / 1024);
          }
        } finally {
          await gen.quit();
        }
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`memory ${kind} failed: ${errText(e)}`);
          c.fail(kind, rep, errText(e));
        }
      } finally {
        await sw?.stop();
      }
    }
  }
  return c.result();
}

export const memory: Scenario = { name: 'memory', title: 'switch memory', run: runMemory };
