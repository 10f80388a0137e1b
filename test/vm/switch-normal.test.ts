/**
 * Two QEMU/TCG guests (Linux virtio-net driver) on vhost-user server ports of one tsvs bridge:
 * ARP (broadcast flood) and ping through the NORMAL rule, a 4 MiB busybox nc transfer compared
 * by md5, MAC/MTU in the guest as configured, then explicit rules (in_port both ways plus ARP
 * flood) and a drop rule. One guest gets its NIC arguments from `tsvs qemu-args`.
 * Fails (never skips) when qemu or the guest kernel is missing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { AgentGuest, assertNoLoss, cli, portInfo, portStats, startSwitch, throughput, waitPort } from "../harness/vm-switch.js";

const PINGS = 100;
const MIB = 4;
const NC_PORT = 5001;

test("switch NORMAL: two guests on vhost-user ports ping, transfer, follow rules", { timeout: 240_000 }, async (t) => {
  const image = await ensureGuestImage();
  const d = await startSwitch(t);
  const add1 = await cli(d, "add-port", "br0", "vm1", "--type", "vhost-user");
  assert.match(add1, /vm1: vhost-user socket \//);
  await cli(d, "add-port", "br0", "vm2", "--type", "vhost-user");
  const before = await portInfo(d, "vm1");
  assert.equal(before.link, "down");
  assert.match(before.status, /waiting for frontend/);

  // vm1 exactly as `tsvs qemu-args` says (minus the memory arguments the harness adds itself)
  const qa = JSON.parse(await cli(d, "qemu-args", "vm1", "--json")) as string[];
  const memEnd = qa.indexOf("-chardev");
  assert.deepEqual(qa.slice(0, memEnd), ["-m", "256M", "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-machine", "pc,memory-backend=mem"]);
  const nicArgs = qa.slice(memEnd);
  assert.ok(nicArgs.join(" ").includes(`path=${before.path}`), nicArgs.join(" "));

  const macs = ["52:54:00:74:73:00", "52:54:00:aa:00:02"]; // vm1: qemu-args' default MAC
  const mtus = [1500, 1400];
  const t0 = Date.now();
  const [g1, g2] = await Promise.all([
    AgentGuest.start({ name: "sw-vm1", image, ip: "10.88.0.1/24", extraArgs: nicArgs, params: { mtu: mtus[0]! }, cleanup: t }),
    AgentGuest.start({
      name: "sw-vm2", image, ip: "10.88.0.2/24", params: { mtu: mtus[1]! }, cleanup: t,
      nics: [{ kind: "vhost-user", socket: (await portInfo(d, "vm2")).path!, mac: macs[1] }],
    }),
  ]);
  await Promise.all([g1.ready(), g2.ready()]);
  const bootS = (Date.now() - t0) / 1000;
  await waitPort(d, "vm1", "up", 10_000);
  const up2 = await waitPort(d, "vm2", "up", 10_000);
  assert.equal(up2.status, "running");

  for (const [i, g] of [g1, g2].entries()) {
    const ifs = g.ifaces();
    assert.equal(ifs.length, 1, JSON.stringify(ifs));
    assert.equal(ifs[0]!["ifname"], "eth0");
    assert.equal(ifs[0]!["mac"], macs[i]);
    assert.equal(ifs[0]!["mtu"], mtus[i]);
  }

  // first contact needs ARP: a broadcast flooded by NORMAL
  const reach = await g1.waitPing(g2.ip, 30);
  assert.equal(reach["ok"], 1, JSON.stringify(reach));
  const macTable = await cli(d, "show");
  assert.match(macTable, /2 learned MACs/, macTable);

  const [p1, p2] = await Promise.all([g1.ping(g2.ip, PINGS), g2.ping(g1.ip, PINGS)]);
  assertNoLoss(p1, PINGS, "vm1 -> vm2");
  assertNoLoss(p2, PINGS, "vm2 -> vm1");

  await g1.run(`g_nc_listen ${NC_PORT}`);
  const send = await g2.result(`g_nc_send ${g1.ip} ${NC_PORT} ${MIB}`, "send", 120_000);
  const recv = await g1.result("g_nc_wait", "recv", 130_000);
  assert.equal(send["bytes"], MIB * 1024 * 1024, JSON.stringify(send));
  assert.equal(recv["bytes"], send["bytes"], JSON.stringify(recv));
  assert.equal(recv["md5"], send["md5"]);

  const stats = await portStats(d);
  for (const p of ["vm1", "vm2"]) {
    const s = stats.get(p)!;
    assert.ok(s.rxPackets >= 2 * PINGS && s.txPackets >= 2 * PINGS, JSON.stringify(s));
  }
  assert.ok(stats.get("vm2")!.rxBytes >= MIB * 1024 * 1024, "the transfer went through vm2's rx");
  const flows = await cli(d, "dump-flows", "br0");
  assert.match(flows, /n_packets=[1-9]\d*.*priority=0 actions=NORMAL/, flows);

  // explicit rules: IP by in_port each way, ARP flooded; NORMAL gone
  await cli(d, "del-flows", "br0");
  await cli(d, "add-flow", "br0", "priority=10,ip,in_port=vm1,actions=output:vm2");
  await cli(d, "add-flow", "br0", "priority=10,ip,in_port=vm2,actions=output:vm1");
  // add-flow and del-flows answer once a revalidation pass has run: the NORMAL megaflows are gone
  await cli(d, "add-flow", "br0", "priority=5,arp,actions=FLOOD");
  await Promise.all([g1.run("ip neigh flush dev eth0"), g2.run("ip neigh flush dev eth0")]);
  const reach2 = await g1.waitPing(g2.ip, 20);
  assert.equal(reach2["ok"], 1, `after explicit rules: ${JSON.stringify(reach2)}\n${await cli(d, "dump-flows", "br0")}`);
  assertNoLoss(await g1.ping(g2.ip, 30), 30, "vm1 -> vm2 by explicit rules");
  const rules = await cli(d, "dump-flows", "br0");
  assert.doesNotMatch(rules, /NORMAL/);
  for (const re of [/n_packets=[1-9]\d*.*priority=10,ip,in_port=vm1 actions=output:vm2/, /n_packets=[1-9]\d*.*priority=5,arp actions=FLOOD/]) {
    assert.match(rules, re, rules);
  }

  // a drop rule stops ICMP (and only ICMP: ARP still answered)
  await cli(d, "add-flow", "br0", "priority=100,icmp,actions=drop");
  const dropped = await g1.ping(g2.ip, 5, 0.2);
  assert.equal(dropped["received"], 0, `ICMP passed a drop rule: ${JSON.stringify(dropped)}`);
  assert.match(await cli(d, "dump-flows", "br0"), /n_packets=[1-9]\d*.*priority=100,icmp actions=drop/);
  await cli(d, "del-flows", "br0", "icmp");
  assertNoLoss(await g2.ping(g1.ip, 10), 10, "after removing the drop rule");

  t.diagnostic(
    `tsvs vhost-user path: boot to command loop ${bootS.toFixed(1)} s; rtt avg ${p1["rtt_avg_ms"]}/${p2["rtt_avg_ms"]} ms; ` +
    `${MIB} MiB in ${(Number(send["t1"]) - Number(send["t0"])).toFixed(2)} s guest time (${throughput(send, MIB)} Mbit/s under TCG); ` +
    `compare with the kernel path's line from test/vm/kernel-path.test.ts (same guests, same formula)`,
  );
});
