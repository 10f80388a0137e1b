/**
 * The backend's protocol handling over socketpairs: a clean DPDK-like
 * session, then hostile input — each must give an error reply or close that
 * one connection, and leave the process and other connections healthy.
 */
import { test } from 'node:test';
import { waitFor } from '../harness/wait.js';
import assert from 'node:assert/strict';
import { UnixSocket } from '../../src/sys/socket.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import * as M from '../../src/vhost/messages.js';
import type { Logger } from '../../src/vhost/connection.js';
import { GuestMemory } from '../../src/mem/guest-memory.js';
import { createDriverQueue } from '../../src/virtio/index.js';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import * as libc from '../../src/sys/libc.js';
import { SharedRegion } from '../../src/mem/region.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  FakeGuest,
  ReplyReader,
  dpdkSession,
  sendScript,
  openFdCount,
  memfdMappings,
  GUEST_GPA,
  GUEST_SIZE,
  SESSION_FEATURES,
  type ScriptMsg,
} from '../fixtures/vhost-session.js';

const R = M.Req;

export function memLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, msg) => lines.push(`${level}: ${msg}`) };
}

function newBackend(log: Logger, queuePairs = 1): VhostUserBackend {
  // path is unused: sockets are attached directly
  return new VhostUserBackend({ path: '/nonexistent', device: new NetDevice({ queuePairs }), logger: log });
}

async function connect(b: VhostUserBackend): Promise<{ sock: UnixSocket; rd: ReplyReader }> {
  const [ours, theirs] = UnixSocket.pair();
  assert.ok(b.attachSocket(theirs));
  return { sock: ours, rd: new ReplyReader(ours) };
}

/** Send msgs; collect the replies the ones that expect one produce. */
async function play(sock: UnixSocket, rd: ReplyReader, g: FakeGuest, msgs: ScriptMsg[]): Promise<M.MsgHeader[]> {
  const out: M.MsgHeader[] = [];
  for (const msg of msgs) {
    sendScript(sock, g, msg);
    const spec = M.FRONTEND_REQUESTS.get(msg.request);
    const expects = spec && (spec.reply !== 'ack' || msg.flags & M.FLAG_NEED_REPLY);
    if (expects) {
      const r = await rd.next();
      assert.ok(r, `reply to ${M.requestName(msg.request)}`);
      out.push(r.hdr);
      if (spec.reply === 'ack') assert.equal(M.decodeU64(r.payload), 0n, `${M.requestName(msg.request)} acked ok`);
    }
  }
  return out;
}

async function expectAck(rd: ReplyReader, request: number, ok: boolean): Promise<void> {
  const r = await rd.next();
  assert.ok(r, `reply to ${M.requestName(request)}`);
  assert.equal(r.hdr.request, request);
  assert.equal(r.hdr.flags & M.FLAG_REPLY, M.FLAG_REPLY);
  assert.equal(M.decodeU64(r.payload) === 0n, ok, `${M.requestName(request)} ack ${ok ? 'success' : 'failure'}`);
}

test('clean DPDK-like session: data path published, link up, disconnect releases everything', async () => {
  const log = memLogger();
  const g = new FakeGuest();
  const fds0 = openFdCount();
  const maps0 = memfdMappings();
  const b = newBackend(log);
  const { sock, rd } = await connect(b);
  await play(sock, rd, g, dpdkSession(g));
  await waitFor(() => b.linkUp, { what: 'b.linkUp', timeout: 3000, interval: 2 });
  const d = b.dataPath!;
  assert.ok(d);
  assert.equal(d.queues.length, 2);
  assert.equal(d.queues[0]!.desc, GUEST_GPA + g.ring(0).desc);
  assert.equal(d.queues[1]!.used, GUEST_GPA + g.ring(1).used);
  assert.equal(d.regions[0].size, GUEST_SIZE);
  assert.ok(memfdMappings() > maps0, 'guest memory mapped');
  // GET_VRING_BASE stops the ring and returns last_avail_idx
  sendScript(sock, g, { request: R.GET_VRING_BASE, flags: M.VERSION, payload: M.encodeState({ index: 0, num: 0 }), fds: [] });
  const r = await rd.next();
  assert.deepEqual(M.decodeState(r!.payload), { index: 0, num: 0 });
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  await waitFor(() => memfdMappings() === maps0, { what: 'memfdMappings() === maps0', timeout: 3000, interval: 2 });
  assert.equal(b.dataPath, null);
  assert.equal(b.linkUp, false);
  assert.equal(openFdCount(), fds0, 'no fd leaked');
  await b.close();
  g.close();
});

test('malformed and hostile messages: error reply or close, backend keeps working', async () => {
  const log = memLogger();
  const g = new FakeGuest();
  const b = newBackend(log);
  const other = newBackend(memLogger());
  const o = await connect(other);
  const fds0 = openFdCount();
  let { sock, rd } = await connect(b);
  const NR = M.VERSION | M.FLAG_NEED_REPLY;
  const setup = dpdkSession(g).slice(0, 10); // up to and including SET_MEM_TABLE
  await play(sock, rd, g, setup);
  const send = (request: number, payload: Uint8Array, fds: ScriptMsg['fds'] = [], flags = NR, size?: number) =>
    sendScript(sock, g, { request, flags, payload, fds, size });

  // wrong size for the request
  send(R.SET_FEATURES, new Uint8Array(4));
  await expectAck(rd, R.SET_FEATURES, false);
  // wrong fd count: a memory table of 1 region with no fd, and with 2 fds
  send(R.SET_MEM_TABLE, M.encodeMemTable([{ gpa: 0, size: 4096, uaddr: 0x1000, mmapOffset: 0 }]));
  await expectAck(rd, R.SET_MEM_TABLE, false);
  send(R.SET_MEM_TABLE, M.encodeMemTable([{ gpa: 0, size: 4096, uaddr: 0x1000, mmapOffset: 0 }]), ['mem', 'mem2']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  // unknown request with and without NEED_REPLY
  send(99, new Uint8Array(8));
  await expectAck(rd, 99, false);
  send(77, new Uint8Array(3), [], M.VERSION);
  // overlapping regions
  send(R.SET_MEM_TABLE, M.encodeMemTable([
    { gpa: 0, size: 1 << 16, uaddr: 0x100000, mmapOffset: 0 },
    { gpa: 0x8000, size: 1 << 16, uaddr: 0x200000, mmapOffset: 0 },
  ]), ['mem', 'mem2']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  // absurd regions: larger than the file, address >= 2^53, unaligned offset, zero size, an eventfd as memory
  send(R.SET_MEM_TABLE, M.encodeMemTable([{ gpa: 0, size: 2 ** 40, uaddr: 0x1000, mmapOffset: 0 }]), ['mem']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  const big = M.encodeMemTable([{ gpa: 0, size: 4096, uaddr: 0x1000, mmapOffset: 0 }]);
  new DataView(big.buffer).setBigUint64(8, 1n << 60n, true);
  send(R.SET_MEM_TABLE, big, ['mem']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  send(R.SET_MEM_TABLE, M.encodeMemTable([{ gpa: 0, size: 4096, uaddr: 0x1000, mmapOffset: 100 }]), ['mem']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  send(R.SET_MEM_TABLE, M.encodeMemTable([{ gpa: 0, size: 0, uaddr: 0x1000, mmapOffset: 0 }]), ['mem']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  send(R.SET_MEM_TABLE, M.encodeMemTable([{ gpa: 0, size: 4096, uaddr: 0x1000, mmapOffset: 0 }]), ['kick0']);
  await expectAck(rd, R.SET_MEM_TABLE, false);
  send(R.SET_MEM_TABLE, M.encodeMemTable([]));
  await expectAck(rd, R.SET_MEM_TABLE, false);
  // the most fds one message can carry, on a message that takes none: refused, all closed
  send(R.SET_OWNER, new Uint8Array(0), ['kick0', 'kick1', 'call0', 'call1', 'mem', 'mem2', 'kick0', 'kick1']);
  await expectAck(rd, R.SET_OWNER, false);
  // queue index out of range, queue sizes not allowed
  send(R.SET_VRING_NUM, M.encodeState({ index: 200, num: 256 }));
  await expectAck(rd, R.SET_VRING_NUM, false);
  for (const num of [0, 300, 65536]) {
    send(R.SET_VRING_NUM, M.encodeState({ index: 0, num }));
    await expectAck(rd, R.SET_VRING_NUM, false);
  }
  send(R.SET_VRING_KICK, M.encodeVringFd({ index: 9, noFd: false }), ['kick0']);
  await expectAck(rd, R.SET_VRING_KICK, false);
  // ring addresses outside guest memory
  send(R.SET_VRING_NUM, M.encodeState({ index: 0, num: 256 }));
  await expectAck(rd, R.SET_VRING_NUM, true);
  send(R.SET_VRING_ADDR, M.encodeAddr({ index: 0, flags: 0, desc: g.uaddr + GUEST_SIZE - 16, avail: g.uaddr, used: g.uaddr + 0x1000, log: 0n }));
  await expectAck(rd, R.SET_VRING_ADDR, false);
  send(R.SET_VRING_ADDR, M.encodeAddr({ index: 0, flags: 0, desc: 0x1000, avail: 0x2000, used: 0x3000, log: 0n }));
  await expectAck(rd, R.SET_VRING_ADDR, false);
  // features not offered; protocol features not offered
  send(R.SET_FEATURES, M.encodeU64(1n << 63n));
  await expectAck(rd, R.SET_FEATURES, false);
  send(R.SET_PROTOCOL_FEATURES, M.encodeU64(1n << 40n));
  await expectAck(rd, R.SET_PROTOCOL_FEATURES, false);
  // out of order: the ring runs, then its size/base change
  await play(sock, rd, g, dpdkSession(g).slice(10));
  await waitFor(() => b.linkUp, { what: 'b.linkUp', timeout: 3000, interval: 2 });
  send(R.SET_VRING_NUM, M.encodeState({ index: 0, num: 128 }));
  await expectAck(rd, R.SET_VRING_NUM, false);
  send(R.SET_VRING_BASE, M.encodeState({ index: 1, num: 5 }));
  await expectAck(rd, R.SET_VRING_BASE, false);
  send(R.SET_FEATURES, M.encodeU64(M.featureMask(32, 30)));
  await expectAck(rd, R.SET_FEATURES, false);
  assert.ok(b.linkUp, 'still up after rejected requests');
  assert.ok(b.connected);

  // GET_VRING_BASE for a bad index cannot be answered: the connection is closed
  send(R.GET_VRING_BASE, M.encodeState({ index: 55, num: 0 }), [], M.VERSION);
  assert.ok(await rd.waitEof(), 'closed after unanswerable request');
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  assert.equal(b.dataPath, null);
  sock.close();
  assert.ok(log.lines.some((l) => l.includes('vring index 55')), 'reason logged');

  // framing errors close the connection: payload too big, bad version, short header at EOF, too many fds
  const framing: ((s: UnixSocket) => void)[] = [
    (s) => s.sendAll(M.encodeMessage(R.SET_FEATURES, M.VERSION, new Uint8Array(0)).map((v, i) => (i === 8 ? 0x88 : i === 9 ? 0x13 : v))),
    (s) => s.sendAll(M.encodeMessage(R.GET_FEATURES, 0x2)),
    (s) => {
      s.sendAll(new Uint8Array([1, 0, 0]));
      s.shutdown();
    },
  ];
  for (const f of framing) {
    ({ sock, rd } = await connect(b));
    try {
      f(sock);
    } catch {
      /* too many fds may be refused by our own sender */
    }
    assert.ok(await rd.waitEof(), 'framing error closes the connection');
    await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
    sock.close();
  }

  // one frontend at a time: a second connection is refused while the first is up
  ({ sock, rd } = await connect(b));
  const [x, y] = UnixSocket.pair();
  assert.equal(b.attachSocket(y), false);
  x.close();
  // the backend still serves a clean session
  await play(sock, rd, g, dpdkSession(g));
  await waitFor(() => b.linkUp, { what: 'b.linkUp', timeout: 3000, interval: 2 });
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  // the other backend's connection was never disturbed
  await play(o.sock, o.rd, g, dpdkSession(g));
  await waitFor(() => other.linkUp, { what: 'other.linkUp', timeout: 3000, interval: 2 });
  o.sock.close();
  await waitFor(() => !other.connected, { what: '!other.connected', timeout: 3000, interval: 2 });
  assert.equal(openFdCount(), fds0 - 2, 'no fd leaked (the other connection: both ends closed)');
  assert.ok((b.stats.errors['bad-value'] ?? 0) > 5);
  await b.close();
  await other.close();
  g.close();
});

test('same-thread data path against driver-side rings: frames both ways, GET_VRING_BASE returns positions, buffers returned', async () => {
  const g = new FakeGuest();
  const gm = new GuestMemory([g.mem.asGuestRegion(GUEST_GPA, g.uaddr)]);
  const drv = [0, 1].map((q) => {
    const r = g.ring(q);
    return createDriverQueue(gm, { size: 256, descAddr: GUEST_GPA + r.desc, availAddr: GUEST_GPA + r.avail, usedAddr: GUEST_GPA + r.used, features: SESSION_FEATURES });
  });
  const pool = Mempool.create({ count: 256 });
  const port = VhostUserPort.ringsOnly({ name: 't', mempool: pool });
  const b = newBackend(memLogger());
  b.on('datapath', (d) => port.setDataPath(d));
  const { sock, rd } = await connect(b);
  await play(sock, rd, g, dpdkSession(g));
  await waitFor(() => b.linkUp && port.link === 'up', { what: "b.linkUp && port.link === 'up'", timeout: 3000, interval: 2 });

  // guest TX (ring 1): 10 frames of 100 bytes after a 12-byte header
  const BUF = 0x40000;
  const addrs = new Float64Array(10);
  const lens = new Int32Array(10);
  const toks = new Int32Array(10);
  for (let i = 0; i < 10; i++) {
    addrs[i] = GUEST_GPA + BUF + i * 2048;
    lens[i] = 12 + 100;
    toks[i] = i;
    g.mem.bytes.fill(i + 1, BUF + i * 2048 + 12, BUF + i * 2048 + 112);
  }
  assert.equal(drv[1].postTx(addrs, lens, toks, 10), 10);
  const out = new Int32Array(32);
  const n = port.rxBurst(0, out, 32);
  assert.equal(n, 10);
  for (let i = 0; i < n; i++) {
    assert.equal(pool.dataLen[out[i]], 100);
    assert.equal(pool.data[pool.dataOffset(out[i])], i + 1);
  }
  pool.free(out, n);
  assert.equal(drv[1].reclaimTx(toks, 10), 10, 'TX buffers returned to the driver');

  // guest RX (ring 0): 8 buffers, we send 5 frames
  for (let i = 0; i < 8; i++) {
    addrs[i] = GUEST_GPA + 0x80000 + i * 2048;
    lens[i] = 2048;
    toks[i] = 100 + i;
  }
  assert.equal(drv[0].postRx(addrs, lens, toks, 8), 8);
  assert.equal(pool.alloc(out, 5), 5);
  for (let i = 0; i < 5; i++) {
    pool.data.fill(0xa0 + i, pool.dataOffset(out[i]), pool.dataOffset(out[i]) + 60);
    pool.dataLen[out[i]] = 60;
    pool.pktLen[out[i]] = 60;
  }
  assert.equal(port.txBurst(0, out, 5), 5);
  const rl = new Int32Array(8);
  assert.equal(drv[0].pollRx(toks, rl, 8), 5);
  assert.equal(rl[0], 12 + 60);
  assert.equal(g.mem.bytes[0x80000 + 12], 0xa0);
  assert.equal(port.stats.txPackets, 5);
  assert.equal(port.stats.rxPackets, 10);
  assert.equal(pool.available(), 256, 'every mbuf back in the pool');
  assert.ok(libc.eventfdRead(g.fds.call0) > 0, 'driver with interrupts enabled got a call');

  // stop: GET_VRING_BASE returns the positions the data path reached
  for (const [q, want] of [[1, 10], [0, 5]]) {
    sendScript(sock, g, { request: R.GET_VRING_BASE, flags: M.VERSION, payload: M.encodeState({ index: q, num: 0 }), fds: [] });
    const r = await rd.next();
    assert.deepEqual(M.decodeState(r!.payload), { index: q, num: want });
  }
  assert.equal(port.link, 'down');
  assert.equal(b.control.users, 0);
  // a frame sent while down is dropped and counted, the mbuf freed
  assert.equal(pool.alloc(out, 1), 1);
  pool.dataLen[out[0]] = 60;
  port.txBurst(0, out, 1);
  assert.equal(port.stats.drops['tx-link-down'], 1);
  assert.equal(pool.available(), 256);
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  await b.close();
  await port.closeAsync();
  pool.close();
  g.close();
});

test('regions larger than a 1 GiB window at a non-zero mmap offset (QEMU >3 GiB layout), mapped lazily', async () => {
  const g = new FakeGuest();
  const big = libc.memfdCreate('big-guest');
  libc.ftruncate(big, 3 * 2 ** 30); // sparse: never touched
  const maps0 = fsMaps('big-guest');
  const b = newBackend(memLogger());
  const { sock, rd } = await connect(b);
  const sess = dpdkSession(g);
  const memIdx = sess.findIndex((m) => m.request === R.SET_MEM_TABLE);
  // region 0: the small fake guest (rings live there); region 1: 1.5 GiB at file offset 1 GiB
  sess[memIdx] = {
    request: R.SET_MEM_TABLE,
    flags: M.VERSION | M.FLAG_NEED_REPLY,
    payload: M.encodeMemTable([
      { gpa: GUEST_GPA, size: GUEST_SIZE, uaddr: g.uaddr, mmapOffset: 0 },
      { gpa: 0x100000000, size: 1.5 * 2 ** 30, uaddr: 0x100000000000, mmapOffset: 2 ** 30 },
    ]),
    fds: ['mem', 'mem2'],
  };
  const saved = g.fds.mem2;
  (g.fds as Record<string, number>).mem2 = big;
  await play(sock, rd, g, sess);
  await waitFor(() => b.linkUp, { what: 'b.linkUp', timeout: 3000, interval: 2 });
  const d = b.dataPath!;
  assert.equal(d.regions[1].size, 1.5 * 2 ** 30);
  assert.equal(fsMaps('big-guest'), maps0 + 1, 'one mapping per region, whatever its size');
  // a write at 1.25 GiB into the region lands at file offset 1 GiB + 1.25 GiB
  const win = new Uint8Array(libc.view(d.regions[1].addr + 2 ** 30 + 2 ** 28, 8));
  win[0] = 0x5a;
  const check = SharedRegionFromFd(big, 2 ** 30 + 2 ** 30 + 2 ** 28);
  assert.equal(check.bytes[0], 0x5a);
  check.close();
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  assert.equal(fsMaps('big-guest'), maps0, 'unmapped after disconnect');
  (g.fds as Record<string, number>).mem2 = saved;
  libc.close(big);
  await b.close();
  g.close();
});

test('SEND_RARP makes the owning port announce the guest MAC; NET_SET_MTU and GET_CONFIG reflect the device', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vhost-r-'));
  const g = new FakeGuest();
  const pool = Mempool.create({ count: 64 });
  const port = new VhostUserPort({ path: path.join(dir, 's'), mempool: pool, mac: '02:11:22:33:44:55', mtu: 1500, logger: memLogger() });
  const [ours, theirs] = UnixSocket.pair();
  assert.ok(port.backend!.attachSocket(theirs));
  const rd = new ReplyReader(ours);
  await play(ours, rd, g, dpdkSession(g));
  await waitFor(() => port.link === 'up', { what: "port.link === 'up'", timeout: 3000, interval: 2 });
  sendScript(ours, g, { request: R.GET_CONFIG, flags: M.VERSION, payload: M.encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(12) }), fds: [] });
  let c = M.decodeConfig((await rd.next())!.payload);
  assert.deepEqual([...c.data.subarray(0, 6)], [2, 0x11, 0x22, 0x33, 0x44, 0x55]);
  assert.equal(c.data[10] | (c.data[11] << 8), 1500);
  sendScript(ours, g, { request: R.NET_SET_MTU, flags: M.VERSION | M.FLAG_NEED_REPLY, payload: M.encodeU64(2000n), fds: [] });
  await expectAck(rd, R.NET_SET_MTU, true);
  // above what the pool's buffers hold (the port's default max MTU): refused
  sendScript(ours, g, { request: R.NET_SET_MTU, flags: M.VERSION | M.FLAG_NEED_REPLY, payload: M.encodeU64(9000n), fds: [] });
  await expectAck(rd, R.NET_SET_MTU, false);
  sendScript(ours, g, { request: R.NET_SET_MTU, flags: M.VERSION | M.FLAG_NEED_REPLY, payload: M.encodeU64(10n), fds: [] });
  await expectAck(rd, R.NET_SET_MTU, false);
  sendScript(ours, g, { request: R.GET_CONFIG, flags: M.VERSION, payload: M.encodeConfig({ offset: 10, flags: 0, data: new Uint8Array(2) }), fds: [] });
  c = M.decodeConfig((await rd.next())!.payload);
  assert.equal(c.data[0] | (c.data[1] << 8), 2000);
  sendScript(ours, g, { request: R.SEND_RARP, flags: M.VERSION | M.FLAG_NEED_REPLY, payload: Uint8Array.from([0x52, 0x54, 0, 1, 2, 3, 0, 0]), fds: [] });
  await expectAck(rd, R.SEND_RARP, true);
  const out = new Int32Array(32);
  const n = port.rxBurst(0, out, 32);
  assert.equal(n, 1);
  const f = pool.data.subarray(pool.dataOffset(out[0]), pool.dataOffset(out[0]) + pool.dataLen[out[0]]);
  assert.deepEqual([...f.subarray(0, 14)], [255, 255, 255, 255, 255, 255, 0x52, 0x54, 0, 1, 2, 3, 0x80, 0x35]);
  assert.equal(f[21], 3, 'RARP reverse request');
  pool.free(out, n);
  ours.close();
  await port.closeAsync();
  assert.equal(fs.existsSync(path.join(dir, 's')), false, 'socket file removed');
  pool.close();
  g.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function fsMaps(name: string): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name}`)).length;
}

function SharedRegionFromFd(fd: number, offset: number): SharedRegion {
  return SharedRegion.fromFd(libc.dup(fd), 4096, offset);
}

test('a frontend that maps guest memory privately (share=off) is reported, link stays down', async () => {
  const g = new FakeGuest();
  // a private (rw-p) mapping of ours of at least GUEST_SIZE bytes stands in for QEMU's share=off RAM
  const priv = fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .map((l) => l.split(/\s+/))
    .filter((f) => f[1] === 'rw-p')
    .map((f) => f[0].split('-').map((x) => parseInt(x, 16)))
    .find(([a, b]) => b - a >= GUEST_SIZE);
  assert.ok(priv, 'found a private mapping');
  const log = memLogger();
  const b = newBackend(log);
  const { sock, rd } = await connect(b);
  const sess = dpdkSession(g).map((m) => {
    if (m.request === R.SET_MEM_TABLE) {
      return { ...m, payload: M.encodeMemTable([{ gpa: GUEST_GPA, size: GUEST_SIZE, uaddr: priv[0], mmapOffset: 0 }]) };
    }
    if (m.request === R.SET_VRING_ADDR) {
      const a = M.decodeAddr(m.payload);
      const d = priv[0] - g.uaddr;
      return { ...m, payload: M.encodeAddr({ ...a, desc: a.desc + d, avail: a.avail + d, used: a.used + d }) };
    }
    return m;
  });
  const m0 = b.stats.messages;
  await play(sock, rd, g, sess);
  // every message of the session handled (the last ones have no reply): then the link must still be down
  await waitFor(() => b.stats.messages - m0 === sess.length, { what: 'the whole session handled', timeout: 3000, interval: 2 });
  assert.equal(b.linkUp, false);
  assert.equal(b.dataPath, null);
  assert.match(b.problem ?? '', /not shared/);
  assert.ok(log.lines.some((l) => l.startsWith('error:') && /not shared.*share=on/.test(l)), 'logged at error level');
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  assert.equal(b.problem, null, 'cleared with the session');
  await b.close();
  g.close();
});
