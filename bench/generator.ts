/**
 * generator: a virtio-user txonly generator on the generator CPU into a DPDK
 * net_vhost rxonly sink whose forwarding lcore is on the other CPU.
 *   tsvs-testpmd   `tsvs testpmd --port virtio-user:path=S --fwd txonly`: each queue
 *                  replays 1024 buffers of its own, rewriting only the sequence and
 *                  check words of each frame (like a hardware generator)
 *   tsvs-testpmd-alloc  the same with --tx-buffers 0: a buffer allocated, filled
 *                  from the template and freed for every frame, as DPDK's txonly
 *                  (mbuf alloc + header copy per packet)
 *   dpdk-testpmd   dpdk-testpmd --vdev net_virtio_user0,path=S --forward-mode=txonly
 * Rate = the sink's rx counter over the measured window; loss = generator tx
 * total - sink rx total (generator stopped first, then the sink drained).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { tryProbe, linkAfter } from './cpu-link.js';
import { sleep } from './proc.js';
import { rate } from './stats.js';
import { DpdkTestpmd, dpdkAvailable } from './peers/dpdk.js';
import { TsvsTestpmd } from './peers/tsvs.js';

export type GenKind = 'tsvs-testpmd' | 'tsvs-testpmd-alloc' | 'dpdk-testpmd';
const GENS: readonly GenKind[] = ['tsvs-testpmd', 'tsvs-testpmd-alloc', 'dpdk-testpmd'];

interface Gen {
  stop(): Promise<number>;
  kill(): Promise<void>;
}

function startGen(kind: GenKind, sock: string, size: number, ctx: BenchContext, flows = 1): Promise<Gen> {
  if (kind === 'tsvs-testpmd' || kind === 'tsvs-testpmd-alloc') {
    const g = TsvsTestpmd.start({
      ports: [`virtio-user:path=${sock}`], fwd: 'txonly', txpkts: size, flows, cpu: ctx.genCpu, txBuffers: kind === 'tsvs-testpmd-alloc' ? 0 : undefined,
    });
    return Promise.resolve({
      stop: async () => (await g.stop()).reduce((a, p) => a + p.tx_packets, 0),
      kill: () => g.proc.stop('SIGKILL', 1000),
    });
  }
  return DpdkTestpmd.start({
    vdevs: [`net_virtio_user0,path=${sock},queues=1`],
    lcores: `0@${ctx.swCpu},1@${ctx.genCpu}`,
    fwd: 'txonly',
    txpkts: size,
    extra: flows > 1 ? ['--txonly-multi-flow'] : [],
  }).then(async (g) => {
    await g.startFwd();
    return {
      stop: async () => {
        const st = await g.stopFwd();
        await g.quit();
        return st.total.txPackets;
      },
      kill: () => g.kill(),
    };
  });
}

/** A net_vhost rxonly sink (server socket in a temp dir), forwarding lcore on ctx.swCpu. */
export async function startSink(ctx: BenchContext): Promise<{ tp: DpdkTestpmd; sock: string; dir: string; close(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-sink-'));
  const sock = path.join(dir, 'sink.sock');
  try {
    const tp = await DpdkTestpmd.start({ vdevs: [`net_vhost0,iface=${sock},queues=1`], lcores: `0@${ctx.genCpu},1@${ctx.swCpu}`, fwd: 'rxonly' });
    await tp.startFwd();
    return {
      tp,
      sock,
      dir,
      close: async () => {
        await tp.quit();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

async function rxCount(tp: DpdkTestpmd): Promise<number> {
  const s = await tp.portStats();
  return s[0]?.rxPackets ?? NaN;
}

export async function runGenerator(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('generator', 'virtio-user txonly generator -> DPDK net_vhost rxonly, Mpps');
  c.note(`Generator on CPU ${ctx.genCpu}, DPDK sink forwarding lcore on CPU ${ctx.swCpu}; rate measured at the sink.`);
  c.note('tsvs-testpmd replays 1024 kept buffers per queue, rewriting only the sequence and check words per frame; tsvs-testpmd-alloc (--tx-buffers 0) allocates, fills from the template and frees a buffer per frame, the work DPDK txonly does (mbuf alloc + header copy per packet). Both are our virtio-user PMD.');
  const why = dpdkAvailable();
  if (why) {
    c.markUnavailable('*', why);
    return c.result();
  }
  const sizes = ctx.quick ? [64] : [64, 1518];
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const size of sizes) {
      for (const kind of rotate(wanted(ctx, GENS), rep)) {
        if (c.isUnavailable(kind)) continue;
        ctx.log(`generator rep ${rep + 1}/${ctx.reps}: ${kind} ${size}B`);
        let sink: Awaited<ReturnType<typeof startSink>> | null = null;
        let gen: Gen | null = null;
        let mpps = -1;
        const linkBefore = await tryProbe(ctx.swCpu, ctx.genCpu);
        try {
          sink = await startSink(ctx);
          gen = await startGen(kind, sink.sock, size, ctx);
          const t0 = Date.now();
          while ((await rxCount(sink.tp)) === 0) {
            if (Date.now() - t0 > 20000) throw new Error(`no frames reached the sink in 20 s from ${kind}`);
            await sleep(200);
          }
          await sleep(ctx.warmup * 1000);
          const a = await rxCount(sink.tp);
          const ta = performance.now();
          await sleep(ctx.seconds * 1000);
          const b = await rxCount(sink.tp);
          const tb = performance.now();
          const sent = await gen.stop();
          gen = null;
          await sleep(300);
          const received = (await sink.tp.stopFwd()).total.rxPackets;
          mpps = rate(a, b, tb - ta) / 1e6;
          c.add(`${size}B`, 'txonly->rxonly', kind, 'Mpps', mpps, { sent, received });
        } catch (e) {
          if (e instanceof Unavailable) c.markUnavailable(kind, e.message);
          else {
            ctx.log(`generator ${kind} failed: ${errText(e)}`);
            c.fail(kind, rep, errText(e));
          }
        } finally {
          await gen?.kill();
          await sink?.close();
        }
        // as in p2p: runs with the two CPUs near each other at both ends also count in "(near CPUs)" rows
        const link = await linkAfter(ctx.swCpu, ctx.genCpu, linkBefore);
        if (mpps >= 0 && link.near) c.add(`${size}B`, 'txonly->rxonly (near CPUs)', kind, 'Mpps', mpps);
        c.note(`rep ${rep + 1} ${kind} ${size}B: ${link.text}`);
      }
    }
  }
  c.ratio('tsvs-testpmd', 'dpdk-testpmd', { label: 'tsvs-testpmd/dpdk-testpmd' });
  c.ratio('tsvs-testpmd-alloc', 'dpdk-testpmd', { label: 'tsvs-testpmd-alloc/dpdk-testpmd' });
  return c.result();
}

export const generator: Scenario = { name: 'generator', title: 'virtio-user traffic generator', run: runGenerator };
