/**
 * Test fixture: a two-port forwarder (a tiny patch panel) over kernel-facing
 * ports. Every frame received on one port is sent on the other.
 *
 *   node netdev-fwd.js '<json spec>'
 *   spec = { ports: [PortSpec, PortSpec] }
 *   PortSpec = { kind: 'afpacket', name, opts: AfPacketPortOptions }
 *            | { kind: 'tap', name, opts: TapPortOptions }
 *
 * Run it inside a namespace with `ip netns exec NS node ...` (afpacket ports
 * find their interface there) or give the ports `netns` options.
 * Event driven (fd readiness on the event loop), so it idles without CPU.
 * stdout lines: 'ready <json>' once the ports are open, then one JSON line per
 * stdin command: 'stats' -> {ports:[{name,type,ifname,nQueues,link,stats}]},
 * 'close' -> {closed:true, fdsBefore, fdsAfter} and exit 0.
 * Errors: 'error <json {name,message,code}>' and exit 1.
 */
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { Mempool } from '../../src/mem/mempool.js';
import { AfPacketPort, type AfPacketPortOptions } from '../../src/port/af-packet.js';
import { TapPort, type TapPortOptions } from '../../src/port/tap.js';
import type { KernelPort } from '../../src/port/kernel-port.js';
import { BURST } from '../../src/port/port.js';
import { FdWatch, watchReadable } from '../../src/sys/poll.js';

type PortSpec = { kind: 'afpacket'; name: string; opts: AfPacketPortOptions } | { kind: 'tap'; name: string; opts: TapPortOptions };

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;


function main(): void {
  const spec = JSON.parse(process.argv[2] ?? '{}') as { ports: PortSpec[] };
  // set up stdio first (Node opens some fds lazily), then count
  const rl = readline.createInterface({ input: process.stdin });
  process.stdout.write('');
  const fdsBefore = openFds();
  const pool = Mempool.create({ name: 'fwd', count: 2048 });
  const ports: KernelPort[] = [];
  try {
    for (const p of spec.ports) {
      ports.push(p.kind === 'afpacket' ? new AfPacketPort(p.name, pool, p.opts) : new TapPort(p.name, pool, p.opts));
    }
  } catch (e) {
    for (const p of ports) p.close();
    pool.close();
    const err = e as Error & { code?: string };
    process.stdout.write(`error ${JSON.stringify({ name: err.name, message: err.message, code: err.code })}\n`);
    process.exit(1);
  }
  if (ports.length !== 2) throw new Error('need exactly two ports');
  const buf = new Int32Array(BURST);
  const watches: FdWatch[] = [];
  for (let i = 0; i < 2; i++) {
    const src = ports[i];
    const dst = ports[1 - i];
    for (let q = 0; q < src.nQueues; q++) {
      const fd = src.fds[q];
      watches.push(
        watchReadable(fd, () => {
          // level-triggered: a few bursts now, the rest on the next callback
          for (let round = 0; round < 8; round++) {
            const n = src.rxBurst(q, buf, BURST);
            if (n === 0) break;
            const k = dst.txBurst(q % dst.nQueues, buf, n);
            if (k < n) pool.free(buf, n - k, k);
          }
        }),
      );
    }
  }
  const info = ports.map((p) => ({ name: p.name, type: p.type, ifname: p.ifname, nQueues: p.nQueues, fds: p.fds }));
  process.stdout.write(`ready ${JSON.stringify(info)}\n`);
  rl.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'stats') {
      for (const p of ports) if (p instanceof AfPacketPort) p.pollKernelStats();
      const out = ports.map((p) => ({ name: p.name, type: p.type, ifname: p.ifname, nQueues: p.nQueues, link: p.link, stats: p.stats }));
      process.stdout.write(`${JSON.stringify({ ports: out, poolAvailable: pool.available(), poolCount: pool.count })}\n`);
    } else if (cmd === 'close') {
      for (const w of watches) w.close();
      for (const p of ports) p.close();
      const poolAvailable = pool.available();
      pool.close();
      process.stdout.write(`${JSON.stringify({ closed: true, fdsBefore, fdsAfter: openFds(), poolAvailable })}\n`);
      rl.close();
      process.exit(0);
    }
  });
  rl.on('close', () => process.exit(0));
}

main();
