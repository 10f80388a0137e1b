/**
 * kernel: the same traffic shape over the kernel path and through tsvs.
 *   linux-bridge      trafgen in ns A -> veth -> Linux bridge (ns S) -> veth -> ns B
 *   tsvs-afpacket     trafgen in ns A -> veth -> tsvs afpacket ports (ns S) -> veth -> ns B
 *   tsvs-vhost-user   the vhost-user path: DPDK virtio-user -> tsvs vhost-user -> virtio-user
 *                     (the p2p oneway loop of bench/p2p.ts, one direction counted)
 * Rate = rx counter of B's veth (or testpmd's rx port) over the window; loss =
 * a0 tx - b0 rx. 64-byte frames (60 + FCS on a real wire) with a valid IPv4 checksum.
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep } from './proc.js';
import { rate } from './stats.js';
import { twoHosts, linkCounters, trafgenConfig, Trafgen, kernelAvailable, trafgenAvailable, type TwoHostTopology } from './peers/kernel.js';
import { TsvsDaemon } from './peers/tsvs.js';
import { startTsvsSwitch, P2P_FLOWS } from './switches.js';
import { startLoopGenerator, measureLoop, waitLoopReady } from './p2p.js';
import { dpdkAvailable } from './peers/dpdk.js';

type KSubject = 'linux-bridge' | 'tsvs-afpacket' | 'tsvs-vhost-user';
const SUBJECTS: readonly KSubject[] = ['linux-bridge', 'tsvs-afpacket', 'tsvs-vhost-user'];
const SIZE = 64;

/** ns A/S/B with either a Linux bridge or a tsvs daemon (afpacket ports) in S. */
export async function kernelTopology(withTsvs: boolean, swCpu: number, subnet = 77): Promise<{ topo: TwoHostTopology; daemon: TsvsDaemon | null; close(): Promise<void> }> {
  const topo = await twoHosts({ bridge: !withTsvs, subnet });
  let daemon: TsvsDaemon | null = null;
  try {
    if (withTsvs) {
      daemon = await TsvsDaemon.start({ cpu: swCpu, netns: topo.s });
      await daemon.cli('add-br', 'br0');
      await daemon.cli('add-port', 'br0', 'a1', '--type', 'afpacket', '--iface', 'a1', '--ofport', '1');
      await daemon.cli('add-port', 'br0', 'b1', '--type', 'afpacket', '--iface', 'b1', '--ofport', '2');
      await daemon.setFlows('br0', P2P_FLOWS);
    }
  } catch (e) {
    await daemon?.stop();
    await topo.teardown();
    throw e;
  }
  const d = daemon;
  return {
    topo,
    daemon,
    close: async () => {
      await d?.stop();
      await topo.teardown();
    },
  };
}

async function measureTrafgen(ctx: BenchContext, withTsvs: boolean): Promise<{ mpps: number; sent: number; received: number }> {
  const k = await kernelTopology(withTsvs, ctx.swCpu);
  const { topo } = k;
  let tg: Trafgen | null = null;
  try {
    const base = await linkCounters(topo.b, 'b0');
    tg = Trafgen.start({ ns: topo.a, dev: 'a0', cpu: ctx.genCpu, config: trafgenConfig({ size: SIZE, dstMac: topo.macB, srcMac: topo.macA, srcIp: topo.ipA, dstIp: topo.ipB }) });
    const t0 = Date.now();
    while ((await linkCounters(topo.b, 'b0')).rxPackets - base.rxPackets < 1000) {
      if (tg.proc.exited) throw new Error(`trafgen exited: ${tg.proc.tail(500)}`);
      if (Date.now() - t0 > 15000) throw new Error(`no frames reached ns B in 15 s${k.daemon ? `; tsvs: ${k.daemon.proc.tail(500)}` : ''}`);
      await sleep(100);
    }
    await sleep(ctx.warmup * 1000);
    const a = await linkCounters(topo.b, 'b0');
    const ta = performance.now();
    await sleep(ctx.seconds * 1000);
    const b = await linkCounters(topo.b, 'b0');
    const tb = performance.now();
    await tg.stop();
    tg = null;
    await sleep(300);
    const sent = (await linkCounters(topo.a, 'a0')).txPackets;
    const received = (await linkCounters(topo.b, 'b0')).rxPackets - base.rxPackets;
    return { mpps: rate(a.rxPackets, b.rxPackets, tb - ta) / 1e6, sent, received };
  } finally {
    await tg?.stop();
    await k.close();
  }
}

async function measureVhost(ctx: BenchContext): Promise<{ mpps: number; sent: number; received: number }> {
  const why = dpdkAvailable();
  if (why) throw new Unavailable(why);
  const sw = await startTsvsSwitch(ctx.swCpu);
  try {
    const gen = await startLoopGenerator(sw, ctx.genCpu, ctx.swCpu);
    try {
      await waitLoopReady(gen);
      const m = await measureLoop(gen, { size: SIZE, variant: 'oneway', warmup: ctx.warmup, seconds: ctx.seconds });
      if (m.mpps12 === 0) throw new Error('no frames came back through tsvs vhost-user ports');
      return { mpps: m.mpps12, sent: m.sent, received: m.received };
    } finally {
      await gen.quit();
    }
  } finally {
    await sw.stop();
  }
}

export async function runKernel(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('kernel', 'kernel path (veth + Linux bridge) vs tsvs (afpacket, vhost-user), one direction, Mpps');
  c.note(`trafgen (one sender, pinned to CPU ${ctx.genCpu}); on the kernel path the bridge runs in softirq on the sender's CPU, tsvs's PMD runs on CPU ${ctx.swCpu}.`);
  c.note('tsvs-vhost-user is the p2p oneway loop (DPDK virtio-user <-> tsvs vhost-user), the path vhost-user replaces the kernel path with.');
  const why = kernelAvailable() ?? trafgenAvailable();
  if (why) {
    c.markUnavailable('linux-bridge', why);
    c.markUnavailable('tsvs-afpacket', why);
  }
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const s of rotate(wanted(ctx, SUBJECTS), rep)) {
      if (c.isUnavailable(s)) continue;
      ctx.log(`kernel rep ${rep + 1}/${ctx.reps}: ${s}`);
      try {
        const m = s === 'tsvs-vhost-user' ? await measureVhost(ctx) : await measureTrafgen(ctx, s === 'tsvs-afpacket');
        c.add(`${SIZE}B`, 'one way', s, 'Mpps', m.mpps, { sent: m.sent, received: m.received });
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(s, e.message);
        else {
          ctx.log(`kernel ${s} failed: ${errText(e)}`);
          c.fail(s, rep, errText(e));
        }
      }
    }
  }
  c.ratio('tsvs-vhost-user', 'linux-bridge', { label: 'vhost-user path / kernel path (tsvs-vhost-user/linux-bridge)' });
  c.ratio('tsvs-afpacket', 'linux-bridge', { label: 'tsvs-afpacket/linux-bridge' });
  return c.result();
}

export const kernel: Scenario = { name: 'kernel', title: 'kernel path vs tsvs', run: runKernel };
