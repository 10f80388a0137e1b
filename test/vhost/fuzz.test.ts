/**
 * Protocol fuzzing: mutate a valid DPDK-like session (plus the other requests
 * QEMU sends) and replay it against one running backend over socketpairs,
 * with hostile bytes in the guest's rings so any data path that comes up
 * also walks garbage. Afterwards: no fd or mapping leaked, the process is
 * fine, and a clean session still works. 10k cases normally; TSVS_LONG=1 for 100k.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { UnixSocket } from '../../src/sys/socket.js';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import * as M from '../../src/vhost/messages.js';
import type { Logger } from '../../src/vhost/connection.js';
import {
  FakeGuest,
  ReplyReader,
  dpdkSession,
  extraMessages,
  sendScript,
  openFdCount,
  memfdMappings,
  GUEST_SIZE,
  GUEST_GPA,
  type FdRef,
  type ScriptMsg,
} from '../fixtures/vhost-session.js';
import { Rng } from '../fixtures/rng.js';
import { waitFor } from '../harness/wait.js';

const CASES = process.env.TSVS_LONG ? 100000 : 10000;
const SEED = Number(process.env.TSVS_FUZZ_SEED ?? 0x5eed1234);

const TERMINATOR = new Uint8Array(M.MAX_PAYLOAD + 2 * M.HDR_SIZE);
const U32S = [0, 1, 2, 7, 8, 0xff, 0x100, 0x101, 0x1ff, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];
const FD_REFS: FdRef[] = ['mem', 'mem2', 'kick0', 'kick1', 'call0', 'call1'];

function u64s(g: FakeGuest): bigint[] {
  return [
    0n, 1n, 0x1000n, BigInt(GUEST_GPA), BigInt(GUEST_SIZE), BigInt(g.uaddr), BigInt(g.uaddr + GUEST_SIZE - 8),
    (1n << 53n) - 1n, 1n << 53n, 1n << 63n, (1n << 64n) - 1n, 1n << 40n,
  ];
}

function clone(msg: ScriptMsg): ScriptMsg {
  return { ...msg, payload: msg.payload.slice(), fds: [...msg.fds] };
}

/** Apply one mutation; returns a truncation (bytes to cut from the last message) or 0. */
function mutate(rng: Rng, msgs: ScriptMsg[], g: FakeGuest): void {
  if (msgs.length === 0) return;
  const k = rng.int(msgs.length);
  const msg = (msgs[k] = clone(msgs[k]));
  const dv = new DataView(msg.payload.buffer);
  const len = msg.payload.length;
  switch (rng.int(11)) {
    case 0:
      if (len > 0) msg.payload[rng.int(len)] ^= 1 << rng.int(8);
      break;
    case 1:
      if (len >= 4) dv.setUint32(4 * rng.int(len >> 2), rng.pick(U32S), true);
      break;
    case 2:
      if (len >= 8) dv.setBigUint64(8 * rng.int(len >> 3), rng.pick(u64s(g)), true);
      break;
    case 3:
      msg.size = rng.pick([0, Math.max(0, len - 1), len + 1, len + 8, rng.int(5000), 0xffffffff, 4096, 4097]);
      break;
    case 4:
      msg.request = rng.int(4) === 0 ? rng.u32() : rng.int(46);
      break;
    case 5:
      msg.flags = rng.pick([0, 1, 2, 3, 5, 9, 0xd, rng.u32(), msg.flags ^ M.FLAG_NEED_REPLY]);
      break;
    case 6: {
      const op = rng.int(3);
      if (op === 0 && msg.fds.length) msg.fds.splice(rng.int(msg.fds.length), 1);
      else if (op === 1 && msg.fds.length < 8) msg.fds.push(rng.pick(FD_REFS));
      else if (msg.fds.length) msg.fds[rng.int(msg.fds.length)] = rng.pick(FD_REFS);
      break;
    }
    case 7:
      msgs.splice(k, 1);
      break;
    case 8:
      msgs.splice(k, 0, clone(msg));
      break;
    case 9: {
      const j = rng.int(msgs.length);
      [msgs[k], msgs[j]] = [msgs[j], msgs[k]];
      break;
    }
    case 10:
      // payload shorter than the header says: the stream desynchronises
      if (len > 0) {
        msg.size = len;
        msg.payload = msg.payload.slice(0, rng.int(len));
      }
      break;
  }
}

function quiet(): Logger & { count: number } {
  const l = { count: 0, log: () => void l.count++ };
  return l;
}

test(`fuzz: ${CASES} mutated sessions against one backend; clean session still works`, { timeout: 600000 }, async () => {
  const g = new FakeGuest();
  const pool = Mempool.create({ count: 1024 });
  const log = quiet();
  const b = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice({ queuePairs: 1 }), logger: log });
  // A data path follows the backend, as a port would, and is driven on every description.
  const port = VhostUserPort.ringsOnly({ name: 'fuzz', mempool: pool, logger: log });
  const burst = new Int32Array(32);
  let dataPaths = 0;
  b.on('datapath', (d) => {
    port.setDataPath(d);
    if (!d) return;
    dataPaths++;
    const n = port.rxBurst(0, burst, 32);
    pool.free(burst, n);
    const k = pool.alloc(burst, 4);
    for (let i = 0; i < k; i++) {
      pool.dataLen[burst[i]] = 60;
      pool.pktLen[burst[i]] = 60;
    }
    port.txBurst(0, burst, k);
  });
  const other = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice({ queuePairs: 1 }), logger: quiet() });
  const [os, ot] = UnixSocket.pair();
  other.attachSocket(ot);
  const ord = new ReplyReader(os);

  const fds0 = openFdCount();
  const maps0 = memfdMappings();
  const rng = new Rng(SEED);
  const base = dpdkSession(g);
  const extras = extraMessages(g);
  const guestBytes = g.mem.bytes;
  const t0 = Date.now();
  for (let c = 0; c < CASES; c++) {
    // hostile ring contents
    for (let i = 0; i < 8; i++) {
      const q = g.ring(rng.int(2));
      const area = rng.pick([q.desc, q.avail, q.used]);
      new DataView(guestBytes.buffer, guestBytes.byteOffset).setUint32(area + 4 * rng.int(64), rng.pick(U32S), true);
    }
    const msgs = base.slice();
    for (let i = rng.int(4); i > 0; i--) msgs.splice(rng.int(msgs.length + 1), 0, rng.pick(extras));
    for (let i = 1 + rng.int(3); i > 0; i--) mutate(rng, msgs, g);
    const [ours, theirs] = UnixSocket.pair();
    assert.ok(b.attachSocket(theirs), `case ${c}: backend accepts (previous session fully closed)`);
    const gone = once(b, 'disconnect');
    for (const m of msgs) if (!sendScript(ours, g, m)) break;
    // Terminator: zeros finish any pending payload, then a zero header (bad version) ends the
    // session. We keep our end open until then so the backend's replies never hit EPIPE.
    try {
      ours.sendAll(TERMINATOR);
    } catch {
      /* backend already closed */
    }
    await gone;
    ours.close();
  }
  const dt = Date.now() - t0;
  assert.equal(b.stats.connections, CASES);
  assert.equal(b.stats.disconnects, CASES);
  assert.ok(dataPaths > CASES / 20, `some mutated sessions reached a data path (${dataPaths})`);
  const reasons = Object.keys(b.stats.errors);
  for (const r of ['bad-size', 'bad-fds', 'unknown-request', 'bad-value', 'bad-payload', 'out-of-order']) {
    assert.ok(reasons.includes(r), `fuzz reached error reason ${r} (${JSON.stringify(b.stats.errors)})`);
  }
  for (const r of ['too-big', 'bad-version', 'bad-size']) {
    assert.ok(r in b.stats.closeReasons, `fuzz reached close reason ${r} (${JSON.stringify(b.stats.closeReasons)})`);
  }
  assert.equal(openFdCount(), fds0, 'no fd leaked');
  assert.equal(memfdMappings(), maps0, 'no guest mapping leaked');

  // a clean session still works, on this backend and the untouched one
  g.mem.bytes.fill(0);
  for (const [be, sock, rd] of [[b, ...(() => { const [x, y] = UnixSocket.pair(); b.attachSocket(y); return [x, new ReplyReader(x)] as const; })()], [other, os, ord]] as const) {
    for (const m of base) {
      sendScript(sock, g, m);
      const spec = M.FRONTEND_REQUESTS.get(m.request)!;
      if (spec.reply !== 'ack' || m.flags & M.FLAG_NEED_REPLY) {
        const r = await rd.next();
        assert.ok(r && r.hdr.request === m.request, `reply to ${M.requestName(m.request)}`);
        if (spec.reply === 'ack') assert.equal(M.decodeU64(r.payload), 0n);
      }
    }
    await waitFor(() => be.linkUp, { what: 'clean session brings the link up', timeout: 3000, interval: 5 });
    sock.close();
  }
  await b.close();
  await other.close();
  await port.closeAsync();
  pool.close();
  g.close();
  process.stderr.write(`# fuzz: ${CASES} cases in ${dt} ms, ${dataPaths} data paths, errors ${JSON.stringify(b.stats.errors)}, closes ${JSON.stringify(b.stats.closeReasons)}\n`);
});
