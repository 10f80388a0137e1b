/**
 * The kernel path as a benchmark peer: network namespaces, veth pairs, a Linux
 * bridge, trafgen (netsniff-ng, PACKET_MMAP sender) and interface counters.
 *
 * Topology (both variants):  ns A [a0] --veth-- [a1] ns S [b1] --veth-- [b0] ns B
 *   - kernel: a1 and b1 enslaved to a Linux bridge in S;
 *   - tsvs:   a1 and b1 are afpacket ports of a tsvs daemon running in S.
 * Everything lives in namespaces this module created; deleted on teardown.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Proc, execOk, which } from '../proc.js';
import { parseIpLinkStats, type LinkCounters } from '../stats.js';

const liveNs = new Set<string>();

export function kernelAvailable(): string | null {
  if (!which('ip')) return 'iproute2 (ip) is not installed';
  if (process.getuid && process.getuid() !== 0) return 'network namespaces need root';
  return null;
}

export function trafgenAvailable(): string | null {
  return which('trafgen') ? null : 'trafgen is not installed (apt-get install netsniff-ng)';
}

export async function nsAdd(prefix: string): Promise<string> {
  const name = `tsvsb-${prefix}-${process.pid}-${randomBytes(2).toString('hex')}`;
  await execOk(['ip', 'netns', 'add', name]);
  liveNs.add(name);
  await execOk(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  // no IPv6 autoconfiguration chatter in the counters
  await execOk(['ip', 'netns', 'exec', name, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']).catch(() => undefined);
  return name;
}

export async function nsDel(name: string): Promise<void> {
  liveNs.delete(name);
  await execOk(['ip', 'netns', 'del', name]).catch(() => undefined);
}

/** Delete every namespace this process made (for exit handlers). */
export async function nsDelAll(): Promise<void> {
  await Promise.all([...liveNs].map((n) => nsDel(n)));
}

export interface TwoHostTopology {
  a: string;
  s: string;
  b: string;
  /** MACs of a0 and b0. */
  macA: string;
  macB: string;
  ipA: string;
  ipB: string;
  teardown(): Promise<void>;
}

/** ns A, S, B with veth a0<->a1 and b1<->b0; optional Linux bridge br0 in S over a1, b1. */
export async function twoHosts(o: { bridge: boolean; subnet?: number }): Promise<TwoHostTopology> {
  const a = await nsAdd('a');
  const s = await nsAdd('s');
  const b = await nsAdd('b');
  const net = o.subnet ?? 77;
  const topo: TwoHostTopology = {
    a, s, b,
    macA: '02:00:00:00:0a:01',
    macB: '02:00:00:00:0b:01',
    ipA: `10.${net}.0.1`,
    ipB: `10.${net}.0.2`,
    teardown: async () => {
      await nsDel(a);
      await nsDel(b);
      await nsDel(s);
    },
  };
  try {
    await execOk(['ip', '-n', a, 'link', 'add', 'a0', 'address', topo.macA, 'type', 'veth', 'peer', 'name', 'a1', 'netns', s]);
    await execOk(['ip', '-n', b, 'link', 'add', 'b0', 'address', topo.macB, 'type', 'veth', 'peer', 'name', 'b1', 'netns', s]);
    if (o.bridge) {
      await execOk(['ip', '-n', s, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
      await execOk(['ip', '-n', s, 'link', 'set', 'a1', 'master', 'br0']);
      await execOk(['ip', '-n', s, 'link', 'set', 'b1', 'master', 'br0']);
      await execOk(['ip', '-n', s, 'link', 'set', 'br0', 'up']);
    }
    for (const [ns, dev] of [[s, 'a1'], [s, 'b1'], [a, 'a0'], [b, 'b0']]) await execOk(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    await execOk(['ip', '-n', a, 'addr', 'add', `${topo.ipA}/24`, 'dev', 'a0']);
    await execOk(['ip', '-n', b, 'addr', 'add', `${topo.ipB}/24`, 'dev', 'b0']);
  } catch (e) {
    await topo.teardown();
    throw e;
  }
  return topo;
}

export async function linkCounters(ns: string, dev: string): Promise<LinkCounters> {
  return parseIpLinkStats(await execOk(['ip', '-n', ns, '-s', '-j', 'link', 'show', dev]));
}

/** A trafgen packet config: UDP/IPv4 frames of `size` bytes (without FCS, >= 60) with a valid IP checksum. */
export function trafgenConfig(o: { size: number; dstMac: string; srcMac: string; srcIp: string; dstIp: string }): string {
  const mac = (m: string): string => m.split(':').map((x) => `0x${x}`).join(', ');
  const ip = (a: string): string => a.split('.').join(', ');
  const ipLen = o.size - 14;
  const udpLen = ipLen - 20;
  const pad = o.size - 42;
  return [
    '{',
    `  ${mac(o.dstMac)},`,
    `  ${mac(o.srcMac)},`,
    '  0x08, 0x00,',
    `  0x45, 0x00, const16(${ipLen}), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),`,
    `  ${ip(o.srcIp)}, ${ip(o.dstIp)},`,
    `  const16(9), const16(9), const16(${udpLen}), const16(0),`,
    `  fill(0x00, ${pad}),`,
    '}',
    '',
  ].join('\n');
}

/** trafgen sending as fast as it can from `dev` in `ns`, pinned to `cpu`. Stop with stop(). */
export class Trafgen {
  private constructor(
    readonly proc: Proc,
    private readonly dir: string,
  ) {}

  static start(o: { ns: string; dev: string; cpu: number; config: string }): Trafgen {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-tg-'));
    const cfg = path.join(dir, 'pkt.cfg');
    fs.writeFileSync(cfg, o.config);
    const p = new Proc(['trafgen', '--dev', o.dev, '--conf', cfg, '--cpus', '1', '--no-cpu-stats', '--notouch-irq', '--no-sock-mem'], { netns: o.ns, cpus: [o.cpu] });
    return new Trafgen(p, dir);
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGINT', 5000);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
