/**
 * The tsvs daemon's idle memory, A/B: the memory scenario's idle case (daemon pinned to one CPU, one busy-polling
 * PMD thread, bridge br0 with two vhost-user ports and the p2p flows, no frontend; VmRSS read 1 s after set-up)
 * for one or more builds, interleaved, several daemon starts each, with the resident set split by mapping
 * (/proc/PID/smaps: each file, anonymous by size, stacks).
 *   node dist/bench/tools/mem-idle.js [--runs 4] [--cli A=/path/dist/src/cli/main.js ...] [--detail] [--wait-ms 1000]
 * Without --cli: this build. Run under the CPU lock (a busy-polling PMD thread per start).
 */
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { sleep, smapsMappings } from '../proc.js';
import { P2P_FLOWS } from '../switches.js';

interface Mapping { name: string; rss: number; anon: number; size: number }

function mappings(pid: number): Mapping[] {
  return smapsMappings(pid).map((m) => ({ name: m.path === '' ? '[anon]' : m.path, rss: m.rss, anon: m.anon, size: m.size }));
}

function status(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

async function cli(cliPath: string, runDir: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cliPath, ...args, '--run-dir', runDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`tsvs ${args.join(' ')}: ${err || out}`))));
  });
}

interface Sample { vmRss: number; anon: number; file: number; shmem: number; threads: number; groups: Map<string, number> }

interface Subject { name: string; path: string; nodeArgs: string[]; env: Record<string, string> }

async function once(s: Subject, cpu: number, waitMs: number, extra: string[], sleepMax: string): Promise<Sample> {
  const cliPath = s.path;
  const runDir = fs.mkdtempSync('/tmp/tsvs-memidle-');
  const d = spawn('taskset', ['-c', String(cpu), process.execPath, ...s.nodeArgs, cliPath, 'daemon', '--run-dir', runDir, '--pmd-cpus', String(cpu), '--pmd-sleep-max', sleepMax, '--log-level', 'warn', ...extra], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...s.env } });
  try {
    const t0 = Date.now();
    while (!fs.existsSync(`${runDir}/tsvs.ctl`)) {
      if (d.exitCode !== null || Date.now() - t0 > 20000) throw new Error('daemon did not start');
      await sleep(50);
    }
    await cli(cliPath, runDir, 'add-br', 'br0');
    for (const [n, i] of [['vhu1', 1], ['vhu2', 2]] as const) await cli(cliPath, runDir, 'add-port', 'br0', n, '--type', 'vhost-user', '--path', `${runDir}/${n}`, '--ofport', String(i));
    await cli(cliPath, runDir, 'del-flows', 'br0');
    for (const f of P2P_FLOWS) await cli(cliPath, runDir, 'add-flow', 'br0', f);
    await sleep(waitMs);
    const pid = d.pid!;
    const st = status(pid);
    const groups = new Map<string, number>();
    for (const m of mappings(pid)) {
      let key = m.name;
      if (key === '[anon]') key = m.size >= 8192 && m.size <= 8200 ? '[anon 8 MiB: thread stacks]' : m.size >= 65536 - 64 && m.size <= 65536 ? '[anon 64 MiB: malloc arenas]' : m.size === 256 ? '[anon 256 KiB: V8 pages]' : '[anon other]';
      else if (key.includes('/node_modules/')) key = '[node_modules files]';
      groups.set(key, (groups.get(key) ?? 0) + m.rss);
    }
    return { vmRss: st.VmRSS!, anon: st.RssAnon!, file: st.RssFile!, shmem: st.RssShmem!, threads: st.Threads!, groups };
  } finally {
    d.kill('SIGTERM');
    await new Promise((r) => (d.exitCode !== null ? r(null) : d.once('exit', r)));
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

const { values } = parseArgs({ options: { runs: { type: 'string', default: '4' }, cli: { type: 'string', multiple: true }, detail: { type: 'boolean' }, 'wait-ms': { type: 'string', default: '1000' }, cpu: { type: 'string', default: '1' }, 'sleep-max': { type: 'string', default: '0' }, 'daemon-arg': { type: 'string', multiple: true } } });
/** NAME=CLI_PATH[::--node-arg|::ENV=VALUE ...] */
const subjects: Subject[] = (values.cli ?? [`this=${new URL('../../src/cli/main.js', import.meta.url).pathname}`]).map((s) => {
  const i = s.indexOf('=');
  const [p, ...more] = s.slice(i + 1).split('::');
  const env: Record<string, string> = {};
  for (const m of more.filter((x) => !x.startsWith('-'))) env[m.slice(0, m.indexOf('='))] = m.slice(m.indexOf('=') + 1);
  return { name: s.slice(0, i), path: p!, nodeArgs: more.filter((x) => x.startsWith('-')), env };
});
const res = new Map<string, Sample[]>(subjects.map((s) => [s.name, []]));
const mib = (k: number): string => (k / 1024).toFixed(1);
console.log(`loadavg ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}  ${new Date().toISOString()}`);
for (let r = 0; r < Number(values.runs); r++) {
  const order = r % 2 === 0 ? subjects : [...subjects].reverse();
  for (const s of order) {
    const x = await once(s, Number(values.cpu), Number(values['wait-ms']), values['daemon-arg'] ?? [], String(values['sleep-max']));
    res.get(s.name)!.push(x);
    console.log(`${s.name.padEnd(10)} run ${r + 1}: VmRSS ${mib(x.vmRss)}  anon ${mib(x.anon)}  file ${mib(x.file)}  shmem ${mib(x.shmem)}  threads ${x.threads}`);
    if (values.detail) for (const [k, v] of [...x.groups].sort((a, b) => b[1] - a[1])) if (v >= 200) console.log(`    ${mib(v).padStart(6)}  ${k}`);
  }
}
const med = (a: number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
for (const s of subjects) {
  const xs = res.get(s.name)!;
  console.log(`${s.name.padEnd(10)} median VmRSS ${mib(med(xs.map((x) => x.vmRss)))} (min ${mib(Math.min(...xs.map((x) => x.vmRss)))} max ${mib(Math.max(...xs.map((x) => x.vmRss)))})  anon ${mib(med(xs.map((x) => x.anon)))}  file ${mib(med(xs.map((x) => x.file)))}  n=${xs.length}`);
}
console.log(`loadavg ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
