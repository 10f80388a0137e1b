/**
 * The slow path's flow records (src/daemon/ukeys.ts) through the exception
 * path in one thread, in the rig bench/micro/upcall.ts measures (upcalls and
 * answers through the upcall channel): a flow set up by an upcall is not
 * translated again by the next pass (its ukey holds the
 * translation), its hits are credited to the rules exactly once, a rule change
 * made while flows are being set up makes every pass-checked flow stale (no
 * stale flow survives), and records of flows that left the datapath are freed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { upcallRig } from '../../bench/micro/upcall.js';

const rig = (nFlows: number): ReturnType<typeof upcallRig> => upcallRig(nFlows, 4096);

test('flows set up by upcalls keep their translation; hits credited once; rule change mid-setup leaves no stale flow; gone flows freed', () => {
  const N = 512;
  const r = rig(N);
  r.send(N);
  assert.equal(r.dp.flowCount, N, 'one megaflow per source address');
  assert.equal(r.br.ukeys.count, N);
  assert.equal(r.received(), N, 'every held packet went out');
  // the first pass takes every flow's upcall translation: none is translated again
  assert.deepEqual(r.pass(), { gone: [], translated: 0 });
  // hits through the datapath are credited to the rule once, across passes
  r.send(N * 3);
  const rule = r.br.tables.rules().find((x) => x.priority === 1 && x.match.mask[0] !== 0 && x.actions[0]?.type === 'output')!;
  assert.equal(r.pass().translated, 0);
  assert.equal(r.pass().translated, 0);
  assert.equal(rule.nPackets, N * 4, 'N upcalls + 3N datapath hits, each counted once');
  // a rule change while new flows are being set up: every flow is checked again and those it changes go
  const r2 = rig(N);
  r2.send(N / 2);
  r2.br.addFlow('priority=5,in_port=1,actions=drop', r2.resolve);
  r2.send(N / 2);
  const p = r2.pass();
  assert.equal(p.translated, N / 2, 'flows translated before the change are translated again, the ones after it are not');
  assert.equal(p.gone.length, N / 2, 'and they are stale (output -> drop)');
  assert.equal(r2.dp.flowCount, N / 2);
  assert.equal(r2.br.ukeys.count, N / 2, 'their records are freed');
  // flows that leave the datapath by other means (idle expiry, flush): records freed by the next pass
  r2.dp.flushFlows();
  r2.pass();
  assert.equal(r2.br.ukeys.count, 0);
  r.close();
  r2.close();
});
