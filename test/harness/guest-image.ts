/**
 * Builds (once, cached) a tiny Linux guest for QEMU: Debian's 6.1 kernel plus a busybox-static
 * initramfs whose /init loads the virtio-net modules, configures the NICs from the kernel
 * command line, runs a test script handed in through fw_cfg, reports on the serial console and
 * powers off.
 *
 * API:
 *   ensureGuestImage()                         the plain guest (kernel virtio-net only)
 *   ensureGuestImage({ node: true })           + Node 20 and the built tsvs package: in the guest,
 *                                              `node /tsvs/dist/src/cli/main.js ...` or just `tsvs ...`
 *   ensureGuestImage({ dpdk: true })           + dpdk-testpmd (its ldd closure, the virtio and
 *                                              mempool_ring plugins; see DPDK_PLUGINS / dpdkEalArgs())
 *   ensureGuestImage({ node: true, dpdk: true, hugepages: 256, cacheDir })   both; options combine.
 *   ensureGuestImage({ ..., modules: ["pktgen"] })   more kernel modules loaded at boot (bench/vm2vm.ts)
 * Every variant with `pmd` (implied by node and dpdk) is a guest for a userspace poll-mode driver:
 * - modules uio + uio_pci_generic as well (the virtio NICs still come up as ethN under virtio_pci;
 *   unbind them first, see `g_pci_bind` in test/harness/guest/lib.sh),
 * - `image.kernelArgs` = `hugepages=N init_on_alloc=0` (2 MiB pages reserved at boot, not zeroed),
 *   hugetlbfs mounted at /mnt/huge by /init, /var/run present,
 * - `image.cpu` = "max" (QEMU's default qemu64 CPU makes DPDK die with Illegal instruction),
 * - `image.kernel` is the uncompressed vmlinux (PVH boot: about 6 s less under TCG),
 * - `image.minMemoryMiB`: guest RAM that fits hugepages + initramfs (test/harness/qemu.ts uses it
 *   as the default).
 * test/harness/qemu.ts applies kernelArgs, cpu and minMemoryMiB by itself. The NIC is at PCI
 * 0000:00:02.0 (the first -device with -nodefaults), 0000:00:03.0 for the second.
 *
 * The initramfs is several concatenated cpio archives, each cached by the hash of its contents:
 * the base (busybox, /init, modules; gzip), the runtime (node, dpdk-testpmd, their shared
 * libraries, node_modules for koffi + pino; uncompressed, so the TCG guest does not spend seconds
 * inflating it) and the tsvs package (dist/src and dist/examples .js files + package.json; gzip;
 * rebuilt whenever dist changes, in about a second). Members are 4-byte aligned (the kernel stops
 * unpacking silently otherwise). Sizes measured: see README "Running a PMD inside your VM".
 *
 * Inputs (all must exist on the machine; nothing is stubbed):
 * - the newest `linux-image-6.1.0-N-amd64-unsigned` apt offers (`apt-get update` must have run),
 *   fetched with `apt-get download` (or a .deb named by $TSVS_GUEST_KERNEL_DEB); if that .deb cannot
 *   be downloaded the next newest is tried,
 * - /bin/busybox from busybox-static,
 * - node variant: the running `node` binary (process.execPath), `ldd`, dist/ (run `npx tsc -p .`)
 *   and node_modules/ of this repository,
 * - dpdk variant: /usr/bin/dpdk-testpmd (dpdk-dev) and its plugins under .../dpdk/pmds-23.0.
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
  /** Path of the kernel: the bzImage, or the uncompressed vmlinux for `pmd` variants. */
  kernel: string;
  /** Path of the initramfs (concatenated newc archives). */
  initrd: string;
  /** Kernel package and version the image was built from, e.g. linux-image-6.1.0-56-amd64-unsigned 6.1.192-2. */
  kernelPackage: string;
  kernelVersion: string;
  /** Modules in the initramfs, in load order. */
  modules: string[];
  /** Kernel command line words the image needs (hugepages...). */
  kernelArgs?: string[];
  /** QEMU `-cpu` model the image needs. */
  cpu?: string;
  /** Smallest guest RAM (MiB) that fits the reserved hugepages and the unpacked initramfs. */
  minMemoryMiB?: number;
  /** What the image carries. */
  variant?: { pmd: boolean; node: boolean; dpdk: boolean; hugepages: number };
  /** Bytes of the initramfs file. */
  initrdBytes?: number;
}

/** Which guest to build; see the file comment. */
export interface GuestVariant {
  /** Where images are cached. Default `<repo>/.cache/guest`. */
  cacheDir?: string;
  /** uio_pci_generic, hugepages, hugetlbfs, -cpu max, uncompressed kernel. Implied by node and dpdk. */
  pmd?: boolean;
  /** Node (this process's binary) + the built tsvs package at /tsvs. */
  node?: boolean;
  /** dpdk-testpmd with its libraries and the virtio/mempool_ring plugins. */
  dpdk?: boolean;
  /** 2 MiB hugepages reserved at boot (pmd variants). Default 256 (512 MiB). */
  hugepages?: number;
  /** More kernel modules to load at boot (with their dependencies), e.g. ["pktgen"]. */
  modules?: string[];
}

export class GuestImageError extends Error {
  override readonly name = "GuestImageError";
}

/** Bump when the builder's output changes in a way the hashed inputs do not capture. */
const BUILDER_VERSION = 4;

/** Modules the guest needs; their dependencies are added from `modinfo -F depends`. */
export const WANTED_MODULES = ["virtio_net", "virtio_pci", "qemu_fw_cfg"] as const;
/** Added for userspace PMDs (pmd variants). */
export const PMD_MODULES = ["uio_pci_generic"] as const;

/** Name of the fw_cfg blob that carries the test script into the guest. */
export const FW_CFG_SCRIPT_NAME = "opt/tsvs/script";

/** Where the dpdk variant keeps the plugins DPDK must be told about with `-d` (they are not autoloaded). */
export const DPDK_PMD_DIR = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0";
export const DPDK_PLUGINS = [`${DPDK_PMD_DIR}/librte_net_virtio.so.23`, `${DPDK_PMD_DIR}/librte_mempool_ring.so.23`] as const;

/**
 * EAL arguments for dpdk-testpmd inside a pmd guest (1 vCPU, the NIC bound to uio_pci_generic):
 * both lcores on CPU 0, physical addresses from pagemap, hugepages from /mnt/huge.
 */
export function dpdkEalArgs(pciAddrs: string[], opts: { filePrefix?: string; memMiB?: number } = {}): string[] {
  const a = ["--lcores", "0@0,1@0", "-n", "1", "--iova-mode=pa", `--file-prefix=${opts.filePrefix ?? "g"}`,
    "-m", String(opts.memMiB ?? 256), "--huge-dir", "/mnt/huge"];
  for (const p of DPDK_PLUGINS) a.push("-d", p);
  for (const addr of pciAddrs) a.push("-a", addr);
  return a;
}

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

interface Resolved { cacheDir: string; pmd: boolean; node: boolean; dpdk: boolean; hugepages: number; modules: string[] }

function resolveVariant(v: GuestVariant | string | undefined): Resolved {
  const o: GuestVariant = typeof v === "string" ? { cacheDir: v } : (v ?? {});
  const node = o.node ?? false;
  const dpdk = o.dpdk ?? false;
  const pmd = (o.pmd ?? false) || node || dpdk;
  const hugepages = o.hugepages ?? 256;
  if (!Number.isInteger(hugepages) || hugepages < 0 || hugepages > 4096) {
    throw new GuestImageError(`hugepages must be an integer in 0..4096, got ${hugepages}`);
  }
  const modules = [...(o.modules ?? [])].sort();
  for (const m of modules) if (!/^[a-z0-9_]+$/.test(m)) throw new GuestImageError(`bad module name ${JSON.stringify(m)}`);
  return { cacheDir: o.cacheDir ?? path.join(repoRoot(), ".cache", "guest"), pmd, node, dpdk, hugepages: pmd ? hugepages : 0, modules };
}

/**
 * Returns the cached guest image, building it first if needed. Throws GuestImageError with the
 * reason when a build input is missing (apt index, kernel package, busybox-static, node, dpdk, dist/).
 * The argument is a variant (see the file comment) or, as before, just the cache directory.
 */
export function ensureGuestImage(variant?: GuestVariant | string): Promise<GuestImage> {
  const r = resolveVariant(variant);
  const memoKey = JSON.stringify(r);
  let p = memo.get(memoKey);
  if (!p) {
    p = Promise.resolve().then(() => ensureUncached(r));
    memo.set(memoKey, p);
    p.catch(() => memo.delete(memoKey)); // retry next time instead of caching a failure
  }
  return p;
}

/** One lookup per variant and process: apt-cache calls are slow. */
const memo = new Map<string, Promise<GuestImage>>();

function ensureUncached(r: Resolved): GuestImage {
  if (!fs.existsSync(BUSYBOX)) throw new GuestImageError(`${BUSYBOX} missing: apt-get install -y busybox-static`);
  const busybox = fs.readFileSync(BUSYBOX);
  const init = fs.readFileSync(path.join(guestScriptDir(), "init.sh"), "utf8");
  const lib = fs.readFileSync(path.join(guestScriptDir(), "lib.sh"), "utf8");
  const inputs: BaseInputs = { busybox, init, lib, pmd: r.pmd, modules: r.modules };
  const base = ((): GuestImage => {
    const localDeb = process.env["TSVS_GUEST_KERNEL_DEB"];
    if (localDeb) {
      const name = run("dpkg-deb", ["-f", localDeb, "Package"]).trim();
      const version = run("dpkg-deb", ["-f", localDeb, "Version"]).trim();
      const m = KPKG_RE.exec(name);
      if (!m) throw new GuestImageError(`$TSVS_GUEST_KERNEL_DEB is ${name}, not linux-image-6.1.0-N-amd64-unsigned`);
      return ensureFor({ name, version, abi: Number(m[1]) }, localDeb, r.cacheDir, inputs);
    }
    // Newest first; an index entry whose .deb is gone from the mirror falls through to the next.
    const failures: string[] = [];
    for (const pkg of findKernelPackages()) {
      try {
        return ensureFor(pkg, undefined, r.cacheDir, inputs);
      } catch (e) {
        if (!(e instanceof DownloadError)) throw e;
        failures.push(e.message);
      }
    }
    throw new GuestImageError(`no kernel package could be downloaded:\n${failures.join("\n")}`);
  })();
  if (!r.pmd) return { ...base, initrdBytes: fs.statSync(base.initrd).size };
  return withPayload(base, r);
}

class DownloadError extends GuestImageError {}

interface BaseInputs { busybox: Buffer; init: string; lib: string; pmd: boolean; modules: string[] }

function ensureFor(pkg: KernelPackage, localDeb: string | undefined, base: string, inp: BaseInputs): GuestImage {
  const wanted = [...WANTED_MODULES, ...(inp.pmd ? PMD_MODULES : []), ...inp.modules];
  const key = sha256(
    JSON.stringify({ v: BUILDER_VERSION, pkg: pkg.name, ver: pkg.version, init: inp.init, lib: inp.lib,
      wanted, pmd: inp.pmd, busybox: sha256(inp.busybox) }),
  ).slice(0, 16);
  const dir = path.join(base, key);
  const manifestPath = path.join(dir, "manifest.json");
  const located = (img: GuestImage): GuestImage =>
    ({ ...img, kernel: path.join(dir, img.kernel), initrd: path.join(dir, "initrd.gz") });
  if (fs.existsSync(manifestPath)) return located(JSON.parse(fs.readFileSync(manifestPath, "utf8")) as GuestImage);
  fs.mkdirSync(base, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-guest-build-"));
  fs.chmodSync(work, 0o755); // apt's _apt user must reach the download dir
  try {
    const img = build(pkg, localDeb, inp, wanted, work);
    const stage = fs.mkdtempSync(path.join(base, `.build-${key}-`));
    fs.chmodSync(stage, 0o755);
    fs.copyFileSync(img.kernel, path.join(stage, path.basename(img.kernel)));
    fs.copyFileSync(img.initrd, path.join(stage, "initrd.gz"));
    const manifest: GuestImage = { ...img, kernel: path.basename(img.kernel), initrd: "initrd.gz" };
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

/** The ELF vmlinux inside a bzImage: the xz stream after its magic, inflated. Null if there is none. */
function extractVmlinux(bzImage: string, out: string): boolean {
  const data = fs.readFileSync(bzImage);
  const at = data.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) return false;
  const elf = execFileSync("xz", ["-dc", "--single-stream"], { input: data.subarray(at), maxBuffer: 512 * 1024 * 1024, stdio: ["pipe", "pipe", "ignore"] });
  if (elf.readUInt32BE(0) !== 0x7f454c46) return false;
  fs.writeFileSync(out, elf);
  return true;
}

function build(pkg: KernelPackage, localDeb: string | undefined, inp: BaseInputs, wanted: string[], work: string): GuestImage {
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
  let kernel = path.join(bootDir, vmlinuz);
  if (inp.pmd) {
    try {
      const out = path.join(work, "vmlinux");
      if (extractVmlinux(kernel, out)) kernel = out;
    } catch { /* no xz or not xz-compressed: boot the bzImage (slower, same result) */ }
  }
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
  const order = moduleLoadOrder(wanted, depsOf);

  // 2. The initramfs tree.
  const root = path.join(work, "root");
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc/tsvs", "lib/modules"]) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
  }
  fs.writeFileSync(path.join(root, "bin", "busybox"), inp.busybox, { mode: 0o755 });
  const applets = run(BUSYBOX, ["--list"]).split("\n").filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox");
  for (const a of applets) fs.symlinkSync("busybox", path.join(root, "bin", a));
  fs.writeFileSync(path.join(root, "init"), inp.init, { mode: 0o755 });
  fs.writeFileSync(path.join(root, "etc", "tsvs", "lib.sh"), inp.lib, { mode: 0o644 });
  fs.writeFileSync(path.join(root, "etc", "tsvs", "modules"), order.join("\n") + "\n");
  if (inp.pmd) fs.writeFileSync(path.join(root, "etc", "tsvs", "pmd"), "");
  for (const m of order) fs.copyFileSync(modPath(m), path.join(root, "lib", "modules", `${m}.ko`));

  // 3. cpio (newc) via busybox, gzip via zlib.
  const initrd = path.join(work, "initrd.gz");
  fs.writeFileSync(initrd, gzipSync(cpioOf(root), { level: 9 }));
  return {
    kernel,
    initrd,
    kernelPackage: pkg.name,
    kernelVersion: pkg.version,
    modules: order,
  };
}

/** A newc archive of the tree at `root` (busybox cpio). */
function cpioOf(root: string): Buffer {
  const list = run(BUSYBOX, ["find", "."], { cwd: root });
  return execFileSync(BUSYBOX, ["cpio", "-o", "-H", "newc"], {
    cwd: root, input: list, maxBuffer: 1024 * 1024 * 1024, stdio: ["pipe", "pipe", "pipe"],
  });
}

// ---------------------------------------------------------------------------------------------
// Payloads for pmd variants: runtime (node / dpdk-testpmd + libraries) and the tsvs package.

/** dest path in the guest -> source path on the host (regular files only). */
type FileMap = Map<string, string>;

/** Adds `bin` and its shared-library closure (as `ldd` resolves it here) to `files`. */
function addWithLibs(files: FileMap, bin: string, dest: string): void {
  if (!fs.existsSync(bin)) throw new GuestImageError(`${bin} is missing`);
  files.set(dest, bin);
  addLibs(files, bin);
}

function addLibs(files: FileMap, bin: string): void {
  const out = run("ldd", [bin]);
  for (const line of out.split("\n")) {
    // "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (!m) {
      if (/not found/.test(line)) throw new GuestImageError(`ldd ${bin}: ${line.trim()}`);
      continue;
    }
    const resolved = m[2] ?? m[1]!;
    const soname = path.basename(m[1]!);
    const real = fs.realpathSync(resolved);
    // Keep the library under its real directory (/usr/lib/..., since /lib is /usr/lib on Debian 12)
    // and its soname; dpdk's RUNPATH names .../dpdk/pmds-23.0, which stays where it is.
    files.set(path.join(path.dirname(real), soname), real);
  }
}

/** The runtime node_modules closure of the package at `dir` (flat npm layout). */
function runtimeModules(nodeModules: string, names: string[], seen = new Set<string>()): Set<string> {
  for (const n of names) {
    if (seen.has(n)) continue;
    const pj = path.join(nodeModules, n, "package.json");
    if (!fs.existsSync(pj)) throw new GuestImageError(`${pj} missing: run npm ci`);
    seen.add(n);
    const deps = (JSON.parse(fs.readFileSync(pj, "utf8")) as { dependencies?: Record<string, string> }).dependencies ?? {};
    runtimeModules(nodeModules, Object.keys(deps), seen);
  }
  return seen;
}

/** Files of node_modules/<pkg> the guest needs: no docs/sources; koffi only with its linux_x64 prebuilt. */
function addPackageDir(files: FileMap, src: string, dest: string, pkg: string, rel = ""): void {
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    if (ent.isDirectory()) {
      if (pkg === "koffi" && (/^(src|vendor|doc)$/.test(r) || (/^build\/koffi\/[^/]+$/.test(r) && ent.name !== "linux_x64"))) continue;
      addPackageDir(files, path.join(src, ent.name), path.join(dest, ent.name), pkg, r);
    } else if (ent.isFile() && !/\.(md|markdown|ts|map)$/i.test(ent.name)) {
      files.set(path.join(dest, ent.name), path.join(src, ent.name));
    }
  }
}

function nodeRuntimeFiles(files: FileMap, repo: string): void {
  addWithLibs(files, process.execPath, "/usr/bin/node");
  const nm = path.join(repo, "node_modules");
  const pj = JSON.parse(fs.readFileSync(path.join(repo, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
  for (const name of runtimeModules(nm, Object.keys(pj.dependencies ?? {}))) {
    addPackageDir(files, fs.realpathSync(path.join(nm, name)), `/tsvs/node_modules/${name}`, name);
  }
}

const DPDK_TESTPMD = "/usr/bin/dpdk-testpmd";

function dpdkRuntimeFiles(files: FileMap): void {
  addWithLibs(files, DPDK_TESTPMD, "/usr/bin/dpdk-testpmd");
  for (const p of DPDK_PLUGINS) addWithLibs(files, p, p);
  // glibc dlopens libgcc_s at run time (pthread_cancel/unwinding); ldd does not list it.
  const gcc = fs.realpathSync("/lib/x86_64-linux-gnu/libgcc_s.so.1");
  files.set("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1", gcc);
}

/** The tsvs package as the guest sees it at /tsvs: the built JavaScript and package.json. */
function tsvsPackageFiles(files: FileMap, repo: string): void {
  const dist = path.join(repo, "dist");
  const cli = path.join(dist, "src", "cli", "main.js");
  if (!fs.existsSync(cli)) throw new GuestImageError(`${cli} missing: build first (npx tsc -p .)`);
  files.set("/tsvs/package.json", path.join(repo, "package.json"));
  for (const sub of ["src", "examples"]) {
    const d = path.join(dist, sub);
    if (!fs.existsSync(d)) continue;
    for (const f of findFiles(d, (n) => n.endsWith(".js"))) files.set(path.join("/tsvs/dist", path.relative(dist, f)), f);
  }
}

/** Builds a tree from `files` (+ symlinks) and returns its newc archive. */
function cpioOfFiles(files: FileMap, links: Record<string, string>, dirs: string[], texts: Record<string, string> = {}): Buffer {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-guest-payload-"));
  try {
    for (const d of dirs) fs.mkdirSync(path.join(root, d), { recursive: true });
    for (const [dest, src] of [...files].sort()) {
      const d = path.join(root, dest);
      fs.mkdirSync(path.dirname(d), { recursive: true });
      fs.copyFileSync(src, d);
      fs.chmodSync(d, fs.statSync(src).mode & 0o777);
    }
    for (const [at, text] of Object.entries(texts)) {
      const d = path.join(root, at);
      fs.mkdirSync(path.dirname(d), { recursive: true });
      fs.writeFileSync(d, text, { mode: 0o755 });
    }
    for (const [at, to] of Object.entries(links)) {
      const d = path.join(root, at);
      fs.mkdirSync(path.dirname(d), { recursive: true });
      fs.symlinkSync(to, d);
    }
    return cpioOf(root);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

function hashFiles(files: FileMap, extra: unknown): string {
  const h = createHash("sha256").update(JSON.stringify(extra));
  for (const [dest, src] of [...files].sort()) {
    h.update(`\0${dest}\0${fs.statSync(src).mode & 0o777}\0`);
    h.update(fs.readFileSync(src));
  }
  return h.digest("hex").slice(0, 16);
}

/** A cached archive `name-key.ext` in `dir`, made by `make` if absent. */
function cachedSegment(dir: string, name: string, key: string, make: () => Buffer): string {
  const file = path.join(dir, `${name}-${key}`);
  if (fs.existsSync(file)) return file;
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, make());
  fs.renameSync(tmp, file);
  return file;
}

/** `tsvs ...` in the guest. */
const TSVS_WRAPPER = "#!/bin/sh\nexec /usr/bin/node /tsvs/dist/src/cli/main.js \"$@\"\n";

const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);

function withPayload(base: GuestImage, r: Resolved): GuestImage {
  const repo = repoRoot();
  const segDir = path.join(r.cacheDir, "segments");
  fs.mkdirSync(segDir, { recursive: true });
  const segments = [base.initrd];
  if (r.node || r.dpdk) {
    const files: FileMap = new Map();
    if (r.node) nodeRuntimeFiles(files, repo);
    if (r.dpdk) dpdkRuntimeFiles(files);
    const links: Record<string, string> = {
      "lib64/ld-linux-x86-64.so.2": "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
      "lib/x86_64-linux-gnu": "/usr/lib/x86_64-linux-gnu",
    };
    const texts: Record<string, string> = r.node ? { "usr/bin/tsvs": TSVS_WRAPPER } : {};
    const key = hashFiles(files, { v: BUILDER_VERSION, links, texts });
    segments.push(cachedSegment(segDir, "runtime", key, () => cpioOfFiles(files, links, ["var/run", "mnt/huge"], texts)));
  }
  if (r.node) {
    const files: FileMap = new Map();
    tsvsPackageFiles(files, repo);
    const key = hashFiles(files, { v: BUILDER_VERSION });
    segments.push(cachedSegment(segDir, "tsvs", key, () => gzipSync(cpioOfFiles(files, {}, []), { level: 6 })));
  }
  const key = sha256(JSON.stringify(segments)).slice(0, 16);
  const initrd = path.join(segDir, `initrd-${key}`);
  if (!fs.existsSync(initrd)) {
    const tmp = `${initrd}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, "w");
    try {
      let off = 0;
      for (const s of segments) {
        fs.writeSync(fd, pad4(off));
        off += pad4(off).length;
        const b = fs.readFileSync(s);
        fs.writeSync(fd, b);
        off += b.length;
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, initrd);
    pruneInitrds(segDir, initrd);
  }
  const bytes = fs.statSync(initrd).size;
  const mib = Math.ceil(bytes / 1048576);
  return {
    ...base,
    initrd,
    initrdBytes: bytes,
    kernelArgs: [`hugepages=${r.hugepages}`, "init_on_alloc=0"],
    cpu: "max",
    // hugepages + the initramfs twice while it unpacks (file + rootfs) + room for the kernel and programs
    minMemoryMiB: Math.max(512, Math.ceil((r.hugepages * 2 + 2 * mib + 256) / 128) * 128),
    variant: { pmd: r.pmd, node: r.node, dpdk: r.dpdk, hugepages: r.hugepages },
  };
}

/** Combined initrds are rebuilt whenever dist/ changes: drop ones unused for an hour. */
function pruneInitrds(dir: string, keep: string): void {
  const now = Date.now();
  for (const f of fs.readdirSync(dir)) {
    const p = path.join(dir, f);
    if (p === keep || !/^(initrd|tsvs)-[0-9a-f]{16}$/.test(f)) continue;
    try {
      if (now - fs.statSync(p).atimeMs > 3600_000 && now - fs.statSync(p).mtimeMs > 3600_000) fs.rmSync(p, { force: true });
    } catch { /* raced with another pruner */ }
  }
}
