/**
 * tsvs as the vhost-user client (`--type vhost-user-client`) of QEMU guests that listen
 * (`server=on`): two guests ping through the switch; the daemon is stopped and started again on
 * the same run directory, reconnects to the QEMUs that kept waiting, and traffic resumes.
 * Fails (never skips) when qemu or the guest kernel is missing.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { AgentGuest, assertNoLoss, cli, diag, logTail, startSwitch, waitPort } from "../harness/vm-switch.js";
import { waitFor } from "../harness/wait.js";

for (const kind of ["split", "packed"] as const)
test(`switch as vhost-user client: guests listen, daemon restart (and kill -9) reconnects (${kind} rings)`, { timeout: 300_000 }, async (t) => {
  const image = await ensureGuestImage();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-client-"));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const runDir = path.join(tmp, "run");
  const socks = [path.join(tmp, "vm1.sock"), path.join(tmp, "vm2.sock")];
  const ips = ["10.89.0.1", "10.89.0.2"];

  const guests = await Promise.all([0, 1].map((i) =>
    AgentGuest.start({ name: `cl-vm${i + 1}`, image, ip: `${ips[i]}/24`, nics: [{ kind: "vhost-user", socket: socks[i]!, server: true, mac: `52:54:00:89:00:0${i + 1}`, packed: kind === "packed" }], cleanup: t })));
  const [g1, g2] = guests as [AgentGuest, AgentGuest];
  await Promise.all(socks.map((s) => waitFor(() => fs.existsSync(s), { what: `QEMU listens on ${s}`, timeout: 20_000, interval: 50 })));

  let d = await startSwitch(t, { runDir });
  await cli(d, "add-port", "br0", "vm1", "--type", "vhost-user-client", "--path", socks[0]!);
  await cli(d, "add-port", "br0", "vm2", "--type", "vhost-user-client", "--path", socks[1]!);
  await Promise.all([g1.ready(), g2.ready()]);
  await waitPort(d, "vm1", "up", 20_000);
  await waitPort(d, "vm2", "up", 20_000);
  const show = await cli(d, "show");
  assert.match(show, /Port vm1 .*type=vhost-user-client .*link=up/, show);

  const reach = await g1.waitPing(g2.ip, 30);
  assert.equal(reach["ok"], 1, `${JSON.stringify(reach)}\n${await diag(d)}`);
  assertNoLoss(await g1.ping(g2.ip, 50), 50, "vm1 -> vm2 before restart");

  // restart: the guests keep running and pinging while the switch is gone
  await g1.run(`g_bgping_start ${g2.ip} 0.1`);
  const bgStart = Date.now();
  await g1.waitBgpingReplies(3); // the background ping goes through the switch
  const stopping = Date.now();
  await d.stop();
  const down = Date.now();
  // QEMU sets the guest's link down when its backend goes away: both guests have seen the switch go
  for (const g of [g1, g2]) await waitFor(async () => (await g.operstate()) !== "up", { what: `${g.guest.name}: eth0 down after the switch stopped`, timeout: 20_000, interval: 100 });
  d = await startSwitch(t, { runDir, bridge: null }); // bridge and ports come back from the database
  // The control socket answers while the database is still being restored (src/daemon/switch.ts
  // listens before restore()): wait for the restored configuration.
  let restored = "";
  await waitFor(async () => {
    restored = await cli(d, "show");
    return /Port vm2/.test(restored) && !/0 rules/.test(restored);
  }, { what: "the configuration restored from the database", interval: 100, describe: () => restored });
  assert.match(restored, /Port vm1 .*type=vhost-user-client/, restored);
  assert.match(restored, /Port vm2 .*type=vhost-user-client/, restored);
  await waitPort(d, "vm1", "up", 30_000);
  await waitPort(d, "vm2", "up", 30_000);
  const reconnectS = (Date.now() - down) / 1000;

  const again = await g1.waitPing(g2.ip, 30);
  assert.equal(again["ok"], 1, `no traffic after the daemon restart: ${JSON.stringify(again)}\n${logTail(d)}`);
  const resumedS = (Date.now() - down) / 1000;
  const bg = await g1.result("g_bgping_stop", "bgping");
  const bgS = (Date.now() - bgStart) / 1000;
  assertNoLoss(await g1.ping(g2.ip, 50), 50, "vm1 -> vm2 after restart");
  assertNoLoss(await g2.ping(g1.ip, 20), 20, "vm2 -> vm1 after restart");
  assert.match(logTail(d, 200), /port vm1: link up/);

  // kill -9 under traffic: QEMU resends the ring bases it last knew (split: the used index it read
  // back; packed: the last GET_VRING_BASE answer, stale now); the switch resyncs from the rings
  await g1.run(`g_bgping_start ${g2.ip} 0.05`);
  await g1.waitBgpingReplies(5); // under traffic
  const killed = new Promise((r) => d.proc.once("exit", r));
  d.proc.kill("SIGKILL");
  await killed;
  d = await startSwitch(t, { runDir, bridge: null });
  await waitPort(d, "vm1", "up", 30_000);
  await waitPort(d, "vm2", "up", 30_000);
  const again9 = await g1.waitPing(g2.ip, 30);
  assert.equal(again9["ok"], 1, `no traffic after kill -9 and restart: ${JSON.stringify(again9)}\n${logTail(d)}`);
  await g1.result("g_bgping_stop", "bgping");
  assertNoLoss(await g1.ping(g2.ip, 50), 50, "vm1 -> vm2 after kill -9");
  assertNoLoss(await g2.ping(g1.ip, 20), 20, "vm2 -> vm1 after kill -9");
  const show9 = await cli(d, "show");
  assert.doesNotMatch(show9, /broken/, show9);

  t.diagnostic(`daemon stop took ${((down - stopping) / 1000).toFixed(1)} s; ports up again ${reconnectS.toFixed(1)} s after stop, ping answered after ${resumedS.toFixed(1)} s; ` +
    `background ping across the restart: ${bg["received"]}/${bg["sent"]} answered in ${bgS.toFixed(1)} s`);
});
