/**
 * A tiny application on the tsvs library: a virtio-user port (our virtio-pmd)
 * connected to any vhost-user backend (a tsvs switch port, DPDK net_vhost,
 * ...), swapping MAC addresses and sending every frame back, in bursts of 32.
 *
 *   node dist/examples/virtio-echo.js /run/tsvs/vm1 [seconds]
 */
import { Mempool, VirtioUserPort, BURST } from '../src/index.js';

const path = process.argv[2];
if (!path) {
  process.stderr.write('usage: virtio-echo.js SOCKET [seconds]\n');
  process.exit(2);
}
const seconds = Number(process.argv[3] ?? 10);
const pool = Mempool.create({ count: 4096 });
const port = new VirtioUserPort({ path, pool });
await port.waitUp(10000);
const bufs = new Int32Array(BURST);
const end = Date.now() + seconds * 1000;
const loop = (): void => {
  for (let i = 0; i < 1000; i++) {
    const n = port.rxBurst(0, bufs, BURST);
    if (n === 0) continue;
    for (let j = 0; j < n; j++) {
      const o = pool.dataOffset(bufs[j]);
      for (let b = 0; b < 6; b++) {
        const t = pool.data[o + b];
        pool.data[o + b] = pool.data[o + 6 + b];
        pool.data[o + 6 + b] = t;
      }
    }
    const sent = port.txBurst(0, bufs, n);
    if (sent < n) pool.free(bufs, n - sent, sent);
  }
  if (Date.now() < end) setImmediate(loop);
  else {
    console.log(JSON.stringify({ rx: port.stats.rxPackets, tx: port.stats.txPackets, drops: port.stats.drops }));
    port.close();
    pool.close();
  }
};
loop();
