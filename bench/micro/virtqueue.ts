/**
 * Packets per second through a driver <-> device virtqueue loop in one thread
 * (no sockets, no threads): the driver posts 64-byte frames (header in the
 * buffer), the device dequeues them into a mempool-like buffer, the driver
 * reclaims. Split and packed. Reference point (C, from docs/interop.md#dpdk-2211): DPDK's
 * single-process virtio-user/vhost loopback moves about 8.7 Mpps per direction
 * on one core here.
 *   node dist/bench/micro/virtqueue.js [--packets N]
 */
import { parseArgs } from 'node:util';
import { GuestMemory } from '../../src/mem/guest-memory.js';
import {
  createDeviceQueue, createDriverQueue, F_VERSION_1, F_RING_PACKED, RING_F_EVENT_IDX, vringLayout, packedLayout,
} from '../../src/virtio/index.js';

const { values } = parseArgs({ options: { packets: { type: 'string', default: '3000000' } } });
const total = Number(values.packets);
const SIZE = 256;
const FRAME = 64;
const HDR = 12;

function run(packed: boolean): number {
  const mem0 = new Uint8Array(1 << 22);
  const base = 0x100000;
  const mem = new GuestMemory([{ gpa: base, size: mem0.length, uaddr: base, views: [mem0] }]);
  const features = F_VERSION_1 | RING_F_EVENT_IDX | (packed ? F_RING_PACKED : 0n);
  const l = packed ? packedLayout(base, SIZE) : vringLayout(base, SIZE, 4096);
  const cfg = packed
    ? { size: SIZE, descAddr: l.descAddr, availAddr: (l as { driverEventAddr: number }).driverEventAddr, usedAddr: (l as { deviceEventAddr: number }).deviceEventAddr, features }
    : { size: SIZE, descAddr: l.descAddr, availAddr: (l as { availAddr: number }).availAddr, usedAddr: (l as { usedAddr: number }).usedAddr, features };
  const drv = createDriverQueue(mem, cfg);
  const dev = createDeviceQueue(mem, cfg);
  const bufBase = base + 0x40000;
  const addrs = new Float64Array(32);
  const lens = new Int32Array(32).fill(HDR + FRAME);
  const tokens = new Int32Array(32);
  const back = new Int32Array(SIZE);
  const dst = new Uint8Array(2048 * 32);
  const dstOffs = Int32Array.from({ length: 32 }, (_, i) => i * 2048);
  const dlens = new Int32Array(32);
  let next = 0;
  let moved = 0;
  const t0 = performance.now();
  while (moved < total) {
    for (let i = 0; i < 32; i++) {
      tokens[i] = next;
      addrs[i] = bufBase + (next % 1024) * 2048;
      next++;
    }
    drv.postTx(addrs, lens, tokens, 32);
    moved += dev.dequeueBurst(dst, dstOffs, 2048, dlens, 32);
    drv.reclaimTx(back, SIZE);
  }
  return moved / ((performance.now() - t0) / 1000);
}

const split = run(false);
const packed = run(true);
console.log(JSON.stringify({ frame: FRAME, splitMpps: +(split / 1e6).toFixed(2), packedMpps: +(packed / 1e6).toFixed(2), reference: 'DPDK single-process loopback ~8.7 Mpps per direction (docs/interop.md#dpdk-2211)' }));
