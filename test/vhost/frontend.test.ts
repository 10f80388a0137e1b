/**
 * virtio-user frontend (VirtioUserPort + VhostUserFrontend) against the real
 * DPDK vhost-user backend: dpdk-testpmd with net_vhost. A missing
 * dpdk-testpmd fails these tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VirtioUserPort, type VirtioUserOptions } from '../../src/port/virtio-user.js';
import { setAffinity } from '../../src/sys/libc.js';
import { Testpmd, type TestpmdOptions } from '../harness/dpdk.js';
import { fillFrame, checkFrame, pollUntil } from '../fixtures/frontend-traffic.js';
import { waitFor } from '../harness/wait.js';

// Our polling loop on CPU 1, testpmd's forwarding lcore on CPU 0 (docs/interop.md#dpdk-2211: main and forwarding lcore on different CPUs).
try {
  setAffinity([1]);
} catch {
  /* single-CPU machine: run anyway */
}

const DST = new Uint8Array([0x02, 0, 0, 0, 0, 0x02]);
const sizeOf = (seq: number): number => 60 + ((seq * 37) % 1455);

interface Rig {
  dir: string;
  sock: string;
  tp: Testpmd;
  port: VirtioUserPort;
}

/** How the DPDK backend (testpmd with net_vhost on our socket) runs. */
interface Backend {
  mode: NonNullable<TestpmdOptions['fwdMode']>;
  queues?: number;
  /** net_vhost connects to us (we are the server). */
  client?: boolean;
  txpkts?: TestpmdOptions['txpkts'];
  /** Extra testpmd (application) arguments. */
  extra?: string[];
}

/** testpmd as the vhost-user backend (net_vhost on sock); call forward() before use. */
function backend(sock: string, b: Backend): Testpmd {
  const q = b.queues ?? 1;
  return Testpmd.start({
    vdev: `net_vhost0,iface=${sock},queues=${q}${b.client ? ',client=1' : ''}`,
    fwdMode: b.mode,
    queues: q,
    txpkts: b.txpkts,
    extraEal: ['--log-level=pmd.net.vhost,info'],
    extraArgs: ['--total-num-mbufs=16384', ...(b.extra ?? [])],
  });
}

/** Wait for testpmd's prompt, then start forwarding. */
async function forward(tp: Testpmd): Promise<void> {
  await tp.waitFor(/testpmd> /);
  await tp.run('start');
}

async function rig(
  t: { after: (fn: () => void | Promise<void>) => void },
  b: Backend,
  po: Omit<VirtioUserOptions, 'path'> = {},
): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-fe-'));
  const sock = path.join(dir, 'vhost.sock');
  let port: VirtioUserPort | null = null;
  let tp: Testpmd | null = null;
  t.after(async () => {
    port?.close();
    await tp?.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  if (b.client) {
    // DPDK connects to us: listen first
    port = new VirtioUserPort({ path: sock, server: true, ...po });
    tp = backend(sock, b);
    await forward(tp);
  } else {
    tp = backend(sock, b);
    await forward(tp);
    port = new VirtioUserPort({ path: sock, ...po });
  }
  await port.waitUp(15000);
  return { dir, sock, tp, port };
}

/** Send `total` sequenced frames on queue q of port (no receive). */
async function sendAll(port: VirtioUserPort, total: number, q = 0, size = sizeOf): Promise<{ sent: number; bytes: number }> {
  const h = new Int32Array(32);
  let sent = 0;
  let bytes = 0;
  const done = await pollUntil(() => {
    const k = port.pool.alloc(h, Math.min(32, total - sent));
    for (let i = 0; i < k; i++) fillFrame(port.pool, h[i], sent + i, size(sent + i), DST, port.mac);
    const n = port.txBurst(q, h, k);
    for (let i = 0; i < n; i++) bytes += size(sent + i);
    if (n < k) port.pool.free(h, k - n, n);
    sent += n;
    return sent >= total;
  }, 30000);
  assert.ok(done, `sent only ${sent}/${total} (${port.status})`);
  // let the backend consume everything we posted
  assert.ok(await pollUntil(() => port.txInFlight(q) === 0, 10000), 'backend did not drain our TX ring');
  return { sent, bytes };
}

/**
 * Loop test: send `total` frames per queue with at most `window` outstanding,
 * receive them back, check order, sequence and payload. Returns frames received.
 */
async function loop(port: VirtioUserPort, total: number, queues: number, check: (h: number, q: number) => void): Promise<number[]> {
  const window = 96;
  const h = new Int32Array(32);
  const rx = new Int32Array(32);
  const sent = new Array<number>(queues).fill(0);
  const got = new Array<number>(queues).fill(0);
  const errors: string[] = [];
  const done = await pollUntil(() => {
    let finished = true;
    for (let q = 0; q < queues; q++) {
      const room = Math.min(32, total - sent[q], window - (sent[q] - got[q]));
      if (room > 0) {
        const k = port.pool.alloc(h, room);
        for (let i = 0; i < k; i++) fillFrame(port.pool, h[i], sent[q] + i, sizeOf(sent[q] + i), DST, port.mac);
        const n = port.txBurst(q, h, k);
        if (n < k) port.pool.free(h, k - n, n);
        sent[q] += n;
      }
      const r = port.rxBurst(q, rx, 32);
      for (let i = 0; i < r; i++) {
        const seq = checkFrame(port.pool, rx[i]);
        if (seq !== got[q] && errors.length < 5) errors.push(`queue ${q}: expected seq ${got[q]}, got ${seq} (len ${port.pool.dataLen[rx[i]]})`);
        check(rx[i], q);
        got[q]++;
      }
      if (r > 0) port.pool.free(rx, r);
      if (got[q] < total) finished = false;
    }
    return finished || errors.length > 0;
  }, 30000);
  assert.deepEqual(errors, []);
  assert.ok(done, `loop: sent ${sent}, got back ${got} of ${total} (${port.status}, drops ${JSON.stringify(port.stats.drops)})`);
  return got;
}

/**
 * After the sender stopped: keep calling rxOnce (one receive burst; returns
 * how many frames it got) until 2000 calls in a row get nothing, 5 s at most.
 */
async function drain(rxOnce: () => number): Promise<void> {
  let idle = 0;
  await pollUntil(() => {
    idle = rxOnce() === 0 ? idle + 1 : 0;
    return idle > 2000;
  }, 5000);
}

test('virtio-user txonly -> DPDK net_vhost rxonly: every frame arrives with its size', async (t) => {
  const r = await rig(t, { mode: 'rxonly' });
  const cfg = r.port.frontend.negotiated!;
  assert.equal(cfg.packed, false);
  assert.equal(cfg.hdrLen, 12);
  assert.equal(r.port.link, 'up');
  const total = 20000;
  const { sent, bytes } = await sendAll(r.port, total);
  await waitFor(async () => (await r.tp.portStats()).rxPackets >= sent, { what: `testpmd received all ${sent} frames`, timeout: 5000 });
  const fwd = await r.tp.stopForwarding();
  const nic = await r.tp.portStats();
  assert.equal(fwd.rxPackets, sent);
  assert.equal(nic.rxPackets, sent);
  assert.equal(nic.rxBytes, bytes, 'byte count (= frame sizes as sent)');
  assert.equal(r.port.stats.txPackets, sent);
  assert.equal(r.port.stats.txBytes, bytes);
  await r.tp.quit(5000);
  // the backend left: link down, every buffer back in the pool
  assert.ok(await pollUntil(() => r.port.link === 'down', 5000), 'link down after the backend quit');
  assert.equal(r.port.pool.available(), r.port.pool.count, 'all buffers back in the pool');
});

test('DPDK net_vhost txonly -> virtio-user rxonly: we count what it sent, frames of the size asked', async (t) => {
  const r = await rig(t, { mode: 'txonly', txpkts: 200 }, { mrgRxbuf: false });
  assert.equal(r.port.frontend.negotiated!.hdrLen, 12, 'VERSION_1 header even without MRG_RXBUF');
  const rx = new Int32Array(32);
  let got = 0;
  let badLen = 0;
  const step = (): number => {
    const n = r.port.rxBurst(0, rx, 32);
    for (let i = 0; i < n; i++) if (r.port.pool.dataLen[rx[i]] !== 200 || r.port.pool.next[rx[i]] !== -1) badLen++;
    if (n > 0) r.port.pool.free(rx, n);
    got += n;
    return n;
  };
  await pollUntil(() => (step(), got >= 20000), 15000);
  const fwd = await r.tp.stopForwarding();
  // drain what is still in our ring after testpmd stopped
  await drain(step);
  assert.ok(fwd.txPackets > 0, 'testpmd sent something');
  assert.equal(got, fwd.txPackets, `received ${got}, testpmd sent ${fwd.txPackets} (dropped ${fwd.txDropped})`);
  assert.equal(badLen, 0, 'every frame is 200 bytes');
  assert.equal(r.port.stats.rxPackets, got);
  assert.equal(r.port.stats.rxBytes, got * 200);
});

test('io forward through DPDK net_vhost: sequence and payload intact end to end (split)', async (t) => {
  const r = await rig(t, { mode: 'io' });
  const got = await loop(r.port, 10000, 1, () => undefined);
  assert.equal(got[0], 10000);
  assert.equal(r.port.stats.rxDropped, 0);
});

test('macswap through DPDK net_vhost with packed rings', async (t) => {
  const r = await rig(t, { mode: 'macswap' }, { packed: true });
  assert.equal(r.port.frontend.negotiated!.packed, true, 'packed ring negotiated');
  const pool = r.port.pool;
  let badMac = 0;
  await loop(r.port, 10000, 1, (h) => {
    const o = pool.dataOffset(h);
    for (let i = 0; i < 6; i++) {
      if (pool.data[o + i] !== r.port.mac[i] || pool.data[o + 6 + i] !== DST[i]) {
        badMac++;
        break;
      }
    }
  });
  assert.equal(badMac, 0, 'MACs swapped by testpmd');
});

test('two queue pairs through DPDK net_vhost (io forward)', async (t) => {
  const r = await rig(t, { mode: 'io', queues: 2 }, { queues: 2 });
  const cfg = r.port.frontend.negotiated!;
  assert.equal(cfg.queuePairs, 2);
  assert.equal(r.port.nQueues, 2);
  const got = await loop(r.port, 5000, 2, () => undefined);
  assert.deepEqual(got, [5000, 5000]);
});

test('we listen (server), DPDK net_vhost connects as client; it reconnects after a restart with fresh rings', async (t) => {
  const r = await rig(t, { mode: 'io', client: true }, { packed: true });
  await loop(r.port, 3000, 1, () => undefined);
  assert.equal(r.port.frontend.connects, 1);
  await r.tp.quit(5000);
  assert.ok(await pollUntil(() => r.port.link === 'down', 5000), 'link down after testpmd quit');
  assert.equal(r.port.pool.available(), r.port.pool.count, 'every buffer back in the pool');
  // a new testpmd connects to our socket again
  const tp2 = backend(r.sock, { mode: 'io', client: true });
  t.after(() => tp2.kill());
  await forward(tp2);
  await r.port.waitUp(15000);
  assert.equal(r.port.frontend.connects, 2);
  await loop(r.port, 3000, 1, () => undefined);
});

test('client mode: backend restarts, we retry with backoff and renegotiate', async (t) => {
  const r = await rig(t, { mode: 'io' }, { reconnectMinMs: 20, reconnectMaxMs: 200 });
  await loop(r.port, 2000, 1, () => undefined);
  await r.tp.quit(5000);
  assert.ok(await pollUntil(() => r.port.link === 'down', 5000), 'link down');
  assert.equal(r.port.pool.available(), r.port.pool.count, 'every buffer back in the pool');
  // tx while down: refused and counted
  const h = new Int32Array(1);
  assert.equal(r.port.pool.alloc(h, 1), 1);
  assert.equal(r.port.txBurst(0, h, 1), 0);
  r.port.pool.free(h, 1);
  assert.equal(r.port.stats.drops['tx-link-down'], 1);
  await waitFor(() => /^connect .* failed/.test(r.port.frontend.lastError), {
    what: 'a failed reconnect attempt while no backend listens',
    describe: () => r.port.frontend.lastError,
  });
  const tp2 = backend(r.sock, { mode: 'io' });
  t.after(() => tp2.kill());
  await forward(tp2);
  await r.port.waitUp(15000);
  assert.equal(r.port.frontend.connects, 2);
  await loop(r.port, 2000, 1, () => undefined);
});

test('MRG_RXBUF: 3000-byte frames from DPDK arrive as buffer chains with the right length', async (t) => {
  // two-segment 3000-byte frames from testpmd txonly; each of our buffers holds 2048 bytes
  const r = await rig(t, { mode: 'txonly', txpkts: [2000, 1000], extra: ['--mbuf-size=2176', '--max-pkt-len=9000'] }, { packed: true });
  assert.ok((r.port.frontend.negotiated!.features & (1n << 15n)) !== 0n, 'MRG_RXBUF negotiated');
  const pool = r.port.pool;
  const rx = new Int32Array(32);
  let got = 0;
  let bad = 0;
  const step = (): number => {
    const n = r.port.rxBurst(0, rx, 32);
    for (let i = 0; i < n; i++) {
      const h = rx[i];
      let segs = 0;
      let sum = 0;
      for (let s = h; s !== -1; s = pool.next[s]) {
        segs++;
        sum += pool.dataLen[s];
      }
      if (pool.pktLen[h] !== 3000 || sum !== 3000 || segs !== 2) bad++;
    }
    if (n > 0) pool.free(rx, n);
    got += n;
    return n;
  };
  await pollUntil(() => (step(), got >= 5000), 15000);
  const fwd = await r.tp.stopForwarding();
  await drain(step);
  assert.ok(got > 0, 'received chained frames');
  assert.equal(got, fwd.txPackets);
  assert.equal(bad, 0, 'every frame: 2 segments, 3000 bytes');
  assert.equal(r.port.stats.rxBytes, got * 3000);
});

test('a backend that never answers: reply timeout, connection dropped, retried; no fd leak after close', async (t) => {
  const { UnixListener } = await import('../../src/sys/socket.js');
  const { watchReadable } = await import('../../src/sys/poll.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-fe-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'mute.sock');
  const fdsBefore = fs.readdirSync('/proc/self/fd').length;
  const lst = UnixListener.listen(sock);
  let accepted = 0;
  const conns: { close(): void }[] = [];
  const w = watchReadable(lst.fd, () => {
    for (let s = lst.accept(); s; s = lst.accept()) {
      accepted++;
      conns.push(s); // read nothing, answer nothing
    }
  });
  const port = new VirtioUserPort({ path: sock, reconnectMinMs: 10, reconnectMaxMs: 50, replyTimeoutMs: 150, poolSize: 1024 });
  try {
    assert.ok(await pollUntil(() => accepted >= 2, 5000), `frontend retried (accepted ${accepted})`);
    assert.match(port.frontend.lastError, /no reply|closed/);
    assert.equal(port.link, 'down');
  } finally {
    port.close();
    w.close();
    for (const c of conns) c.close();
    lst.close();
  }
  assert.equal(port.frontend.state, 'closed');
  assert.equal(fs.readdirSync('/proc/self/fd').length, fdsBefore, 'every fd closed');
});

test('IN_ORDER + INDIRECT_DESC negotiated with DPDK net_vhost (io forward, split)', async (t) => {
  const r = await rig(t, { mode: 'io' }, { inOrder: true, indirect: true });
  const f = r.port.frontend.negotiated!.features;
  assert.ok((f & (1n << 35n)) !== 0n, 'IN_ORDER negotiated');
  assert.ok((f & (1n << 28n)) !== 0n, 'INDIRECT_DESC negotiated');
  const got = await loop(r.port, 5000, 1, () => undefined);
  assert.equal(got[0], 5000);
});

test('IN_ORDER with packed rings (DPDK batches used descriptors)', async (t) => {
  const r = await rig(t, { mode: 'io' }, { inOrder: true, packed: true });
  const f = r.port.frontend.negotiated!.features;
  assert.ok((f & (1n << 35n)) !== 0n && r.port.frontend.negotiated!.packed, 'packed + IN_ORDER negotiated');
  const got = await loop(r.port, 5000, 1, () => undefined);
  assert.equal(got[0], 5000);
});
