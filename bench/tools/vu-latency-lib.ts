/**
 * The pieces of the vhost-user latency tool (bench/tools/vu-latency.ts) that
 * are not its busy loop: the probe frame, the result line it prints and its
 * parser, and the summary of the measured round trips. Kept apart so they can
 * be unit-tested without a switch.
 */
import { percentile } from '../stats.js';
import { ipv4HeaderChecksum } from '../../src/util/net.js';

/** Payload offset (Ethernet 14 + IPv4 20 + UDP 8). */
export const PAY = 42;
/** Payload magic of a timed probe ('PROB'). */
export const PROBE_MAGIC = 0x50524f42;
/** Payload magic of a background (load) frame ('BGLD'). */
export const BG_MAGIC = 0x42474c44;
/** Payload layout: u32 magic at PAY, u32 seq at PAY + 4, f64 send time (ms, performance.now) at PAY + 8. */
export const OFF_MAGIC = PAY;
export const OFF_SEQ = PAY + 4;
export const OFF_TS = PAY + 8;
export const MIN_PROBE_FRAME = PAY + 16;

export type LoadLevel = 'idle' | 'medium';
export const LOAD_LEVELS: readonly LoadLevel[] = ['idle', 'medium'];

/** Prefix of the one stdout line per load level. */
export const RESULT_PREFIX = 'VU-LATENCY ';

export interface VuLatencyResult {
  load: LoadLevel;
  /** Round trips of probes sent and answered in the measured window (µs). */
  median_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  /** Probes sent in the measured window. */
  probes: number;
  /** Of those, never answered (after the drain at the end). */
  lost: number;
  /** Background frames back at port A per second in the measured window, Mpps (0 for idle). */
  rate_mpps: number;
  /** The background rate asked for, Mpps. */
  target_mpps: number;
  bg_sent: number;
  bg_lost: number;
  /** Frames a port refused to send (ring full), probes and background. */
  tx_refused: number;
  /** Frames back at A that were not ours, duplicated, stale or corrupted. */
  bad: number;
  /**
   * Loop iterations of the tool longer than 20 µs in the measured window
   * (the tool was descheduled or paused), and their total time: a probe in
   * flight then gets a longer round trip that is not the switch's doing (it is not timed: see
   * `tainted`).
   */
  tool_stalls: number;
  tool_stall_ms: number;
  /**
   * Probes of the window that came back but were not timed because a stall of the tool overlapped
   * their round trip (the tool, not the switch, held them); not in the percentiles, not lost.
   */
  tainted: number;
  /** Times the background pacing was restarted because the tool fell more than 4 bursts behind. */
  pacing_resets: number;
  seconds: number;
}

/**
 * A UDP/IPv4 frame of `size` bytes from macA to macB, valid IPv4 header
 * checksum, payload zero (magic, seq and timestamp are written per frame).
 */
export function probeTemplate(size: number, macA: Uint8Array, macB: Uint8Array): Uint8Array {
  if (!(Number.isInteger(size) && size >= 60 && size <= 1518)) throw new RangeError(`frame size must be in 60..1518, got ${size}`);
  const t = new Uint8Array(size);
  t.set(macB, 0);
  t.set(macA, 6);
  t[12] = 0x08;
  t[13] = 0x00;
  const ipLen = size - 14;
  t.set([0x45, 0, ipLen >> 8, ipLen & 0xff, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2], 14);
  const udpLen = ipLen - 20;
  t.set([0x1b, 0x58, 0x1b, 0x59, udpLen >> 8, udpLen & 0xff, 0, 0], 34);
  ipv4HeaderChecksum(t, 14);
  return t;
}

/** Median, p99, p99.9 and max of rtts[0..n) (µs), percentiles as bench/stats.ts computes them. */
export function summarizeRtts(rtts: Float64Array, n: number): { median: number; p99: number; p999: number; max: number } {
  if (n <= 0) return { median: NaN, p99: NaN, p999: NaN, max: NaN };
  const v = Array.from(rtts.subarray(0, n));
  // a loop, not Math.max(...v): spreading 100k+ samples overflows the call stack
  let max = -Infinity;
  for (const x of v) if (x > max) max = x;
  return { median: percentile(v, 50), p99: percentile(v, 99), p999: percentile(v, 99.9), max };
}

export function formatResult(r: VuLatencyResult): string {
  return RESULT_PREFIX + JSON.stringify(r);
}

const NUM_FIELDS = ['median_us', 'p99_us', 'p999_us', 'max_us', 'probes', 'lost', 'rate_mpps', 'target_mpps', 'bg_sent', 'bg_lost', 'tx_refused', 'bad', 'tool_stalls', 'tool_stall_ms', 'tainted', 'pacing_resets', 'seconds'] as const;

/**
 * The result lines in the tool's output (other lines ignored). A result line
 * that does not parse or lacks a field throws: a broken tool must not turn
 * into a missing row.
 */
export function parseVuLatency(out: string): VuLatencyResult[] {
  const res: VuLatencyResult[] = [];
  for (const line of out.split('\n')) {
    const i = line.indexOf(RESULT_PREFIX);
    if (i < 0) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line.slice(i + RESULT_PREFIX.length)) as Record<string, unknown>;
    } catch {
      throw new Error(`vu-latency: unparsable result line: ${line.slice(0, 200)}`);
    }
    if (o === null || typeof o !== 'object' || !LOAD_LEVELS.includes(o.load as LoadLevel)) throw new Error(`vu-latency: result without a load level: ${line.slice(0, 200)}`);
    for (const f of NUM_FIELDS) {
      // JSON has no NaN: a summary of zero probes comes out as null
      if (o[f] === null) o[f] = NaN;
      if (typeof o[f] !== 'number') throw new Error(`vu-latency: result field ${f} missing or not a number: ${line.slice(0, 200)}`);
    }
    res.push(o as unknown as VuLatencyResult);
  }
  return res;
}

/** Validity limits of one level's result (see runProblems). */
export const VALID = {
  /** The background back at A must reach this fraction of its target rate. */
  minRateFraction: 0.9,
  /** The tool may be descheduled (loop iterations > 20 µs) for at most this fraction of the window... */
  maxStallFraction: 0.1,
  /** ...and at most this fraction of the probes that came back may be left untimed because a stall overlapped them. */
  maxTaintedFraction: 0.05,
  /** Probes sent: at least this fraction of what the probe policy allows (window / (gap + median RTT)). */
  minProbeFraction: 0.5,
} as const;

/**
 * Why one level's result does not measure what its row says (empty if it does): the background
 * fell short of its rate (the switch then ran at a lower load), the tool was not running for
 * part of the window (its stalls land in the round trips as if the switch had taken them), or it
 * sent too few probes for the policy (same cause, or a switch that lost them).
 */
export function runProblems(r: VuLatencyResult, gapUs: number): string[] {
  const out: string[] = [];
  if (r.target_mpps > 0 && !(r.rate_mpps >= VALID.minRateFraction * r.target_mpps)) {
    out.push(`background ${r.rate_mpps.toFixed(3)} of ${r.target_mpps} Mpps (< ${VALID.minRateFraction * 100}%)`);
  }
  const windowMs = r.seconds * 1000;
  if (r.tool_stall_ms > VALID.maxStallFraction * windowMs) {
    out.push(`the tool was descheduled for ${r.tool_stall_ms.toFixed(1)} ms of the ${windowMs.toFixed(0)} ms window (${r.tool_stalls} stalls; limit ${VALID.maxStallFraction * 100}%)`);
  }
  const back = r.probes - r.lost;
  if (back > 0 && r.tainted > VALID.maxTaintedFraction * back) {
    out.push(`${r.tainted} of ${back} probes not timed because the tool stalled during their round trip (limit ${VALID.maxTaintedFraction * 100}%)`);
  }
  const cycleUs = gapUs + (Number.isFinite(r.median_us) ? r.median_us : 0);
  const expected = cycleUs > 0 ? (r.seconds * 1e6) / cycleUs : 0;
  if (expected > 0 && r.probes < VALID.minProbeFraction * expected) {
    out.push(`${r.probes} probes sent where the policy allows ${expected.toFixed(0)} (< ${VALID.minProbeFraction * 100}%)`);
  }
  return out;
}
