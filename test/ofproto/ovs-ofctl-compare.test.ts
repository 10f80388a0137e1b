/**
 * Differential test against the real ovs-ofctl (package openvswitch-common):
 * random flows are parsed by both; `ovs-ofctl parse-flow` prints the flow
 * and our formatter must print the same text. Skipped if ovs-ofctl is absent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { parseFlow, formatMatch, formatActions } from '../../src/ofproto/flow-syntax.js';

const have = spawnSync('ovs-ofctl', ['--version']).status === 0;

const PROTOS: [string, string[]][] = [
  ['', []],
  ['ip', ['nw_src=10.0.0.0/24', 'nw_dst=10.0.0.2', 'nw_tos=32', 'nw_src=1.2.0.0/255.255.0.255', 'nw_ttl=3', 'ip_frag=later', 'ip_frag=no', 'nw_proto=50']],
  ['tcp', ['tp_dst=80', 'tp_src=22', 'nw_src=10.0.0.1', 'tp_dst=0x100/0xff00']],
  ['udp', ['tp_dst=0x10/0x10', 'tp_src=80']],
  ['icmp', ['icmp_type=8', 'icmp_code=1']],
  ['arp', ['arp_op=1', 'arp_spa=10.0.0.1', 'arp_tpa=10.0.0.0/16']],
  ['ipv6', ['ipv6_src=2001:db8::/64', 'ipv6_dst=fe80::1', 'nw_tos=32', 'ipv6_dst=::ffff:1.2.3.4', 'ipv6_src=2001:db8::/ffff:ffff::ffff']],
  ['tcp6', ['tp_dst=80']], ['icmp6', ['icmp_type=0']], ['sctp', ['tp_dst=9']], ['dl_type=0x88cc', []], ['udp6', ['tp_src=1']],
];
const L2 = ['in_port=11', 'in_port=LOCAL', 'dl_src=02:00:00:00:00:01', 'dl_dst=02:00:00:00:00:02',
  'dl_dst=01:00:00:00:00:00/01:00:00:00:00:00', 'dl_vlan=10', 'dl_vlan=0xffff', 'dl_vlan_pcp=3', 'vlan_tci=0x1000/0x1000',
  'vlan_tci=0x0005/0x0fff', 'dl_src=aa:bb:cc:dd:ee:ff/ff:ff:ff:00:00:00'];
const ACTS = ['output:11', 'NORMAL', 'FLOOD', 'ALL', 'IN_PORT', 'LOCAL', 'mod_dl_src:02:00:00:00:00:09',
  'mod_dl_dst:02:00:00:00:00:01', 'mod_vlan_vid:30', 'mod_vlan_pcp:5', 'strip_vlan', 'resubmit(,1)', 'resubmit:12',
  'resubmit(13,1)', '7'];

test('our formatting of random flows equals ovs-ofctl parse-flow', () => {
  assert.ok(have, 'ovs-ofctl is not installed (apt-get install openvswitch-common): this test needs the real peer');
  let seed = Number(process.env.TSVS_SEED ?? Date.now() % 100000);
  const r = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const startSeed = seed;
  const n = process.env.TSVS_LONG ? 500 : 60;
  for (let i = 0; i < n; i++) {
    const parts: string[] = [];
    if (r() < 0.5) parts.push(`priority=${Math.floor(r() * 100)}`);
    const [proto, l3] = pick(PROTOS);
    if (proto) parts.push(proto);
    for (const f of L2) if (r() < 0.15) parts.push(f);
    for (const f of l3) if (r() < 0.4) parts.push(f);
    const acts: string[] = [];
    const na = Math.floor(r() * 4);
    for (let j = 0; j < na; j++) acts.push(pick(ACTS));
    const flow = `${parts.join(',')}${parts.length ? ',' : ''}actions=${acts.join(',')}`;
    const s = parseFlow(flow);
    const m = formatMatch(s.match, s.priority);
    const ours = `${m}${m ? ' ' : ''}actions=${formatActions(s.actions)}`;
    const res = spawnSync('ovs-ofctl', ['parse-flow', flow], { encoding: 'utf8' });
    assert.equal(res.status, 0, `ovs-ofctl rejected ${flow}: ${res.stderr}`);
    const theirs = res.stdout.trim().split('\n').pop()!.replace(/^.*?: ADD /, '');
    assert.equal(ours, theirs, `flow ${flow} (TSVS_SEED=${startSeed})`);
  }
});
