/**
 * vm2vm: one QEMU/TCG guest sends 64-byte frames to another, four ways, with the same two guests
 * under the same QEMU (issue 12 part 3: "the vhost-user/virtio-pmd path is 2-4x the
 * vhost-net/virtio-net path", measured VM to VM):
 *   kernel-bridge   guest kernel virtio-net (pktgen) -> QEMU tap -> Linux bridge -> tap -> guest kernel virtio-net
 *   kernel-tsvs     guest kernel virtio-net (pktgen) -> vhost-user -> tsvs -> vhost-user -> guest kernel virtio-net
 *   dpdk-tsvs       guest DPDK net_virtio (dpdk-testpmd txonly) -> tsvs -> guest DPDK (rxonly)
 *   tspmd-tsvs      our TypeScript virtio-pci PMD (tsvs testpmd txonly) -> tsvs -> ours (rxonly)
 * Each guest has two NICs: 00:02.0 on a tap in a Linux bridge (in a namespace made here; QEMU runs
 * in it) and 00:03.0 on a tsvs vhost-user port (OpenFlow: sender's port -> receiver's port). For the
 * PMD subjects the guests hand 00:03.0 to uio_pci_generic (`tsvs pci-bind`), and back for kernel-tsvs.
 *
 * Rate = frames delivered to the receiving VM per second over `seconds` after `warmup`, counted on
 * the host at the last hop (the receiver's tap tx counter for the bridge, the receiver's switch port
 * tx counter for tsvs). After each run the sender is stopped, the path drains and the receiver's own
 * count (its PMD's rx counter; guest rx_packets within 16 frames of the guest kernels' own chatter) must
 * equal what the host delivered: a run whose counts disagree fails. sent/received in the report are the sender's and the receiver's counts
 * (their difference is what the path dropped; at saturation the receiver sets the pace).
 *
 * CPUs (2 on this machine): the sending guest's QEMU is pinned to CPU genCpu, the receiving guest's
 * and the switch to swCpu (the switch idles in 200 µs sleeps when it has nothing to do). TCG only
 * (no KVM): every guest instruction is emulated, so absolute rates are tiny; ratios count.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Collector, type ScenarioResult } from './report.js';
import { rotate, wanted, errText, Unavailable, type BenchContext, type Scenario } from './common.js';
import { execOk, sleep, which } from './proc.js';
import { rate } from './stats.js';
import { nsAdd, nsDel, linkCounters, kernelAvailable } from './peers/kernel.js';
import { TsvsDaemon } from './peers/tsvs.js';
import { ensureGuestImage, type GuestImage } from '../test/harness/guest-image.js';
import { AgentGuest } from '../test/harness/vm-switch.js';
import { GuestTestpmd } from '../test/harness/guest-dpdk.js';

export type VmSubject = 'kernel-bridge' | 'kernel-tsvs' | 'dpdk-tsvs' | 'tspmd-tsvs';
export const VM_SUBJECTS: readonly VmSubject[] = ['kernel-bridge', 'kernel-tsvs', 'dpdk-tsvs', 'tspmd-tsvs'];

const TAP_ADDR = '0000:00:02.0';
const VU_ADDR = '0000:00:03.0';
const MACS = [['52:54:00:b2:00:01', '52:54:00:b2:01:01'], ['52:54:00:b2:00:02', '52:54:00:b2:01:02']] as const;

/** One of the two guests: A sends, B receives. */
interface Vm {
  g: AgentGuest;
  /** Who drives 00:03.0 now. */
  vuDriver: 'kernel' | 'uio';
}

interface Lab {
  ns: string;
  sw: TsvsDaemon;
  vms: [Vm, Vm];
  close(): Promise<void>;
}

function guestMemMiB(img: GuestImage): number {
  return img.minMemoryMiB ?? 1024;
}

async function startLab(ctx: BenchContext): Promise<Lab> {
  const image = await ensureGuestImage({ node: true, dpdk: true, modules: ['pktgen'] });
  const cleanups: (() => unknown)[] = [];
  const reg = { after: (fn: () => unknown): void => void cleanups.push(fn) };
  const close = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch {
        /* keep cleaning */
      }
    }
  };
  try {
    const ns = await nsAdd('vm2vm');
    reg.after(() => nsDel(ns));
    const ip = (...a: string[]): Promise<string> => execOk(['ip', '-n', ns, ...a]);
    await ip('link', 'add', 'br0', 'type', 'bridge');
    await ip('link', 'set', 'br0', 'up');
    for (const t of ['vmtap0', 'vmtap1']) {
      await ip('tuntap', 'add', t, 'mode', 'tap');
      await ip('link', 'set', t, 'master', 'br0');
      await ip('link', 'set', t, 'up');
    }
    const sw = await TsvsDaemon.start({ cpu: ctx.swCpu, sleepMaxUs: 200 });
    reg.after(() => sw.stop());
    await sw.cli('add-br', 'br0');
    const socks = [await sw.addVhostUserPort('br0', 'vmA', 1), await sw.addVhostUserPort('br0', 'vmB', 2)];
    await sw.setFlows('br0', ['in_port=1,actions=output:2', 'in_port=2,actions=drop']);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-vm2vm-'));
    reg.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const gs = await Promise.all([0, 1].map((i) =>
      AgentGuest.start({
        name: `vm2vm-${i ? 'B' : 'A'}`, image, ip: `10.79.0.${i + 1}/24`, cleanup: reg, netns: ns,
        cpuList: String(i === 0 ? ctx.genCpu : ctx.swCpu), memoryMiB: guestMemMiB(image),
        params: { ip1: `10.79.1.${i + 1}/24`, timeout: 7200 },
        nics: [
          { kind: 'tap', ifname: `vmtap${i}`, mac: MACS[i]![0] },
          { kind: 'vhost-user', socket: socks[i]!, mac: MACS[i]![1] },
        ],
      })));
    await Promise.all(gs.map((g) => g.ready(240_000)));
    const vms: [Vm, Vm] = [{ g: gs[0]!, vuDriver: 'kernel' }, { g: gs[1]!, vuDriver: 'kernel' }];
    return { ns, sw, vms, close };
  } catch (e) {
    await close();
    throw e;
  }
}

async function guestRun(g: AgentGuest, cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await g.run(cmd, timeoutMs);
  if (r.rc !== 0) throw new Error(`guest ${g.guest.name}: \`${cmd}\` failed (${r.rc}): ${r.output.slice(-800)}`);
  return r.output;
}

/** The kernel interface of a PCI NIC (bound to virtio-pci). */
async function ifaceOf(g: AgentGuest, addr: string): Promise<string> {
  const out = await guestRun(g, `ls /sys/bus/pci/devices/${addr}/virtio*/net`);
  const m = /\b(eth\d+)\b/.exec(out);
  if (!m) throw new Error(`no interface for ${addr}: ${out}`);
  return m[1]!;
}

async function bindVu(lab: Lab, to: 'kernel' | 'uio'): Promise<void> {
  for (const vm of lab.vms) {
    if (vm.vuDriver === to) continue;
    if (to === 'uio') {
      const ifc = await ifaceOf(vm.g, VU_ADDR);
      await guestRun(vm.g, `ip link set ${ifc} down && tsvs pci-bind ${VU_ADDR} uio_pci_generic`, 60_000);
    } else {
      await guestRun(vm.g, `tsvs pci-bind ${VU_ADDR} virtio-pci`, 60_000);
      const ifc = await ifaceOf(vm.g, VU_ADDR);
      await guestRun(vm.g, `ip link set ${ifc} up`);
    }
    vm.vuDriver = to;
  }
}

async function switchPort(lab: Lab, name: string): Promise<{ link: string; rxPackets: number; txPackets: number; txDropped: number }> {
  const row = (await lab.sw.portStats()).find((p) => p.port === name);
  if (!row) throw new Error(`switch has no port ${name}`);
  return row;
}

async function waitUntil(cond: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out (${ms / 1000} s): ${what}`);
    await sleep(200);
  }
}

/** Waits until `get` returns the same number three times 400 ms apart. */
async function settled(get: () => Promise<number>, what: string): Promise<number> {
  let last = -1;
  let same = 0;
  const end = Date.now() + 30_000;
  for (;;) {
    const v = await get();
    same = v === last ? same + 1 : 0;
    last = v;
    if (same >= 2) return v;
    if (Date.now() > end) throw new Error(`${what} did not settle`);
    await sleep(400);
  }
}

/** Frames of the guest kernels' own (not the generator's) that may fall between the host's and the guest's counter reads. */
const KERNEL_CHATTER = 16;

/** Nothing reached the receiving VM: a setup problem, not noise (not retried in later repetitions). */
class NoTraffic extends Error {}

/** A sender or receiver running in a guest. */
interface Endpoint {
  /** Stops it (if it runs) and returns its frame count (sent or received). */
  stop(): Promise<number>;
}

const PKTGEN_FN = 'pg_cfg() { d=/proc/net/pktgen; echo rem_device_all > $d/kpktgend_0; echo "add_device $1" > $d/kpktgend_0; ' +
  'for c in "count 0" "pkt_size 60" "delay 0" "clone_skb 1000" "burst 1" "dst 10.79.9.9" "dst_mac $2" "udp_dst_min 9" "udp_dst_max 9"; do echo "$c" > $d/$1 || return 1; done; }';

async function pktgenStart(g: AgentGuest, ifc: string, dstMac: string): Promise<Endpoint> {
  await guestRun(g, PKTGEN_FN);
  await guestRun(g, `pg_cfg ${ifc} ${dstMac}`);
  await guestRun(g, '(echo start 2>/dev/null </dev/null > /proc/net/pktgen/pgctrl &)');
  return {
    stop: async () => {
      await guestRun(g, 'echo stop > /proc/net/pktgen/pgctrl');
      const out = await guestRun(g, `grep -o 'pkts-sofar: [0-9]*' /proc/net/pktgen/${ifc}`);
      const m = /pkts-sofar: (\d+)/.exec(out);
      if (!m) throw new Error(`pktgen result: ${out}`);
      return Number(m[1]);
    },
  };
}

async function kernelRx(g: AgentGuest, ifc: string): Promise<number> {
  const out = await guestRun(g, `echo RX=$(cat /sys/class/net/${ifc}/statistics/rx_packets)`);
  return Number(/RX=(\d+)/.exec(out)?.[1] ?? NaN);
}

async function dpdkStart(g: AgentGuest, fwd: 'txonly' | 'rxonly', prefix: string): Promise<Endpoint> {
  const tp = await GuestTestpmd.start(g, { addr: VU_ADDR, fwd, prefix, memMiB: 200, mbufs: 8192 });
  return {
    stop: async () => {
      const t = await tp.stop();
      return fwd === 'txonly' ? t.txPackets : t.rxPackets;
    },
  };
}

async function tspmdStart(g: AgentGuest, fwd: 'txonly' | 'rxonly', tag: string): Promise<Endpoint> {
  const f = `/tmp/tspmd-${tag}.out`;
  const out = await guestRun(g, `(tsvs testpmd --port virtio-pci:${VU_ADDR} --fwd ${fwd} --json </dev/null >${f} 2>&1 & echo $! > ${f}.pid); cat ${f}.pid`);
  const pid = Number(/^(\d+)\s*$/m.exec(out)?.[1]);
  if (!(pid > 0)) throw new Error(`tsvs testpmd did not start: ${out}`);
  return {
    stop: async () => {
      await guestRun(g, `kill -INT ${pid}; n=0; while kill -0 ${pid} 2>/dev/null && [ $n -lt 300 ]; do usleep 100000; n=$((n+1)); done`, 60_000);
      const o = await guestRun(g, `grep '^{"duration_s"' ${f} || tail -5 ${f}`);
      const line = o.split('\n').find((l) => l.startsWith('{"duration_s"'));
      if (!line) throw new Error(`tsvs testpmd (${fwd}) printed no JSON: ${o.slice(-600)}`);
      const p = (JSON.parse(line) as { ports: { rx_packets: number; tx_packets: number }[] }).ports[0]!;
      return fwd === 'txonly' ? p.tx_packets : p.rx_packets;
    },
  };
}

interface Measured {
  mpps: number;
  sent: number;
  received: number;
  delivered: number;
}

async function measure(ctx: BenchContext, lab: Lab, s: VmSubject, rep: number): Promise<Measured> {
  const [A, B] = lab.vms;
  const tsvsPath = s !== 'kernel-bridge';
  await bindVu(lab, s === 'kernel-tsvs' || s === 'kernel-bridge' ? 'kernel' : 'uio');
  // the counter at the receiver's last host hop
  const delivered = tsvsPath
    ? async (): Promise<number> => (await switchPort(lab, 'vmB')).txPackets
    : async (): Promise<number> => (await linkCounters(lab.ns, 'vmtap1')).txPackets;
  let recvCount: () => Promise<number>;
  let receiver: Endpoint | null = null;
  let sender: Endpoint | null = null;
  let recvBase = 0;
  try {
    if (s === 'kernel-bridge' || s === 'kernel-tsvs') {
      const ifc = await ifaceOf(B.g, s === 'kernel-bridge' ? TAP_ADDR : VU_ADDR);
      recvBase = await kernelRx(B.g, ifc);
      recvCount = async () => (await kernelRx(B.g, ifc)) - recvBase;
      if (tsvsPath) await waitUntil(async () => (await switchPort(lab, 'vmB')).link === 'up' && (await switchPort(lab, 'vmA')).link === 'up', 'guest kernels drive both switch ports', 60_000);
    } else {
      receiver = s === 'dpdk-tsvs' ? await dpdkStart(B.g, 'rxonly', `r${rep}`) : await tspmdStart(B.g, 'rxonly', `r${rep}`);
      await waitUntil(async () => (await switchPort(lab, 'vmB')).link === 'up', 'the receiving PMD sets its device up', 120_000);
      const r = receiver;
      recvCount = async () => r.stop();
    }
    const base = await delivered();
    if (s === 'kernel-bridge' || s === 'kernel-tsvs') {
      sender = await pktgenStart(A.g, await ifaceOf(A.g, s === 'kernel-bridge' ? TAP_ADDR : VU_ADDR), MACS[1][s === 'kernel-bridge' ? 0 : 1]);
    } else {
      sender = s === 'dpdk-tsvs' ? await dpdkStart(A.g, 'txonly', `t${rep}`) : await tspmdStart(A.g, 'txonly', `t${rep}`);
    }
    try {
      await waitUntil(async () => (await delivered()) - base >= 1000, `frames reach the receiving VM (${s})`, 45_000);
    } catch (e) {
      let why = '';
      if (s === 'kernel-bridge' || s === 'kernel-tsvs') {
        const ifc = await ifaceOf(A.g, s === 'kernel-bridge' ? TAP_ADDR : VU_ADDR).catch(() => '?');
        why = (await A.g.run(`grep -e Result -e pkts-sofar -e flags /proc/net/pktgen/${ifc}; cat /sys/class/net/${ifc}/statistics/tx_packets /sys/class/net/${ifc}/operstate`, 30_000).catch((x: Error) => ({ output: x.message }))).output;
      }
      throw new NoTraffic(`${(e as Error).message}; delivered ${(await delivered()) - base}; sender: ${why.replace(/\s+/g, ' ').slice(0, 400)}`);
    }
    await sleep(ctx.warmup * 1000);
    const c0 = await delivered();
    const t0 = performance.now();
    await sleep(ctx.seconds * 1000);
    const c1 = await delivered();
    const t1 = performance.now();
    const sent = await sender.stop();
    sender = null;
    const total = (await settled(delivered, 'delivery after the sender stopped')) - base;
    const received = await recvCount();
    receiver = null;
    // a PMD receiver sees only the sender's frames: exact. A guest kernel also sends and receives a few
    // frames of its own (IPv6/ARP chatter) between our reads of the two counters: a small slack.
    const slack = s.startsWith('kernel') ? KERNEL_CHATTER : 0;
    if (Math.abs(received - total) > slack) throw new Error(`counts disagree: the host delivered ${total} frames to the receiving VM, its ${s.split('-')[0]} receiver counted ${received}`);
    return { mpps: rate(c0, c1, t1 - t0) / 1e6, sent, received, delivered: total };
  } finally {
    await sender?.stop().catch(() => 0);
    await receiver?.stop().catch(() => 0);
  }
}

export async function runVm2vm(ctx: BenchContext): Promise<ScenarioResult> {
  const c = new Collector('vm2vm', 'VM to VM under QEMU/TCG: kernel virtio-net (bridge, tsvs) vs guest PMDs (DPDK, ours) through tsvs, 64 B one way, Mpps');
  c.note(`Two guests (1 vCPU each, TCG: no KVM), the same two for every subject. CPUs: sender's QEMU on CPU ${ctx.genCpu}, receiver's QEMU and the tsvs switch on CPU ${ctx.swCpu}; the Linux bridge runs in the sender's QEMU thread (softirq). Absolute rates are those of emulated CPUs; compare the ratios.`);
  c.note('Rate = frames put into the receiving VM per second (host side: receiver tap tx / switch port tx); every run also checks that the receiver counted what the host delivered (PMDs exactly; guest kernels within 16 frames of their own chatter). sent - received = what the path dropped (the receiver sets the pace).');
  const why = kernelAvailable() ?? (which('qemu-system-x86_64') ? null : 'qemu-system-x86_64 is not installed') ?? (which('dpdk-testpmd') ? null : 'dpdk-testpmd is not installed');
  const subjects = wanted(ctx, VM_SUBJECTS);
  if (why) {
    for (const s of subjects) c.markUnavailable(s, why);
    return c.result();
  }
  const t0 = Date.now();
  let lab: Lab;
  try {
    lab = await startLab(ctx);
  } catch (e) {
    for (const s of subjects) c.markUnavailable(s, `lab did not start: ${errText(e)}`);
    return c.result();
  }
  c.note(`Both guests booted (Node + DPDK image) in ${((Date.now() - t0) / 1000).toFixed(0)} s.`);
  try {
    for (let rep = 0; rep < ctx.reps; rep++) {
      for (const s of rotate(subjects, rep)) {
        if (c.isUnavailable(s)) continue;
        ctx.log(`vm2vm rep ${rep + 1}/${ctx.reps}: ${s}`);
        const ts = Date.now();
        try {
          const m = await measure(ctx, lab, s, rep);
          c.add('64B', 'one way', s, 'Mpps', m.mpps, { sent: m.sent, received: m.received });
          ctx.log(`vm2vm ${s}: ${m.mpps.toFixed(3)} Mpps, sent ${m.sent}, received ${m.received} (${((Date.now() - ts) / 1000).toFixed(0)} s)`);
        } catch (e) {
          if (e instanceof Unavailable || (e instanceof NoTraffic && rep === 0)) c.markUnavailable(s, e.message);
          else {
            ctx.log(`vm2vm ${s} failed: ${errText(e)}`);
            c.fail(s, rep, errText(e));
          }
        }
      }
    }
  } finally {
    await lab.close();
  }
  c.ratio('kernel-tsvs', 'kernel-bridge', { label: 'guest kernel virtio-net: tsvs vhost-user / Linux bridge' });
  c.ratio('dpdk-tsvs', 'kernel-bridge', { label: 'DPDK PMD via tsvs / kernel virtio-net via bridge' });
  c.ratio('dpdk-tsvs', 'kernel-tsvs', { label: 'DPDK PMD / kernel virtio-net, both via tsvs' });
  c.ratio('tspmd-tsvs', 'kernel-bridge', { label: 'TypeScript PMD via tsvs / kernel virtio-net via bridge' });
  c.ratio('tspmd-tsvs', 'dpdk-tsvs', { label: 'TypeScript PMD / DPDK PMD (both via tsvs)' });
  return c.result();
}

export const vm2vm: Scenario = { name: 'vm2vm', title: 'VM to VM: kernel virtio-net vs guest PMDs', run: runVm2vm };

