/**
 * flows: how the switch's per-packet rate depends on the number of distinct
 * flows (1, 1k, 10k, 100k), and the flow-setup rate through the exception path.
 *
 *   generator  `tsvs testpmd --fwd txonly --flows N` (varies source IP and UDP
 *              source port), virtio-user on the switch's port 1, alone on the
 *              generator CPU (about 4 Mpps of 64 B frames here, faster than
 *              either switch, so the switch is the bottleneck)
 *   switch     tsvs or OVS-DPDK on the other CPU, rule in_port=1 -> output:2;
 *              port 2 is a vhost-user port with no frontend connected, so the
 *              output is a cheap link-down drop in both switches: what is
 *              measured is rx + flow lookup (EMC / megaflow / upcall) + action.
 * A receiving sink would have to share a CPU with the generator (2 CPUs), which
 * made the generator, not the switch, the bottleneck.
 * Rate = packets received by the switch's PMD (tsvs pmd-stats, OVS
 * pmd-stats-show) over the window.
 *
 * Flow setup (tsvs): a rule matching an exact source IP makes every flow its
 * own megaflow, so each new flow is an upcall; 100k new flows are offered and we
 * report upcalls per second (peak sampling interval, and average until 95% of
 * the flows are installed), the datapath flow count reached and the failed
 * (dropped, later retried) upcalls.
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { sleep } from './proc.js';
import { rate } from './stats.js';
import { TsvsTestpmd, type TsvsDaemon } from './peers/tsvs.js';
import { startSwitch, type SwitchKind, type SwitchUnderTest } from './switches.js';
import { parsePmdStatsShow } from './peers/ovs.js';

const ONE_WAY = ['in_port=1,actions=output:2', 'in_port=2,actions=drop'];
/** Every packet is checked against an exact nw_src rule: source IPs are un-wildcarded. */
const PER_FLOW = ['priority=10,ip,nw_src=203.0.113.9,actions=drop', 'priority=1,in_port=1,actions=output:2', 'priority=1,in_port=2,actions=drop'];

async function waitRx(sw: SwitchUnderTest, base: number, gen: TsvsTestpmd, what: string): Promise<void> {
  const t0 = Date.now();
  while ((await sw.pmdRx!()) - base < 1000) {
    if (gen.proc.exited) throw new Error(`tsvs testpmd exited: ${gen.proc.tail(500)}`);
    if (Date.now() - t0 > 20000) throw new Error(`the switch received no frames in 20 s (${what}); generator: ${gen.proc.tail(400)}`);
    await sleep(200);
  }
}

const SETUP_FLOWS = 100000;

/**
 * Flow setup through tsvs's exception path: per-flow megaflows (PER_FLOW rules),
 * SETUP_FLOWS new flows offered; pmd-stats sampled every ~0.1 s until the
 * datapath flow count stops growing for 1 s.
 */
async function flowSetup(d: TsvsDaemon, sw: SwitchUnderTest, ctx: BenchContext): Promise<{ peak: number; avg: number; flows: number; lost: number }> {
  await d.setFlows('br0', PER_FLOW);
  await sleep(700); // revalidation removes the old megaflow
  await d.cli('pmd-stats-clear');
  const base = (await d.pmdStats())[0];
  const gen = TsvsTestpmd.start({ ports: [`virtio-user:path=${sw.socks[0]}`], fwd: 'txonly', flows: SETUP_FLOWS, cpu: ctx.genCpu });
  try {
    const samples: { t: number; upcalls: number; flows: number; lost: number }[] = [{ t: performance.now(), upcalls: base.upcalls, flows: base.flows, lost: base.upcallsLost }];
    const t0 = performance.now();
    let stable = 0;
    while (performance.now() - t0 < 30000 && stable < 10) {
      if (gen.proc.exited) throw new Error(`tsvs testpmd exited: ${gen.proc.tail(500)}`);
      await sleep(100);
      const s = (await d.pmdStats())[0];
      const last = samples[samples.length - 1];
      samples.push({ t: performance.now(), upcalls: s.upcalls, flows: s.flows, lost: s.upcallsLost });
      stable = s.flows > 0 && s.flows === last.flows && s.upcalls > base.upcalls ? stable + 1 : 0;
    }
    let peak = 0;
    for (let i = 1; i < samples.length; i++) peak = Math.max(peak, rate(samples[i - 1].upcalls, samples[i].upcalls, samples[i].t - samples[i - 1].t));
    const end = samples[samples.length - 1];
    const first = samples.find((x) => x.upcalls > base.upcalls) ?? end;
    const at95 = samples.find((x) => x.flows >= 0.95 * end.flows) ?? end;
    // the interval before the first sample with upcalls also carried some of them
    const startT = samples[Math.max(0, samples.indexOf(first) - 1)].t;
    const avg = at95.t > startT ? ((at95.flows - base.flows) * 1000) / (at95.t - startT) : NaN;
    return { peak, avg, flows: end.flows, lost: end.lost - base.upcallsLost };
  } finally {
    await gen.stop().catch(() => undefined);
  }
}

export async function runFlows(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('flows', 'switch rx rate vs number of flows (tsvs testpmd --flows N -> switch), and flow setup rate');
  c.note(`Generator alone on CPU ${ctx.genCpu}; switch on CPU ${ctx.swCpu}; the output port has no frontend (link-down drop), see bench/flows.ts.`);
  const counts = ctx.counts ?? (ctx.quick ? [1, 10000] : [1, 1000, 10000, 100000]);
  const subjects = wanted<SwitchKind>(ctx, ['tsvs', 'ovs-dpdk']);
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const kind of rotate(subjects, rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`flows rep ${rep + 1}/${ctx.reps}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      let gen: TsvsTestpmd | null = null;
      try {
        sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu, ONE_WAY);
        for (const n of rotate(counts, rep)) {
          const base = await sw.pmdRx!();
          gen = TsvsTestpmd.start({ ports: [`virtio-user:path=${sw.socks[0]}`], fwd: 'txonly', flows: n, cpu: ctx.genCpu });
          await waitRx(sw, base, gen, `${n} flows`);
          // the first run after the switch starts also pays for first-touch page faults of the shared memory
          await sleep((ctx.warmup + (n === rotate(counts, rep)[0] ? 2 : 0)) * 1000);
          const a = await sw.pmdRx!();
          const ta = performance.now();
          await sleep(ctx.seconds * 1000);
          const b = await sw.pmdRx!();
          const tb = performance.now();
          await gen.stop();
          gen = null;
          c.add(`${n} flows`, 'switch rx', kind, 'Mpps', rate(a, b, tb - ta) / 1e6);
        }
        if (kind === 'tsvs' && sw.tsvs) {
          const m = await flowSetup(sw.tsvs, sw, ctx);
          const cs = `${SETUP_FLOWS} new flows`;
          c.add(cs, 'upcalls/s (peak interval)', 'tsvs', 'k/s', m.peak / 1000);
          c.add(cs, 'upcalls/s (average to 95% installed)', 'tsvs', 'k/s', m.avg / 1000);
          c.add(cs, 'datapath flows reached', 'tsvs', 'count', m.flows);
          c.add(cs, 'failed upcalls', 'tsvs', 'count', m.lost);
        }
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`flows ${kind} failed: ${errText(e)}`);
          c.fail(kind, rep, errText(e));
        }
      } finally {
        await gen?.proc.stop('SIGKILL', 1000);
        await sw?.stop();
      }
    }
  }
  c.ratio('tsvs', 'ovs-dpdk', { metric: 'switch rx', label: 'tsvs/ovs-dpdk' });
  return c.result();
}

export const flows: Scenario = { name: 'flows', title: 'flow count and flow setup', run: runFlows };

/** Counters of the exception path: upcalls, datapath flows, misses dropped. */
interface SetupCounters { upcalls: number; flows: number; lost: number }

async function setupCounters(sw: SwitchUnderTest): Promise<SetupCounters> {
  if (sw.tsvs) {
    const ps = await sw.tsvs.pmdStats();
    return { upcalls: ps.reduce((a, p) => a + p.upcalls, 0), flows: ps.reduce((a, p) => a + p.flows, 0), lost: ps.reduce((a, p) => a + p.upcallsLost, 0) };
  }
  const o = sw.ovs!;
  const st = parsePmdStatsShow(await o.pmdStats());
  const m = /flows:\s*(\d+)/.exec(await o.appctl('dpctl/show'));
  return { upcalls: st.upcalls, flows: m ? Number(m[1]) : NaN, lost: st.failedUpcalls };
}

/**
 * flowsetup: new megaflows per second through the exception path, tsvs and
 * OVS-DPDK side by side in the same run (interleaved). Both get the PER_FLOW
 * rules (an exact nw_src rule makes the source address part of every
 * megaflow); OVS's prefix tracking is turned off for the table (prefixes=none),
 * otherwise its megaflows would wildcard most of the source address and it
 * would install a handful instead of one per source. The generator offers
 * SETUP_FLOWS flows (`tsvs testpmd --flows`, about 4 Mpps); sampled every
 * ~0.1 s (tsvs: a control request from the bench process, no CLI start; OVS:
 * ovs-appctl) until the flow count stops growing for 1 s (or 30 s). Reported: the average
 * setup rate to 95% of the flows reached, the peak interval, the flows reached
 * and the misses dropped (tsvs: past its upcall queue, their flows are still set up).
 */
export async function runFlowSetup(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('flowsetup', `flow setup through the exception path: ${SETUP_FLOWS} new flows offered, new megaflows per second`);
  c.note(`Generator (tsvs testpmd txonly --flows ${SETUP_FLOWS}) alone on CPU ${ctx.genCpu}; switch on CPU ${ctx.swCpu}; rules ${PER_FLOW.join(' ; ')}; OVS with Flow_Table prefixes=none (see bench/flows.ts).`);
  const subjects = wanted<SwitchKind>(ctx, ['tsvs', 'ovs-dpdk']);
  const cs = `${SETUP_FLOWS / 1000}k new flows`;
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const kind of rotate(subjects, rep)) {
      if (c.isUnavailable(kind)) continue;
      ctx.log(`flowsetup rep ${rep + 1}/${ctx.reps}: ${kind}`);
      let sw: SwitchUnderTest | null = null;
      let gen: TsvsTestpmd | null = null;
      try {
        sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu, PER_FLOW);
        if (sw.ovs) await sw.ovs.vsctl('--', '--id=@ft', 'create', 'Flow_Table', 'prefixes=none', '--', 'set', 'Bridge', 'br0', 'flow_tables:0=@ft');
        const base = await setupCounters(sw);
        gen = TsvsTestpmd.start({ ports: [`virtio-user:path=${sw.socks[0]}`], fwd: 'txonly', flows: SETUP_FLOWS, cpu: ctx.genCpu });
        const samples: (SetupCounters & { t: number })[] = [{ t: performance.now(), ...base }];
        const t0 = performance.now();
        let stable = 0;
        while (performance.now() - t0 < 30000 && stable < 10) {
          if (gen.proc.exited) throw new Error(`tsvs testpmd exited: ${gen.proc.tail(500)}`);
          await sleep(100);
          const s = await setupCounters(sw);
          const last = samples[samples.length - 1];
          samples.push({ t: performance.now(), ...s });
          stable = s.flows > base.flows && s.flows === last.flows ? stable + 1 : 0;
        }
        let peak = 0;
        for (let i = 1; i < samples.length; i++) peak = Math.max(peak, rate(samples[i - 1].flows, samples[i].flows, samples[i].t - samples[i - 1].t));
        const end = samples[samples.length - 1];
        const first = samples.findIndex((x) => x.flows > base.flows);
        const at95 = samples.find((x) => x.flows - base.flows >= 0.95 * (end.flows - base.flows)) ?? end;
        const startT = samples[Math.max(0, first - 1)].t;
        const avg = at95.t > startT ? ((at95.flows - base.flows) * 1000) / (at95.t - startT) : NaN;
        c.add(cs, 'new megaflows/s (average to 95% reached)', kind, 'k/s', avg / 1000);
        // the middle of the setup, 5% to 95% of the flows reached: without the generator's start and the first
        // sampling interval (linear interpolation between samples)
        const at = (frac: number): number => {
          const goal = base.flows + frac * (end.flows - base.flows);
          const k = samples.findIndex((x) => x.flows >= goal);
          if (k <= 0) return NaN;
          const a = samples[k - 1], b = samples[k];
          return a.t + ((b.t - a.t) * (goal - a.flows)) / (b.flows - a.flows);
        };
        const t5 = at(0.05), t95 = at(0.95);
        c.add(cs, 'new megaflows/s (5% to 95% reached)', kind, 'k/s', t95 > t5 ? (0.9 * (end.flows - base.flows)) / (t95 - t5) : NaN);
        c.add(cs, 'new megaflows/s (peak interval)', kind, 'k/s', peak / 1000);
        c.add(cs, 'datapath flows reached', kind, 'count', end.flows - base.flows);
        c.add(cs, 'misses dropped (failed upcalls)', kind, 'count', end.lost - base.lost);
        c.add(cs, 'upcalls', kind, 'count', end.upcalls - base.upcalls);
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
        else {
          ctx.log(`flowsetup ${kind} failed: ${errText(e)}`);
          c.fail(kind, rep, errText(e));
        }
      } finally {
        await gen?.stop().catch(() => undefined);
        await gen?.proc.stop('SIGKILL', 1000);
        await sw?.stop();
      }
    }
  }
  c.ratio('tsvs', 'ovs-dpdk', { metric: 'new megaflows/s (average to 95% reached)', label: 'tsvs/ovs-dpdk' });
  return c.result();
}

export const flowsetup: Scenario = { name: 'flowsetup', title: 'flow setup rate, tsvs and OVS-DPDK', run: runFlowSetup };
