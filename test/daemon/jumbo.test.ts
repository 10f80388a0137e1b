/**
 * Jumbo frames through the real daemon: namespaces A and B, each with a veth
 * (MTU 9000) whose other end sits in namespace S, where the switch runs with
 * two afpacket ports. With --max-mtu 9000, 8972-byte pings (9014-byte frames)
 * with DF set cross the switch both ways; with the default --max-mtu they
 * are dropped and counted as 'rx-too-big', exactly above the 2048-byte
 * buffer room. A tap port of MTU 9000 carries them too. Ports with an MTU
 * above --max-mtu are refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NetNs } from '../harness/netns.js';
import { startDaemon, type Daemon } from '../harness/daemon.js';
import { rpcCall } from '../../src/daemon/control.js';
import { runPaths } from '../../src/daemon/run-dir.js';
import { bufferLayout } from '../../src/daemon/switch.js';

/** Ethernet + IPv4 + ICMP headers around a ping payload. */
const PING_OVERHEAD = 14 + 20 + 8;

function ping(ns: NetNs, dst: string, size: number, count: number): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'ping', '-M', 'do', '-s', String(size), '-c', String(count), '-i', '0.05', '-W', '1', dst], {
      encoding: 'utf8',
    });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
  }
}

interface StatRow {
  port: string;
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  rxDropped: number;
  drops: Record<string, number>;
}

async function portStats(d: Daemon): Promise<Map<string, StatRow>> {
  const r = await d.cli('port-stats', '--json');
  assert.equal(r.code, 0, r.stderr);
  return new Map((JSON.parse(r.stdout) as StatRow[]).map((s) => [s.port, s]));
}

/** add-port over the control socket (the RPC the CLI sends), with an MTU. */
async function addPortRpc(d: Daemon, params: Record<string, unknown>): Promise<string> {
  try {
    await rpcCall(runPaths(d.runDir).control, 'add-port', params);
    return '';
  } catch (e) {
    return (e as Error).message;
  }
}

function topology(t: { after(fn: () => void | Promise<void>): void }): { s: NetNs; a: NetNs; b: NetNs } {
  const s = NetNs.create({ prefix: 'jumbo-s' });
  const a = NetNs.create({ prefix: 'jumbo-a' });
  const b = NetNs.create({ prefix: 'jumbo-b' });
  t.after(() => {
    s.delete();
    a.delete();
    b.delete();
  });
  a.addVeth('a0', 'a1', { peer: s, mtu: 9000, peerOptions: { mtu: 9000 } });
  b.addVeth('b0', 'b1', { peer: s, mtu: 9000, peerOptions: { mtu: 9000 } });
  a.addAddr('a0', '10.202.0.1/24');
  b.addAddr('b0', '10.202.0.2/24');
  return { s, a, b };
}

async function daemonIn(t: { after(fn: () => void | Promise<void>): void }, s: NetNs, args: string[]): Promise<Daemon> {
  const d = await startDaemon({ netns: s.name, args });
  t.after(async () => {
    await d.stop();
    fs.rmSync(d.runDir, { recursive: true, force: true });
  });
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  for (const [name, iface] of [['p1', 'a1'], ['p2', 'b1']]) {
    const r = await d.cli('add-port', 'br0', name, '--type', 'afpacket', '--iface', iface);
    assert.equal(r.code, 0, r.stderr + d.log());
  }
  return d;
}

test('buffer layout from --max-mtu', () => {
  assert.deepEqual(bufferLayout(1500), { maxMtu: 1500, bufSize: 2176, headroom: 128, room: 2048 });
  assert.equal(bufferLayout(68).bufSize, 2176, 'never below the default buffer');
  assert.equal(bufferLayout(2026).bufSize, 2176);
  assert.equal(bufferLayout(2027).bufSize, 2304);
  assert.equal(bufferLayout(9000).bufSize, 9216);
  assert.equal(bufferLayout(9710).bufSize, 9984);
  for (const m of [68, 1500, 4000, 9000, 9001, 9710]) assert.ok(bufferLayout(m).room >= m + 22, `MTU ${m} + Ethernet + 2 VLAN tags fit`);
  assert.throws(() => bufferLayout(9711), RangeError);
  assert.throws(() => bufferLayout(67), RangeError);
});

test('daemon --max-mtu: bad values and an oversized pool are refused with a usage message', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-jumbo-'));
  try {
    const cli = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../src/cli/main.js');
    const run = (...args: string[]): { code: number; stderr: string } => {
      try {
        execFileSync(process.execPath, [cli, 'daemon', '--run-dir', dir, ...args], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 });
        return { code: 0, stderr: '' };
      } catch (e) {
        const err = e as { status?: number; stderr?: string };
        return { code: err.status ?? -1, stderr: String(err.stderr ?? '') };
      }
    };
    const tooBig = run('--max-mtu', '9711');
    assert.equal(tooBig.code, 2);
    assert.match(tooBig.stderr, /--max-mtu must be an integer in 68\.\.9710, got '9711'/);
    const pool = run('--max-mtu', '9000', '--pool-size', '200000');
    assert.equal(pool.code, 2, pool.stderr);
    assert.match(pool.stderr, /200000 packet buffers of 9216 B .*lower --pool-size or --max-mtu/);
    const help = execFileSync(process.execPath, [cli, 'daemon', '--help'], { encoding: 'utf8' });
    assert.match(help, /--max-mtu MTU/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--max-mtu 9000: 8972-byte pings with DF cross two afpacket ports both ways', async (t) => {
  const { s, a, b } = topology(t);
  const d = await daemonIn(t, s, ['--max-mtu', '9000']);

  const show = await d.cli('show');
  assert.match(show.stdout, /max-mtu 9000: 16384 packet buffers of 9216 B \(frames up to 9088 B\), 144\.\d MiB/, show.stdout);
  assert.match(show.stdout, /Port p1 .*mtu=9000/);
  const js = JSON.parse((await d.cli('show', '--json')).stdout) as { maxMtu: number; bufSize: number; ports: { name: string; mtu?: number }[] }[];
  assert.equal(js[0].maxMtu, 9000);
  assert.equal(js[0].bufSize, 9216);
  assert.deepEqual(js[0].ports.map((p) => p.mtu), [9000, 9000]);
  assert.match(d.log(), /packet buffers: 16384 x 9216 B = 144\.\d MiB/);

  const N = 8;
  const ab = ping(a, '10.202.0.2', 8972, N);
  assert.match(ab, new RegExp(`${N} received, 0% packet loss`), ab + d.log());
  const ba = ping(b, '10.202.0.1', 8972, N);
  assert.match(ba, new RegExp(`${N} received, 0% packet loss`), ba + d.log());

  // every echo request and reply is a 9014-byte frame: both ports received and sent 2N of them
  const frame = 8972 + PING_OVERHEAD;
  const st = await portStats(d);
  for (const name of ['p1', 'p2']) {
    const p = st.get(name)!;
    assert.ok(p.rxPackets >= 2 * N && p.rxBytes >= 2 * N * frame, `${name} rx ${JSON.stringify(p)}`);
    assert.ok(p.txPackets >= 2 * N && p.txBytes >= 2 * N * frame, `${name} tx ${JSON.stringify(p)}`);
    assert.equal(p.drops['rx-too-big'] ?? 0, 0, JSON.stringify(p));
  }
  const flows = await d.cli('dump-dp-flows', '--json');
  const big = (JSON.parse(flows.stdout) as { packets: number; bytes: number }[]).filter((f) => f.packets > 0 && f.bytes / f.packets >= 9000);
  assert.ok(big.length >= 2, `datapath flows carried the jumbo frames: ${flows.stdout}`);

  // port MTUs above --max-mtu are refused, naming the flag; up to it they are set on the device
  const err = await d.cli('add-port', 'br0', 'tj', '--type', 'tap', '--mtu', '9001');
  assert.notEqual(err.code, 0);
  assert.match(err.stderr, /cannot add port tj: mtu 9001 is larger than the switch's --max-mtu 9000 \(packet buffers of 9216 B\); restart the daemon with --max-mtu 9001 or more/);
  const bad = await d.cli('add-port', 'br0', 'tj', '--type', 'tap', '--mtu', 'huge');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--mtu must be an integer in 68\.\.65535, got 'huge'/);
  assert.equal((await d.cli('add-port', 'br0', 'tj', '--type', 'tap', '--mtu', '9000')).code, 0);
  assert.match(s.ip('link', 'show', 'tj'), /mtu 9000/);
  assert.match((await d.cli('show')).stdout, /Port tj .*mtu=9000/);
  // the tap data path both ways: A pings S's own stack through the tap
  s.addAddr('tj', '10.202.0.3/24');
  const at = ping(a, '10.202.0.3', 8972, 4);
  assert.match(at, /4 received, 0% packet loss/, at + d.log());
  const tj = (await portStats(d)).get('tj')!;
  assert.ok(tj.rxPackets >= 4 && tj.rxBytes >= 4 * frame && tj.txPackets >= 4 && tj.txBytes >= 4 * frame, JSON.stringify(tj));
  assert.equal(await addPortRpc(d, { bridge: 'br0', name: 'vj', type: 'vhost-user', mtu: 9000 }), '');
  assert.match((await d.cli('show')).stdout, /Port vj .*type=vhost-user.*mtu=9000/);

  // restarted with a smaller --max-mtu, the stored 9000-byte ports come back in error, the others work
  await d.stop();
  const d2 = await startDaemon({ netns: s.name, runDir: d.runDir });
  t.after(() => d2.stop());
  const show2 = (await d2.cli('show')).stdout;
  assert.match(show2, /Port tj .*ERROR: mtu 9000 is larger than the switch's --max-mtu 1500/, show2);
  assert.match(show2, /Port vj .*ERROR: mtu 9000 is larger/, show2);
  assert.match(d2.log(), /port p1: its device's MTU 9000 is above --max-mtu 1500: frames over 2048 B will be dropped \(rx-too-big\)/);
  assert.match(ping(a, '10.202.0.2', 1000, 2), /2 received/);
});

test('default --max-mtu: jumbo pings are dropped as rx-too-big at the 2048-byte buffer room', async (t) => {
  const { s, a } = topology(t);
  const d = await daemonIn(t, s, []);
  assert.match((await d.cli('show')).stdout, /max-mtu 1500: 16384 packet buffers of 2176 B \(frames up to 2048 B\)/);

  // the largest frame a buffer holds passes; one byte more is dropped and counted
  const fit = 2048 - PING_OVERHEAD;
  assert.match(ping(a, '10.202.0.2', fit, 3), /3 received, 0% packet loss/, d.log());
  const before = (await portStats(d)).get('p1')!;
  const over = ping(a, '10.202.0.2', fit + 1, 3);
  assert.match(over, /0 received, 100% packet loss/, over);
  const N = 4;
  const jumbo = ping(a, '10.202.0.2', 8972, N);
  assert.match(jumbo, /0 received, 100% packet loss/, jumbo);
  const after = (await portStats(d)).get('p1')!;
  assert.equal((after.drops['rx-too-big'] ?? 0) - (before.drops['rx-too-big'] ?? 0), 3 + N, JSON.stringify(after));
  assert.ok(after.rxDropped - before.rxDropped >= 3 + N);
  const p2 = (await portStats(d)).get('p2')!;
  assert.ok(p2.txBytes < 10 * 2048, `nothing big went out of p2: ${JSON.stringify(p2)}`);

  const err = await addPortRpc(d, { bridge: 'br0', name: 'tj', type: 'tap', mtu: 9000 });
  assert.match(err, /mtu 9000 is larger than the switch's --max-mtu 1500 \(packet buffers of 2176 B\)/);
  const vu = await addPortRpc(d, { bridge: 'br0', name: 'vu', type: 'virtio-user', path: '/nonexistent', mtu: 1500 });
  assert.match(vu, /--mtu is not supported for type virtio-user/);
  assert.equal(await addPortRpc(d, { bridge: 'br0', name: 'tj', type: 'tap', mtu: 1500 }), '');
  assert.doesNotMatch((await d.cli('show')).stdout, /ERROR/);
});
