/**
 * Child processes for the benchmarks: spawned with optional CPU pinning
 * (taskset) and network namespace (ip netns exec), output captured, stopped by
 * PID only. Every process started here is registered so that run.ts can end
 * whatever is still alive on error or Ctrl-C.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';

export interface ProcOptions {
  /** Pin to these CPUs with taskset -c. */
  cpus?: number[] | string;
  /** Run inside this network namespace. */
  netns?: string;
  env?: Record<string, string>;
  /** Pipe stdin (for interactive tools). */
  stdin?: boolean;
  /** Keep at most this many characters of output (default 1 MB). */
  keep?: number;
}

type Stream = 'stdout' | 'stderr';

/** Offsets into a process's stdout and stderr. */
export interface OutputMark {
  stdout: number;
  stderr: number;
}

const live = new Set<Proc>();

export class Proc {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly name: string;
  /**
   * stdout and stderr interleaved as they arrived: for diagnostics (tail) only.
   * A line of one stream may land inside a line (or a prompt) of the other
   * here, so nothing matches against it: waitFor reads each stream apart.
   */
  output = '';
  /** The process's stdout alone (rolling window of `keep` characters). */
  stdout = '';
  /** The process's stderr alone (rolling window). */
  stderr = '';
  /** Characters dropped from the front of stdout / stderr (so marks stay meaningful). */
  private readonly droppedBy = { stdout: 0, stderr: 0 };
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  exited = false;
  private readonly waiters: (() => void)[] = [];
  private readonly exitPromise: Promise<void>;
  private readonly keep: number;

  constructor(argv: string[], o: ProcOptions = {}) {
    const prefix: string[] = [];
    if (o.netns) prefix.push('ip', 'netns', 'exec', o.netns);
    if (o.cpus !== undefined) prefix.push('taskset', '-c', Array.isArray(o.cpus) ? o.cpus.join(',') : o.cpus);
    const full = [...prefix, ...argv];
    this.name = argv.map((a) => a.split('/').pop()).slice(0, 2).join(' ');
    this.keep = o.keep ?? 1 << 20;
    this.proc = spawn(full[0], full.slice(1), {
      stdio: [o.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: o.env ? { ...process.env, ...o.env } : process.env,
    });
    if (this.proc.pid === undefined) throw new Error(`cannot start ${full.join(' ')}`);
    this.pid = this.proc.pid;
    live.add(this);
    const onData = (stream: 'stdout' | 'stderr', d: Buffer): void => {
      const text = d.toString();
      this.output += text;
      if (this.output.length > this.keep * 2) this.output = this.output.slice(this.output.length - this.keep);
      let buf = this[stream] + text;
      if (buf.length > this.keep * 2) {
        const cut = buf.length - this.keep;
        buf = buf.slice(cut);
        this.droppedBy[stream] += cut;
      }
      this[stream] = buf;
      for (const w of this.waiters.splice(0)) w();
    };
    this.proc.stdout?.on('data', (d: Buffer) => onData('stdout', d));
    this.proc.stderr?.on('data', (d: Buffer) => onData('stderr', d));
    this.proc.stdin?.on('error', () => undefined);
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('exit', (code, sig) => {
        this.exited = true;
        this.exitCode = code;
        this.exitSignal = sig;
        live.delete(this);
        for (const w of this.waiters.splice(0)) w();
        resolve();
      });
    });
  }

  /** Where each stream's output stands now (for waitFor's `from` and since()). */
  get mark(): OutputMark {
    return { stdout: this.droppedBy.stdout + this.stdout.length, stderr: this.droppedBy.stderr + this.stderr.length };
  }

  /** Output of one stream after a mark. */
  since(from: OutputMark, stream: Stream): string {
    return this[stream].slice(Math.max(0, from[stream] - this.droppedBy[stream]));
  }

  /**
   * Resolve when the output of `stream` after mark `from` matches re ('either':
   * stdout or stderr, each matched alone); throw on exit or timeout.
   */
  async waitFor(re: RegExp, timeoutMs = 20000, from: OutputMark = { stdout: 0, stderr: 0 }, stream: Stream | 'either' = 'either'): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    const streams: Stream[] = stream === 'either' ? ['stdout', 'stderr'] : [stream];
    for (;;) {
      for (const st of streams) {
        const m = this.since(from, st).match(re);
        if (m) return m;
      }
      if (this.exited) throw new Error(`${this.name} exited (${this.exitCode ?? this.exitSignal}) before ${re}:\n${this.tail()}`);
      const left = timeoutMs - (Date.now() - t0);
      if (left <= 0) throw new Error(`timeout (${timeoutMs} ms) waiting for ${re} from ${this.name}:\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  write(s: string): void {
    if (!this.exited) this.proc.stdin?.write(s);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.exited) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      /* already gone */
    }
  }

  wait(): Promise<void> {
    return this.exitPromise;
  }

  /** Send `sig` (null: none, just wait), then SIGKILL after graceMs; resolves on exit. */
  async stop(sig: NodeJS.Signals | null = 'SIGTERM', graceMs = 5000): Promise<void> {
    if (this.exited) return;
    if (sig) this.signal(sig);
    const k = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(k);
  }

  tail(n = 2500): string {
    return this.output.slice(-n);
  }
}

/** Stop every process still registered (by PID). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop('SIGTERM', 3000)));
}

/** Synchronous last resort for process exit handlers. */
export function killAllSync(): void {
  for (const p of live) p.signal('SIGKILL');
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command to completion. */
export function exec(argv: string[], o: { env?: Record<string, string>; timeoutMs?: number; netns?: string } = {}): Promise<ExecResult> {
  const full = o.netns ? ['ip', 'netns', 'exec', o.netns, ...argv] : argv;
  return new Promise((resolve) => {
    execFile(
      full[0],
      full.slice(1),
      { timeout: o.timeoutMs ?? 30000, env: o.env ? { ...process.env, ...o.env } : process.env, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; killed?: boolean; signal?: string }) | null;
        const code = e ? (typeof e.code === 'number' ? e.code : 1) : 0;
        let why = '';
        if (e && e.killed) why = ` (killed: ${e.signal ?? 'timeout'} after ${o.timeoutMs ?? 30000} ms)`;
        else if (e && typeof e.code !== 'number') why = ` (${e.message.split('\n')[0]})`;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) + why });
      },
    );
  });
}

/** Run a command; throw with its stderr when it fails. */
export async function execOk(argv: string[], o: { env?: Record<string, string>; timeoutMs?: number; netns?: string } = {}): Promise<string> {
  const r = await exec(argv, o);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = `${dir}/${cmd}`;
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** VmRSS, RssAnon, RssShmem of a process in KiB (from /proc/PID/status), null if gone. */
export function rssKiB(pid: number): { vmRss: number; rssAnon: number; rssFile: number; rssShmem: number } | null {
  let s: string;
  try {
    s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const f = (k: string): number => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s);
    return m ? Number(m[1]) : NaN;
  };
  return { vmRss: f('VmRSS'), rssAnon: f('RssAnon'), rssFile: f('RssFile'), rssShmem: f('RssShmem') };
}

/**
 * KiB of pid's resident set that is another process's memory: mappings of pid whose file (inode) the
 * peer also maps shared (a vhost-user switch maps its frontends' guest memory, e.g. DPDK's
 * memfd:nohuge, and every page it touches counts in its RSS). RSS minus this is the switch's own.
 */
export function peerResidentKiB(pid: number, peerPid: number): number {
  const inodes = new Set<string>();
  try {
    for (const line of fs.readFileSync(`/proc/${peerPid}/maps`, 'utf8').split('\n')) {
      const m = /^\S+ \S{3}s \S+ \S+ (\d+)/.exec(line);
      if (m && m[1] !== '0') inodes.add(m[1]);
    }
    let kib = 0;
    let counted = false;
    for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
      const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)/.exec(line);
      if (head) {
        counted = head[1] !== '0' && inodes.has(head[1]);
        continue;
      }
      if (counted && line.startsWith('Rss:')) kib += Number(/(\d+)/.exec(line)?.[1] ?? 0);
    }
    return kib;
  } catch {
    return NaN;
  }
}

/** One mapping of a process (/proc/PID/smaps): its path ('' for anonymous memory, " (deleted)" cut), sizes in KiB. */
export interface SmapsMapping {
  path: string;
  size: number;
  rss: number;
  anon: number;
  /** Shared_Clean + Shared_Dirty. */
  shared: number;
}

/** Every mapping of process pid with its resident sizes (the bench's memory tools group them their own way). */
export function smapsMappings(pid: number): SmapsMapping[] {
  const out: SmapsMapping[] = [];
  let cur: SmapsMapping | null = null;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const size = (parseInt(head[2]!, 16) - parseInt(head[1]!, 16)) / 1024;
      cur = { path: head[3]!.trim().replace(/ \(deleted\)$/, ''), size, rss: 0, anon: 0, shared: 0 };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const m = /^(Rss|Anonymous|Shared_Clean|Shared_Dirty):\s+(\d+) kB/.exec(line);
    if (!m) continue;
    const v = Number(m[2]);
    if (m[1] === 'Rss') cur.rss = v;
    else if (m[1] === 'Anonymous') cur.anon = v;
    else cur.shared += v;
  }
  return out;
}
