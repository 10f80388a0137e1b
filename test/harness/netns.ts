/**
 * Network namespaces for tests: uniquely named, always deleted. Devices made inside a namespace
 * (bridges, taps, veth ends) disappear with it once no process (e.g. QEMU) still runs in it.
 * Traffic from tests stays inside namespaces they made.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { CleanupRegistrar } from "./qemu.js";

export class NetnsError extends Error {
  override readonly name = "NetnsError";
}

function run(argv: string[]): string {
  try {
    return execFileSync(argv[0]!, argv.slice(1), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; status?: number };
    if (err.code === "ENOENT") throw new NetnsError(`${argv[0]} is not installed`);
    throw new NetnsError(`${argv.join(" ")} failed (status ${err.status}): ${(err.stderr ?? "").trim()}`);
  }
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function checkIfname(n: string): string {
  if (!IFNAME_RE.test(n)) throw new NetnsError(`invalid interface name ${JSON.stringify(n)} (1..15 of [A-Za-z0-9_.-])`);
  return n;
}

const liveNs = new Set<NetNs>();
let exitHookInstalled = false;

export interface LinkOptions {
  /** Enslave to this bridge (in the same namespace). */
  bridge?: string;
  mtu?: number;
  /** Bring the link up (default true). */
  up?: boolean;
}

/** A network namespace this process created. */
export class NetNs {
  private deleted = false;

  private constructor(readonly name: string) {}

  /** Creates `tsvs-<prefix>-<pid>-<random>`; registers deletion with `cleanup.after` and at process exit. */
  static create(opts: { prefix?: string; cleanup?: CleanupRegistrar } = {}): NetNs {
    const prefix = (opts.prefix ?? "t").replace(/[^A-Za-z0-9_-]/g, "_");
    const name = `tsvs-${prefix}-${process.pid}-${randomBytes(3).toString("hex")}`;
    run(["ip", "netns", "add", name]);
    const ns = new NetNs(name);
    liveNs.add(ns);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on("exit", () => {
        for (const n of liveNs) n.delete();
      });
    }
    opts.cleanup?.after(() => ns.delete());
    ns.ip("link", "set", "lo", "up");
    return ns;
  }

  /** Prefix that runs a command inside the namespace: `ip netns exec NAME`. */
  get execPrefix(): string[] {
    return ["ip", "netns", "exec", this.name];
  }

  /** Runs a command inside the namespace and returns its stdout. */
  exec(cmd: string, ...args: string[]): string {
    return run([...this.execPrefix, cmd, ...args]);
  }

  /** `ip -n NAME ...` */
  ip(...args: string[]): string {
    return run(["ip", "-n", this.name, ...args]);
  }

  private finishLink(dev: string, o: LinkOptions): void {
    if (o.mtu !== undefined) this.ip("link", "set", dev, "mtu", String(o.mtu));
    if (o.bridge !== undefined) this.ip("link", "set", dev, "master", checkIfname(o.bridge));
    if (o.up ?? true) this.ip("link", "set", dev, "up");
  }

  /** A Linux bridge (STP off, so ports forward at once). */
  addBridge(name: string, o: Omit<LinkOptions, "bridge"> = {}): void {
    this.ip("link", "add", checkIfname(name), "type", "bridge", "stp_state", "0", "forward_delay", "0");
    this.finishLink(name, o);
  }

  /** A persistent tap device for QEMU (run QEMU in this namespace: GuestOptions.netns). */
  addTap(name: string, o: LinkOptions & { multiQueue?: boolean } = {}): void {
    this.ip("tuntap", "add", "dev", checkIfname(name), "mode", "tap", ...(o.multiQueue ? ["multi_queue"] : []));
    this.finishLink(name, o);
  }

  /** A veth pair `a` (here) <-> `b` (in `peer`, default here). */
  addVeth(a: string, b: string, o: LinkOptions & { peer?: NetNs; peerOptions?: LinkOptions } = {}): void {
    const peerNs = o.peer ?? this;
    this.ip("link", "add", checkIfname(a), "type", "veth", "peer", "name", checkIfname(b), "netns", peerNs.name);
    this.finishLink(a, o);
    peerNs.finishLink(b, o.peerOptions ?? {});
  }

  /** Adds an address (CIDR) to a device. */
  addAddr(dev: string, cidr: string): void {
    this.ip("addr", "add", cidr, "dev", checkIfname(dev));
  }

  /** Deletes the namespace (idempotent, never throws). */
  delete(): void {
    if (this.deleted) return;
    this.deleted = true;
    liveNs.delete(this);
    try {
      execFileSync("ip", ["netns", "del", this.name], { stdio: "ignore" });
    } catch { /* already gone */ }
  }
}
