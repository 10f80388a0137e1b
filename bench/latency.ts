/**
 * latency: ICMP round trip between two namespaces (ping -i 0.01), through the
 * Linux bridge and through tsvs (afpacket ports, busy-polling PMD). Median and
 * p99 over all pings of a run.
 */
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, type BenchContext, type Scenario } from './common.js';
import { exec, which } from './proc.js';
import { parsePing, percentile, summarize } from './stats.js';
import { kernelAvailable } from './peers/kernel.js';
import { kernelTopology } from './kernel.js';

type LSubject = 'linux-bridge' | 'tsvs-afpacket';
const SUBJECTS: readonly LSubject[] = ['linux-bridge', 'tsvs-afpacket'];

export async function runLatency(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('latency', 'ping round trip between namespaces, µs');
  const count = ctx.quick ? 100 : Math.max(200, Math.round(ctx.seconds * 100));
  c.note(`ping -i 0.01 -c ${count} from ns A to ns B (first 5 replies excluded as warm-up: ARP, flow setup).`);
  c.markUnavailable('tsvs-vhost-user', 'not measured: needs an ICMP-capable endpoint behind a vhost-user port, i.e. a VM; under QEMU TCG the guest, not the switch, would dominate the round trip');
  const why = kernelAvailable() ?? (which('ping') ? null : 'ping is not installed');
  if (why) {
    for (const s of SUBJECTS) c.markUnavailable(s, why);
    return c.result();
  }
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const s of rotate(wanted(ctx, SUBJECTS), rep)) {
      if (c.isUnavailable(s)) continue;
      ctx.log(`latency rep ${rep + 1}/${ctx.reps}: ${s}`);
      try {
        const k = await kernelTopology(s === 'tsvs-afpacket', ctx.swCpu, 78);
        try {
          const r = await exec(['ping', '-i', '0.01', '-c', String(count + 5), '-W', '1', k.topo.ipB], { netns: k.topo.a, timeoutMs: 120000 });
          const p = parsePing(r.stdout);
          if (p.received === 0) throw new Error(`no ping replies: ${r.stdout.slice(-300)} ${r.stderr}`);
          const rtts = p.rttsMs.slice(5).map((x) => x * 1000);
          const sm = summarize(rtts);
          c.add('ping', 'rtt median', s, 'us', sm.median, { sent: p.transmitted, received: p.received });
          c.add('ping', 'rtt p99', s, 'us', percentile(rtts, 99));
        } finally {
          await k.close();
        }
      } catch (e) {
        ctx.log(`latency ${s} failed: ${errText(e)}`);
        c.fail(s, rep, errText(e));
      }
    }
  }
  c.ratio('tsvs-afpacket', 'linux-bridge', { label: 'tsvs-afpacket/linux-bridge' });
  return c.result();
}

export const latency: Scenario = { name: 'latency', title: 'round-trip latency', run: runLatency };
