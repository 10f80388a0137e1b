/**
 * `npm run soak [-- --minutes N | --seconds N] [--warmup S] [--warmup-steps N] [--json] [--out FILE]`: a long run of a real tsvs daemon under
 * traffic and configuration churn (issue 18, "Long runs"); exits non-zero when memory grows, fds
 * leak, buffers go missing, traffic stops or the daemon dies.
 *
 * - The daemon (one PMD thread on CPU 1) has two vhost-user ports, vm1 and vm2, with the rules
 *   in_port=vm1 -> vm2 and in_port=vm2 -> vm1. One dpdk-testpmd with two net_virtio_user ports on
 *   them runs `io` forwarding primed with `start tx_first`: a loop where every frame the switch sends
 *   to one port comes back to it through the other, as fast as both sides go.
 * - Every second: a third vhost-user port is added (and a virtio-user frontend of this process
 *   attaches to it, so guest memory is mapped and unmapped) or removed; rules are added or deleted
 *   (one that overrides the loop's rule for vm1, one that matches nothing), so each change goes
 *   through revalidation and replaces datapath flows under traffic.
 * - After a warm-up (JIT, pools and caches reach their working size), memory is measured with
 *   `tsvs memory --gc` (live V8 heap of the main and of each PMD thread, RSS by kind) and fds from
 *   /proc; again at the end (with the same ports and traffic), then traffic stops, testpmd leaves,
 *   and the packet pool must be full again.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon } from '../test/harness/daemon.js';
import { Testpmd } from '../test/harness/dpdk.js';
import { rpcCall } from '../src/daemon/control.js';
import { VirtioUserPort } from '../src/port/virtio-user.js';
import type { MemoryReport } from '../src/util/memory.js';

export interface SoakOptions {
  /** Measured run after the warm-up (default 30 s). */
  seconds?: number;
  /**
   * Warm-up before the first measurement: first `warmupSteps` churn steps back to back (default: 2.5 per
   * measured second, at most 1500; V8 compiles and optimizes the control paths by how often they run, not by
   * time: against an idle daemon the main thread's live heap grew +0.8, +0.3, +0.12, +0.11, +0.05 MiB per 300
   * steps, then -0.02 to +0.07 MiB per 300 up to 3000), then `warmupSeconds` at the measured pace (default: 10% of
   * seconds, 5..60 s).
   */
  warmupSteps?: number;
  warmupSeconds?: number;
  /** Limits (defaults: 5% RSS without shared memory, live heap 5% per thread, or 1 MiB if more in runs under 300 s). */
  maxRssGrowth?: number;
  maxHeapGrowth?: number;
  maxHeapGrowthBytes?: number;
  progress?: (line: string) => void;
}

export interface MemSample {
  atSeconds: number;
  rss: number;
  rssAnon: number;
  rssFile: number;
  rssShmem: number;
  mainHeap: number;
  /** Of the live heap: JIT-compiled code (code space), main thread and PMD threads. */
  mainCode: number;
  /** Committed young generation (new space), main thread and PMD threads. */
  mainYoung: number;
  pmdYoung: number[];
  mainExternal: number;
  pmdHeap: number[];
  pmdCode: number[];
  fds: number;
}

export interface SoakReport {
  seconds: number;
  warmupSeconds: number;
  warmupSteps: number;
  /** How long the back-to-back warm-up steps took, s. */
  warmupStepsSeconds: number;
  /** Frames the switch received (both ports) during the measured run, and per second. */
  framesForwarded: number;
  mpps: number;
  churn: { portsAdded: number; portsRemoved: number; frontendsAttached: number; ruleChanges: number; rpcFailures: string[] };
  /** Seconds in which the switch received nothing from the loop. */
  stalledSeconds: number;
  daemonCrashed: boolean;
  /** Before the warm-up (links up, traffic running, no churn yet): growth from here to `start` is the warm-up's. */
  first: MemSample;
  start: MemSample;
  end: MemSample;
  samples: MemSample[];
  /**
   * rss: the whole resident set; rssPrivate: without shared memory (anonymous + file pages), the
   * daemon's own memory. Shared memory is the packet pool and the pages of the guests' memory the
   * switch has touched so far (testpmd's mbufs move around its 1 GiB memfd): bounded by what the
   * guests share, given back when they leave, and not the daemon's to leak.
   */
  growth: { rss: number; rssPrivate: number; rssAnon: number; mainHeap: number; pmdHeap: number[] };
  /** Packet pool after testpmd left: free / count. */
  poolAvailable: number;
  poolCount: number;
  /** Drops by reason over the whole run: per port and per PMD thread. */
  portDrops: Record<string, Record<string, number>>;
  pmdDrops: Record<string, number>;
  logLines: number;
  problems: string[];
}

const M1 = '02:00:00:00:5a:01';
const M2 = '02:00:00:00:5a:02';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function procFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

interface MemoryAnswer {
  data: { main: MemoryReport; pmds: (MemoryReport & { pmd: number })[]; pool: { available: number; count: number } };
}
interface PmdStatsAnswer {
  data: { rxPackets: number; poolAvailable: number; poolCount: number; drops: Record<string, number> }[];
}
interface PortStatsAnswer {
  data: { port: string; drops: Record<string, number> }[];
}

export async function runSoak(o: SoakOptions = {}): Promise<SoakReport> {
  const seconds = o.seconds ?? 30;
  const warmup = o.warmupSeconds ?? Math.min(60, Math.max(5, Math.round(seconds / 10)));
  const warmupSteps = o.warmupSteps ?? Math.min(1500, Math.round(seconds * 2.5));
  const maxRss = o.maxRssGrowth ?? 0.05;
  const maxHeap = o.maxHeapGrowth ?? 0.05;
  // a floor of 1 MiB for short runs (their warm-up is short too); a long run is held to 5% alone
  const maxHeapBytes = o.maxHeapGrowthBytes ?? (seconds >= 300 ? 0 : 1 << 20);
  const d = await startDaemon({ args: ['--pmd-cpus', '1'] });
  const ctl = path.join(d.runDir, 'tsvs.ctl');
  const rpc = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> => rpcCall(ctl, method, params) as Promise<T>;
  const pid = d.proc.pid!;
  const rep: SoakReport = {
    seconds: 0, warmupSeconds: warmup, warmupSteps, warmupStepsSeconds: 0, framesForwarded: 0, mpps: 0,
    churn: { portsAdded: 0, portsRemoved: 0, frontendsAttached: 0, ruleChanges: 0, rpcFailures: [] },
    stalledSeconds: 0, daemonCrashed: false, first: null as unknown as MemSample, start: null as unknown as MemSample, end: null as unknown as MemSample, samples: [],
    growth: { rss: 0, rssPrivate: 0, rssAnon: 0, mainHeap: 0, pmdHeap: [] }, poolAvailable: 0, poolCount: 0, portDrops: {}, pmdDrops: {}, logLines: 0, problems: [],
  };
  let tp: Testpmd | null = null;
  let fe: VirtioUserPort | null = null;
  const alive = (): boolean => d.proc.exitCode === null && d.proc.signalCode === null;
  const t00 = Date.now();
  const sample = async (): Promise<MemSample> => {
    const m = await rpc<MemoryAnswer>('memory', { gc: true });
    const code = (r: MemoryReport): number => r.spaces.find((x) => x.name === 'code_space')?.used ?? 0;
    const young = (r: MemoryReport): number => r.spaces.find((x) => x.name === 'new_space')?.committed ?? 0;
    return {
      atSeconds: Math.round((Date.now() - t00) / 100) / 10,
      rss: m.data.main.rss, rssAnon: m.data.main.rssAnon, rssFile: m.data.main.rssFile, rssShmem: m.data.main.rssShmem,
      mainHeap: m.data.main.heapUsed, mainCode: code(m.data.main), mainYoung: young(m.data.main), pmdYoung: m.data.pmds.map(young), mainExternal: m.data.main.external,
      pmdHeap: m.data.pmds.map((p) => p.heapUsed), pmdCode: m.data.pmds.map(code), fds: procFds(pid),
    };
  };
  const rxTotal = async (): Promise<number> => (await rpc<PmdStatsAnswer>('pmd-stats')).data.reduce((a, p) => a + p.rxPackets, 0);
  try {
    await rpc('add-br', { bridge: 'br0' });
    for (const p of ['vm1', 'vm2']) await rpc('add-port', { bridge: 'br0', name: p, type: 'vhost-user' });
    await rpc('del-flows', { bridge: 'br0' });
    await rpc('add-flow', { bridge: 'br0', flow: 'priority=100,in_port=vm1,actions=output:vm2' });
    await rpc('add-flow', { bridge: 'br0', flow: 'priority=100,in_port=vm2,actions=output:vm1' });
    tp = Testpmd.start({
      vdev: [`net_virtio_user0,path=${path.join(d.runDir, 'vm1')},queues=1,mac=${M1}`, `net_virtio_user1,path=${path.join(d.runDir, 'vm2')},queues=1,mac=${M2}`],
      fwdMode: 'io',
      lcores: '0@1,1@0',
    });
    await tp.waitFor(/testpmd> /, 60000);
    o.progress?.(`${((Date.now() - t00) / 1000).toFixed(1)} s: testpmd ready`);
    for (let t0 = Date.now(); ; ) {
      const s = (await rpc<{ data: { ports: { link: string }[] }[] }>('show')).data[0].ports;
      if (s.filter((p) => p.link === 'up').length === 2) break;
      if (Date.now() - t0 > 20000) throw new Error(`vm1 and vm2 links not up: ${JSON.stringify(s)}`);
      await sleep(50);
    }
    await tp.run('start tx_first 8');
    o.progress?.(`${((Date.now() - t00) / 1000).toFixed(1)} s: links up, loop primed`);

    // one step of churn per second: port add (+frontend) / remove, rule add / delete
    let tick = 0;
    const churn = async (): Promise<void> => {
      const on = tick++ % 2 === 0;
      const c = rep.churn;
      try {
        if (on) {
          await rpc('add-port', { bridge: 'br0', name: 'churn', type: 'vhost-user' });
          c.portsAdded++;
          fe = new VirtioUserPort({ name: 'churn', path: path.join(d.runDir, 'churn'), poolSize: 1024, logger: { log(): void {} } });
          for (let t0 = Date.now(); fe.link !== 'up' && Date.now() - t0 < 3000; ) await sleep(5);
          if (fe.link === 'up') c.frontendsAttached++;
          await rpc('add-flow', { bridge: 'br0', flow: 'priority=200,in_port=vm1,actions=output:vm2' });
          await rpc('add-flow', { bridge: 'br0', flow: `priority=300,udp,tp_dst=${1000 + (tick % 100)},actions=output:churn` });
        } else {
          fe?.close();
          fe = null;
          await rpc('del-flows', { bridge: 'br0', match: 'priority=200,in_port=vm1', strict: true });
          await rpc('del-flows', { bridge: 'br0', match: 'udp' });
          await rpc('del-port', { bridge: 'br0', name: 'churn' });
          c.portsRemoved++;
        }
        c.ruleChanges += 2;
      } catch (e) {
        c.rpcFailures.push(`tick ${tick}: ${(e as Error).message}`);
      }
    };
    const runFor = async (secs: number, measure: boolean): Promise<void> => {
      const t0 = Date.now();
      let rxPrev = await rxTotal();
      let nextSample = t0 + 60000;
      while (Date.now() - t0 < secs * 1000) {
        const tickStart = Date.now();
        if (!alive()) {
          rep.daemonCrashed = true;
          return;
        }
        await churn();
        const left = 1000 - (Date.now() - tickStart);
        if (left > 0) await sleep(left);
        const rx = await rxTotal();
        if (measure) {
          if (rx === rxPrev) rep.stalledSeconds++;
          rep.framesForwarded += rx - rxPrev;
          if (Date.now() >= nextSample) {
            nextSample += 60000;
            const s = await sample();
            rep.samples.push(s);
            o.progress?.(`${((Date.now() - t0) / 1000).toFixed(0)} s: RSS ${(s.rss / 2 ** 20).toFixed(1)} MiB, heaps ${(s.mainHeap / 2 ** 20).toFixed(2)} / ${s.pmdHeap.map((h) => (h / 2 ** 20).toFixed(2)).join(' / ')} MiB, ${s.fds} fds, ${((rep.framesForwarded / (Date.now() - t0)) / 1000).toFixed(2)} Mpps`);
          }
        }
        rxPrev = rx;
      }
    };
    // the churn is always in the same phase (no churn port) when memory is measured
    const settle = async (): Promise<void> => {
      if (tick % 2 === 1) await churn();
    };

    rep.first = await sample();
    o.progress?.(`before the warm-up: ${JSON.stringify(rep.first)}`);
    o.progress?.(`warm-up: ${warmupSteps} churn steps back to back, then ${warmup} s at one step per second`);
    const tw = Date.now();
    for (let i = 0; i < warmupSteps && alive(); i++) await churn();
    rep.warmupStepsSeconds = (Date.now() - tw) / 1000;
    o.progress?.(`${warmupSteps} steps in ${rep.warmupStepsSeconds.toFixed(1)} s`);
    await runFor(warmup, false);
    await settle();
    rep.start = await sample();
    o.progress?.(`start: ${JSON.stringify(rep.start)}`);
    const t1 = Date.now();
    await runFor(seconds, true);
    rep.seconds = (Date.now() - t1) / 1000;
    rep.mpps = rep.framesForwarded / rep.seconds / 1e6;
    if (!alive()) rep.daemonCrashed = true;
    if (!rep.daemonCrashed) {
      await settle();
      rep.end = await sample();
      o.progress?.(`end: ${JSON.stringify(rep.end)}`);
      await tp.stopForwarding();
      await tp.quit();
      tp = null;
      o.progress?.(`${((Date.now() - t00) / 1000).toFixed(1)} s: testpmd gone`);
      // buffers the switch held for the ports come back once testpmd is gone
      let pmd = (await rpc<PmdStatsAnswer>('pmd-stats')).data;
      for (let t0 = Date.now(); pmd.some((p) => p.poolAvailable !== p.poolCount) && Date.now() - t0 < 10000; ) {
        await sleep(50);
        pmd = (await rpc<PmdStatsAnswer>('pmd-stats')).data;
      }
      rep.poolAvailable = pmd[0].poolAvailable;
      rep.poolCount = pmd[0].poolCount;
      for (const p of pmd) for (const [k, v] of Object.entries(p.drops)) if (v > 0) rep.pmdDrops[k] = (rep.pmdDrops[k] ?? 0) + v;
      for (const p of (await rpc<PortStatsAnswer>('port-stats')).data) {
        const nz = Object.fromEntries(Object.entries(p.drops).filter(([, v]) => v > 0));
        if (Object.keys(nz).length) rep.portDrops[p.port] = nz;
      }
    }
    rep.logLines = d.log().split('\n').length;
    o.progress?.(`${((Date.now() - t00) / 1000).toFixed(1)} s: pool checked`);
  } finally {
    (fe as VirtioUserPort | null)?.close();
    if (tp) await tp.quit().catch(() => tp!.kill());
    await d.stop();
    fs.rmSync(d.runDir, { recursive: true, force: true });
  }

  // verdict
  const P = rep.problems;
  if (rep.daemonCrashed) P.push(`the daemon died: ${d.log().slice(-2000)}`);
  if (rep.churn.rpcFailures.length) P.push(`${rep.churn.rpcFailures.length} control requests failed: ${rep.churn.rpcFailures.slice(0, 3).join('; ')}`);
  if (rep.start && rep.end) {
    const s = rep.start;
    const e = rep.end;
    rep.growth = {
      rss: e.rss / s.rss - 1,
      rssPrivate: (e.rssAnon + e.rssFile) / (s.rssAnon + s.rssFile) - 1,
      rssAnon: e.rssAnon / s.rssAnon - 1,
      mainHeap: e.mainHeap / s.mainHeap - 1,
      pmdHeap: e.pmdHeap.map((h, i) => h / s.pmdHeap[i] - 1),
    };
    if (rep.growth.rssPrivate > maxRss) P.push(`RSS without shared memory grew ${(100 * rep.growth.rssPrivate).toFixed(1)}% (limit ${100 * maxRss}%)`);
    const heaps: [string, number, number][] = [['main thread', s.mainHeap, e.mainHeap], ...s.pmdHeap.map((h, i): [string, number, number] => [`pmd ${i}`, h, e.pmdHeap[i]])];
    for (const [who, a, b] of heaps) {
      if (b - a > Math.max(maxHeap * a, maxHeapBytes)) P.push(`${who} live heap grew ${((b - a) / 1024).toFixed(0)} KiB (${(100 * (b / a - 1)).toFixed(1)}%; limit ${100 * maxHeap}% or ${maxHeapBytes >> 10} KiB)`);
    }
    if (e.fds !== s.fds) P.push(`daemon fds ${s.fds} -> ${e.fds}`);
  }
  if (!rep.daemonCrashed && rep.poolAvailable !== rep.poolCount) P.push(`packet pool not full after traffic: ${rep.poolAvailable}/${rep.poolCount}`);
  if (rep.stalledSeconds > 0) P.push(`traffic stalled in ${rep.stalledSeconds} of ${Math.round(rep.seconds)} s`);
  if (rep.framesForwarded === 0) P.push('no traffic');
  return rep;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (k: string): number | undefined => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const minutes = arg('minutes');
  const seconds = arg('seconds') ?? (minutes !== undefined ? minutes * 60 : 30);
  const json = process.argv.includes('--json');
  runSoak({ seconds, warmupSeconds: arg('warmup'), warmupSteps: arg('warmup-steps'), progress: (l) => console.log(l) }).then(
    (r) => {
      const mib = (b: number): string => (b / 2 ** 20).toFixed(2);
      const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
      const out = process.argv.indexOf('--out');
      if (out > 0) fs.writeFileSync(process.argv[out + 1], JSON.stringify(r, null, 2) + '\n');
      if (json) console.log(JSON.stringify(r, null, 2));
      else if (r.start && r.end) {
        console.log([
          `soak: ${r.seconds.toFixed(0)} s after a warm-up of ${r.warmupSteps} churn steps back to back (${r.warmupStepsSeconds.toFixed(0)} s) and ${r.warmupSeconds} s at the measured pace; ${r.framesForwarded} frames (${r.mpps.toFixed(2)} Mpps), stalled ${r.stalledSeconds} s`,
          `warm-up (before -> after): RSS without shared memory ${mib(r.first.rssAnon + r.first.rssFile)} -> ${mib(r.start.rssAnon + r.start.rssFile)} MiB, live heap main ${mib(r.first.mainHeap)} -> ${mib(r.start.mainHeap)} MiB (code ${mib(r.first.mainCode)} -> ${mib(r.start.mainCode)}), ${r.first.pmdHeap.map((h, i) => `pmd ${i} ${mib(h)} -> ${mib(r.start.pmdHeap[i])} MiB`).join(', ')}`,
          `cold start (before the warm-up) -> end: RSS ${mib(r.first.rss)} -> ${mib(r.end.rss)} MiB (${pct(r.end.rss / r.first.rss - 1)}), without shared memory ${mib(r.first.rssAnon + r.first.rssFile)} -> ${mib(r.end.rssAnon + r.end.rssFile)} MiB (${pct((r.end.rssAnon + r.end.rssFile) / (r.first.rssAnon + r.first.rssFile) - 1)}), live heap main ${mib(r.first.mainHeap)} -> ${mib(r.end.mainHeap)} MiB (${pct(r.end.mainHeap / r.first.mainHeap - 1)}), ${r.first.pmdHeap.map((h, i) => `pmd ${i} ${mib(h)} -> ${mib(r.end.pmdHeap[i])} MiB (${pct(r.end.pmdHeap[i] / h - 1)})`).join(', ')}`,
          `churn: ${r.churn.portsAdded} ports added, ${r.churn.portsRemoved} removed, ${r.churn.frontendsAttached} frontends attached, ${r.churn.ruleChanges} rule changes, ${r.churn.rpcFailures.length} failed requests`,
          `RSS ${mib(r.start.rss)} -> ${mib(r.end.rss)} MiB (${pct(r.growth.rss)}); without shared memory ${mib(r.start.rssAnon + r.start.rssFile)} -> ${mib(r.end.rssAnon + r.end.rssFile)} MiB (${pct(r.growth.rssPrivate)}; anonymous ${mib(r.start.rssAnon)} -> ${mib(r.end.rssAnon)}); shared (pool, guest pages touched) ${mib(r.start.rssShmem)} -> ${mib(r.end.rssShmem)} MiB`,
          `live heap: main ${mib(r.start.mainHeap)} -> ${mib(r.end.mainHeap)} MiB (${pct(r.growth.mainHeap)}; of it JIT code ${mib(r.start.mainCode)} -> ${mib(r.end.mainCode)}), ${r.start.pmdHeap.map((h, i) => `pmd ${i} ${mib(h)} -> ${mib(r.end.pmdHeap[i])} MiB (${pct(r.growth.pmdHeap[i])}; code ${mib(r.start.pmdCode[i])} -> ${mib(r.end.pmdCode[i])})`).join(', ')}`,
          `young generation committed: main ${mib(r.first.mainYoung)} -> ${mib(r.start.mainYoung)} -> ${mib(r.end.mainYoung)} MiB, ${r.first.pmdYoung.map((h, i) => `pmd ${i} ${mib(h)} -> ${mib(r.start.pmdYoung[i])} -> ${mib(r.end.pmdYoung[i])} MiB`).join(', ')} (cold, start, end)`,
          `fds ${r.start.fds} -> ${r.end.fds}; packet pool ${r.poolAvailable}/${r.poolCount} free after traffic`,
          `drops: ${JSON.stringify({ ports: r.portDrops, pmd: r.pmdDrops })}`,
          r.problems.length ? `FAILED:\n  ${r.problems.join('\n  ')}` : 'OK',
        ].join('\n'));
      } else console.log(JSON.stringify(r, null, 2));
      process.exit(r.problems.length ? 1 : 0);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
