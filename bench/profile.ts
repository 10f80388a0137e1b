/**
 * profile: where the switch's time goes, in ns per packet by stage (rx,
 * parse, lookup, actions, tx, datapath loop, polling), for 64 B and 1518 B
 * frames. Runs bench/micro/switch.ts --stages (not pinned: V8's sampling
 * thread needs a CPU of its own, else the samples are lost): the
 * switch's data path with two real vhost-user ports whose frontends (our
 * virtio-user) live in the same thread; only the datapath's pollOnce is
 * timed, and V8's sampling profiler splits that time by stage. This is the
 * per-stage table issue 8 asks the report to keep, so the next step is visible.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Collector, type ScenarioResult } from './report.js';
import { errText, type BenchContext, type Scenario } from './common.js';
import { exec } from './proc.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const MICRO = path.join(here, 'micro', 'switch.js');
export const STAGES = ['rx', 'parse', 'lookup', 'actions', 'tx', 'datapath', 'poll'] as const;

interface MicroResult {
  nsPerPacketSwitch: number;
  mppsSwitchAlone: number;
  stages: Record<string, number>;
}

export async function runProfile(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('profile', 'tsvs data path, ns per packet by stage (one thread, real vhost-user ports)');
  c.note('bench/micro/switch.ts --stages (unpinned; the profiler thread needs the other CPU): two vhost-user ports and our virtio-user frontends in one thread; only the datapath pollOnce is timed, V8 samples inside it give each stage its share.');
  c.note('rx = vhost-user dequeue + buffer allocation; parse = flow key; lookup = hash, EMC, megaflow classifier; actions = action programs and per-port batching; tx = vhost-user enqueue + buffers freed; datapath = the per-packet loop itself; poll = polling and bookkeeping.');
  const packets = ctx.quick ? 1_000_000 : 4_000_000;
  for (let rep = 0; rep < ctx.reps; rep++) {
    for (const size of [64, 1518]) {
      ctx.log(`profile rep ${rep + 1}/${ctx.reps}: ${size} B`);
      try {
        const r = await exec([process.execPath, MICRO, '--packets', String(size > 256 ? packets / 2 : packets), '--size', String(size), '--stages'], { timeoutMs: 180000 });
        if (r.code !== 0) throw new Error(`micro/switch.js exited ${r.code}: ${(r.stderr || r.stdout).slice(-400)}`);
        const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as MicroResult;
        const cs = `${size}B`;
        c.add(cs, 'total', 'tsvs', 'ns/pkt', m.nsPerPacketSwitch);
        for (const s of STAGES) c.add(cs, s, 'tsvs', 'ns/pkt', m.stages[s] ?? 0);
      } catch (e) {
        ctx.log(`profile failed: ${errText(e)}`);
        c.fail('tsvs', rep, errText(e));
      }
    }
  }
  return c.result();
}

export const profile: Scenario = { name: 'profile', title: 'ns per packet by stage', run: (ctx) => runProfile(ctx) };
