/**
 * The daemon main thread's V8 heap limits, applied by running `tsvs daemon` again with node options (src/cli/main.ts
 * calls this before it loads the daemon's modules, so the second start costs little).
 */
import { execve } from '../sys/libc.js';

/**
 * Semi-space of the daemon main thread's V8 young generation, MiB (`node --max-semi-space-size`; the young
 * generation commits two of them). V8's default lets it grow from 1 MiB to 32 MiB under a burst of control
 * work (a fuzzing frontend, flow setup) and keeps that committed for the life of the process; the switch's
 * main thread keeps little short-lived data, so 2 MiB semi-spaces (4 MiB young generation) are enough.
 */
export const DAEMON_SEMI_SPACE_MIB = 2;

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
