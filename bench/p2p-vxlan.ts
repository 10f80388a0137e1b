/**
 * p2p-vxlan: one-way throughput through a VXLAN tunnel, tsvs and OVS-DPDK in the same shape
 * (TUNNEL_KINDS in switches.ts: the switch encapsulates every frame from vhost-user port 1, sends it
 * out of one end of a veth pair, takes it back in at the other end, decapsulates it and delivers it
 * to vhost-user port 2), against the same switches forwarding port 1 -> 2 directly.
 *
 * Open loop, counted at the receiver:
 *   generator  DPDK testpmd, txonly, one net_virtio_user port on the switch's port 1
 *   sink       DPDK testpmd, rxonly, one net_virtio_user port on the switch's port 2
 *   rate       frames the sink received over the window (delivered, not offered);
 *   loss       frames the generator sent minus frames the sink received (switch and kernel drops).
 * Both testpmds forward on the generator CPU (the switch has the other one to itself), so each has
 * about half a CPU: several Mpps, far above the tunnel paths but not above plain forwarding, which
 * is why the plain rows are a floor of the switch's rate (see the p2p scenario for that).
 *
 * Why not the p2p io loop: a loop through a stage that drops (an AF_PACKET socket queue) loses
 * frames until the few left in flight no longer fill the path; it then runs at
 * (frames in flight) / (round-trip time) and measures latency, not throughput (the loop gave
 * 0.002-0.036 Mpps here for both switches).
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep, rssKiB } from './proc.js';
import { rate } from './stats.js';
import { DpdkTestpmd } from './peers/dpdk.js';
import { startSwitch, TUNNEL_KINDS, type SwitchUnderTest } from './switches.js';

interface OneWay {
  gen: DpdkTestpmd;
  sink: DpdkTestpmd;
}

async function startOneWay(sw: SwitchUnderTest, ctx: BenchContext): Promise<OneWay> {
  // main lcores on the switch's CPU (they only read the command line), forwarding on the generator CPU
  const lcores = `0@${ctx.swCpu},1@${ctx.genCpu}`;
  // a 1024-entry ring: the sink shares its CPU with the generator, so it is sometimes descheduled for a
  // few ms; the ring holds what the switch delivers meanwhile (drops there would be the sink's, not the switch's)
  const sink = await DpdkTestpmd.start({ vdevs: [`net_virtio_user0,path=${sw.socks[1]},queues=1,queue_size=1024`], lcores, fwd: 'rxonly', memMb: 512, extra: ['--total-num-mbufs=32768'] });
  let gen: DpdkTestpmd | null = null;
  try {
    gen = await DpdkTestpmd.start({ vdevs: [`net_virtio_user1,path=${sw.socks[0]},queues=1`], lcores, fwd: 'txonly', memMb: 512, extra: ['--total-num-mbufs=32768'] });
    return { gen, sink };
  } catch (e) {
    await sink.quit();
    throw e;
  }
}

async function sinkRx(sink: DpdkTestpmd): Promise<number> {
  const s = await sink.portStats();
  if (!s.length) throw new Error('sink testpmd reported no port');
  return s[0].rxPackets;
}

/** Offer frames until the sink sees some (vhost-user setup, ARP of the tunnel's next hop). */
async function waitDelivered(o: OneWay, timeoutMs = 30000): Promise<void> {
  await o.sink.startFwd();
  const base = await sinkRx(o.sink);
  await o.gen.startFwd();
  const t0 = Date.now();
  try {
    while ((await sinkRx(o.sink)) - base < 1000) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`no frames reached the sink within ${timeoutMs / 1000} s`);
      await sleep(200);
    }
  } finally {
    await o.gen.stopFwd();
  }
}

async function measureOneWay(o: OneWay, size: number, warmup: number, seconds: number): Promise<{ mpps: number; sent: number; received: number }> {
  await o.gen.setTxpkts(size);
  const r0 = await sinkRx(o.sink);
  await o.gen.startFwd();
  await sleep(warmup * 1000);
  const a = await sinkRx(o.sink);
  const ta = performance.now();
  await sleep(seconds * 1000);
  const b = await sinkRx(o.sink);
  const tb = performance.now();
  const g = await o.gen.stopFwd();
  // frames still in the switch or the kernel reach the sink within a moment
  let last = -1;
  let now = await sinkRx(o.sink);
  for (let i = 0; i < 20 && now !== last; i++) {
    await sleep(100);
    last = now;
    now = await sinkRx(o.sink);
  }
  return { mpps: rate(a, b, tb - ta) / 1e6, sent: g.total.txPackets, received: now - r0 };
}

export async function runP2pVxlan(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('p2p-vxlan', 'DPDK testpmd txonly -> switch (vhost-user 1 -> 2) -> DPDK testpmd rxonly: plain vs through a VXLAN tunnel over a veth (tsvs and OVS-DPDK), Mpps delivered');
  const sizes = ctx.sizes ?? [64, 1518];
  const subjects = wanted(ctx, TUNNEL_KINDS);
  c.note('Open loop, one way: DPDK testpmd txonly on port 1, DPDK testpmd rxonly on port 2, both forwarding on the generator CPU; rate = frames the sink received (see bench/p2p-vxlan.ts).');
  c.note('tsvs-vxlan / ovs-vxlan: vhu1 -> vx0 (encap) -> veth va = vb -> vx1 (decap) -> vhu2, both switches in the same namespace-made underlay; tsvs-afpacket: the same hairpin through plain afpacket ports; tsvs / ovs-dpdk: vhu1 -> vhu2 directly (bounded here by the generator and sink sharing one CPU).');
  c.note(`Switch under test pinned to CPU ${ctx.swCpu} (OVS: PMD thread and main thread, which polls its system ports); generator and sink forwarding on CPU ${ctx.genCpu}.`);
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const kind of rotate(subjects, rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`p2p-vxlan rep ${rep + 1}/${ctx.reps}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      let o: OneWay | null = null;
      try {
        sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu);
        o = await startOneWay(sw, ctx);
        await waitDelivered(o);
        // first-touch page faults and JIT warm-up: not part of any case
        await measureOneWay(o, 64, 0, 1);
        for (const size of sizes) {
          const m = await measureOneWay(o, size, ctx.warmup, ctx.seconds);
          if (m.mpps === 0) throw new Error(`no frames reached the sink through ${kind} (${size}B)`);
          c.add(`${size}B oneway`, 'delivered 1->2', kind, 'Mpps', m.mpps, { sent: m.sent, received: m.received });
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
        await o?.gen.quit();
        await o?.sink.quit();
        await sw?.stop();
      }
    }
  }
  c.ratio('tsvs-vxlan', 'ovs-vxlan', { label: 'tsvs-vxlan/ovs-vxlan' });
  c.ratio('tsvs-vxlan', 'tsvs', { label: 'tsvs-vxlan/tsvs-plain' });
  c.ratio('ovs-vxlan', 'ovs-dpdk', { label: 'ovs-vxlan/ovs-plain' });
  c.ratio('tsvs-vxlan', 'tsvs-afpacket', { label: 'tsvs-vxlan/tsvs-afpacket' });
  c.ratio('tsvs', 'ovs-dpdk', { label: 'tsvs-plain/ovs-plain' });
  return c.result();
}

export const p2pVxlan: Scenario = {
  name: 'p2p-vxlan',
  title: 'vhost-user port 1 -> 2 through a VXLAN tunnel (veth underlay), tsvs and OVS-DPDK',
  run: (ctx) => runP2pVxlan(ctx),
};
