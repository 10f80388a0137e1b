/**
 * The web dashboard (tsvs daemon --web) in a real browser: Debian's chromium,
 * headless, driven by playwright-core (no browser download), while DPDK
 * testpmd pushes traffic through the switch: no console errors, the plots
 * move, a port added with the CLI appears without a reload, the flow table
 * sorts and filters. A screenshot is saved in the test's temp dir
 * (TSVS_DASHBOARD_PNG=path copies it there too, e.g. for the README).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { startDaemon, CLI } from '../harness/daemon.js';
import { requireTestpmd } from '../harness/dpdk.js';
import { macswapPair, urlFromLog } from '../harness/observe.js';
import { waitFor } from '../harness/wait.js';

const CHROMIUM = process.env.TSVS_CHROMIUM ?? '/usr/bin/chromium';

test('web dashboard in headless chromium under testpmd traffic: live plots, topology, flow table, no console errors', async (t) => {
  requireTestpmd();
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is not installed (apt-get install chromium): the dashboard test drives it`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-web-'));
  const d = await startDaemon({ args: ['--pmd-cpus', '1', '--web', '127.0.0.1:0'] });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  t.after(async () => {
    await browser.close();
    await d.stop();
    fs.rmSync(d.runDir, { recursive: true, force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const url = await urlFromLog(d, /web dashboard at /);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  for (const n of ['vm1', 'vm2']) assert.equal((await d.cli('add-port', 'br0', n, '--type', 'vhost-user')).code, 0);
  const tp = await macswapPair(t, d);
  await tp.run('start tx_first 8');

  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  const resp = await page.goto(url);
  assert.equal(resp?.status(), 200);
  await page.evaluate(() => ((window as unknown as { loadedOnce: boolean }).loadedOnce = true));

  // plots move: the rx series of vm1 has packets per second, and keeps getting points
  type Dash = { samples: number; charts: Record<string, { data: (number | null)[][] | null; hist: Map<string, (number | null)[]> }> };
  const rxOf = (port: string): Promise<(number | null)[]> =>
    page.evaluate((p) => {
      const w = window as unknown as { tsvsDash: Dash };
      return [...(w.tsvsDash.charts.rx.hist.get(p) ?? [])];
    }, port);
  await waitFor(async () => {
    const a = await rxOf('vm1');
    const b = await rxOf('vm2');
    return a.filter((v) => (v ?? 0) > 1000).length >= 2 && b.filter((v) => (v ?? 0) > 1000).length >= 2;
  }, { what: 'live rx rates for vm1 and vm2', timeout: 30000, interval: 250 });
  const n1 = (await rxOf('vm1')).length;
  await waitFor(async () => (await rxOf('vm1')).length >= n1 + 2, { what: 'more points', timeout: 10000, interval: 200 });
  const busy = await page.evaluate(() => [...((window as unknown as { tsvsDash: Dash }).tsvsDash.charts.busy.hist.get('pmd 0') ?? [])]);
  assert.ok(busy.some((v) => (v ?? 0) > 0), `PMD busy % plotted: ${busy}`);
  const plotted = await page.evaluate(() => (window as unknown as { tsvsDash: Dash }).tsvsDash.charts.rx.data?.length ?? 0);
  assert.equal(plotted, 3, 'uPlot holds time + two port series');
  assert.equal(await page.locator('#chart-rx canvas').count(), 1, 'drawn on a canvas');

  // topology with link states; a port added with the CLI shows up without a reload
  await page.locator('.port[data-port="vm1"][data-link="up"]').waitFor();
  await page.locator('.port[data-port="vm2"][data-link="up"]').waitFor();
  assert.equal((await d.cli('add-port', 'br0', 'vm3', '--type', 'vhost-user')).code, 0);
  await page.locator('.port[data-port="vm3"][data-link="down"]').waitFor({ timeout: 10000 });
  assert.equal(await page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce), true, 'same page, no reload');

  // datapath flow table: rows, filter, sort
  await waitFor(async () => (await page.locator('#flows tbody tr').count()) >= 2, { what: 'flow rows', timeout: 10000, interval: 200 });
  await page.fill('#filter', 'in_port=vm2');
  await waitFor(async () => {
    const rows = await page.locator('#flows tbody tr').allTextContents();
    return rows.length >= 1 && rows.every((r) => r.includes('in_port=vm2'));
  }, { what: 'filtered rows', timeout: 5000, interval: 100 });
  await page.fill('#filter', '');
  await page.click('#flows th[data-k="packets"]');
  const packets = (await page.locator('#flows tbody tr td:nth-child(4)').allTextContents()).map(Number);
  assert.deepEqual(packets, [...packets].sort((a, b) => b - a), 'sorted by packets, largest first');

  const shot = path.join(tmp, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10000, 'a screenshot with content');
  if (process.env.TSVS_DASHBOARD_PNG) fs.copyFileSync(shot, process.env.TSVS_DASHBOARD_PNG);
  assert.deepEqual(errors, [], 'no console errors');

  // tsvs dashboard: the same page served by a separate process over the control socket
  const dash = spawn(process.execPath, [CLI, 'dashboard', '--listen', '127.0.0.1:0', '--run-dir', d.runDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => {
    if (dash.exitCode === null) dash.kill('SIGKILL');
  });
  let dashErr = '';
  dash.stderr!.on('data', (x) => (dashErr += x));
  const url2 = await waitFor(() => /tsvs dashboard at (http:\/\/\S+)/.exec(dashErr)?.[1], { what: 'tsvs dashboard URL', timeout: 15000, interval: 100 });
  const page2 = await browser.newPage();
  const errors2: string[] = [];
  page2.on('console', (m) => {
    if (m.type() === 'error') errors2.push(m.text());
  });
  await page2.goto(url2);
  await page2.locator('.port[data-port="vm3"]').waitFor({ timeout: 10000 });
  await waitFor(async () => (await page2.evaluate(() => (window as unknown as { tsvsDash: { samples: number } }).tsvsDash.samples)) >= 2, { what: 'rates from the separate process', timeout: 10000, interval: 200 });
  assert.deepEqual(errors2, [], 'no console errors on the tsvs dashboard page either');
  const exited = new Promise((r) => dash.once('exit', r));
  dash.kill('SIGTERM');
  await exited;
  await tp.stopForwarding();
  await tp.quit();
});
