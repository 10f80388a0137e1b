/**
 * Builds (once, cached) a tiny Linux guest for QEMU: Debian's 6.1 kernel plus a busybox-static
 * initramfs whose /init loads the virtio-net modules, configures the NICs from the kernel
 * command line, runs a test script handed in through fw_cfg, reports on the serial console and
 * powers off.
 *
 * Inputs (all must exist on the machine; nothing is stubbed):
 * - the newest `linux-image-6.1.0-N-amd64-unsigned` apt offers (`apt-get update` must have run),
 *   fetched with `apt-get download` (or a .deb named by $TSVS_GUEST_KERNEL_DEB); if that .deb cannot
 *   be downloaded the next newest is tried,
 * - /bin/busybox from busybox-static.
 *
 * Guest protocol (serial console, one line each; the guest side is test/harness/guest/init.sh):
 *   TSVS-BOOTED <uptime>              /init started
 *   TSVS-RESULT {json}                 a result; {"name":"iface",...} per NIC, then the script's own
 *   TSVS-ERROR <text>                  something in /init failed
 *   TSVS-EXIT <rc>                     the script's exit status (124 = guest-side timeout)
 *   TSVS-DONE                          about to power off
 * Kernel command line parameters `tsvs.<key>=<value>` become env vars TSVS_<KEY> for the script.
 * Known keys: ip / ip<N> (CIDR for eth0 / ethN), mtu / mtu<N>, timeout (script seconds, default 300),
 * hold=1 (do not power off after the script; for guests that a test ends itself).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

export interface GuestImage {
  /** Path of the bzImage. */
  kernel: string;
  /** Path of the gzip'ed newc initramfs. */
  initrd: string;
  /** Kernel package and version the image was built from, e.g. linux-image-6.1.0-56-amd64-unsigned 6.1.192-2. */
  kernelPackage: string;
  kernelVersion: string;
  /** Modules in the initramfs, in load order. */
  modules: string[];
}

export class GuestImageError extends Error {
  override readonly name = "GuestImageError";
}

/** Bump when the builder's output changes in a way the hashed inputs do not capture. */
const BUILDER_VERSION = 3;

/** Modules the guest needs; their dependencies are added from `modinfo -F depends`. */
export const WANTED_MODULES = ["virtio_net", "virtio_pci", "qemu_fw_cfg"] as const;

/** Name of the fw_cfg blob that carries the test script into the guest. */
export const FW_CFG_SCRIPT_NAME = "opt/tsvs/script";

/** Directory of the guest's shell scripts (init.sh, lib.sh) in the source tree. */
export function guestScriptDir(): string {
  return path.join(repoRoot(), "test", "harness", "guest");
}

// ---------------------------------------------------------------------------------------------

function run(cmd: string, args: string[], opts: { cwd?: string; input?: Buffer } = {}): string {
  try {
    return execFileSync(cmd, args, {
      cwd: opts.cwd,
      input: opts.input,
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; status?: number };
    if (err.code === "ENOENT") throw new GuestImageError(`${cmd} is not installed (needed to build the guest image)`);
    throw new GuestImageError(`${cmd} ${args.join(" ")} failed (status ${err.status}): ${(err.stderr ?? "").trim()}`);
  }
}

/** Repository root: the nearest ancestor of this module with a package.json named tsvs. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, "package.json");
    if (fs.existsSync(pj)) {
      try {
        if ((JSON.parse(fs.readFileSync(pj, "utf8")) as { name?: string }).name === "tsvs") return dir;
      } catch { /* keep looking */ }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new GuestImageError("cannot find the tsvs repository root");
    dir = up;
  }
}

export interface KernelPackage { name: string; version: string; abi: number }

const KPKG_RE = /^linux-image-6\.1\.0-(\d+)-amd64-unsigned$/;

/** The linux-image-6.1.0-N-amd64-unsigned packages apt can install (with a candidate version), newest first. */
export function findKernelPackages(): KernelPackage[] {
  const list = run("apt-cache", ["search", "--names-only", "^linux-image-6\\.1\\.0-[0-9]+-amd64-unsigned$"]);
  const names = list.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => KPKG_RE.test(n));
  names.sort((a, b) => Number(KPKG_RE.exec(b)![1]) - Number(KPKG_RE.exec(a)![1]));
  const out: KernelPackage[] = [];
  if (names.length > 0) {
    // One `apt-cache policy` for all (each apt-cache run costs about 0.5 s here).
    const candidate = new Map<string, string>();
    let current = "";
    for (const line of run("apt-cache", ["policy", ...names]).split("\n")) {
      const head = /^(\S+):$/.exec(line);
      if (head) current = head[1]!;
      const c = /^\s+Candidate:\s*(\S+)/.exec(line);
      if (c && current) candidate.set(current, c[1]!);
    }
    for (const name of names) {
      const v = candidate.get(name);
      if (v && v !== "(none)") out.push({ name, version: v, abi: Number(KPKG_RE.exec(name)![1]) });
    }
  }
  if (out.length === 0) {
    throw new GuestImageError(
      "apt offers no linux-image-6.1.0-N-amd64-unsigned package: run `apt-get update` (Debian 12 sources needed)",
    );
  }
  return out;
}

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Topologically sorted closure of `wanted` under `deps` (dependencies first). */
export function moduleLoadOrder(wanted: readonly string[], deps: (m: string) => string[]): string[] {
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (m: string, chain: string[]): void => {
    const s = state.get(m);
    if (s === "done") return;
    if (s === "visiting") throw new GuestImageError(`module dependency cycle: ${[...chain, m].join(" -> ")}`);
    state.set(m, "visiting");
    for (const d of deps(m)) visit(d, [...chain, m]);
    state.set(m, "done");
    order.push(m);
  };
  for (const m of wanted) visit(m, []);
  return order;
}

function findFiles(dir: string, pred: (name: string) => boolean, out: string[] = []): string[] {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) findFiles(p, pred, out);
    else if (pred(ent.name)) out.push(p);
  }
  return out;
}

const BUSYBOX = "/bin/busybox";

/**
 * Returns the cached guest image, building it first if needed. Throws GuestImageError with the
 * reason when a build input is missing (apt index, kernel package, busybox-static).
 */
export function ensureGuestImage(cacheDir?: string): Promise<GuestImage> {
  const base = cacheDir ?? path.join(repoRoot(), ".cache", "guest");
  let p = memo.get(base);
  if (!p) {
    p = Promise.resolve().then(() => ensureUncached(base));
    memo.set(base, p);
    p.catch(() => memo.delete(base)); // retry next time instead of caching a failure
  }
  return p;
}

/** One lookup per cache dir and process: apt-cache calls are slow. */
const memo = new Map<string, Promise<GuestImage>>();

function ensureUncached(base: string): GuestImage {
  if (!fs.existsSync(BUSYBOX)) throw new GuestImageError(`${BUSYBOX} missing: apt-get install -y busybox-static`);
  const busybox = fs.readFileSync(BUSYBOX);
  const init = fs.readFileSync(path.join(guestScriptDir(), "init.sh"), "utf8");
  const lib = fs.readFileSync(path.join(guestScriptDir(), "lib.sh"), "utf8");
  const localDeb = process.env["TSVS_GUEST_KERNEL_DEB"];
  if (localDeb) {
    const name = run("dpkg-deb", ["-f", localDeb, "Package"]).trim();
    const version = run("dpkg-deb", ["-f", localDeb, "Version"]).trim();
    const m = KPKG_RE.exec(name);
    if (!m) throw new GuestImageError(`$TSVS_GUEST_KERNEL_DEB is ${name}, not linux-image-6.1.0-N-amd64-unsigned`);
    return ensureFor({ name, version, abi: Number(m[1]) }, localDeb, base, busybox, init, lib);
  }
  // Newest first; an index entry whose .deb is gone from the mirror falls through to the next.
  const failures: string[] = [];
  for (const pkg of findKernelPackages()) {
    try {
      return ensureFor(pkg, undefined, base, busybox, init, lib);
    } catch (e) {
      if (!(e instanceof DownloadError)) throw e;
      failures.push(e.message);
    }
  }
  throw new GuestImageError(`no kernel package could be downloaded:\n${failures.join("\n")}`);
}

class DownloadError extends GuestImageError {}

function ensureFor(pkg: KernelPackage, localDeb: string | undefined, base: string, busybox: Buffer, init: string, lib: string): GuestImage {
  const key = sha256(
    JSON.stringify({ v: BUILDER_VERSION, pkg: pkg.name, ver: pkg.version, init, lib,
      wanted: WANTED_MODULES, busybox: sha256(busybox) }),
  ).slice(0, 16);
  const dir = path.join(base, key);
  const manifestPath = path.join(dir, "manifest.json");
  const located = (img: GuestImage): GuestImage =>
    ({ ...img, kernel: path.join(dir, "vmlinuz"), initrd: path.join(dir, "initrd.gz") });
  if (fs.existsSync(manifestPath)) return located(JSON.parse(fs.readFileSync(manifestPath, "utf8")) as GuestImage);
  fs.mkdirSync(base, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-guest-build-"));
  fs.chmodSync(work, 0o755); // apt's _apt user must reach the download dir
  try {
    const img = build(pkg, localDeb, busybox, init, lib, work);
    const stage = fs.mkdtempSync(path.join(base, `.build-${key}-`));
    fs.chmodSync(stage, 0o755);
    fs.copyFileSync(img.kernel, path.join(stage, "vmlinuz"));
    fs.copyFileSync(img.initrd, path.join(stage, "initrd.gz"));
    const manifest: GuestImage = { ...img, kernel: "vmlinuz", initrd: "initrd.gz" };
    fs.writeFileSync(path.join(stage, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    try {
      fs.renameSync(stage, dir);
    } catch (e) {
      // Another process finished the same build first: theirs is identical, use it.
      fs.rmSync(stage, { recursive: true, force: true });
      if (!fs.existsSync(manifestPath)) throw e;
    }
    return located(manifest);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function build(pkg: KernelPackage, localDeb: string | undefined, busybox: Buffer, init: string, lib: string, work: string): GuestImage {
  // 1. The kernel package.
  let deb = localDeb;
  if (!deb) {
    const dl = path.join(work, "dl");
    fs.mkdirSync(dl);
    fs.chmodSync(dl, 0o777); // lets apt's _apt user write there (else a harmless warning)
    try {
      run("apt-get", ["download", `${pkg.name}=${pkg.version}`], { cwd: dl });
    } catch (e) {
      throw new DownloadError((e as Error).message);
    }
    const debs = fs.readdirSync(dl).filter((f) => f.endsWith(".deb"));
    if (debs.length !== 1) throw new GuestImageError(`apt-get download left ${debs.length} .deb files in ${dl}`);
    deb = path.join(dl, debs[0]!);
  }
  const x = path.join(work, "x");
  fs.mkdirSync(x);
  run("dpkg-deb", ["-x", deb, x]);
  const bootDir = path.join(x, "boot");
  const vmlinuz = fs.readdirSync(bootDir).find((f) => f.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new GuestImageError(`${pkg.name} has no /boot/vmlinuz-*`);
  const modRoot = path.join(x, "lib", "modules");
  const kos = findFiles(modRoot, (n) => n.endsWith(".ko"));
  const byName = new Map<string, string>();
  for (const p of kos) byName.set(path.basename(p, ".ko").replace(/-/g, "_"), p);
  const modPath = (m: string): string => {
    const p = byName.get(m);
    if (!p) throw new GuestImageError(`module ${m} is not in ${pkg.name}`);
    return p;
  };
  const depsOf = (m: string): string[] =>
    run("modinfo", ["-F", "depends", modPath(m)]).trim().split(",").map((s) => s.trim().replace(/-/g, "_")).filter(Boolean);
  const order = moduleLoadOrder(WANTED_MODULES, depsOf);

  // 2. The initramfs tree.
  const root = path.join(work, "root");
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc/tsvs", "lib/modules"]) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
  }
  fs.writeFileSync(path.join(root, "bin", "busybox"), busybox, { mode: 0o755 });
  const applets = run(BUSYBOX, ["--list"]).split("\n").filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox");
  for (const a of applets) fs.symlinkSync("busybox", path.join(root, "bin", a));
  fs.writeFileSync(path.join(root, "init"), init, { mode: 0o755 });
  fs.writeFileSync(path.join(root, "etc", "tsvs", "lib.sh"), lib, { mode: 0o644 });
  fs.writeFileSync(path.join(root, "etc", "tsvs", "modules"), order.join("\n") + "\n");
  for (const m of order) fs.copyFileSync(modPath(m), path.join(root, "lib", "modules", `${m}.ko`));

  // 3. cpio (newc) via busybox, gzip via zlib.
  const list = run(BUSYBOX, ["find", "."], { cwd: root });
  const cpio = execFileSync(BUSYBOX, ["cpio", "-o", "-H", "newc"], {
    cwd: root, input: list, maxBuffer: 256 * 1024 * 1024, stdio: ["pipe", "pipe", "pipe"],
  });
  const initrd = path.join(work, "initrd.gz");
  fs.writeFileSync(initrd, gzipSync(cpio, { level: 9 }));
  return {
    kernel: path.join(bootDir, vmlinuz),
    initrd,
    kernelPackage: pkg.name,
    kernelVersion: pkg.version,
    modules: order,
  };
}
