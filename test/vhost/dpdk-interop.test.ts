/**
 * Our vhost-user backend against real DPDK 22.11 virtio-user (dpdk-testpmd).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { Testpmd, requireTestpmd } from '../harness/dpdk.js';
import { Poller } from '../fixtures/vhost-poller.js';
import { waitFor } from '../harness/wait.js';

requireTestpmd();

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vhost-'));
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
    await waitFor(() => port.link === 'up', { what: 'link up' });
    await tp.run('start');
    await waitFor(() => poller.rx > 200000, { what: 'traffic', timeout: 20000 });
    const st = await tp.stopForwarding();
    await poller.drain();
    assert.ok(st.txPackets > 0, 'testpmd sent');
    assert.equal(poller.rx, st.txPackets, `we received ${poller.rx}, testpmd sent ${st.txPackets}`);
    assert.equal(poller.rxBytes, st.txPackets * 64 - 0 * 0, 'bytes');
    assert.equal(port.stats.rxPackets, st.txPackets);
    await tp.quit();
    await waitFor(() => !port.backend!.connected, { what: 'disconnect', timeout: 5000 });
    assert.equal(port.link, 'down');
    assert.equal(pool.available(), 4096, 'every mbuf back in the pool');
  } finally {
    poller.stop();
    await tp.quit();
    await port.closeAsync();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('our backend generating -> DPDK virtio-user rxonly: counts match', { timeout: 60000 }, async () => {
  const dir = tmp();
  const sock = path.join(dir, 'vhost.sock');
  const pool = Mempool.create({ count: 4096 });
  const port = new VhostUserPort({ path: sock, mempool: pool });
  const tp = Testpmd.start({ vdev: `net_virtio_user0,path=${sock},queues=1`, fwdMode: 'rxonly' });
  const poller = new Poller({ port, pool, txFrameLen: 64, txLimit: 300000 });
  try {
    await tp.waitFor(/testpmd> /);
    await waitFor(() => port.link === 'up', { what: 'link up' });
    await tp.run('start');
    poller.start();
    await waitFor(() => poller.txOffered >= 300000, { what: 'generator done', timeout: 30000 });
    let seen = -1;
    await waitFor(async () => (seen = (await tp.portStats()).rxPackets) >= port.stats.txPackets && pool.available() === 4096, {
      what: 'testpmd to receive every frame we delivered, and every mbuf back in our pool',
      describe: () => `testpmd rx ${seen}, we delivered ${port.stats.txPackets}, pool ${pool.available()}/4096`,
    });
    const st = await tp.stopForwarding();
    const ours = port.stats;
    assert.ok(ours.txPackets > 1000, `we delivered ${ours.txPackets}`);
    assert.equal(st.rxPackets, ours.txPackets, `testpmd got ${st.rxPackets}, we delivered ${ours.txPackets} (drops ${JSON.stringify(ours.drops)})`);
    assert.equal(ours.txPackets + ours.txDropped, 300000, 'every frame delivered or counted as a drop');
    assert.equal(pool.available(), 4096, 'every mbuf back in the pool');
  } finally {
    poller.stop();
    await tp.quit();
    await port.closeAsync();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('DPDK virtio-user as server, our backend as client: testpmd killed and restarted, traffic resumes', { timeout: 90000 }, async () => {
  const dir = tmp();
  const sock = path.join(dir, 'vhost.sock');
  const pool = Mempool.create({ count: 4096 });
  const port = new VhostUserPort({ path: sock, mempool: pool, client: true, reconnectMaxMs: 200 });
  const poller = new Poller({ port, pool }).start();
  let tp = Testpmd.start({ vdev: `net_virtio_user0,path=${sock},queues=1,server=1`, fwdMode: 'txonly' });
  try {
    await tp.waitFor(/testpmd> /);
    await waitFor(() => port.link === 'up', { what: 'link up (1st testpmd)', timeout: 15000 });
    await tp.run('start');
    await waitFor(() => poller.rx > 50000, { what: 'traffic from 1st testpmd', timeout: 20000 });
    await tp.kill();
    await waitFor(() => port.link === 'down', { what: 'link down after kill', timeout: 5000 });
    assert.equal(port.backend!.connected, false);
    const before = poller.rx;
    fs.rmSync(sock, { force: true }); // a killed testpmd leaves its socket file; DPDK refuses to bind over it
    tp = Testpmd.start({ vdev: `net_virtio_user0,path=${sock},queues=1,server=1`, fwdMode: 'txonly' });
    await tp.waitFor(/testpmd> /);
    await waitFor(() => port.link === 'up', { what: 'link up (2nd testpmd)', timeout: 15000 });
    await tp.run('start');
    await waitFor(() => poller.rx > before + 50000, { what: 'traffic from 2nd testpmd', timeout: 20000 });
    const st = await tp.stopForwarding();
    await poller.drain();
    assert.equal(poller.rx - before, st.txPackets, 'exact count for the 2nd session');
    assert.ok(port.backend!.stats.connections >= 2);
  } finally {
    poller.stop();
    await tp.quit();
    await port.closeAsync();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('two queue pairs (queues=2), split and packed rings', { timeout: 90000 }, async () => {
  for (const packed of [false, true]) {
    const dir = tmp();
    const sock = path.join(dir, 'vhost.sock');
    const pool = Mempool.create({ count: 8192 });
    const port = new VhostUserPort({ path: sock, mempool: pool, queues: 2 });
    const poller = new Poller({ port, pool, queues: [0, 1] }).start();
    const tp = Testpmd.start({
      vdev: `net_virtio_user0,path=${sock},queues=2${packed ? ',packed_vq=1' : ''}`,
      fwdMode: 'txonly',
      queues: 2,
    });
    try {
      await tp.waitFor(/testpmd> /);
      await waitFor(() => port.link === 'up', { what: 'link up' });
      await tp.run('start');
      await waitFor(() => poller.rxPerQueue[0] > 20000 && poller.rxPerQueue[1] > 20000, { what: `traffic on both queues (${poller.rxPerQueue})`, timeout: 20000 });
      const st = await tp.stopForwarding();
      await poller.drain();
      assert.equal(poller.rx, st.txPackets, `packed=${packed}: received ${poller.rx} (${poller.rxPerQueue}), sent ${st.txPackets}`);
      assert.equal(port.backend!.negotiatedFeatures & (1n << 34n) ? true : false, packed, 'ring kind negotiated');
    } finally {
      poller.stop();
      await tp.quit();
      await port.closeAsync();
      pool.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
});
