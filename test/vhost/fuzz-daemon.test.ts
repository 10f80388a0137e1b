/**
 * 30 seconds of `npm run fuzz` (bench/fuzz.ts) in the suite: random, header-level and mutated-session
 * vhost-user messages with fds from this process against a real daemon's port, while two witness
 * frontends on other ports of the same switch must keep exchanging frames (checked every 2 s).
 * The daemon must not crash; its fds must come back to where they were, its RSS stay bounded, its
 * packet pool be full again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz } from '../../bench/fuzz.js';

test('fuzz the daemon for 30 s over real sockets: no crash, other ports keep forwarding, fds and pool back, RSS bounded', { timeout: 120_000 }, async (t) => {
  const r = await runFuzz({ seconds: 30 });
  t.diagnostic(JSON.stringify(r));
  assert.equal(r.daemonCrashed, false);
  assert.ok(r.messages > 2000 && r.connections > 200, `enough was thrown: ${JSON.stringify(r)}`);
  assert.ok(r.byKind.random > 0 && r.byKind.header > 0 && r.byKind.session > 0);
  assert.ok(r.witnessChecks >= 5, `witnesses checked along the way: ${r.witnessChecks}`);
  assert.deepEqual(r.witnessFailures, []);
  assert.equal(r.fdsEnd, r.fdsStart, `daemon fds back to where they were: ${r.fdsStart} -> ${r.fdsEnd}`);
  assert.equal(r.poolAvailable, r.poolCount, 'every packet buffer back in the pool');
  // RSS: guest memory of a live session is mapped (1 MiB here) and V8 grows its heap spaces in
  // steps; what must not happen is growth per connection (it was 8 KiB each): bound 16 MiB.
  assert.ok(r.rssEndKiB - r.rssStartKiB < 16 * 1024, `daemon RSS ${r.rssStartKiB} -> ${r.rssEndKiB} KiB`);
});
