/**
 * 30 seconds of `npm run soak` (bench/soak.ts) in the suite: a DPDK testpmd io loop through two
 * vhost-user ports of a real daemon while a third port is added and removed (with a frontend
 * attaching to it) and rules change every second. Traffic must never stall, no control request may
 * fail, and from the end of a warm-up (63 churn steps back to back, then 2 s at the measured pace) to
 * the end: the live V8 heap of the main and of the PMD thread (after full GC, `tsvs memory --gc`)
 * within 5% or 1 MiB, the RSS without shared memory within 5%, the daemon's fds unchanged; once
 * testpmd has left, every packet buffer is back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak } from '../../bench/soak.js';

test('soak 30 s: testpmd io loop with port and rule churn every second; heap, RSS, fds flat, pool full, no stall', { timeout: 180_000 }, async (t) => {
  const r = await runSoak({ seconds: 25, warmupSeconds: 2 });
  t.diagnostic(JSON.stringify({ ...r, samples: undefined }));
  assert.equal(r.daemonCrashed, false);
  assert.ok(r.churn.portsAdded >= 10 && r.churn.portsRemoved >= 10 && r.churn.frontendsAttached >= 10, `churn happened: ${JSON.stringify(r.churn)}`);
  assert.ok(r.framesForwarded > 100_000, `the loop forwarded: ${r.framesForwarded} frames`);
  assert.deepEqual(r.problems, []);
});
