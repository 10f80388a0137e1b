/**
 * The daemon's process-wide memory settings: node options and the malloc environment, applied by running
 * `tsvs daemon` again with them (src/cli/main.ts calls this before it loads the daemon's modules, so the
 * second start costs little). Measured effects: README, "Memory: what the switch's RSS is".
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
 * V8 platform worker threads (`node --v8-pool-size`; node's default is 4). They run background work of every
 * isolate of the process: concurrent marking and sweeping, compilation of hot functions. Each one that works
 * gets a malloc arena and keeps its compiler zones' freed memory there; the switch's threads are the main
 * thread (control) and the PMD threads (polling, no allocation in the loop), and two are enough for them.
 */
export const DAEMON_V8_POOL_SIZE = 2;

/**
 * `--no-short-builtin-calls`: V8 otherwise (on machines with 4 GiB or more) maps a second copy of its
 * embedded builtins next to each isolate's code, so that JIT code calls them with short jumps; each copy is
 * about 1 MiB of node's file pages in the RSS, one per thread (main and every PMD thread). Measured on the
 * switch's data path (bench/micro/switch.js, one thread, 3 runs each interleaved): no slowdown at 64 or 1518 B.
 */
export const DAEMON_V8_FLAGS = ['--no-short-builtin-calls'];

/**
 * glibc malloc arenas (`MALLOC_ARENA_MAX`; glibc's default is 8 per CPU). Every thread that mallocs while the
 * arenas it knows are busy gets its own arena, and the freed memory stays in it until malloc_trim. The
 * daemon's hot paths do not call malloc; the control thread and V8's background threads share two arenas.
 */
export const DAEMON_MALLOC_ARENA_MAX = 2;

/** The node options and environment variables `tsvs daemon` runs with (each unless given already). */
export function daemonRuntimeSettings(): { nodeArgs: string[]; env: Record<string, string> } {
  return {
    nodeArgs: [`--max-semi-space-size=${DAEMON_SEMI_SPACE_MIB}`, `--v8-pool-size=${DAEMON_V8_POOL_SIZE}`, ...DAEMON_V8_FLAGS],
    env: { MALLOC_ARENA_MAX: String(DAEMON_MALLOC_ARENA_MAX) },
  };
}

/** The settings this process was not started with (a node option given on the command line or in NODE_OPTIONS, or an environment variable set, is left as it is). */
export function missingRuntimeSettings(execArgv: readonly string[], env: NodeJS.ProcessEnv): { nodeArgs: string[]; env: Record<string, string> } {
  const want = daemonRuntimeSettings();
  // an option's name, whatever its value or its negation (--x=1, --no-x, --x_y as V8 also spells it)
  const name = (a: string): string => a.replace(/=.*$/, '').replace(/_/g, '-').replace(/^--no-/, '--');
  const given = (arg: string): boolean => {
    const n = name(arg);
    return [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith('--') && name(a) === n);
  };
  const missingEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(want.env)) if (env[k] === undefined) missingEnv[k] = v;
  return { nodeArgs: want.nodeArgs.filter((a) => !given(a)), env: missingEnv };
}

/**
 * V8 sizes the young generation and its thread pool, and glibc reads MALLOC_ARENA_MAX, when the process
 * starts (v8.setFlagsFromString afterwards changes nothing), so `tsvs daemon` started without them runs
 * itself again with them: execve, the same PID, stdio and arguments. Only when this process was started as
 * `tsvs daemon` (not in a program that calls the CLI's main() in-process).
 */
export function reexecWithHeapLimits(): void {
  if (process.platform !== 'linux' || process.argv[2] !== 'daemon' || process.argv[1] === undefined) return;
  const add = missingRuntimeSettings(process.execArgv, process.env);
  if (add.nodeArgs.length === 0 && Object.keys(add.env).length === 0) return;
  try {
    execve(process.execPath, [process.execPath, ...process.execArgv, ...add.nodeArgs, ...process.argv.slice(1)], { ...process.env, ...add.env });
  } catch (e) {
    process.stderr.write(`tsvs daemon: running with V8's default young generation (${(e as Error).message})\n`);
  }
}
