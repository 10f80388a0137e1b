import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlowTables, matchCovers, matchEquals } from '../../src/ofproto/tables.js';
import { parseFlow, formatFlowStats } from '../../src/ofproto/flow-syntax.js';
import { FLOW_WORDS, fieldByName, setField } from '../../src/dp/flow-key.js';

const add = (t: FlowTables, s: string, now = 0) => t.addFlow(parseFlow(s), now);
const crit = (s: string) => parseFlow(s, { mode: 'match' });

function pkt(fields: Record<string, bigint>): Uint32Array {
  const k = new Uint32Array(FLOW_WORDS);
  for (const [n, v] of Object.entries(fields)) setField(k, 0, fieldByName(n)!, v);
  return k;
}

test('add, lookup by priority, replace identical, version bumps', () => {
  const t = new FlowTables();
  const v0 = t.version;
  const r1 = add(t, 'priority=10,in_port=1,actions=output:2');
  const r2 = add(t, 'priority=20,tcp,tp_dst=80,actions=output:3');
  add(t, 'table=1,actions=drop');
  assert.ok(t.version > v0);
  const k = pkt({ in_port: 1n, dl_type: 0x800n, nw_proto: 6n, tp_dst: 80n });
  assert.equal(t.lookup(0, k), r2);
  k[6] = 81;
  assert.equal(t.lookup(0, k), r1);
  assert.equal(t.lookup(2, k), undefined);
  assert.equal(t.size(), 3);
  assert.equal(t.size(0), 2);
  t.credit(r1, 2, 120, 5);
  const v1 = t.version;
  const r1b = add(t, 'priority=10,in_port=1,actions=output:4', 7);
  assert.ok(t.version > v1);
  assert.notEqual(r1b.id, r1.id);
  assert.equal(t.size(0), 2, 'replaced, not added');
  assert.equal(t.lookup(0, k), r1b);
  assert.equal(r1b.nPackets, 0, 'counters cleared on replace');
  assert.equal(t.get(r1.id), undefined);
});

test('del-flows strict and non-strict, cookie and out_port filters, mod-flows', () => {
  const t = new FlowTables();
  add(t, 'priority=10,tcp,tp_dst=80,actions=output:1');
  add(t, 'priority=20,tcp,tp_dst=80,nw_src=10.0.0.1,actions=output:2');
  add(t, 'cookie=0x12,priority=30,udp,actions=output:3');
  add(t, 'table=1,priority=10,tcp,tp_dst=80,actions=output:1');
  add(t, 'priority=5,ip,actions=output:2');
  // strict: exact match and priority.
  assert.equal(t.select(crit('priority=10,tcp,tp_dst=80'), true).length, 2, 'both tables');
  assert.equal(t.select(crit('table=0,priority=11,tcp,tp_dst=80'), true).length, 0);
  // non-strict: everything at least as specific.
  assert.equal(t.select(crit('tcp'), false).length, 3);
  assert.equal(t.select(crit('table=0,tcp'), false).length, 2);
  assert.equal(t.select(crit('ip'), false).length, 5);
  assert.equal(t.select(crit(''), false).length, 5);
  assert.equal(t.select(crit('cookie=0x10/0xf0'), false).length, 1);
  assert.equal(t.select(crit('out_port=2'), false).length, 2);
  assert.equal(t.modFlows(crit('table=0,tcp'), [{ type: 'output', port: 9 }], false), 2);
  assert.equal(t.select(crit('out_port=9'), false).length, 2);
  const removed = t.delFlows(crit('table=0,tcp,tp_dst=80'), false);
  assert.equal(removed.length, 2);
  assert.equal(t.size(), 3);
  assert.equal(t.delFlows(crit('priority=5,ip'), true).length, 1);
  assert.equal(t.size(), 2);
  assert.equal(t.delFlows(crit(''), false).length, 2);
  assert.equal(t.size(), 0);
});

test('matchCovers / matchEquals', () => {
  const a = parseFlow('tcp,tp_dst=80,actions=1').match;
  const b = parseFlow('tcp,actions=1').match;
  assert.ok(matchCovers(b, a));
  assert.ok(!matchCovers(a, b));
  assert.ok(matchEquals(a, parseFlow('tp_dst=80,tcp,actions=2').match));
  assert.ok(!matchEquals(a, b));
});

test('idle and hard timeouts', () => {
  const t = new FlowTables();
  const idle = add(t, 'idle_timeout=10,priority=1,actions=drop', 0);
  const hard = add(t, 'hard_timeout=20,priority=2,actions=drop', 0);
  add(t, 'priority=3,actions=drop', 0);
  assert.equal(t.expire(9999).length, 0);
  t.credit(idle, 1, 60, 5000);
  assert.equal(t.expire(14999).length, 0);
  const e1 = t.expire(15000);
  assert.deepEqual(e1.map((x) => [x.rule.id, x.reason]), [[idle.id, 'idle_timeout']]);
  const e2 = t.expire(20000);
  assert.deepEqual(e2.map((x) => [x.rule.id, x.reason]), [[hard.id, 'hard_timeout']]);
  assert.equal(t.size(), 1);
});

test('dump order and format', () => {
  const t = new FlowTables();
  add(t, 'table=1,priority=1,actions=drop', 0);
  const r = add(t, 'priority=100,in_port=1,actions=output:2', 0);
  add(t, 'priority=200,in_port=2,actions=output:1', 0);
  t.credit(r, 3, 180, 1000);
  const lines = t.rules().map((x) => formatFlowStats({ ...x, durationSec: (1200 - x.created) / 1000 }));
  assert.deepEqual(lines, [
    'cookie=0x0, duration=1.200s, table=0, n_packets=0, n_bytes=0, priority=200,in_port=2 actions=output:1',
    'cookie=0x0, duration=1.200s, table=0, n_packets=3, n_bytes=180, priority=100,in_port=1 actions=output:2',
    'cookie=0x0, duration=1.200s, table=1, n_packets=0, n_bytes=0, priority=1 actions=drop',
  ]);
});
