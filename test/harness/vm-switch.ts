/**
 * Shared pieces for the tests that put real QEMU/TCG guests (the Linux virtio-net driver) on a
 * tsvs switch (test/vm/switch-*.test.ts):
 *
 * - {@link startSwitch}: the real daemon (test/harness/daemon.ts) with a gentle PMD, a bridge,
 *   cleanup registered; {@link cli} runs a CLI command and fails loudly on a non-zero exit.
 * - {@link AgentGuest}: a guest whose script is a command loop on the serial console, so a test
 *   can drive it step by step (ping now, change rules, ping again) instead of writing one script
 *   up front. Commands are shell lines; predefined functions (g_ping, g_nc_*, g_bgping_*) report
 *   `TSVS-RESULT` lines. Each `run()` ends with a unique `TSVS-RC-<n>:<status>` marker; the echo
 *   of the typed line shows `$?` literally, so it never matches.
 * - {@link portInfo}/{@link waitPort}: port link state and status as `tsvs show --json` reports it.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { startDaemon, type Daemon } from "./daemon.js";
import { ensureGuestImage, guestScriptDir, type GuestImage } from "./guest-image.js";
import { startGuest, type CleanupRegistrar, type Guest, type GuestOptions, type GuestResult } from "./qemu.js";
import { waitFor } from "./wait.js";

/** PMD idle sleep for switches that share 2 CPUs with TCG guests. */
export const PMD_SLEEP_MAX_US = 200;

export async function startSwitch(t: CleanupRegistrar, opts: { runDir?: string; bridge?: string | null } = {}): Promise<Daemon> {
  const d = await startDaemon({ runDir: opts.runDir, args: ["--pmd-sleep-max", String(PMD_SLEEP_MAX_US)] });
  t.after(async () => {
    await d.stop();
    if (opts.runDir === undefined) fs.rmSync(d.runDir, { recursive: true, force: true });
  });
  const br = opts.bridge === undefined ? "br0" : opts.bridge;
  if (br !== null) await cli(d, "add-br", br);
  return d;
}

/** Runs a CLI command against the daemon; throws with stderr and the daemon log tail if it fails. */
export async function cli(d: Daemon, ...args: string[]): Promise<string> {
  const r = await d.cli(...args);
  if (r.code !== 0) {
    throw new Error(`tsvs ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}\n--- daemon log (tail) ---\n${logTail(d)}`);
  }
  return r.stdout;
}

/** show + port-stats + pmd-stats + log tail, for failure messages. */
export async function diag(d: Daemon): Promise<string> {
  const parts = await Promise.all([d.cli("show"), d.cli("port-stats"), d.cli("dump-flows", "br0")]);
  return `--- tsvs show ---\n${parts[0].stdout}--- port-stats ---\n${parts[1].stdout}--- dump-flows br0 ---\n${parts[2].stdout}` +
    `--- daemon log (tail) ---\n${logTail(d)}`;
}

export function logTail(d: Daemon, lines = 40): string {
  return d.log().split("\n").slice(-lines).join("\n");
}

export interface ShowPort {
  name: string;
  ofport: number;
  type: string;
  path?: string;
  link: string;
  status: string;
}

/** One port as `tsvs show --json` reports it. */
export async function portInfo(d: Daemon, name: string): Promise<ShowPort> {
  const data = JSON.parse(await cli(d, "show", "--json")) as { bridge: string; ports: ShowPort[] }[];
  for (const b of data) for (const p of b.ports) if (p.name === name) return p;
  throw new Error(`tsvs show has no port ${name}: ${JSON.stringify(data)}`);
}

/** Polls `tsvs show --json` until the port's link is `link`; returns that state. */
export async function waitPort(d: Daemon, name: string, link: "up" | "down", timeoutMs: number): Promise<ShowPort> {
  let last: ShowPort | undefined;
  return waitFor(async () => {
    last = await portInfo(d, name);
    return last.link === link && last;
  }, { what: `port ${name} ${link}`, timeout: timeoutMs, interval: 100, describe: () => `${JSON.stringify(last)}\n--- daemon log (tail) ---\n${logTail(d)}` });
}

export interface PortStatsRow {
  port: string;
  ofport: number;
  link: string;
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  rxDropped: number;
  txDropped: number;
  drops: Record<string, number>;
}

export async function portStats(d: Daemon): Promise<Map<string, PortStatsRow>> {
  const rows = JSON.parse(await cli(d, "port-stats", "--json")) as PortStatsRow[];
  return new Map(rows.map((r) => [r.port, r]));
}

/**
 * The guest side of the command loop (test/harness/guest/agent.sh). Functions (all report one TSVS-RESULT):
 *   g_ping PEER COUNT INTERVAL [NAME [CPUMASK]]  -> NAME(ping): peer sent received loss_pct rtt_avg_ms
 *                                      (CPUMASK: run ping under `taskset CPUMASK`)
 *   g_wait_ping PEER SECS              -> reachable: peer ok(0|1) tries
 *   g_nc_listen PORT                   starts a receiver (stdin kept off the console)
 *   g_nc_wait                          -> recv: bytes md5
 *   g_nc_send PEER PORT MIB            -> send: bytes md5 t0 t1
 *   g_bgping_start PEER INTERVAL       background ping; g_bgping_stop -> bgping: sent received
 *   g_bgping_replies                   -> bgreplies: n (replies the background ping has had so far)
 *   g_operstate DEV                    -> operstate: state (the kernel's operstate: up, down, ...)
 *   g_iface DEV                        -> iface2: ifname mac mtu queues(rx-N dirs) combined
 */
export function agentScript(): string {
  return fs.readFileSync(path.join(guestScriptDir(), "agent.sh"), "utf8");
}

export interface RunResult {
  rc: number;
  /** Console output of the command (without the echo of the typed line). */
  output: string;
  results: GuestResult[];
}

let agentSeq = 0;

/** A guest driven over its serial console. */
export class AgentGuest {
  private seq = 0;
  private constructor(readonly guest: Guest, readonly ip: string) {}

  /** Starts a guest (hold=1, long script timeout) and returns at once; call {@link ready}. */
  static async start(opts: Omit<GuestOptions, "script" | "interactive"> & { ip: string; image?: GuestImage }): Promise<AgentGuest> {
    const image = opts.image ?? (await ensureGuestImage());
    const params = { ip: opts.ip, mtu: 1500, timeout: 900, hold: 1, ...(opts.params ?? {}) };
    const g = await startGuest({ ...opts, image, params, script: agentScript(), interactive: true, name: opts.name ?? `agent${++agentSeq}` });
    return new AgentGuest(g, opts.ip.replace(/\/.*/, ""));
  }

  /**
   * Drive an already running guest's command loop through another QEMU process: the
   * destination of a live migration (its serial console continues the same loop).
   */
  static adopt(guest: Guest, ip: string, seq = 1000): AgentGuest {
    const a = new AgentGuest(guest, ip.replace(/\/.*/, ""));
    a.seq = seq; // markers distinct from the source's
    return a;
  }

  get pid(): number {
    return this.guest.pid;
  }

  /** Waits for the command loop (booted, NICs configured). */
  async ready(timeoutMs = 120_000): Promise<void> {
    await this.guest.waitFor(/TSVS-AGENT-READY/, timeoutMs);
  }

  /** The `iface` results /init printed per NIC. */
  ifaces(): GuestResult[] {
    return this.guest.resultsNamed("iface");
  }

  /** Types one shell line and waits for it to finish. */
  async run(cmd: string, timeoutMs = 60_000): Promise<RunResult> {
    if (cmd.includes("\n")) throw new Error("one line per command");
    const n = ++this.seq;
    const since = this.guest.output().length;
    this.guest.write(`${cmd}; echo "TSVS-RC-${n}:$?"\n`);
    const m = await this.guest.waitFor(new RegExp(`TSVS-RC-${n}:(\\d+)`), timeoutMs, since);
    // drop the console's echo of the typed line
    const echo = `TSVS-RC-${n}:$?`;
    const output = this.guest.output().slice(since, m.index).split("\n").filter((l) => !l.includes(echo)).join("\n");
    const results: GuestResult[] = [];
    for (const line of output.split("\n")) {
      const r = /TSVS-RESULT (\{.*\})\s*$/.exec(line);
      if (r) results.push(JSON.parse(r[1]!) as GuestResult);
    }
    return { rc: Number(m[1]), output, results };
  }

  /** Runs a command that reports exactly one result named `name` and returns it. */
  async result(cmd: string, name: string, timeoutMs = 60_000): Promise<GuestResult> {
    const r = await this.run(cmd, timeoutMs);
    const rs = r.results.filter((x) => x.name === name);
    assert.equal(rs.length, 1, `${this.guest.name}: "${cmd}" reported ${JSON.stringify(r.results)} (rc ${r.rc}); output:\n${r.output}`);
    return rs[0]!;
  }

  /** g_ping; returns the result. */
  ping(peer: string, count: number, interval = 0.05, name = "ping", cpuMask?: number): Promise<GuestResult> {
    return this.result(`g_ping ${peer} ${count} ${interval} ${name}${cpuMask !== undefined ? ` ${cpuMask}` : ""}`, name, 30_000 + count * (interval * 1000 + 2000));
  }

  /** Waits until `peer` answers (ARP included), up to `secs` one-second tries. */
  async waitPing(peer: string, secs = 30): Promise<GuestResult> {
    return this.result(`g_wait_ping ${peer} ${secs}`, "reachable", secs * 2000 + 20_000);
  }

  /** Replies the running background ping (g_bgping_start) has had so far. */
  async bgpingReplies(): Promise<number> {
    return Number((await this.result("g_bgping_replies", "bgreplies"))["n"]);
  }

  /** Waits until the background ping has had `n` replies (traffic flows through the switch). */
  async waitBgpingReplies(n: number, timeoutMs = 30_000): Promise<number> {
    let seen = 0;
    return waitFor(async () => (seen = await this.bgpingReplies()) >= n && seen, { what: `${this.guest.name}: ${n} background ping replies`, timeout: timeoutMs, interval: 100, describe: () => `${seen} replies` });
  }

  /** The kernel's operstate of a guest interface (QEMU sets the link down when its vhost-user backend goes away). */
  async operstate(dev = "eth0"): Promise<string> {
    return String((await this.result(`g_operstate ${dev}`, "operstate"))["state"]);
  }

  kill(): Promise<unknown> {
    return this.guest.kill(500);
  }
}

/** Asserts a ping result saw every reply. */
export function assertNoLoss(r: GuestResult, count: number, what: string): void {
  assert.equal(r["sent"], count, `${what}: ${JSON.stringify(r)}`);
  assert.equal(r["received"], count, `${what} lost pings: ${JSON.stringify(r)}`);
  assert.equal(r["loss_pct"], 0, `${what}: ${JSON.stringify(r)}`);
}

/** Mbit/s of a `send` result (guest clock). */
export function throughput(send: GuestResult, mib: number): string {
  const secs = Number(send["t1"]) - Number(send["t0"]);
  return secs > 0 ? ((mib * 8) / secs).toFixed(1) : "?"; // same formula as kernel-path.test.ts
}
