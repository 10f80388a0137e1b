/**
 * Thread hand-off: the protocol runs on the main thread, the data path in a
 * worker built from the posted description. The control side must wait for
 * the worker to leave the rings before it answers GET_VRING_BASE or unmaps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import { Testpmd, requireTestpmd } from '../harness/dpdk.js';

requireTestpmd();

test('DPDK txonly -> backend on main thread, data path in a worker: exact count, clean stop', { timeout: 60000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vhost-w-'));
  const sock = path.join(dir, 'vhost.sock');
  const pool = Mempool.create({ count: 4096 });
  const b = new VhostUserBackend({ path: sock, device: new NetDevice() });
  const w = new Worker(fileURLToPath(new URL('../fixtures/vhost-worker.js', import.meta.url)), { workerData: { pool: pool.attachInfo() } });
  const attached: number[] = [];
  let done: { rx: number; rxBytes: number } | null = null;
  w.on('message', (m) => {
    if (m.type === 'attached') attached.push(m.generation);
    if (m.type === 'done') done = m;
  });
  b.on('datapath', (desc) => w.postMessage({ type: 'datapath', desc }));
  b.start();
  const tp = Testpmd.start({ vdev: `net_virtio_user0,path=${sock},queues=1`, fwdMode: 'txonly' });
  try {
    await tp.waitFor(/testpmd> /);
    const t0 = Date.now();
    while (!(b.linkUp && attached.length > 0) && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 20));
    assert.ok(b.linkUp && attached.length > 0, 'worker attached');
    assert.ok(b.control.users >= 1, 'worker holds a lease');
    await tp.run('start');
    await new Promise((r) => setTimeout(r, 1500));
    const st = await tp.stopForwarding();
    await new Promise((r) => setTimeout(r, 300));
    // testpmd quits: GET_VRING_BASE revokes the data path; the worker must release it first
    await tp.quit();
    const t1 = Date.now();
    while (b.connected && Date.now() - t1 < 5000) await new Promise((r) => setTimeout(r, 20));
    assert.equal(b.connected, false);
    assert.equal(b.control.users, 0, 'worker released the guest memory');
    w.postMessage({ type: 'stop' });
    while (!done) await new Promise((r) => setTimeout(r, 10));
    const d = done as { rx: number; rxBytes: number };
    assert.ok(st.txPackets > 10000, `testpmd sent ${st.txPackets}`);
    assert.equal(d.rx, st.txPackets, `worker received ${d.rx}, testpmd sent ${st.txPackets}`);
    assert.equal(d.rxBytes, 64 * st.txPackets);
  } finally {
    await tp.quit();
    await w.terminate();
    await b.close();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
