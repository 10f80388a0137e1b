/**
 * pmd-turns: what the PMD thread's event-loop turns cost it. A PMD thread (pinned to CPU 1) with two
 * vhost-user ports, their virtio-user frontends connected from this thread, no traffic, runs for a
 * few seconds with yieldMaxMs 0 (a turn after every 1 ms slice: the loop before the mailbox) and
 * with the default (turns only when something waits), alternately; prints per run the turns per
 * second, the time the loop spent away in them (mean, longest, share of the run) and poll passes
 * per second.
 *   node dist/bench/tools/pmd-turns.js [seconds] [rounds] [yieldMaxMs,... (d: default; default 0,d)]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { PmdThread } from '../../src/dp/pmd-thread.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { setAffinity } from '../../src/sys/libc.js';

const seconds = Number(process.argv[2] ?? 3);
const rounds = Number(process.argv[3] ?? 3);
// yieldMaxMs values to compare ('d': the default)
const settings = (process.argv[4] ?? '0,d').split(',').map((v) => (v === 'd' ? undefined : Number(v)));
try {
  setAffinity([0]);
} catch {
  /* one CPU: run anyway */
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > 10000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function run(yieldMaxMs: number | undefined): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-pmd-turns-'));
  const pool = Mempool.create({ count: 4096 });
  const pmd = new PmdThread({ id: 0, pool: pool.attachInfo(), cpu: os.cpus().length > 1 ? 1 : undefined, yieldMaxMs }, {
    upcalls: () => {}, portEvent: () => {}, log: () => {}, exit: () => {},
  });
  const fes: VirtioUserPort[] = [];
  try {
    for (const n of [1, 2]) {
      await pmd.addPort(n, { name: `vm${n}`, type: 'vhost-user', path: path.join(dir, `vm${n}`) });
      fes.push(new VirtioUserPort({ name: `f${n}`, path: path.join(dir, `vm${n}`) }));
    }
    await until(() => fes.every((f) => f.link === 'up'), 'frontends up');
    await new Promise((r) => setTimeout(r, 500));
    const s0 = await pmd.stats();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const s1 = await pmd.stats();
    const ms = performance.now() - t0;
    const turns = s1.loopTurns - s0.loopTurns;
    const awayMs = (s1.loopTurnNs - s0.loopTurnNs) / 1e6;
    const label = yieldMaxMs === 0 ? 'turn every slice' : `turn when needed (max ${yieldMaxMs ?? 'default'} ms)`;
    return (
      `${label.padEnd(34)} turns/s ${((turns / ms) * 1000).toFixed(0).padStart(5)}  mean turn ${((awayMs / Math.max(turns, 1)) * 1000).toFixed(1).padStart(6)} µs` +
      `  longest (since start) ${(s1.loopTurnMaxNs / 1000).toFixed(0).padStart(5)} µs  away ${((awayMs / ms) * 100).toFixed(2).padStart(5)}%` +
      `  passes/s ${(((s1.iterations - s0.iterations) / ms) * 1000 / 1e6).toFixed(2)} M`
    );
  } finally {
    for (const f of fes) f.close();
    await pmd.stop();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

for (let r = 0; r < rounds; r++) {
  for (const y of settings) console.log(`round ${r + 1}: ${await run(y)}  (load ${os.loadavg()[0].toFixed(2)})`);
}
