/**
 * virtio-pci port: our virtio-net driver on a real (virtual) PCI device, from
 * userspace, as DPDK's net_virtio does inside a VM: the guest kernel is
 * bypassed, the device is polled, no interrupts.
 *
 * Transport (virtio 1.2 §4.1, modern only): the vendor capabilities in config
 * space locate the common configuration, notification, ISR and device
 * configuration structures in the BARs (src/virtio/pci.ts); the BARs are
 * mmapped through sysfs `resourceN` (src/sys/pci.ts) and their registers
 * accessed with typed arrays of the register's width. The device must be
 * bound to uio_pci_generic (or to no driver): `tsvs pci-bind ADDR uio_pci_generic`.
 *
 * Memory: the device does DMA to physical addresses, so the rings and the
 * mempool live in 2 MiB hugepages (SharedRegion/Mempool `hugepages`), and
 * each buffer's physical address is looked up once in /proc/self/pagemap
 * (src/mem/iova.ts); a buffer may not straddle two pages that are not
 * physically adjacent (use a pool bufSize whose stride divides 2 MiB: 2048).
 * The virtio driver queues of src/virtio run unchanged over that physical
 * address space; the burst data path is VirtioNetPort's, shared with
 * virtio-user.
 *
 * Start-up (§3.1.1): reset and wait for status 0, ACKNOWLEDGE, DRIVER,
 * features (VERSION_1 required; MAC, STATUS, MRG_RXBUF, RING_PACKED when
 * asked, IN_ORDER and ACCESS_PLATFORM when offered), FEATURES_OK checked,
 * queue 0 (RX) and 1 (TX) set up and enabled, RX ring filled, bus mastering
 * on, DRIVER_OK.
 *
 * Link and recovery: a timer (linkPollMs) reads the device status and the
 * net status word. Link down (the host side went away: QEMU clears LINK_UP
 * when its vhost-user backend disconnects) takes the port down; when the link
 * comes back the device is reset and set up again from scratch, so whatever
 * the host side lost is forgotten on both sides. DEVICE_NEEDS_RESET, or a
 * queue the device broke (bad used entry), triggers the same reinitialisation.
 *
 * Where it runs: in the PMD worker that polls the port (the daemon) or the guest process that
 * opened it.
 */
import type { LinkState } from './port.js';
import { VirtioNetPort } from './virtio-net-port.js';
import { Mempool, DEFAULT_HEADROOM } from '../mem/mempool.js';
import { SharedRegion, HUGE_PAGE_SIZE } from '../mem/region.js';
import { IovaMap } from '../mem/iova.js';
import { PciDevice, PciError, pciDeviceInfo, normalizePciAddr } from '../sys/pci.js';
import { Pagemap } from '../sys/pagemap.js';
import type { Logger } from '../vhost/connection.js';
import {
  createDriverQueue,
  type DriverQueue,
  vringSize,
  vringLayout,
  packedVringSize,
  packedLayout,
  F_VERSION_1,
  F_RING_PACKED,
  F_IN_ORDER,
  F_ACCESS_PLATFORM,
  NET_F_MAC,
  NET_F_STATUS,
  NET_F_MRG_RXBUF,
  netHdrLen,
  featureNames,
} from '../virtio/index.js';
import {
  parseVirtioPciCaps,
  type VirtioPciLayout,
  COMMON,
  NET_CFG,
  NET_S_LINK_UP,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_FAILED,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_VENDOR,
} from '../virtio/pci.js';

export interface VirtioPciOptions {
  /** PCI address of the virtio-net device, e.g. 0000:00:02.0. */
  addr: string;
  /** Port name (default 'virtio-pci0'). */
  name?: string;
  /** Packed rings (default false: split); the device must offer them (QEMU: packed=on). */
  packed?: boolean;
  /** Negotiate MRG_RXBUF when offered (default true). */
  mrgRxbuf?: boolean;
  /** Ring size (default 256; at most what the device offers). */
  queueSize?: number;
  /** Use this pool (hugepage-backed, must outlive the port); default: the port creates its own. */
  pool?: Mempool;
  /** Buffers in the port's own pool (default 4096). */
  poolSize?: number;
  /** How often the link and device status are read (default 100 ms). */
  linkPollMs?: number;
  logger?: Logger;
}

/** Pool buffers for PCI ports: 2048-byte stride divides a 2 MiB page (frames up to 1920 bytes). */
export const PCI_BUF_SIZE = 2048;

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/** Sleep without an event loop (control path: device reset polling). */
function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export class VirtioPciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtioPciError';
  }
}

/** The registers of one mapped virtio-pci device (common cfg, notify, ISR, device cfg). */
class Registers {
  private readonly c8: Uint8Array;
  private readonly c16: Uint16Array;
  private readonly c32: Uint32Array;
  private readonly n16: Uint16Array;
  private readonly d8: Uint8Array | null;
  private readonly d16: Uint16Array | null;
  private readonly cBase: number;
  private readonly nBase: number;
  private readonly nMult: number;
  private readonly dBase: number;

  constructor(dev: PciDevice, l: VirtioPciLayout) {
    const bar = (i: number, off: number, len: number, what: string): ArrayBuffer => {
      const b = dev.mapBar(i);
      if (off + len > b.size) throw new VirtioPciError(`${what} at BAR${i}+0x${off.toString(16)} (+${len}) is outside the ${b.size}-byte BAR`);
      if (off % 4 !== 0) throw new VirtioPciError(`${what} at BAR${i}+0x${off.toString(16)} is not 4-byte aligned`);
      return b.buffer;
    };
    const cb = bar(l.common.bar, l.common.offset, l.common.length, 'common configuration');
    this.c8 = new Uint8Array(cb);
    this.c16 = new Uint16Array(cb);
    this.c32 = new Uint32Array(cb);
    this.cBase = l.common.offset;
    const nb = bar(l.notify.bar, l.notify.offset, l.notify.length, 'notification area');
    this.n16 = new Uint16Array(nb);
    this.nBase = l.notify.offset;
    this.nMult = l.notify.multiplier;
    if (l.device) {
      const db = bar(l.device.bar, l.device.offset, l.device.length, 'device configuration');
      this.d8 = new Uint8Array(db);
      this.d16 = new Uint16Array(db);
      this.dBase = l.device.offset;
    } else {
      this.d8 = null;
      this.d16 = null;
      this.dBase = 0;
    }
  }

  r8(f: number): number {
    return this.c8[this.cBase + f];
  }
  w8(f: number, v: number): void {
    this.c8[this.cBase + f] = v;
  }
  r16(f: number): number {
    return this.c16[(this.cBase + f) >> 1];
  }
  w16(f: number, v: number): void {
    this.c16[(this.cBase + f) >> 1] = v;
  }
  r32(f: number): number {
    return this.c32[(this.cBase + f) >> 2];
  }
  w32(f: number, v: number): void {
    this.c32[(this.cBase + f) >> 2] = v;
  }
  w64(f: number, v: number): void {
    this.w32(f, v >>> 0);
    this.w32(f + 4, Math.floor(v / 0x100000000) >>> 0);
  }

  get status(): number {
    return this.r8(COMMON.DEVICE_STATUS);
  }
  set status(v: number) {
    this.w8(COMMON.DEVICE_STATUS, v);
  }

  /** Index into the notify area (u16 units) for a queue's notify offset. */
  notifyIndex(notifyOff: number): number {
    return (this.nBase + notifyOff * this.nMult) >> 1;
  }
  notify(index: number, vq: number): void {
    this.n16[index] = vq;
  }

  /** Device config reads, consistent across config_generation (§4.1.4.3.1). */
  devCfg<T>(read: (d8: Uint8Array, d16: Uint16Array, base: number) => T): T | null {
    if (this.d8 === null || this.d16 === null) return null;
    for (let i = 0; i < 16; i++) {
      const g = this.r8(COMMON.CONFIG_GENERATION);
      const v = read(this.d8, this.d16, this.dBase);
      if (this.r8(COMMON.CONFIG_GENERATION) === g) return v;
    }
    throw new VirtioPciError('device configuration keeps changing (config_generation)');
  }
}

export class VirtioPciPort extends VirtioNetPort {
  readonly type = 'virtio-pci';
  readonly addr: string;
  /** MAC address from the device configuration (NET_F_MAC), else all zero. */
  readonly mac = new Uint8Array(6);
  /** Negotiated features (0n until the first start). */
  features = 0n;
  /** Ring size in use. */
  queueSize = 0;
  /** Times the device was reset and set up again after a link loss or a device error. */
  reinits = 0;
  /** The last start-up or recovery error, if any. */
  lastError = '';

  private readonly o: VirtioPciOptions;
  private readonly dev: PciDevice;
  private readonly regs: Registers;
  private readonly rings: SharedRegion;
  private readonly iova: IovaMap;
  private readonly vqStride: number;
  private readonly notifyAt = new Int32Array(2);
  private hasStatus = false;
  /** The link was seen up since the last start (a later down means the host side restarted). */
  private seenUp = false;
  private needReinit = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(o: VirtioPciOptions) {
    const addr = normalizePciAddr(o.addr);
    const name = o.name ?? 'virtio-pci0';
    const pool = o.pool ?? Mempool.create({ name, count: o.poolSize ?? 4096, bufSize: PCI_BUF_SIZE, headroom: DEFAULT_HEADROOM, hugepages: true });
    try {
      super(name, 1, pool, !o.pool);
    } catch (e) {
      if (!o.pool) pool.close();
      throw e;
    }
    this.o = o;
    this.addr = addr;
    let dev: PciDevice | null = null;
    let rings: SharedRegion | null = null;
    try {
      const info = pciDeviceInfo(addr);
      if (info.vendor !== VIRTIO_PCI_VENDOR || (info.device !== 0x1000 && info.device !== 0x1041)) {
        throw new VirtioPciError(`${addr} is not a virtio-net device (id ${info.vendor.toString(16)}:${info.device.toString(16)})`);
      }
      if (info.driver !== null && info.driver !== 'uio_pci_generic') {
        throw new VirtioPciError(`${addr} is bound to the kernel driver ${info.driver}: \`tsvs pci-bind ${addr} uio_pci_generic\` first`);
      }
      if (!pool.region.hugepages) {
        throw new VirtioPciError(`the mempool of ${name} is not in hugepages: create it with Mempool.create({ hugepages: true, bufSize: ${PCI_BUF_SIZE} })`);
      }
      dev = new PciDevice(addr);
      const layout = parseVirtioPciCaps(dev.readConfig());
      this.regs = new Registers(dev, layout);
      // one slot per virtqueue (RX, TX), big enough for either ring kind, in one hugepage
      const qs = o.queueSize ?? 256;
      this.vqStride = alignUp(Math.max(vringSize(qs), packedVringSize(qs)), 4096);
      rings = SharedRegion.create(`tsvs-virtio-pci-${name}`, Math.max(2 * this.vqStride, HUGE_PAGE_SIZE), { hugepages: true });
      const pm = new Pagemap();
      try {
        this.iova = IovaMap.build([rings, pool.region], pm);
      } finally {
        pm.close();
      }
      for (let h = 0; h < pool.count; h++) {
        const a = this.iova.iova(pool.bufAddr(h), pool.bufSize);
        if (a < 0) {
          throw new VirtioPciError(
            `pool buffer ${h} straddles two hugepages that are not physically adjacent: use a bufSize whose 64-byte-aligned stride divides 2 MiB (e.g. ${PCI_BUF_SIZE})`,
          );
        }
        this.bufIova[h] = a;
      }
      this.dev = dev;
      this.rings = rings;
      this.start();
    } catch (e) {
      try {
        if (dev) {
          const regs = (this as unknown as { regs?: Registers }).regs;
          if (regs) regs.status = 0;
          dev.close();
        }
      } catch {
        /* best effort */
      }
      rings?.close();
      if (this.ownsPool) this.pool.close();
      throw e;
    }
    const ms = o.linkPollMs ?? 100;
    this.timer = setInterval(() => this.watch(), ms);
    this.timer.unref();
  }

  get link(): LinkState {
    return this.active ? 'up' : 'down';
  }

  get nQueues(): number {
    return this.active ? this.nq : 1;
  }

  get status(): string {
    if (this.closed) return 'closed';
    if (this.active) return this.queueStatus();
    if (this.lastError) return `down: ${this.lastError}`;
    return this.nq > 0 ? 'down: link down (host side not connected)' : 'down';
  }

  private log(level: 'debug' | 'info' | 'warn' | 'error', msg: string): void {
    this.o.logger?.log(level, `${this.name} (${this.addr}): ${msg}`);
  }

  protected notify(vq: number): void {
    this.regs.notify(this.notifyAt[vq], vq);
  }

  private resetDevice(): void {
    const r = this.regs;
    r.status = 0;
    const end = Date.now() + 2000;
    while (r.status !== 0) {
      if (Date.now() > end) throw new VirtioPciError('device did not finish its reset (status stays non-zero)');
      sleepMs(1);
    }
  }

  /** Reset, negotiate, set up both queues, DRIVER_OK (throws VirtioPciError). */
  private start(): void {
    const r = this.regs;
    // reset first: the device stops using the old rings and buffers, then they go back to the pool
    this.resetDevice();
    this.dropQueues();
    this.nq = 0;
    r.status = STATUS_ACKNOWLEDGE;
    r.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
    r.w32(COMMON.DEVICE_FEATURE_SELECT, 0);
    const lo = r.r32(COMMON.DEVICE_FEATURE);
    r.w32(COMMON.DEVICE_FEATURE_SELECT, 1);
    const hi = r.r32(COMMON.DEVICE_FEATURE);
    const offered = (BigInt(hi) << 32n) | BigInt(lo);
    let want = F_VERSION_1 | NET_F_MAC | NET_F_STATUS | F_IN_ORDER | F_ACCESS_PLATFORM;
    if (this.o.mrgRxbuf ?? true) want |= NET_F_MRG_RXBUF;
    if (this.o.packed) want |= F_RING_PACKED;
    const f = offered & want;
    const fail = (msg: string): never => {
      r.status = r.status | STATUS_FAILED;
      throw new VirtioPciError(msg);
    };
    if ((f & F_VERSION_1) === 0n) fail('the device does not offer VERSION_1 (a legacy-only device; modern virtio-pci is needed)');
    if (this.o.packed && (f & F_RING_PACKED) === 0n) fail('packed rings asked for, but the device does not offer RING_PACKED (QEMU: packed=on on the virtio-net-pci device)');
    r.w32(COMMON.DRIVER_FEATURE_SELECT, 0);
    r.w32(COMMON.DRIVER_FEATURE, Number(f & 0xffffffffn));
    r.w32(COMMON.DRIVER_FEATURE_SELECT, 1);
    r.w32(COMMON.DRIVER_FEATURE, Number(f >> 32n));
    r.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    if ((r.status & STATUS_FEATURES_OK) === 0) fail(`the device refused features ${featureNames(f).join(' ')}`);
    this.features = f;
    this.hasStatus = (f & NET_F_STATUS) !== 0n;
    if ((f & NET_F_MAC) !== 0n) {
      const mac = r.devCfg((d8, _d16, b) => d8.slice(b + NET_CFG.MAC, b + NET_CFG.MAC + 6));
      if (mac) this.mac.set(mac);
    }
    if (r.r16(COMMON.NUM_QUEUES) < 2) fail('the device has fewer than 2 virtqueues');
    const packed = (f & F_RING_PACKED) !== 0n;
    const rxq: DriverQueue[] = [];
    const txq: DriverQueue[] = [];
    for (let vq = 0; vq < 2; vq++) {
      r.w16(COMMON.QUEUE_SELECT, vq);
      const max = r.r16(COMMON.QUEUE_SIZE);
      if (max === 0) fail(`virtqueue ${vq} is not available`);
      let qs = Math.min(this.o.queueSize ?? 256, max);
      if (!packed) qs = 1 << Math.floor(Math.log2(qs)); // split rings: a power of 2
      const base = this.rings.addr + vq * this.vqStride;
      const va = packed ? packedLayout(base, qs) : vringLayout(base, qs);
      const len = packed ? packedVringSize(qs) : vringSize(qs);
      const io = this.iova.iova(base, len);
      if (io < 0) fail('virtqueue memory is not physically contiguous');
      const dev = io - base; // same page: one offset for the three areas
      const descAddr = va.descAddr + dev;
      const availAddr = ('availAddr' in va ? va.availAddr : va.driverEventAddr) + dev;
      const usedAddr = ('usedAddr' in va ? va.usedAddr : va.deviceEventAddr) + dev;
      const q = createDriverQueue(this.iova.mem, { size: qs, features: f, descAddr, availAddr, usedAddr });
      q.setInterrupts(false); // we poll
      r.w16(COMMON.QUEUE_SIZE, qs);
      r.w16(COMMON.QUEUE_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR);
      r.w64(COMMON.QUEUE_DESC, descAddr);
      r.w64(COMMON.QUEUE_DRIVER, availAddr);
      r.w64(COMMON.QUEUE_DEVICE, usedAddr);
      this.notifyAt[vq] = this.regs.notifyIndex(r.r16(COMMON.QUEUE_NOTIFY_OFF));
      r.w16(COMMON.QUEUE_ENABLE, 1);
      (vq === 0 ? rxq : txq).push(q);
      this.queueSize = qs;
    }
    // RX ring full before the device runs
    this.installQueues(rxq, txq, netHdrLen(f));
    this.dev.enableBusMaster();
    r.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
    if (r.status & (STATUS_DEVICE_NEEDS_RESET | STATUS_FAILED)) throw new VirtioPciError(`the device failed at DRIVER_OK (status 0x${r.status.toString(16)})`);
    this.notify(0);
    this.seenUp = false;
    this.needReinit = false;
    this.lastError = '';
    this.log('info', `started: ${packed ? 'packed' : 'split'} rings of ${this.queueSize}, features ${featureNames(f).join(' ')}`);
    this.updateLink();
  }

  private linkUp(): boolean {
    if (!this.hasStatus) return true;
    return ((this.regs.devCfg((_d8, d16, b) => d16[(b + NET_CFG.STATUS) >> 1]) ?? NET_S_LINK_UP) & NET_S_LINK_UP) !== 0;
  }

  /** Follow the link: up -> active; down after up -> recover when it comes back. */
  private updateLink(): void {
    const up = this.linkUp();
    if (up && !this.active) {
      if (this.needReinit) {
        this.reinit('link back up');
        return;
      }
      this.active = true;
      this.seenUp = true;
      this.notify(0);
      this.log('info', 'link up');
    } else if (!up && this.active) {
      this.active = false;
      if (this.seenUp) this.needReinit = true;
      this.log('warn', 'link down (host side gone): will reinitialise the device when it comes back');
    }
  }

  private reinit(why: string): void {
    this.log('warn', `reinitialising the device: ${why}`);
    this.reinits++;
    try {
      this.start();
    } catch (e) {
      this.lastError = (e as Error).message;
      this.needReinit = true;
      this.active = false;
      this.log('error', `reinitialisation failed: ${this.lastError}`);
    }
  }

  /** Timer: device status, queue health, link. */
  private watch(): void {
    if (this.closed) return;
    try {
      const st = this.regs.status;
      if ((st & STATUS_DEVICE_NEEDS_RESET) !== 0 || (st & STATUS_DRIVER_OK) === 0) {
        this.active = false;
        this.reinit(st & STATUS_DEVICE_NEEDS_RESET ? 'DEVICE_NEEDS_RESET' : `device status 0x${st.toString(16)} lost DRIVER_OK`);
        return;
      }
      if (this.active && [...this.rxq, ...this.txq].some((d) => d.broken)) {
        this.active = false;
        this.reinit('a queue is broken (bad used entry)');
        return;
      }
      this.updateLink();
    } catch (e) {
      this.lastError = (e as Error).message;
      this.active = false;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    try {
      this.regs.status = 0; // the device stops using our memory
      this.dev.disableBusMaster();
    } catch {
      /* device gone */
    }
    this.dropQueues();
    this.dev.close();
    this.rings.close();
    if (this.ownsPool) this.pool.close();
  }
}

export { PciError };
