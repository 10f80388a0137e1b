/**
 * `npm run fuzz [-- --seconds N | --messages N] [--seed S] [--warmup S --rest S] [--out FILE.json]`: a hostile vhost-user frontend against a
 * real tsvs daemon, from this (separate) process over real sockets (issue 18, "Long runs").
 *
 * The daemon gets three vhost-user server ports: w1 and w2, where two well-behaved virtio-user
 * frontends of this process ("witnesses") exchange frames through the switch, and fz, the target.
 * Connection after connection on fz carries one of:
 *   - random bytes (in 1-3 writes, some with fds attached),
 *   - random headers: request, flags, size and payload at random, 0-8 fds (memfds, eventfds),
 *   - a valid DPDK-like session (plus QEMU's extra requests) with 1-3 mutations, real memfds.
 * Between batches: the witnesses must still get their frames through both ways, the daemon must
 * be alive; its RSS and fd count are sampled. At the end: the packet pool must be full again.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';
import { startDaemon, type Daemon } from '../test/harness/daemon.js';
import { FakeGuest, dpdkSession, extraMessages, sendScript, GUEST_SIZE, GUEST_GPA, type FdRef, type ScriptMsg } from '../test/fixtures/vhost-session.js';
import { UnixSocket } from '../src/sys/socket.js';
import { closeQuiet } from '../src/sys/libc.js';
import { Mempool } from '../src/mem/mempool.js';
import { VirtioUserPort } from '../src/port/virtio-user.js';
import * as M from '../src/vhost/messages.js';
import { Rng } from '../test/fixtures/rng.js';
import { rpcCall } from '../src/daemon/control.js';
import type { MemoryReport, RssSplit } from '../src/util/memory.js';

export interface FuzzOptions {
  /** Stop after this long (default 30 s) ... */
  seconds?: number;
  /** ... or after this many messages, whichever comes first. */
  messages?: number;
  seed?: number;
  /**
   * Memory baseline after a warm-up (default 0: before any fuzzing): fuzz this long, let the daemon rest
   * `restSeconds`, measure (memBase), then fuzz `seconds`; at the end, rest again and measure (memRest).
   * Growth is compared between the two rests (the daemon idle, the witnesses still attached), on the
   * switch's own memory (RSS minus the witnesses' guest memory, `tsvs memory`'s split).
   */
  warmupSeconds?: number;
  /** Idle time before the at-rest measurements (default 0; V8 shrinks its young generation and the daemon trims malloc within ~30 s). */
  restSeconds?: number;
  /** Write heap snapshots of every daemon thread into this directory after 30 s and at the end. */
  snapshotDir?: string;
  /** Progress lines (default: none). */
  progress?: (line: string) => void;
}

export interface FuzzReport {
  seconds: number;
  messages: number;
  connections: number;
  byKind: { random: number; header: number; session: number };
  witnessChecks: number;
  witnessFailures: string[];
  daemonCrashed: boolean;
  rssStartKiB: number;
  rssEndKiB: number;
  /** `tsvs memory --gc` at the start and at the end: RSS by kind, live heaps (issue 18: what the RSS growth is). */
  memStart?: MemSplit;
  memEnd?: MemSplit;
  /** After the warm-up and restSeconds idle (the baseline), and after the run and restSeconds idle. */
  memBase?: MemSplit;
  memRest?: MemSplit;
  warmupSeconds: number;
  restSeconds: number;
  /** Messages and connections of the warm-up (included in messages/connections). */
  warmupMessages: number;
  warmupConnections: number;
  /** The same once the witnesses have disconnected (their memory unmapped). */
  memAfterWitnesses?: MemSplit;
  rssMaxKiB: number;
  fdsStart: number;
  fdsEnd: number;
  poolAvailable: number;
  poolCount: number;
  /** Why the target port dropped connections (from the daemon's log lines). */
  logLines: number;
}

const M1 = '02:00:00:00:f0:01';
const M2 = '02:00:00:00:f0:02';
const FD_REFS: FdRef[] = ['mem', 'mem2', 'kick0', 'kick1', 'call0', 'call1'];
const U32S = [0, 1, 2, 7, 8, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The daemon's memory by kind, KiB. */
export interface MemSplit {
  rss: number;
  anon: number;
  file: number;
  shmem: number;
  mainHeap: number;
  mainHeapTotal: number;
  external: number;
  /** The switch's own memory (RSS minus guests' memory: the witnesses' pages), KiB, and the guests' part. */
  own: number;
  guest: number;
  /** Committed KiB per V8 heap space of the main thread. */
  mainSpaces: Record<string, number>;
  pmdHeap: number[];
  pmdHeapTotal: number[];
  /** Committed KiB per V8 heap space of the first PMD thread (new_space grows under a high allocation rate). */
  pmdSpaces: Record<string, number>;
  /** Resident KiB per mapping name (/proc/PID/smaps): memfds by name, [heap], [anon], files grouped. */
  byMapping: Record<string, number>;
}

function residentByMapping(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  let name = '';
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const p = head[1].trim();
      name = p === '' ? '[anon]' : p.startsWith('/memfd:') ? p.replace(/ \(deleted\)$/, '') : p.startsWith('/') ? '[files]' : p;
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) out[name] = (out[name] ?? 0) + Number(m[1]);
  }
  for (const k of Object.keys(out)) if (out[k] === 0) delete out[k];
  return out;
}

async function memSplit(ctl: string, gc: boolean, pid: number): Promise<MemSplit> {
  const m = ((await rpcCall(ctl, 'memory', { gc })) as { data: { main: MemoryReport; pmds: MemoryReport[]; split: RssSplit | null } }).data;
  const k = (b: number): number => Math.round(b / 1024);
  return {
    rss: k(m.main.rss), anon: k(m.main.rssAnon), file: k(m.main.rssFile), shmem: k(m.main.rssShmem),
    mainHeap: k(m.main.heapUsed), mainHeapTotal: k(m.main.heapTotal), external: k(m.main.external),
    own: k(m.split?.own ?? NaN), guest: k(m.split?.guest ?? NaN),
    mainSpaces: Object.fromEntries(m.main.spaces.filter((x) => x.committed > 0).map((x) => [x.name, k(x.committed)])),
    pmdHeap: m.pmds.map((p) => k(p.heapUsed)), pmdHeapTotal: m.pmds.map((p) => k(p.heapTotal)),
    pmdSpaces: Object.fromEntries((m.pmds[0]?.spaces ?? []).filter((x) => x.committed > 0).map((x) => [x.name, k(x.committed)])),
    byMapping: residentByMapping(pid),
  };
}

function procKiB(pid: number): number {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : NaN;
}

function procFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function mutate(rng: Rng, msgs: ScriptMsg[], g: FakeGuest): void {
  const k = rng.int(msgs.length);
  const msg = (msgs[k] = { ...msgs[k], payload: msgs[k].payload.slice(), fds: [...msgs[k].fds] });
  const len = msg.payload.length;
  const dv = new DataView(msg.payload.buffer);
  switch (rng.int(8)) {
    case 0:
      if (len > 0) msg.payload[rng.int(len)] ^= 1 << rng.int(8);
      break;
    case 1:
      if (len >= 4) dv.setUint32(4 * rng.int(len >> 2), rng.pick(U32S), true);
      break;
    case 2:
      if (len >= 8) dv.setBigUint64(8 * rng.int(len >> 3), rng.pick([0n, 1n, BigInt(GUEST_GPA), BigInt(GUEST_SIZE), BigInt(g.uaddr), 1n << 63n, (1n << 64n) - 1n]), true);
      break;
    case 3:
      msg.request = rng.int(48);
      break;
    case 4:
      msg.flags = rng.pick([0, 1, 2, 5, 9, 0xd, rng.u32(), msg.flags ^ M.FLAG_NEED_REPLY]);
      break;
    case 5:
      if (msg.fds.length && rng.int(2)) msg.fds.splice(rng.int(msg.fds.length), 1);
      else if (msg.fds.length < 8) msg.fds.push(rng.pick(FD_REFS));
      break;
    case 6:
      msgs.splice(k, 1);
      break;
    default: {
      const j = rng.int(msgs.length);
      [msgs[k], msgs[j]] = [msgs[j], msgs[k]];
    }
  }
}

/** Read and drop whatever the daemon answered (closing fds that came with it). */
function drain(sock: UnixSocket, buf: Uint8Array): void {
  for (let i = 0; i < 64; i++) {
    const fds: number[] = [];
    let n: number;
    try {
      n = sock.recv(buf, fds);
    } catch {
      return;
    }
    for (const fd of fds) closeQuiet(fd);
    if (n <= 0) return;
  }
}

class Witnesses {
  readonly pool = Mempool.create({ name: 'fuzz-witness', count: 4096 });
  readonly fe1: VirtioUserPort;
  readonly fe2: VirtioUserPort;
  private readonly h = new Int32Array(32);
  private readonly quiet = { log(): void {} };

  constructor(d: Daemon) {
    this.fe1 = new VirtioUserPort({ name: 'w1', path: path.join(d.runDir, 'w1'), pool: this.pool, mac: M1, logger: this.quiet });
    this.fe2 = new VirtioUserPort({ name: 'w2', path: path.join(d.runDir, 'w2'), pool: this.pool, mac: M2, logger: this.quiet });
  }

  /** 32 frames each way through the switch; '' when all arrived within 3 s, else what is missing. */
  async check(): Promise<string> {
    const t0 = Date.now();
    while (this.fe1.link !== 'up' || this.fe2.link !== 'up') {
      if (Date.now() - t0 > 5000) return `witness links down (${this.fe1.link}, ${this.fe2.link})`;
      await sleep(10);
    }
    const got = [0, 0];
    for (const [from, to, src, dst, k] of [[this.fe1, this.fe2, M1, M2, 0], [this.fe2, this.fe1, M2, M1, 1]] as const) {
      const n = this.pool.alloc(this.h, 32);
      for (let i = 0; i < n; i++) {
        const o = this.pool.dataOffset(this.h[i]);
        const b = this.pool.data;
        b.fill(0, o, o + 60);
        dst.split(':').forEach((x, j) => (b[o + j] = parseInt(x, 16)));
        src.split(':').forEach((x, j) => (b[o + 6 + j] = parseInt(x, 16)));
        b[o + 12] = 0x88;
        b[o + 13] = 0xb5; // local experimental ethertype
        this.pool.dataLen[this.h[i]] = 60;
        this.pool.pktLen[this.h[i]] = 60;
      }
      from.txBurst(0, this.h, n);
      const out = new Int32Array(32);
      while (got[k] < 32 && Date.now() - t0 < 3000) {
        const r = to.rxBurst(0, out, 32);
        this.pool.free(out, r);
        got[k] += r;
        if (r === 0) await sleep(1);
      }
      // the other side may see its own direction's frames late: drain both
      this.pool.free(out, from.rxBurst(0, out, 32));
    }
    return got[0] >= 32 && got[1] >= 32 ? '' : `witness frames missing: w1->w2 ${got[0]}/32, w2->w1 ${got[1]}/32`;
  }

  close(): void {
    this.fe1.close();
    this.fe2.close();
    this.pool.close();
  }
}

export async function runFuzz(o: FuzzOptions = {}): Promise<FuzzReport> {
  const seconds = o.seconds ?? 30;
  const warmupSeconds = o.warmupSeconds ?? 0;
  const restSeconds = o.restSeconds ?? 0;
  const maxMsgs = o.messages ?? Infinity;
  const rng = new Rng(o.seed ?? 0x5eed1818);
  const d = await startDaemon({ args: ['--pmd-cpus', '1'] });
  const cli = async (...a: string[]): Promise<string> => {
    const r = await d.cli(...a);
    if (r.code !== 0) throw new Error(`tsvs ${a.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const g = new FakeGuest();
  let w: Witnesses | null = null;
  const rep: FuzzReport = {
    seconds: 0, messages: 0, connections: 0, byKind: { random: 0, header: 0, session: 0 }, witnessChecks: 0, witnessFailures: [],
    daemonCrashed: false, warmupSeconds, restSeconds, warmupMessages: 0, warmupConnections: 0, rssStartKiB: 0, rssEndKiB: 0, rssMaxKiB: 0, fdsStart: 0, fdsEnd: 0, poolAvailable: 0, poolCount: 0, logLines: 0,
  };
  try {
    await cli('add-br', 'br0');
    for (const p of ['w1', 'w2', 'fz']) await cli('add-port', 'br0', p, '--type', 'vhost-user');
    w = new Witnesses(d);
    const first = await w.check();
    if (first) throw new Error(`witnesses do not pass traffic before the fuzzing: ${first}`);
    await sleep(300);
    const ctl = path.join(d.runDir, 'tsvs.ctl');
    rep.memStart = await memSplit(ctl, true, d.proc.pid!);
    rep.rssStartKiB = rep.rssMaxKiB = procKiB(d.proc.pid!);
    rep.fdsStart = procFds(d.proc.pid!);
    const target = path.join(d.runDir, 'fz');
    const rbuf = new Uint8Array(65536);
    const fuzzFor = async (secs: number): Promise<void> => {
      const t0 = Date.now();
      let lastCheck = t0;
      while (Date.now() - t0 < secs * 1000 && rep.messages < maxMsgs) {
        if (d.proc.exitCode !== null || d.proc.signalCode !== null) {
          rep.daemonCrashed = true;
          break;
        }
        let sock: UnixSocket;
        try {
          sock = UnixSocket.connect(target);
        } catch {
          await sleep(5);
          continue;
        }
        rep.connections++;
        const kind = rng.int(3);
        try {
          if (kind === 0) {
            rep.byKind.random++;
            const chunks = 1 + rng.int(3);
            for (let c = 0; c < chunks; c++) {
              const b = new Uint8Array(1 + rng.int(200));
              for (let i = 0; i < b.length; i++) b[i] = rng.int(256);
              const fds = rng.int(3) === 0 ? Array.from({ length: 1 + rng.int(8) }, () => g.fds[rng.pick(FD_REFS)]) : [];
              sock.send(b, fds);
              rep.messages++;
            }
          } else if (kind === 1) {
            rep.byKind.header++;
            const n = 1 + rng.int(20);
            for (let i = 0; i < n; i++) {
              const size = rng.int(300);
              const msg: ScriptMsg = {
                request: rng.int(4) === 0 ? rng.u32() : rng.int(48),
                flags: rng.int(4) === 0 ? rng.u32() : M.VERSION | (rng.int(2) ? M.FLAG_NEED_REPLY : 0),
                payload: Uint8Array.from({ length: size }, () => rng.int(256)),
                fds: Array.from({ length: rng.int(4) === 0 ? rng.int(9) : 0 }, () => rng.pick(FD_REFS)),
                size: rng.int(8) === 0 ? rng.int(5000) : size,
              };
              if (!sendScript(sock, g, msg)) break;
              rep.messages++;
              drain(sock, rbuf);
            }
          } else {
            rep.byKind.session++;
            const msgs = [...dpdkSession(g), ...extraMessages(g)];
            for (let m = 1 + rng.int(3); m > 0; m--) mutate(rng, msgs, g);
            for (const msg of msgs) {
              if (!sendScript(sock, g, msg)) break;
              rep.messages++;
              if (rng.int(4) === 0) await sleep(0); // let the daemon answer now and then
              drain(sock, rbuf);
            }
          }
        } catch {
          /* the daemon hung up on us: expected */
        }
        drain(sock, rbuf);
        sock.close();
        if (Date.now() - lastCheck > 2000) {
          lastCheck = Date.now();
          await sleep(20); // let the daemon finish the last connection
          rep.witnessChecks++;
          const why = await w!.check();
          if (why) rep.witnessFailures.push(`after ${rep.messages} messages: ${why}`);
          const rss = procKiB(d.proc.pid!);
          rep.rssMaxKiB = Math.max(rep.rssMaxKiB, rss);
          // live heaps (full GC) every 10th check, the cheap split otherwise
          if (o.snapshotDir && rep.witnessChecks === 15) await rpcCall(ctl, 'memory', { gc: true, snapshotDir: o.snapshotDir }, 120000);
          const ms = o.progress ? await memSplit(ctl, rep.witnessChecks % 10 === 0, d.proc.pid!) : null;
          o.progress?.(`${((Date.now() - t0) / 1000).toFixed(0)} s: ${rep.messages} messages, ${rep.connections} connections, daemon RSS ${(rss / 1024).toFixed(1)} MiB (anon ${(ms!.anon / 1024).toFixed(1)}, file ${(ms!.file / 1024).toFixed(1)}, shmem ${(ms!.shmem / 1024).toFixed(1)}; heap total main ${(ms!.mainHeapTotal / 1024).toFixed(1)}, pmd ${(ms!.pmdHeapTotal[0] / 1024).toFixed(1)} MiB${rep.witnessChecks % 10 === 0 ? `; live heap main ${(ms!.mainHeap / 1024).toFixed(2)}, pmd ${(ms!.pmdHeap[0] / 1024).toFixed(2)} MiB` : ''}), ${procFds(d.proc.pid!)} fds`);
        }
      }
    };
    const rest = async (): Promise<void> => {
      if (restSeconds <= 0) return;
      o.progress?.(`resting ${restSeconds} s`);
      await sleep(restSeconds * 1000);
    };
    if (warmupSeconds > 0) {
      o.progress?.(`warm-up: ${warmupSeconds} s of fuzzing`);
      await fuzzFor(warmupSeconds);
      rep.warmupMessages = rep.messages;
      rep.warmupConnections = rep.connections;
      await rest();
      rep.memBase = await memSplit(ctl, true, d.proc.pid!);
      o.progress?.(`baseline after the warm-up: ${JSON.stringify(rep.memBase)}`);
    }
    const t0 = Date.now();
    await fuzzFor(seconds);
    rep.seconds = (Date.now() - t0) / 1000;
    if (d.proc.exitCode === null && d.proc.signalCode === null) {
      await sleep(500);
      rep.witnessChecks++;
      const why = await w.check();
      if (why) rep.witnessFailures.push(`at the end: ${why}`);
      await sleep(300);
      if (o.snapshotDir) await rpcCall(ctl, 'memory', { gc: true, snapshotDir: o.snapshotDir }, 120000);
      rep.memEnd = await memSplit(ctl, true, d.proc.pid!);
      rep.rssEndKiB = procKiB(d.proc.pid!);
      if (restSeconds > 0) {
        await rest();
        rep.memRest = await memSplit(ctl, true, d.proc.pid!);
        o.progress?.(`at rest after the run: ${JSON.stringify(rep.memRest)}`);
      }
      rep.fdsEnd = procFds(d.proc.pid!);
      const pmd = JSON.parse(await cli('pmd-stats', '--json')) as { poolAvailable: number; poolCount: number }[];
      rep.poolAvailable = pmd[0].poolAvailable;
      rep.poolCount = pmd[0].poolCount;
    } else {
      rep.daemonCrashed = true;
    }
    rep.logLines = d.log().split('\n').length;
    if (!rep.daemonCrashed && w) {
      // the witnesses' memory the switch touched is theirs: it leaves the daemon's RSS with them
      w.close();
      w = null;
      const pid = d.proc.pid!;
      const t1 = Date.now();
      while (residentByMapping(pid)['/memfd:tsvs-mempool-fuzz-witness'] !== undefined && Date.now() - t1 < 5000) await sleep(50);
      rep.memAfterWitnesses = await memSplit(ctl, true, pid);
    }
  } finally {
    w?.close();
    g.close();
    await d.stop();
    fs.rmSync(d.runDir, { recursive: true, force: true });
  }
  return rep;
}

/**
 * The run in a few lines, and what failed: a crash, a witness failure, fds not back, the pool not full,
 * and (with a warm-up and rests) growth of the switch's own memory or of a live heap of 5% or more between
 * the two rests. The growth from the cold start (memStart, before any fuzzing) is reported beside it.
 */
export function fuzzSummary(r: FuzzReport, maxGrowth = 0.05): { lines: string[]; problems: string[] } {
  const mib = (k: number): string => (k / 1024).toFixed(2);
  const pct = (a: number, b: number): string => `${b >= a ? '+' : ''}${((100 * (b - a)) / a).toFixed(1)}%`;
  const problems: string[] = [];
  if (r.daemonCrashed) problems.push('the daemon crashed');
  if (r.witnessFailures.length) problems.push(`${r.witnessFailures.length} witness failures: ${r.witnessFailures[0]}`);
  if (r.fdsEnd !== r.fdsStart) problems.push(`daemon fds ${r.fdsStart} -> ${r.fdsEnd}`);
  if (r.poolAvailable !== r.poolCount) problems.push(`packet pool ${r.poolAvailable}/${r.poolCount} free at the end`);
  const lines = [
    `fuzz: ${r.messages} messages over ${r.connections} connections (${r.byKind.random} random, ${r.byKind.header} header, ${r.byKind.session} session)` +
      `${r.warmupMessages ? `, of them ${r.warmupMessages} / ${r.warmupConnections} in a ${r.warmupSeconds} s warm-up` : ''}; ${r.seconds.toFixed(0)} s measured`,
    `crashed: ${r.daemonCrashed}; witness checks ${r.witnessChecks}, failures ${r.witnessFailures.length}; fds ${r.fdsStart} -> ${r.fdsEnd}; pool ${r.poolAvailable}/${r.poolCount} free; ${r.logLines} log lines`,
  ];
  const row = (what: string, f: (m: MemSplit) => number): string => {
    const parts = [r.memStart, r.memBase, r.memEnd, r.memRest].map((m) => (m ? mib(f(m)) : '-'));
    const cold = r.memStart && r.memRest ? ` cold->rest ${pct(f(r.memStart), f(r.memRest))}` : '';
    const warm = r.memBase && r.memRest ? `, base->rest ${pct(f(r.memBase), f(r.memRest))}` : '';
    return `  ${what.padEnd(26)} ${parts.map((x) => x.padStart(8)).join(' ')}  ${cold}${warm}`;
  };
  lines.push(`memory, MiB: ${'start (cold)'.padStart(12)} ${'base'.padStart(8)} ${'end'.padStart(8)} ${'rest'.padStart(8)}`);
  lines.push(row('RSS', (m) => m.rss), row('own (RSS - guest memory)', (m) => m.own), row('anonymous', (m) => m.anon));
  lines.push(row('live heap, main', (m) => m.mainHeap), row('young gen main (committed)', (m) => m.mainSpaces.new_space ?? 0));
  (r.memStart?.pmdHeap ?? []).forEach((_, i) => lines.push(row(`live heap, pmd ${i}`, (m) => m.pmdHeap[i])));
  if (r.memBase && r.memRest) {
    const grew = (what: string, a: number, b: number): void => {
      if (b > a * (1 + maxGrowth)) problems.push(`${what} grew ${pct(a, b)} from the warm baseline (${mib(a)} -> ${mib(b)} MiB)`);
    };
    grew('own memory (RSS - guest memory)', r.memBase.own, r.memRest.own);
    grew('live heap of the main thread', r.memBase.mainHeap, r.memRest.mainHeap);
    r.memBase.pmdHeap.forEach((h, i) => grew(`live heap of PMD thread ${i}`, h, r.memRest!.pmdHeap[i]));
  }
  return { lines, problems };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (k: string): number | undefined => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const messages = arg('messages');
  const seconds = arg('seconds') ?? (messages !== undefined ? 24 * 3600 : 30);
  const snap = process.argv.indexOf('--heap-snapshots');
  runFuzz({ seconds, messages, seed: arg('seed'), warmupSeconds: arg('warmup') ?? 0, restSeconds: arg('rest') ?? 0, snapshotDir: snap > 0 ? path.resolve(process.argv[snap + 1]) : undefined, progress: (l) => console.log(l) }).then(
    (r) => {
      const out = process.argv.indexOf('--out');
      if (out > 0) fs.writeFileSync(process.argv[out + 1], JSON.stringify(r, null, 2) + '\n');
      else console.log(JSON.stringify(r, null, 2));
      const { lines, problems } = fuzzSummary(r);
      console.log([...lines, problems.length ? `FAILED:\n  ${problems.join('\n  ')}` : 'OK'].join('\n'));
      process.exit(problems.length ? 1 : 0);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
