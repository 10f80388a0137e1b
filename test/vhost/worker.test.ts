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
import { waitFor } from '../harness/wait.js';

requireTestpmd();

test('DPDK txonly -> backend on main thread, data path in a worker: exact count, clean stop', { timeout: 60000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vhost-w-'));
  const sock = path.join(dir, 'vhost.sock');
  const pool = Mempool.create({ count: 4096 });
  const b = new VhostUserBackend({ path: sock, device: new NetDevice() });
  const w = new Worker(fileURLToPath(new URL('../fixtures/vhost-worker.js', import.meta.url)), { workerData: { pool: pool.attachInfo() } });
  const attached: number[] = [];
  let done: { rx: number; rxBytes: number } | null = null;
  let counted = -1;
  w.on('message', (m) => {
    if (m.type === 'attached') attached.push(m.generation);
    if (m.type === 'count') counted = m.rx;
    if (m.type === 'done') done = m;
  });
  /** The worker's receive count, asked for and answered through its message port. */
  const workerRx = async (): Promise<number> => {
    counted = -1;
    w.postMessage({ type: 'count' });
    const got = await waitFor(() => counted >= 0 && { rx: counted }, { what: 'the worker to report its count', timeout: 2000 });
    return got.rx;
  };
  b.on('datapath', (desc) => w.postMessage({ type: 'datapath', desc }));
  b.start();
  const tp = Testpmd.start({ vdev: `net_virtio_user0,path=${sock},queues=1`, fwdMode: 'txonly' });
  try {
    await tp.waitFor(/testpmd> /);
    await waitFor(() => b.linkUp && attached.length > 0, { what: 'worker attached', describe: () => `link ${b.linkUp}, attached ${attached}` });
    assert.ok(b.control.users >= 1, 'worker holds a lease');
    await tp.run('start');
    await waitFor(async () => (await workerRx()) > 10000, { what: 'the worker to receive 10000 frames', timeout: 20000 });
    const st = await tp.stopForwarding();
    // everything testpmd sent is received before testpmd quits (the revoke then leaves nothing in the ring)
    await waitFor(async () => (await workerRx()) >= st.txPackets, { what: `the worker to receive all ${st.txPackets} frames` });
    // testpmd quits: GET_VRING_BASE revokes the data path; the worker must release it first
    await tp.quit();
    await waitFor(() => !b.connected, { what: 'the backend to see testpmd gone', timeout: 5000 });
    assert.equal(b.control.users, 0, 'worker released the guest memory');
    w.postMessage({ type: 'stop' });
    const d = await waitFor(() => done as { rx: number; rxBytes: number } | null, { what: "the worker's final counts" });
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
