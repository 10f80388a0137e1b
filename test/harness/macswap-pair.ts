/**
 * dpdk-testpmd with two virtio-user ports on the switch's vhost-user ports vm1 (MAC M1) and vm2 (MAC M2),
 * forwarding macswap on each port back to itself: a ping-pong between vm1 and vm2 with correct source
 * MACs. Traffic starts with `start tx_first N`. Used by the daemon, observer and unixctl tests.
 */
import * as path from 'node:path';
import { Testpmd } from './dpdk.js';
import type { Daemon } from './daemon.js';
import { waitFor } from './wait.js';

export const M1 = '02:00:00:00:00:01';
export const M2 = '02:00:00:00:00:02';

export interface MacswapPairOptions {
  /** How long to wait for the daemon to show both links up (default 30000 ms). */
  linkTimeout?: number;
  /** Throw if the links are not up in time (default true); false: return anyway, callers check what they need. */
  requireLinks?: boolean;
}

export async function macswapPair(t: { after(fn: () => void): void }, d: Daemon, opts: MacswapPairOptions = {}): Promise<Testpmd> {
  const tp = Testpmd.start({
    vdev: [`net_virtio_user0,path=${path.join(d.runDir, 'vm1')},queues=1,mac=${M1}`, `net_virtio_user1,path=${path.join(d.runDir, 'vm2')},queues=1,mac=${M2}`],
    fwdMode: 'macswap',
    lcores: '0@1,1@0',
    extraArgs: [`--eth-peer=0,${M2}`, `--eth-peer=1,${M1}`, '--port-topology=loop'],
  });
  t.after(() => tp.kill());
  await tp.waitFor(/testpmd> /, 30000);
  const links = waitFor(async () => ((await d.cli('show')).stdout.match(/link=up/g) ?? []).length >= 2, {
    what: 'vm1 and vm2 links up',
    timeout: opts.linkTimeout ?? 30000,
    describe: async () => (await d.cli('show')).stdout,
  });
  if (opts.requireLinks === false) await links.catch(() => undefined);
  else await links;
  return tp;
}
