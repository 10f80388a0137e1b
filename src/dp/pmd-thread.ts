/**
 * PMD threads: a worker_thread that owns a set of ports and busy-polls them
 * through a Datapath, like OVS's pmd threads. The worker runs bursts in time
 * slices and, between two slices, lets its own event loop run only when
 * something waits there: a request of the main thread (counted in a shared
 * mailbox word, as OVS's PMD checks its reload flag), a request still being
 * answered, an event on one of its ports' control sockets (vhost-user
 * messages), or at the latest every `yieldMaxMs` (timers): OVS's PMD never
 * leaves its loop either. See YIELD_MAX_MS for what a turn costs.
 *
 * Main side: {@link PmdThread} (spawn, request/response over postMessage).
 * Worker side: this same file, when loaded as a worker.
 *
 * Where it runs: PmdThread on the daemon's main thread; workerMain in each PMD worker (one per
 * --pmd-cpus entry), which also runs the protocol side of the ports it polls (vhost-user messages,
 * virtio-user negotiation).
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Mempool, type MempoolAttachInfo } from '../mem/mempool.js';
import { watchesReady } from '../sys/poll.js';
import { Datapath, type DpFlowInfo, type PackedFlows, type PmdStats } from './datapath.js';
import { openPort, type PortSpec, type PortInfo, portInfo, portSignature } from './port-factory.js';
import * as libc from '../sys/libc.js';
import { CrossPmdTxPort } from './cross-pmd-port.js';
import { StatsBoardWriter, StatsBoardReader, newBoardBuffer, type BoardPortSource, type BoardExtra } from './stats-board.js';
import { CaptureSet, CaptureTap } from './capture-tap.js';
import { memoryReport, writeHeapSnapshot, type MemoryReport } from '../util/memory.js';
import type { Logger, LogLevel } from '../vhost/connection.js';
import { FLOW_WORDS } from './flow-key.js';
import { UpcallBatcher, applyUpcallAnswer, type UpcallBatch, type UpcallAnswer, type UpcallAnswerBuilder } from './upcall-batch.js';
import { UpcallChannelMain, UpcallChannelPmd, newUpcallChannel, type UpcallChannelInfo } from './upcall-channel.js';
import { VhostUserPort } from '../port/vhost-user.js';
import type { DataPathDescription } from '../vhost/ring-lease.js';
import { PortMover, type PortRelease } from './port-move.js';

export type { PortRelease };

/** Passes per clock read in the PMD loop: at least, at most, and the idle group's target time (ms). */
const GROUP_MIN = 32;
const GROUP_MAX = 4096;
const GROUP_IDLE_MS = 0.02;
/**
 * Longest time between two turns of a PMD thread's event loop while nothing waits there, ms. A turn
 * costs more the longer the loop ran without one (bench/tools/pmd-turns.ts, idle thread with two
 * vhost-user ports, 2026-12-03: a turn every 1 ms slice ~10 µs each, 1% of the time away; every 20 ms
 * ~100 µs, 0.5%; every 100 ms ~150 µs, 0.15%); the thread's timers tolerate 100 ms (the shortest are
 * reconnect back-offs of 20-50 ms and the guest-memory fault check every 20 ms).
 */
export const YIELD_MAX_MS = 100;

export interface PmdConfig {
  id: number;
  pool: MempoolAttachInfo;
  /** CPU to pin the worker to (optional). */
  cpu?: number;
  /** Max microseconds to sleep when idle (0: pure busy polling, like OVS's default). */
  sleepMaxUs?: number;
  /** Time slice between two checks for event-loop work (mailbox, control sockets), microseconds. */
  sliceUs?: number;
  /**
   * Longest run of slices without a turn of the event loop, ms (default YIELD_MAX_MS): the bound on
   * how late a timer of the thread (vhost-user message timeouts, reconnects, guest-memory fault
   * checks, virtio-pci link polls) runs. 0: a turn after every slice (as before the mailbox).
   */
  yieldMaxMs?: number;
  /**
   * One Int32 the main thread adds 1 to after each message it posts to the worker (set by
   * PmdThread): while it is 0 the worker needs no turn of its event loop for messages.
   */
  mailbox?: SharedArrayBuffer;
  /** Idle datapath flows expire after this many ms. */
  flowIdleMs?: number;
  /** Time per stage (rx, processing, tx) in pmd-stats (a few clock reads per burst). */
  perfMetrics?: boolean;
  /** One copy guest-to-guest between the thread's vhost-user ports (src/port/one-copy.ts). */
  oneCopy?: boolean;
  /** Shared memory upcalls and answers go through (set by PmdThread; see upcall-channel.ts). */
  upcallChannel?: UpcallChannelInfo;
  /** Shared memory the thread publishes its counters to (set by PmdThread). */
  board?: SharedArrayBuffer;
  /** Publish period of the board, ms (default 10). */
  boardPeriodMs?: number;
  /**
   * Lowest level of the lines the thread's ports log (default 'info'). Lines go to the main
   * thread as { t: 'log' } messages and out through the daemon's logger (one pino stream).
   */
  logLevel?: LogLevel;
}

export type { UpcallBatch, UpcallAnswer };

export interface PortEventMsg {
  t: 'port-event';
  pmd: number;
  port: number;
  info: PortInfo;
}

/** One rx queue a PMD thread polls. */
export interface PmdRxq {
  port: number;
  name: string;
  queue: number;
  rxPackets: number;
  /** Busy time spent on this queue since the port came to this thread, ns. */
  busyNs: number;
  /** Can move to another PMD thread (vhost-user ports; other types stay where they were opened). */
  movable: boolean;
  /** Share of the thread's time over the switch's load window, percent (filled in by the switch). */
  usage?: number;
}

/** A later data-path description of a moved port, from the thread that keeps its backend. */
export interface DataPathEventMsg {
  t: 'datapath';
  pmd: number;
  port: number;
  desc: DataPathDescription | null;
}

export interface PmdThreadStats extends PmdStats {
  pmd: number;
  cpu: number | null;
  flows: number;
  rxqs: PmdRxq[];
  /** Packet buffers free in the shared pool (as seen from this thread) and its size. */
  poolAvailable: number;
  poolCount: number;
  poolAllocFail: number;
  /** Turns of the worker's event loop so far (one per request, control-socket event, or yieldMaxMs). */
  loopTurns: number;
  /** Time the poll loop spent away in those turns (from its return to its next start), ns; and the longest. */
  loopTurnNs: number;
  loopTurnMaxNs: number;
}

type Req =
  | { op: 'add-port'; portNo: number; spec: PortSpec }
  | { op: 'del-port'; portNo: number }
  | { op: 'add-cross-pmd-port'; portNo: number; name: string; ring: Uint8Array }
  | { op: 'add-tx-source'; portNo: number; ring: Uint8Array; from?: number }
  | { op: 'release-port'; portNo: number; ring: Uint8Array }
  | { op: 'adopt-port'; portNo: number; name: string; rel: PortRelease }
  | { op: 'set-datapath'; portNo: number; desc: DataPathDescription | null }
  | { op: 'drain-tx-sources' }
  | { op: 'del-tx-sources'; portNo: number }
  | { op: 'flow-put'; key: number[]; mask: number[]; actions: number[] }
  | { op: 'flow-del'; id: number }
  | { op: 'flow-del-many'; ids: Int32Array }
  | { op: 'flow-flush' }
  | { op: 'packet-out'; frame: Uint8Array; actions: number[] }
  | { op: 'dump-flows' }
  | { op: 'dump-flows-packed' }
  | { op: 'stats' }
  | { op: 'memory'; gc: boolean; snapshotDir?: string }
  | { op: 'capture-start'; id: number; portNo: number; dirs: number; buf: SharedArrayBuffer }
  | { op: 'capture-stop'; id: number }
  | { op: 'ports' }
  | { op: 'set-one-copy'; on: boolean }
  | { op: 'stop' };

// ---------------- worker side ----------------

const LOG_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
/** Longest wait of a PMD thread for an answer while its upcall queue is full, ms. */
const UPCALL_WAIT_MS = 1;

function workerMain(cfg: PmdConfig): void {
  const port = parentPort!;
  // the ports' lines (vhost-user protocol, virtio-user) go to the main thread's logger
  const minRank = LOG_RANK[cfg.logLevel ?? 'info'];
  const portLog: Logger = {
    log: (level, msg) => {
      if (LOG_RANK[level] >= minRank) port.postMessage({ t: 'log', level, msg });
    },
  };
  if (cfg.cpu !== undefined) {
    try {
      libc.setAffinity([cfg.cpu]);
    } catch (e) {
      port.postMessage({ t: 'log', level: 'warn', msg: `pmd ${cfg.id}: cannot pin to cpu ${cfg.cpu}: ${(e as Error).message}` });
    }
  }
  const pool = Mempool.attach(cfg.pool);
  const upBatch = new UpcallBatcher(cfg.id);
  // upcalls and answers through shared memory (upcall-channel.ts); a channel is always given by PmdThread
  const chan = new UpcallChannelPmd(cfg.upcallChannel ?? newUpcallChannel(), cfg.id);
  const installError = (e: Error): void => port.postMessage({ t: 'log', level: 'warn', msg: `pmd ${cfg.id}: flow install refused: ${e.message}` });
  const dp = new Datapath(pool, {
    upcall(id, portNo, frame, key) {
      // in bulk: many misses per batch, sent through the channel at the loop's flush points (while the
      // slow path is behind, setup-only upcalls past the batcher's backlog are skipped: see UpcallBatcher)
      upBatch.add(id, portNo, frame, key);
    },
    upcallAt(id, portNo, data, off, len, key) {
      upBatch.addAt(id, portNo, data, off, len, key);
    },
  }, { oneCopy: cfg.oneCopy === true });
  dp.perf = cfg.perfMetrics === true;
  const mover = new PortMover(dp, pool, cfg.id);
  const sleepMax = cfg.sleepMaxUs ?? 0;
  const slice = (cfg.sliceUs ?? 1000) / 1000;
  let stopping = false;
  let idleStreak = 0;
  let lastExpire = Date.now();
  let lastLinkCheck = 0;
  const linkSig = new Map<number, string>();
  const flowIdle = cfg.flowIdleMs ?? 10000;
  const board = cfg.board ? new StatsBoardWriter(cfg.board) : null;
  const boardPeriod = cfg.boardPeriodMs ?? 10;
  let lastPublish = 0;
  // what a publication needs, kept from one to the next (every boardPeriod from the poll loop: no
  // garbage while the thread's ports stay the same)
  let boardPortList: readonly number[] | null = null;
  const boardPorts: [number, BoardPortSource][] = [];
  const boardExtra: BoardExtra = { flows: 0, pending: 0, poolAvailable: 0, poolCount: 0, poolAllocFail: 0, nowMs: 0 };
  const boardRxq = (n: number, q: number): number => dp.rxqCount(n, q);
  const publish = (now: number): void => {
    lastPublish = now;
    if (dp.portListView !== boardPortList) {
      boardPortList = dp.portListView;
      boardPorts.length = 0;
      for (const n of boardPortList) {
        const p = dp.port(n)!;
        if (p.type !== 'cross-pmd') boardPorts.push([n, p]);
      }
    }
    const x = boardExtra;
    x.flows = dp.flowCount;
    x.pending = dp.pendingUpcalls;
    x.poolAvailable = pool.available();
    x.poolCount = pool.count;
    x.poolAllocFail = pool.stats.allocFail;
    x.nowMs = now;
    board!.publishCounters(dp.counters, dp.drops, x, boardPorts, boardRxq);
  };

  // Passes between two clock reads: each read allocates (a 16-byte number in Node 20, the young
  // generation's main filler in an idle PMD), so the group grows while idle until a group takes
  // about GROUP_IDLE_MS, and shrinks back when it takes more than 3x that.
  let group = GROUP_MIN;
  // an idle pass's time (ms), averaged over groups that moved nothing: a group's busy time is its
  // time less its idle passes' estimated share
  let idlePassMs = 0;
  // Event-loop turns (see the file's comment): requests posted and not yet seen, requests being answered
  // (an async one such as add-port waits on the loop), and when the last turn was.
  const mail = cfg.mailbox ? new Int32Array(cfg.mailbox) : null;
  const yieldMax = mail === null ? 0 : (cfg.yieldMaxMs ?? YIELD_MAX_MS);
  let inflight = 0;
  let turns = 0;
  let turnNs = 0;
  let turnMaxNs = 0;
  // when the loop last returned to the event loop (performance.now(); -1: not returned)
  let turnFrom = -1;
  let lastTurn = Date.now();
  /** Whether the event loop must run before the next slice (`now`: Date.now() at the slice's end). */
  const turnDue = (now: number): boolean => {
    if (inflight > 0 || now - lastTurn >= yieldMax) return true;
    // a request posted: the count is cleared for the turn that serves it (a message posted after the
    // exchange counts for the next turn; one served early only makes one turn more)
    if (Atomics.load(mail!, 0) !== 0) {
      Atomics.exchange(mail!, 0, 0);
      return true;
    }
    return watchesReady();
  };
  const loop = (): void => {
    lastTurn = Date.now();
    if (turnFrom >= 0) {
      const away = (performance.now() - turnFrom) * 1e6;
      turnNs += away;
      if (away > turnMaxNs) turnMaxNs = away;
      turnFrom = -1;
    }
    for (;;) {
      if (stopping) return;
      const now = runSlice();
      if (moved === 0 && sleepMax > 0) {
        // sleeping, not a turn to account
        idleStreak = Math.min(idleStreak + 1, 10);
        setTimeout(loop, Math.min(sleepMax / 1000, idleStreak / 10));
        return;
      }
      idleStreak = 0;
      if (turnDue(now)) {
        turns++;
        turnFrom = performance.now();
        setImmediate(loop);
        return;
      }
    }
  };
  // packets the last slice moved
  let moved = 0;
  /** One slice of polling and its housekeeping; returns Date.now() at its end. */
  const runSlice = (): number => {
    const t0 = performance.now();
    const end = t0 + slice;
    let n0 = 0;
    let busyMs = 0;
    let t = t0;
    dp.tick(Date.now());
    do {
      const mark = t;
      let busyPasses = 0;
      let k = 0;
      while (k < group) {
        const n = dp.pollOnce();
        k++;
        if (n > 0) {
          n0 += n;
          busyPasses++;
          // with traffic, a group ends after GROUP_MIN passes (upcalls go out, the clock is read)
          if (k >= GROUP_MIN || dp.passRecordFull) break;
        }
      }
      // upcalls out, answers in (shared memory: no message, no wait for the end of the slice)
      if (upBatch.count > 0) chan.send(upBatch);
      // the upcall queue is full (every further miss would be dropped) and the slow path is behind:
      // wait for its next answer (bounded), which leaves the CPU to it when the two share one
      let waitedMs = 0;
      if (dp.upcallQueueFull && chan.slowPathBusy) {
        const w0 = performance.now();
        chan.waitForAnswer(UPCALL_WAIT_MS);
        waitedMs = performance.now() - w0;
      }
      chan.receive(dp, installError);
      t = performance.now();
      const el = t - mark - waitedMs;
      if (busyPasses === 0) {
        idlePassMs += (el / k - idlePassMs) * 0.125;
        if (el < GROUP_IDLE_MS && group < GROUP_MAX) group *= 2;
        else if (el > 3 * GROUP_IDLE_MS && group > GROUP_MIN) group >>= 1;
      } else {
        let b = el - (k - busyPasses) * idlePassMs;
        const least = busyPasses * idlePassMs;
        if (b < least) b = least < el ? least : el;
        busyMs += b;
        dp.chargePass(b * 1e6);
        if (group > GROUP_MIN) group >>= 1;
      }
    } while (t < end);
    dp.account((t - t0) * 1e6, busyMs * 1e6);
    moved = n0;
    const now = Date.now();
    if (board !== null && now - lastPublish >= boardPeriod) publish(now);
    if (now - lastLinkCheck > 200) {
      lastLinkCheck = now;
      for (const n of dp.portNumbers()) {
        const p = dp.port(n)!;
        if (p.type === 'cross-pmd') continue; // a ring to another thread's port: that thread reports it
        const sig = portSignature(p);
        if (linkSig.get(n) !== sig) {
          linkSig.set(n, sig);
          port.postMessage({ t: 'port-event', pmd: cfg.id, port: n, info: portInfo(p) } satisfies PortEventMsg);
        }
      }
    }
    if (now - lastExpire > 1000) {
      lastExpire = now;
      dp.expireIdle(flowIdle, now);
    }
    return now;
  };

  const handle = async (req: Req): Promise<unknown> => {
    switch (req.op) {
      case 'add-port': {
        const p = await openPort(req.spec, pool, portLog);
        try {
          dp.addPort(req.portNo, p);
        } catch (e) {
          p.close();
          throw e;
        }
        return portInfo(p);
      }
      case 'del-port': {
        const p = dp.removePort(req.portNo);
        p?.close();
        const parked = mover.closeParked(req.portNo);
        return p !== null || parked;
      }
      case 'add-cross-pmd-port':
        dp.addPort(req.portNo, new CrossPmdTxPort(req.name, req.ring));
        return true;
      case 'add-tx-source':
        dp.addTxSource(req.portNo, req.ring, req.from ?? -1);
        return true;
      case 'release-port': {
        const portNo = req.portNo;
        const rel = mover.release(portNo, req.ring, (d) => port.postMessage({ t: 'datapath', pmd: cfg.id, port: portNo, desc: d } satisfies DataPathEventMsg));
        linkSig.delete(portNo);
        return rel;
      }
      case 'adopt-port':
        mover.adopt(req.portNo, req.name, req.rel);
        return true;
      case 'set-datapath':
        mover.setDataPath(req.portNo, req.desc);
        return true;
      case 'drain-tx-sources':
        return dp.drainTxSources();
      case 'del-tx-sources':
        dp.removeTxSources(req.portNo);
        return true;
      case 'flow-put':
        return dp.installFlow(req.key, req.mask, Int32Array.from(req.actions));
      case 'flow-del':
        return dp.removeFlow(req.id);
      case 'flow-del-many': {
        let n = 0;
        for (const id of req.ids) if (dp.removeFlow(id)) n++;
        return n;
      }
      case 'flow-flush':
        return dp.flushFlows();
      case 'packet-out':
        return dp.inject(req.frame, Int32Array.from(req.actions));
      case 'dump-flows':
        return dp.dumpFlows();
      case 'dump-flows-packed':
        return dp.dumpFlowsPacked();
      case 'ports':
        return dp.portNumbers().filter((n) => dp.port(n)!.type !== 'cross-pmd').map((n) => ({ portNo: n, ...portInfo(dp.port(n)!) }));
      case 'stats': {
        const rxqs: PmdRxq[] = [];
        for (const n of dp.portNumbers()) {
          const p = dp.port(n)!;
          const movable = p instanceof VhostUserPort;
          for (let q = 0; q < p.nQueues; q++) rxqs.push({ port: n, name: p.name, queue: q, rxPackets: dp.rxqCount(n, q), busyNs: dp.rxqBusy(n, q), movable });
        }
        return {
          ...dp.stats, drops: { ...dp.stats.drops }, pmd: cfg.id, cpu: cfg.cpu ?? null, flows: dp.flowCount, rxqs,
          poolAvailable: pool.available(), poolCount: pool.count, poolAllocFail: pool.stats.allocFail, loopTurns: turns,
          loopTurnNs: turnNs, loopTurnMaxNs: turnMaxNs,
        } satisfies PmdThreadStats;
      }
      case 'memory': {
        const r = memoryReport({ gc: req.gc });
        return req.snapshotDir ? { ...r, snapshot: writeHeapSnapshot(req.snapshotDir, `pmd${cfg.id}`) } : r;
      }
      case 'capture-start': {
        const p = dp.port(req.portNo);
        if (!p || p.type === 'cross-pmd') throw new Error(`port ${req.portNo} is not polled by pmd ${cfg.id}`);
        if (dp.capture === null) dp.capture = new CaptureSet(pool);
        dp.capture.add(new CaptureTap(req.id, req.portNo, req.dirs, req.buf));
        return true;
      }
      case 'capture-stop': {
        const found = dp.capture?.remove(req.id) ?? false;
        if (dp.capture !== null && dp.capture.size === 0) dp.capture = null;
        return found;
      }
      case 'set-one-copy':
        dp.setOneCopy(req.on);
        return dp.oneCopy;
      case 'stop': {
        stopping = true;
        for (const n of dp.portNumbers()) dp.removePort(n)?.close();
        mover.closeAll();
        dp.drain();
        return true;
      }
    }
  };

  port.on('message', (m: { seq?: number; req?: Req; t?: string; answer?: UpcallAnswer }) => {
    if (m.t === 'upcall-answer') {
      // an answer that did not fit the channel: megaflows first (in one go), then the held packets
      applyUpcallAnswer(dp, m.answer!, installError);
      return;
    }
    if (m.req === undefined) return;
    inflight++;
    handle(m.req).then(
      (result) => {
        inflight--;
        // a flow dump (one per revalidation pass, ~150 bytes per flow) is made for the message: its buffers move, not copied
        if (m.req!.op === 'dump-flows-packed') {
          const f = result as PackedFlows;
          const transfer = [f.ids, f.xids, f.keys, f.masks, f.packets, f.bytes, f.actOff, f.acts].map((a) => a.buffer as ArrayBuffer);
          port.postMessage({ t: 'resp', seq: m.seq, result }, transfer);
        } else port.postMessage({ t: 'resp', seq: m.seq, result });
      },
      (e: Error) => {
        inflight--;
        port.postMessage({ t: 'resp', seq: m.seq, error: { message: e.message, name: e.name } });
      },
    );
  });
  setImmediate(loop);
}

if (!isMainThread && (workerData as { pmdWorker?: boolean } | undefined)?.pmdWorker) {
  workerMain((workerData as { cfg: PmdConfig }).cfg);
}

// ---------------- main side ----------------

export interface PmdEvents {
  upcalls(batch: UpcallBatch): void;
  portEvent(msg: PortEventMsg): void;
  /** A moved port's backend (parked in this thread) has a new data-path description for the poller. */
  dataPath?(msg: DataPathEventMsg): void;
  log(level: string, msg: string): void;
  exit(code: number): void;
}

/** V8 young generation of a PMD worker thread, MiB (see the constructor). */
export const PMD_YOUNG_GENERATION_MB = 2;

export class PmdThread {
  readonly id: number;
  readonly cpu: number | undefined;
  /** The thread's counters in shared memory (read without messaging the thread). */
  readonly board: StatsBoardReader;
  private readonly worker: Worker;
  /** Upcall batches in, answers out (shared memory). */
  private readonly chan: UpcallChannelMain;
  /** Messages posted to the worker and not yet seen by its poll loop (see PmdConfig.mailbox). */
  private readonly mailbox: Int32Array;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited = false;

  constructor(cfg: PmdConfig, events: PmdEvents) {
    this.id = cfg.id;
    this.cpu = cfg.cpu;
    const board = cfg.board ?? newBoardBuffer();
    this.board = new StatsBoardReader(board);
    const upcallChannel = cfg.upcallChannel ?? newUpcallChannel();
    const mailbox = cfg.mailbox ?? new SharedArrayBuffer(4);
    this.mailbox = new Int32Array(mailbox);
    this.chan = new UpcallChannelMain(upcallChannel, cfg.id);
    // The young generation is capped (PMD_YOUNG_GENERATION_MB): V8 otherwise grows it to 32 MiB under an
    // allocation burst (fuzzed frontends, flow setup) and keeps it committed, while the poll loop itself
    // allocates little (its clock reads: see GROUP_IDLE_MS); 2 MiB is V8's starting size, scavenged in well under a millisecond. A node
    // --max-semi-space-size overrides this limit: tsvs daemon sets it to match (src/daemon/heap-limits.ts).
    this.worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: { pmdWorker: true, cfg: { ...cfg, board, upcallChannel, mailbox } },
      resourceLimits: { maxYoungGenerationSizeMb: PMD_YOUNG_GENERATION_MB },
    });
    this.worker.on('message', (m: { t: string; seq?: number; result?: unknown; error?: { message: string; name: string } } & Record<string, unknown>) => {
      if (m.t === 'resp') {
        const w = this.waiting.get(m.seq!);
        if (!w) return;
        this.waiting.delete(m.seq!);
        if (m.error) {
          const e = new Error(m.error.message);
          e.name = m.error.name;
          w.reject(e);
        } else w.resolve(m.result);
      } else if (m.t === 'port-event') events.portEvent(m as unknown as PortEventMsg);
      else if (m.t === 'datapath') events.dataPath?.(m as unknown as DataPathEventMsg);
      else if (m.t === 'log') events.log(String(m.level), String(m.msg));
    });
    this.worker.on('error', (e) => events.log('error', `pmd ${cfg.id} crashed: ${e.stack ?? e.message}`));
    const upcalls = events.upcalls;
    const chan = this.chan;
    void chan.run(() => {
      try {
        chan.drain(upcalls);
      } catch (e) {
        events.log('error', `pmd ${cfg.id}: upcall handling failed: ${(e as Error).stack ?? (e as Error).message}`);
      }
    });
    this.worker.on('exit', (code) => {
      this.exited = true;
      chan.close();
      for (const w of this.waiting.values()) w.reject(new Error(`pmd ${cfg.id} exited (code ${code})`));
      this.waiting.clear();
      events.exit(code);
    });
  }

  request<T = unknown>(req: Req): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`pmd ${this.id} is not running`));
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ seq, req });
      Atomics.add(this.mailbox, 0, 1);
    });
  }

  /**
   * Answer a batch of upcalls with what `out` holds: through the channel, or
   * as a message (its buffers transferred) when it does not fit a free slot.
   */
  answerUpcalls(out: UpcallAnswerBuilder): void {
    if (this.exited || this.chan.answer(out)) return;
    const { answer, transfer } = out.build();
    this.worker.postMessage({ t: 'upcall-answer', answer }, transfer);
    Atomics.add(this.mailbox, 0, 1);
  }

  addPort(portNo: number, spec: PortSpec): Promise<PortInfo> {
    return this.request({ op: 'add-port', portNo, spec });
  }
  delPort(portNo: number): Promise<boolean> {
    return this.request({ op: 'del-port', portNo });
  }
  addCrossPmdPort(portNo: number, name: string, ring: Uint8Array): Promise<boolean> {
    return this.request({ op: 'add-cross-pmd-port', portNo, name, ring });
  }
  addTxSource(portNo: number, ring: Uint8Array, from?: number): Promise<boolean> {
    return this.request({ op: 'add-tx-source', portNo, ring, from });
  }
  /** Stop polling a port (it moves to another PMD thread); packets for it go into `ring` from now on. */
  releasePort(portNo: number, ring: Uint8Array): Promise<PortRelease> {
    return this.request({ op: 'release-port', portNo, ring });
  }
  /** Poll a port another PMD thread released (resumes its rings where they stopped). */
  adoptPort(portNo: number, name: string, rel: PortRelease): Promise<boolean> {
    return this.request({ op: 'adopt-port', portNo, name, rel });
  }
  /** Send now what other threads put in the rings for this thread's ports (see PortMover). */
  drainTxSources(): Promise<number> {
    return this.request({ op: 'drain-tx-sources' });
  }
  /** A later data-path description for a port this thread polls without owning it. */
  setDataPath(portNo: number, desc: DataPathDescription | null): Promise<boolean> {
    return this.request({ op: 'set-datapath', portNo, desc });
  }
  delTxSources(portNo: number): Promise<boolean> {
    return this.request({ op: 'del-tx-sources', portNo });
  }
  putFlow(key: ArrayLike<number>, mask: ArrayLike<number>, actions: ArrayLike<number>): Promise<number> {
    return this.request({ op: 'flow-put', key: Array.from(key), mask: Array.from(mask), actions: Array.from(actions) });
  }
  delFlow(id: number): Promise<boolean> {
    return this.request({ op: 'flow-del', id });
  }
  /** Remove many flows in one message; resolves to how many existed. */
  delFlows(ids: ArrayLike<number>): Promise<number> {
    return this.request({ op: 'flow-del-many', ids: Int32Array.from(ids) });
  }
  flushFlows(): Promise<number> {
    return this.request({ op: 'flow-flush' });
  }
  /** Send a frame through a datapath action program (OpenFlow PACKET_OUT). */
  packetOut(frame: Uint8Array, actions: ArrayLike<number>): Promise<boolean> {
    return this.request({ op: 'packet-out', frame, actions: Array.from(actions) });
  }
  dumpFlows(): Promise<DpFlowInfo[]> {
    return this.request({ op: 'dump-flows' });
  }
  /** All flows as flat arrays (revalidation). */
  dumpFlowsPacked(): Promise<PackedFlows> {
    return this.request({ op: 'dump-flows-packed' });
  }
  stats(): Promise<PmdThreadStats> {
    return this.request({ op: 'stats' });
  }
  /** This thread's V8 heap (its own isolate) and the process's RSS; gc: full GCs first (pauses polling for a few ms). */
  memory(gc = false, snapshotDir?: string): Promise<MemoryReport & { snapshot?: string }> {
    return this.request({ op: 'memory', gc, snapshotDir });
  }
  ports(): Promise<(PortInfo & { portNo: number })[]> {
    return this.request({ op: 'ports' });
  }
  /** Start copying frames of a port this thread polls into a capture ring (see capture-tap.ts). */
  captureStart(id: number, portNo: number, dirs: number, buf: SharedArrayBuffer): Promise<boolean> {
    return this.request({ op: 'capture-start', id, portNo, dirs, buf });
  }
  /** One copy guest-to-guest on or off (between passes). */
  setOneCopy(on: boolean): Promise<boolean> {
    return this.request({ op: 'set-one-copy', on });
  }
  captureStop(id: number): Promise<boolean> {
    return this.request({ op: 'capture-stop', id });
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    try {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.request({ op: 'stop' }), new Promise((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
    } catch {
      /* already gone */
    }
    await this.worker.terminate();
  }
}
