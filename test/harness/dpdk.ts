/**
 * Run dpdk-testpmd as a real vhost-user / virtio-user peer in tests.
 *
 *   const tp = Testpmd.start({ vdev: 'net_virtio_user0,path=/x.sock,queues=1', fwdMode: 'txonly' });
 *   await tp.waitFor(/testpmd> /);           // interactive prompt (default interactive)
 *   tp.command('start');  ...  const st = await tp.stopForwarding();
 *   await tp.quit();                          // or tp.kill() (SIGKILL by PID)
 *
 * Fails (throws) when dpdk-testpmd is not installed: tests must not skip.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';

export const TESTPMD = process.env.TSVS_TESTPMD ?? 'dpdk-testpmd';

/** Throws if dpdk-testpmd cannot be found. */
export function requireTestpmd(): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${TESTPMD}`], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`${TESTPMD} is not installed (apt-get install dpdk): the DPDK interop tests need it`);
  }
}

export interface TestpmdOptions {
  /** One --vdev argument (without the flag), or several. */
  vdev: string | string[];
  fwdMode?: 'txonly' | 'rxonly' | 'io' | 'macswap' | 'mac';
  /** EAL --file-prefix (default unique per start). */
  prefix?: string;
  /** Frame size for txonly (default 64); several numbers = segment sizes of one frame. */
  txpkts?: number | number[];
  /** --lcores (default '0@1,1@0': main on CPU 1, forwarding on CPU 0). */
  lcores?: string;
  /** Interactive (-i, commands on stdin; default true). Otherwise --auto-start. */
  interactive?: boolean;
  /** rxq/txq per port (default 1). */
  queues?: number;
  extraArgs?: string[];
  /** Extra EAL args. */
  extraEal?: string[];
}

export interface FwdStats {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  txDropped: number;
}

/** `show port stats` counters (NaN when testpmd did not print one). */
export interface NicStats {
  rxPackets: number;
  rxBytes: number;
  rxMissed: number;
  rxErrors: number;
  txPackets: number;
  txBytes: number;
}

let seq = 0;

export class Testpmd {
  readonly proc: ChildProcess;
  readonly pid: number;
  /**
   * stdout and stderr interleaved as they arrived, for failure messages only: a
   * stderr line can land inside a stdout prompt here (`test` + error + `pmd> `).
   */
  output = '';
  /** testpmd's stdout alone: its prompt, command answers and EAL log. Everything is matched here. */
  stdout = '';
  /** testpmd's stderr alone (its error lines, e.g. "Error during enabling promiscuous mode ... - ignore"). */
  stderr = '';
  exited = false;
  exitCode: number | null = null;
  private readonly waiters: (() => void)[] = [];
  private readonly exitPromise: Promise<void>;

  private constructor(proc: ChildProcess) {
    this.proc = proc;
    this.pid = proc.pid as number;
    const onData = (stream: 'stdout' | 'stderr', d: Buffer): void => {
      const text = d.toString();
      this.output += text;
      this[stream] += text;
      for (const w of this.waiters.splice(0)) w();
    };
    proc.stdout?.on('data', (d: Buffer) => onData('stdout', d));
    proc.stderr?.on('data', (d: Buffer) => onData('stderr', d));
    this.exitPromise = new Promise((resolve) => {
      proc.on('exit', (code) => {
        this.exited = true;
        this.exitCode = code;
        for (const w of this.waiters.splice(0)) w();
        resolve();
      });
    });
  }

  static start(o: TestpmdOptions): Testpmd {
    requireTestpmd();
    const vdevs = Array.isArray(o.vdev) ? o.vdev : [o.vdev];
    const prefix = o.prefix ?? `tsvs${process.pid}x${seq++}`;
    const q = o.queues ?? 1;
    const txpkts = o.txpkts ?? 64;
    const args = [
      '--no-huge',
      '-m',
      '1024',
      '--no-pci',
      `--file-prefix=${prefix}`,
      '--lcores',
      o.lcores ?? '0@1,1@0',
      ...vdevs.flatMap((v) => ['--vdev', v]),
      ...(o.extraEal ?? []),
      '--',
      `--forward-mode=${o.fwdMode ?? 'io'}`,
      '--nb-cores=1',
      `--txpkts=${Array.isArray(txpkts) ? txpkts.join(',') : txpkts}`,
      '--no-mlockall',
      `--rxq=${q}`,
      `--txq=${q}`,
      ...(o.interactive === false ? ['--auto-start', '--stats-period', '1'] : ['-i']),
      // testpmd's default pool (155456 mbufs, 338 MB to touch) took over 20 s to set up under CPU load;
      // tests never need that many
      ...((o.extraArgs ?? []).some((a) => a.startsWith('--total-num-mbufs')) ? [] : ['--total-num-mbufs=16384']),
      ...(o.extraArgs ?? []),
    ];
    // testpmd prints with stdio: unbuffer it so interactive output arrives when printed.
    const proc = spawn('stdbuf', ['-o0', '-e0', TESTPMD, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    return new Testpmd(proc);
  }

  /**
   * Resolve when testpmd's stdout (from offset `from` of stdout) matches re;
   * reject on exit or timeout. stderr is never matched, so its lines cannot
   * break a prompt or an answer apart.
   */
  async waitFor(re: RegExp, timeoutMs = 20000, from = 0): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = this.stdout.slice(from).match(re);
      if (m) return m;
      if (this.exited) throw new Error(`testpmd exited (${this.exitCode}) before ${re}:\n${this.tail()}`);
      const left = timeoutMs - (Date.now() - t0);
      if (left <= 0) throw new Error(`timeout waiting for ${re} from testpmd:\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Send an interactive command; returns the stdout offset before it (for waitFor). */
  command(cmd: string): number {
    const at = this.stdout.length;
    this.proc.stdin?.write(cmd + '\n');
    return at;
  }

  /** Interactive: run a command and wait for the next prompt; returns its output. */
  async run(cmd: string, until: RegExp = /testpmd> $/m, timeoutMs = 20000): Promise<string> {
    const at = this.command(cmd);
    await this.waitFor(until, timeoutMs, at);
    return this.stdout.slice(at);
  }

  /** Interactive: `stop` forwarding and parse the accumulated stats it prints. */
  async stopForwarding(): Promise<FwdStats> {
    const out = await this.run('stop', /Accumulated forward statistics[\s\S]*?\+{20,}\s*\n[\s\S]*?Done\./);
    return parseFwdStats(out);
  }

  /** Interactive: port stats of port p (`show port stats p`). */
  async portStats(p = 0): Promise<NicStats> {
    const out = await this.run(`show port stats ${p}`, /Tx-bps:.*\n[\s\S]*?#{20,}/);
    return {
      rxPackets: num(out, /RX-packets:\s+(\d+)/),
      rxBytes: num(out, /RX-bytes:\s+(\d+)/),
      rxMissed: num(out, /RX-missed:\s+(\d+)/),
      rxErrors: num(out, /RX-errors:\s+(\d+)/),
      txPackets: num(out, /TX-packets:\s+(\d+)/),
      txBytes: num(out, /TX-bytes:\s+(\d+)/),
    };
  }

  /** Interactive: link status of port p as testpmd sees it (`show port info p`). */
  async linkUp(p = 0): Promise<boolean> {
    const out = await this.run(`show port info ${p}`);
    return /Link status:\s+up/.test(out);
  }

  /** Quit (interactive) or SIGINT, then SIGKILL after a grace period. Resolves on exit. */
  async quit(graceMs = 10000): Promise<void> {
    if (this.exited) return;
    try {
      this.proc.stdin?.write('quit\n');
    } catch {
      /* stdin closed */
    }
    const t = setTimeout(() => this.signal('SIGINT'), graceMs / 2);
    const k = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(t);
    clearTimeout(k);
  }

  /** SIGKILL by PID; resolves on exit. */
  async kill(): Promise<void> {
    if (this.exited) return;
    this.signal('SIGKILL');
    await this.exitPromise;
  }

  /** Wait for exit. */
  wait(): Promise<void> {
    return this.exitPromise;
  }

  private signal(sig: NodeJS.Signals): void {
    if (this.exited) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      /* gone */
    }
  }

  tail(n = 3000): string {
    return this.output.slice(-n);
  }
}

function num(s: string, re: RegExp): number {
  const m = s.match(re);
  return m ? Number(m[1]) : NaN;
}

/** Parse the "Accumulated forward statistics for all ports" block (or the last per-port block). */
export function parseFwdStats(out: string): FwdStats {
  const i = out.lastIndexOf('Accumulated forward statistics');
  const blk = i >= 0 ? out.slice(i) : out.slice(out.lastIndexOf('Forward statistics'));
  const rx = blk.match(/RX-packets:\s+(\d+)\s+RX-dropped:\s+(\d+)/);
  const tx = blk.match(/TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)/);
  if (!rx || !tx) throw new Error(`no forward statistics in testpmd output:\n${out.slice(-2000)}`);
  return { rxPackets: Number(rx[1]), rxDropped: Number(rx[2]), txPackets: Number(tx[1]), txDropped: Number(tx[2]) };
}
