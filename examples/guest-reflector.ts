/**
 * A guest VNF in TypeScript: runs inside a VM, drives the VM's virtio-net NIC
 * from userspace (our virtio-pci PMD, no guest kernel on the data path), and
 * sends every frame back where it came from with its MAC addresses swapped.
 * Copy it and put your own processing where the swap is.
 *
 * In the guest (as root, hugepages reserved, the NIC handed to uio_pci_generic):
 *   echo 64 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
 *   modprobe uio_pci_generic
 *   tsvs pci-bind 0000:00:02.0 uio_pci_generic
 *   node dist/examples/guest-reflector.js 0000:00:02.0 [seconds] [packed]
 */
import { Mempool, VirtioPciPort, BURST, PCI_BUF_SIZE } from '../src/index.js';

const addr = process.argv[2];
if (!addr) {
  process.stderr.write('usage: guest-reflector.js PCI_ADDR [seconds] [packed]\n');
  process.exit(2);
}
const seconds = Number(process.argv[3] ?? 10);
// packet buffers in hugepages: the device reads and writes them by physical address
const pool = Mempool.create({ count: 4096, bufSize: PCI_BUF_SIZE, hugepages: true });
const port = new VirtioPciPort({ addr, pool, packed: process.argv[4] === 'packed' });
const bufs = new Int32Array(BURST);
const data = pool.data;
const end = Date.now() + seconds * 1000;
const loop = (): void => {
  for (let i = 0; i < 1000; i++) {
    const n = port.rxBurst(0, bufs, BURST);
    if (n === 0) continue;
    for (let j = 0; j < n; j++) {
      const o = pool.dataOffset(bufs[j]);
      for (let b = 0; b < 6; b++) {
        const t = data[o + b];
        data[o + b] = data[o + 6 + b];
        data[o + 6 + b] = t;
      }
    }
    const sent = port.txBurst(0, bufs, n);
    if (sent < n) pool.free(bufs, n - sent, sent); // no room: drop the rest
  }
  if (Date.now() < end) setImmediate(loop); // let the link watcher run
  else {
    console.log(JSON.stringify({ link: port.link, rx: port.stats.rxPackets, tx: port.stats.txPackets, drops: port.stats.drops, reinits: port.reinits }));
    port.close();
    pool.close();
  }
};
loop();
