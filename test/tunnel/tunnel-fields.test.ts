/**
 * Tunnel metadata in the slow path and the action program, without peers:
 * tun_id / tun_src / tun_dst matches (ovs-ofctl syntax, round trip), set_field:N->tun_id
 * and set_tunnel, the megaflow mask (un-wildcarded tun_id when an output to a flow-keyed tunnel
 * depends on the received one), and OP_SET_TUNNEL in the executor.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { xlate, type XlateEnv, type XlatePort } from '../../src/ofproto/xlate.js';
import { FlowTables } from '../../src/ofproto/tables.js';
import { MacLearningTable } from '../../src/ofproto/mac-learning.js';
import { parseFlow, formatFlow, formatActions } from '../../src/ofproto/flow-syntax.js';
import {
  formatProgram, executeActions, ProgramBuilder, EXEC_STATE_WORDS, EXEC_DONE, ST_NOUT, ST_TUN_ID, ST_TUN_SET, ST_LEN, validateProgram,
} from '../../src/dp/actions.js';
import { FLOW_WORDS, W_IN_PORT, W_TUN_ID, W_TUN_SRC, W_TUN_DST, extractKey, KEY_OK } from '../../src/dp/flow-key.js';
import { buildFrame, mac } from '../dp/frame-builder.js';
import { planInterface } from '../../src/ovsdb/vswitchd.js';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { tunnelMeta } from '../../src/port/vxlan.js';
import { Datapath } from '../../src/dp/datapath.js';
import { OP_OUTPUT } from '../../src/dp/actions.js';

/** dp 1 = of 11 (plain), dp 2 = of 12 (vxlan key=flow), dp 3 = of 13 (vxlan, fixed key). */
const PORTS: XlatePort[] = [{ ofPort: 11, dpPort: 1 }, { ofPort: 12, dpPort: 2, tunnelKeyFlow: true }, { ofPort: 13, dpPort: 3 }];

function env(flows: string[]): XlateEnv {
  const tables = new FlowTables();
  for (const f of flows) tables.addFlow(parseFlow(f), 0);
  return { tables, macs: new MacLearningTable(), ports: PORTS, now: 0 };
}

function key(inPort: number, tun?: { id: number; src: number; dst: number }): Uint32Array {
  const f = buildFrame({ dst: mac(2), src: mac(1), l3: 'ipv4', proto: 17, srcIp: [10, 0, 0, 1], dstIp: [10, 0, 0, 2], sport: 1, dport: 2, payload: 4 });
  const k = new Uint32Array(FLOW_WORDS);
  assert.equal(extractKey(f, 0, f.length, inPort, k, 0), KEY_OK);
  assert.equal(k[W_TUN_ID] | k[W_TUN_SRC] | k[W_TUN_DST], 0, 'extractKey leaves the tunnel words 0');
  if (tun) { k[W_TUN_ID] = tun.id; k[W_TUN_SRC] = tun.src; k[W_TUN_DST] = tun.dst; }
  return k;
}

test('ovs-ofctl syntax: tun_id/tun_src/tun_dst matches and set_field:N->tun_id round-trip', () => {
  const s = parseFlow('priority=5,tun_id=0x2a,tun_src=10.210.0.2,tun_dst=10.210.0.0/24,in_port=1,actions=set_field:0x64->tun_id,output:2');
  assert.equal(formatFlow(s), 'priority=5,tun_id=0x2a,tun_src=10.210.0.2,tun_dst=10.210.0.0/24,in_port=1,actions=set_field:0x64->tun_id,output:2');
  assert.equal(s.match.key[W_TUN_ID], 42);
  assert.equal(s.match.mask[W_TUN_DST], 0xffffff00);
  assert.deepEqual(parseFlow('actions=set_tunnel:7,output:1').actions, [{ type: 'set_tunnel', id: 7 }, { type: 'output', port: 1 }]);
  assert.equal(formatActions(parseFlow('actions=set_tunnel64:0x10').actions), 'set_field:0x10->tun_id');
  assert.throws(() => parseFlow('actions=set_field:1->nw_ttl'), /set_field: field nw_ttl is not supported/);
  assert.throws(() => parseFlow('actions=set_field:0x1ffffffff->tun_id'), /does not fit 32 bits/);
  assert.throws(() => parseFlow('tun_id=0x1ffffffff,actions=drop'));
});

test('xlate: rules match on tunnel fields; set_field tun_id goes to flow-keyed tunnel outputs only', () => {
  const e = env([
    'priority=10,tun_id=42,in_port=12,actions=output:11',
    'priority=10,tun_id=43,in_port=12,actions=drop',
    'priority=10,in_port=11,udp,actions=set_field:100->tun_id,output:12,output:13',
    'priority=5,in_port=13,actions=output:12',
  ]);
  const fromTun = xlate(e, key(2, { id: 42, src: 0x0ad20002, dst: 0x0ad20001 }));
  assert.equal(formatProgram(fromTun.actions), '1');
  assert.deepEqual([fromTun.mask[W_TUN_ID], fromTun.mask[W_TUN_SRC], fromTun.mask[W_TUN_DST]], [0xffffffff, 0xffffffff, 0xffffffff], 'tunnel traffic: the megaflow matches the tunnel fields');
  assert.equal(xlate(e, key(2, { id: 43, src: 1, dst: 2 })).actions.length, 0);

  const toTun = xlate(e, key(1));
  assert.equal(formatProgram(toTun.actions), 'set(tunnel(tun_id=0x64)),2,3');
  // (here the lookup looked at tun_id: rules of the same table match on it)
  const only = xlate(env(['in_port=11,actions=set_field:100->tun_id,output:12']), key(1));
  assert.equal(formatProgram(only.actions), 'set(tunnel(tun_id=0x64)),2');
  assert.equal(only.mask[W_TUN_ID], 0, 'the tun_id sent does not depend on the packet');

  // no set_field: the received tun_id (here 0 on a fixed-key port) is sent, and the megaflow depends on it
  const passOn = xlate(e, key(3, { id: 9, src: 1, dst: 2 }));
  assert.equal(formatProgram(passOn.actions), 'set(tunnel(tun_id=0x9)),2');
  assert.equal(passOn.mask[W_TUN_ID], 0xffffffff);
  assert.equal(passOn.mask[W_IN_PORT], 0xffffffff);

  // NORMAL floods to the tunnel with the tun_id
  const n = env(['actions=NORMAL']);
  assert.equal(formatProgram(xlate(n, key(1)).actions), 'set(tunnel(tun_id=0x0)),2,3');
});

test('OP_SET_TUNNEL: sets the tunnel state for later outputs, is a modification (pending outputs go first)', () => {
  const prog = new ProgramBuilder().output(1).setTunnel(0x123456).output(2).build();
  assert.ok(validateProgram(prog));
  const st = new Int32Array(EXEC_STATE_WORDS);
  const outs = new Int32Array(8);
  const buf = new Uint8Array(64);
  st[ST_LEN] = 60;
  const r = executeActions(prog, 0, prog.length, buf, st, outs);
  assert.equal(r, 2, 'stops before the modification with output 1 pending');
  assert.equal(st[ST_NOUT], 1);
  assert.equal(st[ST_TUN_SET], 0);
  st[ST_NOUT] = 0;
  assert.equal(executeActions(prog, r, prog.length, buf, st, outs), EXEC_DONE);
  assert.equal(st[ST_TUN_SET], 1);
  assert.equal(st[ST_TUN_ID], 0x123456);
  assert.equal(outs[0], 2);
});

test('OVSDB: type=vxlan Interface rows map to vxlan ports (options as OVS), unsupported ones are refused', () => {
  const row = (options: [string, string][], extra: Record<string, unknown> = {}) => ({ name: 'vx0', type: 'vxlan', options: ['map', options], ...extra });
  const p = planInterface('br0', row([['remote_ip', '10.0.0.2'], ['key', 'flow'], ['local_ip', '10.0.0.1']]), '/run');
  assert.equal(p.error, undefined);
  assert.deepEqual({ ...p.params, ofport: undefined, mtu: undefined }, {
    bridge: 'br0', name: 'vx0', ofport: undefined, mtu: undefined, type: 'vxlan', remote_ip: '10.0.0.2', local_ip: '10.0.0.1', key: 'flow', dst_port: undefined,
  });
  assert.match(planInterface('br0', row([]), '/run').error ?? '', /needs options:remote_ip/);
  assert.match(planInterface('br0', row([['remote_ip', 'flow']]), '/run').error ?? '', /remote_ip=flow is not supported/);
  assert.match(planInterface('br0', row([['remote_ip', '10.0.0.2'], ['csum', 'true']]), '/run').error ?? '', /options csum are not supported/);
});

test('tunnel metadata travels with the handle: one pool attached twice (two threads) sees one tun_id', () => {
  const pool = Mempool.create({ count: 64 });
  const other = Mempool.attach(pool.attachInfo()); // as a second PMD thread attaches it
  try {
    const h = pool.allocOne();
    tunnelMeta(pool).tunId[h] = 0xabcdef; // set_field:0xabcdef->tun_id in the sending thread
    assert.equal(tunnelMeta(other).tunId[h], 0xabcdef, 'the thread that owns the key=flow port reads the same id');
    assert.notEqual(tunnelMeta(other), tunnelMeta(pool));
  } finally {
    other.close();
    pool.close();
  }
});

test('datapath: a frame of a plain port carries tunnel id 0, not the last id its buffer held', () => {
  const pool = Mempool.create({ count: 256 });
  const a = RingPort.create('a', pool, 64);
  const b = RingPort.create('b', pool, 64);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const dp = new Datapath(pool, { upcall: () => undefined }, {});
  dp.addPort(1, a);
  dp.addPort(2, b);
  const mask = new Uint32Array(FLOW_WORDS);
  mask[W_IN_PORT] = 0xffffffff;
  const k = key(1);
  dp.installFlow(k, mask, Int32Array.from([OP_OUTPUT, 2]));
  const f = buildFrame({ dst: mac(2), src: mac(1), l3: 'ipv4', proto: 17, srcIp: [10, 0, 0, 1], dstIp: [10, 0, 0, 2], sport: 1, dport: 2, payload: 4 });
  const hs = new Int32Array(8);
  assert.equal(pool.alloc(hs, 8), 8);
  const meta = tunnelMeta(pool);
  for (const h of hs) {
    meta.tunId[h] = 0x77; // left by an earlier decap or set_tunnel
    pool.data.set(f, pool.dataOffset(h));
    pool.dataLen[h] = f.length;
    pool.pktLen[h] = f.length;
  }
  assert.equal(peerA.txBurst(0, hs, 8), 8);
  while (dp.pollOnce() > 0);
  const out = new Int32Array(8);
  assert.equal(peerB.rxBurst(0, out, 8), 8);
  for (const h of out) assert.equal(meta.tunId[h], 0, `buffer ${h}: tunnel id`);
  pool.free(out, 8);
  pool.close();
});
