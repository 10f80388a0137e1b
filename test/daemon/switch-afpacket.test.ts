/**
 * End to end through the real daemon and CLI: two namespaces A and B, each
 * with a veth whose other end sits in namespace S, where the switch runs with
 * two afpacket ports. Ping A -> B goes through tsvs's datapath.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { NetNs } from '../harness/netns.js';
import { startDaemon } from '../harness/daemon.js';

function ping(ns: NetNs, dst: string, count: number): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'ping', '-c', String(count), '-i', '0.02', '-W', '2', dst], { encoding: 'utf8' });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
  }
}

test('NORMAL switching between two afpacket ports, rules, stats, restart restores config', async (t) => {
  const s = NetNs.create({ prefix: 'tsvs-s' });
  const a = NetNs.create({ prefix: 'tsvs-a' });
  const b = NetNs.create({ prefix: 'tsvs-b' });
  t.after(() => { s.delete(); a.delete(); b.delete(); });
  a.addVeth('a0', 'a1', { peer: s });
  b.addVeth('b0', 'b1', { peer: s });
  a.addAddr('a0', '10.201.0.1/24');
  b.addAddr('b0', '10.201.0.2/24');
  let d = await startDaemon({ netns: s.name });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });

  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  const bad = await d.cli('add-port', 'br0', 'p1', '--type', 'nonsense');
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /unknown port type 'nonsense'/);
  const noIf = await d.cli('add-port', 'br0', 'px', '--type', 'afpacket', '--iface', 'nope0');
  assert.notEqual(noIf.code, 0);
  assert.match(noIf.stderr, /nope0/);
  assert.equal((await d.cli('add-port', 'br0', 'p1', '--type', 'afpacket', '--iface', 'a1')).code, 0);
  assert.equal((await d.cli('add-port', 'br0', 'p2', '--type', 'afpacket', '--iface', 'b1')).code, 0);

  const out = ping(a, '10.201.0.2', 50);
  assert.match(out, / 0% packet loss/, out + d.log());

  const flows = await d.cli('dump-flows', 'br0');
  assert.match(flows.stdout, /priority=0 actions=NORMAL/);
  assert.match(flows.stdout, /n_packets=[1-9]/, 'the NORMAL rule was credited');
  const pmd = JSON.parse((await d.cli('pmd-stats', '--json')).stdout) as { rxPackets: number; upcalls: number; emcHits: number; megaflowHits: number }[];
  assert.ok(pmd[0].rxPackets >= 100, JSON.stringify(pmd));
  assert.ok(pmd[0].upcalls >= 1 && pmd[0].upcalls < pmd[0].rxPackets / 2, 'first packets of flows upcall, the rest hit caches');
  assert.ok(pmd[0].emcHits + pmd[0].megaflowHits > 0);
  const dpf = await d.cli('dump-dp-flows');
  assert.match(dpf.stdout, /packets:/);
  const ps = JSON.parse((await d.cli('port-stats', '--json')).stdout) as { port: string; rxPackets: number; txPackets: number }[];
  assert.equal(ps.length, 2);
  assert.ok(ps.every((p) => p.rxPackets >= 50 && p.txPackets >= 50), JSON.stringify(ps));

  // explicit rules: drop ICMP from p1, everything else NORMAL; revalidation removes the cached flows
  const parseErr = await d.cli('add-flow', 'br0', 'priority=100,in_port=p1,tp_dst=80,actions=drop');
  assert.notEqual(parseErr.code, 0);
  assert.match(parseErr.stderr, /tp_dst/);
  // add-flow answers once the datapath reflects the rule: ping at once
  assert.equal((await d.cli('add-flow', 'br0', 'priority=100,in_port=p1,icmp,actions=drop')).code, 0);
  const dropped = ping(a, '10.201.0.2', 5);
  assert.match(dropped, /100% packet loss/, dropped);
  assert.equal((await d.cli('del-flows', 'br0', 'icmp')).code, 0);
  assert.match(ping(a, '10.201.0.2', 5), / 0% packet loss/);

  // restart: configuration comes back from the database
  const show1 = (await d.cli('show')).stdout;
  await d.stop();
  d = await startDaemon({ netns: s.name, runDir: d.runDir });
  const show2 = (await d.cli('show')).stdout;
  assert.match(show2, /Port p1/);
  assert.match(show2, /Port p2/);
  const norm = (s: string): string => s.replace(/link=\w+/g, '').replace(/\d+ learned MACs/, '');
  assert.equal(norm(show2), norm(show1));
  assert.match(ping(a, '10.201.0.2', 10), / 0% packet loss/);
});
