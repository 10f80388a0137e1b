/**
 * A real controller drives tsvs: Debian's `osken-manager` runs our own
 * learning-switch app (test/fixtures/osken_learning_switch.py) and tsvs
 * connects to it (`tsvs set-controller br0 tcp:127.0.0.1:PORT`, fail_mode
 * secure). Two namespaces A and B, each a veth into the switch's namespace S
 * (afpacket ports), ping each other. The app sees the first packets as
 * packet-ins (table-miss, reason NO_MATCH), installs one flow per direction
 * and sends packet-outs; the rest of the ping goes through the installed
 * flows: the controller's packet-in count stays small, the flows' n_packets
 * (OpenFlow flow stats through ovs-ofctl) carry the rest, and the datapath
 * counts cache hits. Then osken-manager is killed (by PID) and started
 * again: tsvs reconnects, the new app clears the tables, and the ping works
 * again through new packet-ins and flows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetNs } from '../harness/netns.js';
import { startDaemon } from '../harness/daemon.js';
import { ofctl } from '../harness/ovs-dummy.js';
import { waitFor } from '../harness/wait.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const APP = path.resolve(here, '../../../test/fixtures/osken_learning_switch.py');
const OSKEN = '/usr/bin/osken-manager';
const PORT = 6653;

interface AppStats {
  connected: number; datapath_id: string | null; n_tables: number | null; packet_in: number; packet_in_no_match: number;
  packet_in_action: number; packet_in_total_len_ok: number; flows_installed: number; packet_out: number;
  errors: [number, number][]; learned: Record<string, number>;
}

function ping(ns: NetNs, dst: string, count: number): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns.name, 'ping', '-c', String(count), '-i', '0.02', '-W', '2', dst], { encoding: 'utf8' });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
  }
}

class Controller {
  proc: ChildProcess;
  log = '';
  constructor(ns: NetNs, readonly statsFile: string) {
    fs.rmSync(statsFile, { force: true });
    this.proc = spawn('ip', ['netns', 'exec', ns.name, OSKEN, '--ofp-listen-host', '127.0.0.1', '--ofp-tcp-listen-port', String(PORT), APP],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TSVS_OSKEN_STATS: statsFile } });
    this.proc.stdout!.on('data', (d) => (this.log += d));
    this.proc.stderr!.on('data', (d) => (this.log += d));
  }
  stats(): AppStats | undefined {
    try {
      return JSON.parse(fs.readFileSync(this.statsFile, 'utf8')) as AppStats;
    } catch {
      return undefined;
    }
  }
  async kill(): Promise<void> {
    const p = this.proc;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL'); // `ip netns exec` execs the manager: this PID is osken-manager itself
    await exited;
  }
}

test('os-ken learning switch (osken-manager) controls tsvs; tsvs reconnects after a controller restart', async (t) => {
  assert.ok(fs.existsSync(OSKEN), `${OSKEN} is missing: apt-get install python3-os-ken (this test needs the real controller)`);
  const s = NetNs.create({ prefix: 'osk-s' });
  const a = NetNs.create({ prefix: 'osk-a' });
  const b = NetNs.create({ prefix: 'osk-b' });
  t.after(() => { s.delete(); a.delete(); b.delete(); });
  for (const n of [a, b]) {
    n.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    n.exec('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
  }
  a.addVeth('a0', 'a1', { peer: s });
  b.addVeth('b0', 'b1', { peer: s });
  a.addAddr('a0', '10.202.0.1/24');
  b.addAddr('b0', '10.202.0.2/24');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-osken-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  let ctl = new Controller(s, path.join(tmp, 'stats1.json'));
  t.after(() => ctl.kill());
  await waitFor(() => ctl.stats(), { what: 'osken-manager loaded the app', timeout: 20000, describe: () => ctl.log });

  const d = await startDaemon({ netns: s.name });
  t.after(async () => { await d.stop(); });
  const cli = async (...args: string[]): Promise<string> => {
    const r = await d.cli(...args);
    assert.equal(r.code, 0, `tsvs ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  await cli('add-br', 'br0');
  await cli('add-port', 'br0', 'p1', '--type', 'afpacket', '--iface', 'a1', '--ofport', '1');
  await cli('add-port', 'br0', 'p2', '--type', 'afpacket', '--iface', 'b1', '--ofport', '2');
  await cli('set-fail-mode', 'br0', 'secure');
  await cli('set-controller', 'br0', `tcp:127.0.0.1:${PORT}`);
  const mgmt = `unix:${path.join(d.runDir, 'br0.mgmt')}`;
  const diag = async (): Promise<string> =>
    `app: ${JSON.stringify(ctl.stats())}\n${ctl.log}\nflows:\n${ofctl('dump-flows', mgmt)}\ncontroller: ${await cli('get-controller', 'br0')}\npmd: ${await cli('pmd-stats', '--json')}\nports: ${await cli('port-stats', '--json')}\n${d.log()}`;

  // the app installs the table-miss rule once it sees the switch
  const tableMiss = (): boolean => /priority=0 actions=CONTROLLER:65535/.test(ofctl('dump-flows', mgmt));
  await waitFor(() => ctl.stats()?.connected === 1 && tableMiss(), { what: 'tsvs connected, table-miss installed', timeout: 20000, describe: diag });
  const st0 = ctl.stats()!;
  assert.equal(st0.n_tables, 255);
  assert.match(await cli('get-controller', 'br0'), /connected/);

  const flowPackets = (): number => [...ofctl('dump-flows', mgmt, 'cookie=0x5eed/-1').matchAll(/n_packets=(\d+)/g)].reduce((x, m) => x + Number(m[1]), 0);
  const dpHits = async (): Promise<number> => {
    const pmd = JSON.parse(await cli('pmd-stats', '--json')) as { emcHits: number; megaflowHits: number }[];
    return pmd.reduce((x, p) => x + p.emcHits + p.megaflowHits, 0);
  };

  const N = 40;
  const out = ping(a, '10.202.0.2', N);
  assert.match(out, / 0% packet loss/, out + await diag());
  const st1 = ctl.stats()!;
  // ARP request (flooded), ARP reply, the first echo request: packet-ins; so is whatever arrives before the
  // controller's flows are in (more on a loaded machine), but the bulk of the 2N packets is not
  assert.ok(st1.packet_in >= 3 && st1.packet_in < N / 2, `packet-ins ${st1.packet_in}\n${await diag()}`);
  assert.equal(st1.packet_in, st1.packet_in_no_match, 'table-miss packet-ins carry reason NO_MATCH');
  assert.equal(st1.packet_in, st1.packet_in_total_len_ok, 'whole frames (OFPCML_NO_BUFFER)');
  assert.deepEqual(st1.errors, [], 'tsvs refused nothing the app sent');
  assert.ok(st1.flows_installed >= 2);
  assert.deepEqual(Object.values(st1.learned).sort(), [1, 2]);
  const fp = await waitFor(() => { const n = flowPackets(); return n >= 2 * N - st1.packet_in ? n : 0; },
    { what: 'installed flows carried the rest of the ping', describe: diag });
  assert.ok(fp <= 2 * N + 4, `flow packets ${fp}`);
  const hits = await dpHits();
  assert.ok(hits > 0, 'the datapath forwarded from its caches');
  t.diagnostic(`first controller: ${st1.packet_in} packet-ins, ${st1.flows_installed} flows installed; ${fp} packets through them; datapath cache hits ${hits}`);

  // controller restart: kill by PID, start again; tsvs reconnects (backoff) and the new app learns again
  await ctl.kill();
  await waitFor(async () => /backoff|connecting/.test(await cli('get-controller', 'br0')), { what: 'tsvs saw the controller go', describe: diag });
  ctl = new Controller(s, path.join(tmp, 'stats2.json'));
  await waitFor(() => ctl.stats()?.connected === 1 && tableMiss() && flowPackets() === 0,
    { what: 'tsvs reconnected to the new controller, which cleared the flows', timeout: 30000, describe: diag });
  const out2 = ping(b, '10.202.0.1', N);
  assert.match(out2, / 0% packet loss/, out2 + await diag());
  const st2 = ctl.stats()!;
  assert.ok(st2.packet_in >= 3 && st2.packet_in < N / 2, `packet-ins after the restart ${st2.packet_in}`);
  assert.ok(st2.flows_installed >= 2);
  const fp2 = await waitFor(() => { const n = flowPackets(); return n >= 2 * N - st2.packet_in ? n : 0; }, { what: 'new flows carried the second ping', describe: diag });
  t.diagnostic(`after the restart: ${st2.packet_in} packet-ins, ${st2.flows_installed} flows installed; ${fp2} packets through them`);
});
