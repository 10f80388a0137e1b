/**
 * Hand-off of a data path between owners (what moving a port from one PMD
 * thread to another needs): the backend keeps the connection, one data-path
 * owner detaches mid-stream and another attaches to the same generation; it
 * resumes where the first left off, so no frame is taken twice or skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserBackend } from '../../src/vhost/backend.js';
import { NetDevice } from '../../src/vhost/net-device.js';
import type { DataPathDescription } from '../../src/vhost/ring-lease.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { VirtioUserPort } from '../../src/port/virtio-user.js';
import { TrafficGen } from '../../src/app/traffic.js';
import { waitFor } from '../harness/wait.js';


for (const packed of [false, true]) {
  test(`a data path handed to a new owner resumes where the old one stopped (${packed ? 'packed' : 'split'})`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-handoff-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'vh.sock');
    const pool = Mempool.create({ count: 2048 });
    let desc: DataPathDescription | null = null;
    const b = new VhostUserBackend({ path: sock, device: new NetDevice(), logger: { log: () => {} } });
    b.on('datapath', (d) => (desc = d));
    b.start();
    const fe = new VirtioUserPort({ path: sock, packed });
    t.after(async () => {
      fe.close();
      await b.close();
      pool.close();
    });
    await waitFor(() => desc !== null && b.linkUp, { what: 'the backend to describe a data path with the link up', interval: 10 });
    await fe.waitUp(); // the frontend's own side of the handshake may finish after the backend's
    const gen = new TrafficGen({ size: 64 });
    const bufs = new Int32Array(32);
    const got: number[] = [];
    const send = (n: number): void => {
      const k = fe.pool.alloc(bufs, n);
      for (let i = 0; i < k; i++) gen.fill(fe.pool, bufs[i]);
      const s = fe.txBurst(0, bufs, k);
      if (s < k) fe.pool.free(bufs, k - s, s);
      assert.equal(s, k, 'the frontend took the burst');
    };
    const drain = (port: VhostUserPort, want: number): void => {
      for (let tries = 0; tries < 1000 && want > 0; tries++) {
        const n = port.rxBurst(0, bufs, 32);
        for (let i = 0; i < n; i++) got.push(new DataView(pool.data.buffer, pool.data.byteOffset + pool.dataOffset(bufs[i])).getUint32(42 + 4));
        pool.free(bufs, n);
        want -= n;
      }
    };
    // owner 1 takes 3 bursts and a half
    const a = VhostUserPort.ringsOnly({ name: 'a', mempool: pool });
    a.setDataPath(desc);
    for (let r = 0; r < 3; r++) {
      send(32);
      drain(a, 32);
    }
    send(16);
    drain(a, 16);
    send(32); // in the ring when the owner changes
    a.close(); // detaches (saves where it stopped)
    // owner 2, same generation
    const c = VhostUserPort.ringsOnly({ name: 'c', mempool: pool });
    c.setDataPath(desc);
    assert.equal(c.link, 'up');
    drain(c, 32);
    for (let r = 0; r < 20; r++) {
      send(32);
      drain(c, 32);
    }
    c.close();
    const want = 3 * 32 + 16 + 32 + 20 * 32;
    assert.equal(got.length, want, 'every frame once');
    assert.deepEqual(got, Array.from({ length: want }, (_, i) => i), 'in order, none twice, none skipped');
  });
}
