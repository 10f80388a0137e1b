/**
 * TapPort against the real kernel, in namespaces this test makes.
 *
 * End to end: a forwarder child runs in namespace S (`ip netns exec S node
 * netdev-fwd.js`) and opens two TapPorts with the `netns` option: tap ta0 is
 * created inside namespace A (10.99.0.1/24 on it), tb0 inside B
 * (10.99.0.2/24). Each tap's fd stays with the forwarder, so A's kernel sends
 * into ta0 -> forwarder -> tb0 -> B's kernel. A pings B through it. The taps
 * vanish when the forwarder closes them.
 *
 * In process: a tap in namespace A (10.99.1.1/24, static neighbour
 * 10.99.1.2 -> 02:00:00:00:00:02); we play 10.99.1.2, write ICMP echo
 * requests into the tap and read the kernel's replies.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { TapPort, TapPortError } from '../../src/port/tap.js';
import { SysError } from '../../src/sys/libc.js';
import { openFds, Fwd, ping, quietNs } from './netdev-helpers.js';
import { waitForOrTimeout } from '../harness/wait.js';

const PEER_MAC = [2, 0, 0, 0, 0, 2];

function csum(d: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (d[off + i] << 8) | (i + 1 < len ? d[off + i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}

/** An ICMP echo request 10.99.1.2 -> 10.99.1.1 with `payload` bytes. */
function echoRequest(dstMac: Uint8Array, id: number, seq: number, payload: number): Uint8Array {
  const len = 14 + 20 + 8 + payload;
  const f = new Uint8Array(len);
  f.set(dstMac, 0);
  f.set(PEER_MAC, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  const ipLen = len - 14;
  f.set([0x45, 0, ipLen >> 8, ipLen & 0xff, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 99, 1, 2, 10, 99, 1, 1], 14);
  const ipc = csum(f, 14, 20);
  f[24] = ipc >> 8;
  f[25] = ipc & 0xff;
  f[34] = 8; // echo request
  f[38] = id >> 8;
  f[39] = id & 0xff;
  f[40] = seq >> 8;
  f[41] = seq & 0xff;
  for (let i = 0; i < payload; i++) f[42 + i] = (seq + i) & 0xff;
  const ic = csum(f, 34, 8 + payload);
  f[36] = ic >> 8;
  f[37] = ic & 0xff;
  return f;
}

function put(pool: Mempool, h: number, f: Uint8Array): void {
  pool.data.set(f, pool.dataOffset(h));
  pool.dataLen[h] = f.length;
  pool.pktLen[h] = f.length;
}

/** Echo replies (id) received from any queue within ms; other frames are freed. Returns seq -> frame. */
async function replies(port: TapPort, pool: Mempool, id: number, want: number, ms = 3000): Promise<Map<number, Uint8Array>> {
  const got = new Map<number, Uint8Array>();
  const buf = new Int32Array(32);
  const pump = (): boolean => {
    for (let any = 1; any > 0 && got.size < want; ) {
      any = 0;
      for (let q = 0; q < port.nQueues; q++) {
        const n = port.rxBurst(q, buf, 32);
        any += n;
        for (let i = 0; i < n; i++) {
          const h = buf[i];
          const o = pool.dataOffset(h);
          const d = pool.data;
          if (d[o + 12] === 8 && d[o + 13] === 0 && d[o + 23] === 1 && d[o + 34] === 0 && ((d[o + 38] << 8) | d[o + 39]) === id) {
            got.set((d[o + 40] << 8) | d[o + 41], d.slice(o, o + pool.dataLen[h]));
          }
        }
        pool.free(buf, n);
      }
    }
    return got.size >= want;
  };
  await waitForOrTimeout(pump, { what: `${want} echo replies`, timeout: ms, interval: 1 });
  return got;
}

test('tap forwarder: taps made in namespaces A and B, ping A -> B with 0% loss, stats match', { timeout: 30000 }, async (t) => {
  const S = quietNs('tps', t);
  const A = quietNs('tpa', t);
  const B = quietNs('tpb', t);
  const fwd = new Fwd(
    S,
    {
      ports: [
        { kind: 'tap', name: 'ta', opts: { ifname: 'ta0', netns: A.name } },
        { kind: 'tap', name: 'tb', opts: { ifname: 'tb0', netns: B.name, queues: 2 } },
      ],
    },
    t,
  );
  const info = await fwd.ready();
  assert.deepEqual(
    info.map((p) => [p.name, p.ifname, p.nQueues]),
    [
      ['ta', 'ta0', 1],
      ['tb', 'tb0', 2],
    ],
  );
  assert.match(A.ip('link', 'show', 'ta0'), /UP/);
  assert.match(B.ip('-d', 'link', 'show', 'tb0'), /multi_queue/);
  A.addAddr('ta0', '10.99.0.1/24');
  B.addAddr('tb0', '10.99.0.2/24');
  const r = await ping(A, '10.99.0.2', 20);
  assert.equal(r.sent, 20, r.out);
  assert.equal(r.received, 20, `0% loss expected:\n${r.out}\n${fwd.stderr}`);
  const st = await fwd.stats();
  const [ta, tb] = st.ports;
  assert.equal(ta.link, 'up');
  assert.equal(tb.link, 'up');
  assert.ok(ta.stats.rxPackets >= 20 && ta.stats.rxPackets <= 24, `ta rx ${ta.stats.rxPackets}`);
  assert.ok(tb.stats.rxPackets >= 20 && tb.stats.rxPackets <= 24, `tb rx ${tb.stats.rxPackets}`);
  assert.equal(tb.stats.txPackets, ta.stats.rxPackets);
  assert.equal(ta.stats.txPackets, tb.stats.rxPackets);
  assert.equal(tb.stats.txBytes, ta.stats.rxBytes);
  assert.equal(ta.stats.txBytes, tb.stats.rxBytes);
  for (const p of st.ports) {
    assert.equal(p.stats.rxDropped, 0, JSON.stringify(p.stats));
    assert.equal(p.stats.txDropped, 0, JSON.stringify(p.stats));
  }
  const c = await fwd.close();
  assert.equal(c.fdsAfter, c.fdsBefore, 'close() released every fd');
  assert.equal(c.poolAvailable, st.poolCount, 'every buffer back in the pool');
  assert.doesNotMatch(A.ip('link'), /ta0/, 'the tap went away with the port');
});

test('tap in process: the kernel answers echo requests we write; chains, queues, drops by reason', { timeout: 30000 }, async (t) => {
  const A = quietNs('tpa', t);
  const fds0 = openFds();
  const pool = Mempool.create({ name: 'tap', count: 256 });
  const port = new TapPort('tp', pool, { ifname: 'tp0', netns: A.name, queues: 2, mtu: 1500 });
  t.after(() => {
    port.close();
    pool.close();
  });
  assert.equal(port.type, 'tap');
  assert.equal(port.ifname, 'tp0');
  assert.equal(port.nQueues, 2);
  assert.equal(port.mtu, 1500);
  assert.equal(port.mac.length, 6);
  assert.equal(port.link, 'up');
  A.addAddr('tp0', '10.99.1.1/24');
  A.ip('neigh', 'replace', '10.99.1.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'tp0', 'nud', 'permanent');

  // 40 echo requests, 20 per queue, assorted sizes
  const N = 40;
  const hs = new Int32Array(N);
  assert.equal(pool.alloc(hs, N), N);
  const sizes: number[] = [];
  for (let i = 0; i < N; i++) {
    sizes.push((i * 97) % 1400);
    put(pool, hs[i], echoRequest(port.mac, 0x4242, i, sizes[i]));
  }
  assert.equal(port.txBurst(0, hs, 20), 20);
  assert.equal(port.txBurst(1, hs.subarray(20), 20), 20);
  assert.equal(port.stats.txPackets, N);
  const got = await replies(port, pool, 0x4242, N);
  assert.equal(got.size, N, `replies for ${[...got.keys()]}`);
  for (let i = 0; i < N; i++) {
    const f = got.get(i)!;
    assert.equal(f.length, 42 + sizes[i]);
    assert.deepEqual([...f.subarray(0, 6)], PEER_MAC, 'reply goes to the peer MAC');
    for (let j = 0; j < sizes[i]; j++) if (f[42 + j] !== ((i + j) & 0xff)) assert.fail(`reply ${i}: payload byte ${j}`);
  }
  assert.ok(port.stats.rxPackets >= N);

  // a chained request (writev): Ethernet+IP header segment, then the ICMP segment
  const two = new Int32Array(2);
  assert.equal(pool.alloc(two, 2), 2);
  const req = echoRequest(port.mac, 0x4343, 7, 300);
  put(pool, two[0], req.subarray(0, 34));
  put(pool, two[1], req.subarray(34));
  pool.pktLen[two[0]] = req.length;
  pool.next[two[0]] = two[1];
  assert.equal(port.txBurst(0, two, 1), 1);
  const chained = await replies(port, pool, 0x4343, 1);
  assert.equal(chained.get(7)?.length, req.length);

  // drops: runt frame refused by the kernel, bad handle, bad queue
  const one = new Int32Array(1);
  one[0] = pool.allocOne();
  put(pool, one[0], new Uint8Array(10));
  assert.equal(port.txBurst(0, one, 1), 1, 'taken and dropped');
  assert.equal(port.stats.drops['tx-EINVAL'], 1, JSON.stringify(port.stats));
  one[0] = 100000;
  assert.equal(port.txBurst(0, one, 1), 1);
  assert.equal(port.stats.drops['tx-bad-handle'], 1);
  assert.equal(port.txBurst(5, one, 1), 0);
  assert.equal(port.stats.drops['tx-bad-queue'], 1);

  // a frame bigger than a pool buffer (MTU raised behind our back): dropped as rx-too-big
  A.ip('link', 'set', 'tp0', 'mtu', '3000');
  const pinging = ping(A, '10.99.1.2', 1, ['-s', '2500', '-W', '1']); // a 2542-byte frame into the tap
  const buf = new Int32Array(32);
  await waitForOrTimeout(
    () => {
      for (let q = 0; q < 2; q++) pool.free(buf, port.rxBurst(q, buf, 32));
      return port.stats.drops['rx-too-big'];
    },
    { what: 'the 2542-byte frame dropped as rx-too-big', timeout: 3000, interval: 1 },
  );
  assert.equal(port.stats.drops['rx-too-big'], 1, JSON.stringify(port.stats));
  await pinging;

  port.close();
  assert.equal(port.link, 'down');
  assert.equal(port.rxBurst(0, buf, 32), 0);
  assert.equal(pool.available(), pool.count, 'all buffers back');
  assert.doesNotMatch(A.ip('link'), /tp0/, 'non-persistent tap removed on close');
  pool.close();
  assert.equal(openFds(), fds0, 'no fd left open');
});

test('tap errors: bad names, queue-mode mismatch, busy tap, MTU too big; no fd leaks', async (t) => {
  const A = quietNs('tpa', t);
  const pool = Mempool.create({ name: 'tape', count: 64 });
  t.after(() => pool.close());
  const fds0 = openFds();
  assert.throws(
    () => new TapPort('p', pool, { ifname: 'a-very-long-interface-name', netns: A.name }),
    (e: unknown) => e instanceof SysError && e.code === 'EINVAL' && e.message.includes('a-very-long-interface-name'),
  );
  assert.throws(
    () => new TapPort('p', pool, { ifname: 'tq0', netns: 'tsvs-no-such-ns' }),
    (e: unknown) => e instanceof SysError && e.code === 'ENOENT' && e.message.includes('tsvs-no-such-ns'),
  );
  assert.throws(() => new TapPort('p', pool, { ifname: 'tq0', netns: A.name, mtu: 9000 }), TapPortError);
  // a persistent single-queue tap made by iproute2: attaching 2 queues fails in TUNSETIFF after
  // the first fd is open; one queue attaches, a second single-queue attach is busy
  A.ip('tuntap', 'add', 'dev', 'tper0', 'mode', 'tap');
  assert.throws(
    () => new TapPort('p', pool, { ifname: 'tper0', netns: A.name, queues: 2 }),
    (e: unknown) => e instanceof SysError && e.call === 'ioctl(TUNSETIFF)' && e.code === 'EINVAL' && e.message.includes('tper0'),
  );
  const p1 = new TapPort('p1', pool, { ifname: 'tper0', netns: A.name });
  assert.throws(
    () => new TapPort('p2', pool, { ifname: 'tper0', netns: A.name }),
    (e: unknown) => e instanceof SysError && e.call === 'ioctl(TUNSETIFF)' && e.code === 'EBUSY',
  );
  p1.close();
  assert.match(A.ip('link'), /tper0/, 'a persistent tap outlives the port');
  // kernel-chosen name
  const p3 = new TapPort('p3', pool, { ifname: 'tsvs%d', netns: A.name });
  assert.match(p3.ifname, /^tsvs\d+$/);
  p3.close();
  assert.equal(openFds(), fds0, 'every fd closed, failures included');
  assert.equal(pool.available(), pool.count);
});
