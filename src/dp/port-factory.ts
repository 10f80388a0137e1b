/**
 * Opening ports by spec inside the thread that will poll them. The datapath
 * never branches on port type; only this factory knows the drivers.
 *
 * vhost-user, the switch's port type, is loaded with the factory; every other driver (tap, afpacket,
 * virtio-user, virtio-pci, vxlan) is imported the first time a port of its type opens, so a thread
 * that never opens one does not compile or keep its code (README, Memory).
 */
import type { Mempool } from '../mem/mempool.js';
import type { Port } from '../port/port.js';
import { VhostUserPort } from '../port/vhost-user.js';
import type { Logger } from '../vhost/connection.js';
import { PortSpecError, poolMaxMtu, type PortSpec, type PortInfo } from './port-spec.js';

export { FRAME_OVERHEAD, PortSpecError, poolMaxMtu, type PortKind, type PortSpec, type PortInfo } from './port-spec.js';

/** The MTU a port reports, if any (control path: drivers expose `mtu`, vhost-user its device's). */
function portMtu(p: Port): number | undefined {
  const q = p as Port & { mtu?: unknown; device?: { mtu?: unknown } | null };
  if (typeof q.mtu === 'number') return q.mtu;
  if (q.device && typeof q.device.mtu === 'number') return q.device.mtu;
  return undefined;
}

/** What changes in a port's PortInfo apart from counters (the PMD thread reports a port when it changes). */
export function portSignature(p: Port): string {
  const m = p instanceof VhostUserPort ? p.memory : null;
  return `${p.link}|${p.status ?? ''}|${m ? `${m.regions},${m.bytes},${m.sealed},${m.guarded}` : ''}`;
}

export function portInfo(p: Port): PortInfo {
  const memory = p instanceof VhostUserPort ? (p.memory ?? undefined) : undefined;
  return { name: p.name, type: p.type, link: p.link, nQueues: p.nQueues, status: p.status, mtu: portMtu(p), memory, stats: { ...p.stats, drops: { ...p.stats.drops } } };
}

/** Open a port of the given spec (link changes are watched by the PMD thread that polls it). */
export async function openPort(spec: PortSpec, pool: Mempool, logger?: Logger): Promise<Port> {
  if (spec.mtu !== undefined) {
    if (!Number.isInteger(spec.mtu) || spec.mtu < 68) throw new PortSpecError(`port ${spec.name}: mtu ${spec.mtu} must be an integer >= 68`);
    const max = poolMaxMtu(pool);
    if (spec.mtu > max) {
      throw new PortSpecError(`port ${spec.name}: mtu ${spec.mtu} does not fit the ${pool.bufSize}-byte packet buffers (at most mtu ${max})`);
    }
    if (spec.type === 'virtio-user' || spec.type === 'virtio-pci') throw new PortSpecError(`port ${spec.name}: ${spec.type} ports take no mtu (the device offers it)`);
  }
  switch (spec.type) {
    case 'vhost-user':
    case 'vhost-user-client':
      if (!spec.path) throw new PortSpecError(`port ${spec.name}: vhost-user needs a socket path`);
      return new VhostUserPort({
        name: spec.name, path: spec.path, client: spec.type === 'vhost-user-client', queues: spec.queues, mac: spec.mac, mtu: spec.mtu, mempool: pool,
        maxMtu: Math.min(spec.maxMtu ?? 65535, poolMaxMtu(pool)),
        maxGuestMemory: spec.maxGuestMemory, maxGuestMemoryName: 'tsvs daemon --max-guest-mem', logger,
      });
    case 'virtio-user': {
      if (!spec.path) throw new PortSpecError(`port ${spec.name}: virtio-user needs a socket path`);
      const { VirtioUserPort } = await import('../port/virtio-user.js');
      return new VirtioUserPort({ name: spec.name, path: spec.path, server: spec.server, queues: spec.queues, packed: spec.packed, mac: spec.mac, pool, logger });
    }
    case 'virtio-pci': {
      if (!spec.pci) throw new PortSpecError(`port ${spec.name}: virtio-pci needs a PCI address`);
      const { VirtioPciPort } = await import('../port/virtio-pci.js');
      return new VirtioPciPort({ name: spec.name, addr: spec.pci, packed: spec.packed, pool });
    }
    case 'tap': {
      const { TapPort } = await import('../port/tap.js');
      return new TapPort(spec.name, pool, { ifname: spec.iface ?? spec.name, queues: spec.queues, mtu: spec.mtu });
    }
    case 'afpacket': {
      if (!spec.iface) throw new PortSpecError(`port ${spec.name}: afpacket needs an interface (iface)`);
      const { AfPacketPort } = await import('../port/af-packet.js');
      return new AfPacketPort(spec.name, pool, { iface: spec.iface, queues: spec.queues, mtu: spec.mtu, netns: spec.netns });
    }
    case 'vxlan': {
      const t = spec.tunnel;
      if (!spec.iface || !t) throw new PortSpecError(`port ${spec.name}: vxlan needs an underlay interface and a remote_ip`);
      if (spec.mtu !== undefined) throw new PortSpecError(`port ${spec.name}: vxlan ports take no mtu (set the underlay's: the inner MTU is the underlay's - 50)`);
      const { VxlanPort } = await import('../port/vxlan.js');
      return new VxlanPort(spec.name, pool, { iface: spec.iface, netns: spec.netns, remoteIp: t.remoteIp, localIp: t.localIp, key: t.key, dstPort: t.dstPort, nextHop: t.nextHop });
    }
    default:
      throw new PortSpecError(`port ${spec.name}: type '${spec.type}' is not available in this build`);
  }
}
