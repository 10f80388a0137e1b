/**
 * What the observers (Prometheus metrics, `tsvs top`, the web dashboard) see
 * of a running switch: counters the PMD threads publish to shared memory
 * (see src/dp/stats-board.ts) plus the topology the main thread keeps. Taking
 * a view never messages a PMD thread.
 */
import type { BoardSnapshot } from '../dp/stats-board.js';

export interface ViewPort {
  bridge: string;
  name: string;
  ofport: number;
  type: string;
  link: string;
  status: string;
  error: string;
  pmd: number;
}

export interface ViewPmd {
  id: number;
  cpu: number | null;
  board: BoardSnapshot;
}

export interface SwitchView {
  /** ms since epoch when the view was taken. */
  timeMs: number;
  pmds: ViewPmd[];
  bridges: { name: string; ports: ViewPort[] }[];
  pool: { count: number; free: number; bufSize: number };
}

/** A switch as observers use it. `call` runs a control method in-process (e.g. dump-dp-flows). */
export interface ObservableSwitch {
  view(): SwitchView;
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
}

/** Something control methods can be registered on (the daemon's control server). */
export interface MethodTable {
  on(method: string, handler: (params: Record<string, unknown>) => unknown): unknown;
}

/** One datapath flow as `dump-dp-flows --json` gives it. */
export interface DpFlowRow {
  pmd: number;
  id: number;
  packets: number;
  bytes: number;
  used: string;
  match: string;
  mask: string;
  actions: string;
}
