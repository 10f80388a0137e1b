/**
 * AfPacketPort against real veth pairs in namespaces this test makes.
 *
 * End to end: namespace A has veth a0 (10.99.0.1/24), namespace B has b0
 * (10.99.0.2/24); their peers a1 and b1 sit in namespace S, where a child
 * process (`ip netns exec S node netdev-fwd.js`) forwards between two
 * AfPacketPorts on a1 and b1. A pings B through it.
 *
 * In process: ports opened into namespaces with the `netns` option; frames of
 * a local experimental ethertype (0x88b5) sent on a0 and received on a1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { AfPacketPort } from '../../src/port/af-packet.js';
import { SysError } from '../../src/sys/libc.js';
import { Fwd, openFds, ping, quietNs } from './netdev-helpers.js';
import { waitForOrTimeout } from '../harness/wait.js';

const ETH_TEST = 0x88b5;

function writeFrame(pool: Mempool, h: number, len: number, seq: number): void {
  const off = pool.dataOffset(h);
  const d = pool.data;
  d.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], off);
  d[off + 12] = ETH_TEST >> 8;
  d[off + 13] = ETH_TEST & 0xff;
  for (let i = 14; i < len; i++) d[off + i] = (seq * 7 + i) & 0xff;
  d[off + 14] = seq & 0xff;
  d[off + 15] = (seq >> 8) & 0xff;
  pool.dataLen[h] = len;
  pool.pktLen[h] = len;
}

function frameSeq(pool: Mempool, h: number): number {
  const off = pool.dataOffset(h);
  return pool.data[off + 14] | (pool.data[off + 15] << 8);
}

function isTestFrame(pool: Mempool, h: number): boolean {
  const off = pool.dataOffset(h);
  return pool.data[off + 12] === ETH_TEST >> 8 && pool.data[off + 13] === (ETH_TEST & 0xff);
}

function checkFrame(pool: Mempool, h: number, len: number, seq: number): void {
  assert.equal(pool.dataLen[h], len, `frame ${seq} length`);
  assert.equal(pool.pktLen[h], len);
  const off = pool.dataOffset(h);
  for (let i = 16; i < len; i++) {
    if (pool.data[off + i] !== ((seq * 7 + i) & 0xff)) assert.fail(`frame ${seq}: byte ${i} differs`);
  }
}

/** Receive test frames from port queue q until `want` arrived or ms passed; other frames are freed. */
async function receive(port: AfPacketPort, pool: Mempool, want: number, ms = 3000, q = 0): Promise<number[]> {
  const got: number[] = [];
  const buf = new Int32Array(32);
  await waitForOrTimeout(
    () => {
      for (let n = -1; n !== 0 && got.length < want; ) {
        n = port.rxBurst(q, buf, buf.length);
        for (let i = 0; i < n; i++) {
          if (isTestFrame(pool, buf[i])) got.push(buf[i]);
          else pool.freeOne(buf[i]);
        }
      }
      return got.length >= want;
    },
    { what: `${want} test frames`, timeout: ms, interval: 1 },
  );
  return got;
}

test('afpacket forwarder between two namespaces: ping A -> B with 0% loss, stats match', { timeout: 30000 }, async (t) => {
  const S = quietNs('afs', t);
  const A = quietNs('afa', t);
  const B = quietNs('afb', t);
  A.addVeth('a0', 'a1', { peer: S });
  B.addVeth('b0', 'b1', { peer: S });
  A.addAddr('a0', '10.99.0.1/24');
  B.addAddr('b0', '10.99.0.2/24');
  const fwd = new Fwd(
    S,
    {
      ports: [
        { kind: 'afpacket', name: 'pa', opts: { iface: 'a1' } },
        { kind: 'afpacket', name: 'pb', opts: { iface: 'b1' } },
      ],
    },
    t,
  );
  const info = await fwd.ready();
  assert.deepEqual(
    info.map((p) => [p.name, p.ifname, p.nQueues]),
    [
      ['pa', 'a1', 1],
      ['pb', 'b1', 1],
    ],
  );
  const r = await ping(A, '10.99.0.2', 20);
  assert.equal(r.sent, 20, r.out);
  assert.equal(r.received, 20, `0% loss expected:\n${r.out}\n${fwd.stderr}`);
  const st = await fwd.stats();
  const [pa, pb] = st.ports;
  assert.equal(pa.link, 'up');
  assert.equal(pb.link, 'up');
  // 20 echo requests plus ARP; our own transmissions are never received back
  assert.ok(pa.stats.rxPackets >= 20 && pa.stats.rxPackets <= 24, `pa rx ${pa.stats.rxPackets}`);
  assert.ok(pb.stats.rxPackets >= 20 && pb.stats.rxPackets <= 24, `pb rx ${pb.stats.rxPackets}`);
  assert.equal(pb.stats.txPackets, pa.stats.rxPackets, 'everything a1 received went out on b1');
  assert.equal(pa.stats.txPackets, pb.stats.rxPackets, 'everything b1 received went out on a1');
  assert.equal(pb.stats.txBytes, pa.stats.rxBytes);
  assert.equal(pa.stats.txBytes, pb.stats.rxBytes);
  assert.ok(pa.stats.rxBytes >= 20 * 98, `echo requests are 98-byte frames (${pa.stats.rxBytes})`);
  for (const p of st.ports) {
    assert.equal(p.stats.rxDropped, 0, JSON.stringify(p.stats));
    assert.equal(p.stats.txDropped, 0, JSON.stringify(p.stats));
  }
  const c = await fwd.close();
  assert.equal(c.fdsAfter, c.fdsBefore, 'close() released every fd');
  assert.equal(c.poolAvailable, st.poolCount, 'every buffer back in the pool');
});

test('afpacket bursts in process (netns option): contents, chains, drops by reason, no leaks', { timeout: 30000 }, async (t) => {
  const S = quietNs('afs', t);
  const A = quietNs('afa', t);
  A.addVeth('a0', 'a1', { peer: S, mtu: 4000, peerOptions: { mtu: 4000 } });
  const fds0 = openFds();
  const pool = Mempool.create({ name: 'af', count: 512 });
  const bigPool = Mempool.create({ name: 'afbig', count: 64, bufSize: 4096 + 128 });
  const tx = new AfPacketPort('tx', bigPool, { iface: 'a0', netns: A.name });
  const rx = new AfPacketPort('rx', pool, { iface: 'a1', netns: S.name });
  t.after(() => {
    tx.close();
    rx.close();
  });
  assert.equal(tx.type, 'afpacket');
  assert.equal(tx.nQueues, 1);
  assert.equal(tx.mtu, 4000);
  assert.equal(tx.ignoreOutgoing, true);
  assert.equal(tx.link, 'up');
  assert.equal(rx.room, pool.bufSize - pool.headroom);

  // 100 frames of assorted sizes, bursts of 32
  const sizes: number[] = [];
  for (let i = 0; i < 100; i++) sizes.push(60 + ((i * 379) % (1514 - 60 + 1)));
  const hs = new Int32Array(32);
  for (let s = 0; s < 100; s += 32) {
    const n = Math.min(32, 100 - s);
    assert.equal(bigPool.alloc(hs, n), n);
    for (let i = 0; i < n; i++) writeFrame(bigPool, hs[i], sizes[s + i], s + i);
    assert.equal(tx.txBurst(0, hs, n), n);
  }
  assert.equal(tx.stats.txPackets, 100);
  assert.equal(tx.stats.txBytes, sizes.reduce((a, b) => a + b, 0));
  assert.equal(bigPool.available(), bigPool.count, 'sent buffers are freed by the port');
  const got = await receive(rx, pool, 100);
  assert.equal(got.length, 100);
  got.forEach((h, i) => {
    assert.equal(frameSeq(pool, h), i, 'in order');
    checkFrame(pool, h, sizes[i], i);
  });
  pool.free(Int32Array.from(got), got.length);
  assert.ok(rx.stats.rxPackets >= 100);

  // nothing of ours comes back on the sending port (PACKET_IGNORE_OUTGOING)
  assert.equal((await receive(tx, bigPool, 1, 100)).length, 0);

  // a chained packet (14-byte header segment + 200-byte payload segment) leaves as one frame
  const two = new Int32Array(2);
  assert.equal(bigPool.alloc(two, 2), 2);
  writeFrame(bigPool, two[0], 214, 500);
  const full = bigPool.data.slice(bigPool.dataOffset(two[0]), bigPool.dataOffset(two[0]) + 214);
  bigPool.data.set(full.subarray(14), bigPool.dataOffset(two[1]));
  bigPool.dataLen[two[0]] = 14;
  bigPool.pktLen[two[0]] = 214;
  bigPool.dataLen[two[1]] = 200;
  bigPool.next[two[0]] = two[1];
  assert.equal(tx.txBurst(0, two, 1), 1);
  const [chained] = await receive(rx, pool, 1);
  assert.ok(chained !== undefined, 'chained frame received');
  checkFrame(pool, chained, 214, 500);
  pool.freeOne(chained);

  // drops by reason: bad handle, over-MTU frame (kernel EMSGSIZE), frame bigger than rx buffers
  const bad = new Int32Array([-5]);
  assert.equal(tx.txBurst(0, bad, 1), 1, 'a bad handle is taken (and dropped)');
  assert.equal(tx.stats.drops['tx-bad-handle'], 1);
  const one = new Int32Array(1);
  one[0] = bigPool.allocOne();
  writeFrame(bigPool, one[0], 4090, 600); // > MTU 4000 + 14 (+4), < buffer room 4096
  assert.equal(tx.txBurst(0, one, 1), 1);
  assert.equal(tx.stats.drops["tx-EMSGSIZE"], 1, JSON.stringify(tx.stats));
  assert.equal(tx.stats.txDropped, 2);
  one[0] = bigPool.allocOne();
  writeFrame(bigPool, one[0], 3000, 601);
  const rxBefore = rx.stats.rxPackets;
  assert.equal(tx.txBurst(0, one, 1), 1, 'fits the 4000 MTU');
  await waitForOrTimeout(
    () => {
      for (let n = -1; n !== 0 && !rx.stats.drops['rx-too-big']; ) {
        n = rx.rxBurst(0, hs, 32);
        pool.free(hs, n);
      }
      return rx.stats.drops['rx-too-big'];
    },
    { what: 'the 3000-byte frame dropped as rx-too-big', timeout: 3000, interval: 1 },
  );
  assert.equal(rx.stats.drops['rx-too-big'], 1, '3000 bytes do not fit a 2048-byte buffer');
  assert.equal(rx.stats.rxPackets, rxBefore);

  // bad queue, closed port
  assert.equal(rx.rxBurst(3, hs, 32), 0);
  one[0] = bigPool.allocOne();
  assert.equal(tx.txBurst(7, one, 1), 0);
  assert.equal(tx.stats.drops['tx-bad-queue'], 1);
  tx.close();
  assert.equal(tx.link, 'down');
  assert.equal(tx.txBurst(0, one, 1), 0, 'a closed port takes nothing');
  assert.equal(tx.stats.drops['tx-closed'], 1);
  bigPool.freeOne(one[0]);
  assert.equal(bigPool.available(), bigPool.count, 'sent, dropped and stashed buffers all back');
  rx.close();
  rx.close(); // idempotent
  assert.equal(pool.available(), pool.count, 'rx stash returned to the pool');
  pool.close();
  bigPool.close();
  assert.equal(openFds(), fds0, 'no fd left open');
});

test('afpacket with 2 queues: a fanout group spreads flows, each frame received once', { timeout: 30000 }, async (t) => {
  const S = quietNs('afs', t);
  const A = quietNs('afa', t);
  A.addVeth('a0', 'a1', { peer: S });
  const pool = Mempool.create({ name: 'afq', count: 1024 });
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name });
  const rx = new AfPacketPort('rx', pool, { iface: 'a1', netns: S.name, queues: 2 });
  t.after(() => {
    // ports first: close() returns buffers to the pool
    tx.close();
    rx.close();
    pool.close();
  });
  assert.equal(rx.nQueues, 2);
  assert.ok(rx.fanoutId >= 0);
  assert.notEqual(rx.fds[0], rx.fds[1]);
  // 64 UDP/IPv4 frames, one flow each (source port varies)
  const N = 64;
  const hs = new Int32Array(N);
  assert.equal(pool.alloc(hs, N), N);
  for (let i = 0; i < N; i++) {
    const h = hs[i];
    const off = pool.dataOffset(h);
    const f = new Uint8Array(60);
    f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    f.set([0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 99, 9, 1, 10, 99, 9, 2], 14);
    let sum = 0;
    for (let j = 14; j < 34; j += 2) sum += (f[j] << 8) | f[j + 1];
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    f[24] = (~sum >> 8) & 0xff;
    f[25] = ~sum & 0xff;
    f[34] = 0x40 | (i >> 8);
    f[35] = i & 0xff; // src port
    f[36] = 0x13;
    f[37] = 0x88; // dst port 5000
    f[38] = 0;
    f[39] = 26;
    f[42] = i; // payload: flow number
    pool.data.set(f, off);
    pool.dataLen[h] = 60;
    pool.pktLen[h] = 60;
  }
  assert.equal(tx.txBurst(0, hs, N), N);
  const seen = new Map<number, number>();
  const perQueue = [0, 0];
  const buf = new Int32Array(32);
  await waitForOrTimeout(() => {
    let any = 1;
    while (any > 0 && perQueue[0] + perQueue[1] < N) {
      any = 0;
      for (let q = 0; q < 2; q++) {
        const n = rx.rxBurst(q, buf, 32);
        any += n;
        for (let i = 0; i < n; i++) {
          const off = pool.dataOffset(buf[i]);
          if (pool.data[off + 12] === 0x08 && pool.data[off + 23] === 17) {
            const flow = pool.data[off + 42];
            seen.set(flow, (seen.get(flow) ?? 0) + 1);
            perQueue[q]++;
          }
        }
        pool.free(buf, n);
      }
    }
    return perQueue[0] + perQueue[1] >= N;
  }, { what: `${N} frames over both queues`, timeout: 3000, interval: 1 });
  assert.equal(perQueue[0] + perQueue[1], N, `received ${perQueue}`);
  assert.equal(seen.size, N, 'every flow seen');
  for (const [flow, c] of seen) assert.equal(c, 1, `flow ${flow} received once`);
  assert.ok(perQueue[0] > 0 && perQueue[1] > 0, `both queues used: ${perQueue}`);
});

test('afpacket errors: missing interface is SysError ENODEV naming it; failures leak no fds', async (t) => {
  const A = quietNs('afa', t);
  A.addVeth('a0', 'a1');
  const pool = Mempool.create({ name: 'afe', count: 64 });
  t.after(() => pool.close());
  const fds0 = openFds();
  assert.throws(
    () => new AfPacketPort('p', pool, { iface: 'tsvsnone0' }),
    (e: unknown) => e instanceof SysError && e.code === 'ENODEV' && e.call === 'if_nametoindex' && e.message.includes('tsvsnone0'),
  );
  // a0 exists only inside A
  assert.throws(
    () => new AfPacketPort('p', pool, { iface: 'a0' }),
    (e: unknown) => e instanceof SysError && e.code === 'ENODEV' && e.message.includes('a0'),
  );
  assert.throws(
    () => new AfPacketPort('p', pool, { iface: 'nope9', netns: A.name }),
    (e: unknown) => e instanceof SysError && e.code === 'ENODEV' && e.message.includes('nope9'),
  );
  assert.throws(
    () => new AfPacketPort('p', pool, { iface: 'a0', netns: 'tsvs-no-such-ns' }),
    (e: unknown) => e instanceof SysError && e.code === 'ENOENT' && e.message.includes('tsvs-no-such-ns'),
  );
  assert.throws(
    () => new AfPacketPort('p', pool, { iface: 'a-very-long-interface-name' }),
    (e: unknown) => e instanceof SysError && e.code === 'EINVAL',
  );
  assert.equal(openFds(), fds0, 'failed opens closed what they opened');
  // open/close cycles leak nothing either
  for (let i = 0; i < 5; i++) new AfPacketPort('p', pool, { iface: 'a0', netns: A.name, queues: 3 }).close();
  assert.equal(openFds(), fds0);
  assert.equal(pool.available(), pool.count);
});

/** True when the UDP checksum of the IPv4 frame (VLAN tags allowed) at f verifies. */
function udpChecksumOk(f: Uint8Array): boolean {
  let p = 12;
  while (((f[p] << 8) | f[p + 1]) === 0x8100) p += 4;
  p += 2;
  const ihl = (f[p] & 0xf) * 4;
  const l4 = p + ihl;
  const l4len = ((f[l4 + 4] << 8) | f[l4 + 5]);
  let s = 17 + l4len;
  for (let i = p + 12; i < p + 20; i += 2) s += (f[i] << 8) | f[i + 1];
  for (let i = 0; i < l4len; i += 2) s += (f[l4 + i] << 8) | (i + 1 < l4len ? f[l4 + i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

test('afpacket rx undoes receive offloads: VLAN tag put back, UDP checksum finished', { timeout: 30000 }, async (t) => {
  const S = quietNs('afs', t);
  const A = quietNs('afa', t);
  A.addVeth('a0', 'a1', { peer: S });
  A.addAddr('a0', '10.99.0.1/24');
  A.ip('neigh', 'replace', '10.99.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'a0', 'nud', 'permanent');
  const pool = Mempool.create({ name: 'afo', count: 256 });
  const tx = new AfPacketPort('tx', pool, { iface: 'a0', netns: A.name });
  const fixed = new AfPacketPort('fixed', pool, { iface: 'a1', netns: S.name });
  const raw = new AfPacketPort('raw', pool, { iface: 'a1', netns: S.name, fixOffloads: false });
  t.after(() => {
    tx.close();
    fixed.close();
    raw.close();
    pool.close();
  });
  assert.equal(fixed.fixOffloads, true);
  // a UDP datagram from A's stack: the veth leaves its checksum to "hardware"
  A.exec(process.execPath, '-e', `const s=require('dgram').createSocket('udp4');s.send(Buffer.alloc(301,7),5000,'10.99.0.2',()=>s.close())`);
  // an 802.1Q frame (VID 100, PCP 5) sent by us: the receiving kernel moves the tag out of the frame
  const one = new Int32Array(1);
  one[0] = pool.allocOne();
  const vf = new Uint8Array(100);
  vf.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0xa0, 100, ETH_TEST >> 8, ETH_TEST & 0xff]);
  for (let i = 18; i < 100; i++) vf[i] = i;
  pool.data.set(vf, pool.dataOffset(one[0]));
  pool.dataLen[one[0]] = pool.pktLen[one[0]] = vf.length;
  assert.equal(tx.txBurst(0, one, 1), 1);

  const collect = async (port: AfPacketPort): Promise<{ udp?: Uint8Array; vlan?: Uint8Array }> => {
    const got: { udp?: Uint8Array; vlan?: Uint8Array } = {};
    const buf = new Int32Array(32);
    await waitForOrTimeout(
      () => {
        for (let n = -1; n !== 0 && !(got.udp && got.vlan); ) {
          n = port.rxBurst(0, buf, 32);
          for (let i = 0; i < n; i++) {
            const o = pool.dataOffset(buf[i]);
            const f = pool.data.slice(o, o + pool.dataLen[buf[i]]);
            if (f[12] === 8 && f[13] === 0 && f[23] === 17) got.udp = f;
            else if (f.includes(ETH_TEST >> 8) && f[f.indexOf(ETH_TEST >> 8) + 1] === (ETH_TEST & 0xff) && f.length < 120) got.vlan = f;
          }
          pool.free(buf, n);
        }
        return got.udp && got.vlan;
      },
      { what: 'the UDP and the VLAN frame', timeout: 3000, interval: 1 },
    );
    return got;
  };
  const a = await collect(fixed);
  assert.ok(a.udp && a.vlan, 'both frames received');
  assert.equal(a.udp.length, 14 + 20 + 8 + 301);
  assert.ok(udpChecksumOk(a.udp), 'UDP checksum finished');
  assert.deepEqual([...a.vlan], [...vf], 'tagged frame exactly as sent');
  assert.equal(fixed.offloads.vlanInserted, 1);
  assert.ok(fixed.offloads.csumFinished >= 1, JSON.stringify(fixed.offloads));
  // the same frames without the fix-ups: what a plain AF_PACKET reader gets
  const b = await collect(raw);
  assert.ok(b.udp && b.vlan);
  assert.equal(b.vlan.length, vf.length - 4, 'tag stripped');
  assert.equal(udpChecksumOk(b.udp), false, 'checksum left unfinished (CHECKSUM_PARTIAL)');
});
