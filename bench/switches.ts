/**
 * The switches under test for the vhost-user scenarios, behind one shape:
 * two vhost-user server sockets, rules port 1 <-> port 2, counters, stop.
 *   tsvs          the tsvs daemon, two vhost-user ports, in_port=1->2, 2->1
 *   ovs-dpdk      OVS-DPDK 3.1, two dpdkvhostuser ports, the same rules
 *   dpdk-testpmd  DPDK testpmd with two net_vhost ports in io mode (upper bound)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Unavailable } from './common.js';
import { sleep, execOk } from './proc.js';
import { nsAdd, nsDel } from './peers/kernel.js';
import { DpdkTestpmd, dpdkAvailable } from './peers/dpdk.js';
import { OvsDpdk, ovsAvailable, parsePmdStatsShow } from './peers/ovs.js';
import { TsvsDaemon } from './peers/tsvs.js';

export type SwitchKind = 'tsvs' | 'ovs-dpdk' | 'dpdk-testpmd' | 'tsvs-vxlan' | 'tsvs-afpacket' | 'ovs-vxlan' | 'ovs-vxlan-afp' | 'tsvs-pool' | 'tsvs-one-copy';
export const SWITCH_KINDS: readonly SwitchKind[] = ['tsvs', 'ovs-dpdk', 'dpdk-testpmd'];
/**
 * tsvs with one copy guest-to-guest forced off (the pool path: two copies, as OVS-DPDK) or on
 * (--one-copy): an A/B of that path, run only when named (--subject tsvs-pool,tsvs-one-copy,ovs-dpdk).
 */
export const ONE_COPY_KINDS: readonly SwitchKind[] = ['tsvs-pool', 'tsvs-one-copy'];
/**
 * The tunnel shape (bench p2p-vxlan): the same two vhost-user ports, but each frame leaves the
 * switch through one port on a veth pair and comes back in on the other end:
 *   tsvs-vxlan     vhu1 -> vx0 (VXLAN encap, afpacket on va) = veth = vx1 (decap, afpacket on vb) -> vhu2, and back
 *   tsvs-afpacket  the same hairpin through plain afpacket ports (the kernel veth cost without the tunnel)
 *   ovs-vxlan      OVS-DPDK's userspace VXLAN in the same hairpin, the veth ends as system ports (see startOvsHairpin)
 *   ovs-vxlan-afp  the same with the veth ends as DPDK ports (net_af_packet), polled by OVS's PMD thread as tsvs polls its own
 *   tsvs, ovs-dpdk plain vhost-user port to port (the same two ports, no hairpin)
 * The veth pair lives in a namespace the bench makes (MTU 1600, so 1518-byte frames fit with the 50-byte header).
 */
export const TUNNEL_KINDS: readonly SwitchKind[] = ['tsvs', 'ovs-dpdk', 'tsvs-afpacket', 'tsvs-vxlan', 'ovs-vxlan', 'ovs-vxlan-afp'];

export const P2P_FLOWS = ['in_port=1,actions=output:2', 'in_port=2,actions=output:1'];

export interface SwitchUnderTest {
  kind: SwitchKind;
  pid: number;
  socks: [string, string];
  /** Replace the rules (not for dpdk-testpmd, which always forwards 0<->1). */
  setFlows?(flows: string[]): Promise<void>;
  /** Switch-side counters, if it has any we can read cheaply. */
  portCounters?(): Promise<{ rx: number[]; tx: number[]; drops: number }>;
  /** Packets received by the switch's PMD thread(s) so far. */
  pmdRx?(): Promise<number>;
  /**
   * Frames the switch has put out on OpenFlow port 2 so far: sent, plus dropped at the port itself
   * (no frontend, or its ring full). What reached the end of the path, whatever the receiver did.
   */
  out2?(): Promise<number>;
  tsvs?: TsvsDaemon;
  ovs?: OvsDpdk;
  stop(): Promise<void>;
}

async function tsvsOut(d: TsvsDaemon, ofport: number): Promise<number> {
  const p = (await d.portStats()).find((x) => x.ofport === ofport);
  if (!p) throw new Error(`tsvs has no port ${ofport}`);
  return p.txPackets + p.txDropped;
}

/**
 * OVS: frames its datapath output on port `name` (the packet counts of the datapath flows whose only
 * action is that port). Not `dump-ports`: OVS reports '?' for a dpdkvhostuser port with no frontend.
 */
async function ovsOut(o: OvsDpdk, name: string): Promise<number> {
  const odp = new RegExp(`port (\\d+): ${name} `).exec(await o.appctl('dpctl/show'));
  if (!odp) throw new Error(`OVS datapath has no port ${name}`);
  let n = 0;
  for (const line of (await o.appctl('dpctl/dump-flows')).split('\n')) {
    const m = /packets:(\d+),.* actions:(\S+)\s*$/.exec(line);
    if (m && m[2] === odp[1]) n += Number(m[1]);
  }
  return n;
}

async function waitFiles(files: string[], ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!files.every((f) => fs.existsSync(f))) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: sockets ${files.join(', ')} did not appear`);
    await sleep(50);
  }
}

export async function startTsvsSwitch(cpu: number, flows = P2P_FLOWS, extraArgs: string[] = [], kind: SwitchKind = 'tsvs'): Promise<SwitchUnderTest> {
  const d = await TsvsDaemon.start({ cpu, extraArgs });
  try {
    await d.cli('add-br', 'br0');
    let s1: string;
    let s2: string;
    try {
      s1 = await d.addVhostUserPort('br0', 'vhu1', 1);
      s2 = await d.addVhostUserPort('br0', 'vhu2', 2);
    } catch (e) {
      throw new Unavailable(`tsvs vhost-user port: ${(e as Error).message}`);
    }
    await d.setFlows('br0', flows);
    await waitFiles([s1, s2], 10000, 'tsvs');
    return {
      kind,
      pid: d.pid,
      socks: [s1, s2],
      tsvs: d,
      setFlows: (f) => d.setFlows('br0', f),
      portCounters: async () => {
        const ps = await d.portStats();
        const p = (n: number) => ps.find((x) => x.ofport === n);
        return {
          rx: [p(1)?.rxPackets ?? NaN, p(2)?.rxPackets ?? NaN],
          tx: [p(1)?.txPackets ?? NaN, p(2)?.txPackets ?? NaN],
          drops: ps.reduce((a, x) => a + x.rxDropped + x.txDropped, 0),
        };
      },
      pmdRx: async () => (await d.pmdStats()).reduce((a, x) => a + x.rxPackets, 0),
      out2: () => tsvsOut(d, 2),
      stop: () => d.stop(),
    };
  } catch (e) {
    await d.stop();
    throw e;
  }
}

export async function startOvsSwitch(cpu: number, flows = P2P_FLOWS): Promise<SwitchUnderTest> {
  const why = ovsAvailable();
  if (why) throw new Unavailable(why);
  const o = await OvsDpdk.start({ cpu });
  try {
    await o.addBridge('br0');
    const s1 = await o.addVhostUserPort('br0', 'vhu1', 1);
    const s2 = await o.addVhostUserPort('br0', 'vhu2', 2);
    await o.setFlows('br0', flows);
    return {
      kind: 'ovs-dpdk',
      pid: o.pid,
      socks: [s1, s2],
      ovs: o,
      setFlows: (f) => o.setFlows('br0', f),
      portCounters: async () => {
        const ps = await o.portStats('br0');
        const a = ps.get(1);
        const b = ps.get(2);
        return { rx: [a?.rxPackets ?? NaN, b?.rxPackets ?? NaN], tx: [a?.txPackets ?? NaN, b?.txPackets ?? NaN], drops: (a?.txDropped ?? 0) + (b?.txDropped ?? 0) + (a?.rxDropped ?? 0) + (b?.rxDropped ?? 0) };
      },
      pmdRx: async () => parsePmdStatsShow(await o.pmdStats()).received,
      out2: () => ovsOut(o, 'vhu2'),
      stop: () => o.stop(),
    };
  } catch (e) {
    await o.stop();
    throw e;
  }
}

/** The underlay of the hairpin shapes: a namespace the bench makes, with the veth pair va <-> vb (MTU 1600, up). */
async function hairpinUnderlay(): Promise<{ ns: string; drop(): Promise<void> }> {
  let ns: string;
  try {
    ns = await nsAdd('vx');
  } catch (e) {
    throw new Unavailable(`ip netns add: ${(e as Error).message}`);
  }
  try {
    await execOk(['ip', '-n', ns, 'link', 'add', 'va', 'mtu', '1600', 'type', 'veth', 'peer', 'name', 'vb', 'mtu', '1600']);
    await execOk(['ip', '-n', ns, 'link', 'set', 'va', 'up']);
    await execOk(['ip', '-n', ns, 'link', 'set', 'vb', 'up']);
  } catch (e) {
    await nsDel(ns);
    throw e;
  }
  return { ns, drop: () => nsDel(ns) };
}

/** The rules of the hairpin on the bridge with the vhost-user ports: 1 -> 3 ... 4 -> 2, and 2 -> 4 ... 3 -> 1. */
const HAIRPIN_FLOWS = ['in_port=1,actions=output:3', 'in_port=4,actions=output:2', 'in_port=2,actions=output:4', 'in_port=3,actions=output:1'];

/** tsvs with the hairpin of TUNNEL_KINDS (see there): vhu1/vhu2 are ofports 1/2, the veth ends 3 and 4. */
export async function startTsvsHairpin(cpu: number, mode: 'vxlan' | 'afpacket'): Promise<SwitchUnderTest> {
  const u = await hairpinUnderlay();
  const ns = u.ns;
  let d: TsvsDaemon | null = null;
  try {
    d = await TsvsDaemon.start({ cpu });
    await d.cli('add-br', 'br0');
    const s1 = await d.addVhostUserPort('br0', 'vhu1', 1);
    const s2 = await d.addVhostUserPort('br0', 'vhu2', 2);
    if (mode === 'vxlan') {
      await d.cli('add-port', 'br0', 'vx0', '--type', 'vxlan', '--netns', ns, '--iface', 'va', '--local-ip', '10.230.0.1', '--remote-ip', '10.230.0.2', '--key', '5', '--ofport', '3');
      await d.cli('add-port', 'br0', 'vx1', '--type', 'vxlan', '--netns', ns, '--iface', 'vb', '--local-ip', '10.230.0.2', '--remote-ip', '10.230.0.1', '--key', '5', '--ofport', '4');
    } else {
      await d.cli('add-port', 'br0', 'af0', '--type', 'afpacket', '--netns', ns, '--iface', 'va', '--ofport', '3');
      await d.cli('add-port', 'br0', 'af1', '--type', 'afpacket', '--netns', ns, '--iface', 'vb', '--ofport', '4');
    }
    await d.setFlows('br0', HAIRPIN_FLOWS);
    await waitFiles([s1, s2], 10000, 'tsvs');
    const dd = d;
    return {
      kind: mode === 'vxlan' ? 'tsvs-vxlan' : 'tsvs-afpacket',
      pid: dd.pid,
      socks: [s1, s2],
      tsvs: dd,
      pmdRx: async () => (await dd.pmdStats()).reduce((a, x) => a + x.rxPackets, 0),
      out2: () => tsvsOut(dd, 2),
      stop: async () => {
        await dd.stop();
        await u.drop();
      },
    };
  } catch (e) {
    await d?.stop();
    await u.drop();
    throw e;
  }
}

/**
 * OVS-DPDK with the VXLAN hairpin of TUNNEL_KINDS, in OVS's own way (Documentation/howto/userspace-tunneling.rst):
 * ovs-vswitchd runs in the underlay namespace, so the internal port of bridge br-phy is a tap there
 * that holds both tunnel endpoint addresses (10.230.0.1 and .2); va and vb are system ports of br-phy
 * (AF_PACKET, as tsvs's). br0: vhu1, vhu2 (1, 2), vx0 (3: local .1, remote .2) and vx1 (4: local .2,
 * remote .1), key 5, the rules of tsvs's hairpin. A frame from vhu1 is encapsulated by vx0 (tnl_push;
 * route to .2 via br-phy, next hop MAC set with tnl/arp/set), sent out of va by br-phy's rule for
 * nw_dst=.2, comes in at vb and goes to br-phy's LOCAL port, where OVS pops the tunnel header
 * (tnl_pop) and vx1 takes it to vhu2; the way back leaves through vb and comes in at va, as in tsvs.
 * underlay 'system': va and vb are system ports (netdev-linux, polled by OVS's main thread);
 * 'dpdk': DPDK ports on DPDK's af_packet PMD (dpdk-devargs net_af_packetN,iface=va), polled by the
 * PMD thread, OVS-DPDK's way of putting the tunnel on a device it polls.
 */
export async function startOvsHairpin(cpu: number, underlay: 'system' | 'dpdk' = 'system'): Promise<SwitchUnderTest> {
  const why = ovsAvailable();
  if (why) throw new Unavailable(why);
  const u = await hairpinUnderlay();
  const ns = u.ns;
  let o: OvsDpdk | null = null;
  try {
    o = await OvsDpdk.start({ cpu, netns: ns });
    await o.addBridge('br0');
    const s1 = await o.addVhostUserPort('br0', 'vhu1', 1);
    const s2 = await o.addVhostUserPort('br0', 'vhu2', 2);
    await o.addBridge('br-phy');
    for (const [i, dev] of ['va', 'vb'].entries()) {
      // a DPDK port may not take the name of a kernel device OVS can see ("Invalid argument")
      const name = underlay === 'dpdk' ? `dpdk-${dev}` : dev;
      const kind = underlay === 'dpdk' ? ['type=dpdk', `options:dpdk-devargs=net_af_packet${i},iface=${dev}`] : [];
      await o.vsctl('add-port', 'br-phy', name, '--', 'set', 'Interface', name, ...kind, `ofport_request=${i + 1}`);
      const err = await o.vsctl('get', 'Interface', name, 'error');
      if (err.trim() !== '[]') throw new Error(`OVS port ${name}: ${err.trim()}`);
    }
    await execOk(['ip', '-n', ns, 'addr', 'add', '10.230.0.1/24', 'dev', 'br-phy']);
    await execOk(['ip', '-n', ns, 'addr', 'add', '10.230.0.2/24', 'dev', 'br-phy']);
    await execOk(['ip', '-n', ns, 'link', 'set', 'br-phy', 'up']);
    const vx = (name: string, ofport: number, local: string, remote: string): Promise<string> =>
      o!.vsctl('add-port', 'br0', name, '--', 'set', 'Interface', name, 'type=vxlan', `options:local_ip=${local}`, `options:remote_ip=${remote}`, 'options:key=5', `ofport_request=${ofport}`);
    await vx('vx0', 3, '10.230.0.1', '10.230.0.2');
    await vx('vx1', 4, '10.230.0.2', '10.230.0.1');
    await o.setFlows('br0', HAIRPIN_FLOWS);
    await o.setFlows('br-phy', ['ip,in_port=LOCAL,nw_dst=10.230.0.2,actions=output:1', 'ip,in_port=LOCAL,nw_dst=10.230.0.1,actions=output:2', 'in_port=1,actions=LOCAL', 'in_port=2,actions=LOCAL']);
    const mac = (JSON.parse(await execOk(['ip', '-n', ns, '-j', 'link', 'show', 'br-phy'])) as { address: string }[])[0].address;
    // OVS learns its tunnel routes from the namespace's routing table (netlink, asynchronously)
    const t0 = Date.now();
    while (!/10\.230\.0\.0\/24 dev br-phy/.test(await o.appctl('ovs/route/show'))) {
      if (Date.now() - t0 > 10000) throw new Error(`OVS has no route to 10.230.0.0/24 via br-phy: ${await o.appctl('ovs/route/show')}`);
      await sleep(100);
    }
    // the next hop of both tunnels is br-phy itself (what an ARP reply from the far end would teach OVS)
    await o.appctl('tnl/arp/set', 'br-phy', '10.230.0.1', mac);
    await o.appctl('tnl/arp/set', 'br-phy', '10.230.0.2', mac);
    const oo = o;
    return {
      kind: underlay === 'dpdk' ? 'ovs-vxlan-afp' : 'ovs-vxlan',
      pid: oo.pid,
      socks: [s1, s2],
      ovs: oo,
      pmdRx: async () => parsePmdStatsShow(await oo.pmdStats()).received,
      out2: () => ovsOut(oo, 'vhu2'),
      stop: async () => {
        await oo.stop();
        await u.drop();
      },
    };
  } catch (e) {
    await o?.stop();
    await u.drop();
    throw e;
  }
}

/** DPDK testpmd as a 2-port vhost-user io forwarder: main lcore on the generator's CPU (idle), forwarding on `cpu`. */
export async function startTestpmdSwitch(cpu: number, otherCpu: number): Promise<SwitchUnderTest> {
  const why = dpdkAvailable();
  if (why) throw new Unavailable(why);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-tps-'));
  const s1 = path.join(dir, 'vhu1');
  const s2 = path.join(dir, 'vhu2');
  let tp: DpdkTestpmd | null = null;
  try {
    tp = await DpdkTestpmd.start({
      vdevs: [`net_vhost0,iface=${s1},queues=1`, `net_vhost1,iface=${s2},queues=1`],
      lcores: `0@${otherCpu},1@${cpu}`,
      fwd: 'io',
    });
    await waitFiles([s1, s2], 10000, 'dpdk-testpmd');
    await tp.startFwd();
    const t = tp;
    return {
      kind: 'dpdk-testpmd',
      pid: t.pid,
      socks: [s1, s2],
      stop: async () => {
        await t.quit();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await tp?.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

export function startSwitch(kind: SwitchKind, cpu: number, otherCpu: number, flows = P2P_FLOWS): Promise<SwitchUnderTest> {
  switch (kind) {
    case 'tsvs':
      return startTsvsSwitch(cpu, flows);
    case 'tsvs-pool':
      return startTsvsSwitch(cpu, flows, ['--one-copy', 'off'], kind);
    case 'tsvs-one-copy':
      return startTsvsSwitch(cpu, flows, ['--one-copy', 'on'], kind);
    case 'ovs-dpdk':
      return startOvsSwitch(cpu, flows);
    case 'dpdk-testpmd':
      return startTestpmdSwitch(cpu, otherCpu);
    case 'tsvs-vxlan':
      return startTsvsHairpin(cpu, 'vxlan');
    case 'tsvs-afpacket':
      return startTsvsHairpin(cpu, 'afpacket');
    case 'ovs-vxlan':
      return startOvsHairpin(cpu, 'system');
    case 'ovs-vxlan-afp':
      return startOvsHairpin(cpu, 'dpdk');
  }
}
