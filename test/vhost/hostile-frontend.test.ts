/**
 * Hostile frontends against the backend (issue 18, defects 3 and 9): a message dribbled one byte per
 * sendmsg with 8 fds on each byte; a guest MTU above the switch's --max-mtu (and the MTU left behind
 * after the guest goes); a flood of rejected messages (log rate limit); a frontend that sends 3
 * header bytes and stops. Each is refused, counted and logged, only that connection is dropped, and
 * the port (and another port) keeps serving frontends. Fds are counted in /proc/self/fd of this
 * process, which hosts the backends.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as libc from '../../src/sys/libc.js';
import { UnixSocket } from '../../src/sys/socket.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import * as M from '../../src/vhost/messages.js';
import type { Logger } from '../../src/vhost/connection.js';
import { FakeGuest, ReplyReader, dpdkSession, sendScript, openFdCount } from '../fixtures/vhost-session.js';
import { waitFor } from '../harness/wait.js';

const R = M.Req;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function memLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, msg) => lines.push(`${level}: ${msg}`) };
}

/** Play the DPDK start sequence on sock; resolves when b's link is up. */
async function session(b: VhostUserBackend, sock: UnixSocket, g: FakeGuest): Promise<void> {
  const rd = new ReplyReader(sock);
  for (const msg of dpdkSession(g)) {
    assert.ok(sendScript(sock, g, msg));
    const spec = M.FRONTEND_REQUESTS.get(msg.request);
    if (spec && (spec.reply !== 'ack' || msg.flags & M.FLAG_NEED_REPLY)) assert.ok(await rd.next(), `reply to ${M.requestName(msg.request)}`);
  }
  await waitFor(() => b.linkUp, { what: 'link up', timeout: 3000, interval: 2 });
}

function pairOn(b: VhostUserBackend): UnixSocket {
  const [ours, theirs] = UnixSocket.pair();
  assert.ok(b.attachSocket(theirs));
  return ours;
}

test('a message sent one byte per sendmsg with 8 fds on each byte: at most 8 fds held, that connection dropped, other ports unaffected', async () => {
  const g = new FakeGuest();
  const log = memLogger();
  const victim = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice(), logger: log, name: 'victim' });
  const other = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice(), logger: log, name: 'other' });
  const otherSock = pairOn(other);
  await session(other, otherSock, g);

  const attacker = pairOn(victim);
  const efd = libc.eventfd();
  const base = openFdCount();
  let maxHeld = 0;
  // SET_MEM_TABLE header + a full 8-region payload, one byte at a time
  const msg = new Uint8Array(M.HDR_SIZE + 8 + 32 * 8);
  M.encodeHeader(msg, 0, R.SET_MEM_TABLE, M.VERSION, msg.length - M.HDR_SIZE);
  let sent = 0;
  for (; sent < msg.length; sent++) {
    try {
      attacker.send(msg.subarray(sent, sent + 1), [efd, efd, efd, efd, efd, efd, efd, efd]);
    } catch {
      break; // the backend hung up
    }
    await sleep(1);
    maxHeld = Math.max(maxHeld, openFdCount() - base);
    if (victim.stats.closeReasons['too-many-fds']) break;
  }
  await waitFor(() => !victim.connected, { what: 'attacker dropped', timeout: 3000, interval: 2 });
  await waitFor(() => openFdCount() - base <= -1, { what: "the dropped connection's fds and socket closed", timeout: 3000, interval: 2 });
  assert.ok(maxHeld <= 8, `at most one message's worth of fds held at any time (held ${maxHeld} after ${sent + 1} bytes)`);
  assert.equal(openFdCount() - base, -1, 'every received fd closed, and the dropped connection\'s own socket');
  assert.equal(victim.stats.closeReasons['too-many-fds'], 1);
  assert.ok(log.lines.some((l) => /victim: closing frontend connection: 16 fds received for one message .*limit is 8 \[too-many-fds\]/.test(l)), log.lines.join('\n'));
  // the other port never noticed; the victim serves the next frontend
  assert.ok(other.linkUp);
  const next = pairOn(victim);
  await session(victim, next, g);
  attacker.close();
  next.close();
  otherSock.close();
  libc.closeQuiet(efd);
  await waitFor(() => !victim.connected && !other.connected, { what: '!victim.connected && !other.connected', timeout: 3000, interval: 2 });
  await victim.close();
  await other.close();
  g.close();
});

test("NET_SET_MTU above the switch's max MTU is refused and counted; the guest's MTU is forgotten when it leaves", async () => {
  const g = new FakeGuest();
  const log = memLogger();
  const dev = new NetDevice({ mtu: 1500, maxMtu: 1500 });
  const b = new VhostUserBackend({ path: '/nonexistent', device: dev, logger: log, name: 'p' });
  const sock = pairOn(b);
  await session(b, sock, g);
  const rd = new ReplyReader(sock);
  const setMtu = async (mtu: number): Promise<bigint> => {
    sendScript(sock, g, { request: R.NET_SET_MTU, flags: M.VERSION | M.FLAG_NEED_REPLY, payload: M.encodeU64(BigInt(mtu)), fds: [] });
    const r = await rd.next();
    assert.ok(r);
    return M.decodeU64(r.payload);
  };
  assert.notEqual(await setMtu(65535), 0n, 'refused (nack)');
  assert.notEqual(await setMtu(9000), 0n, 'refused (nack)');
  assert.equal(dev.mtu, 1500);
  assert.equal(dev.mtuRefused, 2);
  assert.ok(log.lines.some((l) => /NET_SET_MTU: refused: MTU 9000 is above the switch's largest \(1500, --max-mtu\)/.test(l)), log.lines.join('\n'));
  assert.equal(await setMtu(1400), 0n, 'a smaller MTU is fine');
  assert.equal(dev.mtu, 1400);
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  assert.equal(dev.mtu, 1500, 'back to the configured MTU once the guest is gone');
  await b.close();
  g.close();
});

test('a flood of rejected messages logs at most 10 warnings per 10 s per port, counting the rest', async () => {
  const g = new FakeGuest();
  const log = memLogger();
  const b = new VhostUserBackend({ path: '/nonexistent', device: new NetDevice(), logger: log, name: 'p' });
  const sock = pairOn(b);
  for (let i = 0; i < 200; i++) {
    // a ring index out of range: rejected, the connection stays
    sendScript(sock, g, { request: R.SET_VRING_NUM, flags: M.VERSION, payload: M.encodeState({ index: 99, num: 256 }), fds: [] });
  }
  await waitFor(() => (b.stats.errors['bad-value'] ?? 0) === 200, { what: '200 rejections', timeout: 5000, interval: 2 });
  assert.ok(b.connected, 'the connection stays (the messages were only refused)');
  const warns = (): string[] => log.lines.filter((l) => l.startsWith('warn:'));
  assert.equal(warns().length, 10, warns().join('\n'));
  assert.equal(b.stats.suppressedWarnings, 190);
  sock.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  assert.match(warns().at(-1)!, /p: 190 warnings about this frontend's messages were suppressed \(rate limit\)/);
  await b.close();
  g.close();
});

test('a frontend that sends 3 header bytes and stops is dropped after the message timeout; the server port keeps listening', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-hf-'));
  const g = new FakeGuest();
  const log = memLogger();
  const sockPath = path.join(dir, 'p.sock');
  const b = new VhostUserBackend({ path: sockPath, device: new NetDevice(), logger: log, name: 'p', messageTimeoutMs: 300 });
  b.start();
  const stuck = UnixSocket.connect(sockPath);
  stuck.send(Uint8Array.from([1, 0, 0]));
  await waitFor(() => b.connected, { what: 'connected', timeout: 2000, interval: 2 });
  const t0 = Date.now();
  await waitFor(() => (b.stats.closeReasons['message-timeout'] ?? 0) === 1, { what: 'message timeout', timeout: 5000, interval: 2 });
  assert.ok(Date.now() - t0 < 3000);
  assert.ok(log.lines.some((l) => /closing frontend connection: incomplete message after \d+ ms \(3 of 12 header bytes\) \[message-timeout\]/.test(l)), log.lines.join('\n'));
  const next = UnixSocket.connect(sockPath);
  await waitFor(() => b.connected, { what: 'next frontend accepted', timeout: 2000, interval: 2 });
  await session(b, next, g);
  // a slow but complete message is fine: header in two parts 100 ms apart
  const hdr = new Uint8Array(M.HDR_SIZE);
  M.encodeHeader(hdr, 0, R.GET_FEATURES, M.VERSION, 0);
  next.send(hdr.subarray(0, 5));
  await sleep(100);
  next.send(hdr.subarray(5));
  const r = await new ReplyReader(next).next();
  assert.ok(r && r.hdr.request === R.GET_FEATURES);
  stuck.close();
  next.close();
  await waitFor(() => !b.connected, { what: '!b.connected', timeout: 3000, interval: 2 });
  await b.close();
  g.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
