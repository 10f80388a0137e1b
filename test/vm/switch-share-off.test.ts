/**
 * A guest whose RAM is not shared (QEMU `memory-backend-memfd,share=off`) on a tsvs vhost-user
 * port. QEMU still sends the memfd in the memory table, but maps it MAP_PRIVATE itself, so every
 * guest write lands in private copy-on-write pages: the backend's mapping of the memfd stays all
 * zeros (rings included) and nothing can ever move. The switch must say so (port status in
 * `tsvs show` and the log) instead of reporting a healthy link that silently moves nothing.
 *
 * What the backend sees (measured with QEMU 7.2): the normal message sequence (ADD_MEM_REG with
 * one fd for the 256 MiB memfd, rings, SET_STATUS with DRIVER_OK); avail.idx and descriptors
 * read 0 forever. Exact detection: SO_PEERCRED gives QEMU's pid; in /proc/PID/maps the mapping
 * that contains the region's uaddr is `rw-p` (private) instead of `rw-s`.
 * Fails (never skips) when qemu or the guest kernel is missing.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { AgentGuest, cli, logTail, portInfo, portStats, startSwitch, type ShowPort } from "../harness/vm-switch.js";
import { waitFor } from "../harness/wait.js";

/** Permissions of the mapping in process `pid` that holds QEMU's guest RAM memfd. */
function guestRamMapping(pid: number): string {
  const lines = fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n").filter((l) => l.includes("/memfd:memory-backend-memfd"));
  return lines.map((l) => l.split(/\s+/)[1]).join(",");
}

test("switch: a guest with share=off memory is reported, not silently dead", { timeout: 120_000 }, async (t) => {
  const image = await ensureGuestImage();
  const d = await startSwitch(t);
  await cli(d, "add-port", "br0", "vm1", "--type", "vhost-user");
  const g = await AgentGuest.start({
    name: "share-off", image, ip: "10.92.0.1/24", shareMemory: false, cleanup: t,
    nics: [{ kind: "vhost-user", socket: (await portInfo(d, "vm1")).path!, mac: "52:54:00:92:00:01" }],
  });
  await g.ready();
  assert.equal(guestRamMapping(g.pid), "rw-p", "QEMU maps guest RAM privately with share=off");

  // the guest transmits: ARP requests for a neighbour that does not exist
  const r = await g.waitPing("10.92.0.2", 3);
  assert.equal(r["ok"], 0);
  // the switch's verdict on the port (it reads the guest's mapping once the rings are set up)
  let port: ShowPort = await portInfo(d, "vm1");
  await waitFor(async () => /not shared|share=off|private/i.test((port = await portInfo(d, "vm1")).status), {
    what: "vm1's status to name the unshared memory", timeout: 10_000, interval: 100,
    describe: () => `${JSON.stringify(port)}\n--- daemon log (tail) ---\n${logTail(d)}`,
  });
  const rx = (await portStats(d)).get("vm1")!;
  const seen = `tsvs show: link=${port.link} status=${JSON.stringify(port.status)}; port-stats rx=${rx.rxPackets} tx=${rx.txPackets} ` +
    `after the guest sent ARP requests`;
  t.diagnostic(seen);
  assert.equal(rx.rxPackets, 0, `frames came through private memory?! ${seen}`);
  assert.match(port.status, /not shared|share=off|private/i,
    `share=off is not detected: ${seen}\n--- daemon log (tail) ---\n${logTail(d)}`);
  assert.notEqual(port.link, "up", seen);
  assert.match(d.log(), /not shared|share=off|private/i, "the log names the problem too");
});
