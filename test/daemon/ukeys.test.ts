/**
 * The slow path's flow records (src/daemon/ukeys.ts) through the exception
 * path in one thread, as bench/micro/upcall.ts runs it: a flow set up by an
 * upcall is not translated again by the next pass (its ukey holds the
 * translation), its hits are credited to the rules exactly once, a rule change
 * made while flows are being set up makes every pass-checked flow stale (no
 * stale flow survives), and records of flows that left the datapath are freed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mempool } from '../../src/mem/mempool.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath } from '../../src/dp/datapath.js';
import { FLOW_WORDS } from '../../src/dp/flow-key.js';
import { UpcallBatcher, UpcallAnswerBuilder, applyUpcallAnswer } from '../../src/dp/upcall-batch.js';
import { TrafficGen } from '../../src/app/traffic.js';
import { Bridge } from '../../src/daemon/bridge.js';
import { translateUpcalls } from '../../src/daemon/upcall-handler.js';

const RULES = ['priority=10,ip,nw_src=203.0.113.9,actions=drop', 'priority=1,in_port=1,actions=output:2', 'priority=1,in_port=2,actions=drop'];

function rig(nFlows: number) {
  const pool = Mempool.create({ count: 4096 });
  const a = RingPort.create('a', pool, 1024);
  const b = RingPort.create('b', pool, 1024);
  const peerA = RingPort.attach(a.attachInfo(), pool);
  const peerB = RingPort.attach(b.attachInfo(), pool);
  const batcher = new UpcallBatcher(0);
  const dp = new Datapath(pool, { upcall: (id, port, frame, key) => batcher.add(id, port, frame, key) });
  dp.addPort(1, a);
  dp.addPort(2, b);
  const br = new Bridge('br0');
  br.ports.set(1, 'a');
  br.ports.set(2, 'b');
  const resolve = (n: string): number | undefined => ({ a: 1, b: 2 })[n];
  for (const f of RULES) br.addFlow(f, resolve);
  const out = new UpcallAnswerBuilder(64);
  const gen = new TrafficGen({ size: 64, flows: nFlows });
  const bufs = new Int32Array(32);
  let received = 0;
  const hooks = { bridgeOf: (p: number) => (p === 1 || p === 2 ? br : undefined), xlateError: () => undefined, packetIns: () => undefined };
  /** Offer `packets` frames (bursts of 32); upcalls answered after every 4 bursts. */
  const send = (packets: number): void => {
    for (let sent = 0; sent < packets;) {
      for (let k = 0; k < 4 && sent < packets; k++) {
        const n = pool.alloc(bufs, Math.min(32, packets - sent));
        for (let i = 0; i < n; i++) gen.fill(pool, bufs[i]);
        const s = peerA.txBurst(0, bufs, n);
        if (s < n) pool.free(bufs, n - s, s);
        sent += n;
        dp.pollOnce();
      }
      if (batcher.count > 0) {
        translateUpcalls(batcher.take().batch, out, Date.now(), hooks);
        applyUpcallAnswer(dp, out.build().answer, (e) => { throw e; });
        dp.pollOnce();
      }
      for (;;) {
        const r = peerB.rxBurst(0, bufs, 32);
        if (r === 0) break;
        received += r;
        pool.free(bufs, r);
      }
    }
  };
  /** One revalidation pass as Switch.revalidatePass: ids of flows that no longer stand, and how many were translated in full. */
  const pass = (): { gone: number[]; translated: number } => {
    const sig = br.xlateSig();
    br.beginPass();
    const fl = dp.dumpFlowsPacked();
    const gone: number[] = [];
    let translated = 0;
    for (let i = 0; i < fl.ids.length; i++) {
      const ko = i * FLOW_WORDS;
      const r = br.revalidate(fl.keys, ko, fl.masks, ko, Date.now(), fl.packets[i], fl.bytes[i], fl.xids[i], fl.ids[i], sig);
      if (r === null) continue;
      translated++;
      let same = r.actions.length === fl.actOff[i + 1] - fl.actOff[i];
      for (let j = 0; same && j < FLOW_WORDS; j++) same = r.mask[j] === fl.masks[ko + j];
      for (let j = 0; same && j < r.actions.length; j++) same = r.actions[j] === fl.acts[fl.actOff[i] + j];
      if (!same) {
        gone.push(fl.ids[i]);
        br.forgetFlow(fl.xids[i], fl.ids[i]);
        dp.removeFlow(fl.ids[i]);
      }
    }
    br.endPass();
    return { gone, translated };
  };
  return { dp, br, send, pass, resolve, received: () => received, close: () => { a.close(); b.close(); } };
}

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
