/**
 * Live migration support of the backend, over a socketpair with the
 * frontend's side played by the test (QEMU's message order) and the guest's
 * rings driven by our driver-side queues: SET_LOG_BASE with a memfd
 * (LOG_SHMFD), VHOST_F_LOG_ALL, SET_VRING_ADDR with VHOST_VRING_F_LOG, then
 * the dirty bits are checked to be exactly the pages the switch wrote (RX
 * buffers, used ring / packed descriptors and device area) — none for pages
 * it only read — for split and packed rings; logging off again writes no
 * bit; GET_VRING_BASE stops the rings with every write logged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { UnixSocket } from '../../src/sys/socket.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import * as M from '../../src/vhost/messages.js';
import * as F from '../../src/virtio/features.js';
import { GuestMemory } from '../../src/mem/guest-memory.js';
import { SharedRegion } from '../../src/mem/region.js';
import { dirtyPages } from '../../src/mem/dirty-log.js';
import { createDriverQueue, type DriverQueue } from '../../src/virtio/index.js';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import type { Logger } from '../../src/vhost/connection.js';
import { waitFor } from '../harness/wait.js';
import { FakeGuest, ReplyReader, dpdkSession, sendScript, SESSION_FEATURES, SESSION_PROTOCOL_FEATURES, type ScriptMsg, type Reply } from '../fixtures/vhost-session.js';

const R = M.Req;
const PAGE = 4096;
/** Bitmap bytes: covers 128 MiB of guest physical memory from GPA 0. */
const LOG_BYTES = 4096;

function memLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, msg) => lines.push(`${level}: ${msg}`) };
}

/** The guest's memory sits at GPA 0 here (the log must cover it with a small bitmap). */
const GPA = 0;

interface Rig {
  g: FakeGuest;
  b: VhostUserBackend;
  port: VhostUserPort;
  pool: Mempool;
  sock: UnixSocket;
  rd: ReplyReader;
  drv: DriverQueue[];
  log: SharedRegion;
  features: bigint;
}

function session(g: FakeGuest, features: bigint, packed: boolean): ScriptMsg[] {
  // dpdkSession with our guest at GPA 0, LOG_SHMFD among the protocol features, and packed bases
  return dpdkSession(g).map((m) => {
    if (m.request === R.SET_PROTOCOL_FEATURES) return { ...m, payload: M.encodeU64(SESSION_PROTOCOL_FEATURES | M.featureMask(M.ProtoF.LOG_SHMFD)) };
    if (m.request === R.SET_FEATURES) return { ...m, payload: M.encodeU64(features) };
    if (m.request === R.SET_MEM_TABLE) {
      const [r] = M.decodeMemTable(m.payload);
      return { ...m, payload: M.encodeMemTable([{ ...r, gpa: GPA }]) };
    }
    if (m.request === R.SET_VRING_BASE && packed) {
      const s = M.decodeState(m.payload);
      return { ...m, payload: M.encodeState({ index: s.index, num: 0x8000 }) };
    }
    return m;
  });
}

async function reply(rd: ReplyReader, request: number): Promise<Reply> {
  const r = await rd.next();
  assert.ok(r, `reply to ${M.requestName(request)}`);
  assert.equal(r.hdr.request, request);
  return r as Reply;
}

async function rig(packed: boolean): Promise<Rig> {
  const g = new FakeGuest();
  const features = SESSION_FEATURES | (packed ? F.F_RING_PACKED : 0n);
  const gm = new GuestMemory([g.mem.asGuestRegion(GPA, g.uaddr)]);
  const drv = [0, 1].map((q) => {
    const r = g.ring(q);
    return createDriverQueue(gm, { size: 256, descAddr: GPA + r.desc, availAddr: GPA + r.avail, usedAddr: GPA + r.used, features });
  });
  const pool = Mempool.create({ count: 256 });
  const port = VhostUserPort.ringsOnly({ name: 'mig', mempool: pool });
  const b = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice(), logger: memLogger() });
  b.on('datapath', (d) => port.setDataPath(d));
  const [sock, theirs] = UnixSocket.pair();
  assert.ok(b.attachSocket(theirs));
  const rd = new ReplyReader(sock);
  for (const m of session(g, features, packed)) {
    sendScript(sock, g, m);
    const spec = M.FRONTEND_REQUESTS.get(m.request)!;
    if (spec.reply !== 'ack' || m.flags & M.FLAG_NEED_REPLY) await reply(rd, m.request);
  }
  await waitFor(() => b.linkUp && port.link === 'up', { what: 'link up' });
  const log = SharedRegion.create('dirty-log', LOG_BYTES);
  return { g, b, port, pool, sock, rd, drv, log, features };
}

/** The frontend's side of SET_LOG_BASE: the log memfd in the ancillary data, a u64 reply. */
async function setLogBase(x: Rig, size = LOG_BYTES, offset = 0): Promise<bigint> {
  const payload = M.encodeLog({ mmapSize: size, mmapOffset: offset });
  const buf = M.encodeRequest(R.SET_LOG_BASE, payload);
  x.sock.sendAll(buf, [x.log.fd]);
  const r = await reply(x.rd, R.SET_LOG_BASE);
  assert.equal(r.payload.length, 8);
  return M.decodeU64(r.payload);
}

function send(x: Rig, request: number, payload: Uint8Array, needReply = true): void {
  sendScript(x.sock, x.g, { request, flags: M.VERSION | (needReply ? M.FLAG_NEED_REPLY : 0), payload, fds: [] });
}

async function ack(x: Rig, request: number): Promise<void> {
  const r = await reply(x.rd, request);
  assert.equal(M.decodeU64(r.payload), 0n, `${M.requestName(request)} acked`);
}

/** QEMU's vhost_dev_set_log(true/false): SET_FEATURES (+/- LOG_ALL), then SET_VRING_ADDR with/without VRING_F_LOG per ring. */
async function setLogging(x: Rig, on: boolean, ringsLogged = [0, 1]): Promise<void> {
  send(x, R.SET_FEATURES, M.encodeU64(x.features | (on ? F.F_LOG_ALL : 0n)));
  await ack(x, R.SET_FEATURES);
  for (const q of [0, 1]) {
    const r = x.g.ring(q);
    const flag = on && ringsLogged.includes(q);
    send(x, R.SET_VRING_ADDR, M.encodeAddr({
      index: q, flags: flag ? M.VRING_F_LOG : 0,
      desc: x.g.uaddr + r.desc, avail: x.g.uaddr + r.avail, used: x.g.uaddr + r.used, log: flag ? BigInt(GPA + r.used) : 0n,
    }));
    await ack(x, R.SET_VRING_ADDR);
  }
  await waitFor(() => x.port.link === 'up' && x.b.logging === on && (x.b.dataPath?.log !== null) === on, { what: `logging ${on}` });
}

const TX_BUF = 0x40000;
/** RX buffer 0 straddles a page boundary (two pages written), the others are inside one page each. */
const RX_BUFS = [0x80fc0, 0x84000, 0x88000, 0x8c000];

/**
 * Guest sends 3 frames from TX_BUF (we read them), posts the RX buffers
 * `bufs` (offsets), and we deliver `nrx` frames of 60 bytes into them
 * (buffers posted and not filled stay with the device for the next call).
 */
function traffic(x: Rig, nrx: number, bufs: number[] = RX_BUFS.slice(0, nrx)): void {
  const addrs = new Float64Array(4);
  const lens = new Int32Array(4);
  const toks = new Int32Array(4);
  for (let i = 0; i < 3; i++) {
    addrs[i] = GPA + TX_BUF + i * 2048;
    lens[i] = 12 + 100;
    toks[i] = i;
  }
  assert.equal(x.drv[1].postTx(addrs, lens, toks, 3), 3);
  const out = new Int32Array(32);
  assert.equal(x.port.rxBurst(0, out, 32), 3);
  x.pool.free(out, 3);
  assert.equal(x.drv[1].reclaimTx(toks, 3), 3);
  for (let i = 0; i < bufs.length; i++) {
    addrs[i] = GPA + bufs[i];
    lens[i] = 2048;
    toks[i] = 10 + i;
  }
  assert.equal(x.drv[0].postRx(addrs, lens, toks, bufs.length), bufs.length);
  assert.equal(x.pool.alloc(out, nrx), nrx);
  for (let i = 0; i < nrx; i++) {
    x.pool.data.fill(0xb0 + i, x.pool.dataOffset(out[i]), x.pool.dataOffset(out[i]) + 60);
    x.pool.dataLen[out[i]] = 60;
    x.pool.pktLen[out[i]] = 60;
  }
  assert.equal(x.port.txBurst(0, out, nrx), nrx);
  const rl = new Int32Array(4);
  assert.equal(x.drv[0].pollRx(toks, rl, 4), nrx);
}

async function teardown(x: Rig): Promise<void> {
  x.sock.close();
  await waitFor(() => !x.b.connected, { what: 'disconnect' });
  await x.b.close();
  await x.port.closeAsync();
  x.pool.close();
  x.log.close();
  x.g.close();
}

const pageOf = (gpa: number): number => Math.floor(gpa / PAGE);

for (const packed of [false, true]) {
  const kind = packed ? 'packed' : 'split';
  test(`${kind}: dirty log marks exactly the pages the switch writes, only while VHOST_F_LOG_ALL is on`, async () => {
    const x = await rig(packed);
    const offered = M.decodeU64((await (async () => { send(x, R.GET_FEATURES, new Uint8Array(0), false); return reply(x.rd, R.GET_FEATURES); })()).payload);
    assert.ok((offered & F.F_LOG_ALL) !== 0n, 'VHOST_F_LOG_ALL offered');
    send(x, R.GET_PROTOCOL_FEATURES, new Uint8Array(0), false);
    assert.ok(M.hasFeature(M.decodeU64((await reply(x.rd, R.GET_PROTOCOL_FEATURES)).payload), M.ProtoF.LOG_SHMFD), 'LOG_SHMFD offered');

    // the log is shared but LOG_ALL is off: traffic marks nothing
    assert.equal(await setLogBase(x), 0n);
    assert.equal(x.b.logging, false);
    traffic(x, 2);
    assert.deepEqual(dirtyPages(x.log.bytes), [], 'nothing logged while VHOST_F_LOG_ALL is off');

    // QEMU starts migrating: LOG_ALL, rings' used areas logged
    await setLogging(x, true);
    x.log.bytes.fill(0); // what attaching (ring set-up writes) marked: QEMU clears as it copies
    traffic(x, 2);
    const ringPages = [0, 1].flatMap((q) => {
      const r = x.g.ring(q);
      // split: the used ring; packed: descriptors written back in place, and the device area (only at attach)
      return packed ? [pageOf(GPA + r.desc)] : [pageOf(GPA + r.used)];
    });
    const rxPages = [pageOf(RX_BUFS[0]), pageOf(RX_BUFS[0]) + 1, pageOf(RX_BUFS[1])];
    const want = [...new Set([...ringPages, ...rxPages])].sort((a, b) => a - b);
    assert.deepEqual(dirtyPages(x.log.bytes), want, 'exactly the RX buffers written and the ring pages; not the TX buffers read or the unused RX buffers');

    // a ring whose SET_VRING_ADDR did not ask for VRING_F_LOG: its used area is not logged, buffers still are
    await setLogging(x, true, [0]);
    x.log.bytes.fill(0);
    traffic(x, 1);
    const r0 = x.g.ring(0);
    const want1 = [...new Set([packed ? pageOf(GPA + r0.desc) : pageOf(GPA + r0.used), pageOf(RX_BUFS[0]), pageOf(RX_BUFS[0]) + 1])].sort((a, b) => a - b);
    assert.deepEqual(dirtyPages(x.log.bytes), want1, 'ring 1 (not flagged) unlogged');

    // migration cancelled: LOG_ALL off, nothing more is marked
    await setLogging(x, false);
    x.log.bytes.fill(0);
    traffic(x, 2);
    assert.deepEqual(dirtyPages(x.log.bytes), [], 'logging off again');

    // on again; buffers posted but not filled are not marked; then the source's stop:
    // GET_VRING_BASE returns positions after every logged write
    await setLogging(x, true);
    x.log.bytes.fill(0);
    traffic(x, 1, [RX_BUFS[2], RX_BUFS[3]]);
    assert.deepEqual(dirtyPages(x.log.bytes), [...ringPages, pageOf(RX_BUFS[2])].sort((a, b) => a - b), 'the filled buffer only');
    for (const q of [1, 0]) {
      send(x, R.GET_VRING_BASE, M.encodeState({ index: q, num: 0 }), false);
      const st = M.decodeState((await reply(x.rd, R.GET_VRING_BASE)).payload);
      assert.equal(st.index, q);
    }
    assert.equal(x.b.control.users, 0, 'data path detached');
    await teardown(x);
  });
}

test('SET_LOG_BASE: a log beyond its file closes the connection (a migration must fail, not corrupt)', async () => {
  const x = await rig(false);
  const rd = x.rd;
  const payload = M.encodeLog({ mmapSize: LOG_BYTES * 4, mmapOffset: 0 });
  x.sock.sendAll(M.encodeRequest(R.SET_LOG_BASE, payload), [x.log.fd]);
  assert.ok(await rd.waitEof(), 'connection closed');
  await waitFor(() => !x.b.connected, { what: 'backend saw the close' });
  assert.equal(x.b.stats.closeReasons['bad-value'], 1);
  await x.b.close();
  await x.port.closeAsync();
  x.sock.close();
  x.pool.close();
  x.log.close();
  x.g.close();
});

test('a second SET_LOG_BASE (QEMU resizes the log) replaces the first; the old mapping is released', async () => {
  const x = await rig(false);
  const maps = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/memfd:dirty-log')).length;
  const before = maps();
  assert.equal(await setLogBase(x), 0n);
  await setLogging(x, true);
  assert.equal(maps(), before + 1, 'log mapped once');
  assert.equal(await setLogBase(x, LOG_BYTES / 2, LOG_BYTES / 2), 0n);
  await waitFor(() => maps() === before + 1, { what: 'old log unmapped' });
  x.log.bytes.fill(0);
  traffic(x, 1);
  // the new log starts at file offset LOG_BYTES/2: bitmap byte i is file byte LOG_BYTES/2 + i
  const pages = dirtyPages(x.log.bytes.subarray(LOG_BYTES / 2));
  assert.ok(pages.includes(pageOf(RX_BUFS[0])), 'marks land in the new log at its offset');
  assert.deepEqual(dirtyPages(x.log.bytes.subarray(0, LOG_BYTES / 2)), [], 'nothing in the old log range');
  await teardown(x);
  assert.equal(maps(), 0, 'every mapping of the log released (ours at disconnect, the test\'s at close)');
});
