/**
 * One copy guest-to-guest (src/port/one-copy.ts): two vhost-user ports on one
 * Datapath, a virtio-user frontend (our driver) on each side, split and packed
 * rings, MRG_RXBUF on and off. Checks that
 *  - the path is taken (pmd counter ONE_COPY) for the frames it is for, and not
 *    for the others (IPv6, IP options, VLAN, short frames: pool path);
 *  - every frame arrives once, in order, byte for byte, with one copy on and off;
 *  - a guest that rewrites its frame after the switch classified it cannot
 *    change the classified headers the destination receives (only its payload);
 *  - a chain pointing outside guest memory is counted (rx-bad-guest-chain) and
 *    the other frames of the burst still arrive;
 *  - with dirty logging on (live migration) every byte written into the
 *    destination guest's buffers is in a marked range;
 *  - the datapath's hot path allocates nothing with one copy on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { Datapath, PmdStat } from '../../src/dp/datapath.js';
import { FLOW_WORDS } from '../../src/dp/flow-key.js';
import { OP_OUTPUT } from '../../src/dp/actions.js';
import { DirtyLog } from '../../src/mem/dirty-log.js';
import { ONE_COPY_PRIVATE } from '../../src/port/one-copy.js';
import { Drop } from '../../src/port/port.js';
import { buildFrame, mac, type PacketDesc } from './frame-builder.js';
import { waitFor } from '../harness/wait.js';

const quiet = { log: () => {} };

interface Rig {
  pool: Mempool;
  pa: VhostUserPort;
  pb: VhostUserPort;
  fa: VirtioUserPort;
  fb: VirtioUserPort;
  dp: Datapath;
  upcalls: number;
}

async function rig(t: { after(fn: () => unknown): void }, o: { packed: boolean; mrg: boolean; oneCopy: boolean }): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-onecopy-'));
  const pool = Mempool.create({ count: 4096 });
  const pa = new VhostUserPort({ name: 'a', path: path.join(dir, 'a.sock'), mempool: pool, logger: quiet });
  const pb = new VhostUserPort({ name: 'b', path: path.join(dir, 'b.sock'), mempool: pool, logger: quiet });
  const fa = new VirtioUserPort({ name: 'fa', path: path.join(dir, 'a.sock'), packed: o.packed, mrgRxbuf: o.mrg, logger: quiet });
  const fb = new VirtioUserPort({ name: 'fb', path: path.join(dir, 'b.sock'), packed: o.packed, mrgRxbuf: o.mrg, logger: quiet });
  t.after(async () => {
    fa.close();
    fb.close();
    await pa.closeAsync();
    await pb.closeAsync();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(() => pa.link === 'up' && pb.link === 'up', { what: 'both vhost-user ports up', interval: 10 });
  await fa.waitUp();
  await fb.waitUp();
  const r: Rig = { pool, pa, pb, fa, fb, dp: null as unknown as Datapath, upcalls: 0 };
  r.dp = new Datapath(pool, { upcall: () => { r.upcalls++; } }, { oneCopy: o.oneCopy });
  r.dp.addPort(1, pa);
  r.dp.addPort(2, pb);
  const key = new Uint32Array(FLOW_WORDS);
  const mask = new Uint32Array(FLOW_WORDS);
  key[0] = 1;
  mask[0] = 0xffffffff; // in_port=1 -> output:2
  r.dp.installFlow(key, mask, Int32Array.from([OP_OUTPUT, 2]));
  return r;
}

function udp(i: number, payload: number, extra: Partial<PacketDesc> = {}): Uint8Array {
  return buildFrame({ dst: mac(2), src: mac(1), l3: 'ipv4', proto: 17, srcIp: [10, 0, 0, 1], dstIp: [10, 0, 0, 2], sport: 1000 + (i & 7), dport: 80, payload, ...extra });
}

/** A mix: what one copy is for (IPv4 UDP/TCP longer than the private part) and what it hands to the pool path. */
function frameMix(n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const f = ((): Uint8Array => {
      switch (i % 8) {
        case 0: return udp(i, 18); // 60 B: no tail
        case 1: return udp(i, 1472); // 1514 B
        case 2: return buildFrame({ dst: mac(2), src: mac(1), l3: 'ipv4', proto: 6, srcIp: [10, 0, 0, 1], dstIp: [10, 0, 0, 2], sport: 5, dport: 80, payload: 600 });
        case 3: return buildFrame({ dst: mac(2), src: mac(1), l3: 'ipv6', proto: 17, srcIp: Array(16).fill(1), dstIp: Array(16).fill(2), sport: 1, dport: 2, payload: 300 }); // key past the prefix
        case 4: return udp(i, 200, { ipOptWords: 2 }); // IP options: key past the prefix
        case 5: return udp(i, 300, { vlans: [{ tpid: 0x8100, tci: 7 }] }); // tagged
        case 6: return udp(i, 47); // 89 B: a short tail
        default: return udp(i, 1000 + i);
      }
    })();
    // a sequence number in the last 4 bytes
    new DataView(f.buffer, f.byteOffset).setUint32(f.length - 4, i);
    out.push(f);
  }
  return out;
}

/** Frames one copy delivers straight (IPv4 TCP/UDP without options, longer than the private part). */
function oneCopyable(f: Uint8Array): boolean {
  return f.length > ONE_COPY_PRIVATE && f[12] === 0x08 && f[13] === 0 && f[14] === 0x45;
}

/**
 * Send frames from fa, run the datapath, collect what fb receives. `afterSend(handles)` runs
 * after each burst is in fa's ring, before the switch polls; `beforeTx` before each switch tx burst.
 */
function exchange(r: Rig, frames: Uint8Array[], o: { afterSend?: (handles: Int32Array, n: number) => void } = {}): Uint8Array[] {
  const got: Uint8Array[] = [];
  const bufs = new Int32Array(32);
  const rx = new Int32Array(32);
  const fp = r.fa.pool;
  const drain = (): void => {
    for (let k = 0; k < 50; k++) {
      r.dp.pollOnce();
      const n = r.fb.rxBurst(0, rx, 32);
      for (let i = 0; i < n; i++) {
        const h = rx[i];
        const off = r.fb.pool.dataOffset(h);
        got.push(r.fb.pool.data.slice(off, off + r.fb.pool.dataLen[h]));
      }
      r.fb.pool.free(rx, n);
    }
  };
  for (let s = 0; s < frames.length; s += 32) {
    const m = Math.min(32, frames.length - s);
    const k = fp.alloc(bufs, m);
    assert.equal(k, m, 'frontend buffers');
    for (let i = 0; i < m; i++) {
      const f = frames[s + i];
      fp.data.set(f, fp.dataOffset(bufs[i]));
      fp.dataLen[bufs[i]] = f.length;
      fp.pktLen[bufs[i]] = f.length;
    }
    const sent = r.fa.txBurst(0, bufs, m);
    assert.equal(sent, m, 'the frontend took the burst');
    o.afterSend?.(bufs, m);
    drain();
  }
  drain();
  return got;
}

for (const packed of [false, true]) {
  for (const mrg of [true, false]) {
    const kind = `${packed ? 'packed' : 'split'}, mrg_rxbuf ${mrg ? 'on' : 'off'}`;
    test(`one copy guest-to-guest: exact counts and bytes, path taken for what it is for (${kind})`, async (t) => {
      const frames = frameMix(400);
      for (const oneCopy of [true, false]) {
        const r = await rig(t, { packed, mrg, oneCopy });
        const got = exchange(r, frames);
        assert.equal(got.length, frames.length, `every frame arrives (one copy ${oneCopy ? 'on' : 'off'})`);
        for (let i = 0; i < frames.length; i++) assert.deepEqual(got[i], frames[i], `frame ${i} (${frames[i].length} B) byte for byte`);
        const direct = r.dp.counters[PmdStat.ONE_COPY];
        const want = oneCopy ? frames.filter(oneCopyable).length : 0;
        assert.equal(direct, want, 'one-copy packets: exactly the IPv4 TCP/UDP frames longer than the private part');
        assert.equal(r.dp.counters[PmdStat.RX_PACKETS], frames.length);
        assert.equal(r.dp.counters[PmdStat.TX_PACKETS], frames.length);
        assert.equal(r.pa.stats.rxPackets, frames.length);
        assert.equal(r.pb.stats.txPackets, frames.length);
        assert.deepEqual(r.dp.drops, {});
        assert.equal(r.upcalls, 0);
        // the source guest got every buffer back
        await waitFor(() => r.fa.pool.available() >= r.fa.pool.count - 2 * 256 - 64, { what: 'tx buffers reclaimed', interval: 5 });
      }
    });
  }
}

for (const packed of [false, true]) {
  test(`one copy: a guest rewriting its frame after classification changes only its payload (${packed ? 'packed' : 'split'})`, async (t) => {
    const r = await rig(t, { packed, mrg: true, oneCopy: true });
    // an ACL: only UDP to port 80 from in_port 1 goes out; everything else misses (no slow path answer: held)
    r.dp.flushFlows();
    const key = new Uint32Array(FLOW_WORDS);
    const mask = new Uint32Array(FLOW_WORDS);
    key[0] = 1;
    mask[0] = 0xffffffff;
    key[5] = 17 << 24; // W_NW: proto
    mask[5] = 0xff000000;
    key[6] = 80; // W_TP: dst port in the low half
    mask[6] = 0xffff;
    r.dp.installFlow(key, mask, Int32Array.from([OP_OUTPUT, 2]));
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 64; i++) frames.push(udp(i, 600 + 4 * i));
    const fp = r.fa.pool;
    // the guest rewrites each of its buffers between the switch's classification and its tx to port b:
    // destination port 22, another address, and the payload
    const sentHandles: number[] = [];
    const origTx = r.pb.txBurst.bind(r.pb);
    let rewrites = 0;
    r.pb.txBurst = (q: number, hs: Int32Array, n: number): number => {
      for (const h of sentHandles) {
        const o = fp.dataOffset(h);
        fp.data[o + 36] = 0; // dport 80 -> 22
        fp.data[o + 37] = 22;
        fp.data[o + 33] = 99; // ip dst
        fp.data.fill(0xee, o + ONE_COPY_PRIVATE, o + fp.dataLen[h] - 4);
        rewrites++;
      }
      return origTx(q, hs, n);
    };
    const got = exchange(r, frames, { afterSend: (hs, n) => { sentHandles.length = 0; for (let i = 0; i < n; i++) sentHandles.push(hs[i]); } });
    assert.ok(rewrites > 0, 'the guest rewrote its buffers before the switch sent');
    assert.equal(got.length, frames.length, 'every frame classified as port 80 is delivered');
    for (let i = 0; i < frames.length; i++) {
      assert.deepEqual(got[i].subarray(0, ONE_COPY_PRIVATE), frames[i].subarray(0, ONE_COPY_PRIVATE), `frame ${i}: the headers are the ones classified`);
      assert.equal(got[i][ONE_COPY_PRIVATE], 0xee, `frame ${i}: the payload is the guest's (read at delivery)`);
    }
    assert.equal(r.dp.counters[PmdStat.ONE_COPY], frames.length);
    assert.equal(r.upcalls, 0, 'no frame missed: what was classified is what went out');
  });
}

for (const packed of [false, true]) {
  test(`one copy: a chain pointing outside guest memory is counted, the rest of the burst arrives (${packed ? 'packed' : 'split'})`, async (t) => {
    const r = await rig(t, { packed, mrg: true, oneCopy: true });
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 32; i++) frames.push(udp(i, 900));
    const bad = 5;
    const fp = r.fa.pool;
    const txq = (r.fa as unknown as { txq: { ring: { desc32: Uint32Array | Int32Array } }[] }).txq[0];
    const d32 = txq.ring.desc32;
    const got = exchange(r, frames, {
      afterSend: (hs) => {
        // the descriptor of frame `bad` (its address lies in that buffer) now points 16 TiB up
        const lo = fp.bufAddr(hs[bad]);
        const hi = lo + fp.stride;
        let hit = 0;
        for (let d = 0; d + 4 <= d32.length; d += 4) {
          const a = (d32[d + 1] >>> 0) * 0x100000000 + (d32[d] >>> 0);
          if (a >= lo && a < hi) {
            d32[d + 1] = 0x1000;
            hit++;
          }
        }
        assert.equal(hit, 1, 'found the descriptor');
      },
    });
    assert.equal(got.length, frames.length - 1, 'the other frames arrive');
    const want = frames.filter((_, i) => i !== bad);
    for (let i = 0; i < want.length; i++) assert.deepEqual(got[i], want[i]);
    assert.equal(r.pa.stats.drops[Drop.RX_BAD_GUEST_CHAIN], 1, 'counted with its reason');
    assert.equal(r.dp.counters[PmdStat.ONE_COPY], frames.length - 1);
  });
}

for (const packed of [false, true]) {
  test(`one copy with dirty logging on: every byte written into the destination guest is marked (${packed ? 'packed' : 'split'})`, async (t) => {
    const r = await rig(t, { packed, mrg: true, oneCopy: true });
    const marks: [number, number][] = [];
    class SpyLog extends DirtyLog {
      override mark(gpa: number, len: number): void {
        marks.push([gpa, len]);
      }
    }
    const spy = new SpyLog(new Uint8Array(1));
    const rings = (p: VhostUserPort) => (p as unknown as { dp: { rings: { setDirtyLog(l: DirtyLog | null, g?: number): void }[] } }).dp.rings;
    for (const q of rings(r.pa)) q.setDirtyLog(spy, -1);
    for (const q of rings(r.pb)) q.setDirtyLog(spy, -1);
    const frames = frameMix(96);
    const fbp = r.fb.pool;
    const origRx = r.fb.rxBurst.bind(r.fb);
    let checked = 0;
    r.fb.rxBurst = (q: number, out: Int32Array, max: number): number => {
      const n = origRx(q, out, max);
      for (let i = 0; i < n; i++) {
        // the frame's bytes (and its net header) as the switch wrote them: guest addresses of fb's buffer
        const a = fbp.bufAddr(out[i]) + fbp.dataOff[out[i]];
        const end = a + fbp.dataLen[out[i]];
        const covered = marks.some(([g, l]) => g <= a - 12 && g + l >= end);
        assert.ok(covered, `frame bytes [${a}, ${end}) are inside one logged write`);
        checked++;
      }
      return n;
    };
    const got = exchange(r, frames);
    assert.equal(got.length, frames.length);
    for (let i = 0; i < frames.length; i++) assert.deepEqual(got[i], frames[i]);
    assert.equal(checked, frames.length);
    assert.equal(r.dp.counters[PmdStat.ONE_COPY], 0, 'logging: the destination takes the general path (tails copied in first)');
  });
}

test('one copy: the switch\'s data path allocates nothing for frames whose tail is at most 512 bytes', async (t) => {
  // V8's sampling heap profiler, counting objects already collected too: the bytes allocated under
  // Datapath.pollOnce (the switch: vhost-user rx, classification, vhost-user tx, release). The test's
  // virtio-user frontends allocate a little on their own; they are outside pollOnce and not counted.
  const { Session } = await import('node:inspector/promises');
  const r = await rig(t, { packed: false, mrg: true, oneCopy: true });
  const f = udp(1, 500); // 542 B: a 478-byte tail, copied by words
  const bufs = new Int32Array(32);
  const rx = new Int32Array(32);
  const fp = r.fa.pool;
  const loop = (bursts: number): void => {
    for (let b = 0; b < bursts; b++) {
      const k = fp.alloc(bufs, 32);
      for (let i = 0; i < k; i++) {
        fp.data.set(f, fp.dataOffset(bufs[i]));
        fp.dataLen[bufs[i]] = f.length;
        fp.pktLen[bufs[i]] = f.length;
      }
      const s = r.fa.txBurst(0, bufs, k);
      if (s < k) fp.free(bufs, k - s, s);
      r.dp.pollOnce();
      const n = r.fb.rxBurst(0, rx, 32);
      r.fb.pool.free(rx, n);
    }
  };
  loop(5000); // JIT warm-up
  const before = r.dp.counters[PmdStat.ONE_COPY];
  const ses = new Session();
  ses.connect();
  t.after(() => ses.disconnect());
  await ses.post('HeapProfiler.startSampling', { samplingInterval: 128, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true } as never);
  loop(10000); // 320k frames
  const { profile } = (await ses.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: HeapNode } };
  interface HeapNode { callFrame: { functionName: string }; selfSize: number; children: HeapNode[] }
  let under = 0;
  const walk = (n: HeapNode, inPoll: boolean): void => {
    const p = inPoll || n.callFrame.functionName === 'pollOnce';
    if (p) under += n.selfSize;
    for (const c of n.children) walk(c, p);
  };
  walk(profile.head, false);
  assert.ok(r.dp.counters[PmdStat.ONE_COPY] - before >= 320_000, 'the frames went the one-copy way');
  // one 40-byte object per frame would be ~13 MB; what is left is warm-up and event-fd calls
  assert.ok(under < 256 * 1024, `bytes allocated under pollOnce for 320k frames: ${under}`);
});
