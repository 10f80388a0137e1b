/**
 * The benchmark suite's plumbing: parsers of what the peers print, statistics,
 * result collection and report generation. No timing assertions here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import {
  summarize,
  percentile,
  ratioOfMedians,
  rate,
  loss,
  parseTestpmdPortStats,
  parseTestpmdFwdStats,
  parsePing,
  parseIpLinkStats,
} from '../../bench/stats.js';
import { Collector, toMarkdown, toSvg, writeReport, tick, splitByMagnitude, type BenchReport, type ScenarioResult } from '../../bench/report.js';
import { parseRunArgs, BenchUsageError, SCENARIOS, mergeReports } from '../../bench/run.js';
import { parseDumpPorts, parsePmdStatsShow } from '../../bench/peers/ovs.js';
import { trafgenConfig } from '../../bench/peers/kernel.js';
import { rotate, wanted, type BenchContext } from '../../bench/common.js';

// Captured from dpdk-testpmd 22.11 on this machine (two net_virtio_user ports).
const PORT_STATS =
  'show port stats all\r\n\n  ######################## NIC statistics for port 0  ########################\n  RX-packets: 12          RX-missed: 3          RX-bytes:  0\n  RX-errors: 1\n  RX-nombuf:  2         \n  TX-packets: 597632     TX-errors: 0          TX-bytes:  38250176\n\n  Throughput (since last show)\n  Rx-pps:            0          Rx-bps:            0\n  Tx-pps:            0          Tx-bps:            0\n  ############################################################################\n\n  ######################## NIC statistics for port 1  ########################\n  RX-packets: 4567          RX-missed: 0          RX-bytes:  0\n  RX-errors: 0\n  RX-nombuf:  0         \n  TX-packets: 597664     TX-errors: 0          TX-bytes:  38250496\n\n  Throughput (since last show)\n  Rx-pps:            0          Rx-bps:            0\n  Tx-pps:            0          Tx-bps:            0\n  ############################################################################\ntestpmd> ';
const STOP =
  'stop\r\nTelling cores to stop...\nWaiting for lcores to finish...\n\n  ---------------------- Forward statistics for port 0  ----------------------\n  RX-packets: 5              RX-dropped: 1             RX-total: 6\n  TX-packets: 597664         TX-dropped: 512704        TX-total: 1110368\n  ----------------------------------------------------------------------------\n\n  ---------------------- Forward statistics for port 1  ----------------------\n  RX-packets: 7              RX-dropped: 0             RX-total: 7\n  TX-packets: 597665         TX-dropped: 512704        TX-total: 1110368\n  ----------------------------------------------------------------------------\n\n  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n  RX-packets: 12              RX-dropped: 1             RX-total: 13\n  TX-packets: 1195329        TX-dropped: 1025408       TX-total: 2220736\n  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++\n\nDone.\ntestpmd> ';

test('testpmd port stats: one entry per port with rx/tx counters', () => {
  const s = parseTestpmdPortStats(PORT_STATS);
  assert.equal(s.length, 2);
  assert.deepEqual(s[0], { port: 0, rxPackets: 12, rxMissed: 3, rxErrors: 1, rxNombuf: 2, txPackets: 597632, txErrors: 0 });
  assert.equal(s[1].port, 1);
  assert.equal(s[1].rxPackets, 4567);
  assert.deepEqual(parseTestpmdPortStats('testpmd> '), []);
});

test('testpmd forward stats: per port and accumulated', () => {
  const f = parseTestpmdFwdStats(STOP);
  assert.equal(f.ports.length, 2);
  assert.deepEqual(f.ports[1], { port: 1, rxPackets: 7, rxDropped: 0, txPackets: 597665, txDropped: 512704 });
  assert.deepEqual(f.total, { rxPackets: 12, rxDropped: 1, txPackets: 1195329, txDropped: 1025408 });
  assert.throws(() => parseTestpmdFwdStats('Packet forwarding not started\ntestpmd> '), /no forward statistics/);
});

test('ping output: rtts and counts', () => {
  const out =
    'PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.\n64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.024 ms\n64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=1.50 ms\n\n--- 10.77.0.2 ping statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, time 12ms\n';
  const p = parsePing(out);
  assert.deepEqual(p.rttsMs, [0.024, 1.5]);
  assert.equal(p.transmitted, 3);
  assert.equal(p.received, 2);
});

test('ip -s -j link: stats64', () => {
  const j = JSON.stringify([{ ifname: 'b0', stats64: { rx: { packets: 10, dropped: 1, bytes: 640 }, tx: { packets: 3, dropped: 0, bytes: 1 } } }]);
  assert.deepEqual(parseIpLinkStats(j), { rxPackets: 10, txPackets: 3, rxDropped: 1, txDropped: 0 });
  assert.throws(() => parseIpLinkStats('[{}]'), /stats64/);
});

test('ovs-ofctl dump-ports: numbered ports, LOCAL skipped, ? is NaN', () => {
  const out = [
    'OFPST_PORT reply (xid=0x2): 3 ports',
    '  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0',
    '           tx pkts=0, bytes=0, drop=0, errs=0, coll=0',
    '  port  1: rx pkts=2793120, bytes=178759680, drop=0, errs=0, frame=?, over=?, crc=?',
    '           tx pkts=5, bytes=320, drop=7, errs=?, coll=?',
    '           duration=12.345s',
    '  port  2: rx pkts=?, bytes=?, drop=?, errs=?, frame=?, over=?, crc=?',
    '           tx pkts=2793088, bytes=178757632, drop=0, errs=?, coll=?',
  ].join('\n');
  const m = parseDumpPorts(out);
  assert.deepEqual([...m.keys()], [1, 2]);
  assert.deepEqual(m.get(1), { rxPackets: 2793120, rxDropped: 0, txPackets: 5, txDropped: 7 });
  assert.ok(Number.isNaN(m.get(2)!.rxPackets));
  assert.equal(m.get(2)!.txPackets, 2793088);
});

test('summaries: median/min/max, NaN ignored, percentiles, ratios, rates, loss', () => {
  assert.deepEqual(summarize([3, 1, 2]), { n: 3, median: 2, min: 1, max: 3, values: [3, 1, 2] });
  assert.equal(summarize([4, 1, 2, 3]).median, 2.5);
  assert.equal(summarize([NaN, 5]).median, 5);
  assert.equal(summarize([]).n, 0);
  assert.equal(percentile([1, 2, 3, 4, 5], 50), 3);
  assert.equal(percentile([1, 2, 3, 4, 5], 100), 5);
  assert.equal(percentile([10, 20], 25), 12.5);
  assert.equal(ratioOfMedians(summarize([2, 4, 6]), summarize([2])), 2);
  assert.ok(Number.isNaN(ratioOfMedians(summarize([1]), summarize([]))));
  assert.ok(Number.isNaN(ratioOfMedians(summarize([1]), summarize([0]))));
  assert.equal(rate(100, 1100, 500), 2000);
  assert.ok(Number.isNaN(rate(0, 1, 0)));
  assert.deepEqual(loss(100, 90), { sent: 100, received: 90, lost: 10, fraction: 0.1 });
  assert.equal(loss(100, 120).lost, 0, 'more received than sent (frames in flight before the window) is no loss');
  assert.equal(loss(0, 0).fraction, 0);
});

test('summaries: property — min <= median <= max; percentile monotone', () => {
  fc.assert(
    fc.property(fc.array(fc.double({ min: -1e9, max: 1e9, noNaN: true }), { minLength: 1, maxLength: 50 }), fc.integer({ min: 0, max: 100 }), (xs, p) => {
      const s = summarize(xs);
      assert.ok(s.min <= s.median && s.median <= s.max);
      const a = percentile(xs, p);
      const b = percentile(xs, Math.min(100, p + 1));
      assert.ok(a <= b + 1e-6 * Math.abs(b));
      assert.ok(a >= s.min && a <= s.max);
    }),
  );
});

function sampleReport(): BenchReport {
  const c = new Collector('p2p', 'port to port');
  c.add('64B oneway', 'port1->2', 'tsvs', 'Mpps', 2, { sent: 1000, received: 990 });
  c.add('64B oneway', 'port1->2', 'tsvs', 'Mpps', 4, { sent: 1000, received: 1000 });
  c.add('64B oneway', 'port1->2', 'tsvs', 'Mpps', 3, { sent: 1000, received: 1000 });
  c.add('64B oneway', 'port1->2', 'ovs-dpdk', 'Mpps', 6);
  c.add('idle', 'VmRSS', 'tsvs', 'MiB', 70);
  c.markUnavailable('dpdk-testpmd', 'dpdk-testpmd is not installed\nsecond line');
  c.markUnavailable('dpdk-testpmd', 'a later reason is ignored');
  c.note('a note');
  c.ratio('tsvs', 'ovs-dpdk');
  const r = c.result();
  return {
    date: '2026-01-01T00:00:00.000Z',
    machine: { nproc: 2, model: 'Test CPU', kernel: 'Linux x', node: 'v20', load: '0 0 0' },
    git: 'abc1234',
    options: { reps: 3, seconds: 3, warmup: 1, quick: false, scenarios: ['p2p'] },
    scenarios: [r, { name: 'latency', title: 'lat', status: 'unavailable', unavailable: { '*': 'no ping' }, rows: [], ratios: [], notes: [], seconds: 0 }],
  };
}

test('collector: summaries per (case, metric, subject), loss, ratio of medians, unavailable', () => {
  const r = sampleReport().scenarios[0];
  assert.equal(r.status, 'partial');
  const tsvs = r.rows.find((x) => x.subject === 'tsvs' && x.unit === 'Mpps')!;
  assert.equal(tsvs.summary.median, 3);
  assert.equal(tsvs.summary.n, 3);
  assert.deepEqual(tsvs.loss, { runs: 3, sent: 3000, lost: 10, maxFraction: 0.01 });
  assert.deepEqual(r.ratios, [{ case: '64B oneway', metric: 'port1->2', label: 'tsvs/ovs-dpdk', value: 0.5 }]);
  assert.equal(r.unavailable['dpdk-testpmd'], 'dpdk-testpmd is not installed');
  assert.equal(new Collector('x', 'y').result().status, 'failed');
});

test('markdown: machine line, table rows, ratios, unavailable entries', () => {
  const md = toMarkdown(sampleReport());
  assert.match(md, /2 CPUs \(`nproc`\), Test CPU/);
  assert.match(md, /\| 64B oneway \| port1->2 \(Mpps\) \| tsvs \| 3\.000 \| 2\.000 \| 4\.000 \| 3 \| 0\.333% \(max 1\.000%\) \|/);
  assert.match(md, /\| 64B oneway \| port1->2 \| tsvs\/ovs-dpdk \| 0\.500 \|/);
  assert.match(md, /unavailable: dpdk-testpmd: dpdk-testpmd is not installed/);
  assert.match(md, /## latency: lat\n\nStatus: \*\*unavailable\*\*/);
  assert.match(md, /unavailable: scenario: no ping/);
});

test('svg: well-formed bars for each row with data, none for an empty scenario', () => {
  const rep = sampleReport();
  const svg = toSvg(rep.scenarios[0])!;
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  // one bar per row with data (3), plus legend swatches (2 subjects) and the background
  assert.equal((svg.match(/<rect /g) ?? []).length, 1 + 2 + 3);
  assert.ok(!/NaN|undefined/.test(svg), 'no NaN/undefined coordinates');
  assert.match(svg, /port1-&gt;2/, 'text is escaped');
  const opened = (svg.match(/<(rect|text|line|svg)\b/g) ?? []).length;
  const closed = (svg.match(/<\/(rect|text|svg)>|\/>/g) ?? []).length;
  assert.equal(opened, closed);
  assert.equal(toSvg(rep.scenarios[1]), null);
});

test('writeReport: latest.json, latest.md and one svg per scenario with data', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-bench-test-'));
  try {
    const files = writeReport(dir, sampleReport()).map((f) => path.basename(f)).sort();
    assert.deepEqual(files, ['latest.json', 'latest.md', 'p2p.svg']);
    const back = JSON.parse(fs.readFileSync(path.join(dir, 'latest.json'), 'utf8')) as BenchReport;
    assert.equal(back.scenarios[0].rows[0].summary.median, 3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('run options: defaults, quick, validation', () => {
  const d = parseRunArgs([]);
  assert.deepEqual(d.scenarios, SCENARIOS.map((s) => s.name));
  assert.equal(d.reps, 3);
  const q = parseRunArgs(['--quick', '--scenario', 'p2p,kernel', '--scenario', 'memory', '--subject', 'tsvs']);
  assert.deepEqual(q.scenarios, ['p2p', 'kernel', 'memory']);
  assert.equal(q.reps, 1);
  assert.deepEqual(q.subjects, ['tsvs']);
  assert.equal(parseRunArgs(['--reps', '5', '--seconds', '2.5']).seconds, 2.5);
  assert.throws(() => parseRunArgs(['--scenario', 'nope']), BenchUsageError);
  assert.throws(() => parseRunArgs(['--reps', '0']), /--reps/);
  assert.throws(() => parseRunArgs(['--reps', '1.5']), /integer/);
  assert.throws(() => parseRunArgs(['--bogus']));
  assert.equal(parseRunArgs(['--merge']).merge, true);
  assert.equal(d.merge, false);
});

test('--merge: re-run scenarios replace their namesakes and say when they ran', () => {
  const sc = (name: string, v: number): ScenarioResult => ({ name, title: name, status: 'ok', unavailable: {}, rows: [], ratios: [], notes: [`v${v}`], seconds: v });
  const base = { date: 'D0', machine: sampleReport().machine, git: 'g0', options: { reps: 3, seconds: 3, warmup: 1, quick: false, scenarios: ['p2p', 'latency'] }, scenarios: [sc('p2p', 1), sc('latency', 1)] };
  const fresh = { ...base, date: 'D1', git: 'g1', options: { ...base.options, scenarios: ['latency', 'profile'] }, scenarios: [sc('latency', 2), sc('profile', 2)] };
  const m = mergeReports(base, fresh);
  assert.deepEqual(m.scenarios.map((s) => [s.name, s.seconds]), [['p2p', 1], ['latency', 2], ['profile', 2]]);
  assert.equal(m.date, 'D0');
  assert.deepEqual(m.scenarios[0].notes, ['v1'], 'untouched scenarios keep their notes');
  assert.match(m.scenarios[1].notes.at(-1)!, /Measured D1 at commit g1 .* merged into the report of D0 \(commit g0\)/);
});

test('subject rotation and selection', () => {
  assert.deepEqual(rotate(['a', 'b', 'c'], 1), ['b', 'c', 'a']);
  assert.deepEqual(rotate(['a', 'b', 'c'], 3), ['a', 'b', 'c']);
  const ctx = { only: ['ovs-dpdk'] } as BenchContext;
  assert.deepEqual(wanted(ctx, ['tsvs', 'ovs-dpdk'] as const), ['ovs-dpdk']);
  assert.deepEqual(wanted({} as BenchContext, ['tsvs'] as const), ['tsvs']);
});

test('trafgen config: exact frame length and an IPv4 checksum over the header', () => {
  const cfg = trafgenConfig({ size: 64, dstMac: '02:00:00:00:0b:01', srcMac: '02:00:00:00:0a:01', srcIp: '10.77.0.1', dstIp: '10.77.0.2' });
  assert.match(cfg, /0x02, 0x00, 0x00, 0x00, 0x0b, 0x01/);
  assert.match(cfg, /csumip\(14, 33\)/);
  assert.match(cfg, /const16\(50\)/, 'IP total length = 64 - 14');
  // bytes: 6+6+2 (eth) + 10+2(csum)+8 (ip) + 8 (udp) + fill
  const fill = Number(/fill\(0x00, (\d+)\)/.exec(cfg)![1]);
  assert.equal(14 + 20 + 8 + fill, 64);
});

test('ovs-appctl dpif-netdev/pmd-stats-show: sums over threads', () => {
  const out = [
    'pmd thread numa_id 0 core_id 1:',
    '  packets received: 2793120',
    '  emc hits: 0',
    '  miss with success upcall: 1',
    '  miss with failed upcall: 2',
    'main thread:',
    '  packets received: 5',
    '  miss with success upcall: 3',
    '  miss with failed upcall: 0',
  ].join('\n');
  assert.deepEqual(parsePmdStatsShow(out), { received: 2793125, upcalls: 4, failedUpcalls: 2 });
  assert.throws(() => parsePmdStatsShow('error'), /pmd-stats-show/);
});

test('svg: values of one unit that differ by more than 20x get their own panels', () => {
  const c = new Collector('latency', 'lat');
  for (const [cs, v] of [['vhost-user idle', 2.8], ['vhost-user medium', 4.7], ['ping', 68], ['ping p99', 727]] as const) c.add(cs, 'rtt', 'tsvs', 'us', v);
  const rows = c.result().rows;
  const parts = splitByMagnitude([rows]);
  assert.deepEqual(parts.map((p) => p.map((r) => r.case)), [['vhost-user idle', 'vhost-user medium'], ['ping', 'ping p99']]);
  // 2.8 .. 68 still spans 24x after the first cut (at 727): split again
  const three = splitByMagnitude([rows.slice(0, 3).concat(rows.slice(3))]);
  assert.ok(three.every((p) => { const v = p.map((r) => r.summary.median); return Math.max(...v) / Math.min(...v) <= 20; }), 'no panel spans more than 20x');
  assert.equal(splitByMagnitude([rows.slice(0, 2)]).length, 1, 'close values stay together');
  const svg = toSvg(c.result())!;
  assert.equal((svg.match(/rotate\(-90/g) ?? []).length, 2, 'two panels, each with its unit label');
});

test('svg axis ticks are short', () => {
  assert.equal(tick(0), '0.00');
  assert.equal(tick(6.76), '6.76');
  assert.equal(tick(1397), '1397');
  assert.equal(tick(583257), '583k');
  assert.equal(tick(2333028), '2.3M');
});

test('collector: a failed run is a note; a subject whose every run failed becomes unavailable', () => {
  const c = new Collector('k', 'kernel');
  c.add('64B', 'one way', 'linux-bridge', 'Mpps', 0.4);
  c.fail('linux-bridge', 1, 'trafgen exited\nmore');
  c.fail('tsvs-afpacket', 0, 'daemon crashed');
  c.fail('tsvs-afpacket', 2, 'daemon crashed again');
  const r = c.result();
  assert.equal(r.status, 'partial');
  assert.deepEqual(Object.keys(r.unavailable), ['tsvs-afpacket']);
  assert.match(r.unavailable['tsvs-afpacket'], /every run failed: daemon crashed/);
  assert.ok(r.notes.includes('linux-bridge: run 2 failed: trafgen exited'));
  assert.equal(r.rows.length, 1);
});

test('collector: invalid runs stay out of the summary; a row with none valid says invalid, and so does its ratio', () => {
  const c = new Collector('latency', 'lat');
  c.add('medium', 'rtt median', 'tsvs', 'us', 4);
  c.invalid('medium', 'rtt median', 'tsvs', 'us', 'run 2: background 0.041 of 0.5 Mpps');
  c.add('medium', 'rtt median', 'tsvs', 'us', 6);
  c.invalid('medium', 'rtt median', 'ovs-dpdk', 'us', 'run 1: the tool was descheduled\nfor long');
  c.ratio('tsvs', 'ovs-dpdk');
  const r = c.result();
  assert.equal(r.status, 'partial');
  const t = r.rows.find((x) => x.subject === 'tsvs')!;
  assert.equal(t.summary.n, 2);
  assert.equal(t.summary.median, 5);
  assert.deepEqual(t.invalid, ['run 2: background 0.041 of 0.5 Mpps']);
  const o = r.rows.find((x) => x.subject === 'ovs-dpdk')!;
  assert.equal(o.summary.n, 0);
  assert.deepEqual(o.invalid, ['run 1: the tool was descheduled']);
  assert.equal(r.ratios.length, 1);
  assert.ok(Number.isNaN(r.ratios[0].value));
  assert.match(r.ratios[0].invalid!, /ovs-dpdk: every run invalid/);
  const md = toMarkdown({ ...sampleReport(), scenarios: [r] });
  assert.match(md, /\| medium \| rtt median \(us\) \| tsvs \| 5\.000 \| 4\.000 \| 6\.000 \| 2 \(\+1 invalid\) \|/);
  assert.match(md, /\| medium \| rtt median \(us\) \| ovs-dpdk \| \*\*invalid\*\* \|/);
  assert.match(md, /- medium · rtt median · tsvs: run 2: background 0\.041 of 0\.5 Mpps/);
  assert.match(md, /\| tsvs\/ovs-dpdk \| \*\*invalid\*\* \(ovs-dpdk: every run invalid\) \|/);
  assert.ok(!/NaN/.test(toSvg(r)!), 'the chart leaves invalid rows out');
});
