/**
 * The daemon main thread's V8 heap limits, applied by running `tsvs daemon` again with node options (src/cli/main.ts
 * calls this before it loads the daemon's modules, so the second start costs little).
 */
import { execve } from '../sys/libc.js';

/**
 * Semi-space of the daemon's V8 young generations, MiB (`node --max-semi-space-size`; a young generation
 * commits two of them). V8's default lets the main thread's grow from 1 to 32 MiB under a burst of control
 * work (a fuzzing frontend, pipelined requests) and keeps that committed for the life of the process. The
 * option holds for every isolate of the process and overrides the PMD workers' own `maxYoungGenerationSizeMb`
 * (src/dp/pmd-thread.ts): 1 MiB keeps them at the 2 MiB they had and caps the main thread at the same.
 */
export const DAEMON_SEMI_SPACE_MIB = 1;

/**
 * V8 sizes the young generation when the process starts (v8.setFlagsFromString afterwards changes nothing),
 * so `tsvs daemon` started without the node option runs itself again with it: execve, the same PID, stdio
 * and arguments. A --max-semi-space-size given to node (command line or NODE_OPTIONS) is left as it is.
 * Only when this process was started as `tsvs daemon` (not in a program that calls the CLI's main() in-process).
 */
export function reexecWithHeapLimits(): void {
  const flag = '--max-semi-space-size';
  if (process.platform !== 'linux' || process.argv[2] !== 'daemon' || process.argv[1] === undefined) return;
  if (process.execArgv.some((a) => a.startsWith(flag)) || (process.env.NODE_OPTIONS ?? '').includes(flag)) return;
  try {
    execve(process.execPath, [process.execPath, ...process.execArgv, `${flag}=${DAEMON_SEMI_SPACE_MIB}`, ...process.argv.slice(1)], process.env);
  } catch (e) {
    process.stderr.write(`tsvs daemon: running with V8's default young generation (${(e as Error).message})\n`);
  }
}
