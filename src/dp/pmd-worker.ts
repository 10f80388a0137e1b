/**
 * The PMD worker thread's entry module (the main side, {@link PmdThread}, and what the file's comment says
 * of the poll loop are in src/dp/pmd-thread.ts; a module of its own so that the daemon's main thread does not
 * load the data path, the port drivers and the vhost-user protocol it never runs).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Mempool } from '../mem/mempool.js';
import { turnsHeld, watchesReady } from '../sys/poll.js';
import { Datapath, type PackedFlows } from './datapath.js';
import { openPort, portInfo, portSignature } from './port-factory.js';
import * as libc from '../sys/libc.js';
import { CrossPmdTxPort } from './cross-pmd-port.js';
import { StatsBoardWriter, type BoardPortSource, type BoardExtra } from './stats-board.js';
import { CaptureSet, CaptureTap } from './capture-tap.js';
import { memoryReport, writeHeapSnapshot } from '../util/memory.js';
import type { Logger, LogLevel } from '../vhost/connection.js';
import { FLOW_WORDS } from './flow-key.js';
import { UpcallBatcher, applyUpcallAnswer, type UpcallAnswer } from './upcall-batch.js';
import { UpcallChannelPmd, newUpcallChannel } from './upcall-channel.js';
import { VhostUserPort } from '../port/vhost-user.js';
import { PortMover } from './port-move.js';
import { YIELD_MAX_MS, LOOP_GAP_BOUNDS_US, type PmdConfig, type Req, type PortEventMsg, type DataPathEventMsg, type PmdRxq, type PmdThreadStats } from './pmd-thread.js';

/** Passes per clock read in the PMD loop: at least, at most, and the idle group's target time (ms). */
const GROUP_MIN = 32;
const GROUP_MAX = 4096;
const GROUP_IDLE_MS = 0.02;

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
  let lastTurn = performance.now();
  // gaps in the loop by length (PmdThreadStats.loopGaps); lastEnd: performance.now() at the end of the
  // last slice's polling (-1: after a turn, which is counted apart)
  const gaps = new Float64Array(LOOP_GAP_BOUNDS_US.length);
  const gapBounds = Float64Array.from(LOOP_GAP_BOUNDS_US, (us) => us / 1000);
  let lastEnd = -1;
  const noteGap = (ms: number): void => {
    let i = gapBounds.length - 1;
    while (i > 0 && ms < gapBounds[i]) i--;
    gaps[i]++;
  };
  /**
   * Whether the event loop must run before the next slice (`now`: performance.now(), monotonic: a wall
   * clock stepped back would hold the safety interval off for as long).
   */
  const turnDue = (now: number): boolean => {
    if (inflight > 0 || turnsHeld() || now - lastTurn >= yieldMax) return true;
    // a request posted: the count is cleared for the turn that serves it (a message posted after the
    // exchange counts for the next turn; one served early only makes one turn more)
    if (Atomics.load(mail!, 0) !== 0) {
      Atomics.exchange(mail!, 0, 0);
      return true;
    }
    return watchesReady();
  };
  const loop = (): void => {
    lastTurn = performance.now();
    lastEnd = -1;
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
      if (turnDue(performance.now())) {
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
    if (lastEnd >= 0 && t0 - lastEnd > gapBounds[0]) noteGap(t0 - lastEnd);
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
      if (el > gapBounds[0]) noteGap(el);
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
    lastEnd = t;
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
          loopTurnNs: turnNs, loopTurnMaxNs: turnMaxNs, loopGaps: Array.from(gaps),
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

if ((workerData as { pmdWorker?: boolean } | undefined)?.pmdWorker) {
  workerMain((workerData as { cfg: PmdConfig }).cfg);
}

