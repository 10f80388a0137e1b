/**
 * VLAN roles of ports in NORMAL (OVS Port tag / trunks / vlan_mode): the translation's program,
 * run on real frames, delivers each frame only to ports that carry its VLAN, with the tag each
 * port's role asks for (PCP kept, inner tag kept), learns per VLAN, drops what the input port does
 * not carry, and leaves the frame as it found it for later actions. The side-by-side test with real
 * OVS is test/openflow/vlan-normal.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { xlate, type XlateEnv, type XlatePort } from '../../src/ofproto/xlate.js';
import { FlowTables } from '../../src/ofproto/tables.js';
import { MacLearningTable } from '../../src/ofproto/mac-learning.js';
import { parseFlow } from '../../src/ofproto/flow-syntax.js';
import { portVlan, inputVlan, includesVlan, outputVid, formatPortVlan, PortVlanError, type PortVlan } from '../../src/ofproto/port-vlan.js';
import { extractKey, FLOW_WORDS, KEY_OK } from '../../src/dp/flow-key.js';
import { buildFrame, mac, runAll } from '../dp/frame-builder.js';

function env(ports: XlatePort[], flows = ['priority=0,actions=NORMAL']): XlateEnv {
  const tables = new FlowTables();
  for (const f of flows) tables.addFlow(parseFlow(f), 0);
  return { tables, macs: new MacLearningTable(), ports, now: 0 };
}

const frame = (src: number, dst: number[] | number, tags: number[] = []): Uint8Array => buildFrame({
  dst: typeof dst === 'number' ? mac(dst) : dst, src: mac(src), vlans: tags.map((tci) => ({ tpid: 0x8100, tci })),
  l3: 'ipv4', proto: 17, srcIp: [10, 0, 0, src], dstIp: [10, 0, 0, 9], sport: 1000, dport: 53, payload: 6,
});
const BCAST = [255, 255, 255, 255, 255, 255];

/** Run NORMAL on `f` from dp port `inPort`: dp port -> outer TCI on the wire (-1: untagged), and the frames. */
function normal(e: XlateEnv, f: Uint8Array, inPort: number): { tags: Map<number, number>; frames: Map<number, number[]> } {
  const k = new Uint32Array(FLOW_WORDS);
  assert.equal(extractKey(f, 0, f.length, inPort, k, 0), KEY_OK);
  const r = xlate(e, k);
  const { out, err } = runAll(r.actions, f);
  assert.equal(err, 0);
  const tags = new Map<number, number>();
  const frames = new Map<number, number[]>();
  for (const [port, bytes] of out) {
    assert.ok(!tags.has(port), `port ${port} got the frame twice`);
    tags.set(port, bytes[12] === 0x81 && bytes[13] === 0x00 ? (bytes[14] << 8) | bytes[15] : -1);
    frames.set(port, bytes);
  }
  return { tags, frames };
}

const role = (c: Parameters<typeof portVlan>[0]): PortVlan => portVlan(c)!;

test('roles from the columns, with OVS defaults and clear errors', () => {
  assert.equal(portVlan({}), undefined);
  assert.deepEqual(portVlan({ tag: 10 }), { mode: 'access', tag: 10 });
  assert.deepEqual(portVlan({ trunks: [10, 20] }), { mode: 'trunk', tag: -1, trunks: new Set([10, 20]) });
  assert.deepEqual(portVlan({ vlan_mode: 'native-untagged', tag: 5, trunks: [7] }), { mode: 'native-untagged', tag: 5, trunks: new Set([7]) });
  assert.equal(formatPortVlan(role({ vlan_mode: 'native-untagged', tag: 5, trunks: [9, 7] })), 'vlan_mode=native-untagged tag=5 trunks=7,9');
  assert.equal(formatPortVlan(role({ vlan_mode: 'trunk' })), 'trunks=all');
  assert.throws(() => portVlan({ tag: 4096 }), PortVlanError);
  assert.throws(() => portVlan({ vlan_mode: 'native-tagged' }), /needs a tag/);
  assert.throws(() => portVlan({ tag: 3, trunks: [4] }), /access port takes no trunks/);
  assert.throws(() => portVlan({ vlan_mode: 'dot1q-tunnel' as never, tag: 3 }), /must be one of/);
});

test('access and trunk ports: flooding per VLAN, tags pushed, changed and popped per port', () => {
  // dp 1 access 10, dp 2 access 10, dp 3 access 20, dp 4 trunk 10,20, dp 5 native-untagged 10 + trunk 20, dp 6 no role
  const ports: XlatePort[] = [
    { ofPort: 1, dpPort: 1, vlan: role({ tag: 10 }) },
    { ofPort: 2, dpPort: 2, vlan: role({ tag: 10 }) },
    { ofPort: 3, dpPort: 3, vlan: role({ tag: 20 }) },
    { ofPort: 4, dpPort: 4, vlan: role({ trunks: [10, 20] }) },
    { ofPort: 5, dpPort: 5, vlan: role({ vlan_mode: 'native-untagged', tag: 10, trunks: [20] }) },
    { ofPort: 6, dpPort: 6 },
  ];
  const e = env(ports);
  // untagged broadcast on access 10: the other access 10 port untagged, the trunk tagged 10, native-untagged 10 untagged, role-less tagged 10
  let r = normal(e, frame(1, BCAST), 1);
  assert.deepEqual([...r.tags].sort(), [[2, -1], [4, 10], [5, -1], [6, 10]]);
  // tagged 20 (PCP 5) on the trunk: access 20 untagged, native port tagged 20 with PCP 5 kept, role-less port tagged 20
  r = normal(e, frame(4, BCAST, [(5 << 13) | 20]), 4);
  assert.deepEqual([...r.tags].sort(), [[3, -1], [5, (5 << 13) | 20], [6, (5 << 13) | 20]]);
  // untagged on the native port: VLAN 10
  r = normal(e, frame(5, BCAST), 5);
  assert.deepEqual([...r.tags].sort(), [[1, -1], [2, -1], [4, 10], [6, 10]]);
  // dropped: a tagged frame on an access port, a VLAN the trunk does not carry
  assert.equal(normal(e, frame(1, BCAST, [10]), 1).tags.size, 0);
  assert.equal(normal(e, frame(4, BCAST, [30]), 4).tags.size, 0);
  // a priority-tagged frame (VLAN id 0, PCP 3) on an access port joins its VLAN; the trunk gets VLAN 10 with PCP 3
  r = normal(e, frame(2, BCAST, [3 << 13]), 2);
  assert.equal(r.tags.get(4), (3 << 13) | 10);
  assert.equal(r.tags.get(1), -1);
  // learning is per VLAN: host 3 learned on dp 3 in VLAN 20 is unknown in VLAN 10
  normal(e, frame(3, BCAST), 3);
  assert.deepEqual([...normal(e, frame(4, mac(3), [20]), 4).tags], [[3, -1]], 'VLAN 20: unicast to where host 3 was learned');
  assert.equal(normal(e, frame(1, mac(3)), 1).tags.size, 4, 'VLAN 10: host 3 unknown there, flooded');
  // reserved multicast (LLDP) is not forwarded
  assert.equal(normal(e, frame(1, [0x01, 0x80, 0xc2, 0, 0, 0x0e]), 1).tags.size, 0);
});

test('the payload and an inner tag survive; actions after NORMAL see the frame as NORMAL found it', () => {
  const ports: XlatePort[] = [
    { ofPort: 1, dpPort: 1, vlan: role({ tag: 10 }) },
    { ofPort: 2, dpPort: 2, vlan: role({ trunks: [10] }) },
    { ofPort: 3, dpPort: 3, vlan: role({ tag: 10 }) },
    { ofPort: 9, dpPort: 9, noFlood: true }, // not flooded to: only output:9 reaches it
  ];
  // double-tagged frame (outer 10, inner 77) from the trunk: access ports get the inner-tagged frame
  const f = frame(2, BCAST, [10, 77]);
  const e = env(ports, ['priority=1,in_port=2,actions=NORMAL,output:9', 'priority=1,in_port=1,actions=NORMAL,output:9']);
  let r = normal(e, f, 2);
  assert.deepEqual(r.frames.get(1), [...f.subarray(0, 12), ...f.subarray(16)], 'outer tag popped, inner kept');
  assert.deepEqual(r.frames.get(9), [...f], 'output:9 after NORMAL: the frame as received');
  // untagged from access: the trunk gets VLAN 10, output:9 after NORMAL gets it untagged
  const g = frame(1, BCAST);
  r = normal(e, g, 1);
  assert.equal(r.tags.get(2), 10);
  assert.deepEqual(r.frames.get(9), [...g]);
  assert.deepEqual(r.frames.get(3), [...g]);
});

test('property: every delivery follows the roles (model: inputVlan / includesVlan / outputVid)', () => {
  const roleArb = fc.oneof(
    fc.constant(undefined),
    fc.integer({ min: 1, max: 4 }).map((tag) => role({ tag })),
    fc.subarray([1, 2, 3, 4]).map((trunks) => role({ vlan_mode: 'trunk', trunks })),
    fc.tuple(fc.constantFrom('native-tagged' as const, 'native-untagged' as const), fc.integer({ min: 1, max: 4 }), fc.subarray([1, 2, 3, 4]))
      .map(([vlan_mode, tag, trunks]) => role({ vlan_mode, tag, trunks })),
  );
  fc.assert(fc.property(
    fc.array(roleArb, { minLength: 2, maxLength: 5 }),
    fc.nat(4), fc.integer({ min: -1, max: 4 }), fc.integer({ min: 0, max: 7 }), fc.boolean(),
    (roles, inIdx, vid, pcp, inner) => {
      const ports: XlatePort[] = roles.map((v, i) => ({ ofPort: i + 1, dpPort: i + 1, ...(v ? { vlan: v } : {}) }));
      const inPort = (inIdx % ports.length) + 1;
      const tags = vid < 0 ? [] : [(pcp << 13) | vid, ...(inner ? [0x55] : [])];
      const r = normal(env(ports), frame(9, BCAST, tags), inPort);
      const vlan = inputVlan(roles[inPort - 1], vid < 0 ? 0 : vid);
      for (const p of ports) {
        const got = r.tags.get(p.dpPort);
        const want = p.dpPort === inPort || vlan < 0 || !includesVlan(p.vlan, vlan) ? undefined : outputVid(p.vlan, vlan);
        if (want === undefined) { assert.equal(got, undefined, `port ${p.dpPort} must not get it`); continue; }
        if (want === 0) {
          // untagged (or, for an inner-tagged frame, only the inner tag left)
          assert.equal(got, vid >= 0 && inner ? 0x55 : -1, `port ${p.dpPort}: untagged`);
        } else {
          assert.equal(got! & 0xfff, want, `port ${p.dpPort}: VLAN ${want}`);
          assert.equal(got! >> 13, vid >= 0 ? pcp : 0, `port ${p.dpPort}: PCP`);
        }
      }
    },
  ), { numRuns: 500 });
});
