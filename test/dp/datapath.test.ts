import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath } from '../../src/dp/datapath.js';
import { FLOW_WORDS, W_IN_PORT } from '../../src/dp/flow-key.js';
import { OP_OUTPUT, OP_PUSH_VLAN, OP_SET_DL_DST } from '../../src/dp/actions.js';

function frame(dst: number, src: number, seq: number, len = 64): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x02, 0, 0, 0, 0, dst], 0);
  f.set([0x02, 0, 0, 0, 0, src], 6);
  f[12] = 0x08; f[13] = 0x00; // IPv4
  f[14] = 0x45; f[16] = 0; f[17] = len - 14; f[22] = 64; f[23] = 17;
  f.set([10, 0, 0, src, 10, 0, 0, dst], 26);
  f[34] = 0x30; f[35] = 0x39; f[36] = 0x00; f[37] = 0x35; // udp 12345 -> 53
  new DataView(f.buffer).setUint32(len - 4, seq);
  return f;
}

function send(pool: Mempool, port: RingPort, frames: Uint8Array[]): void {
  const hs = new Int32Array(frames.length);
  assert.equal(pool.alloc(hs, frames.length), frames.length);
  frames.forEach((f, i) => {
    pool.data.set(f, pool.dataOffset(hs[i]));
    pool.dataLen[hs[i]] = f.length;
    pool.pktLen[hs[i]] = f.length;
  });
  assert.equal(port.txBurst(0, hs, frames.length), frames.length);
}

function recvAll(pool: Mempool, port: RingPort): Uint8Array[] {
  const out: Uint8Array[] = [];
  const hs = new Int32Array(32);
  for (;;) {
    const n = port.rxBurst(0, hs, 32);
    if (n === 0) return out;
    for (let i = 0; i < n; i++) out.push(pool.data.slice(pool.dataOffset(hs[i]), pool.dataOffset(hs[i]) + pool.dataLen[hs[i]]));
    pool.free(hs, n);
  }
}

test('first packet of a flow is an upcall, the rest hit the caches; actions run and buffers come back', () => {
  const pool = Mempool.create({ count: 1024 });
  const a = RingPort.create('a', pool, 256);
  const b = RingPort.create('b', pool, 256);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const upcalls: { id: number; port: number; key: Uint32Array }[] = [];
  const dp = new Datapath(pool, { upcall: (id, port, _frame, key) => upcalls.push({ id, port, key: key.slice() }) }, { emcInsertInvProb: 1 });
  dp.addPort(1, a);
  dp.addPort(2, b);
  const free0 = pool.available();

  send(pool, peerA, [frame(2, 1, 0)]);
  assert.equal(dp.pollOnce(), 1);
  assert.equal(upcalls.length, 1);
  assert.equal(upcalls[0].port, 1);
  // slow path: match in_port only, rewrite dl_dst, output to 2
  const mask = new Uint32Array(FLOW_WORDS);
  mask[W_IN_PORT] = 0xffffffff;
  const prog = Int32Array.from([OP_SET_DL_DST, 0x0200, 0x00000099, OP_OUTPUT, 2]);
  dp.installFlow(upcalls[0].key, mask, prog);
  assert.ok(dp.upcallReply(upcalls[0].id, prog));
  assert.equal(dp.upcallReply(upcalls[0].id, prog), false, 'a second answer is refused');

  const frames = Array.from({ length: 99 }, (_, i) => frame(2, 1, i + 1));
  send(pool, peerA, frames.slice(0, 40));
  send(pool, peerA, frames.slice(40));
  while (dp.pollOnce() > 0);
  const got = recvAll(pool, peerB);
  assert.equal(got.length, 100);
  got.forEach((f, i) => {
    assert.deepEqual(Array.from(f.subarray(0, 6)), [0x02, 0, 0, 0, 0, 0x99], 'dl_dst rewritten');
    assert.equal(new DataView(f.buffer, f.byteOffset).getUint32(60), i, 'in order, payload intact');
  });
  assert.equal(dp.stats.upcalls, 1);
  assert.equal(dp.stats.misses, 1);
  assert.equal(dp.stats.megaflowHits + dp.stats.emcHits, 99);
  assert.ok(dp.stats.emcHits >= 97);
  const flows = dp.dumpFlows();
  assert.equal(flows.length, 1);
  assert.equal(flows[0].packets, 99);
  pool.flushCache();
  assert.equal(pool.available(), free0, 'every buffer returned to the pool');
  peerA.close(); peerB.close(); a.close(); b.close();
});

test('flood to several ports copies; no rule drops are counted; unknown upcall replies are ignored', () => {
  const pool = Mempool.create({ count: 512 });
  const ports = [1, 2, 3].map((i) => RingPort.create(`p${i}`, pool, 64));
  const peers = ports.map((p) => RingPort.attach(p.attachInfo(), pool));
  const ids: number[] = [];
  const dp = new Datapath(pool, { upcall: (id) => ids.push(id) });
  ports.forEach((p, i) => dp.addPort(i + 1, p));
  const free0 = pool.available();
  // two flows; the third packet has the first one's key and waits behind its upcall
  send(pool, peers[0], [frame(0xff, 1, 7), frame(0xff, 3, 8), frame(0xff, 1, 9)]);
  dp.pollOnce();
  assert.equal(ids.length, 2, 'one upcall per flow');
  assert.equal(dp.stats.misses, 3);
  assert.equal(dp.stats.upcallsCoalesced, 1);
  dp.upcallReply(ids[0], Int32Array.from([OP_OUTPUT, 2, OP_OUTPUT, 3]));
  dp.upcallReply(ids[1], null);
  assert.equal(dp.upcallReply(12345, null), false);
  const on2 = recvAll(pool, peers[1]);
  assert.equal(on2.length, 2, 'the answer applies to the coalesced packet too');
  assert.deepEqual(on2.map((f) => new DataView(f.buffer, f.byteOffset).getUint32(60)), [7, 9], 'in arrival order');
  assert.equal(recvAll(pool, peers[2]).length, 2);
  assert.equal(dp.stats.drops['no-rule'], 1);
  // output to a port that went away
  dp.removePort(3);
  send(pool, peers[0], [frame(0xff, 1, 9)]);
  dp.pollOnce();
  dp.upcallReply(ids[2], Int32Array.from([OP_OUTPUT, 3]));
  assert.equal(dp.stats.drops['port-down'], 1);
  // malformed frame
  send(pool, peers[0], [new Uint8Array(10)]);
  dp.pollOnce();
  pool.flushCache();
  assert.equal(pool.available() + (dp.stats.upcalls - 3), free0, 'only held upcalls keep buffers');
  dp.drain();
  pool.flushCache();
  assert.equal(pool.available(), free0);
});

test('a per-packet upcall answer (packet-in) sends each packet held behind it up on its own', () => {
  const pool = Mempool.create({ count: 512 });
  const ports = [1, 2].map((i) => RingPort.create(`p${i}`, pool, 64));
  const peers = ports.map((p) => RingPort.attach(p.attachInfo(), pool));
  const ups: { id: number; port: number; seq: number }[] = [];
  const dp = new Datapath(pool, { upcall: (id, port, f) => ups.push({ id, port, seq: new DataView(f.buffer, f.byteOffset).getUint32(60) }) });
  ports.forEach((p, i) => dp.addPort(i + 1, p));
  const free0 = pool.available();
  send(pool, peers[0], [frame(0xff, 1, 1), frame(0xff, 1, 2), frame(0xff, 1, 3)]);
  dp.pollOnce();
  assert.equal(ups.length, 1);
  assert.equal(dp.stats.upcallsCoalesced, 2);
  // the slow path sent the leader to the controller (nothing to do in the datapath), per packet
  dp.upcallReply(ups[0].id, null, true);
  assert.deepEqual(ups.slice(1).map((u) => [u.port, u.seq]), [[1, 2], [1, 3]], 'the held packets went up, in order');
  assert.equal(dp.pendingUpcalls, 2);
  // meanwhile the controller installed a rule: they are forwarded
  for (const u of ups.slice(1)) assert.equal(dp.upcallReply(u.id, Int32Array.from([OP_OUTPUT, 2])), true);
  assert.deepEqual(recvAll(pool, peers[1]).map((f) => new DataView(f.buffer, f.byteOffset).getUint32(60)), [2, 3]);
  assert.equal(dp.stats.drops['no-rule'], 1);
  assert.equal(dp.stats.upcalls, 3);
  pool.flushCache();
  assert.equal(pool.available(), free0);
});

test('a frame that fills its buffer, VLAN-tagged and output to several ports: copies stay inside their buffers', () => {
  const pool = Mempool.create({ count: 64, bufSize: 248, headroom: 64 }); // stride 256: 8 guard bytes after each buffer
  const ports = [1, 2, 3].map((i) => RingPort.create(`p${i}`, pool, 16));
  const peers = ports.map((p) => RingPort.attach(p.attachInfo(), pool));
  const prog = Int32Array.from([OP_PUSH_VLAN, 0x8100, 5, OP_OUTPUT, 2, OP_OUTPUT, 3]);
  const dp = new Datapath(pool, { upcall: (id) => dp.upcallReply(id, prog) });
  ports.forEach((p, i) => dp.addPort(i + 1, p));
  const room = pool.bufSize - pool.headroom;
  const big = frame(0xff, 1, 42, room); // fills the data area; the tag makes it 4 bytes longer
  // guard pattern in every buffer's bytes after the data area's end
  const guardOk = (): boolean => {
    for (let h = 0; h < pool.count; h++) {
      const end = pool.bufAddrOffset(h) + pool.bufSize;
      for (let k = end; k < pool.bufAddrOffset(h) + pool.stride && k < pool.data.length; k++) if (pool.data[k] !== 0xa5) return false;
    }
    return true;
  };
  for (let h = 0; h < pool.count; h++) pool.data.fill(0xa5, pool.bufAddrOffset(h) + pool.bufSize, pool.bufAddrOffset(h) + pool.stride);
  send(pool, peers[0], [big]);
  dp.pollOnce();
  const on2 = recvAll(pool, peers[1]);
  const on3 = recvAll(pool, peers[2]);
  assert.equal(on2.length, 1);
  assert.equal(on3.length, 1);
  assert.deepEqual(on2[0], on3[0], 'the copy equals the original');
  assert.equal(on2[0].length, room + 4);
  assert.deepEqual(Array.from(on2[0].subarray(12, 16)), [0x81, 0x00, 0x00, 0x05], 'tagged');
  assert.deepEqual(on2[0].subarray(16), big.subarray(12), 'payload intact');
  assert.ok(guardOk(), 'no byte written past a buffer');
});

test('port numbers: 1..65279 (the one range of src/dp/port-number.ts); per-port arrays grow for high numbers', () => {
  const pool = Mempool.create({ count: 256 });
  const dp = new Datapath(pool, { upcall: () => undefined });
  for (const bad of [0, -1, 65280, 1.5, NaN]) assert.throws(() => dp.addPort(bad, RingPort.create('x', pool, 16)), /out of range \(an integer in 1\.\.65279\)/, String(bad));
  const lo = RingPort.create('lo', pool, 64);
  const hi = RingPort.create('hi', pool, 64);
  dp.addPort(1, lo);
  dp.addPort(65279, hi);
  const peerLo = RingPort.attach(lo.attachInfo(), pool);
  const peerHi = RingPort.attach(hi.attachInfo(), pool);
  const mask = new Uint32Array(FLOW_WORDS);
  mask[W_IN_PORT] = 0xffffffff;
  const key = new Uint32Array(FLOW_WORDS);
  key[W_IN_PORT] = 1;
  dp.installFlow(key, mask, Int32Array.from([OP_OUTPUT, 65279]));
  send(pool, peerLo, [frame(2, 1, 7)]);
  while (dp.pollOnce() > 0);
  const got = recvAll(pool, peerHi);
  assert.equal(got.length, 1, 'a frame reaches port 65279');
  assert.equal(dp.rxqCount(1, 0), 1);
});

test('the EMC is bypassed while it thrashes, probed again after EMC_BYPASS_WINDOWS windows; insert-inv-prob 0 never looks it up', () => {
  const W = 64;
  const pool = Mempool.create({ count: 1024 });
  const a = RingPort.create('a', pool, 512);
  const b = RingPort.create('b', pool, 512);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const inPort = new Uint32Array(FLOW_WORDS); inPort[W_IN_PORT] = 0xffffffff;
  const full = new Uint32Array(FLOW_WORDS).fill(0xffffffff);
  const prog = Int32Array.from([OP_OUTPUT, 2]);
  const mk = (inv: number) => {
    const dp: Datapath = new Datapath(pool, { upcall: (id, _p, _f, key) => { dp.installFlow(key, inPort, prog); dp.upcallReply(id, prog); } },
      { emcEntries: 64, emcInsertInvProb: inv, emcReviewPackets: W });
    dp.addPort(1, a);
    dp.addPort(2, b);
    return dp;
  };
  /** Send n frames of `keys` distinct flows (round robin, bursts of 32); per packet, whether the EMC was on after it. */
  let seq = 0;
  const run = (dp: Datapath, n: number, keys: number): boolean[] => {
    const on: boolean[] = [];
    for (let done = 0; done < n; done += 32) {
      send(pool, peerA, Array.from({ length: 32 }, () => { const f = frame(2, 1 + (seq % keys) % 200, seq); f[29] = (seq % keys) >> 8; seq++; return f; }));
      while (dp.pollOnce() > 0);
      assert.equal(recvAll(pool, peerB).length, 32);
      on.push(dp.emcActive);
    }
    return on;
  };

  // one subtable (in_port megaflow), 4 flows: the EMC answers nearly every packet and stays on
  let dp = mk(1);
  assert.equal(dp.emcActive, true);
  assert.ok(run(dp, W * 8, 4).every((x) => x), 'kept on');
  // 1000 flows through 64 entries: bypassed after the next window
  run(dp, W * 2, 1000);
  assert.equal(dp.emcActive, false);
  let s = dp.stats;
  const emc0 = s.emcHits;
  run(dp, W * 4, 1000);
  s = dp.stats;
  assert.equal(s.emcHits, emc0, 'no EMC hits while it is bypassed');
  assert.equal(s.emcHits + s.megaflowHits + s.misses, W * 14);
  dp.removePort(1); dp.removePort(2);

  // two subtables, 4 flows: the EMC answers nearly every packet and stays on
  dp = mk(1);
  dp.installFlow(new Uint32Array(FLOW_WORDS).fill(7), full, prog); // a second mask
  let on = run(dp, W * 40, 4);
  assert.ok(on.every((x) => x), 'kept on');
  assert.ok(dp.stats.emcHits > W * 38);
  // 1000 flows through a 64-entry EMC: it thrashes, bypassed; on again for one window every EMC_BYPASS_WINDOWS + 1
  on = run(dp, W * 64, 1000);
  const changes = on.filter((x, i) => i > 0 && x !== on[i - 1]).length;
  assert.ok(on.filter((x) => !x).length > on.length * 0.8, `mostly bypassed: ${on.filter((x) => !x).length} of ${on.length}`);
  assert.ok(changes >= 4, `probed again after the bypass windows (${changes} changes)`);
  dp.removePort(1); dp.removePort(2);

  // insertion off: no EMC lookups at all
  dp = mk(0);
  dp.installFlow(new Uint32Array(FLOW_WORDS).fill(7), full, prog);
  assert.equal(dp.emcActive, false);
  run(dp, W * 4, 4);
  assert.equal(dp.stats.emcHits, 0);
  assert.equal(dp.emcActive, false);
  dp.removePort(1); dp.removePort(2);
  peerA.close(); peerB.close(); a.close(); b.close();
});
