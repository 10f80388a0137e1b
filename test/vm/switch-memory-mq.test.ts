/**
 * Guests that stretch the vhost-user memory and queue handling, on one tsvs bridge:
 * - a 4 GiB guest: QEMU's memory table has two regions (0..3 GiB at mmap offset 0, 4..5 GiB at
 *   offset 3 GiB), which tsvs maps with one mapping per region (3 GiB and 1 GiB, counted in
 *   /proc/PID/maps) and views in <= 1 GiB windows on first use;
 * - a guest with 2 vCPUs on a 2-queue-pair port (`--queues 2`, QEMU `mq=on`): Linux enables one
 *   queue pair per vCPU; pings pinned to each vCPU leave through tx queue 0 and 1 (XPS).
 *   QEMU 7.2 announces guest memory with ADD_MEM_REG once per queue pair (CONFIGURE_MEM_SLOTS),
 *   so the backend sees the same region twice on one connection.
 * The guests ping a plain 256 MiB peer and each other and move 4 MiB both ways (md5).
 * Fails (never skips) when qemu or the guest kernel is missing.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { after, before, describe, test } from "node:test";
import type { Daemon } from "../harness/daemon.js";
import { ensureGuestImage } from "../harness/guest-image.js";
import { AgentGuest, assertNoLoss, cli, diag, portInfo, startSwitch, waitPort } from "../harness/vm-switch.js";

const MIB = 4;
const IP = { peer: "10.91.0.1", big: "10.91.0.2", mq: "10.91.0.3" };

/** Sizes (bytes) of QEMU guest-memory mappings ("/memfd:mem") in a process. */
function memfdMappingSizes(pid: number): number[] {
  return fs.readFileSync(`/proc/${pid}/maps`, "utf8").split("\n").filter((l) => l.includes("/memfd:mem")).map((l) => {
    const [a, b] = l.split(" ")[0]!.split("-");
    return Number(BigInt(`0x${b}`) - BigInt(`0x${a}`));
  }).sort((x, y) => x - y);
}

/** a listens, b sends MIB MiB; checks size and md5. */
async function transfer(a: AgentGuest, b: AgentGuest, port: number): Promise<void> {
  await a.run(`g_nc_listen ${port}`);
  const send = await b.result(`g_nc_send ${a.ip} ${port} ${MIB}`, "send", 120_000);
  const recv = await a.result("g_nc_wait", "recv", 130_000);
  assert.equal(recv["bytes"], MIB << 20, JSON.stringify(recv));
  assert.equal(recv["md5"], send["md5"]);
}

describe("switch: big-memory and multiqueue guests", { timeout: 300_000 }, () => {
  const cleanup: (() => unknown)[] = [];
  const reg = { after: (fn: () => unknown) => void cleanup.push(fn) };
  let d: Daemon;
  let peer: AgentGuest;
  let big: AgentGuest;
  let mq: AgentGuest;
  let bootS = 0;

  before(async () => {
    const image = await ensureGuestImage();
    d = await startSwitch(reg);
    await cli(d, "add-port", "br0", "peer", "--type", "vhost-user");
    await cli(d, "add-port", "br0", "big", "--type", "vhost-user");
    await cli(d, "add-port", "br0", "mq", "--type", "vhost-user", "--queues", "2");
    const sock = async (p: string): Promise<string> => (await portInfo(d, p)).path!;
    const t0 = Date.now();
    [peer, big, mq] = await Promise.all([
      AgentGuest.start({ name: "peer", image, ip: `${IP.peer}/24`, cleanup: reg, nics: [{ kind: "vhost-user", socket: await sock("peer"), mac: "52:54:00:91:00:01" }] }),
      AgentGuest.start({ name: "big", image, ip: `${IP.big}/24`, memoryMiB: 4096, cleanup: reg, nics: [{ kind: "vhost-user", socket: await sock("big"), mac: "52:54:00:91:00:02" }] }),
      AgentGuest.start({ name: "mq", image, ip: `${IP.mq}/24`, cpus: 2, cleanup: reg, nics: [{ kind: "vhost-user", socket: await sock("mq"), mac: "52:54:00:91:00:03", queues: 2 }] }),
    ]);
    await Promise.all([peer.ready(), big.ready(), mq.ready()]);
    bootS = (Date.now() - t0) / 1000;
  });

  after(async () => {
    for (const fn of cleanup.reverse()) await fn();
  });

  test("4 GiB guest: two memory regions, ping and 4 MiB both ways", async (t) => {
    await waitPort(d, "peer", "up", 10_000);
    await waitPort(d, "big", "up", 10_000);
    // 4 GiB in regions of 3 GiB and 1 GiB, one mapping each; peer and mq: one 256 MiB mapping each
    const sizes = memfdMappingSizes(d.proc.pid!);
    const G = 1 << 30;
    const M256 = 256 << 20;
    assert.deepEqual(sizes.filter((s) => s >= G), [G, 3 * G], `daemon's guest-memory mappings: ${sizes.join(", ")}`);
    assert.ok(sizes.filter((s) => s === M256).length >= 1, sizes.join(", "));

    const r = await big.waitPing(IP.peer, 30);
    assert.equal(r["ok"], 1, `${JSON.stringify(r)}\n${await diag(d)}`);
    const [p1, p2] = await Promise.all([big.ping(IP.peer, 100), peer.ping(IP.big, 100)]);
    assertNoLoss(p1, 100, "big -> peer");
    assertNoLoss(p2, 100, "peer -> big");
    // the big guest's buffers sit anywhere in its 4 GiB, high region included
    await transfer(peer, big, 5001);
    await transfer(big, peer, 5002);
    t.diagnostic(`boot of peer/4 GiB/2-vCPU guests ${bootS.toFixed(1)} s; rtt big->peer ${p1["rtt_avg_ms"]} ms`);
  });

  test("2 queue pairs: the guest uses both, pings from each vCPU, 4 MiB both ways", async (t) => {
    const qa = (JSON.parse(await cli(d, "qemu-args", "mq", "--json")) as string[]).join(" ");
    assert.match(qa, /vhost-user,id=n0,chardev=c0,queues=2 .*mq=on/, qa);
    const rxq = await cli(d, "pmd-rxq-show");
    assert.match(rxq, /port: mq\s+queue-id:\s+0\s/, rxq);
    assert.match(rxq, /port: mq\s+queue-id:\s+1\s/, rxq);
    const qemuFellBack = /unable to start vhost net/.test(mq.guest.stderr());
    await waitPort(d, "mq", "up", 10_000).catch(async (e: Error) => {
      throw new Error(`${e.message}\nQEMU stderr: ${mq.guest.stderr().trim()}\n${await diag(d)}`);
    });
    assert.ok(!qemuFellBack, `QEMU could not start vhost-user on the mq port: ${mq.guest.stderr().trim()}\n${await diag(d)}`);

    const iface = await mq.result("g_iface eth0", "iface2");
    assert.equal(iface["rxqs"], 2, `the 2-vCPU guest uses both queue pairs: ${JSON.stringify(iface)}`);
    assert.equal(iface["txqs"], 2, JSON.stringify(iface));
    const q = "/sys/class/net/eth0/queues";
    const x = await mq.result(`tsvs_result xps tx0="$(cat ${q}/tx-0/xps_cpus)" tx1="$(cat ${q}/tx-1/xps_cpus)"`, "xps");
    const xps = [x["tx0"], x["tx1"]];
    assert.deepEqual(xps, [1, 2], `XPS: vCPU 0 -> tx queue 0, vCPU 1 -> tx queue 1: ${JSON.stringify(x)}`);

    const r = await mq.waitPing(IP.big, 30);
    assert.equal(r["ok"], 1, `${JSON.stringify(r)}\n${await diag(d)}`);
    // mq pings from each vCPU (so from each tx queue) while big pings mq
    const mqPings = (async () => [await mq.ping(IP.big, 50, 0.05, "cpu0", 1), await mq.ping(IP.big, 50, 0.05, "cpu1", 2)])();
    const [pBig, pCpu] = await Promise.all([big.ping(IP.mq, 100), mqPings]);
    assertNoLoss(pBig, 100, "big -> mq");
    for (const [cpu, p] of pCpu.entries()) assertNoLoss(p, 50, `mq (vCPU ${cpu}, tx queue ${cpu}) -> big`);
    await transfer(mq, big, 5003);
    await transfer(big, mq, 5004);
    // the switch received on both of the mq port's rx queues (the guest's tx queues 0 and 1)
    const rxqs = (JSON.parse(await cli(d, "pmd-rxq-show", "--json")) as { rxqs: { name: string; queue: number; rxPackets: number }[] }[])
      .flatMap((r) => r.rxqs).filter((x) => x.name === "mq");
    assert.equal(rxqs.length, 2, JSON.stringify(rxqs));
    for (const x of rxqs) assert.ok(x.rxPackets >= 50, `queue ${x.queue} of mq received ${x.rxPackets} packets: ${JSON.stringify(rxqs)}`);
    t.diagnostic(`mq guest: ${iface["rxqs"]} rx / ${iface["txqs"]} tx queues, xps ${xps.join(",")}; rtt big->mq ${pBig["rtt_avg_ms"]} ms`);
  });
});
