/**
 * The upcall channel (src/dp/upcall-channel.ts): batches larger than a slot
 * are split in order with their frames intact; a full ring holds the rest back
 * in the batcher (nothing lost) until slots are released, past a backlog only
 * setup-only upcalls are skipped; an answer that does
 * not fit a slot is refused (the caller sends it another way) and one that
 * fits arrives whole; across threads, the sleeping main side wakes for every
 * batch a PMD-side thread publishes, and a PMD side waiting for an answer
 * wakes when the main side publishes one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { FLOW_WORDS } from '../../src/dp/flow-key.js';
import { UpcallAnswerBuilder, UpcallBatcher, type UpcallAnswer } from '../../src/dp/upcall-batch.js';
import { UpcallChannelMain, UpcallChannelPmd, newUpcallChannel } from '../../src/dp/upcall-channel.js';
import type { Datapath } from '../../src/dp/datapath.js';
import { waitFor } from '../harness/wait.js';

/** Upcall i: id i, port i % 7, key word 0 = i, a frame of 60 + i % 50 bytes each = i & 255. */
function addUpcall(b: UpcallBatcher, i: number): void {
  const key = new Uint32Array(FLOW_WORDS);
  key[0] = i;
  key[FLOW_WORDS - 1] = i * 3;
  b.add(i, i % 7, new Uint8Array(60 + (i % 50)).fill(i & 255), key);
}


/** Modules a PMD-side worker imports (workerData spreads these in). */
const PMD_SIDE_URLS = {
  chanUrl: new URL('../../src/dp/upcall-channel.js', import.meta.url).href,
  batchUrl: new URL('../../src/dp/upcall-batch.js', import.meta.url).href,
  keyUrl: new URL('../../src/dp/flow-key.js', import.meta.url).href,
};
/** The start of a PMD-side worker's source: its channel end `pmd` and an upcall batcher `b`, inside an async body the caller closes. */
const PMD_SIDE_PROLOGUE = `const { workerData, parentPort } = require('node:worker_threads');
    (async () => {
      const { UpcallChannelPmd } = await import(workerData.chanUrl);
      const { UpcallBatcher } = await import(workerData.batchUrl);
      const { FLOW_WORDS } = await import(workerData.keyUrl);
      const pmd = new UpcallChannelPmd(workerData.info, 0);
      const b = new UpcallBatcher(0);`;
test('batches split across slots in order; a full ring holds upcalls back; answers that do not fit are refused', () => {
  const info = newUpcallChannel({ slots: 2, upcalls: 16, frameBytes: 16 * 1024, actWords: 8 });
  const pmd = new UpcallChannelPmd(info, 3);
  const main = new UpcallChannelMain(info, 3);
  const b = new UpcallBatcher(3, 4);
  for (let i = 0; i < 40; i++) addUpcall(b, i);
  assert.equal(pmd.send(b), 32, 'two slots of 16');
  assert.equal(b.count, 8, 'the rest waits in the batcher');
  assert.equal(pmd.send(b), 0, 'ring full');
  const seen: number[] = [];
  const take = (): number =>
    main.drain((u) => {
      assert.equal(u.pmd, 3);
      for (let j = 0; j < u.n; j++) {
        const i = u.ids[j];
        seen.push(i);
        assert.equal(u.ports[j], i % 7);
        assert.equal(u.keys[j * FLOW_WORDS], i);
        assert.equal(u.keys[j * FLOW_WORDS + FLOW_WORDS - 1], i * 3);
        const f = u.frames.subarray(u.frameOff[j], u.frameOff[j + 1]);
        assert.equal(f.length, 60 + (i % 50));
        assert.ok(f.every((x) => x === (i & 255)), `frame of upcall ${i}`);
      }
    });
  assert.equal(take(), 2);
  assert.equal(pmd.send(b), 8);
  for (let i = 40; i < 45; i++) addUpcall(b, i);
  assert.equal(pmd.send(b), 5);
  assert.equal(take(), 2);
  assert.deepEqual(seen, Array.from({ length: 45 }, (_, i) => i), 'every upcall once, in order');

  // while the slow path is behind, setup-only upcalls (id -1) past the backlog are skipped; held ones never
  const small = new UpcallBatcher(3, 4, 3);
  const key = new Uint32Array(FLOW_WORDS);
  for (const id of [-1, 1, -1, -1, 2, -1, 3]) small.add(id, 1, new Uint8Array(64), key);
  assert.equal(small.count, 5, '-1, 1, -1, 2, 3');
  assert.equal(small.setupSkipped, 2);
  // a jumbo frame (copied by TypedArray.set, short ones by a loop) arrives whole
  const big = new UpcallBatcher(3);
  const jumbo = new Uint8Array(9000).map((_, i) => i * 7);
  big.add(77, 2, jumbo, key);
  assert.equal(pmd.send(big), 1);
  main.drain((u) => {
    assert.equal(u.ids[0], 77);
    assert.deepEqual(u.frames.subarray(u.frameOff[0], u.frameOff[1]), jumbo);
  });

  // answers: one that fits arrives whole; one with more program words than a slot is refused
  const out = new UpcallAnswerBuilder(4);
  out.reset(2);
  key.fill(7);
  const mask = new Uint32Array(FLOW_WORDS).fill(0xffffffff);
  const off = out.program([1, 2, 3]);
  out.install(key, mask, off, 3, undefined, 42);
  out.reply(5, off, 3);
  out.reply(6, -1, 0);
  assert.equal(main.answer(out), true);
  const got: UpcallAnswer[] = [];
  const fakeDp = {
    installFlowAt: (keys: Uint32Array, ko: number, masks: Uint32Array, mo: number, prog: Int32Array, xid: number) => {
      got.push({ nInstall: 1, instKeys: keys.slice(ko, ko + FLOW_WORDS), instMasks: masks.slice(mo, mo + FLOW_WORDS), instXid: Int32Array.of(xid), acts: prog.slice() } as unknown as UpcallAnswer);
      return 0;
    },
    upcallReply: (id: number, prog: Int32Array | null) => {
      got.push({ nReply: 1, repIds: Float64Array.of(id), acts: prog === null ? null : prog.slice() } as unknown as UpcallAnswer);
      return true;
    },
    flushTx: () => undefined,
  } as unknown as Datapath;
  assert.equal(pmd.receive(fakeDp, (e) => assert.fail(e)), 1);
  assert.equal(got.length, 3);
  assert.deepEqual([...got[0].instKeys], [...key]);
  assert.deepEqual([...got[0].instXid], [42]);
  assert.deepEqual([...got[0].acts], [1, 2, 3]);
  assert.deepEqual([...got[1].repIds], [5]);
  assert.deepEqual([...got[1].acts], [1, 2, 3]);
  assert.equal(got[2].acts, null, 'a reply without actions drops');
  out.reset(1);
  out.reply(9, out.program([1, 2, 3, 4, 5, 6, 7, 8, 9]), 9);
  assert.equal(main.answer(out), false, '9 program words, the slot holds 8');
  assert.equal(pmd.receive(fakeDp, (e) => assert.fail(e)), 0);
});

test('the main side sleeps until a PMD-side thread publishes, and wakes for every batch (back-pressure across threads)', async () => {
  const info = newUpcallChannel({ slots: 2, upcalls: 64, frameBytes: 16 * 1024 });
  const main = new UpcallChannelMain(info, 0);
  const ids: number[] = [];
  let wakes = 0;
  const running = main.run(() => {
    wakes++;
    main.drain((u) => {
      for (let j = 0; j < u.n; j++) ids.push(u.ids[j]);
    });
  });
  const N = 3000;
  // the PMD side in a worker: bursts of 100 upcalls, each sent as soon as the ring has room
  const w = new Worker(
    `${PMD_SIDE_PROLOGUE}
      const key = new Uint32Array(FLOW_WORDS);
      const frame = new Uint8Array(64);
      const nap = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < workerData.n; ) {
        for (let k = 0; k < 100 && i < workerData.n; k++, i++) b.add(i, 1, frame, key);
        while (b.count > 0) if (pmd.send(b) === 0) Atomics.wait(nap, 0, 0, 1);
      }
    })();`,
    { eval: true, workerData: { info, n: N, ...PMD_SIDE_URLS } },
  );
  const exited = new Promise((r) => w.on('exit', r));
  try {
    await waitFor(() => ids.length === N, { what: `${N} upcalls at the main side`, describe: () => `${ids.length} so far, ${wakes} wakes` });
    assert.deepEqual(ids, Array.from({ length: N }, (_, i) => i), 'in order, none lost');
    assert.ok(wakes > 1, 'woken more than once');
  } finally {
    main.close();
    await running;
    await exited;
  }
  assert.equal(main.pending, 0);
});

test('a PMD side waiting for an answer wakes when the main side publishes it', async () => {
  const info = newUpcallChannel({ slots: 2, upcalls: 8, frameBytes: 16 * 1024 });
  const main = new UpcallChannelMain(info, 0);
  const out = new UpcallAnswerBuilder(8);
  const running = main.run(() => {
    main.drain((u) => {
      out.reset(u.n);
      for (let j = 0; j < u.n; j++) out.reply(u.ids[j], -1, 0);
    });
    assert.equal(main.answer(out), true);
  });
  // one upcall, then a wait of up to a minute for its answer: it ends when the answer is published
  const w = new Worker(
    `${PMD_SIDE_PROLOGUE}
      b.add(7, 1, new Uint8Array(64), new Uint32Array(FLOW_WORDS));
      pmd.send(b);
      const t = Date.now();
      const answered = pmd.waitForAnswer(60000);
      const replies = [];
      pmd.receive({ upcallReply: (id) => replies.push(id), flushTx: () => {} }, (e) => { throw e; });
      parentPort.postMessage({ answered, early: Date.now() - t < 30000, replies });
    })();`,
    { eval: true, workerData: { info, ...PMD_SIDE_URLS } },
  );
  try {
    const r = await new Promise<{ answered: boolean; early: boolean; replies: number[] }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    assert.deepEqual(r, { answered: true, early: true, replies: [7] });
  } finally {
    main.close();
    await running;
    await w.terminate();
  }
});

test('the answer builder stores a megaflow and a program once per answer, past its first table size', () => {
  const out = new UpcallAnswerBuilder(4);
  const mask = new Uint32Array(FLOW_WORDS).fill(0xffffffff);
  for (let round = 0; round < 2; round++) {
    out.reset(4); // fewer than are added: the index grows
    for (let i = 0; i < 300; i++) {
      const key = new Uint32Array(FLOW_WORDS);
      key[2] = i % 100; // every megaflow three times
      const prog = [1, i % 3]; // three programs
      let off = out.installed(key, mask);
      if (off < 0) {
        off = out.program(prog);
        out.install(key, mask, off, prog.length, out.lastHash, i);
      } else assert.ok(i >= 100, `megaflow ${i} seen before`);
    }
    const info = newUpcallChannel({ slots: 1, upcalls: 128, frameBytes: 16 * 1024, actWords: 6 }); // three programs of two words, once each
    const a = new UpcallChannelMain(info, 0);
    assert.equal(a.answer(out), true);
    const got: { key: number; xid: number; prog: number[] }[] = [];
    new UpcallChannelPmd(info, 0).receive({
      installFlowAt: (keys: Uint32Array, ko: number, _m: Uint32Array, _mo: number, prog: Int32Array, xid: number) => got.push({ key: keys[ko + 2], xid, prog: [...prog] }),
      upcallReply: () => true,
      flushTx: () => undefined,
    } as unknown as Datapath, (e) => assert.fail(e));
    assert.equal(got.length, 100, 'one install per megaflow');
    assert.deepEqual(got.map((g) => g.key), Array.from({ length: 100 }, (_, i) => i));
    assert.deepEqual(got.map((g) => g.xid), Array.from({ length: 100 }, (_, i) => i), 'the first upcall of each');
    assert.deepEqual(got.map((g) => g.prog[1]), Array.from({ length: 100 }, (_, i) => i % 3));
  }
});
