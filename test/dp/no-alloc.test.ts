/**
 * Hot paths must not allocate: run each one many times and count garbage
 * collections that happened meanwhile. An allocation of even 16 bytes per
 * call would fill the young generation several times over and force
 * scavenges; allocation-free loops cause none.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { extractKey, hashKey, FLOW_WORDS, HASH_BASIS } from '../../src/dp/flow-key.js';
import { Classifier } from '../../src/dp/classifier.js';
import { ExactMatchCache } from '../../src/dp/emc.js';
import { executeActions, ProgramBuilder, EXEC_STATE_WORDS, ST_OFF, ST_LEN, ST_NOUT } from '../../src/dp/actions.js';
import { StatsBoardWriter, newBoardBuffer, type BoardExtra, type BoardPortSource } from '../../src/dp/stats-board.js';
import { PMD_STAT_FIELDS } from '../../src/dp/datapath.js';
import { newPortStats } from '../../src/port/port.js';
import { buildFrame, mac } from './frame-builder.js';

const N = 400_000;

async function gcsDuring(fn: () => void): Promise<number> {
  const entries: PerformanceEntry[] = [];
  const obs = new PerformanceObserver((l) => { entries.push(...l.getEntries()); });
  obs.observe({ entryTypes: ['gc'] });
  await new Promise((r) => setTimeout(r, 10));
  entries.length = 0;
  const t0 = performance.now();
  fn();
  const t1 = performance.now();
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  return entries.filter((e) => e.startTime >= t0 && e.startTime <= t1).length;
}

test('extractKey, hashKey, EMC, classifier lookups and executeActions do not allocate', async () => {
  const frame = buildFrame({ dst: mac(1), src: mac(2), vlans: [{ tpid: 0x8100, tci: 5 }], l3: 'ipv4', proto: 6,
    srcIp: [1, 2, 3, 4], dstIp: [5, 6, 7, 8], sport: 1, dport: 80, payload: 20 });
  const key = new Uint32Array(FLOW_WORDS);
  const wc = new Uint32Array(FLOW_WORDS);
  const cls = new Classifier();
  const m = new Uint32Array(FLOW_WORDS);
  for (let s = 0; s < 8; s++) {
    m.fill(0); m[s] = 0xffff; m[6] = 0xffff;
    for (let i = 0; i < 50; i++) { key.fill(0); key[6] = i; cls.insert(key, 0, m, 0, s, i); }
  }
  const emc = new ExactMatchCache(1024, 1);
  const prog = new ProgramBuilder().setDlSrc(0x020000000009).popVlan().pushVlan(0x8100, 7).output(1).output(2).build();
  const buf = new Uint8Array(frame.length + 64);
  const st = new Int32Array(EXEC_STATE_WORDS);
  const ports = new Int32Array(8);
  let sink = 0;
  const loop = (): void => {
    for (let i = 0; i < N; i++) {
      frame[41] = i & 0xff; // vary tp_dst
      extractKey(frame, 0, frame.length, 1, key, 0);
      const h = hashKey(key, 0, HASH_BASIS);
      let v = emc.lookup(key, 0, h);
      if (v < 0) {
        v = cls.lookup(key, 0);
        emc.insertAlways(key, 0, h, v < 0 ? 0 : v);
      }
      sink += cls.lookupPriority(key, 0, wc, 0);
      buf.set(frame, 32);
      st[ST_OFF] = 32; st[ST_LEN] = frame.length; st[ST_NOUT] = 0;
      sink += executeActions(prog, 0, prog.length, buf, st, ports);
    }
  };
  loop(); // warm up (JIT)
  const gcs = await gcsDuring(loop);
  assert.ok(sink !== 0.5);
  assert.ok(gcs <= 1, `${gcs} garbage collections during ${N} iterations`);
});

test('the stats board publication the PMD loop makes every 10 ms does not allocate', async () => {
  const w = new StatsBoardWriter(newBoardBuffer());
  const counters = new Float64Array(PMD_STAT_FIELDS.length);
  const drops: Record<string, number> = { 'no-rule': 1 };
  const a = { name: 'a', type: 'vhost-user', link: 'up', nQueues: 2, stats: newPortStats() };
  a.stats.drops['tx-no-room'] = 3;
  const b = { name: 'b', type: 'tap', link: 'down', nQueues: 1, stats: newPortStats() };
  const ports: [number, BoardPortSource][] = [[1, a], [2, b]];
  const extra: BoardExtra = { flows: 0, pending: 0, poolAvailable: 0, poolCount: 0, poolAllocFail: 0, nowMs: 0 };
  const rxq = (n: number, q: number): number => n + q;
  const loop = (): void => {
    for (let i = 0; i < N; i++) {
      counters[0] = i;
      a.stats.rxPackets = i;
      extra.nowMs = i;
      w.publishCounters(counters, drops, extra, ports, rxq);
    }
  };
  loop(); // warm up (JIT); the layout is written once here
  const gcs = await gcsDuring(loop);
  assert.ok(gcs <= 1, `${gcs} garbage collections during ${N} publications`);
});
