/** Helpers for the observer tests (metrics, top, dashboard, capture): a switch with DPDK testpmd traffic. */
import type { Daemon } from './daemon.js';

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

export { M1, M2, macswapPair } from './macswap-pair.js';
