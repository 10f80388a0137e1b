import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UnixListener, UnixSocket } from '../../src/sys/socket.js';
import { SharedRegion } from '../../src/mem/region.js';
import * as libc from '../../src/sys/libc.js';
import { watchReadable } from '../../src/sys/poll.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function waitReadable(fd: number, ms = 10000): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      w.close();
      reject(new Error('timeout waiting for fd ' + fd));
    }, ms);
    const w = watchReadable(fd, () => {
      clearTimeout(t);
      w.close();
      resolve();
    });
  });
}

test('two processes share a memfd and an eventfd over SCM_RIGHTS', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-fd-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sockPath = path.join(dir, 's.sock');
  const before = openFds();
  const lst = UnixListener.listen(sockPath);
  const region = SharedRegion.create('test', 8192);
  const efd = libc.eventfd();
  region.bytes[0] = 0xab;
  region.bytes[8191] = 0xcd;
  const child = spawn(process.execPath, [path.join(here, '../fixtures/fd-peer.js'), sockPath], { stdio: 'inherit' });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await waitReadable(lst.fd);
  const conn = lst.accept();
  assert.ok(conn);
  const hdr = new Uint8Array(4);
  new DataView(hdr.buffer).setUint32(0, 8192, true);
  conn.sendAll(hdr, [region.fd, efd]);
  await waitReadable(efd);
  assert.equal(libc.eventfdRead(efd), 7);
  assert.equal(libc.eventfdRead(efd), 0, 'counter reset after read');
  await waitReadable(conn.fd);
  const r = new Uint8Array(1);
  assert.equal(conn.recv(r, []), 1);
  assert.equal(r[0], 1, 'child saw the parent bytes');
  assert.equal(region.bytes[1], 0x5a);
  assert.equal(region.bytes[8190], 0xa5);
  const code = await new Promise<number | null>((res) => (child.exitCode !== null ? res(child.exitCode) : child.on('exit', res)));
  assert.equal(code, 0);
  conn.close();
  lst.close();
  region.close();
  libc.close(efd);
  assert.equal(openFds(), before, 'no fd leaked');
});

test('up to 8 fds travel in one message, both directions', () => {
  const [a, b] = UnixSocket.pair();
  const sent = Array.from({ length: 8 }, () => libc.eventfd());
  assert.equal(a.send(new Uint8Array([1, 2, 3]), sent), 3);
  const got: number[] = [];
  const buf = new Uint8Array(16);
  assert.equal(b.recv(buf, got), 3);
  assert.equal(got.length, 8);
  libc.eventfdWrite(sent[5], 3);
  assert.equal(libc.eventfdRead(got[5]), 3, 'received fd refers to the same eventfd');
  const back: number[] = [];
  assert.equal(b.send(new Uint8Array([9]), [got[0], got[1]]), 1);
  assert.equal(a.recv(buf, back), 1);
  assert.equal(back.length, 2);
  assert.throws(() => a.send(new Uint8Array([1]), new Array(9).fill(sent[0])), /EINVAL/);
  [...sent, ...got, ...back].forEach((fd) => libc.close(fd));
  a.close();
  b.close();
});

test('error paths are typed SysErrors and leak no fds', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-err-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const before = openFds();
  // connect to nothing
  assert.throws(() => UnixSocket.connect(path.join(dir, 'none.sock')), (e: unknown) => e instanceof libc.SysError && e.code === 'ENOENT' && e.call === 'connect');
  // stale socket file gets replaced, live one is EADDRINUSE
  const p = path.join(dir, 'x.sock');
  const l1 = UnixListener.listen(p);
  assert.throws(() => UnixListener.listen(p), (e: unknown) => e instanceof libc.SysError && e.code === 'EADDRINUSE');
  // closed peer: recv gives EOF, send gives EPIPE
  const [a, b] = UnixSocket.pair();
  b.close();
  assert.equal(a.recv(new Uint8Array(8), []), 0);
  assert.throws(() => a.send(new Uint8Array([1])), (e: unknown) => e instanceof libc.SysError && e.code === 'EPIPE');
  a.close();
  // bad sizes
  assert.throws(() => SharedRegion.create('bad', 0), RangeError);
  assert.throws(() => libc.mmap(-1, 4096), (e: unknown) => e instanceof libc.SysError && e.code === 'EBADF');
  assert.throws(() => libc.ftruncate(-1, 10), (e: unknown) => e instanceof libc.SysError && e.code === 'EBADF');
  assert.throws(() => libc.close(-1), (e: unknown) => e instanceof libc.SysError && e.code === 'EBADF');
  l1.close();
  assert.equal(openFds(), before, 'no fd leaked');
});

test('fd limit gives EMFILE, not a crash', async () => {
  const script = `
    import * as libc from ${JSON.stringify(path.join(here, '../../src/sys/libc.js'))};
    const fds = [];
    try { for (;;) fds.push(libc.eventfd()); }
    catch (e) { console.log(e.name + ' ' + e.code + ' ' + e.call); }
    fds.forEach((fd) => libc.close(fd));
  `;
  const out = await new Promise<string>((resolve, reject) => {
    const c = spawn('prlimit', ['--nofile=64', process.execPath, '--input-type=module', '-e', script]);
    let s = '';
    c.stdout.on('data', (d) => (s += d));
    c.stderr.on('data', (d) => (s += d));
    c.on('error', reject);
    c.on('exit', () => resolve(s));
  });
  assert.match(out, /SysError EMFILE eventfd/);
});
