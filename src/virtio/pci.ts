/**
 * The virtio 1.x PCI transport, described once (virtio 1.2 §4.1): the vendor
 * capabilities that locate its structures in the BARs, the common
 * configuration layout, the device status bits, and the virtio-net device
 * configuration. Pure data and parsing; src/port/virtio-pci.ts drives it.
 *
 *   struct virtio_pci_cap {            // in PCI config space, cap id 0x09
 *     u8 cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
 *     le32 offset, length;             // within the BAR
 *   };                                 // + le32 notify_off_multiplier for NOTIFY
 */
import { PCI_CAP_ID_VNDR, walkCapabilities } from '../sys/pci.js';

/** PCI vendor id of virtio devices; device ids 0x1000-0x103f transitional, 0x1040+ modern. */
export const VIRTIO_PCI_VENDOR = 0x1af4;
/** virtio-net: transitional 0x1000, modern 0x1041. */
export const VIRTIO_NET_PCI_IDS = [0x1000, 0x1041] as const;

export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;

// virtio_pci_cap field offsets
const CAP_LEN = 2;
const CAP_CFG_TYPE = 3;
const CAP_BAR = 4;
const CAP_OFFSET = 8;
const CAP_LENGTH = 12;
const CAP_NOTIFY_MULT = 16;

/** Where one structure lives: BAR index, offset and length within it. */
export interface VirtioPciRegion {
  bar: number;
  offset: number;
  length: number;
}

export interface VirtioPciLayout {
  common: VirtioPciRegion;
  notify: VirtioPciRegion & { multiplier: number };
  isr: VirtioPciRegion;
  /** Absent for devices without device-specific configuration. */
  device: VirtioPciRegion | null;
}

export class VirtioPciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtioPciError';
  }
}

const le32 = (b: Uint8Array, o: number): number => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/**
 * Find the virtio structures in a config space image. The first capability
 * of each type wins (as the spec asks); BARs must be 0..5; a capability too
 * short for its type, or a required structure missing (a legacy-only device),
 * is an error.
 */
export function parseVirtioPciCaps(cfg: Uint8Array): VirtioPciLayout {
  const found = new Map<number, VirtioPciRegion & { multiplier?: number }>();
  for (const c of walkCapabilities(cfg)) {
    if (c.id !== PCI_CAP_ID_VNDR) continue;
    const o = c.off;
    if (o + 16 > cfg.length) throw new VirtioPciError(`vendor capability at 0x${o.toString(16)} runs past config space`);
    const len = cfg[o + CAP_LEN];
    const type = cfg[o + CAP_CFG_TYPE];
    if (len < 16) throw new VirtioPciError(`vendor capability at 0x${o.toString(16)} is ${len} bytes, shorter than virtio_pci_cap`);
    if (found.has(type) || type < VIRTIO_PCI_CAP_COMMON_CFG || type > VIRTIO_PCI_CAP_DEVICE_CFG) continue;
    const bar = cfg[o + CAP_BAR];
    if (bar > 5) continue; // reserved BAR values: ignore the capability (spec §4.1.4)
    const r: VirtioPciRegion & { multiplier?: number } = { bar, offset: le32(cfg, o + CAP_OFFSET), length: le32(cfg, o + CAP_LENGTH) };
    if (type === VIRTIO_PCI_CAP_NOTIFY_CFG) {
      if (len < 20 || o + 20 > cfg.length) throw new VirtioPciError(`notify capability at 0x${o.toString(16)} has no notify_off_multiplier`);
      r.multiplier = le32(cfg, o + CAP_NOTIFY_MULT);
    }
    found.set(type, r);
  }
  const need = (t: number, name: string): VirtioPciRegion & { multiplier?: number } => {
    const r = found.get(t);
    if (!r) throw new VirtioPciError(`no virtio ${name} capability: not a modern (virtio 1.x) PCI device`);
    return r;
  };
  const common = need(VIRTIO_PCI_CAP_COMMON_CFG, 'common configuration');
  if (common.length < COMMON_CFG_MIN) throw new VirtioPciError(`common configuration is ${common.length} bytes, needs ${COMMON_CFG_MIN}`);
  const notify = need(VIRTIO_PCI_CAP_NOTIFY_CFG, 'notification');
  const isr = need(VIRTIO_PCI_CAP_ISR_CFG, 'ISR');
  const device = found.get(VIRTIO_PCI_CAP_DEVICE_CFG) ?? null;
  return {
    common: { bar: common.bar, offset: common.offset, length: common.length },
    notify: { bar: notify.bar, offset: notify.offset, length: notify.length, multiplier: notify.multiplier ?? 0 },
    isr: { bar: isr.bar, offset: isr.offset, length: isr.length },
    device: device && { bar: device.bar, offset: device.offset, length: device.length },
  };
}

/**
 * struct virtio_pci_common_cfg (byte offsets and widths). Every register must
 * be accessed with its own width (the device decodes by offset and size).
 */
export const COMMON = {
  DEVICE_FEATURE_SELECT: 0, // le32
  DEVICE_FEATURE: 4, // le32
  DRIVER_FEATURE_SELECT: 8, // le32
  DRIVER_FEATURE: 12, // le32
  CONFIG_MSIX_VECTOR: 16, // le16
  NUM_QUEUES: 18, // le16
  DEVICE_STATUS: 20, // u8
  CONFIG_GENERATION: 21, // u8
  QUEUE_SELECT: 22, // le16
  QUEUE_SIZE: 24, // le16
  QUEUE_MSIX_VECTOR: 26, // le16
  QUEUE_ENABLE: 28, // le16
  QUEUE_NOTIFY_OFF: 30, // le16
  QUEUE_DESC: 32, // le64 (written as two le32)
  QUEUE_DRIVER: 40, // le64
  QUEUE_DEVICE: 48, // le64
} as const;
/** Bytes of the common configuration up to queue_device. */
export const COMMON_CFG_MIN = 56;
/** No MSI-X vector. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

// device status (§2.1)
export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_DEVICE_NEEDS_RESET = 64;
export const STATUS_FAILED = 128;

/** struct virtio_net_config (§5.1.4). */
export const NET_CFG = {
  MAC: 0, // u8[6], with NET_F_MAC
  STATUS: 6, // le16, with NET_F_STATUS
  MAX_VIRTQUEUE_PAIRS: 8, // le16, with NET_F_MQ
  MTU: 10, // le16, with NET_F_MTU
} as const;
export const NET_S_LINK_UP = 1;
export const NET_S_ANNOUNCE = 2;
