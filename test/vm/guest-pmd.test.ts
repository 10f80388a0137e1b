/**
 * Our own virtio-pci PMD (src/port/virtio-pci.ts) inside a QEMU/TCG guest, through a real tsvs
 * switch, against the host's `tsvs testpmd` (virtio-user). One boot, two NICs: 00:02.0 split
 * rings, 00:03.0 packed rings (QEMU packed=on); QEMU listens, the switch connects
 * (vhost-user-client), so the switch can be killed and started again under the guest.
 *
 *  1. `tsvs pci-bind`: refuses a NIC whose interface is up, then hands both NICs to uio_pci_generic.
 *  2. Per NIC: guest `tsvs testpmd --fwd txonly` -> switch -> host rxonly, and host txonly -> switch
 *     -> guest rxonly: every frame the guest sent reached the switch (its port rx counter), every
 *     frame the switch put in the guest's ring was received, the host got what the switch forwarded,
 *     and no frame arrived corrupted (rx_bad 0, payload check words).
 *  3. Hostile: the switch is killed (SIGKILL) while the guest transmits and started again; the
 *     guest PMD sees the link go down, reinitialises the device when it comes back, and traffic
 *     resumes (host receives again, intact).
 *  4. The MAC-swapping reflector of examples/ answers the host's frames (OpenFlow steers them back).
 *  5. `tsvs pci-bind ADDR virtio-pci` gives the NIC back to the kernel.
 * Fails (never skips) when QEMU, the guest kernel or the node guest image cannot be built.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { AgentGuest, cli, logTail, portInfo, portStats, startSwitch, waitPort, type PortStatsRow } from "../harness/vm-switch.js";
import { waitFor } from "../harness/wait.js";
import { Testpmd, type PortReport, type FwdMode } from "../../src/app/testpmd.js";
import type { Daemon } from "../harness/daemon.js";

const ADDR = ["0000:00:02.0", "0000:00:03.0"];

/** The final JSON line of a guest `tsvs testpmd --json`. */
function guestReport(out: string, what: string): PortReport {
  const line = out.split("\n").find((l) => l.startsWith('{"duration_s"'));
  assert.ok(line, `${what}: no testpmd JSON in the guest output:\n${out}`);
  const r = JSON.parse(line) as { ports: PortReport[] };
  assert.equal(r.ports.length, 1, line);
  return r.ports[0]!;
}

/** Host testpmd on a switch port (virtio-user); resolves once its link is up. */
async function hostTestpmd(sock: string, fwd: FwdMode): Promise<Testpmd> {
  const tp = new Testpmd({ ports: [{ name: "host", type: "virtio-user", path: sock }], fwd, txpkts: 64, burst: 32, flows: 1, poolSize: 4096 });
  await tp.ready;
  try {
    await waitFor(async () => (await tp.stats())[0]?.link === "up", { what: `host testpmd on ${sock}: link up`, timeout: 15_000, interval: 100 });
  } catch (e) {
    await tp.stop();
    throw e;
  }
  return tp;
}

const delta = (a: PortStatsRow | undefined, b: PortStatsRow | undefined, k: "rxPackets" | "txPackets" | "txDropped"): number => (b?.[k] ?? 0) - (a?.[k] ?? 0);

test("guest virtio-pci PMD (TypeScript) <-> tsvs switch <-> host testpmd: split and packed, switch restart, reflector", { timeout: 420_000 }, async (t) => {
  const image = await ensureGuestImage({ node: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-gpmd-"));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const runDir = path.join(tmp, "run");
  const socks = [path.join(tmp, "g0.sock"), path.join(tmp, "g1.sock")];
  const g = await AgentGuest.start({
    name: "gpmd", image, ip: "10.77.0.1/24", cleanup: t,
    nics: [
      { kind: "vhost-user", socket: socks[0]!, server: true, mac: "52:54:00:77:00:01" },
      { kind: "vhost-user", socket: socks[1]!, server: true, mac: "52:54:00:77:00:02", packed: true },
    ],
  });
  await Promise.all(socks.map((s) => waitFor(() => fs.existsSync(s), { what: `QEMU listens on ${s}`, timeout: 30_000, interval: 50 })));
  let d: Daemon = await startSwitch(t, { runDir });
  await cli(d, "add-br", "br1");
  await cli(d, "add-port", "br0", "g0", "--type", "vhost-user-client", "--path", socks[0]!);
  await cli(d, "add-port", "br1", "g1", "--type", "vhost-user-client", "--path", socks[1]!);
  await cli(d, "add-port", "br0", "h0", "--type", "vhost-user");
  await cli(d, "add-port", "br1", "h1", "--type", "vhost-user");
  const hsock = [(await portInfo(d, "h0")).path!, (await portInfo(d, "h1")).path!];
  await g.ready();
  const timings: string[] = [];

  // 1. binding: refused while the kernel interface is up, then both NICs to uio_pci_generic
  const busy = await g.run(`tsvs pci-bind ${ADDR[0]} uio_pci_generic`);
  assert.equal(busy.rc, 1, busy.output);
  assert.match(busy.output, /in use: its interface eth0 is up/);
  for (const a of ADDR) {
    const r = await g.run(`ip link set $(ls /sys/bus/pci/devices/${a}/virtio*/net) down && tsvs pci-bind ${a} uio_pci_generic`, 30_000);
    assert.equal(r.rc, 0, r.output);
    assert.match(r.output, new RegExp(`${a}: virtio-pci -> uio_pci_generic`));
  }
  const list = await g.run("tsvs pci-list");
  assert.match(list.output, /0000:00:02\.0 {2}1af4:1000 .*driver=uio_pci_generic/, list.output);
  // (the switch ports g0/g1 go down now: the device was reset; they come up when a guest PMD starts it)

  // 2. both directions, split (NIC 0) and packed (NIC 1)
  for (const i of [0, 1]) {
    const kind = i === 0 ? "split" : "packed";
    const spec = `virtio-pci:${ADDR[i]}${i === 1 ? ",packed=1" : ""}`;
    const gp = `g${i}`;
    const hp = `h${i}`;
    // guest -> host
    let host = await hostTestpmd(hsock[i]!, "rxonly");
    let s0 = await portStats(d);
    const t0 = Date.now();
    const tx = await g.run(`tsvs testpmd --port ${spec} --fwd txonly --duration 3 --json`, 90_000);
    timings.push(`${kind} guest txonly run ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.equal(tx.rc, 0, tx.output);
    const gtx = guestReport(tx.output, `${kind} txonly`);
    // the frames in flight settle: the switch counted all the guest sent, and the host port's
    // tx + tx drops account for all of them, and the host received what the switch sent
    let s1 = await portStats(d);
    await waitFor(async () => {
      s1 = await portStats(d);
      const out = delta(s0.get(hp), s1.get(hp), "txPackets");
      return delta(s0.get(gp), s1.get(gp), "rxPackets") === gtx.tx_packets && out + delta(s0.get(hp), s1.get(hp), "txDropped") === gtx.tx_packets &&
        (await host.stats())[0]!.rx_packets === out;
    }, { what: `${kind}: the guest's frames settle at the switch and the host`, timeout: 5000, interval: 50 }).catch(() => undefined); // the asserts below say what differs
    const hrx = (await host.stop())[0]!;
    s1 = await portStats(d);
    assert.ok(gtx.tx_packets > 1000, `${kind}: guest sent only ${gtx.tx_packets}: ${JSON.stringify(gtx)}`);
    assert.equal(delta(s0.get(gp), s1.get(gp), "rxPackets"), gtx.tx_packets, `${kind}: the switch received every frame the guest PMD sent\n${JSON.stringify([gtx, s1.get(gp)])}`);
    assert.equal(hrx.rx_packets, delta(s0.get(hp), s1.get(hp), "txPackets"), `${kind}: host got what the switch forwarded: ${JSON.stringify([hrx, s1.get(hp)])}`);
    assert.equal(hrx.rx_packets + delta(s0.get(hp), s1.get(hp), "txDropped"), gtx.tx_packets, `${kind}: frames sent = received + dropped at the host port`);
    assert.equal(hrx.rx_bad, 0, `${kind}: corrupted frames at the host`);
    // host -> guest: the guest receives for 8 s; the host sends for 1.5 s once the guest's port is up
    s0 = await portStats(d);
    const since = g.guest.output().length;
    const rxP = g.run(`tsvs testpmd --port ${spec} --fwd rxonly --duration 8 --stats-period 1 --json`, 90_000);
    await g.guest.waitFor(/port0\[up\]/, 60_000, since);
    host = await hostTestpmd(hsock[i]!, "txonly");
    // the host sends until the switch has put 2000 frames in the guest's ring
    await waitFor(async () => delta(s0.get(gp), await portStats(d).then((s) => s.get(gp)), "txPackets") >= 2000,
      { what: `${kind}: 2000 frames to the guest`, timeout: 30_000, interval: 50 });
    const htx = (await host.stop())[0]!;
    const rx = await rxP;
    assert.equal(rx.rc, 0, rx.output);
    const grx = guestReport(rx.output, `${kind} rxonly`);
    s1 = await portStats(d);
    assert.ok(grx.rx_packets > 1000, `${kind}: guest received only ${grx.rx_packets}: ${JSON.stringify([grx, htx, s1.get(gp)])}`);
    assert.equal(grx.rx_bad, 0, `${kind}: corrupted frames in the guest`);
    assert.equal(grx.rx_dropped, 0, `${kind}: guest PMD dropped frames: ${JSON.stringify(grx)}`);
    assert.equal(delta(s0.get(gp), s1.get(gp), "txPackets"), grx.rx_packets, `${kind}: the guest received every frame the switch put in its ring`);
    assert.equal(delta(s0.get(hp), s1.get(hp), "rxPackets"), htx.tx_packets, `${kind}: the switch received every frame the host sent`);
    timings.push(`${kind}: guest tx ${gtx.tx_packets} in 3 s, guest rx ${grx.rx_packets} (host sent ${htx.tx_packets})`);
  }

  // 3. the switch dies under the transmitting guest and comes back
  await g.run(`(tsvs testpmd --port virtio-pci:${ADDR[0]} --fwd txonly --duration 40 --stats-period 1 --json > /tmp/tp.out 2> /tmp/tp.err &)`);
  let host = await hostTestpmd(hsock[0]!, "rxonly");
  const before = await pollUntil(async () => (await host.stats())[0]!, (r) => r.rx_packets > 1000, 30_000, "host receives from the guest before the kill");
  await host.stop();
  const pid = d.proc.pid!;
  const exited = new Promise((r) => d.proc.once("exit", r));
  process.kill(pid, "SIGKILL");
  await exited;
  const killedAt = Date.now();
  // the guest PMD sees the link down (its once-a-second stats line says so)
  await waitFor(async () => /port0\[down\]/.test((await g.run("cat /tmp/tp.err")).output), { what: "the guest PMD reports the link down", timeout: 30_000, interval: 200 });
  fs.rmSync(path.join(runDir, "tsvs.ctl"), { force: true }); // the dead daemon's socket: wait for the new one
  d = await startSwitch(t, { runDir, bridge: null });
  await waitPort(d, "g0", "up", 30_000);
  host = await hostTestpmd(hsock[0]!, "rxonly");
  const after = await pollUntil(async () => (await host.stats())[0]!, (r) => r.rx_packets > 1000, 30_000, `host receives from the guest after the switch restart\n${logTail(d)}`);
  const resumedS = (Date.now() - killedAt) / 1000;
  const hafter = (await host.stop())[0]!;
  assert.equal(hafter.rx_bad, 0);
  await pollUntil(async () => (await g.run("cat /tmp/tp.out")).output, (o) => o.includes('"duration_s"'), 60_000, "guest testpmd ends");
  const errs = (await g.run("cat /tmp/tp.err")).output;
  // stats lines once a second: the link went down (the kill) and came back, and frames flowed after that
  const lines = [...errs.matchAll(/port0\[(up|down)\] rx \d+ \([0-9.]+ Mpps\) tx (\d+)/g)].map((m) => ({ link: m[1], tx: Number(m[2]) }));
  const firstDown = lines.findIndex((l) => l.link === "down");
  assert.ok(firstDown >= 0, `the guest PMD never reported the link down:\n${errs}`);
  const upAgain = lines.slice(firstDown).filter((l) => l.link === "up");
  assert.ok(upAgain.length > 0 && upAgain[upAgain.length - 1]!.tx > lines[firstDown]!.tx, `the guest PMD did not come back up and send:\n${errs}`);
  const final = guestReport((await g.run("cat /tmp/tp.out")).output, "restart run");
  assert.equal(final.link, "up");
  timings.push(`switch restart: host receiving again ${resumedS.toFixed(1)} s after the kill (${before.rx_packets} before, ${after.rx_packets} after)`);

  // 4. the example reflector: host h1 sends, the reflector in the guest swaps MACs and returns; OpenFlow
  //    steers h1 -> g1 and g1 -> h1b, where a second host port verifies the frames
  await cli(d, "add-port", "br1", "h1b", "--type", "vhost-user");
  const ofp = async (n: string): Promise<number> => (await portInfo(d, n)).ofport;
  await cli(d, "del-flows", "br1");
  await cli(d, "add-flow", "br1", `in_port=${await ofp("h1")},actions=output:${await ofp("g1")}`);
  await cli(d, "add-flow", "br1", `in_port=${await ofp("g1")},actions=output:${await ofp("h1b")}`);
  const h1b = (await portInfo(d, "h1b")).path!;
  await g.run(`(node /tsvs/dist/examples/guest-reflector.js ${ADDR[1]} 12 packed > /tmp/refl.out 2>&1 &)`);
  await waitPort(d, "g1", "up", 60_000); // the reflector has started the device
  const tp = new Testpmd({
    ports: [{ name: "h1", type: "virtio-user", path: hsock[1]! }, { name: "h1b", type: "virtio-user", path: h1b }],
    fwd: "txrx", txpkts: 64, burst: 32, flows: 1, poolSize: 8192,
  });
  await tp.ready;
  const refl = await pollUntil(() => tp.stats(), (r) => r[1]!.rx_packets > 1000, 30_000, "reflected frames reach the host");
  const fin = await tp.stop();
  assert.equal(fin[1]!.rx_bad, 0, JSON.stringify(fin));
  const rout = await pollUntil(async () => (await g.run("cat /tmp/refl.out")).output, (o) => o.includes('"rx"'), 30_000, "reflector ends");
  const rj = JSON.parse(rout.split("\n").find((l) => l.startsWith("{"))!) as { rx: number; tx: number; link: string };
  assert.ok(rj.rx >= fin[1]!.rx_packets && rj.tx >= fin[1]!.rx_packets, `${rout} ${JSON.stringify(fin)}`);
  timings.push(`reflector: ${refl[1]!.rx_packets}+ frames back`);

  // 5. back to the kernel
  const back = await g.run(`tsvs pci-bind ${ADDR[0]} virtio-pci && ls /sys/bus/pci/devices/${ADDR[0]}/virtio*/net`, 30_000);
  assert.equal(back.rc, 0, back.output);
  assert.match(back.output, /uio_pci_generic -> virtio-pci/);
  assert.match(back.output, /eth\d/);
  t.diagnostic(timings.join("; "));
});

async function pollUntil<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms: number, what: string): Promise<T> {
  let v: T | undefined;
  return waitFor(async () => { v = await get(); return ok(v) && { v }; }, { what, timeout: ms, interval: 250, describe: () => JSON.stringify(v) }).then((r) => r.v);
}
