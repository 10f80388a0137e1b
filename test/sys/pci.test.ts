/**
 * PCI config space and virtio capability parsing on synthetic config-space
 * images (laid out as QEMU's virtio-net-pci), PCI addresses, and the binding
 * errors that need no device (no such device, driver not loaded, no
 * hugepages) on a sysfs-shaped temp tree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { walkCapabilities, normalizePciAddr, bindPciDevice, hugepageCounts, pciDeviceInfo, PciError } from '../../src/sys/pci.js';
import { parseVirtioPciCaps, VirtioPciError } from '../../src/virtio/pci.js';

function vcap(cfg: Uint8Array, off: number, next: number, type: number, bar: number, offset: number, length: number, mult?: number): void {
  const dv = new DataView(cfg.buffer);
  cfg[off] = 0x09;
  cfg[off + 1] = next;
  cfg[off + 2] = mult === undefined ? 16 : 20;
  cfg[off + 3] = type;
  cfg[off + 4] = bar;
  dv.setUint32(off + 8, offset, true);
  dv.setUint32(off + 12, length, true);
  if (mult !== undefined) dv.setUint32(off + 16, mult, true);
}

/** QEMU 7.2 virtio-net-pci (modern part): MSI-X cap, then common, ISR, device, notify, pci_cfg in BAR4. */
function qemuLikeConfig(): Uint8Array {
  const cfg = new Uint8Array(256);
  const dv = new DataView(cfg.buffer);
  dv.setUint16(0, 0x1af4, true);
  dv.setUint16(2, 0x1000, true);
  dv.setUint16(6, 0x10, true); // status: capability list
  cfg[0x34] = 0x98;
  cfg[0x98] = 0x11; // MSI-X
  cfg[0x99] = 0x84;
  vcap(cfg, 0x84, 0x70, 1, 4, 0x0000, 0x1000); // common
  vcap(cfg, 0x70, 0x60, 3, 4, 0x1000, 0x1000); // ISR
  vcap(cfg, 0x60, 0x48, 4, 4, 0x2000, 0x1000); // device
  vcap(cfg, 0x48, 0xb0, 2, 4, 0x3000, 0x1000, 4); // notify (20 bytes)
  vcap(cfg, 0xb0, 0x00, 5, 0, 0, 0); // pci_cfg access
  return cfg;
}

test('capability walk and virtio structures of a QEMU-like virtio-net-pci config space', () => {
  const cfg = qemuLikeConfig();
  assert.deepEqual(walkCapabilities(cfg).map((c) => [c.id, c.off]), [[0x11, 0x98], [9, 0x84], [9, 0x70], [9, 0x60], [9, 0x48], [9, 0xb0]]);
  const l = parseVirtioPciCaps(cfg);
  assert.deepEqual(l.common, { bar: 4, offset: 0, length: 0x1000 });
  assert.deepEqual(l.isr, { bar: 4, offset: 0x1000, length: 0x1000 });
  assert.deepEqual(l.device, { bar: 4, offset: 0x2000, length: 0x1000 });
  assert.deepEqual(l.notify, { bar: 4, offset: 0x3000, length: 0x1000, multiplier: 4 });
});

test('the first capability of a type wins; reserved BARs are ignored', () => {
  const cfg = qemuLikeConfig();
  cfg[0xb1] = 0xc4; // pci_cfg -> second common cfg, in BAR 2
  vcap(cfg, 0xc4, 0xd4, 1, 2, 0x8000, 0x100);
  vcap(cfg, 0xd4, 0x00, 4, 7, 0x9000, 0x100); // device cfg in reserved BAR 7
  const l = parseVirtioPciCaps(cfg);
  assert.deepEqual(l.common, { bar: 4, offset: 0, length: 0x1000 });
  // drop the real device cap from the chain: the BAR-7 one must not be used
  cfg[0x70 + 1] = 0x48; // ISR -> notify, skipping device at 0x60
  assert.equal(parseVirtioPciCaps(cfg).device, null);
});

test('bad config spaces: loops, pointers outside, legacy-only device, short notify cap', () => {
  const loop = qemuLikeConfig();
  loop[0xb0 + 1] = 0x84; // last -> common: loop
  assert.throws(() => walkCapabilities(loop), (e: Error) => e instanceof PciError && /loops/.test(e.message));
  const outside = qemuLikeConfig();
  outside[0x34] = 0x20; // inside the header
  assert.throws(() => walkCapabilities(outside), /outside config space/);
  const legacy = new Uint8Array(256); // no capability list at all
  assert.deepEqual(walkCapabilities(legacy), []);
  assert.throws(() => parseVirtioPciCaps(legacy), (e: Error) => e instanceof VirtioPciError && /not a modern/.test(e.message));
  const shortNotify = qemuLikeConfig();
  shortNotify[0x48 + 2] = 16;
  assert.throws(() => parseVirtioPciCaps(shortNotify), /notify_off_multiplier/);
  const shortCommon = qemuLikeConfig();
  new DataView(shortCommon.buffer).setUint32(0x84 + 12, 40, true);
  assert.throws(() => parseVirtioPciCaps(shortCommon), /common configuration is 40 bytes/);
  assert.throws(() => walkCapabilities(new Uint8Array(32)), /shorter than the 64-byte header/);
});

test('PCI addresses', () => {
  assert.equal(normalizePciAddr('00:02.0'), '0000:00:02.0');
  assert.equal(normalizePciAddr('0000:00:1F.7'), '0000:00:1f.7');
  for (const bad of ['', '0:2.0', '0000:00:02.8', '0000:00:02', 'eth0']) assert.throws(() => normalizePciAddr(bad), PciError);
});

test('binding errors that need no device: unknown device, driver not loaded, no hugepages', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-pci-'));
  try {
    const dev = path.join(root, 'devices', '0000:00:02.0');
    fs.mkdirSync(dev, { recursive: true });
    fs.writeFileSync(path.join(dev, 'vendor'), '0x1af4\n');
    fs.writeFileSync(path.join(dev, 'device'), '0x1000\n');
    fs.writeFileSync(path.join(dev, 'class'), '0x020000\n');
    fs.writeFileSync(path.join(dev, 'driver_override'), '(null)\n');
    fs.mkdirSync(path.join(root, 'drivers', 'virtio-pci'), { recursive: true });
    fs.symlinkSync(path.join(root, 'drivers', 'virtio-pci'), path.join(dev, 'driver'));
    const meminfo = path.join(root, 'meminfo');
    fs.writeFileSync(meminfo, 'MemTotal: 1000 kB\nHugePages_Total:       0\nHugePages_Free:        0\n');
    const info = pciDeviceInfo('00:02.0', root);
    assert.deepEqual([info.vendor, info.device, info.classCode, info.driver, info.override], [0x1af4, 0x1000, 0x020000, 'virtio-pci', null]);
    assert.throws(() => bindPciDevice('0000:00:03.0', 'uio_pci_generic', { root, meminfo }), /no PCI device 0000:00:03.0/);
    assert.throws(() => bindPciDevice('0000:00:02.0', 'uio_pci_generic', { root, meminfo }), /uio_pci_generic is not loaded: `modprobe uio_pci_generic`/);
    fs.mkdirSync(path.join(root, 'drivers', 'uio_pci_generic'));
    assert.throws(() => bindPciDevice('0000:00:02.0', 'uio_pci_generic', { root, meminfo }), /no 2 MiB hugepages are reserved/);
    assert.deepEqual(hugepageCounts(meminfo), { total: 0, free: 0 });
    // already bound: nothing to do
    assert.equal(bindPciDevice('0000:00:02.0', 'virtio-pci', { root, meminfo }).unchanged, true);
    assert.throws(() => bindPciDevice('0000:00:02.0', 'e1000' as 'virtio-pci', { root, meminfo }), /unknown driver/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
