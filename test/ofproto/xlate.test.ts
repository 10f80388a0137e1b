import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { xlate, MAX_RESUBMITS, type XlateEnv, type XlatePort } from '../../src/ofproto/xlate.js';
import { FlowTables } from '../../src/ofproto/tables.js';
import { MacLearningTable } from '../../src/ofproto/mac-learning.js';
import { parseFlow } from '../../src/ofproto/flow-syntax.js';
import { formatProgram } from '../../src/dp/actions.js';
import { extractKey, FLOW_WORDS, maskedEqual, W_IN_PORT, W_TYPE_TCI, KEY_OK } from '../../src/dp/flow-key.js';
import { buildFrame, mac, runAll, type PacketDesc } from '../dp/frame-builder.js';

/** Datapath ports 1..4 are OpenFlow ports 11..14; port 4 (14) is no-flood. */
const PORTS: XlatePort[] = [
  { ofPort: 11, dpPort: 1 }, { ofPort: 12, dpPort: 2 }, { ofPort: 13, dpPort: 3 }, { ofPort: 14, dpPort: 4, noFlood: true },
];

function env(flows: string[], now = 0): XlateEnv {
  const tables = new FlowTables();
  for (const f of flows) tables.addFlow(parseFlow(f), 0);
  return { tables, macs: new MacLearningTable(), ports: PORTS, now };
}

function keyOf(frame: Uint8Array, inPort: number): Uint32Array {
  const k = new Uint32Array(FLOW_WORDS);
  assert.equal(extractKey(frame, 0, frame.length, inPort, k, 0), KEY_OK);
  return k;
}

const BCAST = [255, 255, 255, 255, 255, 255];
const udp = (src: number, dst: number[] | number, extra: Partial<PacketDesc> = {}): Uint8Array => buildFrame({
  dst: typeof dst === 'number' ? mac(dst) : dst, src: mac(src), l3: 'ipv4', proto: 17,
  srcIp: [10, 0, 0, src], dstIp: [10, 0, 0, 9], sport: 1000, dport: 53, payload: 4, ...extra,
});
const xl = (e: XlateEnv, f: Uint8Array, inPort: number, len?: number) =>
  xlate(e, keyOf(f, inPort), 0, len === undefined ? {} : { packetLen: len });

test('no rules: drop; mask is in_port + dl_type', () => {
  const r = xl(env([]), udp(1, 2), 1);
  assert.equal(r.actions.length, 0);
  const m = new Uint32Array(FLOW_WORDS);
  m[W_IN_PORT] = 0xffffffff; m[W_TYPE_TCI] = 0xffff0000;
  assert.deepEqual(r.mask, m);
  assert.equal(r.error, undefined);
});

test('port mapping, output to in_port skipped unless IN_PORT, FLOOD vs ALL, counters', () => {
  const e = env([
    'priority=10,in_port=11,actions=output:12,output:11,output:13',
    'priority=10,in_port=12,actions=IN_PORT',
    'priority=10,in_port=13,actions=FLOOD',
    'priority=10,in_port=14,actions=ALL',
    'priority=20,udp,tp_dst=99,actions=LOCAL,output:77',
  ]);
  const r = xl(e, udp(1, 2), 1, 64);
  assert.equal(formatProgram(r.actions), '2,3');
  assert.equal(r.rules.length, 1);
  assert.equal(r.rules[0].nPackets, 1);
  assert.equal(r.rules[0].nBytes, 64);
  assert.equal(formatProgram(xl(e, udp(1, 2), 2).actions), '2');
  assert.equal(formatProgram(xl(e, udp(1, 2), 3).actions), '1,2');
  assert.equal(formatProgram(xl(e, udp(1, 2), 4).actions), '1,2,3');
  assert.equal(formatProgram(xl(e, udp(1, 2, { dport: 99 }), 1).actions), 'drop', 'no LOCAL port, unknown port');
  const unk = xl(e, udp(1, 2), 9);
  assert.equal(unk.error, 'unknown_in_port');
  assert.equal(unk.actions.length, 0);
});

test('resubmit, goto_table, modified flow seen by later tables, depth bound', () => {
  const e = env([
    'priority=1,in_port=11,actions=mod_dl_dst:02:00:00:00:00:07,resubmit(,1),output:13',
    'table=1,priority=5,dl_dst=02:00:00:00:00:07,actions=output:12,goto_table:2',
    'table=2,priority=5,actions=mod_vlan_vid:42,output:14',
    'priority=1,in_port=12,actions=resubmit:13',
    'priority=1,in_port=13,actions=output:11,output:13',
    'priority=1,in_port=14,actions=resubmit(,0)',
  ]);
  const r = xl(e, udp(1, 2), 1);
  assert.equal(formatProgram(r.actions), 'set(eth(dst=02:00:00:00:00:07)),2,push_vlan(vid=42,pcp=0),4,3');
  assert.equal(r.rules.length, 3);
  const out = runAll(r.actions, udp(1, 2));
  assert.deepEqual(out.out.map((o) => [o[0], o[1].length]), [[2, 46], [4, 50], [3, 50]]);
  // resubmit:13 looks up with in_port=13, so output:13 is skipped and output:11 is not.
  assert.equal(formatProgram(xl(e, udp(1, 2), 2).actions), '1');
  const loop = xl(e, udp(1, 2), 4);
  assert.equal(loop.error, 'too_deep');
  assert.equal(loop.actions.length, 0);
  assert.ok(loop.mask.every((w) => w === 0xffffffff), 'an aborted translation installs an exact-match drop');
});

test('fan-out: two resubmits per table over 40 tables stops at MAX_RESUBMITS lookups and drops', () => {
  const flows = Array.from({ length: 40 }, (_, t) => `table=${t},priority=1,actions=resubmit(,${t + 1}),resubmit(,${t + 1})`);
  flows.push('table=40,priority=1,actions=output:12');
  const e = env(flows);
  const r = xl(e, udp(1, 2), 1);
  assert.equal(r.error, 'too_many_resubmits');
  assert.equal(r.actions.length, 0);
  assert.equal(r.rules.length, MAX_RESUBMITS + 1, 'the first lookup and MAX_RESUBMITS more, then stop');
  assert.ok(r.mask.every((w) => w === 0xffffffff));
  // a chain of 40 resubmits is fine: the cap is on the total, not on legitimate pipelines
  const chain = env(Array.from({ length: 40 }, (_, t) => `table=${t},priority=1,actions=resubmit(,${t + 1})`).concat('table=40,priority=1,actions=output:12'));
  const ok = xl(chain, udp(1, 2), 1);
  assert.equal(ok.error, undefined);
  assert.equal(formatProgram(ok.actions), '2');
});

test('VLAN actions: tagged vs untagged', () => {
  const e = env(['actions=mod_vlan_vid:7,output:12,strip_vlan,output:13,push_vlan:0x88a8,output:14']);
  const plain = xl(e, udp(1, 2), 1);
  assert.equal(formatProgram(plain.actions), 'push_vlan(vid=7,pcp=0),2,pop_vlan,3,push_vlan(tpid=0x88a8,vid=0,pcp=0),4');
  const tagged = xl(e, udp(1, 2, { vlans: [{ tpid: 0x8100, tci: (2 << 13) | 5 }] }), 1);
  assert.equal(formatProgram(tagged.actions), 'set_vlan_vid(7),2,pop_vlan,3,push_vlan(tpid=0x88a8,vid=0,pcp=0),4');
  assert.equal(tagged.mask[W_TYPE_TCI] & 0xffff, 0xffff);
});

test('NORMAL: flood first, unicast after learning, broadcast floods, aging, moves', () => {
  const e = env(['actions=NORMAL']);
  // A (mac 1) on port 1 -> B (mac 2): unknown, flood (not to in_port, not to no-flood port 4).
  let r = xl(e, udp(1, 2), 1);
  assert.equal(formatProgram(r.actions), '2,3');
  assert.ok(r.usedMacLearning);
  assert.equal(e.macs.lookup(0, 0x020000000001, 0), 11);
  // B replies from port 2: A is known on port 11 -> unicast to dp 1.
  r = xl(e, udp(2, 1), 2);
  assert.equal(formatProgram(r.actions), '1');
  r = xl(e, udp(1, 2), 1);
  assert.equal(formatProgram(r.actions), '2');
  // Broadcast floods.
  assert.equal(formatProgram(xl(e, udp(1, BCAST), 1).actions), '2,3');
  // Destination learned on the in_port: drop.
  assert.equal(formatProgram(xl(e, udp(3, 1), 1).actions), 'drop');
  // VLANs are separate learning domains.
  assert.equal(formatProgram(xl(e, udp(2, 1, { vlans: [{ tpid: 0x8100, tci: 5 }] }), 2).actions), '1,3');
  // Move: A shows up on port 3.
  const v = e.macs.version;
  xl(e, udp(1, 2), 3);
  assert.ok(e.macs.version > v);
  assert.equal(formatProgram(xl(e, udp(2, 1), 2).actions), '3');
  // Aging: 300 s later everything floods again.
  e.now = 301_000;
  assert.equal(formatProgram(xl(e, udp(2, 1), 2).actions), '1,3');
  // The mask of a NORMAL translation covers in_port, MACs and VLAN id.
  const m = r.mask;
  assert.equal(m[1], 0xffffffff);
  assert.equal(m[2], 0xffffffff);
  assert.equal(m[3], 0xffffffff);
  assert.equal(m[W_TYPE_TCI] & 0x1fff, 0x1fff);
});

// ---------------------------------------------------------------------------
// Megaflow correctness property

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const pick = <T>(r: Rand, a: readonly T[]): T => a[Math.floor(r() * a.length)];
const MACS = [mac(1), mac(2), mac(3), BCAST];
const IP4 = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 1, 1]];
const IP6 = [[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
  [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]];
const VLANS = [[], [{ tpid: 0x8100, tci: 10 }], [{ tpid: 0x8100, tci: (3 << 13) | 20 }], [{ tpid: 0x88a8, tci: 10 }, { tpid: 0x8100, tci: 20 }]];

interface Pkt { inPort: number; d: PacketDesc }

function randField(r: Rand, d: PacketDesc, which: number): void {
  switch (which) {
    case 0: d.dst = pick(r, MACS); break;
    case 1: d.src = pick(r, MACS.slice(0, 3)); break;
    case 2: d.vlans = pick(r, VLANS); break;
    case 3: {
      d.l3 = pick(r, ['ipv4', 'ipv4', 'ipv6', 'arp'] as const);
      const v6 = d.l3 === 'ipv6';
      d.srcIp = pick(r, v6 ? IP6 : IP4); d.dstIp = pick(r, v6 ? IP6 : IP4);
      d.proto = pick(r, v6 ? [6, 17, 58] : [6, 17, 1]);
      break;
    }
    case 4: d.srcIp = pick(r, d.l3 === 'ipv6' ? IP6 : IP4); break;
    case 5: d.dstIp = pick(r, d.l3 === 'ipv6' ? IP6 : IP4); break;
    case 6: d.sport = pick(r, [22, 80]); d.icmpType = pick(r, [0, 8]); break;
    case 7: d.dport = pick(r, [22, 80]); d.icmpCode = pick(r, [0, 1]); break;
    case 8: d.tos = pick(r, [0, 0x20]); break;
    case 9: d.arpOp = pick(r, [1, 2]); break;
  }
}
const N_FIELDS = 10;

function randPkt(r: Rand): Pkt {
  const d: PacketDesc = { dst: mac(1), src: mac(2), l3: 'ipv4', payload: 2 };
  for (let i = 0; i < N_FIELDS; i++) randField(r, d, i);
  return { inPort: 1 + Math.floor(r() * 4), d };
}

function mutate(r: Rand, p: Pkt): Pkt {
  const d: PacketDesc = { ...p.d };
  let inPort = p.inPort;
  if (r() < 0.2) inPort = 1 + Math.floor(r() * 4);
  for (let i = 0; i < N_FIELDS; i++) {
    if (r() < 0.25) {
      if (i === 3) { randField(r, d, 3); } else randField(r, d, i);
    }
  }
  // keep addresses consistent with the L3 type
  if (d.l3 === 'ipv6' && d.srcIp!.length !== 16) { d.srcIp = IP6[0]; d.dstIp = IP6[1]; if (![6, 17, 58].includes(d.proto!)) d.proto = 6; }
  if (d.l3 !== 'ipv6' && d.srcIp!.length !== 4) { d.srcIp = IP4[0]; d.dstIp = IP4[1]; if (![6, 17, 1].includes(d.proto!)) d.proto = 6; }
  return { inPort, d };
}

const MATCH_PROTOS: [string, string[]][] = [
  ['', []], ['ip', ['nw_src=10.0.0.0/24', 'nw_dst=10.0.0.2', 'nw_tos=32']],
  ['tcp', ['tp_dst=80', 'tp_src=22', 'nw_src=10.0.0.1']], ['udp', ['tp_dst=0x10/0x10', 'tp_src=80']],
  ['icmp', ['icmp_type=8', 'icmp_code=1']], ['arp', ['arp_op=1', 'arp_spa=10.0.0.1', 'arp_tpa=10.0.0.0/16']],
  ['ipv6', ['ipv6_src=2001:db8::/64', 'ipv6_dst=fe80::1', 'nw_tos=32']], ['tcp6', ['tp_dst=80']], ['icmp6', ['icmp_type=0']],
];
const L2_FIELDS = ['in_port=11', 'in_port=12', 'in_port=13', 'dl_src=02:00:00:00:00:01', 'dl_dst=02:00:00:00:00:02',
  'dl_dst=01:00:00:00:00:00/01:00:00:00:00:00', 'dl_vlan=10', 'dl_vlan=20', 'dl_vlan=0xffff', 'dl_vlan_pcp=3',
  'vlan_tci=0x1000/0x1000'];
const ACTIONS = ['output:11', 'output:12', 'output:13', 'output:14', 'NORMAL', 'FLOOD', 'ALL', 'IN_PORT',
  'mod_dl_src:02:00:00:00:00:09', 'mod_dl_dst:02:00:00:00:00:01', 'mod_vlan_vid:30', 'mod_vlan_pcp:5', 'strip_vlan',
  'push_vlan:0x8100', 'resubmit(,1)', 'resubmit(,2)', 'resubmit:12', 'resubmit(13,1)'];

function randFlow(r: Rand): string {
  const table = Math.floor(r() * 3);
  const parts = [`table=${table}`, `priority=${Math.floor(r() * 4)}`];
  const [proto, l3] = pick(r, MATCH_PROTOS);
  if (proto) parts.push(proto);
  for (const f of L2_FIELDS) if (r() < 0.12) parts.push(f);
  for (const f of l3) if (r() < 0.4) parts.push(f);
  const acts: string[] = [];
  const n = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) acts.push(pick(r, ACTIONS));
  if (table < 2 && r() < 0.2) acts.push(`goto_table:${table + 1}`);
  return `${parts.join(',')},actions=${acts.join(',')}`;
}

test('megaflow correctness: the installed actions are right for every packet the megaflow matches', () => {
  let compared = 0;
  let normals = 0;
  fc.assert(fc.property(fc.integer({ min: 1, max: 0x7fffffff }), (seed) => { try {
    const r = rng(seed);
    const flows: string[] = [];
    const nf = 1 + Math.floor(r() * 12);
    for (let i = 0; i < nf; i++) flows.push(randFlow(r));
    if (r() < 0.5) flows.push('priority=0,actions=NORMAL');
    const e = env(flows, 1000);
    // Pre-learn a few MACs.
    for (let i = 0; i < 3; i++) if (r() < 0.5) e.macs.learn(pick(r, [0, 10, 20]), 0x020000000001 + i, 11 + Math.floor(r() * 4), 0);
    for (let trial = 0; trial < 6; trial++) {
      const p1 = randPkt(r);
      const k1 = keyOf(buildFrame(p1.d), p1.inPort);
      const r1 = xlate(e, k1);
      if (r1.usedMacLearning) normals++;
      // Revalidation: translating the megaflow's own masked key gives the same actions and mask.
      const masked = k1.map((w, i) => (w & r1.mask[i]) >>> 0);
      const rv = xlate(e, masked);
      assert.deepEqual(rv.actions, r1.actions, `seed ${seed}: revalidation actions`);
      assert.deepEqual(rv.mask, r1.mask, `seed ${seed}: revalidation mask`);
      for (let j = 0; j < 12; j++) {
        const p2 = mutate(r, p1);
        const f2 = buildFrame(p2.d);
        const k2 = keyOf(f2, p2.inPort);
        if (!maskedEqual(k1, 0, k2, 0, r1.mask, 0)) continue;
        compared++;
        const viaMegaflow = runAll(r1.actions, f2);
        const r2 = xlate(e, k2);
        const fresh = runAll(r2.actions, f2);
        assert.deepEqual(viaMegaflow, fresh,
          `seed ${seed}\nflows:\n  ${flows.join('\n  ')}\np1 ${JSON.stringify(p1)}\np2 ${JSON.stringify(p2)}\n` +
          `megaflow actions ${formatProgram(r1.actions)}\nfresh actions ${formatProgram(r2.actions)}`);
      }
    }
  } catch (e) { console.log(String((e as Error).message).slice(0, 3000)); throw e; } }), { numRuns: process.env.TSVS_LONG ? 20000 : 400 });
  assert.ok(compared > 1000, `only ${compared} matching packet pairs`);
  assert.ok(normals > 300, `only ${normals} NORMAL translations`);
  if (process.env.TSVS_VERBOSE) console.log(`compared ${compared} pairs, ${normals} NORMAL translations`);
});

test('megaflow masks are not trivially exact: unrelated fields stay wildcarded', () => {
  const e = env(['priority=10,in_port=11,actions=output:12', 'priority=20,tcp,tp_dst=80,actions=output:13']);
  const r = xl(e, udp(1, 2), 1);
  // The tcp rule's subtable was examined (higher priority), so nw_proto and tp_dst are un-wildcarded,
  // but MACs and IP addresses are not.
  assert.equal(r.mask[1], 0);
  assert.equal(r.mask[2], 0);
  assert.equal(r.mask[7], 0);
  assert.equal(r.mask[5] >>> 24, 0xff);
  assert.equal(r.mask[6] & 0xffff, 0xffff);
});

test('set_field on IPv4 addresses and TCP/UDP ports: applied to matching packets, later tables see the new values, groups restore them', () => {
  const e = env([
    'priority=10,in_port=11,ip,actions=set_field:10.1.1.1->ip_src,mod_nw_dst:10.2.2.2,set_field:5353->udp_dst,set_field:80->tcp_dst,goto_table:1',
    'table=1,priority=10,udp,nw_src=10.1.1.1,tp_dst=5353,actions=output:12',
    'table=1,priority=5,actions=output:13',
    'priority=10,in_port=12,actions=set_field:10.9.9.9->ip_src,output:13',
  ]);
  const r = xl(e, udp(1, 2), 1);
  assert.equal(formatProgram(r.actions), 'set(ipv4(src=10.1.1.1)),set(ipv4(dst=10.2.2.2)),set(l4(dst=5353)),2', 'tcp_dst skipped on UDP; table 1 saw the rewrite');
  // the choice depended on dl_type, nw_proto and the fragment bits: un-wildcarded
  assert.equal(r.mask[W_TYPE_TCI] >>> 16, 0xffff);
  // not IPv4: set_field ip_src does nothing
  const arp = buildFrame({ dst: BCAST, src: mac(2), l3: 'arp', arpOp: 1, srcIp: [10, 0, 0, 2], dstIp: [10, 0, 0, 1] });
  assert.equal(formatProgram(xl(e, arp, 2).actions), '3');
  assert.equal(formatProgram(xl(e, udp(1, 2), 2).actions), 'set(ipv4(src=10.9.9.9)),3');
});

test('write_metadata and metadata matches: later tables see the register, masks apply, strict deletes tell metadata apart', () => {
  const e = env([
    'priority=10,in_port=11,actions=write_metadata:0x1234/0xff00,goto_table:1',
    'priority=10,in_port=12,actions=write_metadata:0x5,goto_table:1',
    'table=1,priority=30,metadata=0x1200/0xff00,actions=output:13',
    'table=1,priority=20,metadata=0x5,udp,actions=output:11',
    'table=1,priority=10,actions=output:14',
  ]);
  assert.equal(formatProgram(xl(e, udp(1, 2), 1).actions), '3', 'masked write, masked match');
  assert.equal(formatProgram(xl(e, udp(1, 2), 2).actions), '1', 'exact metadata (write_metadata without mask)');
  assert.equal(formatProgram(xl(e, udp(1, 2), 3).actions), 'drop', 'no rule in table 0 for port 13');
  // a metadata rule of lower priority than a classifier hit loses; the megaflow keeps what the metadata rules looked at
  const r = xl(e, udp(1, 2), 2);
  assert.equal(r.mask[W_TYPE_TCI] >>> 16, 0xffff, 'the udp metadata rule un-wildcarded dl_type');
  // strict selection distinguishes rules that differ only in metadata
  const t = e.tables;
  t.addFlow(parseFlow('table=1,priority=20,metadata=0x6,udp,actions=output:12'), 0);
  assert.equal(t.rules(1).length, 4);
  t.addFlow(parseFlow('table=1,priority=20,metadata=0x6,udp,actions=output:13'), 0);
  assert.equal(t.rules(1).length, 4, 'same priority and match (metadata included): replaced');
  assert.equal(t.delFlows(parseFlow('table=1,priority=20,metadata=0x5,udp', { mode: 'match' }), true).length, 1);
  assert.equal(t.rules(1).length, 3);
  assert.equal(formatProgram(xl(e, udp(1, 2), 2).actions), '4', 'the exact-metadata rule is gone');
  assert.equal(t.delFlows(parseFlow('table=1,metadata=0x1200/0xff00', { mode: 'match' }), false).length, 1, 'loose delete by metadata');
});
