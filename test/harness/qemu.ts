/**
 * Starts tiny Linux guests (test/harness/guest-image.ts) under QEMU/TCG and watches their serial
 * console. Every guest is ended by its PID: by `kill()`, by the cleanup hook given in
 * `opts.cleanup` (a node:test context `t`, or an object with `after`), and, as a last resort,
 * with SIGKILL when the Node process exits.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { qemuMemoryArgs, qemuTapArgs, qemuVhostUserArgs, type TapNicOptions, type VhostUserNicOptions } from "../../src/app/qemu-args.js";
import { ensureGuestImage, FW_CFG_SCRIPT_NAME, type GuestImage } from "./guest-image.js";

export type NicSpec =
  | ({ kind: "vhost-user"; socket: string } & Omit<VhostUserNicOptions, "index">)
  | ({ kind: "tap"; ifname: string } & Omit<TapNicOptions, "index">);

/** Anything with node:test's `after` (a TestContext `t`, or `{ after }` from node:test). */
export interface CleanupRegistrar {
  after(fn: () => unknown): void;
}

export interface GuestOptions {
  /** Label used in errors and the temp dir name. Default "guest". */
  name?: string;
  /** Prebuilt image; default `await ensureGuestImage()`. */
  image?: GuestImage;
  /** Guest RAM in MiB (default 256, or the image's minMemoryMiB). Use 2048+ to exercise multi-region memory tables. */
  memoryMiB?: number;
  /** Back RAM by a shared memfd (default true; vhost-user moves no packets without it). */
  shareMemory?: boolean;
  /** vCPUs (default 1). */
  cpus?: number;
  /** NICs in order: the first becomes eth0 in the guest. */
  nics?: NicSpec[];
  /** Kernel command line `tsvs.<key>=<value>`: the guest sees TSVS_<KEY>. ip/ip1/mtu/mtu1/timeout/hold are used by /init. */
  params?: Record<string, string | number | boolean>;
  /** Shell script (busybox ash) run by the guest's /init after the network is up, via fw_cfg. */
  script?: string;
  /** Run QEMU inside this network namespace (`ip netns exec`). Needed for tap devices made there. */
  netns?: string;
  /** CPU list for `taskset -c` (e.g. "1"). */
  cpuList?: string;
  /** More QEMU arguments, appended. */
  extraArgs?: string[];
  /** More kernel command line words, appended. */
  extraKernelArgs?: string[];
  /** Register `kill()` here so the guest ends even when the test fails. */
  cleanup?: CleanupRegistrar;
  /** QEMU binary (default qemu-system-x86_64 from PATH). */
  qemuBinary?: string;
  /** Keep QEMU's stdin open so `Guest.write()` can type into the serial console. Default false. */
  interactive?: boolean;
}

/** One `TSVS-RESULT {json}` line from the guest. */
export interface GuestResult {
  name: string;
  [key: string]: unknown;
}

export interface GuestExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** What a guest that ran its script to the end reported. */
export interface GuestRun {
  exit: GuestExit;
  /** `TSVS-EXIT` status of the script; null if the guest never got there. */
  scriptExit: number | null;
  results: GuestResult[];
  /** `TSVS-ERROR` lines and malformed result lines. */
  problems: string[];
  /** Serial console text, CR and terminal escapes removed. */
  output: string;
}

export class GuestError extends Error {
  override readonly name = "GuestError";
}

const live = new Set<Guest>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const g of live) {
      try {
        process.kill(g.pid, "SIGKILL");
      } catch { /* already gone */ }
    }
  });
}

// ESC c, CSI sequences, and other two-byte ESC sequences that SeaBIOS writes.
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|c)/g;

function tail(s: string, lines = 30): string {
  return s.split("\n").slice(-lines).join("\n");
}

interface Waiter {
  re: RegExp;
  since: number;
  resolve: (m: RegExpExecArray) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** A running QEMU guest. Create with {@link startGuest}. */
export class Guest {
  readonly pid: number;
  /** The full command line that was spawned. */
  readonly argv: readonly string[];
  /** Resolves when QEMU has exited (never rejects). */
  readonly exited: Promise<GuestExit>;
  private out = "";
  private err = "";
  private exitInfo: GuestExit | null = null;
  private waiters = new Set<Waiter>();
  private readonly child: ChildProcess;

  /** @internal */
  constructor(readonly name: string, argv: string[], private readonly tmpDir: string, interactive = false) {
    this.argv = argv;
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: [interactive ? "pipe" : "ignore", "pipe", "pipe"] });
    this.child.stdin?.on("error", () => undefined); // EPIPE after QEMU exits
    this.exited = new Promise<GuestExit>((resolve) => {
      this.child.on("error", (e) => {
        this.err += `spawn ${argv[0]} failed: ${e.message}\n`;
        this.finish({ code: null, signal: null }, resolve);
      });
      this.child.on("exit", (code, signal) => this.finish({ code, signal }, resolve));
    });
    if (this.child.pid === undefined) {
      // spawn failure (ENOENT...) is reported asynchronously; pid stays 0.
      this.pid = 0;
    } else {
      this.pid = this.child.pid;
      live.add(this);
      installExitHook();
    }
    this.child.stdout!.setEncoding("latin1");
    this.child.stdout!.on("data", (s: string) => {
      this.out += s.replace(/\r/g, "").replace(ANSI_RE, "");
      this.checkWaiters();
    });
    this.child.stderr!.setEncoding("utf8");
    this.child.stderr!.on("data", (s: string) => {
      this.err += s;
    });
  }

  private finish(info: GuestExit, resolve: (e: GuestExit) => void): void {
    if (this.exitInfo) return;
    this.exitInfo = info;
    live.delete(this);
    // Let the last stdout chunks arrive before failing the waiters.
    setImmediate(() => {
      this.checkWaiters();
      for (const w of this.waiters) {
        clearTimeout(w.timer);
        w.reject(this.error(`exited (${this.describeExit()}) before ${w.re} appeared`));
      }
      this.waiters.clear();
      fs.rmSync(this.tmpDir, { recursive: true, force: true });
      resolve(info);
    });
  }

  private describeExit(): string {
    const e = this.exitInfo;
    if (!e) return "running";
    return e.signal ? `signal ${e.signal}` : `code ${e.code}`;
  }

  private error(msg: string): GuestError {
    return new GuestError(
      `guest ${this.name} (pid ${this.pid}) ${msg}\n--- serial (tail) ---\n${tail(this.out)}\n--- qemu stderr ---\n${tail(this.err, 10)}`,
    );
  }

  private checkWaiters(): void {
    for (const w of this.waiters) {
      const m = this.match(w);
      if (m) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve(m);
      }
    }
  }

  /** Whether QEMU has exited. */
  get hasExited(): boolean {
    return this.exitInfo !== null;
  }

  /** Types `text` into the serial console (needs `interactive: true`). False if QEMU is gone. */
  write(text: string): boolean {
    const stdin = this.child.stdin;
    if (!stdin) throw new GuestError(`guest ${this.name} was not started with interactive: true`);
    if (this.exitInfo || stdin.destroyed) return false;
    stdin.write(text);
    return true;
  }

  /** Serial console output so far (LF line ends, terminal escapes removed). */
  output(): string {
    return this.out;
  }

  /** QEMU's own stderr so far. */
  stderr(): string {
    return this.err;
  }

  /**
   * Resolves with the first match of `re` in the serial output from offset `since` on (default 0,
   * the whole output; pass `output().length` to wait for something new), now or later.
   * `match.index` is an offset into `output()`. Rejects on timeout or when QEMU exits without a
   * match; the error carries the output tail.
   */
  waitFor(re: RegExp, timeoutMs: number, since = 0): Promise<RegExpExecArray> {
    const r = new RegExp(re.source, re.flags.replace(/[gy]/g, "") + "g");
    const w: Waiter = { re: r, since, resolve: () => undefined, reject: () => undefined, timer: undefined };
    const m = this.match(w);
    if (m) return Promise.resolve(m);
    if (this.exitInfo) return Promise.reject(this.error(`exited (${this.describeExit()}) before ${re} appeared`));
    return new Promise((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(this.error(`did not print ${re} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  private match(w: Waiter): RegExpExecArray | null {
    w.re.lastIndex = w.since;
    return w.re.exec(this.out);
  }

  /** All `TSVS-RESULT` lines so far that parse as JSON objects with a string `name`. */
  results(): GuestResult[] {
    return this.parse().results;
  }

  /** Results with the given name. */
  resultsNamed(name: string): GuestResult[] {
    return this.results().filter((r) => r.name === name);
  }

  /** `TSVS-ERROR` lines and result lines that did not parse. */
  problems(): string[] {
    return this.parse().problems;
  }

  private parse(): { results: GuestResult[]; problems: string[] } {
    const results: GuestResult[] = [];
    const problems: string[] = [];
    for (const line of this.out.split("\n")) {
      const r = /TSVS-RESULT (.*)$/.exec(line);
      if (r) {
        try {
          const v = JSON.parse(r[1]!) as unknown;
          if (v !== null && typeof v === "object" && typeof (v as GuestResult).name === "string") {
            results.push(v as GuestResult);
          } else {
            problems.push(`result without name: ${line}`);
          }
        } catch {
          problems.push(`malformed result: ${line}`);
        }
        continue;
      }
      const e = /TSVS-ERROR (.*)$/.exec(line);
      if (e) problems.push(e[1]!);
    }
    return { results, problems };
  }

  /**
   * Waits until QEMU exits by itself (the guest powers off after its script) and returns what
   * it reported. On timeout the guest is killed and a GuestError with the output tail is thrown.
   */
  async finished(timeoutMs: number): Promise<GuestRun> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const r = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (r === "timeout") {
      const err = this.error(`did not power off within ${timeoutMs} ms`);
      await this.kill();
      throw err;
    }
    const m = /TSVS-EXIT (\d+)/.exec(this.out);
    const { results, problems } = this.parse();
    return { exit: r, scriptExit: m ? Number(m[1]) : null, results, problems, output: this.out };
  }

  /**
   * Ends QEMU: SIGTERM, then SIGKILL after `graceMs` (QEMU waiting for a vhost-user peer ignores
   * SIGTERM). Idempotent; resolves when the process is gone.
   */
  async kill(graceMs = 2000): Promise<GuestExit> {
    if (this.exitInfo || this.pid === 0) return this.exited;
    try {
      process.kill(this.pid, "SIGTERM");
    } catch { /* raced with exit */ }
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<"grace">((resolve) => {
      timer = setTimeout(() => resolve("grace"), graceMs);
    });
    const r = await Promise.race([this.exited, t]);
    clearTimeout(timer);
    if (r === "grace") {
      try {
        process.kill(this.pid, "SIGKILL");
      } catch { /* raced with exit */ }
    }
    return this.exited;
  }
}

const PARAM_KEY_RE = /^[A-Za-z0-9_]+$/;

/** The kernel command line for a guest with these parameters. */
export function guestKernelCmdline(params: GuestOptions["params"] = {}, extra: string[] = []): string {
  const words = ["console=ttyS0", "panic=-1", "loglevel=3"];
  for (const [k, v] of Object.entries(params)) {
    if (!PARAM_KEY_RE.test(k)) throw new GuestError(`guest parameter name ${JSON.stringify(k)} must match ${PARAM_KEY_RE}`);
    const s = typeof v === "boolean" ? (v ? "1" : "0") : String(v);
    if (s.length === 0 || /[\s"]/.test(s)) throw new GuestError(`guest parameter ${k}=${JSON.stringify(s)} must be non-empty without spaces or quotes`);
    words.push(`tsvs.${k}=${s}`);
  }
  const line = [...words, ...extra].join(" ");
  if (line.length > 2000) throw new GuestError(`kernel command line is ${line.length} bytes; x86 allows 2047 (pass data in the script)`);
  return line;
}

/** The QEMU argument list (without the binary) for a guest. Pure apart from the paths given. */
export function guestQemuArgs(
  image: Pick<GuestImage, "kernel" | "initrd"> & Partial<Pick<GuestImage, "kernelArgs" | "cpu" | "minMemoryMiB">>,
  opts: GuestOptions, scriptPath?: string,
): string[] {
  const minMem = image.minMemoryMiB ?? 0;
  const mem = opts.memoryMiB ?? Math.max(256, minMem);
  if (mem < minMem) throw new GuestError(`this guest image needs at least ${minMem} MiB of RAM (hugepages + initramfs), got memoryMiB ${mem}`);
  const args = [
    "-accel", "tcg", "-nodefaults", "-nographic", "-no-reboot",
    ...qemuMemoryArgs({ sizeMiB: mem, share: opts.shareMemory ?? true }),
    ...(image.cpu !== undefined ? ["-cpu", image.cpu] : []),
    "-smp", String(opts.cpus ?? 1),
    "-kernel", image.kernel, "-initrd", image.initrd,
    "-append", guestKernelCmdline(opts.params, [...(image.kernelArgs ?? []), ...(opts.extraKernelArgs ?? [])]),
    "-serial", "stdio",
  ];
  (opts.nics ?? []).forEach((nic, index) => {
    if (nic.kind === "vhost-user") {
      args.push(...qemuVhostUserArgs(nic.socket, {
        server: nic.server, queues: nic.queues, mac: nic.mac, reconnect: nic.reconnect, packed: nic.packed, mrgRxbuf: nic.mrgRxbuf, index,
      }));
    } else {
      args.push(...qemuTapArgs(nic.ifname, { mac: nic.mac, vhostNet: nic.vhostNet, index }));
    }
  });
  if (scriptPath !== undefined) {
    if (scriptPath.includes(",")) throw new GuestError(`script path ${scriptPath} contains ','`);
    args.push("-fw_cfg", `name=${FW_CFG_SCRIPT_NAME},file=${scriptPath}`);
  }
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** Boots a guest. Resolves once QEMU is spawned (not booted: use `waitFor` / `finished`). */
export async function startGuest(opts: GuestOptions = {}): Promise<Guest> {
  const name = opts.name ?? "guest";
  const image = opts.image ?? (await ensureGuestImage());
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tsvs-${name.replace(/[^A-Za-z0-9_-]/g, "_")}-`));
  let argv: string[];
  try {
    let scriptPath: string | undefined;
    if (opts.script !== undefined) {
      scriptPath = path.join(tmp, "script.sh");
      fs.writeFileSync(scriptPath, opts.script);
    }
    argv = [opts.qemuBinary ?? "qemu-system-x86_64", ...guestQemuArgs(image, opts, scriptPath)];
    if (opts.netns !== undefined) argv = ["ip", "netns", "exec", opts.netns, ...argv];
    if (opts.cpuList !== undefined) argv = ["taskset", "-c", opts.cpuList, ...argv];
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const g = new Guest(name, argv, tmp, opts.interactive ?? false);
  opts.cleanup?.after(() => g.kill());
  if (g.pid === 0) {
    await g.exited;
    throw new GuestError(`cannot start guest ${name}: ${g.stderr().trim()} (is qemu-system-x86 installed?)`);
  }
  return g;
}
