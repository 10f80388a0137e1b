/**
 * flows: throughput with 1, 1k, 10k, 100k distinct flows, and the flow-setup
 * rate through the exception path.
 *   generator  `tsvs testpmd --fwd txonly --flows N` (varies source IP and UDP
 *              source port), virtio-user on the switch's port 1, generator CPU
 *   switch     tsvs or OVS-DPDK on the other CPU, rule in_port=1 -> output:2
 *   sink       dpdk-testpmd rxonly, virtio-user on port 2 (forwarding lcore on
 *              the generator CPU too: the two share it)
 * Reported: the rate at the sink (what made it through) and the switch's own
 * rx rate on port 1 (what it took in; the rest of the difference is tx drops
 * when the sink, sharing the generator's CPU, is descheduled).
 * Flow setup (tsvs): a rule matching the exact source IP makes every flow its
 * own megaflow, so each new flow is an upcall; we report upcalls per second
 * (peak over 0.5 s intervals) and the datapath flow count reached.
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep } from './proc.js';
import { rate } from './stats.js';
import { DpdkTestpmd, dpdkAvailable } from './peers/dpdk.js';
import { TsvsTestpmd } from './peers/tsvs.js';
import { startSwitch, type SwitchKind, type SwitchUnderTest } from './switches.js';

const ONE_WAY = ['in_port=1,actions=output:2', 'in_port=2,actions=drop'];
/** Every packet is checked against an exact nw_src rule: source IPs are un-wildcarded. */
const PER_FLOW = ['priority=10,ip,nw_src=203.0.113.9,actions=drop', 'priority=1,in_port=1,actions=output:2', 'priority=1,in_port=2,actions=drop'];

async function sinkRx(tp: DpdkTestpmd): Promise<number> {
  return (await tp.portStats())[0]?.rxPackets ?? NaN;
}

async function waitFrames(tp: DpdkTestpmd, base: number, gen: TsvsTestpmd, what: string): Promise<void> {
  const t0 = Date.now();
  while ((await sinkRx(tp)) - base < 1000) {
    if (gen.proc.exited) throw new Error(`tsvs testpmd exited: ${gen.proc.tail(500)}`);
    if (Date.now() - t0 > 20000) throw new Error(`no frames reached the sink in 20 s (${what}); generator: ${gen.proc.tail(400)}`);
    await sleep(200);
  }
}

export async function runFlows(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('flows', 'throughput vs number of flows (tsvs testpmd --flows N -> switch -> DPDK rxonly), and flow setup rate');
  c.note(`Generator and DPDK sink share CPU ${ctx.genCpu}; switch on CPU ${ctx.swCpu}. Absolute rates are therefore capped by the generator side; compare across flow counts and subjects.`);
  const why = dpdkAvailable();
  if (why) {
    c.markUnavailable('*', why);
    return c.result();
  }
  const counts = ctx.quick ? [1, 10000] : [1, 1000, 10000, 100000];
  const subjects = wanted<SwitchKind>(ctx, ['tsvs', 'ovs-dpdk']);
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const kind of rotate(subjects, rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`flows rep ${rep + 1}/${ctx.reps}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      let sink: DpdkTestpmd | null = null;
      let gen: TsvsTestpmd | null = null;
      try {
        sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu, ONE_WAY);
        sink = await DpdkTestpmd.start({ vdevs: [`net_virtio_user0,path=${sw.socks[1]},queues=1`], lcores: `0@${ctx.swCpu},1@${ctx.genCpu}`, fwd: 'rxonly' });
        await sink.startFwd();
        for (const n of counts) {
          const base = await sinkRx(sink);
          gen = TsvsTestpmd.start({ ports: [`virtio-user:path=${sw.socks[0]}`], fwd: 'txonly', flows: n, cpu: ctx.genCpu });
          await waitFrames(sink, base, gen, `${n} flows`);
          await sleep(ctx.warmup * 1000);
          const sa = await sw.portCounters!();
          const a = await sinkRx(sink);
          const ta = performance.now();
          await sleep(ctx.seconds * 1000);
          const b = await sinkRx(sink);
          const tb = performance.now();
          const sb = await sw.portCounters!();
          const sent = (await gen.stop()).reduce((s, p) => s + p.tx_packets, 0);
          gen = null;
          await sleep(300);
          const received = (await sinkRx(sink)) - base;
          c.add(`${n} flows`, 'port1->2', kind, 'Mpps', rate(a, b, tb - ta) / 1e6, { sent, received });
          c.add(`${n} flows`, 'switch rx port 1', kind, 'Mpps', rate(sa.rx[0], sb.rx[0], tb - ta) / 1e6);
        }
        if (kind === 'tsvs' && sw.tsvs) {
          const d = sw.tsvs;
          await d.setFlows('br0', PER_FLOW);
          await sleep(700); // revalidation removes the old megaflow
          await d.cli('pmd-stats-clear');
          const n = counts[counts.length - 1];
          const base = await sinkRx(sink);
          gen = TsvsTestpmd.start({ ports: [`virtio-user:path=${sw.socks[0]}`], fwd: 'txonly', flows: n, cpu: ctx.genCpu });
          await waitFrames(sink, base, gen, 'flow setup');
          let prev = (await d.pmdStats())[0];
          let pt = performance.now();
          let peak = 0;
          const end = pt + (ctx.warmup + ctx.seconds) * 1000;
          while (performance.now() < end) {
            await sleep(500);
            const s = (await d.pmdStats())[0];
            const t = performance.now();
            peak = Math.max(peak, rate(prev.upcalls, s.upcalls, t - pt));
            prev = s;
            pt = t;
          }
          const last = (await d.pmdStats())[0];
          await gen.stop();
          gen = null;
          c.add(`${n} new flows`, 'upcalls/s (peak 0.5 s)', 'tsvs', 'k/s', peak / 1000);
          c.add(`${n} new flows`, 'datapath flows', 'tsvs', 'count', last.flows);
          c.add(`${n} new flows`, 'failed upcalls', 'tsvs', 'count', last.upcallsLost);
        }
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`flows ${kind} failed: ${errText(e)}`);
          c.markUnavailable(kind, `failed: ${errText(e)}`);
        }
      } finally {
        await gen?.proc.stop('SIGKILL', 1000);
        await sink?.quit();
        await sw?.stop();
      }
    }
  }
  c.ratio('tsvs', 'ovs-dpdk', { metric: 'port1->2', label: 'tsvs/ovs-dpdk' });
  c.ratio('tsvs', 'ovs-dpdk', { metric: 'switch rx port 1', label: 'tsvs/ovs-dpdk' });
  return c.result();
}

export const flows: Scenario = { name: 'flows', title: 'flow count and flow setup', run: runFlows };
