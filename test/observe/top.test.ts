/**
 * tsvs top in a real terminal (tmux: send-keys / capture-pane) against a
 * switch carrying DPDK testpmd traffic: rates per port and PMD, sort keys,
 * picking a port, quitting; and plain text when stdout is not a terminal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { startDaemon, CLI } from '../harness/daemon.js';
import { requireTestpmd } from '../harness/dpdk.js';
import { macswapPair } from '../harness/observe.js';
import { waitFor } from '../harness/wait.js';

function tmux(sock: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('tmux', ['-S', sock, ...args], { timeout: 10000, env: { ...process.env, TERM: 'xterm-256color' } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Numbers of a `tsvs top` port row: [rxPps, rxBps, txPps, txBps, drops/s] (SI suffixes expanded). */
function portRow(screen: string, name: string): number[] | undefined {
  const line = screen.split('\n').find((l) => l.startsWith(name + ' '));
  if (!line) return undefined;
  const f = line.trim().split(/\s+/);
  const num = (s: string): number => Number(s.replace(/[kMGT]$/, '')) * ({ k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[s.slice(-1)] ?? 1);
  return f.slice(3, 8).map(num);
}

test('tsvs top: live terminal view in tmux under testpmd traffic; keys sort, pick and quit; plain text off a terminal', async (t) => {
  requireTestpmd();
  if (!fs.existsSync('/usr/bin/tmux')) throw new Error('tmux is not installed (apt-get install tmux): the top test drives a terminal with it');
  const d = await startDaemon({ args: ['--pmd-cpus', '1'] });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-top-'));
  const sock = path.join(tmp, 'tmux.sock');
  t.after(async () => {
    await tmux(sock, 'kill-server');
    await d.stop();
    fs.rmSync(d.runDir, { recursive: true, force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  for (const n of ['vm1', 'vm2', 'vm3']) assert.equal((await d.cli('add-port', 'br0', n, '--type', 'vhost-user')).code, 0);
  const tp = await macswapPair(t, d);
  await tp.run('start tx_first 8');

  const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} top --run-dir ${JSON.stringify(d.runDir)}`;
  const s = await tmux(sock, 'new-session', '-d', '-s', 'top', '-x', '160', '-y', '40', cmd);
  assert.equal(s.code, 0, s.stderr);
  const screen = async (): Promise<string> => (await tmux(sock, 'capture-pane', '-p', '-t', 'top')).stdout;

  // live rates: vm1 and vm2 move packets both ways, the PMD is busy, the caches hit
  const first = await waitFor(async () => {
    const sc = await screen();
    const v1 = portRow(sc, 'vm1');
    const v2 = portRow(sc, 'vm2');
    return v1 && v2 && v1[0] > 1000 && v1[2] > 1000 && v2[0] > 1000 ? sc : undefined;
  }, { what: 'rates on the screen', timeout: 20000, interval: 250 });
  assert.match(first, /^tsvs top - \d\d:\d\d:\d\d UTC/m);
  const pmdLine = first.split('\n').find((l) => /^\s+0\s+1\s/.test(l));
  assert.ok(pmdLine, `PMD 0 on CPU 1:\n${first}`);
  const [, , busy, nsPkt, , emc, mega] = pmdLine.trim().split(/\s+/);
  assert.ok(Number(busy) > 0 && Number(nsPkt) > 0, pmdLine);
  assert.ok(Number(emc) + Number(mega) > 90, `cache hits: ${pmdLine}`);
  assert.match(first, /TOP FLOWS/);
  const flowLine = first.split('\n').find((l) => l.startsWith('pmd ') && /in_port=vm1/.test(l));
  assert.ok(flowLine, first);
  assert.ok(!/^pmd\s+0\s+0\s/.test(flowLine), `a busy flow has a rate: ${flowLine}`);
  assert.match(first, / q quit /, 'key help on the last line');

  // keys: sort by name, pick the first port (vm1), its detail; drops; quit
  await tmux(sock, 'send-keys', '-t', 'top', 'n');
  await waitFor(async () => /PORT\*/.test(await screen()), { what: 'sorted by name', timeout: 15000, interval: 100 });
  const order = (await screen()).split('\n').filter((l) => /^vm\d /.test(l)).map((l) => l.slice(0, 3));
  assert.deepEqual(order, ['vm1', 'vm2', 'vm3']);
  await tmux(sock, 'send-keys', '-t', 'top', 'j');
  const picked = await waitFor(async () => {
    const sc = await screen();
    return /^port vm1: rx \d+ packets, tx \d+ packets in all; polled by pmd 0/m.test(sc) ? sc : undefined;
  }, { what: 'vm1 picked', timeout: 15000, interval: 100 });
  assert.match(picked, /FLOWS FROM vm1/);
  await tmux(sock, 'send-keys', '-t', 'top', 'j');
  await waitFor(async () => /^port vm2: /m.test(await screen()), { what: 'vm2 picked', timeout: 15000, interval: 100 });
  await tmux(sock, 'send-keys', '-t', 'top', 'd');
  await waitFor(async () => /DROP\/S\*/.test(await screen()), { what: 'sorted by drops', timeout: 15000, interval: 100 });
  await tmux(sock, 'send-keys', '-t', 'top', 'q');
  await waitFor(async () => (await tmux(sock, 'has-session', '-t', 'top')).code !== 0, { what: 'top to quit', timeout: 15000, interval: 100 });

  // not a terminal: plain text frames, no escape sequences
  const plain = await new Promise<{ stdout: string; code: number }>((resolve) => {
    execFile(process.execPath, [CLI, 'top', '--count', '2', '--interval', '0.5', '--run-dir', d.runDir], { timeout: 20000 }, (err, stdout) => resolve({ stdout, code: err ? 1 : 0 }));
  });
  assert.equal(plain.code, 0);
  assert.doesNotMatch(plain.stdout, /\x1b/);
  assert.equal(plain.stdout.match(/^tsvs top - /gm)?.length, 2);
  assert.ok((portRow(plain.stdout.split('\n\n\n')[0], 'vm1') ?? [0])[0] > 0, plain.stdout);
  await tp.stopForwarding();
  await tp.quit();
});
