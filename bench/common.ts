/** What every scenario gets, and what it returns. */
import type { ScenarioResult } from './report.js';

export interface BenchContext {
  /** Repetitions (subjects interleaved within each). */
  reps: number;
  /** Measured seconds per run. */
  seconds: number;
  /** Warm-up seconds per run (excluded). */
  warmup: number;
  quick: boolean;
  /** CPU of the traffic generator / sink side. */
  genCpu: number;
  /** CPU of the switch under test. */
  swCpu: number;
  log(msg: string): void;
  /** Only these subjects (e.g. 'tsvs', 'ovs-dpdk'); empty: all. */
  only?: string[];
  /** Frame sizes for the scenarios that take several (--sizes); default: theirs. */
  sizes?: number[];
  /** p2p loop variants (--variants); default all. */
  variants?: ('oneway' | 'bidir' | 'txfirst')[];
  /** flows: the flow counts measured (--counts 1,100000); default theirs. */
  counts?: number[];
}

/** The subjects of a scenario that --subject selected. */
export function wanted<T extends string>(ctx: BenchContext, subjects: readonly T[]): T[] {
  return ctx.only && ctx.only.length ? subjects.filter((s) => ctx.only!.includes(s)) : [...subjects];
}

export interface Scenario {
  name: string;
  title: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}

/** A subject that cannot run here (missing driver, tool or privilege): reported, not fatal. */
export class Unavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Unavailable';
  }
}

export function errText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.replace(/\s+/g, ' ').trim().slice(0, 400);
}

/** Subjects in a different rotation each repetition, so no one always goes first. */
export function rotate<T>(xs: readonly T[], rep: number): T[] {
  const k = xs.length ? rep % xs.length : 0;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

export const FRAME_SIZES = [64, 256, 1518] as const;
