/**
 * DPDK's own virtio PMD (net_virtio, the host's Debian dpdk-testpmd) inside a QEMU/TCG guest,
 * through a real tsvs switch, against our `tsvs testpmd` engine on the host (virtio-user ports).
 * One boot, two NICs, both bound to uio_pci_generic in the guest (`--iova-mode=pa`):
 *   NIC A 0000:00:02.0  split rings, mrg_rxbuf on (QEMU default), 2 queue pairs (mq=on)  -> switch port g0 (br0)
 *   NIC B 0000:00:03.0  packed rings (packed=on), mrg_rxbuf=off, 1 queue pair           -> switch port g1 (br1)
 * QEMU listens (server), the switch connects (vhost-user-client). Each bridge has two host ports,
 * hX (the host sends) and hbX (the host receives), and OpenFlow rules hX -> gX, gX -> hbX.
 *
 *  1. guest txonly on both queues of NIC A -> switch -> host rxonly: exact counts at every hop
 *     (guest TX-packets = switch g0 rx; switch hb0 tx + tx drops = g0 rx; host rx = hb0 tx), and
 *     both of g0's rx queues carried frames.
 *  2. guest io on NIC A under host traffic, then the guest PMD is SIGKILLed: the switch lives,
 *     QEMU stays connected but stops the device (the port is `frontend connected, rings not ready`,
 *     link down), frames for g0 are dropped and counted as link-down drops.
 *  3. meanwhile the other NIC works: host -> switch -> guest macswap on NIC B (packed, no mrg_rxbuf)
 *     -> switch -> host, exact counts at every hop, no frame damaged (rx_bad 0).
 *  4. testpmd is started again on NIC A (same EAL prefix: its stale hugepage files are reclaimed),
 *     g0 comes up and an io loop host -> guest -> host has exact counts again.
 * Fails (never skips) when QEMU, the guest kernel, dpdk-testpmd or the guest image are missing.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { bindToUio, GuestTestpmd, HostTestpmd, waitSettled, type GuestFwdTotals } from "../harness/guest-dpdk.js";
import { AgentGuest, cli, diag, portInfo, portStats, startSwitch, waitPort, type PortStatsRow } from "../harness/vm-switch.js";
import { waitFor } from "../harness/wait.js";
import type { Daemon } from "../harness/daemon.js";
import type { CleanupRegistrar } from "../harness/qemu.js";
import type { PortReport } from "../../src/app/testpmd.js";

const A = "0000:00:02.0";
const B = "0000:00:03.0";
/** Frames the guest sends in the txonly run (counted at the switch). */
const FRAMES = 20_000;
/** Frames the switch puts into the guest's ring in a loop run. */
const LOOP_FRAMES = 5_000;

type Stats = Map<string, PortStatsRow>;
type Counter = "rxPackets" | "txPackets" | "txDropped";
const delta = (a: Stats, b: Stats, port: string, k: Counter): number => (b.get(port)?.[k] ?? 0) - (a.get(port)?.[k] ?? 0);

test("DPDK net_virtio in a TCG guest <-> tsvs switch <-> host testpmd: split+mq+mrg, packed without mrg, PMD killed and restarted", { timeout: 420_000 }, async (t) => {
  const image = await ensureGuestImage({ dpdk: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-gdpdk-"));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const sockA = path.join(tmp, "a.sock");
  const sockB = path.join(tmp, "b.sock");
  const t0 = Date.now();
  const g = await AgentGuest.start({
    name: "gdpdk", image, ip: "10.78.0.1/24", cleanup: t,
    nics: [
      { kind: "vhost-user", socket: sockA, server: true, mac: "52:54:00:78:00:01", queues: 2 },
      { kind: "vhost-user", socket: sockB, server: true, mac: "52:54:00:78:00:02", packed: true, mrgRxbuf: false },
    ],
  });
  await waitFor(() => fs.existsSync(sockA) && fs.existsSync(sockB), { what: "QEMU's vhost-user sockets", timeout: 30_000, interval: 50 });
  const d: Daemon = await startSwitch(t);
  await cli(d, "add-br", "br1");
  await cli(d, "add-port", "br0", "g0", "--type", "vhost-user-client", "--path", sockA, "--queues", "2");
  await cli(d, "add-port", "br1", "g1", "--type", "vhost-user-client", "--path", sockB);
  for (const [br, i] of [["br0", 0], ["br1", 1]] as const) {
    await cli(d, "add-port", br, `h${i}`, "--type", "vhost-user");
    await cli(d, "add-port", br, `hb${i}`, "--type", "vhost-user");
    const of = async (n: string): Promise<number> => (await portInfo(d, n)).ofport;
    await cli(d, "del-flows", br);
    await cli(d, "add-flow", br, `in_port=${await of(`h${i}`)},actions=output:${await of(`g${i}`)}`);
    await cli(d, "add-flow", br, `in_port=${await of(`g${i}`)},actions=output:${await of(`hb${i}`)}`);
  }
  const sock = async (n: string): Promise<string> => (await portInfo(d, n)).path!;
  const [h0, hb0, h1, hb1] = [await sock("h0"), await sock("hb0"), await sock("h1"), await sock("hb1")];
  await g.ready();
  const bootS = (Date.now() - t0) / 1000;
  const notes: string[] = [`boot ${bootS.toFixed(1)} s`];

  // the kernel lets go of both NICs: the device is reset, the switch's ports have no rings
  await bindToUio(g, A);
  await bindToUio(g, B);
  for (const p of ["g0", "g1"]) {
    const s = await waitPort(d, p, "down", 30_000);
    assert.equal(s.status, "frontend connected, rings not ready", `${p} after the guest kernel let go: ${JSON.stringify(s)}`);
  }

  // ---- 1. guest txonly, 2 queues, split, mrg_rxbuf on -> host rxonly
  {
    const host = await HostTestpmd.start(t, [hb0], "rxonly");
    const s0 = await portStats(d);
    const rxq0 = await rxqPackets(d, "g0");
    const own0 = await ownDrops(d);
    const tp = await GuestTestpmd.start(g, { addr: A, fwd: "txonly", queues: 2, prefix: "a" });
    await waitPort(d, "g0", "up", 30_000);
    await waitFor(async () => delta(s0, await portStats(d), "g0", "rxPackets") >= FRAMES, { what: `${FRAMES} frames from the guest at g0`, timeout: 120_000, interval: 250 });
    const gt = await tp.stop();
    const s1 = await waitSettled(() => portStats(d), "switch counters after the guest stopped");
    const own = (await ownDrops(d)) - own0;
    const hr = await settledHost(host, "host rx");
    const hrx = (await host.stop())[0]!;
    const rxq1 = await rxqPackets(d, "g0");
    const ctx = `guest ${fmt(gt)}; switch ${JSON.stringify(pick(s0, s1, ["g0", "hb0"]))}; host ${JSON.stringify(hrx)}`;
    assert.ok(gt.txPackets >= FRAMES, ctx);
    assert.equal(delta(s0, s1, "g0", "rxPackets"), gt.txPackets, `the switch received every frame DPDK sent: ${ctx}`);
    assert.equal(delta(s0, s1, "hb0", "txPackets") + delta(s0, s1, "hb0", "txDropped") + own, gt.txPackets, `the switch sent every frame (tx + tx drops at hb0) or dropped it itself (${own}): ${ctx}`);
    assert.equal(hrx.rx_packets, delta(s0, s1, "hb0", "txPackets"), `the host received every frame the switch put in its ring: ${ctx}`);
    assert.equal(hr, hrx.rx_packets);
    // both tx queues of the guest: two streams in testpmd, two rx queues at the switch
    assert.deepEqual(gt.streams.map((s) => s.txQueue).sort(), [0, 1], `testpmd's streams: ${ctx}`);
    for (const s of gt.streams) assert.ok(s.tx > 0, `queue ${s.txQueue} sent nothing: ${ctx}`);
    assert.equal(gt.streams.reduce((a, s) => a + s.tx, 0), gt.txPackets);
    for (const q of [0, 1]) assert.ok((rxq1[q] ?? 0) - (rxq0[q] ?? 0) > 0, `g0 rx queue ${q} carried nothing: ${JSON.stringify([rxq0, rxq1])}`);
    notes.push(`txonly 2q: guest sent ${gt.txPackets} (q0 ${gt.streams[0]!.tx}, q1 ${gt.streams[1]!.tx}), host got ${hrx.rx_packets}, switch dropped ${delta(s0, s1, "hb0", "txDropped")} at hb0 and ${own} itself`);
  }

  // ---- 2. guest io on NIC A under traffic, then SIGKILL
  let tpA = await GuestTestpmd.start(g, { addr: A, fwd: "io", queues: 2, prefix: "a" });
  await waitPort(d, "g0", "up", 30_000);
  {
    const tx = await HostTestpmd.start(t, [h0], "txonly");
    const rx = await HostTestpmd.start(t, [hb0], "rxonly");
    await waitFor(async () => (await rx.stats())[0]!.rx_packets > 2000, { what: "frames through the guest io loop before the kill", timeout: 60_000, interval: 250 });
    await tpA.kill();
    const killed = await waitPort(d, "g0", "down", 30_000);
    assert.equal(killed.status, "frontend connected, rings not ready", `after the PMD died QEMU stays connected and stops the device: ${JSON.stringify(killed)}`);
    assert.equal(d.proc.exitCode, null, "the switch is alive");
    // the host keeps sending to g0: the switch drops those frames and says why
    const k0 = await portStats(d);
    await waitFor(async () => delta(k0, await portStats(d), "g0", "txDropped") > 1000, { what: "link-down drops at g0 while its PMD is dead", timeout: 30_000, interval: 250, describe: async () => JSON.stringify((await portStats(d)).get("g0")) });
    const k1 = await portStats(d);
    assert.equal(delta(k0, k1, "g0", "txPackets"), 0, `nothing reaches a dead PMD's rings: ${JSON.stringify(k1.get("g0"))}`);
    const reasons = Object.keys(k1.get("g0")!.drops).join(",");
    assert.match(reasons, /link|down/i, `drop reason: ${JSON.stringify(k1.get("g0")!.drops)}`);
    const [ftx, frx] = [(await tx.stop())[0]!, (await rx.stop())[0]!];
    assert.equal(frx.rx_bad, 0);
    notes.push(`kill: ${frx.rx_packets} frames looped before; ${delta(k0, k1, "g0", "txDropped")} dropped at g0 (${reasons}) while dead; host sent ${ftx.tx_packets}`);
  }

  // ---- 3. the other NIC meanwhile: host -> guest macswap (packed, mrg_rxbuf off) -> host
  {
    const tp = await GuestTestpmd.start(g, { addr: B, fwd: "macswap", prefix: "b" });
    await waitPort(d, "g1", "up", 30_000);
    const r = await loop(t, d, tp, "1", h1, hb1);
    notes.push(`macswap packed/no-mrg: ${r}`);
  }

  // ---- 4. the PMD on NIC A again (same prefix), io loop with exact counts
  {
    assert.equal(d.proc.exitCode, null, "the switch is alive");
    tpA = await GuestTestpmd.start(g, { addr: A, fwd: "io", queues: 2, prefix: "a" });
    await waitPort(d, "g0", "up", 30_000);
    const r = await loop(t, d, tpA, "0", h0, hb0);
    notes.push(`io 2q after restart: ${r}`);
  }
  t.diagnostic(notes.join("; "));
});

/**
 * host txonly on hX -> switch -> gX -> guest testpmd (io/macswap, already running) -> switch -> hbX
 * -> host rxonly; the host stops sending once LOOP_FRAMES went into the guest's ring, the loop drains,
 * then every hop is checked.
 */
async function loop(t: CleanupRegistrar, d: Daemon, tp: GuestTestpmd, i: string, hx: string, hbx: string): Promise<string> {
  const [hP, gP, hbP] = [`h${i}`, `g${i}`, `hb${i}`];
  const rx = await HostTestpmd.start(t, [hbx], "rxonly");
  const s0 = await portStats(d);
  const own0 = await ownDrops(d);
  const tx = await HostTestpmd.start(t, [hx], "txonly");
  // the host sends faster than the TCG guest forwards: stop once the guest's ring took LOOP_FRAMES
  await waitFor(async () => delta(s0, await portStats(d), gP, "txPackets") >= LOOP_FRAMES, { what: `${LOOP_FRAMES} frames into the guest's ring at ${gP}`, timeout: 120_000, interval: 100 });
  const htx = (await tx.stop())[0]!;
  const s1 = await waitSettled(() => portStats(d), `the ${gP} loop draining`);
  const own = (await ownDrops(d)) - own0;
  const gt = await tp.stop();
  const hr = await settledHost(rx, "host rx");
  const hrx = (await rx.stop())[0]!;
  const ctx = `guest ${fmt(gt)}; switch ${JSON.stringify(pick(s0, s1, [hP, gP, hbP]))} own drops ${own}; host tx ${JSON.stringify(htx)} rx ${JSON.stringify(hrx)}\n${await diag(d)}`;
  const D = (p: string, k: Counter): number => delta(s0, s1, p, k);
  assert.ok(D(gP, "txPackets") >= LOOP_FRAMES, ctx);
  assert.equal(D(hP, "rxPackets"), htx.tx_packets, `switch ${hP} rx = host tx: ${ctx}`);
  // what the switch did not send (tx + tx drops) on a hop it dropped itself (upcall queue full while the
  // new flow is set up, ...): per hop that is >= 0, and both hops add up to the switch's own drops
  const lostA = D(hP, "rxPackets") - (D(gP, "txPackets") + D(gP, "txDropped"));
  const lostB = D(gP, "rxPackets") - (D(hbP, "txPackets") + D(hbP, "txDropped"));
  assert.ok(lostA >= 0 && lostB >= 0, `the switch sent more than it got: ${ctx}`);
  assert.equal(lostA + lostB, own, `every frame the switch got was sent (tx + tx drops at ${gP}, ${hbP}) or counted in its own drops: ${ctx}`);
  assert.equal(gt.rxPackets, D(gP, "txPackets"), `the guest PMD received every frame the switch put in its ring: ${ctx}`);
  assert.equal(gt.rxDropped, 0, ctx);
  assert.equal(gt.txPackets + gt.txDropped, gt.rxPackets, `the guest forwarded (or counted as tx-dropped) all it received: ${ctx}`);
  assert.equal(D(gP, "rxPackets"), gt.txPackets, `switch ${gP} rx = guest tx: ${ctx}`);
  assert.equal(hrx.rx_packets, D(hbP, "txPackets"), `host rx = switch ${hbP} tx: ${ctx}`);
  assert.equal(hr, hrx.rx_packets);
  assert.ok(hrx.rx_packets > LOOP_FRAMES / 5, `too few frames made the round trip: ${ctx}`);
  assert.equal(hrx.rx_bad, 0, `damaged frames after the round trip: ${ctx}`);
  return `host sent ${htx.tx_packets}, switch -> guest ${D(gP, "txPackets")} (+${D(gP, "txDropped")} dropped), guest tx ${gt.txPackets} (+${gt.txDropped} dropped), host got ${hrx.rx_packets} (switch dropped ${D(gP, "txDropped")} at ${gP}, ${D(hbP, "txDropped")} at ${hbP}, ${own} itself)`;
}

/** Host rx once it stops moving. */
async function settledHost(tp: { stats(): Promise<PortReport[]> }, what: string): Promise<number> {
  return waitSettled(async () => (await tp.stats())[0]!.rx_packets, what, { intervalMs: 200 });
}

/**
 * Frames the switch dropped itself (pmd-stats drops: upcall queue full while a new flow is set up, no
 * rule, ...), without the tx drops that the output port counts too (tx-queue-full, port-down).
 */
async function ownDrops(d: Daemon): Promise<number> {
  const rows = JSON.parse(await cli(d, "pmd-stats", "--json")) as { drops: Record<string, number> }[];
  let n = 0;
  for (const r of rows) for (const [why, k] of Object.entries(r.drops)) if (why !== "tx-queue-full" && why !== "port-down") n += k;
  return n;
}

/** Per-rx-queue packet counts of a port (`tsvs pmd-rxq-show --json`). */
async function rxqPackets(d: Daemon, port: string): Promise<number[]> {
  const rows = (JSON.parse(await cli(d, "pmd-rxq-show", "--json")) as { rxqs: { name: string; queue: number; rxPackets: number }[] }[]).flatMap((r) => r.rxqs);
  const out: number[] = [];
  for (const r of rows) if (r.name === port) out[r.queue] = r.rxPackets;
  return out;
}

function pick(a: Stats, b: Stats, ports: string[]): Record<string, Record<Counter, number>> {
  const o: Record<string, Record<Counter, number>> = {};
  for (const p of ports) o[p] = { rxPackets: delta(a, b, p, "rxPackets"), txPackets: delta(a, b, p, "txPackets"), txDropped: delta(a, b, p, "txDropped") };
  return o;
}

const fmt = (g: GuestFwdTotals): string => JSON.stringify({ ...g, output: undefined });
