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
