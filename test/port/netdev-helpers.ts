/**
 * Shared by the tap and afpacket tests: quiet namespaces (no IPv6 chatter),
 * the forwarder child process (netdev-fwd.js) driven over stdin/stdout, ping.
 */
import { spawn, execFile, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetNs } from '../harness/netns.js';
import type { CleanupRegistrar } from '../harness/qemu.js';
import type { PortStats } from '../../src/port/port.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** A namespace without IPv6 (so only the traffic a test makes crosses its links). */
export function quietNs(prefix: string, cleanup: CleanupRegistrar): NetNs {
  const ns = NetNs.create({ prefix, cleanup });
  ns.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  return ns;
}

export interface FwdPortInfo {
  name: string;
  type: string;
  ifname: string;
  nQueues: number;
  link: string;
  stats: PortStats;
}

/** The forwarder child: started with `ip netns exec NS node netdev-fwd.js SPEC`, ended by PID. */
export class Fwd {
  private lines: string[] = [];
  private waiters: Array<(l: string) => void> = [];
  private buf = '';
  stderr = '';
  readonly child: ChildProcessWithoutNullStreams;

  constructor(ns: NetNs | null, spec: unknown, cleanup: CleanupRegistrar) {
    const argv = [process.execPath, path.join(here, 'netdev-fwd.js'), JSON.stringify(spec)];
    const full = ns ? [...ns.execPrefix, ...argv] : argv;
    this.child = spawn(full[0], full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    cleanup.after(() => {
      if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) {
        try {
          process.kill(this.child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    });
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => (this.stderr += d));
    this.child.stdout.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const l = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(l);
        else this.lines.push(l);
      }
    });
  }

  /** Next stdout line (rejects on timeout or exit). */
  nextLine(ms = 10000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const onExit = (): void => {
        clearTimeout(t);
        reject(new Error(`forwarder exited (${this.child.exitCode ?? this.child.signalCode}); stderr: ${this.stderr}`));
      };
      const t = setTimeout(() => {
        this.child.off('exit', onExit);
        reject(new Error(`forwarder: no output in ${ms} ms; stderr: ${this.stderr}`));
      }, ms);
      this.child.once('exit', onExit);
      this.waiters.push((line) => {
        clearTimeout(t);
        this.child.off('exit', onExit);
        resolve(line);
      });
    });
  }

  /** Wait for 'ready'; returns its info, or throws with the child's 'error' line. */
  async ready(): Promise<Array<{ name: string; ifname: string; nQueues: number; fds: number[] }>> {
    const l = await this.nextLine(15000);
    if (l.startsWith('ready ')) return JSON.parse(l.slice(6));
    throw new Error(`forwarder failed: ${l} ${this.stderr}`);
  }

  async stats(): Promise<{ ports: FwdPortInfo[]; poolAvailable: number; poolCount: number }> {
    this.child.stdin.write('stats\n');
    return JSON.parse(await this.nextLine());
  }

  async close(): Promise<{ closed: boolean; fdsBefore: number; fdsAfter: number; poolAvailable: number }> {
    this.child.stdin.write('close\n');
    const r = JSON.parse(await this.nextLine());
    await new Promise<void>((res) => (this.child.exitCode !== null ? res() : this.child.once('exit', () => res())));
    return r;
  }
}

export interface PingResult {
  sent: number;
  received: number;
  out: string;
}

/** busybox ping -c count -i 0.05 from inside ns; resolves with counts (never rejects on loss). */
export function ping(ns: NetNs, addr: string, count: number, extra: string[] = []): Promise<PingResult> {
  return new Promise((resolve) => {
    execFile(
      'ip',
      ['netns', 'exec', ns.name, 'busybox', 'ping', '-q', '-c', String(count), '-i', '0.05', '-W', '2', ...extra, addr],
      { encoding: 'utf8', timeout: 20000 },
      (_err, stdout, stderr) => {
        const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(stdout);
        resolve({ sent: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0, out: stdout + stderr });
      },
    );
  });
}
