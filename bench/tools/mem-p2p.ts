/**
 * Where the tsvs daemon's memory goes, idle with 2 vhost-user ports and after p2p load (the memory
 * scenario's set-up: DPDK testpmd io loop through two virtio-user ports): `tsvs memory --gc` and the
 * resident size of every mapping of the daemon (/proc/PID/smaps), grouped.
 *   node dist/bench/tools/mem-p2p.js [--seconds 5] [--daemon-arg X ...]
 * Run under the CPU lock.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { startTsvsSwitch } from '../switches.js';
import { startLoopGenerator, waitLoopReady, measureLoop } from '../p2p.js';
import { sleep, smapsMappings } from '../proc.js';

interface Mapping { name: string; rss: number; anon: number; shared: number; size: number }

function mappings(pid: number): Mapping[] {
  return smapsMappings(pid).map((m) => ({
    name: m.path === '' ? '[anon]' : m.path.startsWith('/memfd:') ? m.path : m.path.startsWith('/') ? '[files]' : m.path,
    rss: m.rss,
    anon: m.anon,
    shared: m.shared,
    size: m.size,
  }));
}

function report(pid: number, what: string, mem: unknown): void {
  const ms = mappings(pid);
  const groups = new Map<string, { rss: number; n: number; size: number }>();
  for (const m of ms) {
    const g = groups.get(m.name) ?? { rss: 0, n: 0, size: 0 };
    g.rss += m.rss;
    g.n++;
    g.size += m.size;
    groups.set(m.name, g);
  }
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter((l) => /^(VmRSS|RssAnon|RssFile|RssShmem|VmHWM|Threads)/.test(l)).join('; ');
  console.log(`== ${what}: ${status}`);
  for (const [name, g] of [...groups].sort((a, b) => b[1].rss - a[1].rss)) if (g.rss >= 256) console.log(`  ${(g.rss / 1024).toFixed(1).padStart(8)} MiB  ${g.n} maps, ${(g.size / 1024).toFixed(0)} MiB mapped  ${name}`);
  // anonymous mappings by size class (V8 heap pages are 256 KiB, thread stacks 8 MiB, malloc arenas 64 MiB)
  const anon = ms.filter((m) => m.name === '[anon]' && m.rss > 0).sort((a, b) => b.rss - a.rss).slice(0, 12);
  console.log(`  largest anonymous: ${anon.map((m) => `${(m.rss / 1024).toFixed(1)}/${(m.size / 1024).toFixed(1)}`).join(' ')} MiB (resident/mapped)`);
  console.log(`  tsvs memory: ${JSON.stringify(mem)}`);
}

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, 'daemon-arg': { type: 'string', multiple: true } } });
const sw = await startTsvsSwitch(1);
try {
  const d = sw.tsvs!;
  await sleep(1000);
  report(sw.pid, 'idle, 2 vhost-user ports, no frontend', await d.cli('memory', '--gc'));
  const gen = await startLoopGenerator(sw, 0, 1);
  try {
    await waitLoopReady(gen);
    report(sw.pid, 'frontend attached, loop ready', await d.cli('memory', '--gc'));
    const m = await measureLoop(gen, { size: 64, variant: 'bidir', warmup: 1, seconds: Number(values.seconds) });
    console.log(`loop: ${JSON.stringify(m)}`);
    report(sw.pid, 'after p2p load (frontend attached)', await d.cli('memory', '--gc'));
  } finally {
    await gen.quit();
  }
  await sleep(1000);
  report(sw.pid, 'after p2p load, frontend gone', await d.cli('memory', '--gc'));
} finally {
  await sw.stop();
}
