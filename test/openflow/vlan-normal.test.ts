/**
 * VLAN roles in NORMAL, on tsvs and on real OVS (dummy datapath) side by side: the same Port
 * columns (OVS: `ovs-vsctl set Port`; tsvs: `tsvs set-port`, the same tag / trunks / vlan_mode)
 * and the same packet-outs through a NORMAL rule (ovs-ofctl -O OpenFlow13); every port must
 * transmit the same frames, byte for byte, in the same order:
 *  - p1 access VLAN 10, p2 access VLAN 20, p3 trunk of 10 and 20: untagged frames get the access
 *    port's tag on the trunk, tagged frames from the trunk leave access ports untagged, learning is
 *    per VLAN, a tagged frame on an access port, a VLAN the trunk does not carry and an untagged
 *    frame on the trunk (VLAN 0) are dropped, a priority-tagged frame keeps its PCP, an inner tag
 *    survives, LLDP is not forwarded;
 *  - then p3 native-untagged with VLAN 10 and trunk 20, changed while the ports run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ofctl } from '../harness/ovs-dummy.js';
import { startSideBySide, captureTsvsTaps, sentFrames } from '../harness/of-side-by-side.js';

const BC = 'ffffffffffff';
const mac = (n: number): string => `0200000000${n.toString(16).padStart(2, '0')}`;
const tag = (tci: number): string => `8100${tci.toString(16).padStart(4, '0')}`;
/** An Ethernet frame dst, src, tags, then an experimental ethertype and a marker (padded to 60 B). */
function eth(dst: string, src: string, tags: number[], marker: number): string {
  const s = dst + src + tags.map(tag).join('') + '88b5' + marker.toString(16).padStart(4, '0');
  return s.length < 120 ? s + '0'.repeat(120 - s.length) : s;
}

/** [in port, frame]: each marked so a mismatch says which one. */
const PHASE1: [number, string][] = [
  [1, eth(BC, mac(1), [], 1)], // access 10 -> trunk, tagged 10
  [2, eth(BC, mac(2), [], 2)], // access 20 -> trunk, tagged 20
  [3, eth(mac(1), mac(3), [10], 3)], // trunk, VLAN 10, to host 1 (learned on p1): p1 only, untagged
  [3, eth(BC, mac(3), [20], 4)], // trunk, VLAN 20 broadcast: p2 untagged
  [3, eth(BC, mac(3), [30], 5)], // trunk, VLAN 30: not carried, dropped
  [1, eth(BC, mac(1), [10], 6)], // tagged on an access port: dropped
  [3, eth(BC, mac(3), [], 7)], // untagged on the trunk: VLAN 0, nobody carries it
  [2, eth(BC, mac(2), [(5 << 13) | 0], 8)], // priority-tagged (PCP 5) on access 20: trunk gets VLAN 20, PCP 5
  [1, eth('0180c200000e', mac(1), [], 9)], // LLDP: not forwarded
  [3, eth(BC, mac(3), [10, 99], 10)], // double-tagged from the trunk: p1 gets the inner-tagged frame
  [2, eth(mac(3), mac(2), [], 11)], // to host 3, learned in VLAN 20 on p3: tagged 20 on p3
];
const PHASE2: [number, string][] = [
  [3, eth(BC, mac(3), [], 12)], // native-untagged: untagged is VLAN 10 -> p1
  [1, eth(BC, mac(1), [], 13)], // VLAN 10 leaves p3 untagged
  [2, eth(BC, mac(2), [], 14)], // VLAN 20 leaves p3 tagged
  [3, eth(BC, mac(3), [10], 15)], // tagged 10 on a native port of VLAN 10 whose trunks are 20: accepted (OVS adds the native VLAN)
];

test('NORMAL with access, trunk and native VLAN ports: tsvs sends what OVS sends', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vlan-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const rig = await startSideBySide(t, { prefix: 'vlan', pcapDir: tmp, secure: true });
  const { ovs, d, both } = rig;
  await captureTsvsTaps(t, rig, tmp);
  for (const sw of both) ofctl('add-flow', sw, 'priority=0,actions=NORMAL');

  const setPort = async (port: string, cols: string[]): Promise<void> => {
    ovs.vsctl('set', 'Port', port, ...cols);
    const r = await d.cli('set-port', port, ...cols);
    assert.equal(r.code, 0, r.stderr);
  };
  await setPort('p1', ['tag=10']);
  await setPort('p2', ['tag=20']);
  await setPort('p3', ['trunks=10,20']);
  const show = JSON.parse((await d.cli('show', '--json')).stdout) as { ports: { name: string; vlan?: string }[] }[];
  assert.deepEqual(show[0].ports.map((p) => `${p.name}:${p.vlan ?? ''}`), ['p1:tag=10', 'p2:tag=20', 'p3:trunks=10,20']);

  const send = (list: [number, string][]): void => { for (const sw of both) for (const [port, f] of list) ofctl('packet-out', sw, String(port), 'TABLE', f); };
  send(PHASE1);
  await setPort('p3', ['vlan_mode=native-untagged', 'tag=10', 'trunks=20']);
  send(PHASE2);

  const { tsvs: got, ovs: want } = await sentFrames(rig, tmp);
  const total = want.reduce((a, f) => a + f.length, 0);
  assert.equal(total, 11, `OVS sent ${total} frames: ${JSON.stringify(want)}`);
  for (const i of [0, 1, 2]) assert.deepEqual(got[i], want[i], `frames out of p${i + 1}`);
  // what the roles promise, checked on the frames themselves (marker = last bytes before the padding)
  const marks = (frames: string[]): number[] => frames.map((f) => parseInt(f.slice(f.indexOf('88b5') + 4, f.indexOf('88b5') + 8), 16));
  assert.deepEqual(marks(got[0]), [3, 10, 12, 15], 'p1 (access 10)');
  assert.ok(got[0][1].startsWith(BC + mac(3) + tag(99)), 'the inner tag survives the pop');
  assert.deepEqual(marks(got[2]), [1, 2, 8, 11, 13, 14], 'p3 (trunk, then native-untagged 10)');
  assert.ok(got[2][2].startsWith(BC + mac(2) + tag((5 << 13) | 20)), 'priority tag: VLAN 20, PCP 5 kept');
  assert.ok(got[2][4].startsWith(BC + mac(1) + '88b5'), 'native VLAN leaves untagged');
  assert.deepEqual(marks(got[1]), [4], 'p2 (access 20)');
});
