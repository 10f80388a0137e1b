/**
 * The switches under test for the vhost-user scenarios, behind one shape:
 * two vhost-user server sockets, rules port 1 <-> port 2, counters, stop.
 *   tsvs          the tsvs daemon, two vhost-user ports, in_port=1->2, 2->1
 *   ovs-dpdk      OVS-DPDK 3.1, two dpdkvhostuser ports, the same rules
 *   dpdk-testpmd  DPDK testpmd with two net_vhost ports in io mode (upper bound)
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { Unavailable } from './common.js';
import { sleep } from './proc.js';
import { DpdkTestpmd, dpdkAvailable } from './peers/dpdk.js';
import { OvsDpdk, ovsAvailable, parsePmdStatsShow } from './peers/ovs.js';
import { TsvsDaemon } from './peers/tsvs.js';

export type SwitchKind = 'tsvs' | 'ovs-dpdk' | 'dpdk-testpmd' | 'tsvs-vxlan' | 'tsvs-afpacket';
export const SWITCH_KINDS: readonly SwitchKind[] = ['tsvs', 'ovs-dpdk', 'dpdk-testpmd'];
/**
 * The tunnel shape (bench p2p-vxlan): the same two vhost-user ports, but each frame leaves the
 * switch through one port on a veth pair and comes back in on the other end:
 *   tsvs-vxlan     vhu1 -> vx0 (VXLAN encap, afpacket on va) = veth = vx1 (decap, afpacket on vb) -> vhu2, and back
 *   tsvs-afpacket  the same hairpin through plain afpacket ports (the kernel veth cost without the tunnel)
 * The veth pair lives in a namespace the bench makes (MTU 1600, so 1518-byte frames fit with the 50-byte header).
 */
export const TUNNEL_KINDS: readonly SwitchKind[] = ['tsvs', 'tsvs-afpacket', 'tsvs-vxlan'];

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
  tsvs?: TsvsDaemon;
  ovs?: OvsDpdk;
  stop(): Promise<void>;
}

async function waitFiles(files: string[], ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!files.every((f) => fs.existsSync(f))) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: sockets ${files.join(', ')} did not appear`);
    await sleep(50);
  }
}

export async function startTsvsSwitch(cpu: number, flows = P2P_FLOWS): Promise<SwitchUnderTest> {
  const d = await TsvsDaemon.start({ cpu });
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
      kind: 'tsvs',
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
      stop: () => o.stop(),
    };
  } catch (e) {
    await o.stop();
    throw e;
  }
}

/** tsvs with the hairpin of TUNNEL_KINDS (see there): vhu1/vhu2 are ofports 1/2, the veth ends 3 and 4. */
export async function startTsvsHairpin(cpu: number, mode: 'vxlan' | 'afpacket'): Promise<SwitchUnderTest> {
  const ns = `tsvs-bench-vx-${process.pid}-${Math.random().toString(16).slice(2, 8)}`;
  const ip = (...a: string[]): void => { execFileSync('ip', a, { stdio: ['ignore', 'ignore', 'pipe'] }); };
  try {
    ip('netns', 'add', ns);
  } catch (e) {
    throw new Unavailable(`ip netns add: ${(e as Error).message}`);
  }
  const dropNs = (): void => { try { ip('netns', 'del', ns); } catch { /* gone */ } };
  let d: TsvsDaemon | null = null;
  try {
    ip('-n', ns, 'link', 'add', 'va', 'mtu', '1600', 'type', 'veth', 'peer', 'name', 'vb', 'mtu', '1600');
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
    await d.setFlows('br0', ['in_port=1,actions=output:3', 'in_port=4,actions=output:2', 'in_port=2,actions=output:4', 'in_port=3,actions=output:1']);
    await waitFiles([s1, s2], 10000, 'tsvs');
    const dd = d;
    return {
      kind: mode === 'vxlan' ? 'tsvs-vxlan' : 'tsvs-afpacket',
      pid: dd.pid,
      socks: [s1, s2],
      tsvs: dd,
      pmdRx: async () => (await dd.pmdStats()).reduce((a, x) => a + x.rxPackets, 0),
      stop: async () => {
        await dd.stop();
        dropNs();
      },
    };
  } catch (e) {
    await d?.stop();
    dropNs();
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
    case 'ovs-dpdk':
      return startOvsSwitch(cpu, flows);
    case 'dpdk-testpmd':
      return startTestpmdSwitch(cpu, otherCpu);
    case 'tsvs-vxlan':
      return startTsvsHairpin(cpu, 'vxlan');
    case 'tsvs-afpacket':
      return startTsvsHairpin(cpu, 'afpacket');
  }
}
