/**
 * Packed rings after a switch restart (issue 18, defect 2, the packed half).
 *
 * A packed ring has no index in shared memory: where the device stands is only in the vring base
 * (bits 0-14 position, bit 15 wrap counter) the frontend sends with SET_VRING_BASE. Two frontends
 * behave differently when the switch comes back:
 *  - DPDK 22.11 virtio-user (server=1) resets its packed rings when the backend reconnects ("Packets
 *    on the fly will be dropped when packed ring reconnecting.") and sends base 0x8000: position 0,
 *    wrap 1, which is right for a fresh ring. That is why test/daemon/client-restart passed before
 *    the fix for packed rings (and its packed case checks that no resync was needed).
 *  - QEMU cannot read a packed ring's position back once the backend is gone (GET_VRING_BASE fails;
 *    virtio_queue_restore_last_avail_idx does nothing for packed rings) and does not reset the guest's
 *    ring: it sends the last base it knew, 0x8000 if the backend never stopped in order, while the
 *    guest's driver is far ahead, past a wrap. Taken as is, the device waits at slot 0 for a
 *    descriptor marked available for wrap 1 that the driver will never write there (the driver
 *    writes slot 0 again only in its next pass, with the other wrap counter): the port is up and
 *    nothing moves in either direction, forever. Before the fix (f7f8cd4) this test fails there.
 *
 * The frontend here is the repository's packed driver queue over a memfd (as the split case in
 * ring-resync.test.ts), driven through the real backend and port; the switch restart is a new backend on
 * a new connection with the ring state left in guest memory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UnixSocket } from '../../src/sys/socket.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import { GuestMemory } from '../../src/mem/guest-memory.js';
import { createDriverQueue, type DriverQueue } from '../../src/virtio/index.js';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import * as M from '../../src/vhost/messages.js';
import * as F from '../../src/virtio/features.js';
import { FakeGuest, ReplyReader, dpdkSession, sendScript, GUEST_GPA, QSIZE, SESSION_FEATURES, type ScriptMsg } from '../fixtures/vhost-session.js';
import { waitFor } from '../harness/wait.js';
import type { Logger } from '../../src/vhost/connection.js';

const FEATURES = SESSION_FEATURES | F.F_RING_PACKED;

function memLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, msg) => lines.push(`${level}: ${msg}`) };
}

/** The session DPDK/QEMU send, with packed rings and the given base for both rings. */
function packedSession(g: FakeGuest, base: [number, number]): ScriptMsg[] {
  return dpdkSession(g).map((msg) => {
    if (msg.request === M.Req.SET_FEATURES) return { ...msg, payload: M.encodeU64(FEATURES) };
    if (msg.request === M.Req.SET_VRING_BASE) {
      const s = M.decodeState(msg.payload);
      return { ...msg, payload: M.encodeState({ index: s.index, num: base[s.index]! }) };
    }
    return msg;
  });
}

interface Sw {
  b: VhostUserBackend;
  port: VhostUserPort;
  sock: UnixSocket;
  rd: ReplyReader;
  log: ReturnType<typeof memLogger>;
}

/** A switch (backend and a same-thread port) serving one session of the guest g. */
async function switchFor(g: FakeGuest, pool: Mempool, base: [number, number]): Promise<Sw> {
  const log = memLogger();
  const b = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice(), logger: log });
  const port = VhostUserPort.ringsOnly({ name: 't', mempool: pool });
  b.on('datapath', (d) => port.setDataPath(d));
  const [ours, theirs] = UnixSocket.pair();
  assert.ok(b.attachSocket(theirs));
  const rd = new ReplyReader(ours);
  for (const msg of packedSession(g, base)) {
    sendScript(ours, g, msg);
    const spec = M.FRONTEND_REQUESTS.get(msg.request);
    if (spec && (spec.reply !== 'ack' || msg.flags & M.FLAG_NEED_REPLY)) assert.ok(await rd.next());
  }
  await waitFor(() => b.linkUp && port.link === 'up', { what: 'link up', describe: () => `${port.status} ${log.lines.join('\n')}` });
  return { b, port, sock: ours, rd, log };
}

/** The switch dies: its connection just goes away (no GET_VRING_BASE: the frontend cannot read the positions back). */
async function crash(s: Sw): Promise<void> {
  s.sock.close();
  await waitFor(() => !s.b.connected, { what: 'disconnect' });
  await s.b.close();
  await s.port.closeAsync();
}

/** The guest: its two packed rings over the fake guest's memory, and traffic helpers. */
class Guest {
  readonly g = new FakeGuest();
  readonly pool = Mempool.create({ count: 512 });
  readonly rx: DriverQueue; // ring 0: the guest receives (the switch's txBurst)
  readonly tx: DriverQueue; // ring 1: the guest sends (the switch's rxBurst)
  private readonly addrs = new Float64Array(32);
  private readonly lens = new Int32Array(32);
  private readonly toks = new Int32Array(32);
  private readonly out = new Int32Array(32);
  private readonly rl = new Int32Array(32);
  /** Distinct payload byte per frame sent, to check what arrives. */
  private seq = 0;

  constructor() {
    const gm = new GuestMemory([this.g.mem.asGuestRegion(GUEST_GPA, this.g.uaddr)]);
    const q = (i: number): DriverQueue => {
      const r = this.g.ring(i);
      return createDriverQueue(gm, { size: QSIZE, descAddr: GUEST_GPA + r.desc, availAddr: GUEST_GPA + r.avail, usedAddr: GUEST_GPA + r.used, features: FEATURES });
    };
    this.rx = q(0);
    this.tx = q(1);
  }

  /** The guest posts n TX frames (60 bytes each, first payload byte = a sequence number). */
  postTx(n: number): void {
    for (let i = 0; i < n; i++) {
      const off = 0x40000 + ((this.seq + i) % 64) * 2048;
      this.g.mem.bytes.fill((this.seq + i) & 0xff, off + 12, off + 12 + 60);
      this.addrs[i] = GUEST_GPA + off;
      this.lens[i] = 12 + 60;
    }
    this.seq += n;
    assert.equal(this.tx.postTx(this.addrs, this.lens, this.toks, n), n);
  }

  reclaimTx(n: number): void {
    assert.equal(this.tx.reclaimTx(this.toks, 32), n);
  }

  /** The guest posts n RX buffers. */
  postRx(n: number): void {
    for (let i = 0; i < n; i++) {
      this.addrs[i] = GUEST_GPA + 0x80000 + i * 2048;
      this.lens[i] = 2048;
      this.toks[i] = i;
    }
    assert.equal(this.rx.postRx(this.addrs, this.lens, this.toks, n), n);
  }

  /** Frames the guest received since the last call. */
  pollRx(): number {
    return this.rx.pollRx(this.toks, this.rl, 32);
  }

  /** n frames of 60 bytes from the switch's pool, for the switch to send to the guest. */
  frames(n: number): Int32Array {
    assert.equal(this.pool.alloc(this.out, n), n);
    for (let i = 0; i < n; i++) {
      this.pool.data.fill(0xc0, this.pool.dataOffset(this.out[i]!), this.pool.dataOffset(this.out[i]!) + 60);
      this.pool.dataLen[this.out[i]!] = 60;
      this.pool.pktLen[this.out[i]!] = 60;
    }
    return this.out;
  }

  close(): void {
    this.pool.close();
    this.g.close();
  }
}

/**
 * Traffic both ways until both rings are past a wrap: `rounds` rounds of 10 frames each way.
 * 30 rounds = 300 descriptors on 256-entry rings: both rings stand at position 44, wrap 0.
 */
function run(s: Sw, gu: Guest, rounds: number): void {
  const out = new Int32Array(32);
  for (let k = 0; k < rounds; k++) {
    gu.postTx(10);
    assert.equal(s.port.rxBurst(0, out, 32), 10);
    gu.pool.free(out, 10);
    gu.reclaimTx(10);
    gu.postRx(10);
    assert.equal(s.port.txBurst(0, gu.frames(10), 10), 10);
    assert.equal(gu.pollRx(), 10);
  }
}

/**
 * A guest and a first switch whose packed rings both stand at position 44, wrap 0 (300 descriptors
 * each: past a wrap); every switch pushed to `open` is crashed, and the guest closed, by the test's end.
 */
async function pastWrap(t: { after(fn: () => unknown): void }): Promise<{ gu: Guest; open: Sw[]; s1: Sw }> {
  const gu = new Guest();
  const open: Sw[] = [];
  t.after(async () => {
    for (const s of open) if (s.b.connected) await crash(s);
    gu.close();
  });
  const s1 = await switchFor(gu.g, gu.pool, [0x8000, 0x8000]);
  open.push(s1);
  run(s1, gu, 30);
  return { gu, open, s1 };
}

test('packed rings: a frontend that comes back after a switch crash with a stale base (QEMU: 0x8000 while its rings are past a wrap) passes traffic again, both ways', async (t) => {
  const { gu, open, s1 } = await pastWrap(t);
  // in flight when the switch dies: 5 TX frames posted and not taken, 8 RX buffers posted and not filled
  gu.postTx(5);
  gu.postRx(8);
  await crash(s1);

  // the restarted switch gets the base QEMU still has: 0x8000 (position 0, wrap 1) for both rings
  const s2 = await switchFor(gu.g, gu.pool, [0x8000, 0x8000]);
  open.push(s2);
  const out = new Int32Array(32);
  const why = (): string => `${s2.port.status}\n${s2.log.lines.join('\n')}`;
  assert.equal(s2.port.rxBurst(0, out, 32), 5, `the 5 frames the guest had posted: ${why()}`);
  gu.pool.free(out, 5);
  gu.reclaimTx(5);
  assert.equal(s2.port.txBurst(0, gu.frames(3), 3), 3, `into the RX buffers the guest had posted: ${why()}`);
  assert.equal(gu.pollRx(), 3);
  // and it goes on, across the next wrap (another 300 descriptors each way)
  run(s2, gu, 30);
  assert.equal(s2.port.stats.drops['rx-bad-guest-chain'] ?? 0, 0);
  assert.equal(s2.port.link, 'up');
  const resyncs = s2.log.lines.filter((l) => /does not match the ring's descriptors: resuming at position/.test(l));
  assert.equal(resyncs.length, 2, `both rings resynced from the descriptor flags: ${why()}`);
  assert.ok(resyncs.some((l) => /ring 1: the frontend's base \(position 0, wrap 1\) .* resuming at position 44, wrap 0/.test(l)), resyncs.join('\n'));
  // the RX ring: the device used 300 + 3, the 5 other buffers posted before the crash are still the device's
  assert.ok(resyncs.some((l) => /ring 0: the frontend's base \(position 0, wrap 1\) .* resuming at position 44, wrap 0/.test(l)), resyncs.join('\n'));
  await crash(s2);
});

test('packed rings: the base read back with GET_VRING_BASE past a wrap (an orderly stop, then the switch restarts) is taken as is, wrap counter included', async (t) => {
  const { gu, open, s1 } = await pastWrap(t);
  gu.postTx(5); // posted, not taken: must come through the restart exactly once
  // QEMU's vhost_virtqueue_stop: GET_VRING_BASE per ring; the answer carries position and wrap counter
  const bases: number[] = [];
  for (const q of [0, 1]) {
    sendScript(s1.sock, gu.g, { request: M.Req.GET_VRING_BASE, flags: M.VERSION, payload: M.encodeState({ index: q, num: 0 }), fds: [] });
    const r = await s1.rd.next();
    assert.ok(r && r.hdr.request === M.Req.GET_VRING_BASE);
    bases.push(M.decodeState(r.payload).num);
  }
  // position 44, wrap 0, for avail (bits 0-15) and used (bits 16-31) alike
  assert.deepEqual(bases.map((b) => [b & 0x7fff, (b >>> 15) & 1, (b >>> 16) & 0x7fff, b >>> 31]), [[44, 0, 44, 0], [44, 0, 44, 0]]);
  await crash(s1);

  const s2 = await switchFor(gu.g, gu.pool, [bases[0]!, bases[1]!]);
  open.push(s2);
  const out = new Int32Array(32);
  assert.equal(s2.port.rxBurst(0, out, 32), 5, `${s2.port.status}\n${s2.log.lines.join('\n')}`);
  gu.pool.free(out, 5);
  gu.reclaimTx(5);
  run(s2, gu, 30);
  assert.ok(!s2.log.lines.some((l) => /resuming at/.test(l)), `a right base is not resynced: ${s2.log.lines.join('\n')}`);
  await crash(s2);
});
