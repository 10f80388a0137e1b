/**
 * Real Open vSwitch (Debian openvswitch-switch) as a side-by-side peer, with
 * no network at all: a private ovsdb-server and `ovs-vswitchd --enable-dummy
 * --disable-system` in a temporary directory, bridges with
 * datapath_type=dummy and ports of type dummy. Its OpenFlow management
 * socket is DIR/BRIDGE.mgmt, as ours is RUNDIR/BRIDGE.mgmt, so the same
 * `ovs-ofctl -O OpenFlow13 ... unix:SOCK` commands drive both.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface DummyOvs {
  dir: string;
  vsctl(...args: string[]): string;
  appctl(...args: string[]): string;
  mgmt(bridge: string): string;
  stop(): void;
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20000 });
  } catch (e) {
    const err = e as { code?: string; stderr?: string; status?: number };
    if (err.code === 'ENOENT') throw new Error(`${cmd} is not installed (apt-get install openvswitch-switch): this test needs the real peer`);
    throw new Error(`${cmd} ${args.join(' ')} failed (${err.status}): ${String(err.stderr ?? '').trim()}`);
  }
}

function pidOf(file: string): number | undefined {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
}

/** Start ovsdb-server + ovs-vswitchd (dummy datapath) in a fresh temporary directory. */
export function startDummyOvs(): DummyOvs {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-ovs-'));
  const env = { OVS_RUNDIR: dir, OVS_LOGDIR: dir, OVS_DBDIR: dir };
  const db = path.join(dir, 'conf.db');
  const dbSock = `unix:${path.join(dir, 'db.sock')}`;
  const stop = (): void => {
    for (const f of ['vs.pid', 'db.pid']) {
      const pid = pidOf(path.join(dir, f));
      if (pid) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* gone */
        }
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    run('ovsdb-tool', ['create', db, '/usr/share/openvswitch/vswitch.ovsschema']);
    run('ovsdb-server', [db, `--remote=p${dbSock}`, `--pidfile=${path.join(dir, 'db.pid')}`, '--detach', `--log-file=${path.join(dir, 'db.log')}`], env);
    run('ovs-vsctl', [`--db=${dbSock}`, '--no-wait', 'init'], env);
    run('ovs-vswitchd', [dbSock, '--disable-system', '--enable-dummy', `--pidfile=${path.join(dir, 'vs.pid')}`,
      `--unixctl=${path.join(dir, 'vs.ctl')}`, `--log-file=${path.join(dir, 'vs.log')}`, '--detach'], env);
  } catch (e) {
    stop();
    throw e;
  }
  return {
    dir,
    vsctl: (...args) => run('ovs-vsctl', [`--db=${dbSock}`, '--timeout=20', ...args], env),
    appctl: (...args) => run('ovs-appctl', ['-t', path.join(dir, 'vs.ctl'), ...args], env),
    mgmt: (bridge) => `unix:${path.join(dir, `${bridge}.mgmt`)}`,
    stop,
  };
}

/** `ovs-ofctl -O OpenFlow13 ARGS` (throws with stderr on failure). */
export function ofctl(...args: string[]): string {
  return run('ovs-ofctl', ['-O', 'OpenFlow13', ...args]);
}
