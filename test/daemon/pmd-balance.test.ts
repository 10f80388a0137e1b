/** The rx-queue balancing dry run (pure logic; the daemon test pmd-rebalance runs it with real peers). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { autoLbDecision, loadsBetween, planRebalance, AUTO_LB_DEFAULTS, type LoadSample, type RxqLoad } from '../../src/daemon/pmd-balance.js';

const q = (port: number, pmd: number, load: number, movable = true): RxqLoad => ({ port, name: `p${port}`, queue: 0, pmd, load, rxPackets: 0, movable });

test('heaviest first to the least loaded thread; even placements stay', () => {
  const plan = planRebalance([q(1, 0, 0.6), q(3, 0, 0.35), q(2, 1, 0), q(4, 1, 0)], [0, 1]);
  assert.deepEqual(plan.moves.map((m) => [m.name, m.from, m.to]), [['p3', 0, 1]]);
  assert.ok(Math.abs(plan.after.get(0)! - 0.6) < 1e-9 && Math.abs(plan.after.get(1)! - 0.35) < 1e-9);
  assert.ok(plan.improvement > 90, String(plan.improvement));
  // applying the plan and planning again moves nothing
  const again = planRebalance([q(1, 0, 0.6), q(3, 1, 0.35), q(2, 1, 0), q(4, 1, 0)], [0, 1]);
  assert.deepEqual(again.moves, []);
});

test('ports that cannot move count where they are', () => {
  const plan = planRebalance([q(1, 0, 0.5, false), q(2, 0, 0.4), q(3, 1, 0.1)], [0, 1]);
  assert.deepEqual(plan.moves.map((m) => m.name), ['p2']);
});

test('loads: a queue measured from where it arrived; auto-lb thresholds', () => {
  const s = (t: number, p0: [number, number], p1: [number, number], rx: [number, number, number][]): LoadSample => ({
    t,
    pmds: new Map([[0, { totalNs: p0[0], busyNs: p0[1] }], [1, { totalNs: p1[0], busyNs: p1[1] }]]),
    rxqs: rx.map(([port, pmd, busyNs]) => ({ port, name: `p${port}`, queue: 0, pmd, busyNs, rxPackets: 0, movable: true })),
  });
  const a = s(0, [1e9, 9e8], [1e9, 0], [[1, 0, 5e8], [3, 0, 4e8]]);
  const b = s(1000, [2e9, 1.9e9], [2e9, 1e8], [[1, 0, 1e9], [3, 1, 1e8]]);
  const { rxqs, pmdBusy } = loadsBetween(a, b);
  assert.equal(rxqs.find((r) => r.port === 1)!.load, 0.5);
  assert.equal(rxqs.find((r) => r.port === 3)!.load, 0.05, 'moved in the window: since it arrived on pmd 1 (its busy time over the thread time)');
  assert.equal(pmdBusy.get(0), 1);
  const plan = planRebalance([q(1, 0, 0.6), q(3, 0, 0.35), q(2, 1, 0)], [0, 1]);
  const on = { ...AUTO_LB_DEFAULTS, enabled: true, loadThreshold: 90 };
  assert.equal(autoLbDecision(on, [pmdBusy, pmdBusy], plan).go, true);
  assert.equal(autoLbDecision({ ...on, loadThreshold: 100.1 }, [pmdBusy], plan).go, false);
  assert.equal(autoLbDecision({ ...on, improvementThreshold: 100 }, [pmdBusy], plan).go, false);
  assert.equal(autoLbDecision({ ...on, enabled: false }, [pmdBusy], plan).go, false);
});
