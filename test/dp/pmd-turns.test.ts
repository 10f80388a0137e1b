/**
 * The PMD thread's poll loop lets its event loop run only when something waits there (a request
 * from the main thread, counted in the mailbox word; an event on a port's control socket), or every
 * yieldMaxMs. Here yieldMaxMs is an hour, so every turn the thread makes comes from one of those:
 * a vhost-user frontend (in this thread) negotiates with the thread's vhost-user port through
 * socket events alone, requests are answered, and an idle thread polls on without turns.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { PmdThread } from '../../src/dp/pmd-thread.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { newCrossPmdRing } from '../../src/dp/cross-pmd-port.js';
import { waitFor } from '../harness/wait.js';

test('an idle PMD thread turns its event loop only for requests and control-socket events', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-turns-'));
  const pool = Mempool.create({ count: 1024 });
  const logs: string[] = [];
  const pmd = new PmdThread(
    { id: 0, pool: pool.attachInfo(), yieldMaxMs: 3_600_000 },
    { upcalls: () => {}, portEvent: () => {}, log: (level, msg) => logs.push(`${level} ${msg}`), exit: () => {} },
  );
  let fe: VirtioUserPort | null = null;
  t.after(async () => {
    fe?.close();
    await pmd.stop();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const sock = path.join(dir, 'v.sock');
  // a request: served at the slice's end through the mailbox
  const info = await pmd.addPort(1, { name: 'v', type: 'vhost-user', path: sock });
  assert.equal(info.link, 'down');

  // the whole vhost-user negotiation (a dozen messages, several waiting for a reply) with no request
  // to the thread meanwhile: only the socket's readiness makes it turn
  const before = (await pmd.stats()).loopTurns;
  fe = new VirtioUserPort({ path: sock });
  await waitFor(() => fe!.link === 'up', { what: `frontend link up (logs: ${logs.join('; ')})`, timeout: 10000 });
  const s1 = await pmd.stats();
  assert.ok(s1.loopTurns > before + 1, `the negotiation made turns (${s1.loopTurns - before})`);
  const ports = await pmd.ports();
  assert.equal(ports.find((p) => p.portNo === 1)?.link, 'up');

  // idle: the loop runs hundreds of slices (the board is published from it every 10 ms) with no turn
  // but the one that serves the next request
  const t1 = pmd.board.read().publishedMs;
  const i1 = pmd.board.read().pmd.iterations;
  await waitFor(() => pmd.board.read().publishedMs - t1 >= 300, { what: 'board published 300 ms later', timeout: 10000 });
  const s2 = await pmd.stats();
  assert.ok(pmd.board.read().pmd.iterations > i1, 'the loop polled meanwhile');
  assert.ok(s2.loopTurns - s1.loopTurns <= 3, `turns while idle: ${s2.loopTurns - s1.loopTurns} (one per request expected)`);
});

test('a vhost-user reply that waits for another PMD thread to let go of the rings comes without waiting for the safety interval', async (t) => {
  // found in review: after a port move, the port's protocol side stays on thread A while thread B runs
  // its rings; GET_VRING_BASE revokes and waits (Atomics.waitAsync, resolved on A's event loop) for B
  // to detach. Nothing of that is a request or a socket event, so A turned its loop only at yieldMaxMs.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-turns-'));
  const pool = Mempool.create({ count: 2048 });
  const hour = 3_600_000;
  let pmd1: PmdThread | null = null;
  const events = (id: number): ConstructorParameters<typeof PmdThread>[1] => ({
    upcalls: () => {},
    portEvent: () => {},
    log: () => {},
    exit: () => {},
    dataPath: (m) => {
      if (id === 0) void pmd1!.setDataPath(m.port, m.desc);
    },
  });
  const pmd0 = new PmdThread({ id: 0, pool: pool.attachInfo(), yieldMaxMs: hour }, events(0));
  pmd1 = new PmdThread({ id: 1, pool: pool.attachInfo(), yieldMaxMs: hour }, events(1));
  let fe: VirtioUserPort | null = null;
  t.after(async () => {
    fe?.close();
    await pmd0.stop();
    await pmd1!.stop();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const sock = path.join(dir, 'v.sock');
  await pmd0.addPort(1, { name: 'v', type: 'vhost-user', path: sock });
  fe = new VirtioUserPort({ path: sock, queues: 1 });
  await waitFor(() => fe!.link === 'up', { what: 'frontend link up', timeout: 10000 });
  const ring = newCrossPmdRing();
  const rel = await pmd0.releasePort(1, ring.bytes);
  rel.sources.push({ from: 0, ring: ring.bytes });
  await pmd1.adoptPort(1, 'v', rel);
  await waitFor(async () => (await pmd1!.ports()).find((p) => p.portNo === 1)?.link === 'up', { what: 'moved port up on thread 1', timeout: 10000 });
  const f = fe.frontend as unknown as { ask(gen: number, req: number, body: Uint8Array): Promise<unknown>; gen: number };
  const st = new Uint8Array(8);
  for (const q of [0, 1]) {
    new DataView(st.buffer).setUint32(0, q, true);
    let answered = false;
    void f.ask(f.gen, 11 /* GET_VRING_BASE */, st).then(() => {
      answered = true;
    });
    await waitFor(() => answered, { what: `GET_VRING_BASE for ring ${q} of the moved port answered`, timeout: 10000 });
  }
});
