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
 * Worker side: src/dp/pmd-worker.ts, the worker's entry module (a module of its own so that the main thread
 * does not load the data path and the port drivers it never runs).
 *
 * Where it runs: PmdThread on the daemon's main thread; workerMain in each PMD worker (one per
 * --pmd-cpus entry), which also runs the protocol side of the ports it polls (vhost-user messages,
 * virtio-user negotiation).
 */
import { Worker } from 'node:worker_threads';
import type { MempoolAttachInfo } from '../mem/mempool.js';
import type { DpFlowInfo, PackedFlows, PmdStats } from './datapath.js';
import type { PortSpec, PortInfo } from './port-spec.js';
import { StatsBoardReader, newBoardBuffer } from './stats-board.js';
import type { MemoryReport } from '../util/memory.js';
import type { LogLevel } from '../vhost/connection.js';
import type { UpcallBatch, UpcallAnswer, UpcallAnswerBuilder } from './upcall-batch.js';
import { UpcallChannelMain, newUpcallChannel, type UpcallChannelInfo } from './upcall-channel.js';
import type { DataPathDescription } from '../vhost/ring-lease.js';
import type { PortRelease } from './port-move.js';

export type { PortRelease };

/**
 * Longest time between two turns of a PMD thread's event loop while nothing waits there, ms. A turn
 * costs more the longer the loop ran without one (bench/tools/pmd-turns.ts, idle thread with two
 * vhost-user ports, 2026-12-03: a turn every 1 ms slice ~10 µs each, 1% of the time away; every 20 ms
 * ~100 µs, 0.5%; every 100 ms ~150 µs, 0.15%); the thread's timers tolerate 100 ms (the shortest are
 * reconnect back-offs of 20-50 ms and the guest-memory fault check every 20 ms).
 */
export const YIELD_MAX_MS = 100;

/** Lower bounds of the loopGaps buckets, µs. */
export const LOOP_GAP_BOUNDS_US = [50, 100, 200, 500, 1000, 2000] as const;

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
  /**
   * Gaps in the poll loop: times between two of its clock reads (a group of passes, or from the end of
   * one slice to the start of the next without a turn) longer than 50 µs, counted by length:
   * [50-100 µs, 100-200, 200-500, 500 µs-1 ms, 1-2 ms, over 2 ms] (LOOP_GAP_BOUNDS_US). Preemption,
   * garbage collection, long housekeeping; with heavy traffic also long busy groups (32 full passes).
   */
  loopGaps: number[];
}

export type Req =
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
    this.worker = new Worker(new URL('./pmd-worker.js', import.meta.url), {
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
