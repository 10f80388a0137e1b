/**
 * OpenFlow 1.3 wire format (src/openflow/wire.ts) without a network:
 *  - matches written in ovs-ofctl syntax survive encodeMatch -> decodeMatch
 *    unchanged (key, mask, metadata), for generated combinations of every OXM field
 *    tsvs supports with their prerequisites;
 *  - action lists and instructions survive encode -> decode;
 *  - arbitrary bytes given to the decoders either decode or raise OfError
 *    (the agent answers those with an ERROR message), never anything else;
 *  - the agent itself, fed malformed messages of every type on its
 *    management socket, answers with OFPT_ERROR and keeps serving (a BARRIER
 *    after the storm is answered; no unexpected exception was logged).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import type { Logger } from 'pino';
import {
  Writer, OfError, decodeMatch, encodeMatch, decodeActions, encodeAction, decodeInstructions, encodeInstructions,
  encodeHello, decodeHello, message, T, ET,
} from '../../src/openflow/wire.js';
import { OpenFlowAgent, type OfBridgeHost } from '../../src/openflow/agent.js';
import { parseFlow, type OfAction } from '../../src/ofproto/flow-syntax.js';
import { FlowTables } from '../../src/ofproto/tables.js';
import { waitFor } from '../harness/wait.js';

const hex2 = fc.integer({ min: 0, max: 255 }).map((n) => n.toString(16).padStart(2, '0'));
const macArb = fc.array(hex2, { minLength: 6, maxLength: 6 }).map((a) => a.join(':'));
const ipArb = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }).map((a) => a.join('.'));
const cidrArb = fc.tuple(ipArb, fc.integer({ min: 1, max: 32 })).map(([ip, n]) => `${ip}/${n}`);
const portArb = fc.integer({ min: 0, max: 65535 });

/** ovs-ofctl match text covering the OXM fields tsvs decodes, prerequisites satisfied. */
const matchText = fc.record({
  inPort: fc.option(fc.integer({ min: 1, max: 60000 }), { nil: undefined }),
  meta: fc.option(fc.tuple(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.option(fc.bigInt({ min: 1n, max: (1n << 64n) - 1n }), { nil: undefined }))
    .map(([v, m]) => (m === undefined ? `metadata=0x${v.toString(16)}` : `metadata=0x${(v & m).toString(16)}/0x${m.toString(16)}`)), { nil: undefined }),
  tun: fc.option(fc.oneof(
    fc.integer({ min: 0, max: 0xffffffff }).map((v) => `tun_id=0x${v.toString(16)}`),
    fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 0xffffffff })).map(([v, m]) => `tun_id=0x${((v & m) >>> 0).toString(16)}/0x${m.toString(16)}`),
    fc.tuple(ipArb, cidrArb).map(([s, d]) => `tun_src=${s},tun_dst=${d}`),
  ), { nil: undefined }),
  dlSrc: fc.option(fc.oneof(macArb, fc.tuple(macArb, macArb).map(([a, m]) => `${a}/${m}`)), { nil: undefined }),
  dlDst: fc.option(macArb, { nil: undefined }),
  vlan: fc.option(fc.oneof(
    fc.integer({ min: 0, max: 4095 }).map((v) => `dl_vlan=${v}`),
    fc.constant('vlan_tci=0x0000/0x1fff'),
    fc.constant('vlan_tci=0x1000/0x1000'),
    fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 7 })).map(([v, p]) => `dl_vlan=${v},dl_vlan_pcp=${p}`),
  ), { nil: undefined }),
  l3: fc.oneof(
    fc.constant(''),
    fc.record({ src: fc.option(cidrArb, { nil: undefined }), dst: fc.option(ipArb, { nil: undefined }), dscp: fc.option(fc.integer({ min: 0, max: 63 }), { nil: undefined }),
      l4: fc.oneof(
        fc.constant('ip'),
        fc.tuple(fc.constantFrom('tcp', 'udp', 'sctp'), fc.option(portArb, { nil: undefined }), fc.option(portArb, { nil: undefined }))
          .map(([p, s, d]) => [p, s !== undefined ? `tp_src=${s}` : '', d !== undefined ? `tp_dst=${d}` : ''].filter(Boolean).join(',')),
        fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })).map(([t, c]) => `icmp,icmp_type=${t},icmp_code=${c}`),
      ) }).map((r) => [r.l4, r.src ? `nw_src=${r.src}` : '', r.dst ? `nw_dst=${r.dst}` : '', r.dscp !== undefined ? `nw_tos=${r.dscp << 2}` : ''].filter(Boolean).join(',')),
    fc.tuple(fc.integer({ min: 0, max: 128 }), fc.constantFrom('', ',tcp6,tp_dst=22', ',icmp6,icmpv6_type=135'))
      .map(([n, rest]) => (rest ? rest.slice(1) : 'ipv6') + `,ipv6_src=2001:db8::/${n}`),
    fc.tuple(fc.integer({ min: 1, max: 2 }), cidrArb, ipArb).map(([op, spa, tpa]) => `arp,arp_op=${op},arp_spa=${spa},arp_tpa=${tpa}`),
  ),
}).map((r) => [
  r.inPort !== undefined ? `in_port=${r.inPort}` : '', r.meta ?? '', r.tun ?? '', r.dlSrc ? `dl_src=${r.dlSrc}` : '', r.dlDst ? `dl_dst=${r.dlDst}` : '', r.vlan ?? '', r.l3,
].filter(Boolean).join(','));

test('matches in ovs-ofctl syntax survive encodeMatch -> decodeMatch', () => {
  fc.assert(fc.property(matchText, (text) => {
    const spec = parseFlow(`${text}${text ? ',' : ''}actions=drop`);
    const w = new Writer();
    w.zeros(3); // not aligned: decodeMatch reads at any offset
    encodeMatch(w, spec.match);
    const buf = Buffer.from(w.done());
    const { match, size } = decodeMatch(buf, 3);
    assert.equal((size % 8), 0);
    assert.equal(3 + size, buf.length);
    assert.deepEqual(Array.from(match.mask), Array.from(spec.match.mask), text);
    assert.deepEqual(Array.from(match.key), Array.from(spec.match.key), text);
    assert.deepEqual(match.meta, spec.match.meta, text);
  }), { numRuns: 400 });
});

const ofPort = fc.oneof(fc.integer({ min: 1, max: 0xfeff }), fc.constantFrom(0xfff8, 0xfff9, 0xfffa, 0xfffb, 0xfffc, 0xfffe));
const actionArb: fc.Arbitrary<OfAction> = fc.oneof(
  ofPort.map((port) => ({ type: 'output' as const, port })),
  fc.integer({ min: 0, max: 0xffff }).map((maxLen) => ({ type: 'controller' as const, maxLen })),
  fc.constantFrom(0x8100, 0x88a8).map((tpid) => ({ type: 'push_vlan' as const, tpid })),
  fc.constant({ type: 'strip_vlan' as const }),
  fc.integer({ min: 0, max: 0xffffff00 }).map((group) => ({ type: 'group' as const, group })),
  fc.integer({ min: 0, max: 0xffffffffffff }).map((mac) => ({ type: 'mod_dl_src' as const, mac })),
  fc.integer({ min: 0, max: 0xffffffffffff }).map((mac) => ({ type: 'mod_dl_dst' as const, mac })),
  fc.integer({ min: 0, max: 4095 }).map((vid) => ({ type: 'set_vlan_vid' as const, vid })),
  fc.integer({ min: 0, max: 7 }).map((pcp) => ({ type: 'set_vlan_pcp' as const, pcp })),
  fc.integer({ min: 0, max: 0xffffffff }).map((ip) => ({ type: 'set_nw_src' as const, ip })),
  fc.integer({ min: 0, max: 0xffffffff }).map((ip) => ({ type: 'set_nw_dst' as const, ip })),
  fc.tuple(fc.constantFrom('tcp' as const, 'udp' as const), portArb).map(([proto, port]) => ({ type: 'set_tp_src' as const, proto, port })),
  fc.tuple(fc.constantFrom('tcp' as const, 'udp' as const), portArb).map(([proto, port]) => ({ type: 'set_tp_dst' as const, proto, port })),
  fc.integer({ min: 0, max: 0xffffffff }).map((id) => ({ type: 'set_tunnel' as const, id })),
  fc.tuple(fc.option(fc.integer({ min: 1, max: 0xfeff }), { nil: undefined }), fc.option(fc.integer({ min: 0, max: 254 }), { nil: undefined }))
    .filter(([p, t]) => p !== undefined || t !== undefined)
    .map(([port, table]) => ({ type: 'resubmit' as const, ...(port !== undefined ? { port } : {}), ...(table !== undefined ? { table } : {}) })),
);

test('action lists and instructions survive encode -> decode', () => {
  fc.assert(fc.property(fc.array(actionArb, { maxLength: 12 }), (acts) => {
    const w = new Writer();
    for (const a of acts) encodeAction(w, a);
    assert.deepEqual(decodeActions(Buffer.from(w.done()), 0, w.len), acts);
  }), { numRuns: 300 });
  const instrArb = fc.record({
    apply: fc.array(actionArb, { maxLength: 5 }),
    clear: fc.boolean(),
    write: fc.option(fc.array(actionArb, { maxLength: 3 }), { nil: undefined }),
    meta: fc.option(fc.tuple(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })), { nil: undefined }),
    goto: fc.option(fc.integer({ min: 1, max: 254 }), { nil: undefined }),
  });
  fc.assert(fc.property(instrArb, (r) => {
    const list: OfAction[] = [...r.apply];
    if (r.clear) list.push({ type: 'clear_actions' });
    if (r.write) list.push({ type: 'write_actions', actions: r.write });
    if (r.meta) list.push({ type: 'write_metadata', value: r.meta[0], mask: r.meta[1] });
    if (r.goto !== undefined) list.push({ type: 'goto_table', table: r.goto });
    const w = new Writer();
    encodeInstructions(w, list);
    assert.deepEqual(decodeInstructions(Buffer.from(w.done()), 0, w.len, 0), list);
  }), { numRuns: 300 });
});

test('HELLO version bitmap round trip', () => {
  assert.deepEqual(decodeHello(encodeHello(7)).versions, [4]);
  // an OpenFlow 1.0 peer without a bitmap offers 1 only
  const h = Buffer.from([1, 0, 0, 8, 0, 0, 0, 1]);
  assert.deepEqual(decodeHello(h).versions, [1]);
});

/** Either decodes or raises OfError: nothing else. */
function onlyOfErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof OfError)) throw e;
  }
}

test('arbitrary bytes: the decoders decode or raise OfError, nothing else', () => {
  const bytes = fc.uint8Array({ maxLength: 200 });
  // structured: plausible headers (types and lengths near valid ones) followed by random bytes
  const oxmish = fc.tuple(fc.integer({ min: 0, max: 40 }), fc.boolean(), fc.integer({ min: 0, max: 40 }), fc.uint8Array({ maxLength: 40 }))
    .map(([field, mask, len, rest]) => { const b = Buffer.alloc(4 + rest.length); b.writeUInt32BE(((0x8000 << 16) | (field << 9) | (mask ? 0x100 : 0) | len) >>> 0, 0); b.set(rest, 4); return b; });
  const matchish = fc.array(oxmish, { maxLength: 6 }).chain((parts) => fc.integer({ min: 0, max: 300 }).map((lenDelta) => {
    const body = Buffer.concat(parts);
    const b = Buffer.alloc(4 + body.length + 8);
    b.writeUInt16BE(1, 0);
    b.writeUInt16BE(Math.min(0xffff, 4 + body.length + (lenDelta % 9) - 4), 2);
    body.copy(b, 4);
    return b;
  }));
  const actish = fc.array(fc.tuple(fc.constantFrom(0, 17, 18, 22, 25, 0xffff, 3, 11), fc.integer({ min: 0, max: 48 }), fc.uint8Array({ minLength: 0, maxLength: 44 })), { maxLength: 5 })
    .map((xs) => Buffer.concat(xs.map(([t, l, r]) => { const b = Buffer.alloc(4 + r.length); b.writeUInt16BE(t, 0); b.writeUInt16BE(l, 2); b.set(r, 4); return b; })));
  fc.assert(fc.property(fc.oneof(bytes.map((b) => Buffer.from(b)), matchish), (b) => {
    onlyOfErrors(() => decodeMatch(b, 0));
  }), { numRuns: 2000 });
  fc.assert(fc.property(fc.oneof(bytes.map((b) => Buffer.from(b)), actish), (b) => {
    onlyOfErrors(() => decodeActions(b, 0, b.length));
    onlyOfErrors(() => decodeInstructions(b, 0, b.length, 0));
  }), { numRuns: 2000 });
});

test('the agent answers malformed messages of every type with OFPT_ERROR and keeps serving', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-ofwire-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const unexpected: string[] = [];
  const log = { info: () => undefined, warn: (m: string) => unexpected.push(m), error: (m: string) => unexpected.push(m), debug: () => undefined } as unknown as Logger;
  const tables = new FlowTables();
  const host: OfBridgeHost = {
    name: 'br0', tables, groups: new Map(), datapathId: () => 1n,
    ports: () => [{ portNo: 1, mac: 0x020000000001, name: 'p1', linkDown: false, adminDown: false, speed: 10_000_000 }],
    portStats: async () => [], packetOut: async () => undefined, changed: () => undefined, sync: async () => undefined,
  };
  const agent = new OpenFlowAgent(host, { mgmtPath: path.join(dir, 'br0.mgmt'), log });
  await agent.start();
  t.after(() => agent.stop());
  const sock = net.connect(path.join(dir, 'br0.mgmt'));
  t.after(() => sock.destroy());
  const got: { type: number; xid: number; etype?: number }[] = [];
  let buf = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 8 && buf.length >= buf.readUInt16BE(2)) {
      const len = buf.readUInt16BE(2);
      const m = buf.subarray(0, len);
      got.push({ type: m[1], xid: m.readUInt32BE(4), etype: m[1] === T.ERROR ? m.readUInt16BE(8) : undefined });
      buf = buf.subarray(len);
    }
  });
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(encodeHello(1));
  // for every message type the agent handles, bodies that are short, long or random
  const types = [T.FEATURES_REQUEST, T.GET_CONFIG_REQUEST, T.SET_CONFIG, T.PACKET_OUT, T.FLOW_MOD, T.GROUP_MOD, T.PORT_MOD, T.TABLE_MOD,
    T.MULTIPART_REQUEST, T.ROLE_REQUEST, T.GET_ASYNC_REQUEST, T.SET_ASYNC, T.EXPERIMENTER, T.METER_MOD, 99];
  const samples = fc.sample(fc.tuple(fc.constantFrom(...types), fc.uint8Array({ maxLength: 160 })), { numRuns: 600, seed: 14 });
  let xid = 100;
  for (const [type, body] of samples) sock.write(message(type, xid++, (w) => w.bytes(body)));
  const last = xid++;
  sock.write(message(T.BARRIER_REQUEST, last));
  await waitFor(() => got.some((g) => g.type === T.BARRIER_REPLY && g.xid === last), { what: 'the BARRIER after the malformed messages', timeout: 20000 });
  assert.deepEqual(unexpected, [], 'no exception other than OfError');
  const errors = got.filter((g) => g.type === T.ERROR);
  assert.ok(errors.length >= 300, `${errors.length} ERROR replies to ${samples.length} mostly malformed messages`);
  assert.ok(errors.every((e) => e.etype !== undefined && e.etype <= ET.TABLE_FEATURES_FAILED));
  assert.equal(agent.sessionCount, 1, 'the connection stayed up');

  // a service connection gets no packet-in until it sets a nonzero miss_send_len (as OVS); then its SET_ASYNC applies
  const ev = { pc: 0, maxLen: 0xffff, reason: 'action' as const, table: 3, cookie: 0x77n };
  const frame = new Uint8Array(60).fill(0xab);
  const count = (): number => got.filter((g) => g.type === T.PACKET_IN).length;
  const setConfig = (n: number): Buffer => message(T.SET_CONFIG, xid++, (w) => w.u16(0).u16(n));
  const barrier = async (): Promise<void> => {
    const x = xid++;
    sock.write(message(T.BARRIER_REQUEST, x));
    await waitFor(() => got.some((g) => g.type === T.BARRIER_REPLY && g.xid === x), { what: 'barrier' });
  };
  // undo what the random messages may have set: miss_send_len, role, async masks
  sock.write(setConfig(0));
  sock.write(message(T.ROLE_REQUEST, xid++, (w) => w.u32(1).zeros(4).u64(0n)));
  sock.write(message(T.SET_ASYNC, xid++, (w) => { w.u32(7).u32(0).u32(7).u32(7).u32(15).u32(0); }));
  await barrier();
  const before = count();
  agent.packetIn(frame, 1, ev);
  await barrier();
  assert.equal(count(), before, 'miss_send_len 0: no asynchronous messages');
  sock.write(setConfig(128));
  await barrier();
  agent.packetIn(frame, 1, ev);
  await waitFor(() => count() === before + 1, { what: 'a packet-in once miss_send_len is set' });
  sock.write(message(T.SET_ASYNC, xid++, (w) => { w.u32(1).u32(0).u32(7).u32(7).u32(15).u32(0); })); // NO_MATCH only
  await barrier();
  agent.packetIn(frame, 1, ev);
  agent.packetIn(frame, 1, { ...ev, reason: 'no_match' });
  await waitFor(() => count() === before + 2, { what: 'the NO_MATCH packet-in' });
  await barrier();
  assert.equal(count(), before + 2, 'the ACTION packet-in was masked off by SET_ASYNC');

  // FLOW_MOD with CHECK_OVERLAP: rules of one priority that differ in metadata do not overlap; the same metadata does
  const flowMod = (text: string): number => {
    const spec = parseFlow(text);
    const x = xid++;
    sock.write(message(T.FLOW_MOD, x, (w) => {
      w.u64(0n).u64(0n).u8(5).u8(0).u16(0).u16(0).u16(spec.priority).u32(0xffffffff).u32(0xffffffff).u32(0xffffffff).u16(2).zeros(2);
      encodeMatch(w, spec.match);
      encodeInstructions(w, spec.actions);
    }));
    return x;
  };
  const refused = (x: number): boolean => got.some((g) => g.type === T.ERROR && g.xid === x);
  const a1 = flowMod('priority=7,metadata=0x1/0xf,actions=output:1');
  const a2 = flowMod('priority=7,metadata=0x2/0xf,actions=output:1');
  const a3 = flowMod('priority=7,metadata=0x11/0xff,actions=output:1');
  await barrier();
  assert.deepEqual([refused(a1), refused(a2), refused(a3)], [false, false, true]);
  assert.equal(tables.rules(5).length, 2);
});
