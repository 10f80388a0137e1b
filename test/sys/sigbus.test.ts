/**
 * The SIGBUS guard on its own, in child processes (a fault the guard does not
 * own must kill the process, as without the guard):
 *  - a truncated memfd mapping that is guarded reads zeros; the fault is
 *    counted with its address and reported to the watcher, in a worker thread
 *    too (one handler per process, found by the worker through sigaction);
 *  - the same truncation in a mapping that is not guarded kills the process with SIGBUS;
 *  - a SIGBUS sent with kill(2) still kills the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { sigbusGuardSupported } from '../../src/sys/sigbus.js';

const libcUrl = new URL('../../src/sys/libc.js', import.meta.url).href;
const sigbusUrl = new URL('../../src/sys/sigbus.js', import.meta.url).href;

const child = (mode: string): string => `
import { Worker, isMainThread } from 'node:worker_threads';
import * as libc from '${libcUrl}';
import { sigbusGuard } from '${sigbusUrl}';
const mode = ${JSON.stringify(mode)};
async function truncateAndRead(guarded) {
  const g = sigbusGuard();
  if (!g) throw new Error('no guard');
  const size = 1 << 20;
  const fd = libc.memfdCreate('sigbus-test');
  libc.ftruncate(fd, size);
  const addr = libc.mmap(fd, size, 0);
  const v = new Uint8Array(libc.view(addr, size));
  v[0x3000] = 9;
  const slot = guarded ? g.register(addr, size, libc.fstat(fd).blksize) : -1;
  const seen = new Promise((r) => guarded ? g.watch(slot, r, 5) : r(null));
  libc.ftruncate(fd, 0);
  let sum = 0;
  for (let o = 0; o < size; o += 4096) sum += v[o];  // every page faults
  v[0x3000] = 5;                                      // a write to a replaced page goes nowhere harmful
  // the guard's poll timer is unref'd (a daemon has other handles): hold this child's event loop open until it reports
  const keepAlive = setInterval(() => {}, 1000);
  const f = await seen;
  clearInterval(keepAlive);
  const r = { sum, fault: guarded ? g.fault(slot) : null, watched: f, base: addr, end: addr + size, worker: !isMainThread };
  g.unregister(slot);
  libc.munmap(addr, size);
  libc.close(fd);
  return r;
}
if (mode === 'worker') {
  if (isMainThread) {
    const { sigbusGuard } = await import('${sigbusUrl}');
    sigbusGuard(); // installed by the main thread, found by the worker
    const w = new Worker(new URL(import.meta.url), { workerData: 1 });
    w.on('message', (m) => { console.log(JSON.stringify(m)); });
    w.on('error', (e) => { console.error(e); process.exit(3); });
  } else {
    const { parentPort } = await import('node:worker_threads');
    parentPort.postMessage(await truncateAndRead(true));
  }
} else if (mode === 'guarded') {
  console.log(JSON.stringify(await truncateAndRead(true)));
} else if (mode === 'unguarded') {
  sigbusGuard();
  await truncateAndRead(false);
  console.log('survived');
} else if (mode === 'kill') {
  sigbusGuard();
  process.kill(process.pid, 'SIGBUS');
  setTimeout(() => console.log('survived'), 300);
}
`;

let dir = '';

function run(mode: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const file = path.join(dir, `${mode}.mjs`);
  fs.writeFileSync(file, child(mode));
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

test('the SIGBUS guard absorbs faults in guarded mappings only (main thread and worker); others keep the default action', (t) => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-sigbus-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  assert.ok(sigbusGuardSupported(), `this test machine must be x86-64 Linux (is ${process.platform}/${process.arch})`);
  for (const mode of ['guarded', 'worker']) {
    const r = run(mode);
    assert.equal(r.status, 0, `${mode}: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim()) as { sum: number; fault: { count: number; addr: number }; watched: { count: number; addr: number }; base: number; end: number; worker: boolean };
    assert.equal(out.worker, mode === 'worker');
    assert.equal(out.sum, 0, 'the truncated pages read as zeros');
    assert.equal(out.fault.count, 256, 'one fault per 4 KiB page, the write to a replaced page none');
    assert.ok(out.fault.addr >= out.base && out.fault.addr < out.end, 'fault address inside the mapping');
    assert.ok(out.watched && out.watched.count >= 1, 'the watcher was told');
  }
  const u = run('unguarded');
  assert.equal(u.signal, 'SIGBUS', `unguarded mapping: the process dies of SIGBUS (status ${u.status}, ${u.stdout}${u.stderr})`);
  assert.doesNotMatch(u.stdout, /survived/);
  const k = run('kill');
  assert.equal(k.signal, 'SIGBUS', `kill -BUS: the process dies (status ${k.status}, ${k.stdout}${k.stderr})`);
});
