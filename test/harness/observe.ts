/** Helpers for the observer tests (metrics, top, dashboard, capture): a switch with DPDK testpmd traffic. */
import type { Daemon } from './daemon.js';
import { waitFor as waitUntil } from './wait.js';

/** Poll fn until it returns a value that is not undefined/false, or throw after ms (test/harness/wait.ts with the observer tests' argument order). */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 15000, every = 100): Promise<T> {
  return (await waitUntil(async () => {
    const v = await fn();
    return v === undefined || v === false ? undefined : { v };
  }, { what, timeout: ms, interval: every })).v;
}

/** A daemon log line's URL (e.g. "Prometheus metrics at http://..."). */
export function urlFromLog(d: Daemon, what: RegExp): Promise<string> {
  return waitFor(`${what} in the daemon log`, () => {
    const m = new RegExp(what.source + '(http://[^\\s"]+)').exec(d.log());
    return m ? m[1] : undefined;
  });
}

export { M1, M2, macswapPair } from './macswap-pair.js';
