/**
 * A Faucet-style pipeline replayed on tsvs and on real OVS (dummy datapath)
 * side by side, programmed by the unchanged `ovs-ofctl -O OpenFlow13`:
 * four tables as Faucet lays them out (0 vlan: push_vlan/set_field on
 * untagged ports, tagged port accepted; 1 eth_src: masked multicast-source
 * drop, known hosts, unknown sources to the controller with Faucet's cookie
 * and on to the next table; 2 eth_dst: known destinations with pop_vlan;
 * 3 flood: masked link-local drop, flooding with the tag kept on the trunk),
 * plus two rules rewriting IPv4 addresses and TCP/UDP ports (set_field) and
 * a write_metadata whose value a later table matches.
 * The same packet-outs (to TABLE, from each port) go through both; then
 *  - every port transmitted the same frames, byte for byte, in the same order
 *    (rewritten addresses and ports with the checksums OVS computes)
 *    (tsvs: tcpdump on its tap ports; OVS: the dummy ports' tx_pcap),
 *  - the flow dumps (with n_packets) are the same,
 *  - the packet-ins a controller connection receives (our small OpenFlow
 *    client on the management socket: SET_CONFIG miss_send_len, SET_ASYNC)
 *    are the same: reason ACTION, table 1, cookie 0x5adc15c0, in_port, the
 *    frame as the pipeline left it (VLAN pushed), whole although max_len is
 *    96 (never buffered: the spec and OVS send the entire packet),
 *  - SET_ASYNC is honoured: with ACTION masked off no packet-in arrives,
 *    while a second connection with the default masks gets it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ofctl } from '../harness/ovs-dummy.js';
import { startSideBySide, captureTsvsTaps, pcapFrames, sentFrames } from '../harness/of-side-by-side.js';
import { OfTestClient, type PacketIn } from '../harness/of-client.js';
import { waitFor } from '../harness/wait.js';

const COOKIE = '0x5adc15c0';
const VID = 4096 + 100; // OFPVID_PRESENT | 100
const PIPELINE = [
  // table 0: vlan
  `table=0,priority=9000,in_port=1,vlan_tci=0x0000/0x1fff,actions=push_vlan:0x8100,set_field:${VID}->vlan_vid,goto_table:1`,
  `table=0,priority=9000,in_port=2,vlan_tci=0x0000/0x1fff,actions=push_vlan:0x8100,set_field:${VID}->vlan_vid,goto_table:1`,
  'table=0,priority=9000,in_port=3,dl_vlan=100,actions=goto_table:1',
  'table=0,priority=0,actions=drop',
  // table 1: eth_src
  'table=1,priority=9099,dl_src=01:00:00:00:00:00/01:00:00:00:00:00,actions=drop',
  'table=1,priority=9001,in_port=1,dl_vlan=100,dl_src=02:00:00:00:00:01,actions=goto_table:2',
  `cookie=${COOKIE},table=1,priority=9000,dl_vlan=100,actions=CONTROLLER:96,goto_table:2`,
  'table=1,priority=0,actions=drop',
  // table 2: eth_dst
  'table=2,priority=9001,dl_vlan=100,dl_dst=02:00:00:00:00:01,actions=pop_vlan,output:1',
  'table=2,priority=9001,dl_vlan=100,dl_dst=02:00:00:00:00:03,actions=output:3',
  'table=2,priority=9000,dl_vlan=100,actions=goto_table:3',
  // table 3: flood
  'table=3,priority=9002,dl_dst=01:80:c2:00:00:00/ff:ff:ff:ff:ff:f0,actions=drop',
  'table=3,priority=9001,dl_vlan=100,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=output:3,pop_vlan,output:1,output:2',
  'table=3,priority=9000,dl_vlan=100,actions=output:3,pop_vlan,output:1,output:2',
];

const mac = (n: number): string => `0200000000${n.toString(16).padStart(2, '0')}`;
const pad = (s: string, bytes = 60): string => (s.length < 2 * bytes ? s + '0'.repeat(2 * bytes - s.length) : s);
const ARP_REQ = (src: string): string => pad('ffffffffffff' + src + '0806' + '0001080006040001' + src + '0a000001' + '000000000000' + '0a000002');
const ETH = (dst: string, src: string, tag?: number, bytes = 60): string =>
  pad(dst + src + (tag !== undefined ? '8100' + tag.toString(16).padStart(4, '0') : '') + '88b5' + 'c0ffee', bytes);

/** Besides Faucet's tables: address and port rewrites (set_field beyond eth/vlan), checked byte for byte against OVS. */
const REWRITES = [
  'table=0,priority=9500,in_port=1,udp,nw_dst=10.0.0.99,actions=set_field:10.9.9.9->ip_src,set_field:10.8.8.8->ip_dst,set_field:5353->udp_dst,output:2',
  'table=0,priority=9500,in_port=1,tcp,tp_dst=80,actions=set_field:1234->tcp_src,set_field:8080->tcp_dst,set_field:10.1.2.3->ip_dst,output:2',
  // write_metadata in one table, metadata matched in the next
  'table=0,priority=9400,in_port=1,ip,nw_dst=10.0.0.77,actions=write_metadata:0x500/0xff00,goto_table:4',
  'table=4,priority=10,metadata=0x500/0xff00,actions=output:3',
  'table=4,priority=5,actions=output:2',
];

function ones(b: Buffer, init = 0): number {
  let s = init;
  for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
/** An untagged IPv4 TCP or UDP frame from 02:..:01 with correct checksums. */
function ipFrame(proto: 6 | 17, src: string, dst: string, sport: number, dport: number, payload: string): string {
  const pay = Buffer.from(payload);
  const l4 = Buffer.alloc((proto === 6 ? 20 : 8) + pay.length);
  l4.writeUInt16BE(sport, 0);
  l4.writeUInt16BE(dport, 2);
  if (proto === 6) { l4.writeUInt32BE(1000, 4); l4[12] = 0x50; l4[13] = 0x18; l4.writeUInt16BE(512, 14); } else l4.writeUInt16BE(l4.length, 4);
  pay.copy(l4, proto === 6 ? 20 : 8);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45; ip.writeUInt16BE(20 + l4.length, 2); ip[8] = 64; ip[9] = proto;
  Buffer.from(src.split('.').map(Number)).copy(ip, 12);
  Buffer.from(dst.split('.').map(Number)).copy(ip, 16);
  ip.writeUInt16BE(~ones(ip) & 0xffff, 10);
  const ph = Buffer.alloc(12);
  ip.copy(ph, 0, 12, 20); ph[9] = proto; ph.writeUInt16BE(l4.length, 10);
  l4.writeUInt16BE(~ones(l4, ones(ph)) & 0xffff, proto === 6 ? 16 : 6);
  return pad(mac(9) + mac(1) + '0800' + ip.toString('hex') + l4.toString('hex'));
}

/** [in_port, frame] packet-outs to TABLE, in order. */
const PACKETS: [number, string][] = [
  [1, ARP_REQ(mac(1))], // known source, broadcast: flood table -> p3 tagged, p2 untagged
  [1, ETH(mac(3), mac(1))], // known source to a known trunk host: p3 tagged
  [3, ETH(mac(1), mac(3), 100)], // trunk, unknown source: packet-in (ACTION, table 1), then p1 untagged
  [2, ETH(mac(1), mac(2))], // unknown source on an access port: packet-in, then p1
  [1, ETH(mac(2), '010000000099')], // multicast source: dropped by the masked eth_src rule
  [1, ETH('0180c200000e', mac(1))], // link-local destination: dropped by the masked flood-table rule
  [3, ETH(mac(1), mac(3), 200)], // VLAN 200 on the trunk: no vlan-table rule
  [2, ETH(mac(1), mac(2), 100)], // tagged frame on an access port: dropped
  [2, ETH(mac(3), mac(2), undefined, 120)], // 120 bytes, max_len 96: the packet-in still carries it whole (not buffered), then p3 tagged
  [1, ETH(mac(9), mac(1))], // unknown destination: flooded
  [1, ipFrame(17, '10.0.0.1', '10.0.0.99', 4000, 53, 'query')], // rewritten addresses and port, checksums fixed: p2
  [1, ipFrame(6, '10.0.0.1', '10.0.0.80', 40000, 80, 'GET / HTTP/1.0')], // rewritten ports and address: p2
  [1, ipFrame(17, '10.0.0.1', '10.0.0.77', 7, 7, 'meta')], // metadata written in table 0 selects p3 in table 4
];

function normFlows(text: string): string[] {
  return text.split('\n').filter((l) => l.includes('actions=')).map((l) => l.replace(/duration=[0-9.]+s, /, '').trim()).sort();
}

const pinKey = (p: PacketIn): string => `reason=${p.reason} table=${p.table} cookie=0x${p.cookie.toString(16)} in_port=${p.inPort} total_len=${p.totalLen} ${p.frame}`;

test('a Faucet-style 4-table pipeline behaves on tsvs as on real OVS (frames, counters, packet-ins, SET_ASYNC)', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-faucet-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const rig = await startSideBySide(t, { prefix: 'faucet', pcapDir: tmp, secure: true });
  const { ovs, d, tsvs, both } = rig;

  // tcpdump on tsvs's taps: what tsvs transmits
  await captureTsvsTaps(t, rig, tmp);

  // the pipeline, through ovs-ofctl on both
  const file = path.join(tmp, 'faucet.flows');
  fs.writeFileSync(file, [...PIPELINE, ...REWRITES].join('\n') + '\n');
  for (const sw of both) ofctl('add-flows', sw, file);
  assert.deepEqual(normFlows(ofctl('dump-flows', tsvs)), normFlows(ofctl('dump-flows', ovs.mgmt('br0'))), 'the same pipeline comes back');

  // controller-like connections: `ctl` asks for ACTION packet-ins only (SET_ASYNC), `all` keeps the default masks
  const ACTION = 1 << 1;
  const NO_MATCH = 1 << 0;
  const clients = await Promise.all(both.map(async (sw) => {
    const ctl = await OfTestClient.connect(sw);
    const all = await OfTestClient.connect(sw);
    t.after(() => { ctl.close(); all.close(); });
    for (const c of [ctl, all]) c.setMissSendLen(0xffff);
    ctl.setAsync(ACTION);
    for (const c of [ctl, all]) await c.barrier();
    return { ctl, all };
  }));

  for (const sw of both) for (const [port, frame] of PACKETS) ofctl('packet-out', sw, String(port), 'TABLE', frame);
  const nPin = 3;
  for (const [k, c] of clients.entries()) {
    await waitFor(() => c.ctl.packetIns.length >= nPin && c.all.packetIns.length >= nPin, {
      what: `${nPin} packet-ins from ${k === 0 ? 'tsvs' : 'OVS'}`, describe: () => JSON.stringify(c.ctl.packetIns.map(pinKey)),
    });
  }
  const pins = clients.map((c) => c.ctl.packetIns.map(pinKey));
  assert.deepEqual(pins[0], pins[1], 'the same packet-ins from tsvs and OVS');
  assert.equal(pins[0].length, nPin);
  for (const p of clients[0].ctl.packetIns) {
    assert.equal(p.reason, 1, 'reason ACTION');
    assert.equal(p.table, 1);
    assert.equal(p.cookie, 0x5adc15c0n);
    assert.ok(p.frame.slice(24, 32) === '81000064', 'the frame as the pipeline left it: VLAN 100 pushed');
  }
  assert.deepEqual(clients[0].ctl.packetIns.map((p) => [p.inPort, p.totalLen, p.frame.length / 2]), [[3, 60, 60], [2, 64, 64], [2, 124, 124]]);

  // SET_ASYNC: ACTION masked off on `ctl`; `all` still gets the packet-in; then on again
  for (const [k, sw] of both.entries()) {
    const { ctl, all } = clients[k];
    ctl.setAsync(NO_MATCH);
    await ctl.barrier();
    ofctl('packet-out', sw, '2', 'TABLE', PACKETS[3][1]);
    await waitFor(() => all.packetIns.length === nPin + 1, { what: 'the packet-in on the default connection' });
    ctl.setAsync(ACTION);
    await ctl.barrier();
    ofctl('packet-out', sw, '3', 'TABLE', PACKETS[2][1]);
    await waitFor(() => all.packetIns.length === nPin + 2 && ctl.packetIns.length >= nPin + 1, { what: 'the packet-in after ACTION was asked for again' });
    assert.deepEqual(ctl.packetIns.slice(nPin).map((p) => p.inPort), [3], `${k === 0 ? 'tsvs' : 'OVS'}: no packet-in while ACTION was masked off`);
    assert.deepEqual(ctl.errors, []);
    assert.deepEqual(all.errors, []);
  }

  // counters and frames: the same on both
  await waitFor(async () => {
    const f = both.map((sw) => normFlows(ofctl('dump-flows', sw)));
    return JSON.stringify(f[0]) === JSON.stringify(f[1]);
  }, { what: 'the same flow counters', describe: () => both.map((sw) => ofctl('dump-flows', sw)).join('\n') });
  assert.ok(normFlows(ofctl('dump-flows', tsvs)).some((l) => l.includes(`cookie=${COOKIE}`) && /n_packets=5\b/.test(l)), ofctl('dump-flows', tsvs));
  const total = [1, 2, 3].map((i) => pcapFrames(path.join(tmp, `ovs-p${i}.pcap`)).length).reduce((a, b) => a + b, 0);
  assert.ok(total >= 10, `OVS sent ${total} frames`);
  const txTotal = async (): Promise<number> => {
    const ps = JSON.parse((await d.cli('port-stats', '--json')).stdout) as { txPackets: number }[];
    return ps.reduce((a, p) => a + p.txPackets, 0);
  };
  await waitFor(async () => (await txTotal()) >= total, { what: `tsvs sent ${total} frames`, describe: async () => String(await txTotal()) });
  const { tsvs: tsvsFrames, ovs: ovsFrames } = await sentFrames(rig, tmp);
  for (const i of [0, 1, 2]) assert.deepEqual(tsvsFrames[i], ovsFrames[i], `frames out of p${i + 1}`);
  // the rewritten ones are among them (the checksums OVS computed are the ones tsvs wrote)
  assert.ok(tsvsFrames[1].some((f) => f.includes('0a0909090a080808') && f.includes('0fa014e9')), 'udp 10.9.9.9 -> 10.8.8.8:5353 on p2');
  assert.ok(tsvsFrames[1].some((f) => f.includes('0a010203') && f.includes('04d21f90')), 'tcp 1234 -> 10.1.2.3:8080 on p2');
  assert.ok(tsvsFrames[2].some((f) => f.includes('0a00004d')), 'the metadata rule sent 10.0.0.77 to p3');
});
