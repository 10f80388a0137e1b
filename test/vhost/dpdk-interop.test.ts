/**
 * Our vhost-user backend against real DPDK 22.11 virtio-user (dpdk-testpmd).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/pmd/vhost-user.js';
import { Testpmd, requireTestpmd } from '../harness/dpdk.js';
import { Poller } from '../fixtures/vhost-poller.js';

requireTestpmd();

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vhost-'));
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timeout: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('DPDK virtio-user txonly -> our backend (server): exact count', { timeout: 60000 }, async () => {
  const dir = tmp();
  const sock = path.join(dir, 'vhost.sock');
  const pool = Mempool.create({ count: 4096 });
  const port = new VhostUserPort({ path: sock, mempool: pool });
  const poller = new Poller({ port, pool }).start();
  const tp = Testpmd.start({ vdev: `net_virtio_user0,path=${sock},queues=1`, fwdMode: 'txonly' });
  try {
    await tp.waitFor(/testpmd> /);
    await until(() => port.link === 'up', 10000, 'link up');
    await tp.run('start');
    await until(() => poller.rx > 200000, 20000, 'traffic');
    const st = await tp.stopForwarding();
    await poller.drain();
    assert.ok(st.txPackets > 0, 'testpmd sent');
    assert.equal(poller.rx, st.txPackets, `we received ${poller.rx}, testpmd sent ${st.txPackets}`);
    assert.equal(poller.rxBytes, st.txPackets * 64 - 0 * 0, 'bytes');
    assert.equal(port.stats.rxPackets, st.txPackets);
  } finally {
    poller.stop();
    await tp.quit();
    await port.closeAsync();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
