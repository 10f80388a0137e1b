/**
 * The datapath's IPv4 address and TCP/UDP port rewrites (OP_SET_NW_SRC/DST,
 * OP_SET_TP_SRC/DST): for generated IPv4 and IPv6 TCP/UDP frames, tagged or
 * not, the field changes, and the IPv4 header checksum and the TCP/UDP
 * checksum computed from scratch afterwards are valid (the incremental
 * update is right); a UDP checksum of 0 (none) stays 0; later fragments keep
 * their (absent) L4 header untouched; other frames are not changed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ProgramBuilder, executeActions, formatProgram, EXEC_DONE, EXEC_STATE_WORDS, ST_OFF, ST_LEN,
} from '../../src/dp/actions.js';

function sum16(b: Uint8Array, from: number, to: number, init = 0): number {
  let s = init;
  for (let i = from; i < to; i += 2) s += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
const csum = (b: Uint8Array, from: number, to: number, init = 0): number => ~sum16(b, from, to, init) & 0xffff;

interface Pkt { frame: Uint8Array; l3: number; l4: number; v6: boolean; proto: number }

function build(o: { tags: number; v6: boolean; proto: 6 | 17; src: number; dst: number; sport: number; dport: number; payload: Uint8Array; udpNoCsum: boolean; laterFrag: boolean }): Pkt {
  const l4len = (o.proto === 6 ? 20 : 8) + o.payload.length;
  const l3len = o.v6 ? 40 : 20;
  const l3 = 14 + 4 * o.tags;
  const f = new Uint8Array(l3 + l3len + l4len);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
  let p = 12;
  for (let i = 0; i < o.tags; i++) { f.set([0x81, 0x00, 0x00, 0x05 + i], p); p += 4; }
  f.set(o.v6 ? [0x86, 0xdd] : [0x08, 0x00], p);
  const dv = new DataView(f.buffer);
  const l4 = l3 + l3len;
  if (o.v6) {
    f[l3] = 0x60;
    dv.setUint16(l3 + 4, l4len);
    f[l3 + 6] = o.proto;
    f[l3 + 7] = 64;
    dv.setUint32(l3 + 8 + 12, o.src);
    dv.setUint32(l3 + 24 + 12, o.dst);
    f[l3 + 8] = 0x20; f[l3 + 24] = 0x20;
  } else {
    f[l3] = 0x45;
    dv.setUint16(l3 + 2, l3len + l4len);
    if (o.laterFrag) dv.setUint16(l3 + 6, 100);
    f[l3 + 8] = 64;
    f[l3 + 9] = o.proto;
    dv.setUint32(l3 + 12, o.src);
    dv.setUint32(l3 + 16, o.dst);
    dv.setUint16(l3 + 10, csum(f, l3, l3 + 20));
  }
  dv.setUint16(l4, o.sport);
  dv.setUint16(l4 + 2, o.dport);
  if (o.proto === 6) f[l4 + 12] = 0x50;
  else dv.setUint16(l4 + 4, l4len);
  f.set(o.payload, l4 + (o.proto === 6 ? 20 : 8));
  if (!(o.proto === 17 && o.udpNoCsum)) {
    const c = l4Csum(f, l3, l4, o.v6, o.proto);
    dv.setUint16(l4 + (o.proto === 6 ? 16 : 6), o.proto === 17 && c === 0 ? 0xffff : c);
  }
  return { frame: f, l3, l4, v6: o.v6, proto: o.proto };
}

/** The TCP/UDP checksum of the frame as it is, with the checksum field taken as 0. */
function l4Csum(f: Uint8Array, l3: number, l4: number, v6: boolean, proto: number): number {
  const at = l4 + (proto === 6 ? 16 : 6);
  const saved = [f[at], f[at + 1]];
  f[at] = 0; f[at + 1] = 0;
  const len = f.length - l4;
  const ph = new Uint8Array(v6 ? 40 : 12);
  const dv = new DataView(ph.buffer);
  if (v6) { ph.set(f.subarray(l3 + 8, l3 + 40), 0); dv.setUint32(32, len); ph[39] = proto; }
  else { ph.set(f.subarray(l3 + 12, l3 + 20), 0); ph[9] = proto; dv.setUint16(10, len); }
  const c = csum(f, l4, f.length, sum16(ph, 0, ph.length));
  f[at] = saved[0]; f[at + 1] = saved[1];
  return c;
}

function run(prog: Int32Array, frame: Uint8Array): Uint8Array {
  const buf = new Uint8Array(frame.length + 64);
  buf.set(frame, 32);
  const st = new Int32Array(EXEC_STATE_WORDS);
  st[ST_OFF] = 32;
  st[ST_LEN] = frame.length;
  assert.equal(executeActions(prog, 0, prog.length, buf, st, new Int32Array(8)), EXEC_DONE);
  return buf.slice(st[ST_OFF], st[ST_OFF] + st[ST_LEN]);
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });

test('IPv4 address and TCP/UDP port rewrites keep every checksum valid', () => {
  fc.assert(fc.property(
    fc.record({ tags: fc.integer({ min: 0, max: 2 }), v6: fc.boolean(), proto: fc.constantFrom(6 as const, 17 as const), src: u32, dst: u32, sport: u16, dport: u16,
      payload: fc.uint8Array({ maxLength: 41 }), udpNoCsum: fc.boolean(), laterFrag: fc.constant(false) }),
    fc.record({ nwSrc: fc.option(u32, { nil: undefined }), nwDst: fc.option(u32, { nil: undefined }), tpSrc: fc.option(u16, { nil: undefined }), tpDst: fc.option(u16, { nil: undefined }) }),
    (o, set) => {
      const pk = build(o);
      const b = new ProgramBuilder();
      if (set.nwSrc !== undefined) b.setNwSrc(set.nwSrc);
      if (set.nwDst !== undefined) b.setNwDst(set.nwDst);
      if (set.tpSrc !== undefined) b.setTpSrc(set.tpSrc);
      if (set.tpDst !== undefined) b.setTpDst(set.tpDst);
      b.output(1);
      const out = run(b.build(), pk.frame);
      const dv = new DataView(out.buffer, out.byteOffset);
      if (!o.v6) {
        assert.equal(dv.getUint32(pk.l3 + 12), set.nwSrc ?? o.src);
        assert.equal(dv.getUint32(pk.l3 + 16), set.nwDst ?? o.dst);
        assert.equal(csum(out, pk.l3, pk.l3 + 20), 0, 'IPv4 header checksum');
      } else {
        assert.deepEqual(out.subarray(pk.l3, pk.l4), pk.frame.subarray(pk.l3, pk.l4), 'IPv6 header untouched');
      }
      assert.equal(dv.getUint16(pk.l4), set.tpSrc ?? o.sport);
      assert.equal(dv.getUint16(pk.l4 + 2), set.tpDst ?? o.dport);
      const at = pk.l4 + (o.proto === 6 ? 16 : 6);
      const got = dv.getUint16(at);
      if (o.proto === 17 && o.udpNoCsum) assert.equal(got, 0, 'no UDP checksum stays none');
      else {
        const want = l4Csum(out, pk.l3, pk.l4, o.v6, o.proto);
        assert.equal(got === 0xffff && o.proto === 17 ? 0 : got, want === 0xffff && o.proto === 17 ? 0 : want, 'L4 checksum');
      }
    },
  ), { numRuns: 500 });
});

test('rewrites leave a later IPv4 fragment\'s payload and non-IP frames alone', () => {
  const frag = build({ tags: 0, v6: false, proto: 17, src: 0x0a000001, dst: 0x0a000002, sport: 1, dport: 2, payload: new Uint8Array(8), udpNoCsum: false, laterFrag: true });
  const b = new ProgramBuilder().setTpSrc(99).setNwSrc(0x0b000001).output(1).build();
  const out = run(b, frag.frame);
  assert.deepEqual(out.subarray(frag.l4), frag.frame.subarray(frag.l4), 'later fragment: no L4 header to change');
  assert.equal(new DataView(out.buffer, out.byteOffset).getUint32(frag.l3 + 12), 0x0b000001);
  assert.equal(csum(out, frag.l3, frag.l3 + 20), 0);
  const arp = new Uint8Array(60);
  arp.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06]);
  assert.deepEqual(run(b, arp), arp);
  assert.equal(formatProgram(b), 'set(l4(src=99)),set(ipv4(src=11.0.0.1)),1');
});
