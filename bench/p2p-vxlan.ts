/**
 * p2p-vxlan: one-way throughput through a VXLAN tunnel, tsvs and OVS-DPDK in the same shape
 * (TUNNEL_KINDS in switches.ts: the switch encapsulates every frame from vhost-user port 1, sends it
 * out of one end of a veth pair, takes it back in at the other end, decapsulates it and outputs it
 * on vhost-user port 2), against the same switches forwarding port 1 -> 2 directly.
 *
 * Open loop, counted where the path ends:
 *   generator  DPDK testpmd, txonly, one net_virtio_user port on the switch's port 1 (1024-entry ring),
 *              forwarding on the generator CPU; the switch has the other CPU to itself
 *   port 2     no frontend: the switch drops what it outputs there, cheaply, and counts it (as the
 *              flows scenario does), so the whole path before it is what is measured
 *   rate       frames the switch put out on port 2 over the window (sent + dropped at the port, from
 *              its own counters: tsvs port-stats, OVS dump-ports), i.e. frames that made it through
 *              encapsulation, the veth, decapsulation and the second lookup; never what was offered
 *   loss       frames the generator sent minus frames that reached port 2 (drops on the way: kernel
 *              socket queues, unresolved next hop, ...)
 *
 * Why no receiving testpmd on port 2: it has to share the generator's CPU (2 CPUs), and a busy-polling
 * sink that the scheduler leaves off its CPU for longer than its ring lasts makes the switch drop
 * what it delivered (tx-no-guest-buffers): measured here, 50-95 % of the frames, even with a
 * 4096-entry ring or the sink at nice -10 (which then starved the generator). Why not the p2p io loop:
 * a loop through a stage that drops loses frames until the few left in flight no longer fill the
 * path; it then runs at (frames in flight) / (round-trip time), a latency, not a throughput
 * (0.002-0.036 Mpps here for both switches).
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep, rssKiB } from './proc.js';
import { rate } from './stats.js';
import { DpdkTestpmd } from './peers/dpdk.js';
import { startSwitch, TUNNEL_KINDS, type SwitchUnderTest } from './switches.js';

async function startGenerator(sw: SwitchUnderTest, ctx: BenchContext): Promise<DpdkTestpmd> {
  // main lcore on the switch's CPU (it only reads the command line), forwarding on the generator CPU
  return DpdkTestpmd.start({
    vdevs: [`net_virtio_user0,path=${sw.socks[0]},queues=1,queue_size=1024`],
    lcores: `0@${ctx.swCpu},1@${ctx.genCpu}`,
    fwd: 'txonly',
    memMb: 512,
    extra: ['--total-num-mbufs=32768'],
  });
}

/** Offer frames until some come out of port 2 (vhost-user setup, ARP of the tunnel's next hop). */
async function waitThrough(sw: SwitchUnderTest, gen: DpdkTestpmd, timeoutMs = 30000): Promise<void> {
  const base = await sw.out2!();
  await gen.startFwd();
  const t0 = Date.now();
  try {
    while ((await sw.out2!()) - base < 1000) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`no frames came out of port 2 within ${timeoutMs / 1000} s`);
      await sleep(200);
    }
  } finally {
    await gen.stopFwd();
  }
}

async function measureOneWay(sw: SwitchUnderTest, gen: DpdkTestpmd, size: number, warmup: number, seconds: number): Promise<{ mpps: number; sent: number; received: number }> {
  await gen.setTxpkts(size);
  const r0 = await sw.out2!();
  await gen.startFwd();
  await sleep(warmup * 1000);
  const a = await sw.out2!();
  const ta = performance.now();
  await sleep(seconds * 1000);
  const b = await sw.out2!();
  const tb = performance.now();
  const g = await gen.stopFwd();
  // frames still in the switch or the kernel come out within a moment
  let last = -1;
  let now = await sw.out2!();
  for (let i = 0; i < 20 && now !== last; i++) {
    await sleep(100);
    last = now;
    now = await sw.out2!();
  }
  return { mpps: rate(a, b, tb - ta) / 1e6, sent: g.total.txPackets, received: now - r0 };
}

export async function runP2pVxlan(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('p2p-vxlan', 'DPDK testpmd txonly -> switch, vhost-user port 1 -> 2: directly vs through a VXLAN tunnel over a veth (tsvs and OVS-DPDK), Mpps out of port 2');
  // 1400, not 1518: DPDK's af_packet PMD (ovs-vxlan-afp's underlay) refuses an MTU above 1500, so
  // a 1518-byte frame plus the 50-byte VXLAN header would not leave it (OVS drops it as too long)
  const sizes = ctx.sizes ?? [64, 1400];
  const subjects = wanted(ctx, TUNNEL_KINDS);
  c.note('Open loop, one way: DPDK testpmd txonly on port 1; port 2 has no frontend; rate = frames the switch put out on port 2 (sent + dropped there, its own counters), loss = generator sent - reached port 2 (see bench/p2p-vxlan.ts).');
  c.note('tsvs-vxlan / ovs-vxlan: vhu1 -> vx0 (encap) -> veth va = vb -> vx1 (decap) -> vhu2, each switch with its own namespace-made underlay (ovs-vxlan: the veth ends as OVS system ports, polled by its main thread; ovs-vxlan-afp: as DPDK net_af_packet ports, polled by its PMD thread); tsvs-afpacket: the same hairpin through plain afpacket ports; tsvs / ovs-dpdk: vhu1 -> vhu2 directly.');
  c.note(`Switch under test pinned to CPU ${ctx.swCpu} (OVS: its PMD thread and its main thread, which polls system ports such as the veth ends); generator forwarding on CPU ${ctx.genCpu}.`);
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const kind of rotate(subjects, rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`p2p-vxlan rep ${rep + 1}/${ctx.reps}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      let gen: DpdkTestpmd | null = null;
      try {
        sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu);
        gen = await startGenerator(sw, ctx);
        await waitThrough(sw, gen);
        // first-touch page faults and JIT warm-up: not part of any case
        await measureOneWay(sw, gen, 64, 0, 1);
        for (const size of sizes) {
          const m = await measureOneWay(sw, gen, size, ctx.warmup, ctx.seconds);
          if (m.mpps === 0) throw new Error(`no frames came out of port 2 through ${kind} (${size}B)`);
          c.add(`${size}B oneway`, 'port 1 -> 2', kind, 'Mpps', m.mpps, { sent: m.sent, received: m.received });
        }
        const rss = rssKiB(sw.pid);
        if (rss) c.add('after load', 'switch VmRSS', kind, 'MiB', rss.vmRss / 1024);
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`p2p-vxlan ${kind} failed: ${errText(e)}`);
          c.fail(kind, rep, errText(e));
        }
      } finally {
        await gen?.quit();
        await sw?.stop();
      }
    }
  }
  c.ratio('tsvs-vxlan', 'ovs-vxlan', { label: 'tsvs-vxlan/ovs-vxlan' });
  c.ratio('tsvs-vxlan', 'ovs-vxlan-afp', { label: 'tsvs-vxlan/ovs-vxlan-afp' });
  c.ratio('tsvs-vxlan', 'tsvs', { label: 'tsvs-vxlan/tsvs-plain' });
  c.ratio('ovs-vxlan', 'ovs-dpdk', { label: 'ovs-vxlan/ovs-plain' });
  c.ratio('ovs-vxlan-afp', 'ovs-dpdk', { label: 'ovs-vxlan-afp/ovs-plain' });
  c.ratio('tsvs-vxlan', 'tsvs-afpacket', { label: 'tsvs-vxlan/tsvs-afpacket' });
  c.ratio('tsvs', 'ovs-dpdk', { label: 'tsvs-plain/ovs-plain' });
  return c.result();
}

export const p2pVxlan: Scenario = {
  name: 'p2p-vxlan',
  title: 'vhost-user port 1 -> 2 through a VXLAN tunnel (veth underlay), tsvs and OVS-DPDK',
  run: (ctx) => runP2pVxlan(ctx),
};
