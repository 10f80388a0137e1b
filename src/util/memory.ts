/**
 * Memory of this thread's V8 isolate and of the process, as `tsvs memory` reports it (for the
 * daemon's main thread and for each PMD worker thread, which has its own isolate and heap).
 *
 * `gc: true` first runs full garbage collections, so that `heapUsed` is the live heap (what a leak
 * grows) rather than live + garbage not yet collected, then malloc_trim (free malloc memory back to the
 * kernel, as the daemon also does every 30 s), so that the RSS is what is in use. A full GC pauses the calling thread for a
 * few milliseconds (a PMD thread stops polling meanwhile): a diagnostic, not for every second.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { mallocTrim } from '../sys/libc.js';

export interface MemoryReport {
  /** Process-wide resident set (the same for every thread of the process), bytes. */
  rss: number;
  /** This isolate's V8 heap: reserved and in use (live objects plus uncollected garbage), bytes. */
  heapTotal: number;
  heapUsed: number;
  /** Memory of C++ objects bound to this isolate's JS objects (ArrayBuffer contents among them). */
  external: number;
  arrayBuffers: number;
  /** V8's malloc'ed memory outside the heap (compiler zones, handles), bytes. */
  mallocedMemory: number;
  /** Native contexts and contexts detached but not yet collected (a leak sign when growing). */
  nativeContexts: number;
  detachedContexts: number;
  /** Per heap space (new, old, code, large objects ...): bytes in use and committed. */
  spaces: { name: string; used: number; committed: number }[];
  /** Whether full GCs ran just before (heapUsed is then the live heap). */
  gc: boolean;
  /**
   * The resident set by kind (Linux /proc/self/status), bytes: anonymous (heaps, malloc, stacks),
   * file-backed (code, libraries) and shared memory, which includes every page touched of the
   * shared packet pool and of the guests' memory (memfds) while it is mapped.
   */
  rssAnon: number;
  rssFile: number;
  rssShmem: number;
  /** Peak RSS. */
  rssPeak: number;
}

function procStatus(): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const line of readFileSync('/proc/self/status', 'utf8').split('\n')) {
      const m = /^(\w+):\s+(\d+) kB/.exec(line);
      if (m) out[m[1]] = Number(m[2]) * 1024;
    }
  } catch {
    /* not Linux */
  }
  return out;
}

let gcFn: (() => void) | null | undefined;

/** V8's gc() (exposed at run time without --expose-gc: set the flag, then read it from a fresh context). */
function getGc(): (() => void) | null {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    } catch {
      gcFn = null;
    }
  }
  return gcFn;
}

/**
 * Write a V8 heap snapshot of this thread's isolate into dir (for Chrome DevTools' Memory tab);
 * returns the file name. Pauses the thread for about a second per 10 MB of heap.
 */
export function writeHeapSnapshot(dir: string, who: string): string {
  return v8.writeHeapSnapshot(join(dir, `tsvs-${who}-${process.pid}-${Date.now()}.heapsnapshot`));
}

export function memoryReport(opts: { gc?: boolean } = {}): MemoryReport {
  let didGc = false;
  if (opts.gc) {
    const gc = getGc();
    if (gc) {
      // twice: objects with finalizers/weak callbacks die in the second pass
      gc();
      gc();
      didGc = true;
    }
    // what the collections freed in native memory (ArrayBuffer backing stores) goes back to the kernel
    mallocTrim();
  }
  const m = process.memoryUsage();
  const h = v8.getHeapStatistics();
  const st = procStatus();
  return {
    rss: m.rss,
    heapTotal: m.heapTotal,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    mallocedMemory: h.malloced_memory,
    nativeContexts: h.number_of_native_contexts,
    detachedContexts: h.number_of_detached_contexts,
    spaces: v8.getHeapSpaceStatistics().map((s) => ({ name: s.space_name, used: s.space_used_size, committed: s.physical_space_size })),
    gc: didGc,
    rssAnon: st.RssAnon ?? NaN,
    rssFile: st.RssFile ?? NaN,
    rssShmem: st.RssShmem ?? NaN,
    rssPeak: st.VmHWM ?? NaN,
  };
}

/**
 * The resident set split by whose memory it is (Linux, from /proc/self/smaps). A vhost-user backend
 * maps each frontend's guest memory (a memfd or hugetlbfs file the frontend shares, DPDK's
 * `memfd:nohuge`, QEMU's memory backend) and every page of it the switch touches (rings, the packet
 * buffers it copies from and into) counts in the switch's RSS while it is mapped, although it is the
 * guest's memory, already counted in the frontend's RSS. `guest` is that part: resident pages of
 * shared file/memfd mappings other than the switch's own (`ownShared`: its packet pool, given by start
 * address). `own` = RSS - guest: what the switch itself costs (heaps, malloc, code, its pool).
 */
export interface RssSplit {
  own: number;
  guest: number;
  /** Resident part of the switch's own shared mappings (the packet pool), bytes. */
  ownShared: number;
}

export function rssSplit(ownSharedStarts: readonly number[], smaps = '/proc/self/smaps'): RssSplit | null {
  let text: string;
  try {
    text = readFileSync(smaps, 'utf8');
  } catch {
    return null;
  }
  let rss = 0;
  let guest = 0;
  let ownShared = 0;
  let kind: 'guest' | 'own-shared' | 'other' = 'other';
  const own = new Set(ownSharedStarts);
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const shared = head[2][3] === 's';
      const named = head[3].startsWith('/');
      kind = !shared || !named ? 'other' : own.has(parseInt(head[1], 16)) ? 'own-shared' : 'guest';
      continue;
    }
    if (!line.startsWith('Rss:')) continue;
    const kb = Number(/(\d+)/.exec(line)?.[1] ?? 0) * 1024;
    rss += kb;
    if (kind === 'guest') guest += kb;
    else if (kind === 'own-shared') ownShared += kb;
  }
  return { own: rss - guest, guest, ownShared };
}
