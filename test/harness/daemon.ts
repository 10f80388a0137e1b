/** Start a tsvs daemon (optionally inside a network namespace) and drive it through the real CLI. */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';
import { daemonRuntimeSettings } from '../../src/daemon/heap-limits.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const CLI = path.resolve(here, '../../src/cli/main.js');

export interface Daemon {
  runDir: string;
  proc: ChildProcess;
  log(): string;
  cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

/** Run directories this harness created (removed at exit). */
const madeDirs = new Set<string>();

/**
 * `nodeArgs`: node options for the daemon; by default the node options and environment (young-generation limit,
 * V8 thread pool, malloc arenas) the daemon would otherwise run itself again to get (src/daemon/heap-limits.ts:
 * 0.2 s per start saved); [] to go through that.
 */
export async function startDaemon(opts: { netns?: string; args?: string[]; runDir?: string; nodeArgs?: string[] } = {}): Promise<Daemon> {
  let runDir = opts.runDir;
  if (runDir === undefined) {
    const made = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-d-'));
    // a test may restart a daemon on the same run dir after stop(): remove it when the test process ends
    if (madeDirs.size === 0) process.once('exit', () => madeDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
    madeDirs.add(made);
    runDir = made;
  }
  const prefix = opts.netns ? ['ip', 'netns', 'exec', opts.netns] : [];
  const rt = daemonRuntimeSettings();
  const nodeArgs = opts.nodeArgs ?? rt.nodeArgs;
  const env = opts.nodeArgs === undefined ? { ...process.env, ...rt.env } : process.env;
  const argv = [...prefix, process.execPath, ...nodeArgs, CLI, 'daemon', '--run-dir', runDir, '--pmd-sleep-max', '200', ...(opts.args ?? [])];
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
  let log = '';
  proc.stderr!.on('data', (d) => (log += d));
  const ctl = path.join(runDir, 'tsvs.ctl');
  // (a daemon killed with SIGKILL leaves its socket file behind: wait until one answers)
  const answers = (): Promise<boolean> =>
    new Promise((resolve) => {
      if (!fs.existsSync(ctl)) return resolve(false);
      const s = net.connect(ctl, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  const started = await waitFor(async () => (proc.exitCode !== null ? 'exited' : await answers()), {
    what: 'the daemon to answer on its control socket',
    timeout: 20000,
    interval: 50,
    describe: () => log,
  });
  if (started === 'exited') throw new Error(`daemon exited early (${proc.exitCode}): ${log}`);
  const d: Daemon = {
    runDir,
    proc,
    log: () => log,
    cli: (...args: string[]) =>
      new Promise((resolve) => {
        execFile(process.execPath, [CLI, ...args, '--run-dir', runDir], { timeout: 30000 }, (err, stdout, stderr) => {
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
        });
      }),
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
      await exited;
      clearTimeout(t);
    },
  };
  return d;
}
