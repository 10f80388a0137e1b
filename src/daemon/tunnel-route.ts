/**
 * Where a tunnel port's packets leave: the underlay interface, our endpoint
 * address and the next hop, from the port's options or else from the kernel's
 * routing table (`ip route get REMOTE`), as OVS consults its router.
 * Control path only.
 */
import { execFileSync } from 'node:child_process';
import type { TunnelConfig } from './config-db.js';
import { parseIpv4 } from '../port/tunnel.js';

export interface TunnelRoute {
  iface: string;
  localIp: string;
  /** A gateway between us and the remote, if the route has one. */
  nextHop?: string;
}

export function resolveTunnelRoute(t: TunnelConfig, iface: string | undefined, netns: string | undefined): TunnelRoute {
  parseIpv4(t.remoteIp, 'remote_ip');
  if (t.localIp !== undefined) parseIpv4(t.localIp, 'local_ip');
  if (iface !== undefined && t.localIp !== undefined) return { iface, localIp: t.localIp };
  const args = [...(netns !== undefined ? ['-n', netns] : []), '-j', 'route', 'get', t.remoteIp];
  if (iface !== undefined) args.push('oif', iface);
  let routes: { dev?: string; prefsrc?: string; gateway?: string }[];
  try {
    routes = JSON.parse(execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as typeof routes;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`no route to remote_ip ${t.remoteIp} (${(err.stderr ?? err.message).trim()}): give --iface and --local-ip (options:local_ip)`);
  }
  const r = routes[0] ?? {};
  const dev = iface ?? r.dev;
  const local = t.localIp ?? r.prefsrc;
  if (dev === undefined || dev === 'lo') throw new Error(`the route to remote_ip ${t.remoteIp} leaves through ${dev ?? 'no device'}: give --iface`);
  if (local === undefined) throw new Error(`the route to remote_ip ${t.remoteIp} names no source address: give --local-ip (options:local_ip)`);
  return { iface: dev, localIp: local, nextHop: r.gateway };
}
