/**
 * VXLAN interop with the Linux kernel's own `vxlan` device (the independent peer).
 *
 *   namespace R ("remote host")            namespace S (tsvs daemon)             namespace B (host behind tsvs)
 *   vxk 10.211.0.2/24 (vxlan id 42)
 *   u0 10.210.0.2/24  ---- veth ---- u1 (no address): br0 port vx0 (vxlan, local 10.210.0.1)
 *                                    b1: br0 port p1 (afpacket) ---- veth ---- b0 10.211.0.1/24
 *
 * The kernel on R encapsulates, tsvs decapsulates (and the reverse); tsvs answers the kernel's ARP for
 * 10.210.0.1 and learns R's MAC. Pings of several sizes up to the 1450-byte inner MTU with DF set
 * (fragmentation-free: outer packets of 1500 bytes), a 4 MiB TCP transfer whose SHA-256 must match,
 * per-port counters, drops by reason (a wrong VNI), the megaflow and the underlay checks of the CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { NetNs } from '../harness/netns.js';
import { startDaemon } from '../harness/daemon.js';
import { waitFor } from '../harness/wait.js';

function ping(ns: NetNs, dst: string, count: number, size = 56): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'ping', '-c', String(count), '-i', '0.02', '-W', '2', '-M', 'do', '-s', String(size), dst], { encoding: 'utf8' });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
  }
}

/** A TCP receiver in `ns` that prints "<bytes> <sha256>" when the sender closes. */
const SERVER = `
const net = require('net'); const crypto = require('crypto');
const srv = net.createServer((c) => { const h = crypto.createHash('sha256'); let n = 0;
  c.on('data', (b) => { h.update(b); n += b.length; });
  c.on('end', () => { process.stdout.write(n + ' ' + h.digest('hex') + '\\n'); c.end(); srv.close(); }); });
srv.listen(5001, process.argv[1], () => process.stdout.write('listening\\n'));`;
/** A TCP sender that sends 4 MiB of random bytes and prints "<bytes> <sha256>" of what it sent. */
const CLIENT = `
const net = require('net'); const crypto = require('crypto');
const data = crypto.randomBytes(4 << 20); const sum = crypto.createHash('sha256').update(data).digest('hex');
const c = net.connect(5001, process.argv[1], () => { c.end(data); });
c.on('close', () => process.stdout.write(data.length + ' ' + sum + '\\n'));
c.on('error', (e) => { process.stderr.write(String(e)); process.exit(1); });`;

function runNode(ns: NetNs, script: string, arg: string): { out: () => string; err: () => string; done: Promise<number>; kill: () => void } {
  const p = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script, arg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err += d));
  const done = new Promise<number>((resolve) => p.on('exit', (code) => resolve(code ?? -1)));
  return { out: () => out, err: () => err, done, kill: () => { if (p.exitCode === null) p.kill('SIGKILL'); } };
}

test('tsvs vxlan port <-> Linux kernel vxlan: ARP, ping up to the inner MTU, 4 MiB TCP with checksum, counters', async (t) => {
  const s = NetNs.create({ prefix: 'vx-s' });
  const r = NetNs.create({ prefix: 'vx-r' });
  const b = NetNs.create({ prefix: 'vx-b' });
  t.after(() => { s.delete(); r.delete(); b.delete(); });
  r.addVeth('u0', 'u1', { peer: s });
  b.addVeth('b0', 'b1', { peer: s });
  r.addAddr('u0', '10.210.0.2/24');
  r.ip('link', 'add', 'vxk', 'type', 'vxlan', 'id', '42', 'remote', '10.210.0.1', 'local', '10.210.0.2', 'dstport', '4789', 'dev', 'u0');
  // one TCP segment per skb: no 64 KiB GSO frames on the veth (no ethtool needed)
  r.ip('link', 'set', 'vxk', 'gso_max_segs', '1');
  r.ip('link', 'set', 'vxk', 'up');
  r.addAddr('vxk', '10.211.0.2/24');
  b.ip('link', 'set', 'b0', 'mtu', '1450', 'gso_max_segs', '1');
  b.addAddr('b0', '10.211.0.1/24');
  assert.match(r.ip('-d', 'link', 'show', 'vxk'), /mtu 1450/, 'the kernel gives its vxlan device the underlay MTU - 50');

  const d = await startDaemon({ netns: s.name });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  assert.equal((await d.cli('add-port', 'br0', 'p1', '--type', 'afpacket', '--iface', 'b1')).code, 0);
  // bad options are refused with the option named
  const noRemote = await d.cli('add-port', 'br0', 'vx0', '--type', 'vxlan', '--iface', 'u1');
  assert.notEqual(noRemote.code, 0);
  assert.match(noRemote.stderr, /--remote-ip is required/);
  const badKey = await d.cli('add-port', 'br0', 'vx0', '--type', 'vxlan', '--iface', 'u1', '--remote-ip', '10.210.0.2', '--local-ip', '10.210.0.1', '--key', '99999999');
  assert.match(badKey.stderr, /key '99999999' must be a VNI/);
  const noRoute = await d.cli('add-port', 'br0', 'vx0', '--type', 'vxlan', '--remote-ip', '10.210.0.2');
  assert.notEqual(noRoute.code, 0);
  assert.match(noRoute.stderr, /remote_ip 10\.210\.0\.2.*--(iface|local-ip)/);
  const add = await d.cli('add-port', 'br0', 'vx0', '--type', 'vxlan', '--iface', 'u1', '--remote-ip', '10.210.0.2', '--local-ip', '10.210.0.1', '--key', '42');
  assert.equal(add.code, 0, add.stderr);
  assert.match((await d.cli('show')).stdout, /Port vx0 .*type=vxlan iface=u1 remote_ip=10\.210\.0\.2 local_ip=10\.210\.0\.1 key=42/);

  // R -> B: the kernel ARPs for 10.210.0.1 (tsvs answers), then tunnels
  const small = ping(r, '10.211.0.1', 20);
  assert.match(small, / 0% packet loss/, small + d.log());
  assert.match((await d.cli('show')).stdout, /Port vx0 .* \(underlay u1, next hop 10\.210\.0\.2 at [0-9a-f:]{17} \((arp|tunnel)\)\)/);
  // 1400-byte inner frames (1386-byte IP packets), and the largest that fits the 1450 inner MTU with DF
  for (const size of [1358, 1422]) {
    const big = ping(r, '10.211.0.1', 10, size);
    assert.match(big, / 0% packet loss/, `ICMP payload ${size}: ${big}`);
  }
  // and from B's side (tsvs sends first; the neighbour is known by now)
  assert.match(ping(b, '10.211.0.2', 10, 1422), / 0% packet loss/);

  // 4 MiB over TCP, R -> B, checksummed at both ends
  const srv = runNode(b, SERVER, '10.211.0.1');
  t.after(() => srv.kill());
  await waitFor(() => srv.out().includes('listening'), { what: 'TCP receiver listening in B', describe: srv.err });
  const cli = runNode(r, CLIENT, '10.211.0.1');
  t.after(() => cli.kill());
  const code = await cli.done;
  assert.equal(code, 0, cli.err());
  await waitFor(() => /^\d+ [0-9a-f]{64}$/m.test(srv.out()), { what: 'receiver digest', timeout: 30000, describe: () => srv.out() + srv.err() });
  const sent = cli.out().trim();
  const got = srv.out().split('\n').find((l) => /^\d+ [0-9a-f]{64}$/.test(l));
  assert.equal(got, sent, 'bytes and SHA-256 at the receiver equal the sender\'s');
  assert.match(sent, /^4194304 /);

  // counters: both directions through vx0, nothing dropped for a reason other than unrelated underlay traffic
  const ps = JSON.parse((await d.cli('port-stats', '--json')).stdout) as { port: string; rxPackets: number; txPackets: number; rxBytes: number; drops: Record<string, number> }[];
  const vx = ps.find((p) => p.port === 'vx0')!;
  assert.ok(vx.rxPackets > 2900 && vx.txPackets > 100, JSON.stringify(vx)); // 4 MiB / 1398-byte segments
  for (const reason of Object.keys(vx.drops)) assert.ok(['rx-not-tunnel', 'tx-neigh-unresolved'].includes(reason), `unexpected drop ${reason}: ${JSON.stringify(vx.drops)}`);
  const flows = (await d.cli('dump-dp-flows')).stdout;
  assert.match(flows, /packets:/);

  // a frame for another VNI is counted and dropped, not forwarded
  r.ip('link', 'add', 'vxk2', 'type', 'vxlan', 'id', '43', 'remote', '10.210.0.1', 'local', '10.210.0.2', 'dstport', '4789', 'dev', 'u0');
  r.ip('link', 'set', 'vxk2', 'up');
  r.addAddr('vxk2', '10.212.0.2/24');
  ping(r, '10.212.0.1', 3);
  await waitFor(async () => {
    const p = JSON.parse((await d.cli('port-stats', 'vx0', '--json')).stdout) as { port: string; drops: Record<string, number> }[];
    return (p.find((x) => x.port === 'vx0')?.drops['rx-wrong-vni'] ?? 0) >= 1;
  }, { what: "vx0 counts 'rx-wrong-vni'" });
});
