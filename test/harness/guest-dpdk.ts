/**
 * DPDK's own virtio PMD (net_virtio) inside a QEMU/TCG guest: `dpdk-testpmd` of the guest image
 * variant `ensureGuestImage({ dpdk: true })` (the host's Debian binary and its `ldd` closure in the
 * initramfs), run over the serial console of an {@link AgentGuest}.
 *
 *   await bindToUio(g, "0000:00:02.0");                 // eth down, virtio_pci -> uio_pci_generic
 *   const tp = await GuestTestpmd.start(g, { addr: "0000:00:02.0", fwd: "txonly", queues: 2, prefix: "a" });
 *   ...traffic...
 *   const totals = await tp.stop();                     // SIGINT: testpmd prints its forward statistics
 *   await tp.kill();                                    // or SIGKILL (the PMD dies without closing anything)
 *
 * testpmd runs in the background of the guest's shell with stdin from /dev/null and `--stats-period 1`
 * (without a stats period a non-interactive testpmd waits for a key on stdin and would quit at once);
 * its output goes to /tmp/dpdk-<prefix>.out in the guest. EAL flags: {@link dpdkEalArgs} (both lcores
 * on the one vCPU, `--iova-mode=pa`, hugepages from /mnt/huge, the virtio and mempool_ring plugins).
 *
 * Also here: {@link HostTestpmd}, our own `tsvs testpmd` engine as the host-side peer on a switch port.
 */
import assert from "node:assert/strict";
import { dpdkEalArgs } from "./guest-image.js";
import type { AgentGuest } from "./vm-switch.js";
import type { CleanupRegistrar } from "./qemu.js";
import { waitFor } from "./wait.js";
import { Testpmd, type FwdMode, type PortReport } from "../../src/app/testpmd.js";

export type GuestFwd = "txonly" | "rxonly" | "io" | "macswap";

export interface GuestTestpmdOptions {
  /** PCI address of the NIC, bound to uio_pci_generic. */
  addr: string;
  fwd: GuestFwd;
  /** rx and tx queues (`--rxq N --txq N`); default 1. */
  queues?: number;
  /** EAL `--file-prefix`; also names the output file. Restart a killed PMD with the same prefix. */
  prefix: string;
  /** EAL `-m` (MiB of hugepages); default 200. */
  memMiB?: number;
  /** `--total-num-mbufs`; default 8192. */
  mbufs?: number;
  /** txonly frame size; default 64. */
  txpkts?: number;
}

/** testpmd's forward statistics for port 0 after SIGINT, and its per-stream lines (printed when streams > ports). */
export interface GuestFwdTotals {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  /** Frames the forwarding engine offered but the PMD did not take (ring full); not sent. */
  txDropped: number;
  streams: { rxQueue: number; txQueue: number; rx: number; tx: number; txDropped: number }[];
  output: string;
}

/** The guest shell line that starts testpmd in the background (pure). */
export function guestTestpmdCommand(o: GuestTestpmdOptions): string {
  const q = o.queues ?? 1;
  const eal = dpdkEalArgs([o.addr], { filePrefix: o.prefix, memMiB: o.memMiB ?? 200 });
  const app = [
    `--forward-mode=${o.fwd}`, "--auto-start", "--stats-period", "1", "--nb-cores=1",
    `--rxq=${q}`, `--txq=${q}`, `--total-num-mbufs=${o.mbufs ?? 8192}`, `--txpkts=${o.txpkts ?? 64}`,
  ];
  const f = outFile(o.prefix);
  return `(dpdk-testpmd ${eal.join(" ")} -- ${app.join(" ")} </dev/null >${f} 2>&1 & echo $! >${f}.pid)`;
}

const outFile = (prefix: string): string => `/tmp/dpdk-${prefix}.out`;

/** Parses testpmd's exit statistics (the "Forward statistics for port 0" block and the stream lines). */
export function parseGuestTotals(out: string): GuestFwdTotals {
  const at = out.lastIndexOf("Forward statistics for port 0");
  if (at < 0) throw new Error(`no forward statistics in testpmd's output:\n${out.slice(-3000)}`);
  const blk = out.slice(at);
  const rx = /RX-packets:\s+(\d+)\s+RX-dropped:\s+(\d+)/.exec(blk);
  const tx = /TX-packets:\s+(\d+)\s+TX-dropped:\s+(\d+)/.exec(blk);
  if (!rx || !tx) throw new Error(`bad forward statistics block:\n${blk.slice(0, 2000)}`);
  const streams: GuestFwdTotals["streams"] = [];
  const re = /Forward Stats for RX Port=\s*\d+\/Queue=\s*(\d+) -> TX Port=\s*\d+\/Queue=\s*(\d+)[^\n]*\n\s*RX-packets:\s*(\d+)\s+TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)/g;
  for (const m of out.slice(0, at).matchAll(re)) {
    streams.push({ rxQueue: Number(m[1]), txQueue: Number(m[2]), rx: Number(m[3]), tx: Number(m[4]), txDropped: Number(m[5]) });
  }
  return { rxPackets: Number(rx[1]), rxDropped: Number(rx[2]), txPackets: Number(tx[1]), txDropped: Number(tx[2]), streams, output: out };
}

/** Takes the NIC from the guest kernel (interface down, unbind from virtio_pci) and gives it to uio_pci_generic. */
export async function bindToUio(g: AgentGuest, addr: string): Promise<void> {
  const r = await g.run(`ip link set $(ls /sys/bus/pci/devices/${addr}/virtio*/net) down && tsvs_pci_bind ${addr} uio_pci_generic && ls /dev/uio*`, 30_000);
  assert.equal(r.rc, 0, `binding ${addr} to uio_pci_generic:\n${r.output}`);
}

export class GuestTestpmd {
  private constructor(readonly g: AgentGuest, readonly opts: GuestTestpmdOptions, readonly pid: number) {}

  /** Starts testpmd and waits until it forwards ("txonly packet forwarding - ports=1 ..."), or fails with its output. */
  static async start(g: AgentGuest, opts: GuestTestpmdOptions, timeoutMs = 90_000): Promise<GuestTestpmd> {
    const f = outFile(opts.prefix);
    const r = await g.run(`${guestTestpmdCommand(opts)}; cat ${f}.pid`);
    const pid = Number(/^(\d+)\s*$/m.exec(r.output)?.[1]);
    assert.ok(pid > 0, `testpmd did not start in the guest:\n${r.output}`);
    const tp = new GuestTestpmd(g, opts, pid);
    const state = await waitFor(async () => {
      const s = await g.run(`grep -c 'packet forwarding - ports=' ${f}; kill -0 ${pid} 2>/dev/null && echo ALIVE`);
      if (/^1$/m.test(s.output)) return "forwarding";
      return /ALIVE/.test(s.output) ? false : "exited";
    }, { what: `guest testpmd ${opts.fwd} on ${opts.addr} forwarding`, timeout: timeoutMs, interval: 500, describe: () => tp.output() });
    if (state === "exited") throw new Error(`testpmd (${opts.fwd} on ${opts.addr}) exited in the guest:\n${await tp.output()}`);
    return tp;
  }

  /** testpmd's output so far without the periodic statistics (they cross the serial console otherwise). */
  async output(): Promise<string> {
    return (await this.g.run(`grep -v -e '^ *\\(RX\\|TX\\|Rx\\|Tx\\)-' -e '#####' -e 'Port statistics' -e 'Throughput' -e '^.\\[2J' -e '^ *$' ${outFile(this.opts.prefix)} | tail -n 60`)).output;
  }

  /** What testpmd printed on its way out (from "Telling cores to stop"). */
  async exitOutput(): Promise<string> {
    return (await this.g.run(`sed -n '/Telling cores to stop/,$p' ${outFile(this.opts.prefix)}`)).output;
  }

  /** Whether the process is still there. */
  async alive(): Promise<boolean> {
    return /ALIVE/.test((await this.g.run(`kill -0 ${this.pid} 2>/dev/null && echo ALIVE`)).output);
  }

  /** SIGINT, wait for the process to end (in the guest), parse its totals. */
  async stop(timeoutS = 60): Promise<GuestFwdTotals> {
    const r = await this.g.run(
      `kill -INT ${this.pid}; n=0; while kill -0 ${this.pid} 2>/dev/null && [ $n -lt ${timeoutS * 10} ]; do usleep 100000; n=$((n+1)); done; kill -0 ${this.pid} 2>/dev/null && echo STILL-RUNNING`,
      timeoutS * 1000 + 30_000,
    );
    assert.ok(!/STILL-RUNNING/.test(r.output), `testpmd did not exit after SIGINT:\n${await this.output()}`);
    const out = await this.exitOutput();
    if (!out.includes("Forward statistics for port 0")) throw new Error(`testpmd printed no totals on SIGINT:\n${await this.output()}`);
    return parseGuestTotals(out);
  }

  /** SIGKILL: the PMD dies without stopping or resetting the device. Returns once it is gone. */
  async kill(): Promise<void> {
    const r = await this.g.run(`kill -9 ${this.pid}; n=0; while kill -0 ${this.pid} 2>/dev/null && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done; kill -0 ${this.pid} 2>/dev/null && echo STILL-RUNNING`, 60_000);
    assert.ok(!/STILL-RUNNING/.test(r.output), "testpmd survived SIGKILL");
  }
}

/** Our `tsvs testpmd` engine as a host-side peer; stopped by the cleanup hook if the test did not stop it. */
export class HostTestpmd {
  private stopped: Promise<PortReport[]> | null = null;
  private constructor(private readonly tp: Testpmd) {}

  /** Starts on switch ports (virtio-user) and resolves once every link is up. */
  static async start(cleanup: CleanupRegistrar, socks: string[], fwd: FwdMode): Promise<HostTestpmd> {
    const h = new HostTestpmd(new Testpmd({
      ports: socks.map((path, i) => ({ name: `host${i}`, type: "virtio-user" as const, path })),
      fwd, txpkts: 64, burst: 32, flows: 1, poolSize: 4096 * socks.length,
    }));
    // registered first: a worker left running would keep the test process (and the CPU lock) alive
    cleanup.after(() => h.stop());
    await h.tp.ready;
    await waitFor(async () => (await h.tp.stats()).every((p) => p.link === "up"), { what: `host testpmd (${fwd}) links up on ${socks.join(", ")}`, timeout: 15_000, interval: 100 });
    return h;
  }

  stats(): Promise<PortReport[]> {
    return this.tp.stats();
  }

  /** Stops the engine (once) and returns its final counters. */
  stop(): Promise<PortReport[]> {
    this.stopped ??= this.tp.stop();
    return this.stopped;
  }
}

/**
 * Waits until `get()` returns the same value `polls` times in a row, `intervalMs` apart: frames in
 * flight have all arrived (counters no longer move). Returns the settled value.
 */
export async function waitSettled<T>(get: () => Promise<T>, what: string, opts: { polls?: number; intervalMs?: number; timeoutMs?: number } = {}): Promise<T> {
  const polls = opts.polls ?? 3;
  let last = "";
  let same = 0;
  let value: T | undefined;
  await waitFor(async () => {
    value = await get();
    const k = JSON.stringify(value, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
    same = k === last ? same + 1 : 0;
    last = k;
    return same >= polls - 1;
  }, { what: `${what} settled`, timeout: opts.timeoutMs ?? 30_000, interval: opts.intervalMs ?? 400, describe: () => last });
  return value as T;
}
