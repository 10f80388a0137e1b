/**
 * Opening ports by spec inside the thread that will poll them. The datapath
 * never branches on port type; only this factory knows the drivers.
 */
import type { Mempool } from '../mem/mempool.js';
import type { Port } from '../pmd/port.js';
import { TapPort } from '../pmd/tap.js';
import { AfPacketPort } from '../pmd/af-packet.js';
import { VirtioUserPort } from '../pmd/virtio-user.js';
import { VhostUserPort } from '../pmd/vhost-user.js';

export type PortKind = 'vhost-user' | 'vhost-user-client' | 'virtio-user' | 'tap' | 'afpacket';

export interface PortSpec {
  name: string;
  type: PortKind;
  path?: string;
  iface?: string;
  netns?: string;
  queues?: number;
  mac?: string;
  mtu?: number;
  /** virtio-user: listen instead of connect. */
  server?: boolean;
  packed?: boolean;
}

/** What the control side learns about a port (postMessage-able). */
export interface PortInfo {
  name: string;
  type: string;
  link: string;
  nQueues: number;
  status?: string;
  stats: Port['stats'];
}

export function portInfo(p: Port): PortInfo {
  return { name: p.name, type: p.type, link: p.link, nQueues: p.nQueues, status: p.status, stats: { ...p.stats, drops: { ...p.stats.drops } } };
}

export class PortSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PortSpecError';
  }
}

/** Open a port of the given spec (link changes are watched by the PMD thread that polls it). */
export async function openPort(spec: PortSpec, pool: Mempool): Promise<Port> {
  switch (spec.type) {
    case 'vhost-user':
    case 'vhost-user-client':
      if (!spec.path) throw new PortSpecError(`port ${spec.name}: vhost-user needs a socket path`);
      return new VhostUserPort({
        name: spec.name, path: spec.path, client: spec.type === 'vhost-user-client', queues: spec.queues, mac: spec.mac, mtu: spec.mtu, mempool: pool,
      });
    case 'virtio-user': {
      if (!spec.path) throw new PortSpecError(`port ${spec.name}: virtio-user needs a socket path`);
      return new VirtioUserPort({ name: spec.name, path: spec.path, server: spec.server, queues: spec.queues, packed: spec.packed, mac: spec.mac, pool });
    }
    case 'tap':
      return new TapPort(spec.name, pool, { ifname: spec.iface ?? spec.name, queues: spec.queues, mtu: spec.mtu });
    case 'afpacket':
      if (!spec.iface) throw new PortSpecError(`port ${spec.name}: afpacket needs an interface (iface)`);
      return new AfPacketPort(spec.name, pool, { iface: spec.iface, queues: spec.queues });
    default:
      throw new PortSpecError(`port ${spec.name}: type '${spec.type}' is not available in this build`);
  }
}
