/**
 * The virtio-net device behind a vhost-user backend: which features and
 * protocol features it offers, its config space (mac, status,
 * max_virtqueue_pairs, mtu), MTU and RARP requests. Ring i is the guest's
 * RX queue of pair i/2 when i is even, its TX queue when i is odd.
 */
import * as F from '../virtio/features.js';
import { ProtoF, featureMask } from './messages.js';
import type { VhostUserDevice } from './backend-protocol.js';
import { parseMac, formatMac } from '../util/net.js';

/** virtio_net_config offsets (virtio 1.2 §5.1.4). */
export const NETCFG_MAC = 0;
export const NETCFG_STATUS = 6;
export const NETCFG_MAX_VQ_PAIRS = 8;
export const NETCFG_MTU = 10;
export const NETCFG_SIZE = 12;
export const NET_S_LINK_UP = 1;
export const NET_S_ANNOUNCE = 2;

/** Default virtio features of our net device. */
export const NET_DEVICE_FEATURES =
  F.F_VERSION_1 |
  F.NET_F_MRG_RXBUF |
  F.RING_F_INDIRECT_DESC |
  F.RING_F_EVENT_IDX |
  F.F_IN_ORDER |
  F.F_RING_PACKED |
  F.NET_F_MQ |
  F.NET_F_STATUS |
  F.NET_F_MAC |
  F.NET_F_MTU;

export const NET_DEVICE_PROTOCOL_FEATURES = featureMask(ProtoF.MTU, ProtoF.RARP, ProtoF.CONFIG);

export interface NetDeviceOptions {
  /** Queue pairs (1..128). Default 1. */
  queuePairs?: number;
  /** MAC address offered in config space ("52:54:00:12:34:56"). Default a locally administered one. */
  mac?: string;
  /** MTU offered in config space. Default 1500. */
  mtu?: number;
  /** Remove features from the default offer (e.g. F.F_RING_PACKED). */
  disableFeatures?: bigint;
  /** Largest MTU a guest may set with NET_SET_MTU (the switch's --max-mtu). Default 65535. */
  maxMtu?: number;
}

export { parseMac, formatMac };

export class NetDevice implements VhostUserDevice {
  readonly maxQueues: number;
  readonly queuePairs: number;
  readonly features: bigint;
  readonly protocolFeatures = NET_DEVICE_PROTOCOL_FEATURES;
  readonly mac: Uint8Array;
  /** MTU in config space (may be changed by NET_SET_MTU; back to the configured one when the frontend leaves). */
  mtu: number;
  /** The MTU configured for the port (offered to each new frontend). */
  readonly configuredMtu: number;
  /** Largest MTU accepted from NET_SET_MTU. */
  readonly maxMtu: number;
  /** NET_SET_MTU requests refused (above maxMtu or below 68). */
  mtuRefused = 0;
  /** Features the frontend acked (0 until SET_FEATURES). */
  acked = 0n;
  /** MAC of a SEND_RARP not yet announced, or null. The port sends the RARP frame. */
  pendingRarp: Uint8Array | null = null;
  private readonly onRarp: ((mac: Uint8Array) => void) | null;

  constructor(opts: NetDeviceOptions = {}, onRarp?: (mac: Uint8Array) => void) {
    const qp = opts.queuePairs ?? 1;
    if (!(Number.isInteger(qp) && qp >= 1 && qp <= 128)) throw new RangeError(`queuePairs ${qp} not in 1..128`);
    this.queuePairs = qp;
    this.maxQueues = 2 * qp;
    this.features = NET_DEVICE_FEATURES & ~(opts.disableFeatures ?? 0n);
    this.mac = parseMac(opts.mac ?? '02:00:00:00:00:01');
    const mtu = opts.mtu ?? 1500;
    if (!(Number.isInteger(mtu) && mtu >= 68 && mtu <= 65535)) throw new RangeError(`mtu ${mtu} not in 68..65535`);
    this.mtu = mtu;
    this.configuredMtu = mtu;
    const maxMtu = opts.maxMtu ?? 65535;
    if (!(Number.isInteger(maxMtu) && maxMtu >= 68 && maxMtu <= 65535)) throw new RangeError(`maxMtu ${maxMtu} not in 68..65535`);
    this.maxMtu = maxMtu;
    this.onRarp = onRarp ?? null;
  }

  queueNum(): number {
    return this.queuePairs;
  }

  /** The whole config space as the device presents it. */
  configSpace(): Uint8Array {
    const b = new Uint8Array(NETCFG_SIZE);
    const dv = new DataView(b.buffer);
    b.set(this.mac, NETCFG_MAC);
    dv.setUint16(NETCFG_STATUS, NET_S_LINK_UP, true);
    dv.setUint16(NETCFG_MAX_VQ_PAIRS, this.queuePairs, true);
    dv.setUint16(NETCFG_MTU, this.mtu, true);
    return b;
  }

  getConfig(offset: number, size: number): Uint8Array | null {
    // Reads past our fields return zeros (speed/duplex/rss not offered), up to the 256-byte maximum.
    if (offset + size > 256) return null;
    const out = new Uint8Array(size);
    const cs = this.configSpace();
    if (offset < cs.length) out.set(cs.subarray(offset, Math.min(cs.length, offset + size)), 0);
    return out;
  }

  setConfig(offset: number, data: Uint8Array, flags: number): boolean {
    // Only the MAC is writable, and only for live migration (flags 1) — spec rule for read-only fields.
    if (flags !== 1 || offset !== NETCFG_MAC || data.length !== 6) return false;
    this.mac.set(data);
    return true;
  }

  /** NET_SET_MTU: refused (and counted) outside 68..maxMtu; see mtuProblem(). */
  setMtu(mtu: number): boolean {
    if (this.mtuProblem(mtu) !== null) {
      this.mtuRefused++;
      return false;
    }
    this.mtu = mtu;
    return true;
  }

  /** Why a guest's MTU is refused, or null. */
  mtuProblem(mtu: number): string | null {
    if (!(Number.isInteger(mtu) && mtu >= 68)) return `MTU ${mtu} is below 68`;
    if (mtu > this.maxMtu) return `MTU ${mtu} is above the switch's largest (${this.maxMtu}, --max-mtu)`;
    return null;
  }

  sendRarp(mac: Uint8Array): void {
    this.pendingRarp = mac.slice(0, 6);
    this.onRarp?.(this.pendingRarp);
  }

  featuresAcked(f: bigint): void {
    this.acked = f;
  }

  reset(): void {
    this.acked = 0n;
    this.mtu = this.configuredMtu;
    this.pendingRarp = null;
  }
}
