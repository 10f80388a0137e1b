/**
 * Waiting in tests: wait for the state a test needs, never for a fixed time.
 *
 *   await waitFor(() => rxCount() > 0, { what: 'first packet at the receiver' });
 *   const line = await waitFor(async () => (await d.cli('show')).stdout.match(/link=up/g)?.length === 2 || undefined, { what: 'links up' });
 *
 * The condition is polled (sync or async) until it returns a truthy value,
 * which waitFor returns; after `timeout` ms it throws an Error naming `what`
 * and, if given, the last value `describe()` reports (so a failure says what
 * was seen instead of "timed out"). An exception in the condition counts as
 * "not yet" (reported at the timeout); waitForOrTimeout instead treats the
 * timeout as an answer (undefined) and throws a condition's exception at once.
 */

export interface WaitOptions {
  /** Give up after this many ms (default 10000). */
  timeout?: number;
  /** What the condition stands for, for the error message. */
  what: string;
  /** Poll period, ms (default 20). */
  interval?: number;
  /** Extra state for the error message, read when the wait fails. */
  describe?: () => string | Promise<string>;
}

export class WaitTimeout extends Error {
  override readonly name = 'WaitTimeout';
}

export async function waitFor<T>(cond: () => T | Promise<T>, opts: WaitOptions): Promise<Exclude<T, false | null | undefined | 0 | ''>> {
  const timeout = opts.timeout ?? 10000;
  const interval = opts.interval ?? 20;
  const deadline = Date.now() + timeout;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as Exclude<T, false | null | undefined | 0 | ''>;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      let extra = '';
      if (opts.describe) {
        try {
          extra = `; last seen: ${await opts.describe()}`;
        } catch (e) {
          extra = `; describe() failed: ${(e as Error).message}`;
        }
      }
      if (lastError !== undefined) extra += `; last error: ${(lastError as Error).message ?? String(lastError)}`;
      throw new WaitTimeout(`timed out after ${timeout} ms waiting for ${opts.what}${extra}`);
    }
    await pause(interval);
  }
}

/**
 * As waitFor, but a timeout is an answer, not an error: resolves with the
 * condition's value, or undefined when `timeout` passed first (for pumps that
 * take what arrived within a budget, e.g. "receive until 10 frames or 3 s").
 */
export async function waitForOrTimeout<T>(cond: () => T | Promise<T>, opts: WaitOptions): Promise<Exclude<T, false | null | undefined | 0 | ''> | undefined> {
  // an exception in cond (a failed check on what arrived) ends the wait at once and is thrown
  let failed: { e: unknown } | null = null;
  const guarded = async (): Promise<T | true> => {
    try {
      return await cond();
    } catch (e) {
      failed = { e };
      return true;
    }
  };
  try {
    const v = await waitFor(guarded, opts);
    if (failed) throw (failed as { e: unknown }).e;
    return v as Exclude<T, false | null | undefined | 0 | ''>;
  } catch (e) {
    if (e instanceof WaitTimeout) return undefined;
    throw e;
  }
}

/** The poll pause of waitFor (the one allowed timer in test/harness; see test/no-sleep.test.ts). */
function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
