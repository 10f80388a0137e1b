/**
 * VXLAN ports configured the OVS way: a real private ovsdb-server, unchanged waiting `ovs-vsctl`
 * (`type=vxlan options:remote_ip=... options:key=...`, then `options:key=flow`), tsvs as the
 * ovs-vswitchd, and the Linux kernel's `vxlan` device as the far end, so that "applied" means frames
 * really cross the tunnel.
 *
 *   namespace R (remote host)                    namespace S (tsvs --ovsdb)                 namespace B
 *   vxk 10.213.0.2/24 (vxlan id 42)
 *   u0 10.212.0.2/24 ---- veth ---- u1 (no address; route 10.212.0.2/32 dev u1): vx0 (local 10.212.0.1)
 *                                   b1: system port ---- veth ---- b0 10.213.0.1/24
 *
 * The underlay is not named anywhere in OVSDB: as with OVS, tsvs takes the device of the kernel's route
 * to remote_ip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { NetNs } from '../harness/netns.js';
import { startDaemon } from '../harness/daemon.js';
import { OvsdbServer } from '../harness/ovsdb.js';
import { waitFor } from '../harness/wait.js';

function ping(ns: NetNs, dst: string, count: number): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'ping', '-c', String(count), '-i', '0.02', '-W', '2', dst], { encoding: 'utf8' });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
  }
}

test('ovs-vsctl type=vxlan (options:remote_ip, key, local_ip; then key=flow) through a real ovsdb-server: tsvs applies it, pings cross to the kernel vxlan', async (t) => {
  const db = await OvsdbServer.start();
  t.after(() => db.stop());
  const s = NetNs.create({ prefix: 'vxo-s' });
  const r = NetNs.create({ prefix: 'vxo-r' });
  const b = NetNs.create({ prefix: 'vxo-b' });
  t.after(() => { s.delete(); r.delete(); b.delete(); });
  r.addVeth('u0', 'u1', { peer: s });
  b.addVeth('b0', 'b1', { peer: s });
  s.ip('route', 'add', '10.212.0.2/32', 'dev', 'u1');
  r.addAddr('u0', '10.212.0.2/24');
  r.ip('link', 'add', 'vxk', 'type', 'vxlan', 'id', '42', 'remote', '10.212.0.1', 'local', '10.212.0.2', 'dstport', '4789', 'dev', 'u0');
  r.ip('link', 'set', 'vxk', 'up');
  r.addAddr('vxk', '10.213.0.2/24');
  b.ip('link', 'set', 'b0', 'mtu', '1450');
  b.addAddr('b0', '10.213.0.1/24');

  const d = await startDaemon({ netns: s.name, args: ['--ovsdb', db.remote, '--ovsdb-stats-interval', '300'] });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  const vsctl = async (...args: string[]): Promise<{ stdout: string; stderr: string }> => {
    const x = await db.vsctl(args);
    assert.equal(x.code, 0, `ovs-vsctl ${args.join(' ')}: rc ${x.code} ${x.stderr}`);
    return x;
  };
  const show = async (): Promise<string> => (await d.cli('show')).stdout;

  await vsctl('add-br', 'tbr0', '--', 'set', 'bridge', 'tbr0', 'datapath_type=netdev');
  await vsctl('add-port', 'tbr0', 'b1', '--', 'set', 'Interface', 'b1', 'ofport_request=1');
  // exactly the command of the issue (a waiting ovs-vsctl: returns once tsvs has applied it)
  const add = await vsctl('add-port', 'tbr0', 'vx0', '--', 'set', 'Interface', 'vx0', 'type=vxlan', 'options:remote_ip=10.212.0.2', 'options:key=42', 'options:local_ip=10.212.0.1', 'ofport_request=2');
  assert.doesNotMatch(add.stderr, /Error detected/, add.stderr);
  assert.equal((await vsctl('get', 'Interface', 'vx0', 'ofport')).stdout.trim(), '2');
  assert.equal((await vsctl('get', 'Interface', 'vx0', 'error')).stdout.trim(), '[]');
  assert.match(await show(), /Port vx0 .*type=vxlan .*remote_ip=10\.212\.0\.2 local_ip=10\.212\.0\.1 key=42/);
  assert.equal((await d.cli('add-flow', 'tbr0', 'in_port=1,actions=output:2')).code, 0);
  assert.equal((await d.cli('add-flow', 'tbr0', 'in_port=2,actions=output:1')).code, 0);

  const p1 = ping(r, '10.213.0.1', 5);
  assert.match(p1, / 0% packet loss/, p1 + d.log());
  // (the PMD thread publishes the resolved next hop to `show` after the fact: wait for it)
  await waitFor(async () => /Port vx0 .* \(underlay u1, next hop 10\.212\.0\.2 at [0-9a-f:]{17}/.test(await show()),
    { what: 'show: the underlay came from the route to remote_ip, next hop resolved', describe: show });
  await waitFor(async () => Number((await vsctl('get', 'Interface', 'vx0', 'statistics:rx_packets')).stdout.trim()) >= 5, { what: 'vx0 rx_packets in OVSDB statistics' });

  // key=flow: the VNI comes from set_field:N->tun_id, and tun_id is matched on receive
  await vsctl('set', 'Interface', 'vx0', 'options:key=flow');
  assert.match(await show(), /Port vx0 .*type=vxlan .*remote_ip=10\.212\.0\.2 .*key=flow/);
  assert.equal((await d.cli('del-flows', 'tbr0')).code, 0);
  assert.equal((await d.cli('add-flow', 'tbr0', 'in_port=1,actions=set_field:42->tun_id,output:2')).code, 0);
  assert.equal((await d.cli('add-flow', 'tbr0', 'tun_id=42,in_port=2,actions=output:1')).code, 0);
  const p2 = ping(r, '10.213.0.1', 5);
  assert.match(p2, / 0% packet loss/, p2 + d.log());
  // a VNI the rules do not take: no answers (the kernel's VNI 42 alone is let through)
  assert.equal((await d.cli('del-flows', 'tbr0')).code, 0);
  assert.equal((await d.cli('add-flow', 'tbr0', 'in_port=1,actions=set_field:42->tun_id,output:2')).code, 0);
  assert.equal((await d.cli('add-flow', 'tbr0', 'tun_id=7,in_port=2,actions=output:1')).code, 0);
  assert.match(ping(r, '10.213.0.1', 3), / 100% packet loss/);

  // what tsvs cannot do is refused the OVS way: the row gets an error, ovs-vsctl says so
  const bad = await db.vsctl(['add-port', 'tbr0', 'vx9', '--', 'set', 'Interface', 'vx9', 'type=vxlan', 'options:remote_ip=flow']);
  assert.equal(bad.code, 0);
  assert.match(bad.stderr, /Error detected while setting up 'vx9'.*remote_ip=flow is not supported/);
  assert.equal((await vsctl('get', 'Interface', 'vx9', 'ofport')).stdout.trim(), '-1');
  await vsctl('del-port', 'tbr0', 'vx0');
  assert.doesNotMatch(await show(), /Port vx0 /);
});
