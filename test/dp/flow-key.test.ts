import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  extractKey, FLOW_WORDS, KEY_OK, KEY_TRUNCATED, KEY_MALFORMED, FIELDS, fieldByName, getField, setField,
  hashMasked, hashMaskedWords, hashKey, HASH_BASIS, maskedEqual, keyDlSrc, keyDlDst, FRAG_ANY, FRAG_LATER,
  W_L3_SRC, W_L3_DST, VLAN_CFI, keyFitsPrefix, HEADER_REF_WORDS, setHeaderRef, sameKeyHeaders,
} from '../../src/dp/flow-key.js';
import { buildFrame, mac, type PacketDesc } from './frame-builder.js';

function key(frame: Uint8Array, inPort = 1): [Uint32Array, number] {
  const k = new Uint32Array(FLOW_WORDS + 4).fill(0xdeadbeef);
  const st = extractKey(frame, 0, frame.length, inPort, k, 2);
  return [k.subarray(2, 2 + FLOW_WORDS), st];
}
const fv = (k: Uint32Array, name: string): bigint => getField(k, 0, fieldByName(name)!);

const tcp4: PacketDesc = {
  dst: [0x00, 0x11, 0x22, 0x33, 0x44, 0x55], src: [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb], l3: 'ipv4', proto: 6,
  tos: 0x2e, ttl: 17, srcIp: [10, 0, 0, 1], dstIp: [192, 168, 1, 200], sport: 1234, dport: 80, payload: 5,
};

test('IPv4/TCP fields', () => {
  const [k, st] = key(buildFrame(tcp4), 7);
  assert.equal(st, KEY_OK);
  assert.equal(fv(k, 'in_port'), 7n);
  assert.equal(fv(k, 'dl_dst'), 0x001122334455n);
  assert.equal(fv(k, 'dl_src'), 0x66778899aabbn);
  assert.equal(keyDlSrc(k, 0), 0x66778899aabb);
  assert.equal(keyDlDst(k, 0), 0x001122334455);
  assert.equal(fv(k, 'dl_type'), 0x0800n);
  assert.equal(fv(k, 'vlan_tci'), 0n);
  assert.equal(fv(k, 'nw_proto'), 6n);
  assert.equal(fv(k, 'nw_tos'), 0x2cn, 'ECN bits dropped');
  assert.equal(fv(k, 'nw_ttl'), 17n);
  assert.equal(fv(k, 'nw_frag'), 0n);
  assert.equal(fv(k, 'nw_src'), 0x0a000001n);
  assert.equal(fv(k, 'nw_dst'), 0xc0a801c8n);
  assert.equal(fv(k, 'tp_src'), 1234n);
  assert.equal(fv(k, 'tp_dst'), 80n);
  for (let w = 1; w < 4; w++) assert.equal(k[W_L3_SRC + w], 0);
});

test('802.1Q and 802.1ad+802.1Q tags', () => {
  const [k1, s1] = key(buildFrame({ ...tcp4, vlans: [{ tpid: 0x8100, tci: (5 << 13) | 100 }] }));
  assert.equal(s1, KEY_OK);
  assert.equal(fv(k1, 'dl_vlan'), 100n);
  assert.equal(fv(k1, 'dl_vlan_pcp'), 5n);
  assert.equal(fv(k1, 'vlan_tci'), BigInt((5 << 13) | VLAN_CFI | 100));
  assert.equal(fv(k1, 'dl_type'), 0x0800n);
  assert.equal(fv(k1, 'tp_dst'), 80n);
  // DEI set on the wire is folded into the present bit.
  const [k2] = key(buildFrame({ ...tcp4, vlans: [{ tpid: 0x8100, tci: 0x1000 | 7 }] }));
  assert.equal(fv(k2, 'vlan_tci'), BigInt(VLAN_CFI | 7));
  const [k3, s3] = key(buildFrame({ ...tcp4, vlans: [{ tpid: 0x88a8, tci: 10 }, { tpid: 0x8100, tci: 20 }] }));
  assert.equal(s3, KEY_OK);
  assert.equal(fv(k3, 'dl_vlan'), 10n);
  assert.equal(k3[15], VLAN_CFI | 20);
  assert.equal(fv(k3, 'dl_type'), 0x0800n);
  assert.equal(fv(k3, 'tp_src'), 1234n);
});

test('ARP', () => {
  const [k, st] = key(buildFrame({ dst: [255, 255, 255, 255, 255, 255], src: mac(1), l3: 'arp', arpOp: 2, srcIp: [1, 2, 3, 4], dstIp: [5, 6, 7, 8] }));
  assert.equal(st, KEY_OK);
  assert.equal(fv(k, 'dl_type'), 0x0806n);
  assert.equal(fv(k, 'arp_op'), 2n);
  assert.equal(fv(k, 'arp_spa'), 0x01020304n);
  assert.equal(fv(k, 'arp_tpa'), 0x05060708n);
});

test('IPv4 with options, ICMP', () => {
  const [k, st] = key(buildFrame({ ...tcp4, proto: 1, icmpType: 8, icmpCode: 3, ipOptWords: 3 }));
  assert.equal(st, KEY_OK);
  assert.equal(fv(k, 'icmp_type'), 8n);
  assert.equal(fv(k, 'icmp_code'), 3n);
  assert.equal(fv(k, 'tp_src'), 8n);
  const [k2] = key(buildFrame({ ...tcp4, ipOptWords: 10 }));
  assert.equal(fv(k2, 'tp_dst'), 80n);
});

test('IPv4 fragments: first has L4, later ones do not', () => {
  const [k1] = key(buildFrame({ ...tcp4, mf: true }));
  assert.equal(fv(k1, 'nw_frag'), BigInt(FRAG_ANY));
  assert.equal(fv(k1, 'tp_dst'), 80n);
  const [k2, s2] = key(buildFrame({ ...tcp4, mf: true, fragOffset: 100, payload: 16 }));
  assert.equal(s2, KEY_OK);
  assert.equal(fv(k2, 'nw_frag'), BigInt(FRAG_ANY | FRAG_LATER));
  assert.equal(fv(k2, 'tp_src'), 0n);
  assert.equal(fv(k2, 'tp_dst'), 0n);
  assert.equal(fv(k2, 'nw_proto'), 6n);
});

test('IPv6 UDP and ICMPv6, unknown next header', () => {
  const s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  const d6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
  const [k, st] = key(buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv6', proto: 17, tos: 0xb8, ttl: 3, srcIp: s6, dstIp: d6, sport: 53, dport: 5353 }));
  assert.equal(st, KEY_OK);
  assert.equal(fv(k, 'dl_type'), 0x86ddn);
  assert.equal(fv(k, 'ipv6_src'), 0x20010db8000000000000000000000001n);
  assert.equal(fv(k, 'ipv6_dst'), 0xfe80000000000000123456789abcdef0n);
  assert.equal(fv(k, 'nw_tos'), 0xb8n);
  assert.equal(fv(k, 'nw_ttl'), 3n);
  assert.equal(fv(k, 'nw_proto'), 17n);
  assert.equal(fv(k, 'tp_src'), 53n);
  assert.equal(fv(k, 'tp_dst'), 5353n);
  const [k2] = key(buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv6', proto: 58, srcIp: s6, dstIp: d6, icmpType: 135, icmpCode: 0 }));
  assert.equal(fv(k2, 'icmpv6_type'), 135n);
  const [k3, s3] = key(buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv6', proto: 44, srcIp: s6, dstIp: d6, payload: 8 }));
  assert.equal(s3, KEY_OK);
  assert.equal(fv(k3, 'nw_proto'), 44n);
  assert.equal(fv(k3, 'tp_src'), 0n);
});

test('malformed IP headers', () => {
  const f = buildFrame(tcp4);
  const bad = f.slice(); bad[14] = 0x35; // version 3
  assert.equal(key(bad)[1], KEY_MALFORMED);
  const bad2 = f.slice(); bad2[14] = 0x44; // IHL 4
  assert.equal(key(bad2)[1], KEY_MALFORMED);
  const bad3 = f.slice(); bad3[16] = 0; bad3[17] = 10; // total length < IHL
  assert.equal(key(bad3)[1], KEY_MALFORMED);
  const [, st] = key(Uint8Array.from([...f.slice(0, 14), 0x50, ...new Array(39).fill(0)]));
  assert.equal(st, KEY_MALFORMED, 'version-5 header on an IPv4 ethertype');
  // Non-Ethernet/IPv4 ARP: OK, ARP fields left 0.
  const arp = buildFrame({ dst: mac(1), src: mac(2), l3: 'arp', arpOp: 1, srcIp: [1, 2, 3, 4], dstIp: [5, 6, 7, 8] });
  arp[15] = 6; // htype 6
  const [ka, sa] = key(arp);
  assert.equal(sa, KEY_OK);
  assert.equal(fv(ka, 'arp_spa'), 0n);
  assert.equal(fv(ka, 'dl_type'), 0x0806n);
});

test('truncation at every length: fields so far, flagged, never throws', () => {
  const frames = [
    buildFrame(tcp4),
    buildFrame({ ...tcp4, vlans: [{ tpid: 0x88a8, tci: 3 }, { tpid: 0x8100, tci: 4 }], proto: 17 }),
    buildFrame({ dst: mac(1), src: mac(2), l3: 'arp', srcIp: [1, 1, 1, 1], dstIp: [2, 2, 2, 2] }),
    buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv6', proto: 6, srcIp: new Array(16).fill(1), dstIp: new Array(16).fill(2), sport: 1, dport: 2 }),
    buildFrame({ ...tcp4, proto: 1, icmpType: 0, icmpCode: 0, ipOptWords: 2 }),
  ];
  for (const f of frames) {
    const [full, fst] = key(f);
    assert.equal(fst, KEY_OK);
    for (let len = 0; len < f.length; len++) {
      const [k, st] = key(f.subarray(0, len));
      assert.notEqual(st, KEY_MALFORMED);
      assert.equal(k[0], 1);
      if (len >= 14) {
        assert.equal(fv(k, 'dl_src'), fv(full, 'dl_src'));
        assert.equal(fv(k, 'dl_dst'), fv(full, 'dl_dst'));
      }
      if (st === KEY_OK) assert.deepEqual(k, full, `len ${len} OK must mean complete`);
      // Whatever was extracted agrees with the full key (prefix property), except dl_type
      // which stays 0 when the frame ends inside a VLAN tag.
      for (let w = 0; w < FLOW_WORDS; w++) {
        if (k[w] !== 0 && w !== 4) assert.equal(k[w], full[w], `len ${len} word ${w}`);
      }
    }
  }
});

test('fast-check: random bytes never throw, status valid, deterministic', () => {
  const k1 = new Uint32Array(FLOW_WORDS);
  const k2 = new Uint32Array(FLOW_WORDS);
  fc.assert(fc.property(
    fc.uint8Array({ maxLength: 120 }), fc.integer({ min: -4, max: 130 }), fc.integer({ min: -4, max: 130 }),
    fc.constantFrom(0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x1234),
    (bytes, off, len, et) => {
      if (bytes.length >= 14) { bytes[12] = et >> 8; bytes[13] = et & 255; }
      const st = extractKey(bytes, off, len, 3, k1, 0);
      assert.ok(st === KEY_OK || st === KEY_TRUNCATED || st === KEY_MALFORMED);
      extractKey(bytes, off, len, 3, k2, 0);
      assert.deepEqual(k1, k2);
    }), { numRuns: 3000 });
});

test('field table get/set round trip, no overlap except aliases', () => {
  const k = new Uint32Array(FLOW_WORDS);
  for (const f of FIELDS) {
    const v = (1n << BigInt(f.bits)) - 1n - 5n;
    k.fill(0);
    setField(k, 0, f, v);
    assert.equal(getField(k, 0, f), v, f.name);
  }
  const bits = new Map<string, string>();
  const aliases = new Set(['arp_op', 'arp_spa', 'arp_tpa', 'icmp_type', 'icmp_code', 'icmpv6_type', 'icmpv6_code',
    'dl_vlan', 'dl_vlan_pcp', 'ipv6_src', 'ipv6_dst']);
  for (const f of FIELDS) {
    if (aliases.has(f.name)) continue;
    for (const p of f.parts) {
      for (let b = p.shift; b < p.shift + p.width; b++) {
        const id = `${p.word}:${b}`;
        assert.ok(!bits.has(id), `${f.name} overlaps ${bits.get(id)}`);
        bits.set(id, f.name);
      }
    }
  }
});

test('hashes: masked bits only, stable, spread', () => {
  const a = new Uint32Array(FLOW_WORDS).map((_, i) => i * 0x01010101);
  const b = a.slice(); b[W_L3_DST] ^= 0xff;
  const m = new Uint32Array(FLOW_WORDS); m[0] = 0xffffffff; m[W_L3_SRC] = 0xffffff00;
  assert.equal(hashMasked(a, 0, m, 0, HASH_BASIS), hashMasked(b, 0, m, 0, HASH_BASIS));
  assert.ok(maskedEqual(a, 0, b, 0, m, 0));
  const idx = Int32Array.from([0, W_L3_SRC]);
  assert.equal(hashMaskedWords(a, 0, m, 0, idx, 2, HASH_BASIS), hashMaskedWords(b, 0, m, 0, idx, 2, HASH_BASIS));
  assert.notEqual(hashKey(a, 0, HASH_BASIS), hashKey(b, 0, HASH_BASIS));
  // Low bits spread over sequential keys (used as table index).
  const seen = new Set<number>();
  for (let i = 0; i < 1024; i++) { a[0] = i; seen.add(hashKey(a, 0, HASH_BASIS) & 1023); }
  assert.ok(seen.size > 550, `only ${seen.size} distinct buckets`);
});

// The datapath's runs without parsing (processBurst): sameKeyHeaders must never call two frames the
// same whose keys differ. Frames: IPv4 TCP/UDP that keyFitsPrefix takes, then a copy with random
// bytes of the first 64 changed and a random length; whenever the shortcut says "same", extractKey
// must give the reference's key (and the frame must be one keyFitsPrefix takes, as one copy relies on).
test('sameKeyHeaders: same key whenever it says so (property)', () => {
  let same = 0;
  const buf = new Uint8Array(4096);
  const w32 = new Int32Array(buf.buffer);
  const ref = new Int32Array(HEADER_REF_WORDS);
  const ka = new Uint32Array(FLOW_WORDS);
  const kb = new Uint32Array(FLOW_WORDS);
  const ipv4 = fc.record({
    proto: fc.constantFrom(6, 17),
    tos: fc.integer({ min: 0, max: 255 }),
    ttl: fc.integer({ min: 0, max: 255 }),
    srcIp: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
    dstIp: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
    sport: fc.integer({ min: 0, max: 65535 }),
    dport: fc.integer({ min: 0, max: 65535 }),
    payload: fc.integer({ min: 0, max: 40 }),
  });
  // edits: mostly in bytes the key ignores (IP length, id, checksum, L4 beyond the ports), some anywhere
  const edit = fc.record({
    at: fc.oneof(fc.constantFrom(16, 17, 18, 19, 24, 25, 38, 39, 40, 41, 50), fc.integer({ min: 0, max: 63 })),
    v: fc.integer({ min: 0, max: 255 }),
  });
  fc.assert(fc.property(ipv4, fc.array(edit, { maxLength: 3 }), fc.integer({ min: -8, max: 8 }), (d, edits, dlen) => {
    const a = buildFrame({ dst: mac(1), src: mac(2), l3: 'ipv4', ...d });
    if (!keyFitsPrefix(a, 0, a.length)) return;
    buf.fill(0);
    buf.set(a, 0);
    const b = a.slice();
    const bb = new Uint8Array(Math.max(0, b.length + dlen));
    bb.set(b.subarray(0, Math.min(b.length, bb.length)));
    for (const e of edits) if (e.at < bb.length) bb[e.at] = e.v;
    buf.set(bb, 1024);
    assert.equal(extractKey(buf, 0, a.length, 3, ka, 0), KEY_OK);
    setHeaderRef(w32, 0, ref);
    if (!sameKeyHeaders(w32, 1024 >> 2, bb.length, ref)) return;
    same++;
    assert.ok(keyFitsPrefix(buf, 1024, bb.length), 'a frame called the same must be one whose key fits its prefix');
    assert.equal(extractKey(buf, 1024, bb.length, 3, kb, 0), KEY_OK);
    assert.deepEqual([...kb], [...ka]);
  }), { numRuns: 3000 });
  assert.ok(same > 300, `the shortcut should hold for many of the frames (held for ${same})`);
});
