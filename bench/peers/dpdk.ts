/**
 * DPDK dpdk-testpmd as a benchmark peer (interactive, driven over stdin).
 *
 *   const tp = await DpdkTestpmd.start({ vdevs: ['net_virtio_user0,path=/s0'], lcores: '0@1,1@0', fwd: 'io' });
 *   await tp.startFwd({ txFirst: 8 }); const a = await tp.portStats(); ... await tp.stopFwd(); await tp.quit();
 *
 * EAL flags from docs/interop.md#dpdk-2211: --no-huge -m 1024 --no-pci --file-prefix=UNIQUE; the
 * main lcore on the other CPU than the forwarding lcore. --no-mlockall so that
 * mapping a frontend's memory does not fault all of it in.
 */
import * as fs from 'node:fs';
import { Proc, which } from '../proc.js';
import { parseTestpmdFwdStats, parseTestpmdPortStats, type TestpmdFwdStats, type TestpmdPortStats } from '../stats.js';

export const TESTPMD_BIN = process.env.TSVS_TESTPMD ?? 'dpdk-testpmd';

export type DpdkFwd = 'io' | 'txonly' | 'rxonly' | 'macswap' | 'mac';

export interface DpdkTestpmdOptions {
  vdevs: string[];
  /** EAL --lcores, e.g. '0@1,1@0' = main on CPU 1, forwarding on CPU 0. */
  lcores: string;
  fwd: DpdkFwd;
  txpkts?: number;
  /** Memory for --no-huge (MB, default 1024). */
  memMb?: number;
  prefix?: string;
  extra?: string[];
  /** How long to wait for the prompt (ms, default 30000). */
  startTimeoutMs?: number;
}

let seq = 0;
const PROMPT = /testpmd> $/;

export function dpdkAvailable(): string | null {
  return which(TESTPMD_BIN) ? null : `${TESTPMD_BIN} is not installed (apt-get install dpdk)`;
}

export class DpdkTestpmd {
  private constructor(
    readonly proc: Proc,
    readonly opts: DpdkTestpmdOptions,
    readonly prefix: string,
  ) {
    // EAL leaves its runtime files (about 12 MB with --no-huge) in /var/run/dpdk/PREFIX
    void proc.wait().then(() => removeEalRuntime(prefix));
  }

  get pid(): number {
    return this.proc.pid;
  }

  static argv(o: DpdkTestpmdOptions, prefix: string): string[] {
    return [
      'stdbuf', '-o0', '-e0', TESTPMD_BIN,
      '--no-huge', '-m', String(o.memMb ?? 1024), '--no-pci', `--file-prefix=${prefix}`, '--lcores', o.lcores,
      ...o.vdevs.flatMap((v) => ['--vdev', v]),
      '--log-level=pmd.net.virtio.*:error', '--log-level=pmd.net.vhost:error', '--log-level=lib.vhost.*:error',
      '--',
      '-i', `--forward-mode=${o.fwd}`, '--nb-cores=1', `--txpkts=${o.txpkts ?? 64}`, '--no-mlockall', '--rxq=1', '--txq=1',
      ...(o.extra ?? []),
    ];
  }

  /** Start and wait for the interactive prompt. */
  static async start(o: DpdkTestpmdOptions): Promise<DpdkTestpmd> {
    const why = dpdkAvailable();
    if (why) throw new Error(why);
    const prefix = o.prefix ?? `tsvsb${process.pid}x${seq++}`;
    const p = new Proc(DpdkTestpmd.argv(o, prefix), { stdin: true });
    const tp = new DpdkTestpmd(p, o, prefix);
    try {
      await p.waitFor(PROMPT, o.startTimeoutMs ?? 30000, undefined, 'stdout');
    } catch (e) {
      await tp.kill();
      throw e;
    }
    return tp;
  }

  /** Run one interactive command, return its output up to the next prompt. */
  async cmd(c: string, timeoutMs = 20000, until: RegExp = PROMPT): Promise<string> {
    // testpmd prints its prompt and answers on stdout; its stderr lines can land inside
    // a prompt in the interleaved output, so match stdout alone
    const at = this.proc.mark;
    this.proc.write(c + '\n');
    await this.proc.waitFor(until, timeoutMs, at, 'stdout');
    return this.proc.since(at, 'stdout');
  }

  async setFwd(mode: DpdkFwd): Promise<void> {
    await this.cmd(`set fwd ${mode}`);
  }

  async setTxpkts(n: number): Promise<void> {
    await this.cmd(`set txpkts ${n}`);
  }

  /** `start` (or `start tx_first N`: N bursts sent on every port first, to prime an io loop). */
  async startFwd(o: { txFirst?: number } = {}): Promise<void> {
    await this.cmd(o.txFirst ? `start tx_first ${o.txFirst}` : 'start');
  }

  /** `stop` and parse the forward statistics it prints (counters of this start..stop period). */
  async stopFwd(): Promise<TestpmdFwdStats> {
    const out = await this.cmd('stop', 20000, /(Accumulated forward statistics[\s\S]*?Done\.|Packet forwarding not started)/);
    if (/Packet forwarding not started/.test(out)) throw new Error('testpmd: forwarding was not started');
    return parseTestpmdFwdStats(out);
  }

  async portStats(): Promise<TestpmdPortStats[]> {
    const out = await this.cmd('show port stats all', 20000, /NIC statistics for port[\s\S]*#{20,}[^#]*testpmd> $/);
    return parseTestpmdPortStats(out);
  }

  async clearStats(): Promise<void> {
    await this.cmd('clear port stats all');
  }

  /** Ports whose link is up (`show port info all` / link status). */
  async linksUp(): Promise<boolean[]> {
    const out = await this.cmd('show port summary all');
    // Port MAC Address Name Driver Status Link
    return out
      .split('\n')
      .filter((l) => /^\d+\s/.test(l.trim()))
      .map((l) => /\bup\b/i.test(l));
  }

  /** Quit (then SIGINT, then SIGKILL by PID). */
  async quit(graceMs = 8000): Promise<void> {
    if (this.proc.exited) return;
    this.proc.write('quit\n');
    const t = setTimeout(() => this.proc.signal('SIGINT'), graceMs / 2);
    await this.proc.stop(null, graceMs);
    clearTimeout(t);
  }

  async kill(): Promise<void> {
    await this.proc.stop('SIGKILL', 1000);
  }
}

/** Remove an EAL runtime directory (/var/run/dpdk/PREFIX) left by a process that has exited. */
export function removeEalRuntime(prefix: string): void {
  if (!/^[A-Za-z0-9_-]+$/.test(prefix)) return;
  for (const base of ['/var/run/dpdk', '/run/dpdk']) {
    try {
      fs.rmSync(`${base}/${prefix}`, { recursive: true, force: true });
    } catch {
      /* not there */
    }
  }
}
