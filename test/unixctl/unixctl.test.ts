/**
 * Unchanged `ovs-appctl -t RUNDIR/tsvs.ctl CMD` against tsvs (conf.json mode,
 * DPDK testpmd traffic through two vhost-user ports), each answer compared
 * with the layout the real ovs-vswitchd 3.1 prints for the same command
 * (run here with the dummy datapath: a netdev bridge with two dummy ports
 * and frames injected with netdev-dummy/receive).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { startDaemon, type Daemon } from '../harness/daemon.js';
import { OvsdbServer, appctl, type Run } from '../harness/ovsdb.js';
import { M1, M2, macswapPair } from '../harness/macswap-pair.js';
import { waitFor } from '../harness/wait.js';

/** The real ovs-vswitchd on the dummy datapath, for reference layouts. */
async function startOvs(t: { after(f: () => Promise<void> | void): void }): Promise<{ ctl: string; db: OvsdbServer }> {
  const db = await OvsdbServer.start();
  t.after(() => db.stop());
  const ctl = path.join(db.dir, 'vs.ctl');
  const vs = spawn('ovs-vswitchd', [db.remote, '--disable-system', '--enable-dummy', `--unixctl=${ctl}`, `--log-file=${db.dir}/vs.log`], {
    env: { ...process.env, ...db.env },
    stdio: 'ignore',
  });
  t.after(async () => {
    if (vs.exitCode === null && vs.signalCode === null) {
      const gone = new Promise((r) => vs.once('exit', r));
      vs.kill('SIGTERM');
      await gone;
    }
  });
  await waitFor(async () => fs.existsSync(ctl), { what: 'ovs-vswitchd unixctl socket', timeout: 15000, interval: 100 });
  for (const args of [
    ['add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev'],
    ['add-port', 'br0', 'p1', '--', 'set', 'Interface', 'p1', 'type=dummy', 'ofport_request=1'],
    ['add-port', 'br0', 'p2', '--', 'set', 'Interface', 'p2', 'type=dummy', 'ofport_request=2'],
  ]) {
    const r = await db.vsctl(args);
    assert.equal(r.code, 0, r.stderr);
  }
  // two frames between two MACs: a learned entry and a datapath flow
  const frame = (src: string, dst: string): string => dst.replace(/:/g, '') + src.replace(/:/g, '') + '0800' + '45000014000100004011' + '0000' + '0a000001' + '0a000002' + '00'.repeat(26);
  for (const [port, s, d] of [['p1', '02:00:00:00:00:01', '02:00:00:00:00:02'], ['p2', '02:00:00:00:00:02', '02:00:00:00:00:01']]) {
    const r = await appctl(ctl, 'netdev-dummy/receive', port, frame(s, d));
    assert.equal(r.code, 0, r.stderr);
  }
  return { ctl, db };
}

/** Line shapes: numbers, MACs, hex and times abstracted. */
function shape(text: string): string[] {
  return text
    .split('\n')
    .map((l) =>
      l
        .replace(/([0-9a-f]{2}:){5}[0-9a-f]{2}/g, 'MAC')
        .replace(/0x[0-9a-f]+/g, 'HEX')
        .replace(/\d+(\.\d+)?/g, 'N')
        .trimEnd(),
    )
    .filter((l) => l !== '');
}

function ok(r: Run, cmd: string): string {
  assert.equal(r.code, 0, `${cmd}: rc ${r.code} ${r.stderr}`);
  return r.stdout;
}

test('ovs-appctl answers on RUNDIR/tsvs.ctl with the layouts of ovs-vswitchd 3.1', async (t) => {
  const ovs = await startOvs(t);
  const ref = async (...args: string[]): Promise<string> => ok(await appctl(ovs.ctl, ...args), `OVS ${args.join(' ')}`);

  const d: Daemon = await startDaemon({ args: ['--pmd-cpus', '1'] });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  const ctl = path.join(d.runDir, 'tsvs.ctl');
  const ours = async (...args: string[]): Promise<string> => ok(await appctl(ctl, ...args), `tsvs ${args.join(' ')}`);
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  for (const n of ['vm1', 'vm2']) assert.equal((await d.cli('add-port', 'br0', n, '--type', 'vhost-user')).code, 0);
  const tp = await macswapPair(t, d);
  await tp.run('start tx_first 4');
  // enough traffic for every counter below (pmd stats, datapath flows, MAC table) to be non-zero
  await waitFor(async () => {
    const r = await d.cli('pmd-stats', '--json');
    return r.code === 0 && (JSON.parse(r.stdout) as { rxPackets: number }[]).reduce((a, p) => a + p.rxPackets, 0) >= 10000;
  }, { what: '10000 frames through the switch', timeout: 30000, interval: 100 });
  await tp.stopForwarding();

  // our own JSON-RPC CLI keeps working on the same socket
  assert.equal((await d.cli('show')).code, 0);

  // list-commands: "  %-23s %s"
  const lc = await ours('list-commands');
  const refLc = await ref('list-commands');
  assert.equal(lc.split('\n')[0], refLc.split('\n')[0]);
  const want = ['dpif-netdev/pmd-stats-show', 'dpif-netdev/pmd-stats-clear', 'dpif-netdev/pmd-rxq-show', 'dpif-netdev/pmd-perf-show', 'dpctl/dump-flows', 'dpctl/show',
    'ofproto/trace', 'fdb/show', 'upcall/show', 'coverage/show', 'vlog/set', 'list-commands', 'version', 'exit'];
  for (const c of want) {
    const line = new RegExp(`^  ${c.replace(/\//g, '\\/')}\\s.*$`, 'm');
    const a = lc.match(line)?.[0];
    assert.ok(a, `tsvs lists ${c}`);
    assert.equal(a, refLc.match(line)?.[0], `same list-commands line for ${c}`);
  }
  assert.match(await ours('version'), /^ovs-vswitchd \(tsvs\) \d+\.\d+\.\d+\n$/);
  assert.match(await ref('version'), /^ovs-vswitchd \(Open vSwitch\) \d+\.\d+\.\d+\n$/);

  // unknown command: OVS's message and ovs-appctl's rc 2
  const bad = await appctl(ctl, 'no/such');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /"no\/such" is not a valid command \(use "list-commands" to see a list of valid commands\)/);
  assert.equal((await appctl(ovs.ctl, 'no/such')).stderr.split('\n')[0], bad.stderr.split('\n')[0]);

  // pmd-stats-show: OVS's 13 counter lines in order (its main thread block), then the cycle lines of a PMD
  const ps = await ours('dpif-netdev/pmd-stats-show');
  const refPs = await ref('dpif-netdev/pmd-stats-show');
  assert.match(ps, /^pmd thread numa_id 0 core_id 1:\n/);
  const labels = (s: string): string[] => s.split('\n').filter((l) => l.startsWith('  ')).map((l) => l.split(':')[0]);
  assert.deepEqual(labels(ps).slice(0, 13), labels(refPs), 'same counters in the same order');
  assert.deepEqual(labels(ps).slice(13), ['  idle cycles', '  processing cycles', '  avg cycles per packet', '  avg processing cycles per packet']);
  const rx = Number(/packets received: (\d+)/.exec(ps)![1]);
  const pmdJson = JSON.parse((await d.cli('pmd-stats', '--json')).stdout) as { rxPackets: number }[];
  assert.ok(rx > 1000 && rx <= pmdJson[0].rxPackets, `packets received ${rx} is the PMD's count`);
  assert.match(ps, /avg cycles per packet: [\d.]+ \(\d+\/\d+\)/);
  assert.equal(ok(await appctl(ctl, 'dpif-netdev/pmd-stats-clear'), 'clear'), '');
  assert.match(await ours('dpif-netdev/pmd-stats-show'), /packets received: 0\n/);

  // pmd-rxq-show
  const rq = await ours('dpif-netdev/pmd-rxq-show');
  assert.equal(rq.split('\n')[0], (await ref('dpif-netdev/pmd-rxq-show')).split('\n')[0]);
  assert.match(rq, /^pmd thread numa_id 0 core_id 1:\n  isolated : false\n  port: vm1               queue-id:  0 \(enabled\)   pmd usage: [ \d]\d %\n  port: vm2               queue-id:  0 \(enabled\)   pmd usage: [ \d]\d %\n  overhead: [ \d]\d %$/m);

  // pmd-perf-show
  const pf = await ours('dpif-netdev/pmd-perf-show');
  assert.match(pf, /^\nTime: \d\d:\d\d:\d\d\.\d{3}\nMeasurement duration: [\d.]+ s\n\npmd thread numa_id 0 core_id 1:\n\n  Iterations: +\d+  \([\d.]+ us\/it\)\n/);
  for (const l of ['- Used TSC cycles:', '- idle iterations:', '- busy iterations:', 'Rx packets:', '- EMC hits:', '- Megaflow hits:', '- Upcalls:', 'Tx packets:']) assert.ok(pf.includes(`  ${l}`), l);

  // dpctl/show -s: same shape as OVS for the header and for each port block
  const ds = await ours('dpctl/show', '-s');
  const refDs = await ref('dpctl/show', '-s');
  assert.deepEqual(shape(ds).slice(0, 3), shape(refDs).slice(0, 3));
  const refBlock = shape(refDs).slice(4, 8).map((l) => l.replace(/errors:\?|dropped:\?|overruns:\?|frame:\?|aborted:\?|carrier:\?|collisions:\?/g, (m) => m.replace('?', 'N')));
  const ourBlock = shape(ds).slice(4, 8).map((l) => l.replace(/\?/g, 'N'));
  assert.deepEqual(ourBlock, refBlock, 'per-port counter block');
  assert.match(ds, /^  port \d+: vm1 \(dpdkvhostuser\)$/m);
  assert.match(ds, /^  port \d+: vm2 \(dpdkvhostuser\)$/m);
  assert.match(ds, /^    RX packets:[1-9]\d* /m);

  // dpctl/dump-flows: ODP syntax, same field order as OVS
  const df = await ours('dpctl/dump-flows');
  const refDf = await ref('dpctl/dump-flows');
  const refLine = refDf.split('\n').find((l) => l.includes('eth('))!;
  assert.ok(refLine, refDf);
  const ourLine = df.split('\n').find((l) => l.includes(`eth(src=${M1}`));
  assert.ok(ourLine, df);
  const fields = (l: string): string[] => l.replace(/\([^()]*(\([^()]*\)[^()]*)*\)/g, '()').split(/,\s*/).map((x) => x.replace(/:.*$/, ':'));
  assert.deepEqual(fields(ourLine).slice(0, 4), fields(refLine).slice(0, 4), `${ourLine}\n${refLine}`);
  assert.deepEqual(fields(ourLine).slice(-4), fields(refLine).slice(-4));
  assert.match(ourLine, /^recirc_id\(0\),in_port\(\d+\),packet_type\(ns=0,id=0\),eth\(src=02:00:00:00:00:01,dst=02:00:00:00:00:02\),eth_type\(0x0800\),ipv4\(frag=no\), packets:\d+, bytes:\d+, used:[\d.]+s, actions:\d+$/);
  const dfm = await ours('dpctl/dump-flows', '-m');
  const refDfm = await ref('dpctl/dump-flows', '-m');
  const meta = /^ufid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}, skb_priority\(0\/0\),skb_mark\(0\/0\),ct_state\(0\/0\),ct_zone\(0\/0\),ct_mark\(0\/0\),ct_label\(0\/0\),recirc_id\(0\),dp_hash\(0\/0\),in_port\([a-z]+\d\),packet_type\(ns=0,id=0\),eth\(src=[0-9a-f:]{17},dst=[0-9a-f:]{17}\),eth_type\(0x0800\),ipv4\([^)]*frag=no\)(,udp\([^)]*\))?, packets:\d+, bytes:\d+, used:([\d.]+s|never), dp:ovs, actions:[a-z]+\d/m;
  assert.match(refDfm, meta);
  assert.match(dfm, meta);
  assert.match(dfm, /^flow-dump from pmd on cpu core: 1$/m);
  assert.match(refDfm, /^flow-dump from /m);

  // fdb/show
  const fdb = await ours('fdb/show', 'br0');
  const refFdb = await ref('fdb/show', 'br0');
  assert.equal(fdb.split('\n')[0], refFdb.split('\n')[0]);
  assert.deepEqual(shape(fdb).slice(1).map((l) => l.replace(/^ +N/, 'P')), shape(refFdb).slice(1).map((l) => l.replace(/^ +N/, 'P')), `${fdb}\n${refFdb}`);

  // upcall/show
  assert.deepEqual(shape(await ours('upcall/show')).slice(0, 4), shape(await ref('upcall/show')).slice(0, 4));

  // coverage/show
  const cov = await ours('coverage/show');
  const refCov = await ref('coverage/show');
  assert.equal(shape(cov)[0].replace(/hash=\w+/, ''), shape(refCov)[0].replace(/hash=\w+/, ''));
  assert.match(cov, /^datapath_rx_packets +[\d.]+\/sec +[\d.]+\/sec +[\d.]+\/sec   total: \d+$/m);
  assert.match(cov.trimEnd().split('\n').pop()!, /^\d+ events never hit$/);
  // lib/coverage.c's row: "%-24s %5.1f/sec %9.3f/sec %13.4f/sec   total: %llu", on both
  const rows = [...cov.split('\n'), ...refCov.split('\n')].filter((l) => /total: \d+$/.test(l));
  assert.ok(rows.length >= 2, `${cov}\n${refCov}`);
  for (const l of rows) {
    const m = /^(\S+) +(\d+\.\d)\/sec +(\d+\.\d{3})\/sec +(\d+\.\d{4})\/sec   total: (\d+)$/.exec(l);
    assert.ok(m, `coverage row layout: '${l}'`);
    assert.equal(l, `${m[1].padEnd(24)} ${m[2].padStart(5)}/sec ${m[3].padStart(9)}/sec ${m[4].padStart(13)}/sec   total: ${m[5]}`, 'printf widths');
  }

  // ofproto/trace (also `tsvs trace`)
  const tr = await ours('ofproto/trace', 'br0', `in_port=1,dl_src=${M1},dl_dst=${M2}`);
  const refTr = await ref('ofproto/trace', 'br0', `in_port=1,dl_src=${M1},dl_dst=${M2}`);
  const heads = (s: string): string[] => s.split('\n').map((l) => /^(Flow|Final flow|Megaflow|Datapath actions):|^bridge\("br0"\)$|^-+$/.exec(l)?.[0]).filter((x): x is string => x !== undefined);
  assert.deepEqual(heads(tr), heads(refTr));
  assert.match(tr, /^ 0\. priority 0\n    NORMAL\n     -> forwarding to learned port$/m);
  assert.match(tr, /^Megaflow: .*dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02/m);
  assert.match(tr, /^Datapath actions: 2$/m);
  const cliTr = await d.cli('trace', 'br0', `in_port=1,dl_src=${M1},dl_dst=${M2}`);
  assert.equal(cliTr.stdout, tr);
  assert.equal((await d.cli('add-flow', 'br0', 'priority=10,in_port=1,actions=resubmit(,1)')).code, 0);
  assert.equal((await d.cli('add-flow', 'br0', 'table=1,dl_dst=02:00:00:00:00:02,actions=output:2')).code, 0);
  const tr2 = await ours('ofproto/trace', 'br0', `in_port=1,dl_src=${M1},dl_dst=${M2}`);
  assert.match(tr2, / 0\. in_port=1, priority 10\n    resubmit\(,1\)\n 1\. dl_dst=02:00:00:00:00:02, priority 32768\n    output:2\n/);
  const trBad = await appctl(ctl, 'ofproto/trace', 'nobr', 'in_port=1');
  assert.equal(trBad.code, 2);
  assert.match(trBad.stderr, /no bridge named 'nobr'/);

  // vlog/set changes the daemon's log level
  assert.equal(await ours('vlog/set', 'ANY:dbg'), '');
  assert.match(await ours('vlog/list'), /tsvs +dbg/);
  assert.equal(await ours('vlog/set', 'info'), '');

  // exit stops the daemon
  await tp.quit();
  assert.equal(await ours('exit'), '');
  await waitFor(async () => d.proc.exitCode !== null, { what: 'daemon exited', timeout: 15000, interval: 100 });
});
