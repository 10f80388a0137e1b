/**
 * scrape: what Prometheus scraping costs the data path. One tsvs daemon
 * (pinned to the switch CPU, main thread and PMD thread alike, so the scrape
 * competes with the PMD for that CPU) with `--metrics`, the p2p primed io loop
 * of bench/p2p.ts at 64 B one way; runs without and with a scraper fetching
 * /metrics every second alternate on the same switch, and the medians are
 * compared. The counters are read from the PMD threads' shared-memory boards,
 * so no request reaches the PMD thread.
 */
import * as net from 'node:net';
import { Collector, type ScenarioResult } from './report.js';
import { errText, rotate, type BenchContext, type Scenario } from './common.js';
import { DpdkTestpmd } from './peers/dpdk.js';
import { TsvsDaemon } from './peers/tsvs.js';
import { startLoopGenerator, measureLoop, waitLoopReady } from './p2p.js';
import { P2P_FLOWS } from './switches.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address() as net.AddressInfo;
      s.close(() => resolve(a.port));
    });
  });
}

export async function runScrape(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('scrape', 'p2p 64 B one way, Mpps, with and without a Prometheus scrape of /metrics every second');
  c.note('One tsvs daemon pinned (whole process) to the switch CPU with --metrics; the two cases alternate on the same switch and generator.');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/metrics`;
  let d: TsvsDaemon | null = null;
  let gen: DpdkTestpmd | null = null;
  try {
    d = await TsvsDaemon.start({ cpu: ctx.swCpu, extraArgs: ['--metrics', `127.0.0.1:${port}`] });
    await d.cli('add-br', 'br0');
    const s1 = await d.addVhostUserPort('br0', 'vhu1', 1);
    const s2 = await d.addVhostUserPort('br0', 'vhu2', 2);
    await d.setFlows('br0', P2P_FLOWS);
    gen = await startLoopGenerator({ kind: 'tsvs', pid: d.pid, socks: [s1, s2], stop: async () => undefined }, ctx.genCpu, ctx.swCpu);
    await waitLoopReady(gen);
    await measureLoop(gen, { size: 64, variant: 'oneway', warmup: 0, seconds: 2 });
    let scrapes = 0;
    let bytes = 0;
    for (let rep = 0; rep < ctx.reps * 2; rep++) {
      for (const kind of rotate(['no scrape', 'scrape 1 s'], rep)) {
        let timer: NodeJS.Timeout | null = null;
        if (kind === 'scrape 1 s') {
          const once = (): void => {
            void fetch(url).then(async (r) => {
              const t = await r.text();
              if (r.status !== 200 || !t.includes('tsvs_pmd_rx_packets_total')) throw new Error(`scrape failed: ${r.status}`);
              scrapes++;
              bytes += t.length;
            });
          };
          once();
          timer = setInterval(once, 1000);
        }
        try {
          const m = await measureLoop(gen, { size: 64, variant: 'oneway', warmup: ctx.warmup, seconds: Math.max(ctx.seconds, 3) });
          c.add('64B oneway', 'port1->2', kind, 'Mpps', m.mpps12, { sent: m.sent, received: m.received });
        } finally {
          if (timer) clearInterval(timer);
        }
      }
    }
    c.note(`${scrapes} scrapes, ${Math.round(bytes / Math.max(1, scrapes))} bytes each.`);
  } catch (e) {
    ctx.log(`scrape failed: ${errText(e)}`);
    c.fail('tsvs', 0, errText(e));
  } finally {
    await gen?.quit();
    await d?.stop();
  }
  c.ratio('scrape 1 s', 'no scrape', { label: 'with scrape / without' });
  return c.result();
}

export const scrape: Scenario = { name: 'scrape', title: 'metrics scraping cost', run: (ctx) => runScrape(ctx) };
