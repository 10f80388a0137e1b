/** Where the daemon keeps its sockets, database, pid and log. */
import * as path from 'node:path';
import * as os from 'node:os';
import * as fs from 'node:fs';

export function defaultRunDir(): string {
  if (process.env.TSVS_RUN_DIR) return process.env.TSVS_RUN_DIR;
  if (process.getuid?.() === 0) return '/run/tsvs';
  return path.join(process.env.XDG_RUNTIME_DIR ?? os.tmpdir(), 'tsvs');
}

export interface RunPaths {
  dir: string;
  control: string;
  db: string;
  pid: string;
}

export function runPaths(dir = defaultRunDir()): RunPaths {
  return { dir, control: path.join(dir, 'tsvs.ctl'), db: path.join(dir, 'conf.json'), pid: path.join(dir, 'tsvs.pid') };
}

export function ensureRunDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
}
