/**
 * A Linux guest under QEMU 7.2 (TCG) with a virtio-net NIC on our vhost-user
 * backend. The test answers ARP and ICMP echo for 10.0.0.2 from the frames it
 * receives, so the guest's ping only succeeds if frames move both ways
 * (guest TX ring -> us, us -> guest RX ring with call notifications).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Mempool } from '../../src/mem/mempool.js';
import { VhostUserPort } from '../../src/port/vhost-user.js';
import { startGuest } from '../harness/qemu.js';
import { Poller } from '../fixtures/vhost-poller.js';

const OUR_MAC = [0x02, 0, 0, 0, 0, 0x02];
const OUR_IP = [10, 0, 0, 2];

test('QEMU 7.2 Linux guest pings through our vhost-user backend', { timeout: 120000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vhost-q-'));
  const sock = path.join(dir, 'vhost.sock');
  const pool = Mempool.create({ count: 2048 });
  const port = new VhostUserPort({ path: sock, mempool: pool });
  const replies: Uint8Array[] = [];
  let arps = 0;
  let echos = 0;
  const poller = new Poller({
    port,
    pool,
    onFrame: (f) => {
      const type = (f[12] << 8) | f[13];
      if (type === 0x0806 && f.length >= 42 && f[21] === 1 && f.subarray(38, 42).every((v, i) => v === OUR_IP[i])) {
        arps++;
        const r = new Uint8Array(42);
        r.set(f.subarray(6, 12), 0);
        r.set(OUR_MAC, 6);
        r.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2], 12);
        r.set(OUR_MAC, 22);
        r.set(OUR_IP, 28);
        r.set(f.subarray(22, 32), 32); // target = the asker's MAC + IP
        replies.push(r);
      } else if (type === 0x0800 && f.length >= 42 && f[23] === 1 && f.subarray(30, 34).every((v, i) => v === OUR_IP[i])) {
        const ihl = (f[14] & 0xf) * 4;
        if (f[14 + ihl] !== 8) return;
        echos++;
        const r = f.slice();
        r.set(f.subarray(6, 12), 0);
        r.set(OUR_MAC, 6);
        r.set(f.subarray(30, 34), 26);
        r.set(f.subarray(26, 30), 30);
        r[14 + ihl] = 0; // echo reply; fix the checksum incrementally (+0x0800)
        let c = ((r[16 + ihl] << 8) | r[17 + ihl]) + 0x0800;
        c = (c & 0xffff) + (c >>> 16);
        r[16 + ihl] = c >> 8;
        r[17 + ihl] = c & 0xff;
        replies.push(r);
      }
    },
  });
  const out = new Int32Array(32);
  const flush = setInterval(() => {
    while (replies.length) {
      const f = replies.shift()!;
      if (pool.alloc(out, 1) !== 1) return;
      const o = pool.dataOffset(out[0]);
      pool.data.set(f, o);
      pool.dataLen[out[0]] = pool.pktLen[out[0]] = Math.max(60, f.length);
      port.txBurst(0, out, 1);
    }
  }, 5);
  poller.start();
  try {
    const g = await startGuest({
      name: 'vhost-ping',
      cleanup: t,
      nics: [{ kind: 'vhost-user', socket: sock, mac: '52:54:00:00:00:01' }],
      params: { ip: '10.0.0.1/24', timeout: 60 },
      script: 'n=$(ping -c 5 -W 2 10.0.0.2 | grep -c "bytes from"); tsvs_result ping received=$n\n',
    });
    await g.waitFor(/TSVS-RESULT \{"name":"ping"[^\n]*\}/, 90000);
    const r = g.resultsNamed('ping')[0];
    assert.equal(r.received, 5, `guest got ${r.received}/5 replies (we saw ${arps} ARP, ${echos} echo requests; port ${JSON.stringify(port.stats)})`);
    assert.ok(arps >= 1 && echos >= 5);
    assert.ok(port.backend!.negotiatedFeatures & (1n << 29n), 'QEMU negotiated EVENT_IDX');
    await g.kill();
  } finally {
    clearInterval(flush);
    poller.stop();
    await port.closeAsync();
    pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
