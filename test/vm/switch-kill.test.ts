/**
 * kill -9 of a guest while it sends: its vhost-user port goes down, the daemon stays healthy and
 * keeps switching between the other two guests without loss, and the guest's memory is
 * unmapped; a new QEMU on the same socket brings the port back up and traffic resumes.
 * Fails (never skips) when qemu or the guest kernel is missing.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { AgentGuest, assertNoLoss, cli, diag, portInfo, portStats, startSwitch, waitPort } from "../harness/vm-switch.js";
import { waitFor } from "../harness/wait.js";

/** Guest-memory mappings (QEMU's memfd "mem") in a process, as /proc/PID/maps lists them. */
function memfdMappings(pid: number): number {
  return fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n").filter((l) => l.includes("/memfd:mem")).length;
}

test("switch: kill -9 of a guest mid-traffic leaves the others unaffected; a new guest on the port works", { timeout: 240_000 }, async (t) => {
  const image = await ensureGuestImage();
  const d = await startSwitch(t);
  const names = ["vm1", "vm2", "vm3"];
  for (const n of names) await cli(d, "add-port", "br0", n, "--type", "vhost-user");
  const socks = await Promise.all(names.map(async (n) => (await portInfo(d, n)).path!));
  const ips = ["10.90.0.1", "10.90.0.2", "10.90.0.3"];
  const mac = (i: number): string => `52:54:00:90:00:0${i + 1}`;
  const start = (i: number, name: string): Promise<AgentGuest> =>
    AgentGuest.start({ name, image, ip: `${ips[i]}/24`, nics: [{ kind: "vhost-user", socket: socks[i]!, mac: mac(i) }], cleanup: t });

  const [g1, g2, g3] = await Promise.all([0, 1, 2].map((i) => start(i, `kill-vm${i + 1}`))) as [AgentGuest, AgentGuest, AgentGuest];
  await Promise.all([g1.ready(), g2.ready(), g3.ready()]);
  for (const n of names) await waitPort(d, n, "up", 10_000);
  const daemonPid = d.proc.pid!;
  const mapsAll = memfdMappings(daemonPid);

  for (const g of [g1, g3]) {
    const r = await g.waitPing(ips[1]!, 30);
    assert.equal(r["ok"], 1, `${JSON.stringify(r)}\n${await diag(d)}`);
  }

  // vm1 floods vm2 with pings; vm3 pings vm2 meanwhile; vm1 dies in the middle
  const rx0 = await portStats(d);
  await g1.run(`g_bgping_start ${ips[1]} 0.01`);
  const p3 = g3.ping(ips[1]!, 100, 0.05);
  // both are under way: the switch has received vm1's flood and vm3's first pings
  let rx1 = rx0;
  await waitFor(async () => {
    rx1 = await portStats(d);
    return rx1.get("vm1")!.rxPackets - rx0.get("vm1")!.rxPackets >= 100 && rx1.get("vm3")!.rxPackets - rx0.get("vm3")!.rxPackets >= 10;
  }, { what: "vm1's flood and vm3's pings at the switch", timeout: 30_000, interval: 100, describe: () => JSON.stringify([rx0.get("vm1"), rx1.get("vm1"), rx0.get("vm3"), rx1.get("vm3")]) });
  process.kill(g1.pid, "SIGKILL");
  const killedAt = Date.now();
  const exit = await g1.guest.exited;
  assert.equal(exit.signal, "SIGKILL");
  const down = await waitPort(d, "vm1", "down", 10_000);
  const downS = (Date.now() - killedAt) / 1000;
  assert.match(down.status, /disconnected|waiting|no data path/, JSON.stringify(down));
  assertNoLoss(await p3, 100, `vm3 -> vm2 while vm1 was killed\n${await diag(d)}`);

  // the daemon is healthy: alive, answers, the other ports up, vm1's guest memory released
  assert.equal(d.proc.exitCode, null, "daemon exited");
  assert.equal((await portInfo(d, "vm2")).link, "up");
  assert.equal((await portInfo(d, "vm3")).link, "up");
  const pmd = JSON.parse(await cli(d, "pmd-stats", "--json")) as { rxPackets: number }[];
  assert.ok(pmd[0]!.rxPackets > 200, JSON.stringify(pmd));
  const stats = await portStats(d);
  assert.ok(stats.get("vm1")!.rxPackets > 50, `vm1 was sending when killed: ${JSON.stringify(stats.get("vm1"))}`);
  let mapsAfter = memfdMappings(daemonPid);
  await waitFor(() => (mapsAfter = memfdMappings(daemonPid)) < mapsAll, { what: "the dead guest's memory unmapped", timeout: 5000, interval: 50, describe: () => `${mapsAll} memfd mappings before, ${mapsAfter} after` });
  assertNoLoss(await g2.ping(ips[2]!, 20), 20, "vm2 -> vm3 after the kill");

  // a new QEMU on vm1's socket: the port comes back
  const g1b = await start(0, "kill-vm1b");
  await g1b.ready();
  const up = await waitPort(d, "vm1", "up", 10_000);
  assert.equal(up.status, "running");
  const r = await g1b.waitPing(ips[1]!, 30);
  assert.equal(r["ok"], 1, `${JSON.stringify(r)}\n${await diag(d)}`);
  assertNoLoss(await g1b.ping(ips[1]!, 30), 30, "new vm1 -> vm2");
  assertNoLoss(await g3.ping(ips[0]!, 10), 10, "vm3 -> new vm1");
  assert.equal(memfdMappings(daemonPid), mapsAll, "mappings back to three guests");

  t.diagnostic(`kill -9: port down ${downS.toFixed(2)} s after the kill; daemon memfd mappings ${mapsAll} -> ${mapsAfter} -> ${memfdMappings(daemonPid)}`);
});
