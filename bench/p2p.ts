/**
 * p2p: one DPDK testpmd with two net_virtio_user ports (forwarding lcore on the
 * generator CPU) <-> switch under test on the other CPU, rules 1->2 and 2->1.
 *
 * One testpmd cannot run txonly on one port and rxonly on the other, so the
 * traffic is a primed io loop (the OVS/DPDK "PVP loopback" shape without a VM):
 *   1. prime: txonly for a moment (on port 0 only for "oneway", on both for
 *      "bidir"); frames of the case's size fill the rings;
 *   2. io: testpmd forwards port 1 rx -> port 0 tx and port 0 rx -> port 1 tx,
 *      so each frame crosses the switch again and again; with every ring full,
 *      the loop runs at the rate of its slowest stage;
 *   3. measure testpmd's rx counters over `seconds` after `warmup`: rx on
 *      port 1 = switch direction 1->2, rx on port 0 = direction 2->1;
 *   4. drain: rxonly until quiet; loss = frames testpmd sent in io mode minus
 *      frames it received back (io + drain), i.e. what the switch dropped.
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, FRAME_SIZES, type BenchContext, type Scenario } from './common.js';
import { sleep, rssKiB } from './proc.js';
import { rate } from './stats.js';
import { DpdkTestpmd } from './peers/dpdk.js';
import { tryProbe, linkAfter, type LinkProbe } from './cpu-link.js';
import { startSwitch, SWITCH_KINDS, ONE_COPY_KINDS, type SwitchKind, type SwitchUnderTest } from './switches.js';

export type LoopVariant = 'oneway' | 'bidir' | 'txfirst';

export interface LoopMeasurement {
  /** Mpps switch port 1 -> 2 (received on testpmd port 1). */
  mpps12: number;
  /** Mpps switch port 2 -> 1 (received on testpmd port 0). */
  mpps21: number;
  sent: number;
  received: number;
}

/** Start the generator testpmd with two virtio-user ports on the switch's sockets. */
export async function startLoopGenerator(sw: SwitchUnderTest, genCpu: number, swCpu: number): Promise<DpdkTestpmd> {
  return DpdkTestpmd.start({
    vdevs: [`net_virtio_user0,path=${sw.socks[0]},queues=1`, `net_virtio_user1,path=${sw.socks[1]},queues=1`],
    lcores: `0@${swCpu},1@${genCpu}`,
    fwd: 'io',
    // testpmd drains (and discards) rx queues on every start by default: that would empty the primed loop
    extra: ['--no-flush-rx'],
  });
}

/**
 * Wait until frames make it through the switch both ways (a vhost-user device
 * may take seconds to become ready after the frontend connects: OVS faults in
 * the frontend's memory first). Probes with short primed io runs.
 */
export async function waitLoopReady(gen: DpdkTestpmd, timeoutMs = 30000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const m = await measureLoop(gen, { size: 64, variant: 'bidir', warmup: 0, seconds: 0.2 });
    if (m.mpps12 > 0 && m.mpps21 > 0) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`no frames came back through the switch within ${timeoutMs / 1000} s`);
    await sleep(500);
  }
}

/** One primed io-loop run (see the file comment). */
export async function measureLoop(gen: DpdkTestpmd, o: { size: number; variant: LoopVariant; warmup: number; seconds: number }): Promise<LoopMeasurement> {
  await gen.setTxpkts(o.size);
  if (o.variant === 'txfirst') {
    // the io-loop shape users run by hand: io forwarding started with `start tx_first` (one burst of
    // 32 per port), counters read after the warm-up over a fixed window
    await gen.cmd('set portlist 0,1');
    await gen.setFwd('io');
    await gen.startFwd({ txFirst: 1 });
  } else {
    await gen.cmd(o.variant === 'oneway' ? 'set portlist 0' : 'set portlist 0,1');
    await gen.setFwd('txonly');
    await gen.startFwd();
    await sleep(50);
    await gen.stopFwd();
    await gen.cmd('set portlist 0,1');
    await gen.setFwd('io');
    await gen.startFwd();
  }
  await sleep(o.warmup * 1000);
  const a = await gen.portStats();
  const ta = performance.now();
  await sleep(o.seconds * 1000);
  const b = await gen.portStats();
  const tb = performance.now();
  const io = await gen.stopFwd();
  await gen.setFwd('rxonly');
  await gen.startFwd();
  await sleep(300);
  const dr = await gen.stopFwd();
  const p = (s: typeof a, n: number) => s.find((x) => x.port === n)!;
  if (a.length < 2 || b.length < 2) throw new Error('testpmd did not report two ports');
  const ms = tb - ta;
  const port = (st: typeof io, n: number) => st.ports.find((x) => x.port === n) ?? { rxPackets: 0, txPackets: 0, rxDropped: 0, txDropped: 0, port: n };
  let sent: number;
  let received: number;
  if (o.variant === 'oneway') {
    sent = port(io, 0).txPackets;
    received = port(io, 1).rxPackets + port(dr, 1).rxPackets;
  } else {
    sent = io.total.txPackets;
    received = io.total.rxPackets + dr.total.rxPackets;
  }
  return {
    mpps12: rate(p(a, 1).rxPackets, p(b, 1).rxPackets, ms) / 1e6,
    mpps21: rate(p(a, 0).rxPackets, p(b, 0).rxPackets, ms) / 1e6,
    sent,
    received,
  };
}

export async function runP2p(ctx: BenchContext, o: { sizes?: number[]; variants?: LoopVariant[]; subjects?: SwitchKind[]; name?: string; title?: string } = {}): Promise<ScenarioResult> {
  const c = new Collector(o.name ?? 'p2p', o.title ?? 'DPDK testpmd (2x virtio-user, io loop) <-> switch (2x vhost-user), Mpps per direction');
  const sizes = o.sizes ?? ctx.sizes ?? (ctx.quick ? [64, 1518] : [...FRAME_SIZES]);
  const variants = o.variants ?? ctx.variants ?? ['oneway', 'bidir', 'txfirst'];
  // the one-copy A/B kinds only when named
  const subjects = o.subjects ? wanted(ctx, o.subjects) : ctx.only && ctx.only.length ? wanted(ctx, [...SWITCH_KINDS, ...ONE_COPY_KINDS]) : [...SWITCH_KINDS];
  c.note('Traffic: one dpdk-testpmd (forwarding lcore pinned to the generator CPU) with two net_virtio_user ports; primed io loop (see bench/p2p.ts). "oneway" primes port 0 only, so frames cross the switch 1->2 only; "bidir" primes both; "txfirst" is the plain io loop started with `start tx_first` (32 frames per port in flight).');
  c.note(`Switch under test pinned to CPU ${ctx.swCpu}; generator forwarding on CPU ${ctx.genCpu}.`);
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const kind of rotate(subjects, rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`p2p rep ${rep + 1}/${ctx.reps}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      let gen: DpdkTestpmd | null = null;
      // rows of this run, kept until the CPU link is probed again after it (see bench/cpu-link.ts)
      const rows: { cs: string; metric: string; v: number; counts?: { sent: number; received: number } }[] = [];
      const add = (cs: string, metric: string, v: number, counts?: { sent: number; received: number }) => rows.push({ cs, metric, v, counts });
      let linkBefore: LinkProbe | null = null;
      try {
        linkBefore = await tryProbe(ctx.swCpu, ctx.genCpu);
        sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu);
        gen = await startLoopGenerator(sw, ctx.genCpu, ctx.swCpu);
        await waitLoopReady(gen);
        // first-touch page faults of the shared memory and JIT warm-up: not part of any case
        await measureLoop(gen, { size: 64, variant: 'bidir', warmup: 0, seconds: 2 });
        for (const variant of variants) {
          for (const size of sizes) {
            const m = await measureLoop(gen, { size, variant, warmup: ctx.warmup, seconds: ctx.seconds });
            const cs = `${size}B ${variant}`;
            if (m.mpps12 === 0 && m.mpps21 === 0) throw new Error(`no frames came back through ${kind} (${cs}); generator: ${gen.proc.tail(600)}`);
            const counts = { sent: m.sent, received: m.received };
            add(cs, 'port1->2', m.mpps12, counts);
            if (variant !== 'oneway') {
              add(cs, 'port2->1', m.mpps21);
              add(cs, 'sum', m.mpps12 + m.mpps21);
            }
          }
        }
        const rss = rssKiB(sw.pid);
        if (rss) c.add('after load', 'switch VmRSS', kind, 'MiB', rss.vmRss / 1024);
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`p2p ${kind} failed: ${errText(e)}`);
          c.fail(kind, rep, errText(e));
        }
      } finally {
        await gen?.quit();
        await sw?.stop();
      }
      // every run counts in the plain rows; runs with the two CPUs near each other before and after
      // count again in the "(near CPUs)" rows, which compare like with like
      const link = await linkAfter(ctx.swCpu, ctx.genCpu, linkBefore);
      for (const r of rows) {
        c.add(r.cs, r.metric, kind, 'Mpps', r.v, r.counts);
        if (link.near) c.add(r.cs, `${r.metric} (near CPUs)`, kind, 'Mpps', r.v);
      }
      c.note(`rep ${rep + 1} ${kind}: ${link.text}`);
    }
  }
  c.ratio('tsvs', 'ovs-dpdk', { label: 'tsvs/ovs-dpdk' });
  c.ratio('tsvs', 'dpdk-testpmd', { label: 'tsvs/dpdk-testpmd' });
  c.ratio('ovs-dpdk', 'dpdk-testpmd', { label: 'ovs-dpdk/dpdk-testpmd' });
  return c.result();
}

export const p2p: Scenario = { name: 'p2p', title: 'vhost-user port-to-port', run: (ctx) => runP2p(ctx) };
