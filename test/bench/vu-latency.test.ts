/**
 * The vhost-user latency tool's helpers (bench/tools/vu-latency-lib.ts): the
 * probe frame, the RTT summary and the result-line parser the bench relies on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { probeTemplate, summarizeRtts, formatResult, parseVuLatency, runProblems, RESULT_PREFIX, PAY, type VuLatencyResult } from '../../bench/tools/vu-latency-lib.js';

const macA = Uint8Array.from([2, 0, 0, 0, 0, 0x0a]);
const macB = Uint8Array.from([2, 0, 0, 0, 0, 0x0b]);

function ipSumOk(t: Uint8Array): boolean {
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += (t[14 + i] << 8) | t[15 + i];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

test('probe frame: A -> B, IPv4/UDP, lengths and header checksum right for every size', () => {
  fc.assert(
    fc.property(fc.integer({ min: 60, max: 1518 }), (size) => {
      const t = probeTemplate(size, macA, macB);
      assert.equal(t.length, size);
      assert.deepEqual([...t.subarray(0, 6)], [...macB]);
      assert.deepEqual([...t.subarray(6, 12)], [...macA]);
      assert.equal((t[12] << 8) | t[13], 0x0800);
      assert.equal(t[14], 0x45);
      assert.equal(t[23], 17);
      assert.equal((t[16] << 8) | t[17], size - 14);
      assert.equal((t[38] << 8) | t[39], size - 34);
      assert.ok(ipSumOk(t));
      assert.ok(t.subarray(PAY).every((b) => b === 0));
    }),
  );
  assert.throws(() => probeTemplate(59, macA, macB), RangeError);
  assert.throws(() => probeTemplate(1519, macA, macB), RangeError);
});

test('RTT summary: median/p99/p99.9/max over the first n values only', () => {
  const v = new Float64Array(1000);
  for (let i = 0; i < 1000; i++) v[i] = i + 1; // 1..1000
  v[999] = 1e9; // beyond n: must not count
  const s = summarizeRtts(v, 999);
  assert.equal(s.median, 500);
  assert.ok(Math.abs(s.p99 - 989.02) < 1e-9);
  assert.equal(s.max, 999);
  assert.ok(s.p999 > s.p99 && s.p999 <= 999);
  const e = summarizeRtts(v, 0);
  assert.ok(Number.isNaN(e.median) && Number.isNaN(e.p99));
  // a full run's worth of probes (a 3 s window: 100k+) must not overflow the stack
  const many = new Float64Array(400_000).map((_, i) => (i * 7919) % 400_000);
  assert.equal(summarizeRtts(many, many.length).max, 399_999);
  // order statistics: never outside [min, max], monotone in p
  fc.assert(
    fc.property(fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 300 }), (xs) => {
      const r = summarizeRtts(Float64Array.from(xs), xs.length);
      const lo = Math.min(...xs);
      const hi = Math.max(...xs);
      assert.ok(lo <= r.median && r.median <= r.p99 && r.p99 <= r.p999 && r.p999 <= r.max && r.max === hi);
    }),
  );
});

const R: VuLatencyResult = {
  load: 'medium', median_us: 4.5, p99_us: 12.25, p999_us: 40, max_us: 99, probes: 30000, lost: 2, rate_mpps: 0.499, target_mpps: 0.5,
  bg_sent: 499000, bg_lost: 0, tx_refused: 0, bad: 0, tool_stalls: 3, tool_stall_ms: 0.4, tainted: 2, pacing_resets: 1, seconds: 1.0001,
};

test('result lines: round trip through format/parse, other output ignored', () => {
  const out = `vu-latency: port drops {}\n${formatResult({ ...R, load: 'idle' })}\nnoise\r\n${formatResult(R)}\r\n`;
  const rs = parseVuLatency(out);
  assert.equal(rs.length, 2);
  assert.equal(rs[0].load, 'idle');
  assert.deepEqual(rs[1], R);
  assert.deepEqual(parseVuLatency('nothing here\n'), []);
});

test('result lines: zero probes (NaN summary, null in JSON) parse as NaN', () => {
  const r = parseVuLatency(formatResult({ ...R, probes: 0, median_us: NaN, p99_us: NaN, p999_us: NaN, max_us: NaN }))[0];
  assert.ok(Number.isNaN(r.median_us) && Number.isNaN(r.p99_us));
  assert.equal(r.probes, 0);
});

test('result lines: broken or incomplete lines throw instead of vanishing', () => {
  assert.throws(() => parseVuLatency(`${RESULT_PREFIX}{"load":"idle",`), /unparsable/);
  assert.throws(() => parseVuLatency(`${RESULT_PREFIX}${JSON.stringify({ ...R, load: 'heavy' })}`), /load level/);
  const { lost: _lost, ...noLost } = R;
  assert.throws(() => parseVuLatency(`${RESULT_PREFIX}${JSON.stringify(noLost)}`), /field lost/);
  assert.throws(() => parseVuLatency(`${RESULT_PREFIX}${JSON.stringify({ ...R, p99_us: '12' })}`), /field p99_us/);
});

test('validity: a run is a measurement only with its background at rate, the tool running and enough probes', () => {
  // R: 1 s window, 30000 probes at gap 20 µs + median 4.5 µs (the policy allows ~40800), background 0.499 of 0.5
  assert.deepEqual(runProblems(R, 20), []);
  assert.match(runProblems({ ...R, rate_mpps: 0.41 }, 20).join(), /background 0\.410 of 0\.5 Mpps/);
  assert.deepEqual(runProblems({ ...R, load: 'idle', target_mpps: 0, rate_mpps: 0 }, 20), []);
  assert.match(runProblems({ ...R, tool_stall_ms: 101 }, 20).join(), /descheduled for 101\.0 ms of the 1000 ms window/);
  assert.match(runProblems({ ...R, tainted: 1600 }, 20).join(), /1600 of 29998 probes not timed/);
  assert.match(runProblems({ ...R, probes: 20000, lost: 0 }, 20).join(), /20000 probes sent where the policy allows 40820/);
  // the 2026-12-03 full run's case: the tool away 1.2-2.3 s of 3 s, background at 0.04 of 0.5
  const bad = runProblems({ ...R, seconds: 3, tool_stall_ms: 1800, rate_mpps: 0.02, probes: 25000 }, 20);
  assert.equal(bad.length, 3);
  assert.equal(runProblems({ ...R, rate_mpps: NaN }, 20).length, 1, 'an unmeasured background is not at rate');
});
