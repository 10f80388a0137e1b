/** Helpers for the observer tests (metrics, top, dashboard, capture): a switch with DPDK testpmd traffic. */
import * as path from 'node:path';
import { Testpmd } from './dpdk.js';
import type { Daemon } from './daemon.js';

export const M1 = '02:00:00:00:00:01';
export const M2 = '02:00:00:00:00:02';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll fn until it returns a value that is not undefined/false, or throw after ms. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 15000, every = 100): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(every);
  }
}

/** A daemon log line's URL (e.g. "Prometheus metrics at http://..."). */
export function urlFromLog(d: Daemon, what: RegExp): Promise<string> {
  return waitFor(`${what} in the daemon log`, () => {
    const m = new RegExp(what.source + '(http://[^\\s"]+)').exec(d.log());
    return m ? m[1] : undefined;
  });
}

/**
 * testpmd with two virtio-user ports on the switch's vhost-user ports vm1 and vm2, forwarding macswap
 * (each frame goes back out the port it came in on, to the other VM's MAC): traffic starts with `start tx_first N`.
 */
export async function macswapPair(t: { after(fn: () => void): void }, d: Daemon): Promise<Testpmd> {
  const tp = Testpmd.start({
    vdev: [`net_virtio_user0,path=${path.join(d.runDir, 'vm1')},queues=1,mac=${M1}`, `net_virtio_user1,path=${path.join(d.runDir, 'vm2')},queues=1,mac=${M2}`],
    fwdMode: 'macswap',
    lcores: '0@1,1@0',
    extraArgs: [`--eth-peer=0,${M2}`, `--eth-peer=1,${M1}`, '--port-topology=loop'],
  });
  t.after(() => tp.kill());
  await tp.waitFor(/testpmd> /, 30000);
  await waitFor('vm1 and vm2 up', async () => ((await d.cli('show')).stdout.match(/link=up/g) ?? []).length >= 2, 30000);
  return tp;
}
