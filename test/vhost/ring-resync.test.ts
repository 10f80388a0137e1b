/**
 * A frontend that outlived its backend comes back with a ring base that is not where its ring
 * stands (issue 18, defect 2): the backend resyncs from the ring (split: the used index; packed:
 * the descriptor flags) like DPDK's vhost library, and a ring it still has to give up on is
 * reported with the reason (port status / `tsvs show`).
 */
import { test } from 'node:test';
import { waitFor } from '../harness/wait.js';
import assert from 'node:assert/strict';
import { UnixSocket } from '../../src/sys/socket.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { packedResyncPoint } from '../../src/vhost/backend-protocol.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import { GuestMemory } from '../../src/mem/guest-memory.js';
import { createDriverQueue } from '../../src/virtio/index.js';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import * as M from '../../src/vhost/messages.js';
import { FakeGuest, ReplyReader, dpdkSession, sendScript, GUEST_GPA, SESSION_FEATURES } from '../fixtures/vhost-session.js';
import type { Logger } from '../../src/vhost/connection.js';

function memLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, msg) => lines.push(`${level}: ${msg}`) };
}

/** A backend ("the switch") with a same-thread port, serving one session of the guest g. */
async function switchFor(g: FakeGuest, pool: Mempool): Promise<{ b: VhostUserBackend; port: VhostUserPort; sock: UnixSocket; log: ReturnType<typeof memLogger> }> {
  const log = memLogger();
  const b = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice(), logger: log });
  const port = VhostUserPort.ringsOnly({ name: 't', mempool: pool });
  b.on('datapath', (d) => port.setDataPath(d));
  const [ours, theirs] = UnixSocket.pair();
  assert.ok(b.attachSocket(theirs));
  const rd = new ReplyReader(ours);
  for (const msg of dpdkSession(g)) {
    sendScript(ours, g, msg);
    const spec = M.FRONTEND_REQUESTS.get(msg.request);
    if (spec && (spec.reply !== 'ack' || msg.flags & M.FLAG_NEED_REPLY)) assert.ok(await rd.next());
  }
  await waitFor(() => b.linkUp && port.link === 'up', { what: "b.linkUp && port.link === 'up'", timeout: 3000, interval: 2 });
  return { b, port, sock: ours, log };
}

test('split ring: SET_VRING_BASE 0 from a frontend whose ring is 300 entries ahead resyncs from the used index; a ring still broken says why', async () => {
  const g = new FakeGuest();
  const gm = new GuestMemory([g.mem.asGuestRegion(GUEST_GPA, g.uaddr)]);
  const r1 = g.ring(1);
  const tx = createDriverQueue(gm, { size: 256, descAddr: GUEST_GPA + r1.desc, availAddr: GUEST_GPA + r1.avail, usedAddr: GUEST_GPA + r1.used, features: SESSION_FEATURES });
  const pool = Mempool.create({ count: 256 });
  const addrs = new Float64Array(10);
  const lens = new Int32Array(10).fill(12 + 60);
  const toks = new Int32Array(10);
  const out = new Int32Array(32);
  const post = (): void => {
    for (let i = 0; i < 10; i++) addrs[i] = GUEST_GPA + 0x40000 + i * 2048;
    assert.equal(tx.postTx(addrs, lens, toks, 10), 10);
  };

  // the first switch takes 300 frames, then dies (its connection just goes away)
  const s1 = await switchFor(g, pool);
  for (let k = 0; k < 30; k++) {
    post();
    assert.equal(s1.port.rxBurst(0, out, 32), 10);
    pool.free(out, 10);
    assert.equal(tx.reclaimTx(toks, 10), 10);
  }
  // 5 more posted that nobody took yet
  for (let i = 0; i < 5; i++) addrs[i] = GUEST_GPA + 0x40000 + i * 2048;
  assert.equal(tx.postTx(addrs, lens, toks, 5), 5);
  s1.sock.close();
  await waitFor(() => !s1.b.connected, { what: '!s1.b.connected', timeout: 3000, interval: 2 });
  await s1.b.close();
  await s1.port.closeAsync();

  // the restarted switch: the frontend sends base 0 again (DPDK virtio-user server=1)
  const s2 = await switchFor(g, pool);
  assert.equal(s2.port.rxBurst(0, out, 32), 5, `the 5 waiting frames, not a broken ring: ${s2.port.status} ${s2.log.lines.join('\n')}`);
  pool.free(out, 5);
  assert.equal(s2.port.stats.drops['rx-bad-guest-chain'] ?? 0, 0);
  assert.equal(s2.b.stats.ringResyncs, 1, 'ring 1 resynced (ring 0 was never used: base 0 fits)');
  assert.ok(s2.log.lines.some((l) => /ring 1: the frontend's base 0 is not the ring's used index 300 \(avail index 305\): resuming at 300/.test(l)), s2.log.lines.join('\n'));

  // a driver that then moves its avail index 1000 past: the ring is given up, and the port says why
  const av = g.mem.bytes;
  const ai = (av[r1.avail + 2] | (av[r1.avail + 3] << 8)) + 1000;
  av[r1.avail + 2] = ai & 0xff;
  av[r1.avail + 3] = (ai >> 8) & 0xff;
  assert.equal(s2.port.rxBurst(0, out, 32), 0);
  assert.equal(s2.port.link, 'down');
  assert.match(s2.port.status, /^ring 1 \(guest TX\) marked broken: the driver's avail index \d+ is 1000 entries past ours \(305\): more than the queue size 256/);
  assert.equal(s2.port.stats.drops['rx-bad-guest-chain'], 1);
  s2.sock.close();
  await waitFor(() => !s2.b.connected, { what: '!s2.b.connected', timeout: 3000, interval: 2 });
  await s2.b.close();
  await s2.port.closeAsync();
  pool.close();
  g.close();
});

test('packed ring: where to resume is found from the descriptor flags when the base does not fit', () => {
  const SIZE = 8;
  const AV = 1 << 7;
  const US = 1 << 15;
  const ring = (flags: number[]): Uint8Array => {
    const b = new Uint8Array(16 * SIZE);
    flags.forEach((f, i) => {
      b[16 * i + 14] = f & 0xff;
      b[16 * i + 15] = f >> 8;
    });
    return b;
  };
  const used = (w: number): number => (w ? AV | US : 0);
  const avail = (w: number): number => (w ? AV : US);
  // first pass (wrap 1): slots 0-4 used by the device, 5-6 posted, 7 untouched (zero flags = "used in pass 0")
  const r = ring([used(1), used(1), used(1), used(1), used(1), avail(1), avail(1), 0]);
  assert.equal(packedResyncPoint(r, SIZE, 5 | 0x8000), null, 'the right base fits');
  assert.equal(packedResyncPoint(r, SIZE, 0x8000), 5 | 0x8000, 'a stale base 0 (behind) resyncs to slot 5');
  // nothing posted at the right base: also fits
  const e = ring([used(1), used(1), used(1), 0, 0, 0, 0, 0]);
  assert.equal(packedResyncPoint(e, SIZE, 3 | 0x8000), null);
  assert.equal(packedResyncPoint(e, SIZE, 0x8000), 3 | 0x8000);
  // second pass (wrap 0): slots 0-1 used in pass 0, 2-3 posted in pass 0, 4-7 used in pass 1
  const w = ring([used(0), used(0), avail(0), avail(0), used(1), used(1), used(1), used(1)]);
  assert.equal(packedResyncPoint(w, SIZE, 2), null);
  assert.equal(packedResyncPoint(w, SIZE, 0x8000), 2, 'resumes at slot 2 with wrap 0');
  // everything used in pass 1: the device resumes at slot 0, wrap 0
  const all = ring(Array(SIZE).fill(used(1)));
  assert.equal(packedResyncPoint(all, SIZE, 0x8000 | 4), 0);
  // posted across the wrap: slots 6-7 in pass 1 and 0-1 in pass 0 waiting, the device stopped at 6
  const x = ring([avail(0), avail(0), used(1), used(1), used(1), used(1), avail(1), avail(1)]);
  assert.equal(packedResyncPoint(x, SIZE, 6 | 0x8000), null);
  assert.equal(packedResyncPoint(x, SIZE, 2 | 0x8000), 6 | 0x8000);
});
