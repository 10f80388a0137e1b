/**
 * Ring throughput: u32 handles per second through src/ring.
 *
 *   node dist/bench/ring.js [--items N] [--reps R]
 *
 * Rows: same thread (enqueue a burst, dequeue it), across two worker threads,
 * across two processes (memfd inherited as fd 3); bursts of 1 and 32.
 * Producer pinned to CPU 0, consumer to CPU 1. Median of R runs.
 * Reference (docs/interop.md#node-and-koffi): Node cross-process SPSC of single 64 B items 13-15 M/s, C about 22 M/s.
 * Cross-process numbers are bimodal on this machine: compare medians of many runs.
 */
import { Worker, isMainThread, workerData, parentPort } from 'node:worker_threads';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Ring, type RingMode } from '../src/ring/ring.js';
import { SharedRegion, type RegionAttachInfo } from '../src/mem/region.js';
import * as libc from '../src/sys/libc.js';

const RING_SIZE = 1024;
const CTRL_BYTES = 128; // barrier word at 0, ring at CTRL_BYTES
const SELF = fileURLToPath(import.meta.url);

interface RoleArgs {
  role: 'produce' | 'consume';
  n: number;
  burst: number;
  cpu: number;
}

/** One side of a cross-thread/process run over `bytes`; returns elapsed ms (consumer) or 0. */
function runRole(bytes: Uint8Array, a: RoleArgs): { ms: number; ok: boolean } {
  try {
    libc.setAffinity([a.cpu]);
  } catch {
    // fewer CPUs than expected: run unpinned
  }
  const ctrl = new Int32Array(bytes.buffer, bytes.byteOffset, 2);
  const ring = Ring.attach(bytes, CTRL_BYTES);
  const buf = new Int32Array(Math.max(a.burst, 32));
  Atomics.add(ctrl, 0, 1);
  while (Atomics.load(ctrl, 0) < 2);
  const t0 = performance.now();
  const n = a.n;
  const burst = a.burst;
  let ok = true;
  if (a.role === 'produce') {
    let seq = 0;
    while (seq < n) {
      const want = burst < n - seq ? burst : n - seq;
      for (let i = 0; i < want; i++) buf[i] = seq + i;
      seq += ring.enqueueBurst(buf, want);
    }
  } else {
    let seq = 0;
    while (seq < n) {
      const k = ring.dequeueBurst(buf, burst);
      for (let i = 0; i < k; i++) if (buf[i] !== seq + i) ok = false;
      seq += k;
    }
  }
  return { ms: performance.now() - t0, ok };
}

function sameThread(mode: RingMode, burst: number, n: number): number {
  const ring = Ring.create(RING_SIZE, mode);
  const buf = new Int32Array(burst);
  for (let i = 0; i < burst; i++) buf[i] = i;
  const t0 = performance.now();
  let moved = 0;
  while (moved < n) {
    ring.enqueueBurst(buf, burst);
    moved += ring.dequeueBurst(buf, burst);
  }
  return moved / (performance.now() - t0) / 1000;
}

function freshBytes(backing: 'sab' | 'memfd'): { bytes: Uint8Array; region: SharedRegion | null } {
  const size = CTRL_BYTES + Ring.bytesNeeded(RING_SIZE);
  if (backing === 'sab') {
    const bytes = new Uint8Array(new SharedArrayBuffer(size));
    Ring.init(bytes, CTRL_BYTES, RING_SIZE, 'spsc');
    return { bytes, region: null };
  }
  const region = SharedRegion.create('bench-ring', size);
  Ring.init(region.bytes, CTRL_BYTES, RING_SIZE, 'spsc');
  return { bytes: region.bytes, region };
}

function worker(spec: { sab?: Uint8Array; region?: RegionAttachInfo } & RoleArgs): Promise<{ ms: number; ok: boolean }> {
  const w = new Worker(new URL(import.meta.url), { workerData: spec });
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

async function acrossWorkers(backing: 'sab' | 'memfd', burst: number, n: number): Promise<number> {
  const { bytes, region } = freshBytes(backing);
  try {
    const where = region ? { region: region.attachInfo() } : { sab: bytes };
    const [c] = await Promise.all([
      worker({ ...where, role: 'consume', n, burst, cpu: 1 }),
      worker({ ...where, role: 'produce', n, burst, cpu: 0 }),
    ]);
    if (!c.ok) throw new Error('consumer saw a wrong sequence');
    return n / c.ms / 1000;
  } finally {
    region?.close();
  }
}

function child(args: RoleArgs, fd: number): Promise<{ ms: number; ok: boolean }> {
  const p = spawn(process.execPath, [SELF, '--child', args.role, String(args.n), String(args.burst), String(args.cpu)], {
    stdio: ['ignore', 'pipe', 'inherit', fd],
  });
  let out = '';
  p.stdout!.setEncoding('utf8');
  p.stdout!.on('data', (d: string) => (out += d));
  return new Promise((resolve, reject) => {
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited with ${code}`))));
  });
}

async function acrossProcesses(burst: number, n: number): Promise<number> {
  const { region } = freshBytes('memfd');
  try {
    const [c] = await Promise.all([
      child({ role: 'consume', n, burst, cpu: 1 }, region!.fd),
      child({ role: 'produce', n, burst, cpu: 0 }, region!.fd),
    ]);
    if (!c.ok) throw new Error('consumer saw a wrong sequence');
    return n / c.ms / 1000;
  } finally {
    region!.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, def: number) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : def;
  };
  const items = opt('--items', 10_000_000);
  const reps = opt('--reps', 3);
  const rows: { where: string; ring: string; burst: number; mps: number[] }[] = [];
  const run = async (where: string, ring: string, burst: number, f: (n: number) => number | Promise<number>) => {
    const n = burst === 1 ? Math.ceil(items / 4) : items;
    const mps: number[] = [];
    for (let r = 0; r < reps; r++) mps.push(await f(n));
    rows.push({ where, ring, burst, mps });
    const m = median(mps);
    console.log(`${where.padEnd(16)} ${ring.padEnd(12)} ${String(burst).padStart(5)} ${m.toFixed(1).padStart(10)}   [${mps.map((x) => x.toFixed(1)).join(' ')}]`);
  };
  console.log(`ring of ${RING_SIZE} u32 handles, ${items} items per run (burst 1: ${Math.ceil(items / 4)}), median of ${reps}`);
  console.log(`${'where'.padEnd(16)} ${'ring'.padEnd(12)} ${'burst'.padStart(5)} ${'M items/s'.padStart(10)}   [runs]`);
  for (const burst of [1, 32]) {
    await run('same thread', 'spsc', burst, (n) => sameThread('spsc', burst, n));
    await run('same thread', 'mpmc', burst, (n) => sameThread('mpmc', burst, n));
  }
  for (const burst of [1, 32]) {
    await run('2 workers', 'spsc sab', burst, (n) => acrossWorkers('sab', burst, n));
    await run('2 workers', 'spsc memfd', burst, (n) => acrossWorkers('memfd', burst, n));
  }
  for (const burst of [1, 32]) await run('2 processes', 'spsc memfd', burst, (n) => acrossProcesses(burst, n));
  console.log('reference (docs/interop.md#node-and-koffi): Node cross-process SPSC 13-15 M items/s, C about 22 M items/s');
}

if (!isMainThread) {
  const wd = workerData as { sab?: Uint8Array; region?: RegionAttachInfo } & RoleArgs;
  const bytes = wd.sab ?? SharedRegion.attach(wd.region!).bytes;
  parentPort!.postMessage(runRole(bytes, wd));
} else if (process.argv[2] === '--child') {
  const [, , , role, n, burst, cpu] = process.argv;
  const region = SharedRegion.fromFd(3, libc.fdSize(3));
  const r = runRole(region.bytes, { role: role as RoleArgs['role'], n: Number(n), burst: Number(burst), cpu: Number(cpu) });
  process.stdout.write(JSON.stringify(r) + '\n');
  region.close();
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
