/**
 * tsvs as ovs-vswitchd: a real private ovsdb-server configures `tsvs daemon
 * --ovsdb`, driven by unchanged, waiting `ovs-vsctl --timeout=15`; DPDK
 * testpmd sends traffic through the ports made that way; ovsdb-server is
 * restarted mid-run; tsvs show, ovs-vsctl show and ovs-vsctl list Interface
 * must agree. The first test is pure (no peers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { JsonSplitter, JsonStreamError } from '../../src/ovsdb/json-stream.js';
import { planInterface, datapathId } from '../../src/ovsdb/vswitchd.js';
import { parseRemote } from '../../src/ovsdb/client.js';
import { startDaemon, type Daemon } from '../harness/daemon.js';
import { OvsdbServer, parseList, parseMap } from '../harness/ovsdb.js';
import { Testpmd } from '../harness/dpdk.js';
import { waitFor } from '../harness/wait.js';

async function json<T>(d: Daemon, ...args: string[]): Promise<T> {
  const r = await d.cli(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

test('JSON splitter, remotes and the Interface -> port mapping', () => {
  const s = new JsonSplitter(1000);
  assert.deepEqual(s.push('{"a":"}{"}{"b":[1,{"c":"\\"}"}]}'), ['{"a":"}{"}', '{"b":[1,{"c":"\\"}"}]}'], 'back to back, braces and escaped quotes in strings');
  assert.deepEqual(s.push('\n {"x":'), []);
  assert.equal(s.pending, 5);
  assert.deepEqual(s.push('1}\n[2]'), ['{"x":1}', '[2]'], 'a value split across chunks');
  assert.throws(() => s.push('nope'), JsonStreamError);
  assert.deepEqual(s.push('{"ok":1}'), ['{"ok":1}'], 'usable after an error');
  assert.throws(() => new JsonSplitter(10).push('{"long":"0123456789"'), /larger than 10 bytes/);

  assert.deepEqual(parseRemote('unix:/x/db.sock'), { kind: 'unix', path: '/x/db.sock' });
  assert.deepEqual(parseRemote('tcp:127.0.0.1:6640'), { kind: 'tcp', host: '127.0.0.1', port: 6640 });
  assert.throws(() => parseRemote('ptcp:6640'), /expected unix:PATH or tcp:HOST:PORT/);

  const row = (o: Record<string, unknown>): Record<string, unknown> => ({ options: ['map', []], ofport_request: ['set', []], mtu_request: ['set', []], ...o });
  assert.deepEqual(planInterface('br0', row({ name: 'v1', type: 'dpdkvhostuser', ofport_request: 5 }), '/run').params, { bridge: 'br0', name: 'v1', type: 'vhost-user', path: '/run/v1', ofport: 5, mtu: undefined });
  assert.equal(planInterface('br0', row({ name: 'v2', type: 'dpdkvhostuserclient', options: ['map', [['vhost-server-path', '/s']]], mtu_request: 9000 }), '/run').params?.mtu, 9000);
  assert.match(planInterface('br0', row({ name: 'v3', type: 'dpdkvhostuserclient' }), '/run').error!, /needs options:vhost-server-path/);
  assert.equal(planInterface('br0', row({ name: 'br0', type: 'internal' }), '/run').params?.type, 'tap');
  assert.equal(planInterface('br0', row({ name: 'eth9', type: '' }), '/run').params?.type, 'afpacket');
  assert.equal(planInterface('br0', row({ name: 'g', type: 'geneve' }), '/run').error, 'could not open network device g (Address family not supported by protocol)');
  assert.match(datapathId('br0', new Map()), /^0000[0-9a-f]{12}$/);
  assert.equal(datapathId('br0', new Map([['datapath-id', '00000000000000AB']])), '00000000000000ab');
});

test('ovs-vsctl configures tsvs through a real ovsdb-server; testpmd traffic through those ports; ovsdb-server restarted mid-run', async (t) => {
  const db = await OvsdbServer.start();
  t.after(() => db.stop());
  const d = await startDaemon({ args: ['--ovsdb', db.remote, '--ovsdb-stats-interval', '300'] });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  const vsctl = async (...args: string[]): Promise<string> => {
    const r = await db.vsctl(args);
    assert.equal(r.code, 0, `ovs-vsctl ${args.join(' ')}: rc ${r.code} ${r.stderr}`);
    return r.stdout;
  };
  // unchanged, waiting ovs-vsctl: each returns only once tsvs has written cur_cfg
  await vsctl('add-br', 'tbr0', '--', 'set', 'bridge', 'tbr0', 'datapath_type=netdev');
  await vsctl('add-port', 'tbr0', 'vm1', '--', 'set', 'Interface', 'vm1', 'type=dpdkvhostuser', 'ofport_request=7');
  const srv2 = path.join(db.dir, 'vm2.sock');
  await vsctl('add-port', 'tbr0', 'vm2', '--', 'set', 'Interface', 'vm2', 'type=dpdkvhostuserclient', `options:vhost-server-path=${srv2}`);
  const bad = await db.vsctl(['add-port', 'tbr0', 'bad0', '--', 'set', 'Interface', 'bad0', 'type=frobnicator']);
  assert.equal(bad.code, 0, 'ovs-vsctl reports the error but succeeds, as with OVS');
  assert.match(bad.stderr, /Error detected while setting up 'bad0': could not open network device bad0 \(Address family not supported by protocol\)/);
  assert.equal((await vsctl('get', 'Open_vSwitch', '.', 'cur_cfg')).trim(), (await vsctl('get', 'Open_vSwitch', '.', 'next_cfg')).trim());
  assert.match(await vsctl('get', 'Open_vSwitch', '.', 'iface_types'), /dpdkvhostuser, dpdkvhostuserclient/);
  assert.equal((await vsctl('get', 'Open_vSwitch', '.', 'datapath_types')).trim(), '[netdev]');
  assert.match(await vsctl('get', 'Bridge', 'tbr0', 'datapath_id'), /^"0000[0-9a-f]{12}"$/m);
  assert.equal((await vsctl('get', 'Interface', 'vm1', 'ofport')).trim(), '7', 'ofport_request honoured');
  assert.equal((await vsctl('get', 'Interface', 'bad0', 'ofport')).trim(), '-1');
  assert.ok(fs.existsSync(path.join(d.runDir, 'vm1')), 'dpdkvhostuser socket in the run dir');

  // traffic: testpmd is vm1's client and vm2's server
  const M1 = '02:00:00:00:00:01';
  const M2 = '02:00:00:00:00:02';
  const tp = Testpmd.start({
    vdev: [`net_virtio_user0,path=${path.join(d.runDir, 'vm1')},queues=1,mac=${M1}`, `net_virtio_user1,path=${srv2},server=1,queues=1,mac=${M2}`],
    fwdMode: 'macswap',
    lcores: '0@1,1@0',
    extraArgs: [`--eth-peer=0,${M2}`, `--eth-peer=1,${M1}`, '--port-topology=loop'],
  });
  t.after(() => tp.kill());
  await tp.waitFor(/testpmd> /, 30000);
  // link state and the vhost status reach the database
  await waitFor(async () => {
    const a = (await db.vsctl(['get', 'Interface', 'vm1', 'link_state'])).stdout.trim();
    const b = (await db.vsctl(['get', 'Interface', 'vm2', 'link_state'])).stdout.trim();
    return a === 'up' && b === 'up';
  }, { what: 'vm1 and vm2 link_state up in OVSDB', timeout: 15000, interval: 100 });
  const st1 = parseMap(await vsctl('get', 'Interface', 'vm1', 'status'));
  assert.equal(st1.mode, 'server');
  assert.equal(st1.connected, 'true');
  assert.equal(parseMap(await vsctl('get', 'Interface', 'vm2', 'status')).mode, 'client');

  type PortStat = { port: string; ofport: number; rxPackets: number; txPackets: number; rxBytes: number; txBytes: number };
  const tsvsStats = async (): Promise<Map<string, PortStat>> => new Map((await json<PortStat[]>(d, 'port-stats')).map((p) => [p.port, p]));
  await tp.run('start tx_first 8');
  await waitFor(async () => {
    const s = await tsvsStats();
    return s.get('vm1')!.rxPackets > 2000 && s.get('vm2')!.rxPackets > 2000;
  }, { what: 'traffic both ways', timeout: 15000, interval: 100 });

  // ovsdb-server restarted under traffic: forwarding goes on, tsvs reconnects and reconciles
  const before = await tsvsStats();
  await db.restart();
  await waitFor(async () => {
    const s = await json<{ connected: boolean; sessions: number; lock: boolean }>(d, 'ovsdb-status');
    return s.connected && s.lock && s.sessions >= 2;
  }, { what: 'tsvs reconnected to the new ovsdb-server', timeout: 15000, interval: 100 });
  const after = await tsvsStats();
  assert.ok(after.get('vm2')!.txPackets > before.get('vm2')!.txPackets + 1000, 'no traffic stop on unchanged ports across the restart');
  assert.ok(d.log().includes('port vm1 deleted') === false, 'unchanged ports were not re-created');
  // waiting ovs-vsctl works against the restarted server
  await vsctl('add-port', 'tbr0', 'vm3', '--', 'set', 'Interface', 'vm3', 'type=dpdkvhostuser');
  assert.match(await vsctl('get', 'Interface', 'vm3', 'ofport'), /^[1-9]\d*$/m);
  await tp.stopForwarding();

  // tsvs show, ovs-vsctl show and ovs-vsctl list Interface agree (after one statistics refresh)
  type ShowPort = { name: string; ofport: number; link: string; error: string };
  const show = (await json<{ bridge: string; ports: ShowPort[] }[]>(d, 'show'))[0];
  assert.equal(show.bridge, 'tbr0');
  const vshow = await vsctl('show');
  const inOvs = [...vshow.matchAll(/^\s+Port (\S+)$/gm)].map((m) => m[1].replace(/"/g, '')).sort();
  assert.deepEqual(inOvs, [...show.ports.map((p) => p.name), 'bad0'].sort(), 'same ports (bad0 only in OVSDB, with its error)');
  assert.match(vshow, /Interface bad0\n\s+type: frobnicator\n\s+error: "could not open network device bad0/);
  await waitFor(async () => {
    const ts = await tsvsStats();
    const rows = parseList(await vsctl('list', 'Interface'));
    for (const p of show.ports) {
      const r = rows.find((x) => x.name === p.name || x.name === `"${p.name}"`);
      assert.ok(r, `Interface ${p.name} in OVSDB`);
      assert.equal(Number(r.ofport), p.ofport, `${p.name} ofport`);
      assert.equal(r.link_state, p.link === 'up' ? 'up' : 'down', `${p.name} link_state`);
      assert.equal(r.error, '[]');
      const s = parseMap(r.statistics);
      const t2 = ts.get(p.name)!;
      if (Number(s.rx_packets) !== t2.rxPackets || Number(s.tx_packets) !== t2.txPackets || Number(s.rx_bytes) !== t2.rxBytes) return false;
    }
    return true;
  }, { what: 'OVSDB statistics equal tsvs port-stats', timeout: 15000, interval: 100 });

  // del-port and del-br, waited for
  await vsctl('del-port', 'tbr0', 'vm2');
  assert.ok(!(await json<{ ports: ShowPort[] }[]>(d, 'show'))[0].ports.some((p) => p.name === 'vm2'), 'vm2 gone from tsvs when ovs-vsctl returns');
  // our own CLI writes the database in OVSDB mode
  assert.equal((await d.cli('add-port', 'tbr0', 'vm4', '--type', 'vhost-user')).code, 0);
  assert.match(await vsctl('get', 'Interface', 'vm4', 'type'), /dpdkvhostuser/);

  // VLAN roles: Port tag / trunks / vlan_mode from ovs-vsctl reach NORMAL without re-creating the port
  const vlanOf = async (name: string): Promise<string | undefined> =>
    (await json<{ ports: (ShowPort & { vlan?: string })[] }[]>(d, 'show'))[0].ports.find((p) => p.name === name)?.vlan;
  await vsctl('set', 'Port', 'vm1', 'tag=10');
  assert.equal(await vlanOf('vm1'), 'tag=10');
  await vsctl('set', 'Port', 'vm1', 'vlan_mode=native-untagged', 'trunks=20,30');
  assert.equal(await vlanOf('vm1'), 'vlan_mode=native-untagged tag=10 trunks=20,30');
  await vsctl('clear', 'Port', 'vm1', 'tag', 'trunks', 'vlan_mode');
  assert.equal(await vlanOf('vm1'), undefined);
  assert.ok(!d.log().includes('port vm1 deleted'), 'the port kept running');
  // tsvs set-port writes the Port row, as ovs-vsctl set Port would
  assert.equal((await d.cli('set-port', 'vm4', 'tag=5')).code, 0);
  assert.equal((await vsctl('get', 'Port', 'vm4', 'tag')).trim(), '5');
  assert.equal(await vlanOf('vm4'), 'tag=5');
  await vsctl('del-br', 'tbr0');
  assert.deepEqual(await json<unknown[]>(d, 'show'), [], 'bridge and ports gone');
  await tp.quit();
});
