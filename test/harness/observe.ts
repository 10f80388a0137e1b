/** Helpers for the observer tests (metrics, top, dashboard, capture): a switch with DPDK testpmd traffic. */
import type { Daemon } from './daemon.js';
import { waitFor } from './wait.js';

/** A daemon log line's URL (e.g. "Prometheus metrics at http://..."). */
export function urlFromLog(d: Daemon, what: RegExp): Promise<string> {
  return waitFor(() => new RegExp(what.source + '(http://[^\\s"]+)').exec(d.log())?.[1], { what: `${what} in the daemon log`, timeout: 15000, interval: 100 });
}

export { M1, M2, macswapPair } from './macswap-pair.js';
