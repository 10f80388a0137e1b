/**
 * cpu-link: what one cache line costs to go from one CPU to the other and back, measured by two
 * worker threads pinned to the two CPUs that ping-pong a counter through shared memory.
 *
 * Why the benchmarks need it: on these 2-vCPU KVM machines the host places the two vCPUs on
 * cores that share a cache some of the time (a round trip of ~120-140 ns) and on cores that
 * do not at other times (~500-550 ns), and the placement changes while a run goes on. Every
 * two-CPU scenario (a switch on one CPU, its traffic on the other) moves its ring indices,
 * descriptors and packet data across that link, so its rate follows the placement: p2p through
 * the same tsvs build ran at ~5 Mpps near and ~2.6 Mpps far (2026-12-03). Scenarios probe the
 * link around each measurement and report it, so that runs are compared near with near and far
 * with far.
 */
import { Worker, isMainThread, workerData, parentPort } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { setAffinity } from '../src/sys/libc.js';

/** Round trips at or above this (ns) mean the two CPUs do not share a cache. */
export const FAR_LINK_NS = 300;

export interface LinkProbe {
  /** Median round trip of one cache line CPU a -> b -> a, ns. */
  rttNs: number;
  near: boolean;
}

interface WorkerArgs {
  sab: SharedArrayBuffer;
  cpu: number;
  role: 0 | 1;
  rounds: number;
}

// words 0 and 16: the two flags in different 64-byte lines; word 32: start/ready handshake
const PING = 0;
const PONG = 16;
const READY = 32;

function workerMain(a: WorkerArgs): void {
  setAffinity([a.cpu]);
  const w = new Int32Array(a.sab);
  Atomics.add(w, READY, 1);
  while (Atomics.load(w, READY) < 2);
  const t0 = performance.now();
  if (a.role === 0) {
    for (let i = 1; i <= a.rounds; i++) {
      Atomics.store(w, PING, i);
      while (Atomics.load(w, PONG) !== i);
    }
  } else {
    for (let i = 1; i <= a.rounds; i++) {
      while (Atomics.load(w, PING) !== i);
      Atomics.store(w, PONG, i);
    }
  }
  parentPort!.postMessage((performance.now() - t0) * 1e6 / a.rounds);
}

function once(cpuA: number, cpuB: number, rounds: number): Promise<number> {
  const sab = new SharedArrayBuffer(256);
  const file = fileURLToPath(import.meta.url);
  const run = (cpu: number, role: 0 | 1) =>
    new Promise<number>((resolve, reject) => {
      const w = new Worker(file, { workerData: { sab, cpu, role, rounds } satisfies WorkerArgs });
      w.once('message', (ns: number) => {
        resolve(ns);
        void w.terminate();
      });
      w.once('error', reject);
    });
  return Promise.all([run(cpuA, 0), run(cpuB, 1)]).then(([ns]) => ns);
}

/** Probe the link between two CPUs: 3 trials of `rounds` round trips, median. About 0.1-0.3 s. */
export async function probeCpuLink(cpuA: number, cpuB: number, rounds = 100_000): Promise<LinkProbe> {
  const t: number[] = [];
  for (let i = 0; i < 3; i++) t.push(await once(cpuA, cpuB, rounds));
  t.sort((x, y) => x - y);
  const rttNs = t[1];
  return { rttNs, near: rttNs < FAR_LINK_NS };
}

/** The CPU link around one benchmark run: probed before it starts and after it stopped. */
export interface LinkAround {
  before: LinkProbe | null;
  after: LinkProbe | null;
  /** Near at both ends: the run's figure may join the "(near CPUs)" rows. */
  near: boolean;
  /** For the report's notes. */
  text: string;
}

/** Probe the link, or null if it could not be probed (e.g. a CPU the process may not use). */
export async function tryProbe(cpuA: number, cpuB: number): Promise<LinkProbe | null> {
  try {
    return await probeCpuLink(cpuA, cpuB);
  } catch {
    return null;
  }
}

/** After a run: probe again and describe both ends. */
export async function linkAfter(cpuA: number, cpuB: number, before: LinkProbe | null): Promise<LinkAround> {
  const after = await tryProbe(cpuA, cpuB);
  const near = before !== null && after !== null && before.near && after.near;
  const ns = (p: LinkProbe | null) => (p ? `${p.rttNs.toFixed(0)} ns` : 'not probed');
  return { before, after, near, text: `CPU ${cpuA} <-> ${cpuB} cache-line round trip ${ns(before)} before, ${ns(after)} after (${near ? 'near' : 'not near'}; far >= ${FAR_LINK_NS} ns)` };
}

if (!isMainThread && (workerData as WorkerArgs | null)?.sab instanceof SharedArrayBuffer) workerMain(workerData as WorkerArgs);

// `node dist/bench/cpu-link.js [n]`: probe CPUs 0 and 1 n times, one line each
if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  const n = Number(process.argv[2] ?? 1);
  for (let i = 0; i < n; i++) {
    const p = await probeCpuLink(0, 1);
    console.log(`${new Date().toISOString().slice(11, 19)} cpu 0 <-> 1: ${p.rttNs.toFixed(0)} ns round trip (${p.near ? 'near' : 'far'})`);
    if (i + 1 < n) await new Promise((r) => setTimeout(r, 500));
  }
}
