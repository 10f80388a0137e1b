/**
 * AfPacketPort's memory-mapped rx ring (PACKET_RX_RING, TPACKET_V2) against
 * veth pairs in namespaces this test makes: frames arrive exactly once and in
 * order while the ring wraps many times, a full ring counts its losses as
 * 'rx-kernel-queue-full', jumbo frames fit ring frames sized from the pool,
 * the recvmmsg path still works when rings are off, and close() unmaps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Mempool } from '../../src/mem/mempool.js';
import { AfPacketPort } from '../../src/port/af-packet.js';
import { closeQuiet, SysError } from '../../src/sys/libc.js';
import { openPacketSocket } from '../../src/sys/packet-socket.js';
import { mapPacketRings, packetRingLayout, releasePacketRings } from '../../src/sys/packet-ring.js';
import { withNetns } from '../../src/sys/netns.js';
import { MmsgVec, recvmmsgBurst } from '../../src/sys/packet-io.js';
import { openFds, quietNs } from './netdev-helpers.js';
import { waitFor, waitForOrTimeout } from '../harness/wait.js';

const ETH_TEST = 0x88b5;

/** Mappings of sockets in this process (a packet ring shows as `socket:[inode]`). */
function mapsLines(): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(' socket:[')).length;
}

function writeFrame(pool: Mempool, h: number, len: number, seq: number): void {
  const off = pool.dataOffset(h);
  const d = pool.data;
  d.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, ETH_TEST >> 8, ETH_TEST & 0xff], off);
  for (let i = 14; i < len; i++) d[off + i] = (seq * 13 + i) & 0xff;
  d[off + 14] = seq & 0xff;
  d[off + 15] = (seq >> 8) & 0xff;
  d[off + 16] = (seq >> 16) & 0xff;
  pool.dataLen[h] = len;
  pool.pktLen[h] = len;
}

/** The sequence number of test frame h, or -1 for other traffic. */
function seqOf(pool: Mempool, h: number): number {
  const off = pool.dataOffset(h);
  const d = pool.data;
  if (d[off + 12] !== ETH_TEST >> 8 || d[off + 13] !== (ETH_TEST & 0xff)) return -1;
  return d[off + 14] | (d[off + 15] << 8) | (d[off + 16] << 16);
}

function intact(pool: Mempool, h: number, len: number, seq: number): boolean {
  if (pool.dataLen[h] !== len || pool.pktLen[h] !== len) return false;
  const off = pool.dataOffset(h);
  for (let i = 17; i < len; i++) if (pool.data[off + i] !== ((seq * 13 + i) & 0xff)) return false;
  return true;
}

/** Send `count` frames of `len` bytes from seq `first` (bursts of 32; retried while the kernel is busy). */
async function send(tx: AfPacketPort, pool: Mempool, first: number, count: number, len: number | ((s: number) => number)): Promise<void> {
  const hs = new Int32Array(32);
  for (let s = first; s < first + count; ) {
    const n = Math.min(32, first + count - s);
    assert.equal(pool.alloc(hs, n), n, 'tx buffers');
    for (let i = 0; i < n; i++) writeFrame(pool, hs[i], typeof len === 'number' ? len : len(s + i), s + i);
    let done = 0;
    await waitForOrTimeout(() => (done += tx.txBurst(0, hs.subarray(done), n - done)) === n, { what: 'the kernel to take the burst', timeout: 1000, interval: 1 });
    assert.equal(done, n, 'all frames taken');
    s += n;
  }
}

/** Receive until `want` test frames arrived or ms passed; returns their seqs (frames checked by `check`). */
async function drain(rx: AfPacketPort, pool: Mempool, want: number, check: (h: number, seq: number) => void, ms = 3000): Promise<number[]> {
  const seqs: number[] = [];
  const buf = new Int32Array(64);
  const pump = (): boolean => {
    for (;;) {
      const n = rx.rxBurst(0, buf, buf.length);
      try {
        for (let i = 0; i < n; i++) {
          const s = seqOf(pool, buf[i]);
          if (s >= 0) {
            check(buf[i], s);
            seqs.push(s);
          }
        }
      } finally {
        pool.free(buf, n);
      }
      if (seqs.length >= want) return true;
      if (n === 0) return false;
    }
  };
  await waitForOrTimeout(pump, { what: `${want} frames`, timeout: ms, interval: 1 });
  return seqs;
}

test('afpacket rx ring: 6000 frames through a 90-frame ring (wraps ~65 times) arrive once, in order, intact', { timeout: 30000 }, async (t) => {
  const S = quietNs('afrs', t);
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1', { peer: S });
  const pool = Mempool.create({ name: 'afr', count: 1024 });
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name, rxRing: false });
  const maps0 = mapsLines();
  const rx = new AfPacketPort('rx', pool, { iface: 'a1', netns: S.name, ringFrames: 64 });
  t.after(() => {
    tx.close();
    rx.close();
    pool.close();
  });
  assert.equal(tx.rxMode, 'recvmmsg');
  assert.equal(rx.rxMode, 'ring');
  assert.equal(rx.ringProblem, '');
  const m = /^rx: TPACKET_V2 ring, (\d+) frames of (\d+) B/.exec(rx.status ?? '');
  assert.ok(m, rx.status);
  const frames = Number(m[1]);
  assert.ok(frames >= 64 && frames < 200, `ring of ${frames} frames`);
  assert.ok(Number(m[2]) >= rx.room + 66, 'a ring frame holds a full pool buffer');
  assert.equal(mapsLines(), maps0 + 1, 'the ring is mapped');

  const N = 6000;
  const size = (s: number): number => 60 + ((s * 97) % 1455); // 60..1514, small and large copies
  let next = 0;
  const got: number[] = [];
  while (next < N) {
    const k = Math.min(48, N - next); // less than the ring holds: nothing may be lost
    await send(tx, pool, next, k, size);
    const seqs = await drain(rx, pool, k, (h, s) => {
      if (!intact(pool, h, size(s), s)) assert.fail(`frame ${s} damaged (len ${pool.dataLen[h]})`);
    });
    got.push(...seqs);
    assert.equal(seqs.length, k, `frames ${next}..${next + k - 1}`);
    next += k;
  }
  assert.equal(got.length, N);
  for (let i = 0; i < N; i++) if (got[i] !== i) assert.fail(`position ${i} holds frame ${got[i]}`);
  rx.pollKernelStats();
  assert.equal(rx.stats.drops['rx-kernel-queue-full'] ?? 0, 0);
  assert.ok(N / frames > 30, 'the ring wrapped many times');
});

test('afpacket rx ring: a full ring loses frames as rx-kernel-queue-full, the rest arrive in order', { timeout: 30000 }, async (t) => {
  const S = quietNs('afrs', t);
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1', { peer: S });
  const pool = Mempool.create({ name: 'afr', count: 1024 });
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name });
  const rx = new AfPacketPort('rx', pool, { iface: 'a1', netns: S.name, ringFrames: 64 });
  t.after(() => {
    tx.close();
    rx.close();
    pool.close();
  });
  const frames = Number(/ring, (\d+) frames/.exec(rx.status ?? '')![1]);
  const N = 400;
  await send(tx, pool, 0, N, 60); // nobody reads meanwhile
  // the kernel has dealt with every frame once the ring is full and the rest counted as drops
  let dropped = 0;
  await waitFor(() => {
    rx.pollKernelStats();
    return (dropped = rx.stats.drops['rx-kernel-queue-full'] ?? 0) >= N - frames;
  }, { what: `at least ${N - frames} of ${N} frames dropped by the kernel (ring of ${frames})`, describe: () => `${dropped} dropped` });
  const seqs = await drain(rx, pool, N, () => {}, 300);
  rx.pollKernelStats();
  const lost = rx.stats.drops['rx-kernel-queue-full'] ?? 0;
  assert.ok(seqs.length <= frames, `${seqs.length} received, ring of ${frames}`);
  assert.ok(seqs.length >= frames - 2, `the ring filled: ${seqs.length} of ${frames}`);
  assert.equal(seqs.length + lost, N, `received ${seqs.length} + lost ${lost} = sent`);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], 'in order');
  // the ring works on afterwards
  const later = await (async () => {
    await send(tx, pool, N, 10, 100);
    return drain(rx, pool, 10, () => {});
  })();
  assert.deepEqual(later, [...Array(10).keys()].map((i) => N + i));
});

test('afpacket rx ring: 9000-byte MTU jumbo frames with a jumbo pool; too-big frames dropped', { timeout: 30000 }, async (t) => {
  const S = quietNs('afrs', t);
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1', { peer: S, mtu: 9000, peerOptions: { mtu: 9000 } });
  const big = Mempool.create({ name: 'afrj', count: 256, bufSize: 9000 + 22 + 128 });
  const small = Mempool.create({ name: 'afrs', count: 256 });
  const tx = new AfPacketPort('tx', big, { iface: 'a0', netns: A.name });
  const rx = new AfPacketPort('rx', big, { iface: 'a1', netns: S.name, mtu: 9000 });
  const rxSmall = new AfPacketPort('rxs', small, { iface: 'a1', netns: S.name });
  t.after(() => {
    tx.close();
    rx.close();
    rxSmall.close();
    big.close();
    small.close();
  });
  assert.equal(rx.rxMode, 'ring');
  assert.equal(rxSmall.rxMode, 'ring');
  const sizes = [9014, 60, 8000, 1514, 9014, 4097];
  await send(tx, big, 0, sizes.length, (s) => sizes[s]);
  const seqs = await drain(rx, big, sizes.length, (h, s) => {
    if (!intact(big, h, sizes[s], s)) assert.fail(`jumbo frame ${s} (${sizes[s]} B) damaged, got ${big.dataLen[h]} B`);
  });
  assert.deepEqual(seqs, [0, 1, 2, 3, 4, 5]);
  // the 2048-byte pool's port sees the same frames: four are too big for it
  const small2 = await drain(rxSmall, small, 2, () => {}, 1000);
  assert.deepEqual(small2, [1, 3]);
  assert.equal(rxSmall.stats.drops['rx-too-big'], 4);
});

test('afpacket rx ring off (rxRing: false): recvmmsg path, same frames', { timeout: 30000 }, async (t) => {
  const S = quietNs('afrs', t);
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1', { peer: S });
  const pool = Mempool.create({ name: 'afr', count: 512 });
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name });
  const rx = new AfPacketPort('rx', pool, { iface: 'a1', netns: S.name, rxRing: false });
  t.after(() => {
    tx.close();
    rx.close();
    pool.close();
  });
  assert.equal(rx.rxMode, 'recvmmsg');
  assert.match(rx.status ?? '', /^rx: recvmmsg; tx: /);
  await send(tx, pool, 0, 100, (s) => 60 + s * 10);
  const seqs = await drain(rx, pool, 100, (h, s) => assert.ok(intact(pool, h, 60 + s * 10, s)));
  assert.deepEqual(seqs, [...Array(100).keys()]);
});

test('afpacket rx ring: close() unmaps every ring and closes every fd (2 queues, fanout)', { timeout: 30000 }, async (t) => {
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1');
  const pool = Mempool.create({ name: 'afr', count: 512 });
  t.after(() => pool.close());
  const maps0 = mapsLines();
  const fds0 = openFds();
  for (let i = 0; i < 3; i++) {
    const p = new AfPacketPort('p', pool, { iface: 'a0', netns: A.name, queues: 2 });
    assert.equal(p.rxMode, 'ring');
    assert.equal(mapsLines(), maps0 + 2, 'one mapping per queue');
    p.close();
    assert.equal(p.status, 'closed');
    const buf = new Int32Array(32);
    assert.equal(p.rxBurst(0, buf, 32), 0, 'a closed port receives nothing (and touches no unmapped ring)');
    assert.equal(mapsLines(), maps0, 'no mapping left');
    assert.equal(openFds(), fds0, 'no fd left');
  }
  assert.equal(pool.available(), pool.count);
});

test('afpacket tx ring (txRing: true): wraps, keeps order and contents, chains, drops what the kernel would refuse, recovers from a down link', { timeout: 30000 }, async (t) => {
  const S = quietNs('afrs', t);
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1', { peer: S, mtu: 2000, peerOptions: { mtu: 2000 } });
  const pool = Mempool.create({ name: 'afrt', count: 1024, bufSize: 4096 + 128 });
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name, txRing: true, rxRing: false });
  const rx = new AfPacketPort('rx', pool, { iface: 'a1', netns: S.name, txRing: false });
  t.after(() => {
    tx.close();
    rx.close();
    pool.close();
  });
  assert.equal(tx.txMode, 'ring');
  assert.equal(rx.txMode, 'sendmmsg');
  const m = /tx: TPACKET_V2 ring, (\d+) frames of (\d+) B/.exec(tx.status ?? '');
  assert.ok(m, tx.status);
  const frames = Number(m[1]);
  assert.ok(Number(m[2]) >= 2000 + 18 + 32, 'a tx frame holds MTU + 18');

  // 4000 frames in bursts the receiver drains: the tx ring wraps several times
  const N = 4000;
  const size = (s: number): number => 60 + ((s * 211) % (2014 - 60 + 1));
  const got: number[] = [];
  for (let next = 0; next < N; ) {
    const k = Math.min(64, N - next);
    await send(tx, pool, next, k, size);
    got.push(...(await drain(rx, pool, k, (h, s) => {
      if (!intact(pool, h, size(s), s)) assert.fail(`frame ${s} damaged (len ${pool.dataLen[h]})`);
    })));
    assert.equal(got.length, next + k, `frames up to ${next + k}`);
    next += k;
  }
  for (let i = 0; i < N; i++) if (got[i] !== i) assert.fail(`position ${i} holds frame ${got[i]}`);
  assert.ok(N / frames >= 4, `ring of ${frames} wrapped`);
  assert.equal(tx.stats.txPackets, N);
  let bytes = 0;
  for (let i = 0; i < N; i++) bytes += size(i);
  assert.equal(tx.stats.txBytes, bytes);

  // a chain (header segment + payload segment) leaves as one frame
  const two = new Int32Array(2);
  assert.equal(pool.alloc(two, 2), 2);
  writeFrame(pool, two[0], 300, N);
  pool.data.copyWithin(pool.dataOffset(two[1]), pool.dataOffset(two[0]) + 20, pool.dataOffset(two[0]) + 300);
  pool.dataLen[two[0]] = 20;
  pool.dataLen[two[1]] = 280;
  pool.next[two[0]] = two[1];
  assert.equal(tx.txBurst(0, two, 1), 1);
  assert.deepEqual(await drain(rx, pool, 1, (h, s) => assert.ok(intact(pool, h, 300, s), 'chain sent whole')), [N]);

  // frames the kernel would refuse are dropped before the ring: over MTU + 14, over MTU + 18 with a tag, a runt
  const hs = new Int32Array(4);
  assert.equal(pool.alloc(hs, 4), 4);
  writeFrame(pool, hs[0], 2015, N + 1); // MTU 2000 + 14 + 1
  writeFrame(pool, hs[1], 2018, N + 2); // 802.1Q-tagged, MTU + 18: allowed
  pool.data[pool.dataOffset(hs[1]) + 12] = 0x81;
  pool.data[pool.dataOffset(hs[1]) + 13] = 0x00;
  writeFrame(pool, hs[2], 13, N + 3);
  writeFrame(pool, hs[3], 100, N + 4);
  const before = tx.stats.txPackets;
  assert.equal(tx.txBurst(0, hs, 4), 4);
  assert.equal(tx.stats.drops['tx-EMSGSIZE'], 1);
  assert.equal(tx.stats.drops['tx-EINVAL'], 1);
  assert.equal(tx.stats.txPackets, before + 2);
  assert.deepEqual(await drain(rx, pool, 1, () => {}), [N + 4], 'the untagged good frame arrives (the tagged one is a VLAN frame for a1)');

  // link down: the kernel refuses (ENETDOWN), the frames are dropped with that reason; back up, it works again
  A.ip('link', 'set', 'a0', 'down');
  await send(tx, pool, N + 10, 5, 80);
  assert.equal(tx.stats.drops['tx-ENETDOWN'], 5, JSON.stringify(tx.stats.drops));
  A.ip('link', 'set', 'a0', 'up');
  await waitForOrTimeout(() => tx.link === 'up', { what: 'a0 up again', timeout: 3000, interval: 10 });
  const sent0 = tx.stats.txPackets;
  await send(tx, pool, N + 20, 5, 80);
  assert.equal(tx.stats.txPackets, sent0 + 5, 'the error left by the flap costs no frame');
  assert.deepEqual(await drain(rx, pool, 5, () => {}), [N + 20, N + 21, N + 22, N + 23, N + 24]);
});

test('packet rings (src/sys/packet-ring): a refused ring throws SysError naming the call; released rings give the socket back to recvmmsg', { timeout: 30000 }, async (t) => {
  const A = quietNs('afra', t);
  A.addVeth('a0', 'a1');
  const pool = Mempool.create({ name: 'afrr', count: 256 });
  t.after(() => pool.close());
  const fds0 = openFds();
  const maps0 = mapsLines();
  const s = withNetns(A.name, () => openPacketSocket('a1'));
  const layout = packetRingLayout(2048, 96, 64);
  assert.equal(layout.blockSize % 4096, 0);
  assert.equal(layout.frameSize % 16, 0);
  assert.ok(layout.frameNr >= 64);
  const rings = mapPacketRings(s.fd, layout, null, 6);
  assert.equal(mapsLines(), maps0 + 1);
  // a socket with a ring cannot change version or get another ring
  assert.throws(
    () => mapPacketRings(s.fd, layout, null),
    (e: unknown) => e instanceof SysError && e.call === 'setsockopt(PACKET_VERSION)' && e.code === 'EBUSY',
  );
  // an impossible geometry (frames bigger than blocks) is refused too, and leaves nothing behind
  const s2 = withNetns(A.name, () => openPacketSocket('a1'));
  assert.throws(
    () => mapPacketRings(s2.fd, { blockSize: 4096, blockNr: 2, frameSize: 8192, frameNr: 1 }, null),
    (e: unknown) => e instanceof SysError && e.call === 'setsockopt(PACKET_RX_RING)' && e.code === 'EINVAL',
  );
  releasePacketRings(s.fd, rings);
  assert.equal(mapsLines(), maps0, 'unmapped');
  // without its ring the socket receives through recvmmsg again
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name, rxRing: false });
  const vec = new MmsgVec(8, 1);
  const h = pool.allocOne();
  try {
    const one = new Int32Array([pool.allocOne()]);
    writeFrame(pool, one[0], 100, 7);
    assert.equal(tx.txBurst(0, one, 1), 1);
    vec.setIov(0, pool.region.addr + pool.dataOffset(h), 2048);
    let r = -1;
    await waitForOrTimeout(() => (r = recvmmsgBurst(s.fd, vec, 1)) > 0, { what: 'the frame on the raw socket', timeout: 2000, interval: 1 });
    assert.equal(r, 1, 'received with recvmmsg');
    assert.equal(vec.msgLen(0), 100);
    assert.equal(seqOf(pool, h), 7);
  } finally {
    pool.freeOne(h);
    vec.free();
    tx.close();
    closeQuiet(s.fd);
    closeQuiet(s2.fd);
  }
  assert.equal(openFds(), fds0);
});
