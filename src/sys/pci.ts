/**
 * PCI devices through sysfs (/sys/bus/pci): what a userspace driver needs.
 *
 *  - config space: the `config` file (read, and the command register written
 *    to enable memory decoding and bus mastering), the capability list walk;
 *  - BARs: the `resourceN` files, mmapped MAP_SHARED (memory BARs only);
 *  - binding: which kernel driver owns the device, and the driver_override /
 *    unbind / drivers_probe dance that hands it to another one (e.g. from
 *    virtio-pci to uio_pci_generic and back), with clear errors.
 *
 * Root is needed for all of it but listing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as libc from './libc.js';

export const PCI_SYSFS = '/sys/bus/pci';

// config space offsets (PCI local bus spec, type 0 header)
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_CAP_ID_VNDR = 0x09;

/** IORESOURCE_MEM in the flags column of the `resource` file. */
const IORESOURCE_MEM = 0x200;

export class PciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PciError';
  }
}

const ADDR_RE = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;

/** "00:02.0" or "0000:00:02.0" -> "0000:00:02.0"; throws on anything else. */
export function normalizePciAddr(s: string): string {
  const m = ADDR_RE.exec(s.trim());
  if (!m) throw new PciError(`'${s}' is not a PCI address (DDDD:BB:DD.F, e.g. 0000:00:02.0)`);
  return `${(m[1] ?? '0000').toLowerCase()}:${m[2].toLowerCase()}:${m[3].toLowerCase()}.${m[4]}`;
}

/** One entry of the capability list. */
export interface PciCap {
  /** Capability ID (e.g. 0x09 vendor specific). */
  id: number;
  /** Offset of the capability in config space. */
  off: number;
}

/**
 * Walk the capability list of a config space image. Bad pointers (outside
 * the 256-byte standard space, below the header, a loop) end the walk with
 * an error rather than an endless loop.
 */
export function walkCapabilities(cfg: Uint8Array): PciCap[] {
  if (cfg.length < 64) throw new PciError(`config space image of ${cfg.length} bytes is shorter than the 64-byte header`);
  const out: PciCap[] = [];
  const status = cfg[PCI_STATUS] | (cfg[PCI_STATUS + 1] << 8);
  if ((status & PCI_STATUS_CAP_LIST) === 0) return out;
  let off = cfg[PCI_CAPABILITY_LIST] & 0xfc;
  const seen = new Set<number>();
  while (off !== 0) {
    if (off < 0x40 || off + 2 > Math.min(cfg.length, 256)) throw new PciError(`capability pointer 0x${off.toString(16)} is outside config space`);
    if (seen.has(off)) throw new PciError(`capability list loops at 0x${off.toString(16)}`);
    seen.add(off);
    out.push({ id: cfg[off], off });
    off = cfg[off + 1] & 0xfc;
  }
  return out;
}

export interface PciBar {
  index: number;
  /** Virtual address of the mapping. */
  addr: number;
  size: number;
  /** The mapping as an ArrayBuffer (typed-array accesses have the array's width: use them for registers). */
  buffer: ArrayBuffer;
}

/** sysfs directory of a device. */
export function pciDevDir(addr: string, root = PCI_SYSFS): string {
  return path.join(root, 'devices', addr);
}

function readText(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
}

export interface PciDeviceInfo {
  addr: string;
  vendor: number;
  device: number;
  /** 24-bit class code, e.g. 0x020000 Ethernet. */
  classCode: number;
  /** Bound kernel driver (e.g. 'virtio-pci', 'uio_pci_generic'), or null. */
  driver: string | null;
  /** driver_override, or null when unset. */
  override: string | null;
  /** Kernel network interfaces of the device (through virtio-pci: virtioN/net/ethX). */
  ifaces: string[];
}

/** What sysfs says about one device. */
export function pciDeviceInfo(addr: string, root = PCI_SYSFS): PciDeviceInfo {
  const a = normalizePciAddr(addr);
  const dir = pciDevDir(a, root);
  if (!fs.existsSync(dir)) throw new PciError(`no PCI device ${a} (nothing at ${dir}; see \`tsvs pci-list\`)`);
  const num = (f: string): number => parseInt(readText(path.join(dir, f)) ?? '0', 16);
  let driver: string | null = null;
  try {
    driver = path.basename(fs.readlinkSync(path.join(dir, 'driver')));
  } catch {
    /* unbound */
  }
  const ov = readText(path.join(dir, 'driver_override'));
  const ifaces: string[] = [];
  const netDirs = [path.join(dir, 'net')];
  try {
    for (const e of fs.readdirSync(dir)) if (/^virtio\d+$/.test(e)) netDirs.push(path.join(dir, e, 'net'));
  } catch {
    /* unreadable */
  }
  for (const d of netDirs) {
    try {
      ifaces.push(...fs.readdirSync(d));
    } catch {
      /* none */
    }
  }
  return {
    addr: a,
    vendor: num('vendor'),
    device: num('device'),
    classCode: num('class'),
    driver,
    override: ov === null || ov === '(null)' || ov === '' ? null : ov,
    ifaces,
  };
}

/** Every PCI device sysfs knows (sorted by address). */
export function listPciDevices(root = PCI_SYSFS): PciDeviceInfo[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(root, 'devices'));
  } catch (e) {
    throw new PciError(`cannot list ${path.join(root, 'devices')}: ${(e as Error).message}`);
  }
  return names.filter((n) => ADDR_RE.test(n)).sort().map((n) => pciDeviceInfo(n, root));
}

/** An open device: config space and BARs, for a userspace driver. */
export class PciDevice {
  readonly addr: string;
  readonly dir: string;
  private cfgFd: number;
  private readonly bars = new Map<number, { addr: number; size: number }>();

  constructor(addr: string, root = PCI_SYSFS) {
    this.addr = normalizePciAddr(addr);
    this.dir = pciDevDir(this.addr, root);
    if (!fs.existsSync(this.dir)) throw new PciError(`no PCI device ${this.addr} (nothing at ${this.dir})`);
    try {
      this.cfgFd = fs.openSync(path.join(this.dir, 'config'), 'r+');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new PciError(`cannot open the config space of ${this.addr} (${code}): ${code === 'EACCES' ? 'run as root' : (e as Error).message}`);
    }
  }

  /** A copy of config space (256 bytes, or 4096 for PCIe). */
  readConfig(): Uint8Array {
    const b = Buffer.alloc(4096);
    const n = fs.readSync(this.cfgFd, b, 0, b.length, 0);
    if (n < 64) throw new PciError(`config space of ${this.addr}: read ${n} bytes (not root?)`);
    return new Uint8Array(b.buffer, b.byteOffset, n);
  }

  readConfig16(off: number): number {
    const b = Buffer.alloc(2);
    if (fs.readSync(this.cfgFd, b, 0, 2, off) !== 2) throw new PciError(`config read at 0x${off.toString(16)} of ${this.addr} failed`);
    return b.readUInt16LE(0);
  }

  writeConfig16(off: number, v: number): void {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v & 0xffff, 0);
    if (fs.writeSync(this.cfgFd, b, 0, 2, off) !== 2) throw new PciError(`config write at 0x${off.toString(16)} of ${this.addr} failed`);
  }

  /**
   * Turn on memory decoding and bus mastering in the command register (the
   * device may then DMA into our memory; uio_pci_generic leaves mastering off).
   */
  enableBusMaster(): void {
    const cmd = this.readConfig16(PCI_COMMAND);
    const want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    if (want !== cmd) this.writeConfig16(PCI_COMMAND, want);
  }

  /** Turn bus mastering off (no more DMA). */
  disableBusMaster(): void {
    const cmd = this.readConfig16(PCI_COMMAND);
    if (cmd & PCI_COMMAND_MASTER) this.writeConfig16(PCI_COMMAND, cmd & ~PCI_COMMAND_MASTER);
  }

  /** Is BAR i a memory BAR with a non-zero size (from the `resource` file)? */
  barIsMemory(i: number): boolean {
    const lines = (readText(path.join(this.dir, 'resource')) ?? '').split('\n');
    const f = lines[i]?.trim().split(/\s+/);
    if (!f || f.length < 3) return false;
    const start = BigInt(f[0]);
    const end = BigInt(f[1]);
    const flags = Number(BigInt(f[2]));
    return (flags & IORESOURCE_MEM) !== 0 && end > start;
  }

  /** Map BAR i (MAP_SHARED through `resourceI`); the same mapping is returned again for the same BAR. */
  mapBar(i: number): PciBar {
    if (!Number.isInteger(i) || i < 0 || i > 5) throw new PciError(`BAR ${i} does not exist (0..5)`);
    const have = this.bars.get(i);
    if (have) return { index: i, addr: have.addr, size: have.size, buffer: libc.view(have.addr, have.size) };
    if (!this.barIsMemory(i)) throw new PciError(`BAR ${i} of ${this.addr} is not a memory BAR (cannot be mapped)`);
    const p = path.join(this.dir, `resource${i}`);
    let fd: number;
    try {
      fd = fs.openSync(p, 'r+');
    } catch (e) {
      throw new PciError(`cannot open ${p}: ${(e as Error).message}`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (!(size > 0)) throw new PciError(`${p} has size ${size}`);
      const addr = libc.mmap(fd, size, 0);
      this.bars.set(i, { addr, size });
      return { index: i, addr, size, buffer: libc.view(addr, size) };
    } finally {
      fs.closeSync(fd); // the mapping stays
    }
  }

  /** Unmap every BAR and close config space. Views of the BARs must no longer be used. */
  close(): void {
    for (const b of this.bars.values()) libc.munmap(b.addr, b.size);
    this.bars.clear();
    if (this.cfgFd >= 0) fs.closeSync(this.cfgFd);
    this.cfgFd = -1;
  }
}

// ------------------------------------------------------------------ binding

/** Drivers `tsvs pci-bind` knows how to hand a virtio NIC to. */
export const BIND_DRIVERS = ['uio_pci_generic', 'vfio-pci', 'virtio-pci'] as const;
export type BindDriver = (typeof BIND_DRIVERS)[number];

export interface BindOptions {
  /** Bind even when the kernel interface is up / hugepages are missing. */
  force?: boolean;
  root?: string;
  /** Where processes are listed (tests); default /proc. */
  proc?: string;
  /** /proc/meminfo path. */
  meminfo?: string;
}

export interface BindResult {
  addr: string;
  from: string | null;
  to: string;
  /** Nothing to do: already bound to that driver. */
  unchanged: boolean;
  warnings: string[];
}

/** Free and total 2 MiB hugepages from /proc/meminfo. */
export function hugepageCounts(meminfo = '/proc/meminfo'): { total: number; free: number } {
  const t = readText(meminfo) ?? '';
  const g = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)?.[1] ?? 0);
  return { total: g('HugePages_Total'), free: g('HugePages_Free') };
}

/** Processes that have the device open (its /dev/uioN or vfio group) or its BARs mapped. */
export function pciUsers(addr: string, opts: { root?: string; proc?: string } = {}): string[] {
  const dir = fs.realpathSync(pciDevDir(addr, opts.root));
  const proc = opts.proc ?? '/proc';
  const devs: string[] = [];
  try {
    for (const u of fs.readdirSync(path.join(dir, 'uio'))) devs.push(`/dev/${u}`);
  } catch {
    /* not uio */
  }
  const users: string[] = [];
  let pids: string[] = [];
  try {
    pids = fs.readdirSync(proc).filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return users;
  }
  for (const pid of pids) {
    let hit = false;
    try {
      const maps = fs.readFileSync(path.join(proc, pid, 'maps'), 'utf8');
      if (maps.includes(`${dir}/resource`)) hit = true;
    } catch {
      /* gone or hidden */
    }
    if (!hit && devs.length > 0) {
      try {
        for (const fd of fs.readdirSync(path.join(proc, pid, 'fd'))) {
          let t = '';
          try {
            t = fs.readlinkSync(path.join(proc, pid, 'fd', fd));
          } catch {
            continue;
          }
          if (devs.includes(t)) {
            hit = true;
            break;
          }
        }
      } catch {
        /* gone */
      }
    }
    if (hit) {
      const comm = readText(path.join(proc, pid, 'comm')) ?? '?';
      users.push(`${pid} (${comm})`);
    }
  }
  return users;
}

function sysWrite(p: string, v: string, what: string): void {
  try {
    fs.writeFileSync(p, v);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const hint = code === 'EACCES' || code === 'EPERM' ? ': run as root' : code === 'ENODEV' ? ': the driver refused the device (see dmesg)' : '';
    throw new PciError(`${what} failed (${code ?? (e as Error).message})${hint}`);
  }
}

/**
 * Hand device `addr` to kernel driver `to`: unbind it from its current
 * driver, set driver_override, ask the kernel to probe, check the result,
 * clear driver_override. Refuses (PciError) when not root, the device does
 * not exist, the driver is not loaded, the device is in use (a kernel
 * interface of it is up, or a process has it open), or, for a userspace
 * driver, no hugepages are reserved (force skips the last two checks).
 */
export function bindPciDevice(addr: string, to: BindDriver, opts: BindOptions = {}): BindResult {
  const root = opts.root ?? PCI_SYSFS;
  if (!(BIND_DRIVERS as readonly string[]).includes(to)) throw new PciError(`unknown driver '${to}' (one of ${BIND_DRIVERS.join(', ')})`);
  if (opts.root === undefined && typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new PciError('binding a PCI device needs root (it writes to /sys/bus/pci)');
  }
  const info = pciDeviceInfo(addr, root);
  const a = info.addr;
  const warnings: string[] = [];
  if (info.driver === to) return { addr: a, from: info.driver, to, unchanged: true, warnings };
  const drvDir = path.join(root, 'drivers', to);
  if (!fs.existsSync(drvDir)) {
    const mod = to.replace(/-/g, '_');
    throw new PciError(`driver ${to} is not loaded: \`modprobe ${mod}\` first (module ${mod}.ko)`);
  }
  const userspace = to !== 'virtio-pci';
  if (userspace && !opts.force) {
    const hp = hugepageCounts(opts.meminfo);
    if (hp.total === 0) {
      throw new PciError(
        'no 2 MiB hugepages are reserved, which a userspace driver needs for its rings and buffers: ' +
          '`echo 256 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` (or hugepages=256 on the kernel command line), or --force',
      );
    }
  }
  if (info.driver !== null && !opts.force) {
    // in use by the kernel: an interface of it is up
    for (const ifc of info.ifaces) {
      const flags = parseInt(readText(`/sys/class/net/${ifc}/flags`) ?? '0', 16);
      if (flags & 1) throw new PciError(`${a} is in use: its interface ${ifc} is up (\`ip link set ${ifc} down\` first, or --force)`);
    }
    // in use by a userspace driver
    const users = pciUsers(a, { root, proc: opts.proc });
    if (users.length > 0) throw new PciError(`${a} is in use by process ${users.join(', ')} (stop it first, or --force)`);
  }
  const dev = pciDevDir(a, root);
  if (info.driver !== null) sysWrite(path.join(dev, 'driver', 'unbind'), a, `unbinding ${a} from ${info.driver}`);
  sysWrite(path.join(dev, 'driver_override'), to, `setting driver_override of ${a}`);
  try {
    sysWrite(path.join(root, 'drivers_probe'), a, `probing ${a} for ${to}`);
  } finally {
    // a later rescan or hotplug should not stay pinned to this driver
    try {
      fs.writeFileSync(path.join(dev, 'driver_override'), '\n');
    } catch {
      /* best effort */
    }
  }
  const now = pciDeviceInfo(a, root).driver;
  if (now !== to) {
    throw new PciError(`${a} is bound to ${now ?? 'no driver'} after probing, not ${to} (see dmesg)`);
  }
  return { addr: a, from: info.driver, to, unchanged: false, warnings };
}
