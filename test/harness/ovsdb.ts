/**
 * A private ovsdb-server (Debian openvswitch-switch) for tests, in a temp
 * directory, run in the foreground as our child and stopped by PID; plus
 * ovs-vsctl / ovs-appctl runners. Fails loudly when OVS is not installed.
 *
 *   const db = await OvsdbServer.start();   // db.remote = unix:DIR/db.sock
 *   await db.vsctl(['add-br', 'br0']);       // a waiting ovs-vsctl --timeout=15
 *   await db.restart();                      // kill by PID, start again on the same database
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { waitFor } from './wait.js';

export const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export function requireOvsTools(): void {
  for (const t of ['ovsdb-server', 'ovsdb-tool', 'ovs-vsctl', 'ovs-appctl']) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${t} is not installed (apt-get install openvswitch-switch openvswitch-common): the OVSDB interop tests need it`);
    }
  }
  if (!fs.existsSync(OVS_SCHEMA)) throw new Error(`${OVS_SCHEMA} is missing (openvswitch-common)`);
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(argv: string[], env: Record<string, string> = {}, timeoutMs = 30000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
  });
}


export class OvsdbServer {
  readonly dir: string;
  private proc: ChildProcess | null = null;
  private log = '';

  private constructor(dir: string) {
    this.dir = dir;
  }

  get remote(): string {
    return `unix:${this.dir}/db.sock`;
  }

  get env(): Record<string, string> {
    return { OVS_RUNDIR: this.dir, OVS_DBDIR: this.dir, OVS_LOGDIR: this.dir };
  }

  static async start(): Promise<OvsdbServer> {
    requireOvsTools();
    const s = new OvsdbServer(fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-ovsdb-')));
    execFileSync('ovsdb-tool', ['create', `${s.dir}/conf.db`, OVS_SCHEMA]);
    await s.launch();
    const r = await s.vsctl(['--no-wait', 'init']);
    if (r.code !== 0) throw new Error(`ovs-vsctl init: ${r.stderr}`);
    return s;
  }

  private async launch(): Promise<void> {
    const d = this.dir;
    try {
      fs.unlinkSync(`${d}/db.sock`);
    } catch {
      /* none */
    }
    const p = spawn('ovsdb-server', [`${d}/conf.db`, `--remote=punix:${d}/db.sock`, `--unixctl=${d}/db.ctl`, `--log-file=${d}/db.log`], {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    p.stderr!.on('data', (x) => (this.log += x));
    this.proc = p;
    const r = await waitFor(() => (p.exitCode !== null ? 'exited' : fs.existsSync(`${d}/db.sock`)), {
      what: 'ovsdb-server to create its socket',
      timeout: 15000,
      describe: () => this.log,
    });
    if (r === 'exited') throw new Error(`ovsdb-server exited (${p.exitCode}): ${this.log}`);
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** ovs-vsctl against this server; waits for the switch (cur_cfg) unless args start with --no-wait. */
  vsctl(args: string[], timeoutS = 15): Promise<Run> {
    return run(['ovs-vsctl', `--db=${this.remote}`, `--timeout=${timeoutS}`, ...args], this.env, (timeoutS + 5) * 1000);
  }

  async stopServer(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }

  /** Stop the server (by PID) and start it again on the same database file. */
  async restart(): Promise<void> {
    await this.stopServer();
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.stopServer();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** ovs-appctl -t TARGET CMD ARGS... (rc 0 ok, 2 = server error). */
export function appctl(target: string, ...args: string[]): Promise<Run> {
  return run(['ovs-appctl', '-t', target, ...args]);
}

/** `ovs-vsctl list Interface` parsed: one record per row, column -> raw text. */
export function parseList(text: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  let cur: Record<string, string> | null = null;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\s*:\s?(.*)$/.exec(line);
    if (!m) {
      cur = null;
      continue;
    }
    if (!cur) out.push((cur = {}));
    cur[m[1]] = m[2];
  }
  return out;
}

/** Parse an OVSDB map as ovs-vsctl prints it: {a=1, b="x y"}. */
export function parseMap(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  const body = s.trim().replace(/^\{|\}$/g, '');
  const re = /([A-Za-z0-9_-]+)=("(?:[^"\\]|\\.)*"|[^,]*)(?:,\s*|$)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(body)) !== null) {
    if (m[0] === '') break;
    out[m[1]] = m[2].startsWith('"') ? (JSON.parse(m[2]) as string) : m[2];
  }
  return out;
}
