import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  executeActions, ProgramBuilder, formatProgram, validateProgram, EXEC_DONE, EXEC_ERROR,
  ST_OFF, ST_LEN, ST_NOUT, ST_ERR, ERR_NO_ROOM, ERR_BAD_PROGRAM, OP_OUTPUT,
} from '../../src/dp/actions.js';
import { extractKey, FLOW_WORDS, fieldByName, getField } from '../../src/dp/flow-key.js';
import { buildFrame, mac, runAll } from './frame-builder.js';

const base = buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv4', proto: 17, srcIp: [1, 1, 1, 1], dstIp: [2, 2, 2, 2], sport: 1, dport: 2, payload: 10 });

const key = (f: number[] | Uint8Array): Uint32Array => {
  const k = new Uint32Array(FLOW_WORDS);
  const b = Uint8Array.from(f);
  extractKey(b, 0, b.length, 0, k, 0);
  return k;
};
const fv = (k: Uint32Array, n: string): bigint => getField(k, 0, fieldByName(n)!);

test('set MACs, push/set/pop VLAN, outputs in order', () => {
  const prog = new ProgramBuilder()
    .setDlSrc(0x0a0b0c0d0e0f).setDlDst(0xffffffffffff)
    .pushVlan(0x8100, (3 << 13) | 10).output(1)
    .setVlanVid(20).setVlanPcp(5).output(2).output(3)
    .popVlan().output(4).build();
  assert.ok(validateProgram(prog));
  assert.equal(formatProgram(prog),
    'set(eth(src=0a:0b:0c:0d:0e:0f)),set(eth(dst=ff:ff:ff:ff:ff:ff)),push_vlan(vid=10,pcp=3),1,set_vlan_vid(20),set_vlan_pcp(5),2,3,pop_vlan,4');
  const { out, err } = runAll(prog, base);
  assert.equal(err, 0);
  assert.deepEqual(out.map((o) => o[0]), [1, 2, 3, 4]);
  const k1 = key(out[0][1]);
  assert.equal(fv(k1, 'dl_src'), 0x0a0b0c0d0e0fn);
  assert.equal(fv(k1, 'dl_dst'), 0xffffffffffffn);
  assert.equal(fv(k1, 'dl_vlan'), 10n);
  assert.equal(fv(k1, 'dl_vlan_pcp'), 3n);
  assert.equal(fv(k1, 'tp_dst'), 2n);
  assert.equal(out[0][1].length, base.length + 4);
  const k2 = key(out[1][1]);
  assert.equal(fv(k2, 'dl_vlan'), 20n);
  assert.equal(fv(k2, 'dl_vlan_pcp'), 5n);
  assert.deepEqual(out[2][1], out[1][1]);
  assert.deepEqual(out[3][1].slice(12), Array.from(base.slice(12)), 'pop restores the payload');
  assert.equal(fv(key(out[3][1]), 'vlan_tci'), 0n);
});

test('edits before outputs complete in one call; headroom vs tailroom', () => {
  const prog = new ProgramBuilder().pushVlan(0x88a8, 7).output(5).output(6).build();
  for (const [head, tail] of [[4, 0], [0, 4], [100, 100]]) {
    const buf = new Uint8Array(head + base.length + tail);
    buf.set(base, head);
    const st = Int32Array.of(head, base.length, 0, 0);
    const ports = new Int32Array(8);
    assert.equal(executeActions(prog, 0, prog.length, buf, st, ports), EXEC_DONE);
    assert.equal(st[ST_NOUT], 2);
    assert.equal(st[ST_LEN], base.length + 4);
    const f = buf.subarray(st[ST_OFF], st[ST_OFF] + st[ST_LEN]);
    assert.deepEqual(Array.from(f.slice(12, 16)), [0x88, 0xa8, 0, 7]);
    assert.deepEqual(Array.from(f.slice(16)), Array.from(base.slice(12)));
    assert.deepEqual(Array.from(f.slice(0, 12)), Array.from(base.slice(0, 12)));
  }
  // No room at all.
  const buf = Uint8Array.from(base);
  const st = Int32Array.of(0, base.length, 0, 0);
  assert.equal(executeActions(prog, 0, prog.length, buf, st, new Int32Array(4)), EXEC_ERROR);
  assert.equal(st[ST_ERR], ERR_NO_ROOM);
  assert.deepEqual(buf, base, 'frame untouched on error');
});

test('untagged: set/pop vlan are no-ops; empty program drops; full outPorts yields', () => {
  const { out } = runAll(new ProgramBuilder().setVlanVid(5).popVlan().setVlanPcp(1).output(9).build(), base);
  assert.deepEqual(out, [[9, Array.from(base)]]);
  assert.deepEqual(runAll(new Int32Array(0), base).out, []);
  assert.equal(formatProgram(new Int32Array(0)), 'drop');
  const b = new ProgramBuilder();
  for (let i = 0; i < 10; i++) b.output(i);
  const r = runAll(b.build(), base);
  assert.deepEqual(r.out.map((o) => o[0]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(runAll(new ProgramBuilder().output(1).drop().output(2).build(), base).out.map((o) => o[0]), [1]);
});

test('bad programs are refused, random programs never throw', () => {
  assert.equal(validateProgram(Int32Array.of(OP_OUTPUT)), false);
  assert.equal(validateProgram(Int32Array.of(99)), false);
  assert.equal(runAll(Int32Array.of(99), base).err, ERR_BAD_PROGRAM);
  assert.equal(runAll(Int32Array.of(OP_OUTPUT), base).err, ERR_BAD_PROGRAM);
  fc.assert(fc.property(
    fc.array(fc.integer({ min: -2, max: 9 }), { maxLength: 30 }), fc.uint8Array({ maxLength: 40 }),
    fc.integer({ min: 0, max: 8 }),
    (words, frame, room) => {
      const r = runAll(Int32Array.from(words), frame, room, room);
      for (const [, f] of r.out) assert.ok(f.length <= frame.length + 2 * room);
      formatProgram(Int32Array.from(words));
    }), { numRuns: 2000 });
});
