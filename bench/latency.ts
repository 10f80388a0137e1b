/**
 * latency: round-trip time through a switch, median and p99 over a run.
 *
 *   vhost-user path (tsvs, ovs-dpdk, dpdk-testpmd; bench/switches.ts, rules
 *   1->2 and 2->1): bench/tools/vu-latency.ts, one process on the generator
 *   CPU with two of our virtio-user ports on the switch's two vhost-user
 *   sockets. Port A sends UDP probes, port B echoes them (MACs swapped), A
 *   times the round trip: two switch traversals plus the tool's own polling.
 *   Loads: "idle" (one probe in flight, the next 20 µs after the reply) and
 *   "medium" (the same probes inside a paced background stream A->B, echoed by
 *   B, so the switch forwards that rate in each direction). Same tool, same
 *   frames, same rates for every switch. dpdk-testpmd (io forwarding, no
 *   flow lookup) is the floor of what a switch adds.
 *
 *   kernel path (linux-bridge, tsvs-afpacket): ICMP between two namespaces
 *   (ping -i 0.01), through the Linux bridge and through tsvs's afpacket ports.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { exec, which, Proc } from './proc.js';
import { parsePing, percentile, summarize } from './stats.js';
import { kernelAvailable } from './peers/kernel.js';
import { kernelTopology } from './kernel.js';
import { startSwitch, type SwitchKind, type SwitchUnderTest } from './switches.js';
import { sessionOf } from './sched.js';
import { probeCpuLink, linkAfter, FAR_LINK_NS } from './cpu-link.js';
import { parseVuLatency, runProblems, VALID, type LoadLevel } from './tools/vu-latency-lib.js';
import { formatLoopGaps } from '../src/daemon/switch.js';

type PingSubject = 'linux-bridge' | 'tsvs-afpacket';
type LSubject = PingSubject | SwitchKind;
const PING_SUBJECTS: readonly PingSubject[] = ['linux-bridge', 'tsvs-afpacket'];
const VHOST_SUBJECTS: readonly SwitchKind[] = ['tsvs', 'ovs-dpdk', 'dpdk-testpmd'];
const SUBJECTS: readonly LSubject[] = [...VHOST_SUBJECTS, ...PING_SUBJECTS];

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/bench/tools/vu-latency.js (this file is dist/bench/latency.js). */
const VU_LATENCY = path.resolve(here, 'tools/vu-latency.js');

/** Probe policy and load of the vhost-user rows (the same for every switch). */
const GAP_US = 20;
const MEDIUM_MPPS = 0.5;
const FRAME = 64;
const TIMEOUT_MS = 5;

export interface ThreadSample {
  /** CPU time (clock ticks, utime + stime). */
  cpu: number;
  /** Involuntary context switches. */
  preempted: number;
  /** Thread name (comm). */
  name?: string;
}

/** Per thread of a process: CPU time and involuntary context switches so far (empty if it is gone). */
export function threadSamples(pid: number): Map<string, ThreadSample> {
  const res = new Map<string, ThreadSample>();
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return res;
  }
  for (const t of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      // fields after the parenthesised command: state is field 3, utime 14, stime 15
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const st = /^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8'));
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      res.set(t, { cpu: Number(f[11]) + Number(f[12]), preempted: st ? Number(st[1]) : NaN, name });
    } catch {
      /* thread ended */
    }
  }
  return res;
}

/** Involuntary context switches, between two samples, of the thread that used the most CPU (the PMD thread of a busy-polling switch). */
export function busiestThreadPreemptions(a: Map<string, ThreadSample>, b: Map<string, ThreadSample>): number {
  let best = -1;
  let pre = NaN;
  for (const [t, y] of b) {
    const x = a.get(t) ?? { cpu: 0, preempted: 0 };
    if (y.cpu - x.cpu > best) {
      best = y.cpu - x.cpu;
      pre = y.preempted - x.preempted;
    }
  }
  return pre;
}

/**
 * CPU time between two samples of the switch's threads other than the busiest (the PMD thread), by
 * thread name: with the whole switch on the PMD's CPU, the time they took from it.
 */
export function otherThreadsText(a: Map<string, ThreadSample>, b: Map<string, ThreadSample>, pid: number): string {
  let best = '';
  let bestCpu = -1;
  const byName = new Map<string, number>();
  for (const [t, y] of b) {
    const d = y.cpu - (a.get(t)?.cpu ?? 0);
    if (d > bestCpu) {
      bestCpu = d;
      best = t;
    }
  }
  let total = 0;
  for (const [t, y] of b) {
    if (t === best) continue;
    const d = y.cpu - (a.get(t)?.cpu ?? 0);
    if (d <= 0) continue;
    total += d;
    // the main thread by its role (a Node process's threads are all called "node")
    const name = t === String(pid) ? `main thread (${y.name ?? '?'})` : (y.name ?? t);
    byName.set(name, (byName.get(name) ?? 0) + d);
  }
  const hz = 100;
  const top = [...byName].sort((x, y) => y[1] - x[1]).slice(0, 4).map(([n, d]) => `${n} ${(d / hz).toFixed(2)} s`);
  return `the switch's other threads used ${(total / hz).toFixed(2)} CPU s${top.length ? ` (${top.join(', ')})` : ''}`;
}

/** CPU time so far (clock ticks) and command of every process on the machine. */
export function processTicks(): Map<number, { comm: string; ticks: number; sid: number }> {
  const res = new Map<number, { comm: string; ticks: number; sid: number }>();
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x));
  } catch {
    return res;
  }
  for (const p of pids) {
    try {
      const st = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const r = st.lastIndexOf(')');
      const f = st.slice(r + 2).split(' ');
      // after the command: state 3, session 6, utime 14, stime 15, cutime 16, cstime 17 (fields counted from 1)
      res.set(Number(p), { comm: st.slice(st.indexOf('(') + 1, r), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]), sid: Number(f[3]) });
    } catch {
      /* gone */
    }
  }
  return res;
}

/**
 * Who else used the CPUs between two samples: processes outside `ourSid` (the benchmark's
 * session) with their CPU seconds, most first (processes that started and ended in between are
 * not seen; their parents' cutime/cstime count them when they were reaped).
 */
export function othersText(a: Map<number, { comm: string; ticks: number; sid: number }>, b: Map<number, { comm: string; ticks: number; sid: number }>, ourSid: number, hz = 100): string {
  const use: { comm: string; pid: number; s: number }[] = [];
  let total = 0;
  for (const [pid, y] of b) {
    if (y.sid === ourSid) continue;
    const d = (y.ticks - (a.get(pid)?.ticks ?? 0)) / hz;
    if (d <= 0) continue;
    total += d;
    use.push({ comm: y.comm, pid, s: d });
  }
  use.sort((x, y) => y.s - x.s);
  const top = use.slice(0, 3).filter((u) => u.s >= 0.05).map((u) => `${u.comm} ${u.pid} ${u.s.toFixed(2)} s`);
  return `other sessions used ${total.toFixed(2)} CPU s${top.length ? ` (${top.join(', ')})` : ''}`;
}

const isPing = (s: LSubject): s is PingSubject => (PING_SUBJECTS as readonly string[]).includes(s);

/** Extra attempts of a repetition with an invalid level, per scenario run (bounds the time a disturbed machine costs). */
const RETRIES = 3;

/** One switch, one vu-latency run with both load levels (order alternating by rep); returns whether every level was valid. */
async function vhostUserRep(ctx: BenchContext, c: Collector, kind: SwitchKind, rep: number): Promise<boolean> {
  let sw: SwitchUnderTest | null = null;
  let tool: Proc | null = null;
  const linkBefore = await probeCpuLink(ctx.swCpu, ctx.genCpu);
  try {
    sw = await startSwitch(kind, ctx.swCpu, ctx.genCpu);
    const loads: LoadLevel[] = rep % 2 === 0 ? ['idle', 'medium'] : ['medium', 'idle'];
    const th0 = threadSamples(sw.pid);
    const others0 = processTicks();
    const pmd0 = sw.tsvs ? (await sw.tsvs.pmdStats().catch(() => []))[0] : undefined;
    tool = new Proc(
      [
        // performance.now() allocates (~80 MB/s of young garbage in this loop): big young generation, so scavenges (~0.3 ms) are rare
        process.execPath, '--max-semi-space-size=64', '--min-semi-space-size=64', VU_LATENCY, '--a', sw.socks[0], '--b', sw.socks[1], '--load', loads.join(','),
        '--seconds', String(ctx.seconds), '--warmup', String(ctx.warmup), '--gap-us', String(GAP_US),
        '--rate-mpps', String(MEDIUM_MPPS), '--size', String(FRAME), '--timeout-ms', String(TIMEOUT_MS),
      ],
      { cpus: [ctx.genCpu] },
    );
    const limitMs = 60000 + 2 * (ctx.seconds + ctx.warmup) * 1000;
    const timer = setTimeout(() => void tool?.stop('SIGKILL', 0), limitMs);
    await tool.wait();
    clearTimeout(timer);
    const th1 = threadSamples(sw.pid);
    const preempted = busiestThreadPreemptions(th0, th1);
    const otherThreads = otherThreadsText(th0, th1, sw.pid);
    // tsvs: where its PMD loop stopped while the tool ran (its warm-ups and both levels)
    let pmdGaps = '';
    if (sw.tsvs) {
      try {
        const p = (await sw.tsvs.pmdStats())[0];
        if (p?.loopGaps) {
          const g = p.loopGaps.map((v, i) => v - (pmd0?.loopGaps?.[i] ?? 0));
          const turns = (p.loopTurns ?? 0) - (pmd0?.loopTurns ?? 0);
          pmdGaps = `; while the tool ran, PMD loop gaps (µs) ${formatLoopGaps(g)} and ${turns} event-loop turns`;
        }
      } catch {
        /* the note goes without it */
      }
    }
    const others = othersText(others0, processTicks(), sessionOf());
    if (tool.exitCode !== 0) throw new Error(`vu-latency exited (${tool.exitCode ?? tool.exitSignal}): ${tool.tail(600)}`);
    const res = parseVuLatency(tool.output);
    if (res.length !== loads.length) throw new Error(`vu-latency printed ${res.length} results, expected ${loads.length}: ${tool.tail(600)}`);
    // a probe crosses between the CPUs several times: its round trip follows the CPU link (bench/cpu-link.ts)
    const stopping = sw;
    sw = null;
    await stopping.stop();
    const link = await linkAfter(ctx.swCpu, ctx.genCpu, linkBefore);
    const per: string[] = [];
    let valid = true;
    for (const r of res) {
      const cs = `vhost-user ${r.load}`;
      if (r.probes === 0 || !Number.isFinite(r.median_us)) throw new Error(`${cs}: no probe came back (${r.probes} sent, ${r.lost} lost)`);
      const problems = runProblems(r, GAP_US);
      if (problems.length) {
        valid = false;
        // not a measurement of this load: the row says so instead of taking the number
        const why = `run ${rep + 1}: ${problems.join('; ')}`;
        c.invalid(cs, 'rtt median', kind, 'us', why);
        c.invalid(cs, 'rtt p99', kind, 'us', why);
        if (r.load === 'medium') c.invalid(cs, 'background back at A', kind, 'Mpps', why);
      } else {
        c.add(cs, 'rtt median', kind, 'us', r.median_us, { sent: r.probes, received: r.probes - r.lost });
        c.add(cs, 'rtt p99', kind, 'us', r.p99_us);
        if (link.near) {
          c.add(cs, 'rtt median (near CPUs)', kind, 'us', r.median_us);
          c.add(cs, 'rtt p99 (near CPUs)', kind, 'us', r.p99_us);
        }
        if (r.load === 'medium') c.add(cs, 'background back at A', kind, 'Mpps', r.rate_mpps, { sent: r.bg_sent, received: r.bg_sent - r.bg_lost });
      }
      let t = `${r.load}${problems.length ? ' (INVALID)' : ''}: median ${r.median_us.toFixed(2)} µs, p99 ${r.p99_us.toFixed(1)} µs, p99.9 ${r.p999_us.toFixed(1)} µs, max ${r.max_us.toFixed(0)} µs, ${r.probes} probes, tool stalls ${r.tool_stalls} (${r.tool_stall_ms.toFixed(1)} ms, ${r.tainted} probes untimed)`;
      if (r.load === 'medium') {
        t += `, background ${r.rate_mpps.toFixed(3)} of ${r.target_mpps} Mpps`;
        if (r.pacing_resets > 0) t += `, pacing restarted ${r.pacing_resets}x`;
      }
      if (r.tx_refused > 0) t += `, ${r.tx_refused} frames the tool could not send (virtqueue full: the switch was not consuming)`;
      if (r.bad > 0) t += `, ${r.bad} unexpected frames back (stale, duplicate or corrupted)`;
      per.push(t);
    }
    c.note(`${kind} run ${rep + 1}: ${per.join('; ')}; switch's busiest (PMD) thread preempted ${preempted} times, ${otherThreads}${pmdGaps}; ${link.text}; during the run ${others}; load average ${os.loadavg()[0].toFixed(2)}.`);
    return valid;
  } finally {
    await tool?.stop('SIGTERM', 2000);
    await sw?.stop();
  }
}

async function pingRep(ctx: BenchContext, c: Collector, s: PingSubject, count: number): Promise<void> {
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
}

export async function runLatency(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('latency', 'round-trip latency, µs: vhost-user path (tsvs vs OVS-DPDK vs testpmd) and kernel path (ping)');
  const count = ctx.quick ? 100 : Math.max(200, Math.round(ctx.seconds * 100));
  c.note(
    `vhost-user rows: bench/tools/vu-latency.ts (our virtio-user PMD, one thread) pinned to CPU ${ctx.genCpu}, switch on CPU ${ctx.swCpu}. ` +
      `Port A -> switch -> port B (echo, MACs swapped) -> switch -> port A: each round trip is two switch traversals plus the tool's own polling ` +
      `(A tx, B rx+tx, A rx) on the other CPU, the same for every switch. ${FRAME} B UDP frames; one probe in flight, the next ${GAP_US} µs after its reply ` +
      `(or ${TIMEOUT_MS} ms without one; late replies still count). "idle": probes only. "medium": plus a clock-paced background stream of ` +
      `${MEDIUM_MPPS} Mpps A->B, echoed by B (${MEDIUM_MPPS} Mpps through the switch each way); only probes timed. ` +
      `${ctx.warmup} s warm-up excluded, ${ctx.seconds} s measured per level; loss = probes never answered. dpdk-testpmd is an io forwarder (no flow lookup): the floor. ` +
      `Busy-polling peers on a shared 2-CPU machine: anything else running preempts the switch or the tool for milliseconds, which lands in p99 ` +
      `(median across runs tames it); each run's note gives the tool's own stalls (loop iterations > 20 µs) and the switch PMD thread's preemptions; ` +
      `a probe whose round trip a stall of the tool overlapped is not timed (the tool held it, not the switch; counted as "untimed"). ` +
      `A run is invalid (kept out of the rows, its reason listed) when the background back at A falls below ${VALID.minRateFraction * 100}% of its rate, ` +
      `the tool stalled for more than ${VALID.maxStallFraction * 100}% of the window or left more than ${VALID.maxTaintedFraction * 100}% of the probes untimed, ` +
      `or it sent fewer than ${VALID.minProbeFraction * 100}% of the probes the policy allows; such a repetition is run again (at most ${RETRIES} times per scenario). ` +
      `The rows "(near CPUs)" hold the valid runs with the two CPUs near each other (cache-line round trip < ${FAR_LINK_NS} ns) before and after: ` +
      `the host moves the vCPUs between near and far cores, and a probe crosses between them several times per round trip. The bench runs in a session of its own with autogroup nice ` +
      `TSVS_BENCH_AUTOGROUP_NICE (default -19; see bench/sched.ts: with autogroup scheduling, nice values do not count across sessions).`,
  );
  c.note(`ping rows: ping -i 0.01 -c ${count} from ns A to ns B (first 5 replies excluded as warm-up: ARP, flow setup), through veth + the Linux bridge or tsvs's afpacket ports.`);
  const pingWhy = kernelAvailable() ?? (which('ping') ? null : 'ping is not installed');
  if (pingWhy) for (const s of PING_SUBJECTS) c.markUnavailable(s, pingWhy);
  let retries = RETRIES;
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const s of rotate(wanted(ctx, SUBJECTS), rep)) {
      if (c.isUnavailable(s)) continue;
      ctx.log(`latency rep ${rep + 1}/${ctx.reps}: ${s}`);
      try {
        if (isPing(s)) await pingRep(ctx, c, s, count);
        else {
          // a run the machine disturbed (see runProblems) is listed as invalid and, a few times per scenario, run again
          while (!(await vhostUserRep(ctx, c, s, rep)) && retries > 0) {
            retries--;
            ctx.log(`latency rep ${rep + 1}: ${s} invalid, again (${retries} retries left)`);
          }
        }
      } catch (e) {
        if (e instanceof Unavailable) c.markUnavailable(s, e.message);
        else {
          ctx.log(`latency ${s} failed: ${errText(e)}`);
          c.fail(s, rep, errText(e));
        }
      }
    }
  }
  c.ratio('tsvs', 'ovs-dpdk', { label: 'tsvs/ovs-dpdk' });
  c.ratio('tsvs', 'dpdk-testpmd', { label: 'tsvs/dpdk-testpmd' });
  c.ratio('tsvs-afpacket', 'linux-bridge', { label: 'tsvs-afpacket/linux-bridge' });
  return c.result();
}

export const latency: Scenario = { name: 'latency', title: 'round-trip latency', run: runLatency };
