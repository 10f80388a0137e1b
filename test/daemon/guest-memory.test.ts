/**
 * Hostile frontends against the daemon's guest memory handling (issue 18,
 * defects 1 and 4), while two other ports forward traffic:
 *  - a frontend that truncates its memory file under a running data path
 *    (memfd it cannot let us seal: the SIGBUS guard absorbs the fault) takes
 *    only its own port down, with the reason in `tsvs show`; the daemon lives;
 *  - a frontend whose memfd allows seals gets it sealed: its truncation fails;
 *  - a memory table claiming 8 x 7 TiB is refused at once naming the option,
 *    and one of 8 x 96 GiB (sparse) is accepted at once (mapped lazily).
 * Traffic: two virtio-user frontends of the tsvs library in this process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { startDaemon, type Daemon } from '../harness/daemon.js';
import { waitFor } from '../harness/wait.js';
import * as libc from '../../src/sys/libc.js';
import { UnixSocket } from '../../src/sys/socket.js';
import { Mempool } from '../../src/mem/mempool.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import * as M from '../../src/vhost/messages.js';
import { FakeGuest, ReplyReader, dpdkSession, sendScript, type ScriptMsg } from '../fixtures/vhost-session.js';
import { fillFrame, checkFrame, pollUntil } from '../fixtures/frontend-traffic.js';

interface PortJson { name: string; link: string; status: string; memory?: { regions: number; sealed: number; guarded: number } }

async function show(d: Daemon): Promise<PortJson[]> {
  const r = await d.cli('show', '--json');
  assert.equal(r.code, 0, `show failed (daemon ${d.proc.exitCode ?? d.proc.signalCode ?? 'running'}): ${r.stderr}`);
  return (JSON.parse(r.stdout) as { ports: PortJson[] }[]).flatMap((b) => b.ports);
}

async function portState(d: Daemon, name: string): Promise<PortJson> {
  return (await show(d)).find((p) => p.name === name)!;
}

function alive(d: Daemon): boolean {
  return d.proc.exitCode === null && d.proc.signalCode === null;
}

/** Send 64 frames a -> b through the switch; resolves with how many arrived intact. */
async function forward(pool: Mempool, a: VirtioUserPort, b: VirtioUserPort, seq0: number): Promise<number> {
  const n = 64;
  const bufs = new Int32Array(n);
  assert.equal(pool.alloc(bufs, n), n);
  const dst = Uint8Array.from([2, 0, 0, 0, 0, 0xb]);
  const src = Uint8Array.from([2, 0, 0, 0, 0, 0xa]);
  for (let i = 0; i < n; i++) fillFrame(pool, bufs[i], seq0 + i, 64, dst, src);
  let sent = 0;
  await pollUntil(() => {
    sent += a.txBurst(0, bufs.subarray(sent), n - sent);
    return sent === n;
  }, 5000);
  if (sent < n) pool.free(bufs, n - sent, sent);
  const rx = new Int32Array(32);
  let got = 0;
  await pollUntil(() => {
    const k = b.rxBurst(0, rx, 32);
    for (let i = 0; i < k; i++) if (checkFrame(pool, rx[i]) >= seq0) got++;
    if (k > 0) pool.free(rx, k);
    return got >= sent;
  }, 5000);
  return got;
}

/** Run a scripted session to the end (replies checked as acks where asked). */
async function play(sock: UnixSocket, rd: ReplyReader, g: FakeGuest, msgs: ScriptMsg[]): Promise<void> {
  for (const msg of msgs) {
    assert.ok(sendScript(sock, g, msg), `send ${M.requestName(msg.request)}`);
    const spec = M.FRONTEND_REQUESTS.get(msg.request)!;
    if (spec.reply !== 'ack' || msg.flags & M.FLAG_NEED_REPLY) {
      const r = await rd.next(5000);
      assert.ok(r, `reply to ${M.requestName(msg.request)}`);
      if (spec.reply === 'ack') assert.equal(M.decodeU64(r.payload), 0n, `${M.requestName(msg.request)} acked ok`);
    }
  }
}

test('guest memory attacks: a truncated memfd takes down only its port, sealable memfds are sealed, huge tables answer at once', { timeout: 120000 }, async (t) => {
  const d = await startDaemon();
  t.after(() => d.stop());
  const ok = async (...args: string[]): Promise<void> => {
    const r = await d.cli(...args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  };
  await ok('add-br', 'br0');
  for (const p of ['a', 'b', 'victim', 'sealed', 'big']) await ok('add-port', 'br0', p, '--type', 'vhost-user');
  await ok('add-flow', 'br0', 'priority=100,in_port=a,actions=output:b');

  const pool = Mempool.create({ count: 1024 });
  const a = new VirtioUserPort({ name: 'fa', path: path.join(d.runDir, 'a'), pool });
  const b = new VirtioUserPort({ name: 'fb', path: path.join(d.runDir, 'b'), pool });
  t.after(async () => {
    a.close();
    b.close();
    pool.close();
  });
  await a.waitUp();
  await b.waitUp();
  await waitFor(async () => (await show(d)).filter((p) => p.link === 'up').length === 2, { what: 'a and b up', interval: 50 });
  let seq = 1;
  assert.equal(await forward(pool, a, b, seq), 64, 'a -> b forwards before the attacks');
  seq += 64;

  // --- defect 1, unsealable memfd: truncated under the running data path
  const victim = new FakeGuest();
  const vs = UnixSocket.connect(path.join(d.runDir, 'victim'));
  const vr = new ReplyReader(vs);
  t.after(() => {
    vs.close();
    victim.close();
  });
  await play(vs, vr, victim, dpdkSession(victim));
  const up = await waitFor(async () => {
    const p = await portState(d, 'victim');
    return p.link === 'up' && p;
  }, { what: 'victim up', interval: 50 });
  assert.deepEqual(up.memory && [up.memory.regions, up.memory.sealed, up.memory.guarded], [1, 0, 1], 'unsealable region: guarded, not sealed');
  assert.match((await d.cli('show')).stdout, /Port victim .* mem=guarded/);
  libc.ftruncate(victim.fds.mem, 0); // the PMD polls the avail index in this memory
  const down = await waitFor(async () => {
    if (!alive(d)) throw new Error(`daemon died (${d.proc.signalCode ?? d.proc.exitCode}): ${d.log().slice(-2000)}`);
    const p = await portState(d, 'victim');
    return p.link === 'down' && /truncated/.test(p.status) && p;
  }, { what: 'victim down with a reason', interval: 50 });
  assert.match(down.status, /guest memory truncated by the frontend \(SIGBUS at 0x[0-9a-f]+/);
  assert.ok(await vr.waitEof(5000), 'the attacker is disconnected');
  assert.ok(alive(d), 'the daemon lives');
  assert.match((await d.cli('show')).stdout, /Port victim .*link=down.*guest memory truncated by the frontend/);
  assert.match(d.log(), /guest memory truncated by the frontend \(SIGBUS at 0x/);
  assert.equal(await forward(pool, a, b, seq), 64, 'a -> b still forwards after the attack');
  seq += 64;

  // --- a memfd that allows seals: sealed at SET_MEM_TABLE, the truncation is refused by the kernel
  const sg = new FakeGuest({ sealable: true });
  const ss = UnixSocket.connect(path.join(d.runDir, 'sealed'));
  const sr = new ReplyReader(ss);
  t.after(() => {
    ss.close();
    sg.close();
  });
  await play(ss, sr, sg, dpdkSession(sg));
  const sp = await waitFor(async () => {
    const p = await portState(d, 'sealed');
    return p.link === 'up' && p;
  }, { what: 'sealed up', interval: 50 });
  assert.equal(sp.memory?.sealed, 1);
  assert.match((await d.cli('show')).stdout, /Port sealed .* mem=sealed/);
  assert.throws(() => libc.ftruncate(sg.fds.mem, 0), (e: unknown) => e instanceof libc.SysError && e.code === 'EPERM');
  assert.equal((libc.getSeals(sg.fds.mem) & libc.F_SEAL_SHRINK) !== 0, true);

  // --- defect 4: memory tables claiming huge amounts, answered at once while a -> b forwards
  const bg = new FakeGuest();
  const bs = UnixSocket.connect(path.join(d.runDir, 'big'));
  const br = new ReplyReader(bs);
  const sparse = libc.memfdCreate('sparse-guest');
  t.after(() => {
    bs.close();
    bg.close();
    libc.closeQuiet(sparse);
  });
  const TiB = 2 ** 40;
  const GiB = 2 ** 30;
  libc.ftruncate(sparse, 56 * TiB);
  (bg.fds as Record<string, number>).mem2 = sparse;
  const table = (size: number): ScriptMsg => ({
    request: M.Req.SET_MEM_TABLE,
    flags: M.VERSION | M.FLAG_NEED_REPLY,
    payload: M.encodeMemTable(Array.from({ length: 8 }, (_, i) => ({ gpa: i * 8 * TiB, size, uaddr: 0x100000000000 + i * 8 * TiB, mmapOffset: i * size }))),
    fds: Array(8).fill('mem2'),
  });
  const setup = dpdkSession(bg).slice(0, dpdkSession(bg).findIndex((m) => m.request === M.Req.SET_MEM_TABLE));
  await play(bs, br, bg, setup);
  for (const [size, accept] of [[7 * TiB, false], [96 * GiB, true]] as const) {
    const t0 = Date.now();
    const traffic = forward(pool, a, b, seq);
    assert.ok(sendScript(bs, bg, table(size)));
    const r = await br.next(3000);
    const ms = Date.now() - t0;
    assert.ok(r, `SET_MEM_TABLE of 8 x ${size / GiB} GiB answered within 3 s`);
    assert.equal(M.decodeU64(r.payload), accept ? 0n : 1n, `8 x ${size / GiB} GiB ${accept ? 'accepted' : 'refused'} (in ${ms} ms)`);
    assert.equal(await traffic, 64, 'a -> b forwards meanwhile');
    seq += 64;
  }
  assert.match(d.log(), /guest memory of 56 TiB exceeds this port's limit of 1 TiB \(raise it with tsvs daemon --max-guest-mem\)/);
  // one logger: the port's vhost-user protocol runs in a PMD thread, and its lines come out as the daemon's pino records
  const lines = d.log().split('\n').filter((l) => l.trim() !== '');
  const notJson = lines.filter((l) => {
    try {
      return typeof JSON.parse(l) !== 'object';
    } catch {
      return true;
    }
  });
  assert.deepEqual(notJson, [], 'every line of the daemon log is a JSON record');
  assert.ok(lines.some((l) => /exceeds this port's limit/.test(String((JSON.parse(l) as { msg?: string }).msg))), 'the vhost-user warning is one of them');
  // the reply comes from the port's PMD thread; `show` sees the new table when that thread next publishes it
  await waitFor(async () => (await portState(d, 'big')).memory?.regions === 8, { what: 'the 768 GiB table (8 regions) in tsvs show', interval: 50 });
  assert.ok(alive(d));
});
