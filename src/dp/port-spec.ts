/**
 * What a port is, as the control side and the PMD threads exchange it: its spec (type and settings), what the
 * thread reports back, and the buffer room a frame needs. Without the drivers (src/dp/port-factory.ts opens
 * ports; the daemon's main thread, which never opens one, loads only this).
 */
import type { Mempool } from '../mem/mempool.js';
import type { Port } from '../port/port.js';
import { L2_OVERHEAD } from '../port/kernel-port.js';
import type { GuestMemoryInfo } from '../vhost/backend-protocol.js';

export type PortKind = 'vhost-user' | 'vhost-user-client' | 'virtio-user' | 'virtio-pci' | 'tap' | 'afpacket' | 'vxlan';

export interface PortSpec {
  name: string;
  type: PortKind;
  path?: string;
  iface?: string;
  netns?: string;
  queues?: number;
  mac?: string;
  mtu?: number;
  /** vhost-user: largest MTU a guest may set (the switch's --max-mtu). */
  maxMtu?: number;
  /** virtio-pci: PCI address of the device (bound to uio_pci_generic). */
  pci?: string;
  /** virtio-user: listen instead of connect. */
  server?: boolean;
  packed?: boolean;
  /** vhost-user: most guest memory (bytes) a frontend may share (default 1 TiB). */
  maxGuestMemory?: number;
  /** vxlan: resolved tunnel settings (iface is the underlay). */
  tunnel?: { remoteIp: string; localIp: string; key: number | 'flow'; dstPort: number; nextHop?: string };
}

/**
 * Bytes a frame may have on top of its MTU: Ethernet header (14) and two
 * VLAN tags (QinQ, 8). No FCS: no port type here hands us one. A port of MTU
 * M needs pool buffers with at least M + FRAME_OVERHEAD bytes after the headroom.
 */
export const FRAME_OVERHEAD: number = L2_OVERHEAD;

/** Largest MTU whose frames fit one buffer of `pool` (after its headroom). */
export function poolMaxMtu(pool: Pick<Mempool, 'bufSize' | 'headroom'>): number {
  return pool.bufSize - pool.headroom - FRAME_OVERHEAD;
}

/** What the control side learns about a port (postMessage-able). */
export interface PortInfo {
  name: string;
  type: string;
  link: string;
  nQueues: number;
  status?: string;
  /** The port's MTU when known: the kernel device's (tap, afpacket), the one offered in config space (vhost-user). */
  mtu?: number;
  /** vhost-user: the guest memory mapped now and its protection against truncation. */
  memory?: GuestMemoryInfo;
  stats: Port['stats'];
}

export class PortSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PortSpecError';
  }
}

