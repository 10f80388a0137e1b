/**
 * tsvs capture: copies of a port's frames under DPDK testpmd traffic, written
 * as pcap and decoded by tshark (file and `-w -` on a pipe), filtered by an
 * ovs-ofctl match, with ring overflow counted while traffic keeps flowing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { startDaemon, CLI } from '../harness/daemon.js';
import { requireTestpmd } from '../harness/dpdk.js';
import { macswapPair, M1, M2 } from '../harness/observe.js';
import { waitFor } from '../harness/wait.js';

function run(cmd: string, args: string[], timeout = 30000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function requireTshark(): void {
  try {
    fs.accessSync('/usr/bin/tshark', fs.constants.X_OK);
  } catch {
    throw new Error('tshark is not installed (apt-get install tshark): the capture test decodes our pcap with it');
  }
}

test('tsvs capture under testpmd traffic: pcap that tshark decodes, pipes, filters, bounded ring with counted overflow', async (t) => {
  requireTestpmd();
  requireTshark();
  const d = await startDaemon({ args: ['--pmd-cpus', '1'] });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  for (const n of ['vm1', 'vm2']) assert.equal((await d.cli('add-port', 'br0', n, '--type', 'vhost-user')).code, 0);
  const tp = await macswapPair(t, d);

  // clear errors for bad input
  const noPort = await d.cli('capture', 'nope', '-c', '1');
  assert.notEqual(noPort.code, 0);
  assert.match(noPort.stderr, /no port named 'nope'/);
  const badFilter = await d.cli('capture', 'vm1', '-c', '1', 'tp_dst=80');
  assert.notEqual(badFilter.code, 0);
  assert.match(badFilter.stderr, /filter: tp_dst: requires ip and tcp\/udp/);

  await tp.run('start tx_first 8');
  await waitFor(async () => {
    const ps = JSON.parse((await d.cli('port-stats', '--json')).stdout) as { port: string; rxPackets: number }[];
    return ps.every((p) => p.rxPackets > 1000);
  }, { what: 'traffic through the switch', timeout: 15000, interval: 100 });

  // 1. rx of vm1 to a file: testpmd's port 0 sends M1 -> M2 (macswap of what came back)
  const file = path.join(d.runDir, 'vm1-rx.pcap');
  const c1 = await d.cli('capture', 'vm1', '-w', file, '-c', '50', '--direction', 'rx');
  assert.equal(c1.code, 0, c1.stderr);
  assert.match(c1.stderr, /50 frames captured/);
  const ts1 = await run('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=,', '-e', 'eth.src', '-e', 'eth.dst', '-e', 'eth.type', '-e', 'frame.len']);
  assert.equal(ts1.code, 0, ts1.stderr);
  const rows = ts1.stdout.trim().split('\n');
  assert.equal(rows.length, 50, ts1.stdout);
  for (const r of rows) {
    const [src, dst, type, len] = r.split(',');
    assert.equal(src, M1);
    assert.equal(dst, M2);
    assert.equal(type, '0x0800');
    assert.equal(Number(len), 64, 'testpmd frames of 64 bytes');
  }

  // 2. tx of vm2 as pcap on stdout into tshark reading a pipe
  const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} capture vm2 -w - -c 20 --direction tx --run-dir ${JSON.stringify(d.runDir)} | tshark -r - -T fields -e eth.src -e eth.dst -e ip.src -e ip.dst -e udp.dstport`;
  const ts2 = await run('sh', ['-c', cmd]);
  assert.equal(ts2.code, 0, ts2.stderr);
  const lines = ts2.stdout.trim().split('\n');
  assert.equal(lines.length, 20, ts2.stdout);
  for (const l of lines) {
    const [src, dst, ipSrc, ipDst, dport] = l.split('\t');
    assert.equal(src, M1, 'vm2 is sent what vm1 sent');
    assert.equal(dst, M2);
    assert.match(ipSrc, /^\d+\.\d+\.\d+\.\d+$/);
    assert.match(ipDst, /^\d+\.\d+\.\d+\.\d+$/);
    assert.match(dport, /^\d+$/, 'UDP decoded');
  }

  // 3. text mode with an ovs-ofctl filter: a matching one, and one nothing matches
  const udpPort = lines[0].split('\t')[4];
  const c3 = await d.cli('capture', 'vm1', '-c', '5', `udp,tp_dst=${udpPort}`);
  assert.equal(c3.code, 0, c3.stderr);
  const tl = c3.stdout.trim().split('\n');
  assert.equal(tl.length, 5, c3.stdout);
  for (const l of tl) assert.match(l, new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{6} (rx|tx) 64 bytes .*IPv4 .*udp \\d+ > ${udpPort}$`));
  const none = execFile(process.execPath, [CLI, 'capture', 'vm1', '-c', '1', 'tcp', '--run-dir', d.runDir]);
  let noneErr = '';
  none.stderr!.on('data', (x) => (noneErr += x));
  await waitFor(() => noneErr.includes('Ctrl-C'), { what: 'the tcp capture to start', timeout: 15000, interval: 100 });
  // frames pass while the capture runs (every one of them UDP): the switch's rx count moves on by 1000
  const rxNow = async (): Promise<number> =>
    (JSON.parse((await d.cli('port-stats', '--json')).stdout) as { port: string; rxPackets: number }[]).find((p) => p.port === 'vm1')!.rxPackets;
  const rxAtStart = await rxNow();
  await waitFor(async () => (await rxNow()) > rxAtStart + 1000, { what: '1000 frames through vm1 during the tcp capture', timeout: 15000, interval: 100 });
  none.kill('SIGINT');
  await new Promise((r) => none.once('exit', r));
  assert.match(noneErr, /0 frames captured, [1-9]\d* did not match the filter/, noneErr);

  // 4. a capture slower than the traffic: copies beyond the ring are counted, packets still flow
  const big = path.join(d.runDir, 'big.pcap');
  const rxBefore = (JSON.parse((await d.cli('pmd-stats', '--json')).stdout) as { rxPackets: number }[])[0].rxPackets;
  const c4 = await d.cli('capture', 'vm1', '-w', big, '-c', '1000', '--snaplen', '128', '--buffer', '16');
  assert.equal(c4.code, 0, c4.stderr);
  const m = /1000 frames captured, (\d+) copies dropped/.exec(c4.stderr);
  assert.ok(m, c4.stderr);
  assert.ok(Number(m[1]) > 0, `overflow counted under line-rate traffic: ${c4.stderr}`);
  const ts4 = await run('tshark', ['-r', big, '-T', 'fields', '-e', 'frame.number']);
  assert.equal(ts4.code, 0, ts4.stderr);
  assert.equal(ts4.stdout.trim().split('\n').length, 1000);
  const rxAfter = (JSON.parse((await d.cli('pmd-stats', '--json')).stdout) as { rxPackets: number }[])[0].rxPackets;
  assert.ok(rxAfter - rxBefore > 5000, `the PMD kept forwarding during the capture: ${rxAfter - rxBefore}`);
  const drops = JSON.parse((await d.cli('port-stats', '--json')).stdout) as { port: string; rxDropped: number; txDropped: number }[];
  for (const p of drops) assert.equal(p.rxDropped, 0, `capture never drops packets: ${JSON.stringify(drops)}`);
  await tp.stopForwarding();
  await tp.quit();
});
