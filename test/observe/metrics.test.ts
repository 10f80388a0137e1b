/**
 * tsvs daemon --metrics: Prometheus text format read by a real parser
 * (parse-prometheus-text-format), with DPDK testpmd pushing traffic through
 * the switch: names and types follow the conventions, counters move, and
 * they agree with `tsvs port-stats` / `tsvs pmd-stats`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format';
import { startDaemon } from '../harness/daemon.js';
import { requireTestpmd } from '../harness/dpdk.js';
import { macswapPair, urlFromLog } from '../harness/observe.js';
import { waitFor } from '../harness/wait.js';

async function scrape(url: string): Promise<Map<string, PromFamily>> {
  const r = await fetch(url);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return new Map(parsePrometheusTextFormat(await r.text()).map((f) => [f.name, f]));
}

function value(m: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number {
  const f = m.get(name);
  assert.ok(f, `metric ${name} is exported`);
  const s = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  assert.ok(s, `${name}${JSON.stringify(labels)} has a sample: ${JSON.stringify(f.metrics)}`);
  return Number(s.value);
}

test('Prometheus metrics under DPDK testpmd traffic: names, labels, counters that move and agree with port-stats', async (t) => {
  requireTestpmd();
  const d = await startDaemon({ args: ['--pmd-cpus', '1', '--metrics', '127.0.0.1:0'] });
  t.after(async () => { await d.stop(); fs.rmSync(d.runDir, { recursive: true, force: true }); });
  const url = await urlFromLog(d, /Prometheus metrics at /);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/, 'loopback by default');
  assert.equal((await fetch(url.replace('/metrics', '/nope'))).status, 404);
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  for (const n of ['vm1', 'vm2']) assert.equal((await d.cli('add-port', 'br0', n, '--type', 'vhost-user')).code, 0);
  const tp = await macswapPair(t, d);

  const m0 = await scrape(url);
  // conventions: counters end in _total, every tsvs family has help text, units in names
  for (const f of m0.values()) {
    if (!f.name.startsWith('tsvs_')) continue;
    assert.ok(f.help.length > 0, `${f.name} has help`);
    if (f.type === 'COUNTER') assert.match(f.name, /_total$/, `counter ${f.name} ends in _total`);
    else assert.doesNotMatch(f.name, /_total$/, `non-counter ${f.name} does not end in _total`);
  }
  for (const name of [
    'tsvs_interface_rx_packets_total', 'tsvs_interface_tx_bytes_total', 'tsvs_interface_drops_total', 'tsvs_pmd_emc_hits_total',
    'tsvs_pmd_megaflow_hits_total', 'tsvs_pmd_upcalls_total', 'tsvs_pmd_busy_seconds_total', 'tsvs_pmd_idle_seconds_total',
    'tsvs_pmd_processing_seconds_per_packet', 'tsvs_datapath_flows', 'tsvs_upcall_queue_depth', 'tsvs_mempool_buffers',
    'tsvs_vhost_user_connection_state', 'tsvs_vhost_user_reconnects_total', 'process_resident_memory_bytes',
  ]) assert.ok(m0.has(name), `${name} exported`);
  assert.equal(value(m0, 'tsvs_interface_link_state', { port: 'vm1', bridge: 'br0' }), 1);
  assert.equal(value(m0, 'tsvs_vhost_user_connection_state', { port: 'vm2' }), 1);
  assert.ok(value(m0, 'process_resident_memory_bytes') > 10e6, 'process RSS');
  const rx0 = value(m0, 'tsvs_interface_rx_packets_total', { port: 'vm1' });

  await tp.run('start tx_first 8');
  const rxOf = (m: Map<string, PromFamily>): number => value(m, 'tsvs_interface_rx_packets_total', { port: 'vm1' });
  const busyOf = (m: Map<string, PromFamily>): number => value(m, 'tsvs_pmd_busy_seconds_total', { pmd: '0' });
  // counters are published periodically: scrape until they show the traffic, then until they move again
  const m1 = await waitFor(async () => {
    const m = await scrape(url);
    return rxOf(m) > rx0 + 1000 && m;
  }, { what: 'the rx counter to show 1000 frames', timeout: 15000, interval: 100 });
  const m2 = await waitFor(async () => {
    const m = await scrape(url);
    return rxOf(m) > rxOf(m1) && busyOf(m) > busyOf(m1) && m;
  }, { what: 'the rx counter and busy time to move on', timeout: 15000, interval: 100 });
  const rx1 = rxOf(m1);
  const rx2 = rxOf(m2);
  assert.ok(rx1 > rx0 + 1000 && rx2 > rx1, `rx counter moves while traffic flows: ${rx0} ${rx1} ${rx2}`);
  assert.ok(value(m2, 'tsvs_pmd_busy_seconds_total', { pmd: '0' }) > value(m1, 'tsvs_pmd_busy_seconds_total', { pmd: '0' }), 'busy time moves');
  const hits = value(m2, 'tsvs_pmd_emc_hits_total', { pmd: '0' }) + value(m2, 'tsvs_pmd_megaflow_hits_total', { pmd: '0' });
  assert.ok(hits > 0.9 * value(m2, 'tsvs_pmd_rx_packets_total', { pmd: '0' }), 'cache hits');
  assert.ok(value(m2, 'tsvs_datapath_flows', { pmd: '0' }) >= 2, 'datapath flows for both directions');
  const ns = value(m2, 'tsvs_pmd_processing_seconds_per_packet', { pmd: '0' });
  assert.ok(ns > 1e-9 && ns < 1e-4, `seconds per packet ${ns}`);
  assert.equal(value(m2, 'tsvs_mempool_buffers', { state: 'free' }) + value(m2, 'tsvs_mempool_buffers', { state: 'in_use' }), 16384);
  await tp.stopForwarding();

  // at rest, the shared-memory counters equal what port-stats / pmd-stats get by asking the PMD thread
  const agree = await waitFor(async () => {
    const ps = JSON.parse((await d.cli('port-stats', '--json')).stdout) as { port: string; rxPackets: number; txPackets: number; rxBytes: number; txBytes: number; txDropped: number }[];
    const m = await scrape(url);
    for (const p of ps) {
      if (value(m, 'tsvs_interface_rx_packets_total', { port: p.port }) !== p.rxPackets) return false;
      if (value(m, 'tsvs_interface_tx_packets_total', { port: p.port }) !== p.txPackets) return false;
      if (value(m, 'tsvs_interface_rx_bytes_total', { port: p.port }) !== p.rxBytes) return false;
      if (value(m, 'tsvs_interface_tx_bytes_total', { port: p.port }) !== p.txBytes) return false;
      if (value(m, 'tsvs_interface_tx_dropped_total', { port: p.port }) !== p.txDropped) return false;
    }
    const [pmd] = JSON.parse((await d.cli('pmd-stats', '--json')).stdout) as { rxPackets: number; upcalls: number; emcHits: number }[];
    if (value(m, 'tsvs_pmd_rx_packets_total', { pmd: '0' }) !== pmd.rxPackets) return false;
    if (value(m, 'tsvs_pmd_upcalls_total', { pmd: '0' }) !== pmd.upcalls) return false;
    return { ps, pmd };
  }, { what: 'metrics to agree with port-stats', timeout: 10000, interval: 200 });
  assert.ok(agree.ps.every((p) => p.rxPackets > 1000));

  // a frontend that goes away and comes back: link state and reconnects
  await tp.quit();
  await waitFor(async () => value(await scrape(url), 'tsvs_interface_link_state', { port: 'vm1' }) === 0, { what: 'vm1 down in metrics', timeout: 15000, interval: 100 });
  const tp2 = await macswapPair(t, d);
  const m3 = await waitFor(async () => {
    const m = await scrape(url);
    return value(m, 'tsvs_vhost_user_reconnects_total', { port: 'vm1' }) === 1 ? m : undefined;
  }, { what: 'a reconnect counted', timeout: 15000, interval: 100 });
  assert.equal(value(m3, 'tsvs_interface_link_state', { port: 'vm1' }), 1);
  assert.ok(value(m3, 'tsvs_interface_link_resets_total', { port: 'vm1' }) >= 2, 'down and up again');
  await tp2.quit();
});
