/**
 * Moving a vhost-user port between two PMD threads' datapaths (PortMover, what
 * pmd-rxq-rebalance does), here both datapaths in one thread so that every
 * frame can be followed: a virtio-user frontend sends numbered frames into the
 * port (port 1 -> ring port 2) and receives numbered frames from ring port 2
 * (2 -> 1) while the port moves away from its owner thread and back, with
 * frames in the guest rings and in the cross-thread rings at each move. Both
 * directions: every frame once, in order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { RingPort } from '../../src/port/ring-port.js';
import { Datapath } from '../../src/dp/datapath.js';
import { PortMover } from '../../src/dp/port-move.js';
import { CrossPmdTxPort, newCrossPmdRing } from '../../src/dp/cross-pmd-port.js';
import { FLOW_WORDS, W_IN_PORT } from '../../src/dp/flow-key.js';
import { OP_OUTPUT } from '../../src/dp/actions.js';
import { TrafficGen, frameSeq } from '../../src/app/traffic.js';
import { waitFor } from '../harness/wait.js';

test('a vhost-user port moves between PMD datapaths and back: every frame once, in order, both ways', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-move-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pool = Mempool.create({ count: 8192 });
  const sock = path.join(dir, 'v.sock');
  const owner = new VhostUserPort({ name: 'v', path: sock, mempool: pool });
  const fe = new VirtioUserPort({ path: sock });
  const ring = RingPort.create('r', pool, 1024);
  const ringPeer = RingPort.attach(ring.attachInfo(), pool);
  t.after(async () => {
    fe.close();
    await owner.closeAsync();
    pool.close();
  });
  await waitFor(() => owner.link === 'up', { what: 'vhost-user link up', timeout: 10000 });
  await fe.waitUp();

  // thread 0 owns port 1 (vhost-user) and port 2 (ring); thread 1 reaches both through rings, as the switch wires them
  const sink = { upcall: () => assert.fail('no misses: flows are installed') };
  const dps = [new Datapath(pool, sink), new Datapath(pool, sink)];
  dps[0].addPort(1, owner);
  dps[0].addPort(2, ring);
  for (const [no, name] of [[1, 'v'], [2, 'r']] as const) {
    const r = newCrossPmdRing();
    dps[1].addPort(no, new CrossPmdTxPort(name, r.bytes));
    dps[0].addTxSource(no, r.bytes, 1);
  }
  const m1 = new Uint32Array(FLOW_WORDS);
  m1[W_IN_PORT] = 0xffffffff;
  for (const dp of dps) {
    const k = new Uint32Array(FLOW_WORDS);
    k[W_IN_PORT] = 1;
    dp.installFlow(k, m1, Int32Array.from([OP_OUTPUT, 2]));
    k[W_IN_PORT] = 2;
    dp.installFlow(k, m1, Int32Array.from([OP_OUTPUT, 1]));
  }
  const movers = [new PortMover(dps[0], pool, 0), new PortMover(dps[1], pool, 1)];
  let at = 0;
  const move = (): void => {
    const to = 1 - at;
    const r = newCrossPmdRing();
    const rel = movers[at].release(1, r.bytes, () => undefined);
    rel.sources.push({ from: at, ring: r.bytes });
    movers[to].adopt(1, 'v', rel);
    at = to;
  };

  const up = new TrafficGen({ size: 64 }); // guest -> port 1 -> ring
  const down = new TrafficGen({ size: 64 }); // ring -> port 2 -> port 1 -> guest
  const bufs = new Int32Array(32);
  const gotUp: number[] = [];
  const gotDown: number[] = [];
  let sentUp = 0;
  let sentDown = 0;
  const sendUp = (n: number): void => {
    const k = fe.pool.alloc(bufs, n);
    for (let i = 0; i < k; i++) up.fill(fe.pool, bufs[i]);
    const s = fe.txBurst(0, bufs, k);
    if (s < k) fe.pool.free(bufs, k - s, s);
    sentUp += s;
  };
  const sendDown = (n: number): void => {
    const k = pool.alloc(bufs, n);
    for (let i = 0; i < k; i++) down.fill(pool, bufs[i]);
    const s = ringPeer.txBurst(0, bufs, k);
    if (s < k) pool.free(bufs, k - s, s);
    sentDown += s;
  };
  const collect = (): void => {
    for (let n; (n = ringPeer.rxBurst(0, bufs, 32)) > 0; pool.free(bufs, n)) for (let i = 0; i < n; i++) gotUp.push(frameSeq(pool.data, pool.dataOffset(bufs[i])));
    for (let n; (n = fe.rxBurst(0, bufs, 32)) > 0; fe.pool.free(bufs, n)) for (let i = 0; i < n; i++) gotDown.push(frameSeq(fe.pool.data, fe.pool.dataOffset(bufs[i])));
  };
  // the thread that does not poll port 2 sends to port 1 too: an extra source of frames for the guest
  // would need a second ring port; thread 1's traffic to port 1 is what comes through port 2 once the port moved
  const poll = (passes: number): void => {
    for (let i = 0; i < passes; i++) {
      dps[0].pollOnce();
      dps[1].pollOnce();
    }
  };

  for (let round = 0; round < 6; round++) {
    for (let b = 0; b < 20; b++) {
      sendUp(32);
      sendDown(32);
      poll(1);
      collect();
    }
    // frames in the guest's ring and on the ring port when the port changes threads
    sendUp(32);
    sendDown(32);
    move();
  }
  assert.equal(at, 0, 'moved away and back three times');
  for (let i = 0; i < 200 && (gotUp.length < sentUp || gotDown.length < sentDown); i++) {
    poll(2);
    collect();
  }
  assert.ok(sentUp > 3000 && sentDown > 3000, `traffic ran: ${sentUp} ${sentDown}`);
  assert.equal(gotUp.length, sentUp, 'guest -> ring: every frame');
  assert.deepEqual(gotUp, Array.from({ length: sentUp }, (_, i) => i), 'guest -> ring: once each, in order');
  assert.equal(gotDown.length, sentDown, 'ring -> guest: every frame');
  assert.deepEqual(gotDown, Array.from({ length: sentDown }, (_, i) => i), 'ring -> guest: once each, in order');
  const st = owner.stats;
  assert.equal(st.rxPackets, sentUp, 'counters moved with the polling and came back');
  assert.equal(st.txPackets, sentDown);
  for (const dp of dps) assert.deepEqual(dp.stats.drops, {}, 'no drops');
});
