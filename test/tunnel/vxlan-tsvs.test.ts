/**
 * Two tsvs daemons ("hosts" A and B, each in its own namespace) joined by a VXLAN tunnel over a veth
 * underlay, with DPDK testpmd traffic and exact counts:
 *
 *   testpmd port 0 (virtio-user) - A:vm1 (vhost-user) - A:vx0 (vxlan 10.220.0.1 -> .2, key 7) = veth =
 *   B:vx0 (vxlan, key 7) - B:vm2 (vhost-user) - testpmd port 1
 *
 * The first frames resolve the next hops by ARP (tsvs to tsvs), then every frame testpmd sends on
 * one side arrives on the other, counted at each hop. Also: options:key=flow on B with
 * set_field:N->tun_id rules and a tun_id match choosing the output, and the tunnel fields in B's
 * megaflows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NetNs } from '../harness/netns.js';
import { startDaemon, type Daemon } from '../harness/daemon.js';
import { Testpmd } from '../harness/dpdk.js';
import { waitFor } from '../harness/wait.js';

const M1 = '02:00:00:00:00:01';
const M2 = '02:00:00:00:00:02';

interface PortJson { port: string; rxPackets: number; txPackets: number; rxDropped: number; txDropped: number; drops: Record<string, number> }

async function json<T>(d: Daemon, ...args: string[]): Promise<T> {
  const r = await d.cli(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

async function stats(d: Daemon): Promise<Record<string, PortJson>> {
  return Object.fromEntries((await json<PortJson[]>(d, 'port-stats')).map((p) => [p.port, p]));
}

async function ok(d: Daemon, ...args: string[]): Promise<void> {
  const r = await d.cli(...args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
}

test('tsvs <-> tsvs over VXLAN: DPDK testpmd both ways with exact counts; key=flow with set_field and tun_id matches', async (t) => {
  const sa = NetNs.create({ prefix: 'vx-ha' });
  const sb = NetNs.create({ prefix: 'vx-hb' });
  t.after(() => { sa.delete(); sb.delete(); });
  sa.addVeth('ua', 'ub', { peer: sb });
  const a = await startDaemon({ netns: sa.name });
  t.after(async () => { await a.stop(); fs.rmSync(a.runDir, { recursive: true, force: true }); });
  const b = await startDaemon({ netns: sb.name });
  t.after(async () => { await b.stop(); fs.rmSync(b.runDir, { recursive: true, force: true }); });
  for (const [d, vm, local, remote] of [[a, 'vm1', '10.220.0.1', '10.220.0.2'], [b, 'vm2', '10.220.0.2', '10.220.0.1']] as const) {
    await ok(d, 'add-br', 'br0');
    await ok(d, 'add-port', 'br0', vm, '--type', 'vhost-user');
    await ok(d, 'add-port', 'br0', 'vx0', '--type', 'vxlan', '--iface', d === a ? 'ua' : 'ub', '--local-ip', local, '--remote-ip', remote, '--key', '7');
    await ok(d, 'del-flows', 'br0');
    await ok(d, 'add-flow', 'br0', `in_port=${vm},actions=output:vx0`);
    await ok(d, 'add-flow', 'br0', `in_port=vx0,actions=output:${vm}`);
  }

  const tp = Testpmd.start({
    vdev: [`net_virtio_user0,path=${path.join(a.runDir, 'vm1')},queues=1,mac=${M1}`, `net_virtio_user1,path=${path.join(b.runDir, 'vm2')},queues=1,mac=${M2}`],
    fwdMode: 'rxonly',
    lcores: '0@1,1@0',
    extraArgs: [`--eth-peer=0,${M2}`, `--eth-peer=1,${M1}`],
  });
  t.after(() => tp.kill());
  await tp.waitFor(/testpmd> /, 30000);
  for (const [d, vm] of [[a, 'vm1'], [b, 'vm2']] as const) {
    await waitFor(async () => (await d.cli('show')).stdout.includes(`Port ${vm} `) && /Port vm\d .*link=up/.test((await d.cli('show')).stdout), { what: `${vm} link up`, timeout: 15000 });
  }

  // prime: the first frames find the next hop unresolved (dropped, counted) and make both sides ARP
  // then testpmd keeps receiving (rxonly) until nothing moves, so no frame of the priming is left in a ring
  // when the counters are cleared; a round stops forwarding only to send its bursts (start tx_first)
  const prime = async (): Promise<void> => {
    await tp.run('clear port stats all');
    await waitFor(async () => {
      await tp.run('start tx_first 1');
      await tp.stopForwarding();
      const p0 = await tp.portStats(0);
      const p1 = await tp.portStats(1);
      return p0.rxPackets > 0 && p1.rxPackets > 0;
    }, { what: 'frames across the tunnel both ways', timeout: 20000, describe: async () => (await a.cli('port-stats')).stdout + (await b.cli('port-stats')).stdout });
    await tp.run('start');
    let last = '';
    await waitFor(async () => {
      const now = JSON.stringify([await stats(a), await stats(b), await tp.portStats(0), await tp.portStats(1)]);
      const still = now === last;
      last = now;
      return still;
    }, { what: 'no frame moving after the priming', interval: 200, timeout: 20000 });
  };
  await prime();
  const unresolved = (await stats(a)).vx0.drops['tx-neigh-unresolved'] ?? 0;
  assert.ok(unresolved + ((await stats(b)).vx0.drops['tx-neigh-unresolved'] ?? 0) > 0, 'the first frames met an unresolved neighbour');

  // counted rounds: 8 rounds of 8 bursts of 32 frames of 64 bytes from each port (a burst testpmd could
  // not queue is not sent, so the counts are what testpmd really sent: each must arrive, counted at
  // every hop). testpmd's side is read in bytes: after `clear port stats`, virtio-user's RX-packets was
  // seen to keep the frames of the priming while RX-bytes starts from 0.
  await tp.run('clear port stats all');
  const a0 = await stats(a);
  const b0 = await stats(b);
  const d = (x: Record<string, PortJson>, y: Record<string, PortJson>, port: string, f: 'rxPackets' | 'txPackets'): number => y[port][f] - x[port][f];
  const ROUNDS = 8;
  for (let i = 1; i <= ROUNDS; i++) {
    await tp.stopForwarding();
    await tp.run('start tx_first 8');
    await waitFor(async () => {
      const p0 = await tp.portStats(0);
      const p1 = await tp.portStats(1);
      const sa = await stats(a);
      const sb = await stats(b);
      return p0.txBytes >= i * 128 * 64 && p1.txBytes >= i * 128 * 64 && p1.rxBytes === p0.txBytes && p0.rxBytes === p1.txBytes &&
        d(b0, sb, 'vm2', 'txPackets') * 64 === p0.txBytes && d(a0, sa, 'vm1', 'txPackets') * 64 === p1.txBytes;
    }, { what: `round ${i}: every frame sent arrived on the other side`, timeout: 20000, describe: async () => JSON.stringify([await tp.portStats(0), await tp.portStats(1), await stats(a), await stats(b)]) });
  }
  const p0 = await tp.portStats(0);
  const p1 = await tp.portStats(1);
  const n = p0.txBytes / 64;
  const m = p1.txBytes / 64;
  assert.ok(n >= ROUNDS * 128 && m >= ROUNDS * 128, JSON.stringify([p0, p1]));
  assert.deepEqual([p0.txPackets, p1.txPackets], [n, m], 'testpmd sent 64-byte frames');
  assert.deepEqual([p1.rxBytes / 64, p0.rxBytes / 64], [n, m], 'testpmd: every frame sent arrived on the other side');
  const a1 = await stats(a);
  const b1 = await stats(b);
  assert.deepEqual(
    [d(a0, a1, 'vm1', 'rxPackets'), d(a0, a1, 'vx0', 'txPackets'), d(b0, b1, 'vx0', 'rxPackets'), d(b0, b1, 'vm2', 'txPackets')],
    [n, n, n, n], 'A -> B counted at every hop',
  );
  assert.deepEqual(
    [d(b0, b1, 'vm2', 'rxPackets'), d(b0, b1, 'vx0', 'txPackets'), d(a0, a1, 'vx0', 'rxPackets'), d(a0, a1, 'vm1', 'txPackets')],
    [m, m, m, m], 'B -> A counted at every hop',
  );
  assert.equal(a1.vx0.txDropped - a0.vx0.txDropped + b1.vx0.txDropped - b0.vx0.txDropped, 0, 'no tunnel drops after the neighbours resolved');

  // key=flow on B: set_field:N->tun_id on the way out, tun_id chooses the way in
  await ok(b, 'del-port', 'br0', 'vx0');
  // this time the underlay comes from the kernel's route to the remote (ub has no address: a host route)
  sb.ip('route', 'add', '10.220.0.1/32', 'dev', 'ub');
  await ok(b, 'add-port', 'br0', 'vx0', '--type', 'vxlan', '--local-ip', '10.220.0.2', '--remote-ip', '10.220.0.1', '--key', 'flow');
  assert.match((await b.cli('show')).stdout, /Port vx0 .*type=vxlan remote_ip=10\.220\.0\.1 local_ip=10\.220\.0\.2 key=flow mtu=1450 link=up/);
  await ok(b, 'del-flows', 'br0');
  await ok(b, 'add-flow', 'br0', 'in_port=vm2,actions=set_field:7->tun_id,output:vx0');
  await ok(b, 'add-flow', 'br0', 'priority=10,tun_id=7,in_port=vx0,actions=output:vm2');
  await ok(b, 'add-flow', 'br0', 'priority=5,in_port=vx0,actions=drop');
  await tp.stopForwarding();
  await prime();
  await tp.run('clear port stats all');
  const b2 = await stats(b);
  await tp.stopForwarding();
  await tp.run('start tx_first 8');
  await waitFor(async () => {
    const q0 = await tp.portStats(0);
    const q1 = await tp.portStats(1);
    return q0.txBytes > 0 && q1.txBytes > 0 && q1.rxBytes === q0.txBytes && q0.rxBytes === q1.txBytes;
  }, { what: 'every frame across both ways with key=flow on B', timeout: 20000, describe: async () => JSON.stringify([await tp.portStats(0), await tp.portStats(1), await stats(b)]) });
  const q0 = await tp.portStats(0);
  const q1 = await tp.portStats(1);
  assert.equal(q0.rxBytes, q1.txBytes, 'B sent with VNI 7 (set_field), A (key 7) accepted every frame');
  assert.equal(q1.rxBytes, q0.txBytes, 'B matched tun_id=7 for every frame');
  const b3 = await stats(b);
  assert.equal(d(b2, b3, 'vx0', 'rxPackets') * 64, q0.txBytes);
  const flows = (await b.cli('dump-dp-flows')).stdout;
  assert.match(flows, /tun_id=0x7/, `B's megaflow for tunnel traffic matches on tun_id:\n${flows}`);
  assert.match(flows, /set\(tunnel\(tun_id=0x7\)\)/, flows);
  await ok(b, 'revalidate-wait');
  const rules = (await b.cli('dump-flows', 'br0')).stdout;
  assert.match(rules, /n_packets=[1-9]\d*, .*tun_id=0x7,in_port=vx0 actions=output:vm2/, rules);
  await tp.quit();
});
