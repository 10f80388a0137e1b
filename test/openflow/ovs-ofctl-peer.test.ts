/**
 * The unchanged `ovs-ofctl -O OpenFlow13` drives tsvs and real OVS (dummy
 * datapath, no network) side by side with the same commands: add-flow,
 * add-flows, mod-flows (strict and not), del-flows (strict and not),
 * packet-out through the tables, then dump-flows / dump-ports /
 * dump-ports-desc / dump-tables / show. The normalised flow dumps (counters
 * included: the packet-outs went through the rules) and the per-port
 * transmit counts must be the same; what tsvs refuses gets the right error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ofctl } from '../harness/ovs-dummy.js';
import { startSideBySide } from '../harness/of-side-by-side.js';
import { waitFor } from '../harness/wait.js';

const FLOWS_FILE = [
  'priority=300,in_port=1,tcp,nw_dst=10.0.0.2,tp_dst=80,actions=output:2',
  'priority=200,in_port=1,ip,nw_src=10.0.0.0/8,actions=resubmit(,1)',
  'priority=100,dl_dst=02:00:00:00:00:03,dl_vlan=5,actions=mod_vlan_vid:20,output:3',
  'priority=50,arp,arp_tpa=10.0.0.9,actions=drop',
  'cookie=0x10,priority=10,in_port=1,actions=output:3',
];
const FLOWS_ONE = [
  'table=1,priority=10,ipv6,ipv6_dst=2001:db8::/32,actions=output:2',
  'table=1,priority=5,udp,tp_src=53,actions=output:2',
  'table=1,priority=1,actions=output:2,output:3',
  'table=2,priority=1,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,icmp,icmp_type=8,actions=output:3',
  'table=2,priority=7,cookie=0x20,dl_type=0x88b5,actions=CONTROLLER:64',
  // tunnel metadata: OXM tunnel_id and Nicira's tun_src/tun_dst in OpenFlow 1.3 matches, set_field tun_id
  'table=4,priority=5,tun_id=0x7,actions=output:2',
  'table=4,priority=4,tun_id=0x10/0xf0,tun_src=192.168.1.1,tun_dst=192.168.1.0/24,actions=set_field:0x9->tun_id,output:3',
  'table=4,priority=3,in_port=2,actions=set_tunnel:0x1234,output:1',
];

function hex(...parts: string[]): string {
  const s = parts.join('');
  return s.length < 120 ? s + '0'.repeat(120 - s.length) : s;
}
const MAC1 = '020000000001';
const ipv4 = (proto: string, l4: string): string =>
  `4500002e000100004${proto}0000` + '0a000001' + (proto === '06' ? '0a000002' : '0a000005') + l4;
const PACKETS = [
  hex('ffffffffffff', MAC1, '0800', ipv4('06', '30390050000000000000000050020000')), // tcp -> 10.0.0.2:80: p2
  hex('ffffffffffff', MAC1, '0800', ipv4('11', '0035abcd00080000')), // udp sport 53: resubmit(,1) -> (modified) p3
  hex('ffffffffffff', MAC1, '0800', ipv4('01', '0800f7ff00000000')), // icmp: resubmit(,1) -> p2,p3
  hex('ffffffffffff', MAC1, '0806', '0001080006040001', MAC1, '0a000001', '000000000000', '0a000009'), // arp tpa .9
  hex('020000000003', MAC1, '8100', '0005', '88b5', 'aa'), // vlan 5 to ..:03: mod_vlan_vid, p3
  hex('020000000003', MAC1, '88b5', 'bb'), // untagged to ..:03: cookie 0x10 rule, p3
];

/** dump-flows lines without durations, sorted. */
function normFlows(text: string): string[] {
  return text.split('\n').filter((l) => l.includes('actions=')).map((l) => l.replace(/duration=[0-9.]+s, /, '').trim()).sort();
}

/** port -> tx packets from dump-ports. */
function txByPort(text: string): Map<string, number> {
  const m = new Map<string, number>();
  const re = /port\s+(\w+):[^\n]*\n\s+tx pkts=(\d+)/g;
  for (let x = re.exec(text); x; x = re.exec(text)) if (x[1] !== 'LOCAL') m.set(x[1], Number(x[2]));
  return m;
}

function portsOf(show: string): string[] {
  return [...show.matchAll(/^\s*(\d+)\((\w+)\): addr/gm)].map((x) => `${x[1]}(${x[2]})`).sort();
}

test('ovs-ofctl -O OpenFlow13 programs tsvs and real OVS alike', async (t) => {
  const { ovs, tsvs, both } = await startSideBySide(t, { prefix: 'ofctl' });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-flows-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const file = path.join(tmp, 'flows.txt');
  fs.writeFileSync(file, FLOWS_FILE.join('\n') + '\n');

  for (const sw of both) {
    ofctl('del-flows', sw);
    ofctl('add-flows', sw, file);
    for (const f of FLOWS_ONE) ofctl('add-flow', sw, f);
    ofctl('mod-flows', sw, 'table=1,udp,actions=output:3'); // loose: the udp rule of table 1
    ofctl('mod-flows', sw, '--strict', 'priority=50,arp,arp_tpa=10.0.0.9,actions=output:2');
    ofctl('del-flows', sw, '--strict', 'table=2,priority=1,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,icmp,icmp_type=8');
    ofctl('add-flow', sw, 'table=3,priority=9,actions=drop');
    ofctl('add-flow', sw, 'table=3,priority=8,tcp,actions=drop');
    ofctl('del-flows', sw, 'table=3,tcp'); // loose: only the tcp rule
    ofctl('del-flows', sw, 'cookie=0x20/-1'); // by cookie
  }
  const dumps = both.map((sw) => normFlows(ofctl('dump-flows', sw)));
  assert.ok(dumps[1].length >= 9, dumps[1].join('\n'));
  assert.deepEqual(dumps[0], dumps[1], 'the same flows come back from tsvs and OVS');

  // traffic through the rules: packet-out to TABLE from port 1
  for (const sw of both) for (const p of PACKETS) ofctl('packet-out', sw, '1', 'TABLE', p);
  const flowsAfter = both.map((sw) => normFlows(ofctl('dump-flows', sw)));
  assert.deepEqual(flowsAfter[0], flowsAfter[1], 'rule counters after the packet-outs');
  assert.ok(flowsAfter[0].some((l) => /n_packets=[1-9]/.test(l)));
  const wantTx = txByPort(ofctl('dump-ports', ovs.mgmt('br0')));
  // the tap ports count what they sent once the PMD flushed it (on timeout, the comparison below shows the difference)
  let gotTx = txByPort(ofctl('dump-ports', tsvs));
  await waitFor(() => JSON.stringify([...(gotTx = txByPort(ofctl('dump-ports', tsvs)))]) === JSON.stringify([...wantTx]), { what: 'tap tx counters as OVS', timeout: 5000, interval: 50 }).catch(() => undefined);
  assert.deepEqual([...gotTx].sort(), [...wantTx].sort(), 'packets left by the same ports');
  assert.ok([...wantTx.values()].reduce((a, b) => a + b, 0) >= 6);

  // show / dump-ports-desc / dump-tables
  assert.deepEqual(portsOf(ofctl('show', tsvs)), portsOf(ofctl('show', ovs.mgmt('br0'))).filter((p) => !p.includes('LOCAL')));
  assert.deepEqual(portsOf(ofctl('dump-ports-desc', tsvs)), ['1(p1)', '2(p2)', '3(p3)']);
  const active = (s: string): string[] => [...s.matchAll(/table (\d+):?[^\n]*\n?\s*active=(\d+)/g)].filter((x) => x[2] !== '0').map((x) => `${x[1]}:${x[2]}`);
  const tabT = ofctl('dump-tables', tsvs);
  assert.deepEqual(active(tabT), active(ofctl('dump-tables', ovs.mgmt('br0'))), tabT.slice(0, 400));

  // refused with the right error: an action tsvs does not implement
  assert.throws(() => ofctl('add-flow', tsvs, 'actions=push_mpls:0x8847'), /OFPBAC_BAD_TYPE/);
  assert.throws(() => ofctl('add-flow', tsvs, 'ipv6,actions=set_field:2001:db8::1->ipv6_src'), /OFPBAC_BAD_SET_TYPE/);
  assert.throws(() => ofctl('add-flow', tsvs, 'table=1,actions=goto_table:1'), /OFPBIC_BAD_TABLE_ID/);
  assert.throws(() => ofctl('add-flow', tsvs, 'actions=group:99'), /OFPBAC_BAD_OUT_GROUP/);
});
