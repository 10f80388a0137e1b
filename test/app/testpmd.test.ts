/**
 * `tsvs testpmd` (the CLI application) against the real DPDK dpdk-testpmd,
 * in both roles, plus its argument errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Testpmd as Dpdk } from '../harness/dpdk.js';
import { CLI } from '../harness/daemon.js';
import { waitFor } from '../harness/wait.js';

interface Report { duration_s: number; ports: { name: string; rx_packets: number; tx_packets: number; rx_bad: number; tx_bytes: number; rx_bytes: number }[] }

function tsvs(args: string[]): { done: Promise<{ code: number; stdout: string; stderr: string }>; pid: number } {
  const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d) => (stdout += d));
  c.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => c.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr })));
  return { done, pid: c.pid! };
}

function tmp(t: { after(fn: () => void): void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-tp-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

for (const [mode, extra] of [['replayed buffers', []], ['a buffer allocated per frame (--tx-buffers 0)', ['--tx-buffers', '0']]] as const) {
test(`tsvs testpmd virtio-user txonly -> DPDK net_vhost rxonly, ${mode}: counts match`, async (t) => {
  const dir = tmp(t);
  const sock = path.join(dir, 'vh.sock');
  const dpdk = Dpdk.start({ vdev: `net_vhost0,iface=${sock},queues=1`, fwdMode: 'rxonly', lcores: '0@1,1@0' });
  t.after(() => dpdk.kill());
  await dpdk.waitFor(/testpmd> /, 30000);
  await dpdk.run('start');
  const r = tsvs(['testpmd', '--port', `virtio-user:path=${sock}`, '--fwd', 'txonly', '--txpkts', '128', '--duration', '2', '--json', '--cpu', '0', ...extra]);
  const out = await r.done;
  assert.equal(out.code, 0, out.stderr);
  const rep = JSON.parse(out.stdout) as Report;
  const sent = rep.ports[0].tx_packets;
  assert.ok(sent > 1000, `sent ${sent}`);
  assert.equal(rep.ports[0].tx_bytes, sent * 128);
  await waitFor(async () => (await dpdk.portStats()).rxPackets >= sent, { what: `DPDK to receive the ${sent} frames tsvs testpmd sent` });
  const st = await dpdk.stopForwarding();
  assert.equal(st.rxPackets, sent, 'DPDK received exactly what tsvs testpmd sent');
  await dpdk.quit();
});
}

test('DPDK virtio-user txonly -> tsvs testpmd vhost-user rxonly: counts match, no bad frames', async (t) => {
  const dir = tmp(t);
  const sock = path.join(dir, 'vh.sock');
  const r = tsvs(['testpmd', '--port', `vhost-user:path=${sock}`, '--fwd', 'rxonly', '--duration', '6', '--json', '--cpu', '0']);
  t.after(() => { try { process.kill(r.pid, 'SIGKILL'); } catch { /* exited */ } });
  await waitFor(() => fs.existsSync(sock), { what: 'tsvs testpmd to listen on its vhost-user socket', timeout: 5000, interval: 50 });
  const dpdk = Dpdk.start({ vdev: `net_virtio_user0,path=${sock},queues=1`, fwdMode: 'txonly', lcores: '0@1,1@0', txpkts: 200 });
  t.after(() => dpdk.kill());
  await dpdk.waitFor(/testpmd> /, 30000);
  await dpdk.run('start');
  await waitFor(async () => (await dpdk.portStats()).txPackets > 20000, { what: 'DPDK to send 20000 frames (tsvs testpmd stops after its 6 s)', timeout: 3000 });
  const st = await dpdk.stopForwarding();
  await dpdk.quit();
  const out = await r.done;
  assert.equal(out.code, 0, out.stderr);
  const rep = JSON.parse(out.stdout) as Report;
  assert.ok(st.txPackets > 1000);
  assert.equal(rep.ports[0].rx_packets, st.txPackets, 'we received exactly what DPDK sent');
  assert.equal(rep.ports[0].rx_bytes, st.txPackets * 200);
  assert.equal(rep.ports[0].rx_bad, 0);
});

test('tsvs testpmd rejects bad arguments with clear errors', async () => {
  const run = (args: string[]): Promise<{ code: number; stderr: string }> =>
    new Promise((resolve) => execFile(process.execPath, [CLI, 'testpmd', ...args], (err, _o, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stderr })));
  let r = await run([]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /at least one --port/);
  r = await run(['--port', 'foo:path=/x']);
  assert.match(r.stderr, /unknown port kind 'foo'/);
  r = await run(['--port', 'virtio-user:path=/x,client=1']);
  assert.match(r.stderr, /unknown option 'client' for virtio-user/);
  r = await run(['--port', 'virtio-user:path=/x', '--txpkts', '10']);
  assert.match(r.stderr, /--txpkts must be an integer in 64..9000/);
  r = await run(['--port', 'virtio-user:path=/x', '--tx-buffers', '5000']);
  assert.match(r.stderr, /--tx-buffers must be an integer in 0..4096/);
  r = await run(['--port', 'virtio-user:path=/x', '--fwd', 'sideways']);
  assert.match(r.stderr, /--fwd must be one of/);
  r = await run(['--bogus']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Unknown option '--bogus'/);
});
