/**
 * The guest harness's own pieces: QEMU argument builders (pure), kernel command line, module
 * ordering, the guest's result helper, namespaces, one real boot and the kill path.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { describe, test } from "node:test";
import { defaultMac, QemuArgsError, qemuMemoryArgs, qemuTapArgs, qemuVhostUserArgs } from "../../src/app/qemu-args.js";
import { ensureGuestImage, guestScriptDir, moduleLoadOrder, GuestImageError } from "../harness/guest-image.js";
import { NetNs } from "../harness/netns.js";
import { GuestError, guestKernelCmdline, guestQemuArgs, startGuest } from "../harness/qemu.js";
import { waitFor } from "../harness/wait.js";

describe("qemu-args (pure)", () => {
  test("vhost-user NIC, client mode, one queue", () => {
    assert.deepEqual(qemuVhostUserArgs("/run/tsvs/vm1.sock", { mac: "52:54:00:AA:BB:01" }), [
      "-chardev", "socket,id=c0,path=/run/tsvs/vm1.sock",
      "-netdev", "vhost-user,id=n0,chardev=c0",
      "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:01,vectors=0,romfile=",
    ]);
  });

  test("vhost-user NIC, QEMU as server, multiqueue keeps vectors=0", () => {
    assert.deepEqual(qemuVhostUserArgs("/tmp/s", { server: true, queues: 4, index: 2 }), [
      "-chardev", "socket,id=c2,path=/tmp/s,server=on,wait=off",
      "-netdev", "vhost-user,id=n2,chardev=c2,queues=4",
      "-device", "virtio-net-pci,netdev=n2,mac=52:54:00:74:73:02,mq=on,vectors=0,romfile=",
    ]);
  });

  test("vhost-user NIC, packed rings and no mergeable rx buffers", () => {
    assert.equal(qemuVhostUserArgs("/tmp/s", { packed: true, mrgRxbuf: false })[5],
      "virtio-net-pci,netdev=n0,mac=52:54:00:74:73:00,packed=on,mrg_rxbuf=off,vectors=0,romfile=");
    assert.equal(qemuVhostUserArgs("/tmp/s", { packed: false, mrgRxbuf: true })[5],
      "virtio-net-pci,netdev=n0,mac=52:54:00:74:73:00,vectors=0,romfile=");
  });

  test("pmd images bring -cpu, kernel arguments and a memory floor", () => {
    const img = { kernel: "/k", initrd: "/i", cpu: "max", kernelArgs: ["hugepages=256"], minMemoryMiB: 1024 };
    const s = guestQemuArgs(img, {}).join(" ");
    assert.match(s, / -m 1024M .* -cpu max /);
    assert.match(s, / -append console=ttyS0 panic=-1 loglevel=3 hugepages=256 /);
    assert.throws(() => guestQemuArgs(img, { memoryMiB: 512 }), /at least 1024 MiB/);
  });

  test("vhost-user NIC, client mode with reconnect", () => {
    assert.equal(qemuVhostUserArgs("/tmp/s", { reconnect: 1 })[1], "socket,id=c0,path=/tmp/s,reconnect=1");
  });

  test("tap NIC and memory backend", () => {
    assert.deepEqual(qemuTapArgs("tap0"), [
      "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
      "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:74:73:00,romfile=",
    ]);
    assert.deepEqual(qemuMemoryArgs(), [
      "-m", "256M", "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-machine", "pc,memory-backend=mem",
    ]);
    assert.deepEqual(qemuMemoryArgs({ sizeMiB: 4096, share: false }), [
      "-m", "4096M", "-object", "memory-backend-memfd,id=mem,size=4096M,share=off", "-machine", "pc,memory-backend=mem",
    ]);
    assert.equal(defaultMac(255), "52:54:00:74:73:ff");
  });

  test("arguments QEMU would misparse or reject are refused", () => {
    assert.throws(() => qemuVhostUserArgs("/tmp/a,b"), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs(""), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { queues: 0 }), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { queues: 1.5 }), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { mac: "52:54:00:00:00" }), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { mac: "01:00:5e:00:00:01" }), QemuArgsError); // multicast
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { index: 256 }), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { server: true, reconnect: 1 }), QemuArgsError);
    assert.throws(() => qemuVhostUserArgs("/tmp/s", { reconnect: 0 }), QemuArgsError);
    assert.throws(() => qemuTapArgs("a-very-long-tap-name"), QemuArgsError);
    assert.throws(() => qemuMemoryArgs({ sizeMiB: 8 }), QemuArgsError);
  });

  test("guest command line and full argument list", () => {
    assert.equal(guestKernelCmdline({ ip: "10.0.0.1/24", hold: true, mtu: 9000 }),
      "console=ttyS0 panic=-1 loglevel=3 tsvs.ip=10.0.0.1/24 tsvs.hold=1 tsvs.mtu=9000");
    assert.throws(() => guestKernelCmdline({ "a-b": 1 }), GuestError);
    assert.throws(() => guestKernelCmdline({ x: "two words" }), GuestError);
    assert.throws(() => guestKernelCmdline({ x: "y".repeat(3000) }), GuestError);
    const args = guestQemuArgs({ kernel: "/k", initrd: "/i" }, {
      nics: [{ kind: "vhost-user", socket: "/tmp/v.sock", server: true }, { kind: "tap", ifname: "tap9" }],
    }, "/tmp/script.sh");
    const s = args.join(" ");
    assert.match(s, /^-accel tcg -nodefaults -nographic -no-reboot -m 256M /);
    assert.match(s, / -chardev socket,id=c0,path=\/tmp\/v.sock,server=on,wait=off -netdev vhost-user,id=n0,chardev=c0 /);
    assert.match(s, / -netdev tap,id=n1,ifname=tap9,.* -device virtio-net-pci,netdev=n1,mac=52:54:00:74:73:01,romfile=/);
    assert.match(s, / -fw_cfg name=opt\/tsvs\/script,file=\/tmp\/script.sh$/);
  });
});

describe("guest image pieces", () => {
  test("module load order puts dependencies first and rejects cycles", () => {
    const deps: Record<string, string[]> = {
      virtio_net: ["virtio_ring", "virtio", "net_failover"], net_failover: ["failover"], failover: [],
      virtio: ["virtio_ring"], virtio_ring: [], virtio_pci: ["virtio_ring", "virtio_pci_modern_dev", "virtio"],
      virtio_pci_modern_dev: [],
    };
    const order = moduleLoadOrder(["virtio_net", "virtio_pci"], (m) => deps[m] ?? []);
    assert.equal(new Set(order).size, order.length);
    assert.equal(order.length, 7);
    for (const [m, ds] of Object.entries(deps)) {
      for (const d of ds) assert.ok(order.indexOf(d) < order.indexOf(m), `${d} before ${m}: ${order}`);
    }
    assert.throws(() => moduleLoadOrder(["a"], (m) => (m === "a" ? ["b"] : ["a"])), GuestImageError);
  });

  test("tsvs_result emits JSON (numbers only for plain decimals)", () => {
    const lib = path.join(guestScriptDir(), "lib.sh");
    const out = execFileSync("/bin/busybox", ["sh", "-c",
      `. ${lib}; tsvs_result r a=1 b=-2.5 c=007 d=0123456789abcdef0123456789abcdef e=12345678901234567890 ` +
      `f='q"uo\\te' g= h=52:54:00:00:00:01 i=0`], { encoding: "utf8" });
    const m = /^TSVS-RESULT (.*)\n$/.exec(out);
    assert.ok(m, out);
    assert.deepEqual(JSON.parse(m[1]!), {
      name: "r", a: 1, b: -2.5, c: "007", d: "0123456789abcdef0123456789abcdef", e: "12345678901234567890",
      f: 'q"uo\\te', g: "", h: "52:54:00:00:00:01", i: 0,
    });
  });
});

describe("namespaces", () => {
  test("bridge, taps and veth inside a private namespace, deleted afterwards", (t) => {
    const a = NetNs.create({ prefix: "unit", cleanup: t });
    const b = NetNs.create({ prefix: "unit", cleanup: t });
    assert.notEqual(a.name, b.name);
    a.addBridge("br0");
    a.addTap("tap0", { bridge: "br0", mtu: 9000 });
    a.addVeth("va", "vb", { bridge: "br0", peer: b });
    const links = a.ip("-o", "link", "show");
    assert.match(links, /tap0: .*mtu 9000 .*master br0/);
    assert.match(links, /va@.*master br0/);
    assert.match(b.ip("-o", "link", "show", "vb"), /vb@/);
    a.delete();
    b.delete();
    const list = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    assert.ok(!list.includes(a.name) && !list.includes(b.name), list);
  });
});

describe("qemu guests", () => {
  test("a guest boots, runs the fw_cfg script with its parameters and powers off (2 GiB RAM)", { timeout: 120_000 }, async (t) => {
    const image = await ensureGuestImage();
    const g = await startGuest({
      name: "boot", image, memoryMiB: 2048, cleanup: t,
      params: { greeting: "hello", n: 42 },
      script: `tsvs_result env greeting="$TSVS_GREETING" n="$TSVS_N" ` +
        `mem_kb="$(sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo)" ifaces="$(ls /sys/class/net | tr '\\n' ' ')"\nexit 3\n`,
    });
    await g.waitFor(/TSVS-BOOTED/, 60_000);
    const run = await g.finished(60_000);
    assert.equal(run.exit.code, 0, run.output);
    assert.equal(run.scriptExit, 3);
    // No NIC: /init says so, and the script still ran.
    assert.deepEqual(run.problems, ["no ethernet interface"]);
    const env = run.results.find((r) => r.name === "env");
    assert.ok(env, run.output);
    assert.equal(env["greeting"], "hello");
    assert.equal(env["n"], 42);
    assert.equal(env["ifaces"], "lo ");
    assert.ok(Number(env["mem_kb"]) > 1_800_000, `MemTotal ${env["mem_kb"]} kB`);
    await assert.rejects(g.waitFor(/never printed/, 10_000), GuestError);
    // `since` searches from an offset of output(); match.index is absolute.
    const first = await g.waitFor(/TSVS-\w+/, 1000);
    assert.equal(first[0], "TSVS-BOOTED");
    const next = await g.waitFor(/TSVS-\w+/, 1000, first.index + 1);
    assert.ok(next.index > first.index);
    assert.equal(g.output().slice(next.index, next.index + next[0].length), next[0]);
    await assert.rejects(g.waitFor(/TSVS-BOOTED/, 1000, g.output().length), GuestError);
  });

  test("QEMU waits for its vhost-user backend before starting the guest (server mode); kill() ends it", { timeout: 60_000 }, async (t) => {
    const image = await ensureGuestImage();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-kill-"));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, "vu.sock");
    const g = await startGuest({ name: "waiter", image, cleanup: t, nics: [{ kind: "vhost-user", socket: sock, server: true, queues: 2 }] });
    await waitFor(() => /waiting for connection/.test(g.stderr()) || g.hasExited, { what: "QEMU waiting for its backend (or exited)", timeout: 20_000, interval: 50 });
    assert.match(g.stderr(), /QEMU waiting for connection on: .*vu\.sock,server=on/);
    assert.ok(fs.existsSync(sock));
    assert.equal(g.output(), "", "the guest must not have started without its backend");
    const t0 = Date.now();
    const exit = await g.kill(500);
    assert.ok(g.hasExited);
    assert.ok(Date.now() - t0 < 10_000);
    assert.throws(() => process.kill(g.pid, 0));
    t.diagnostic(`QEMU waiting for vhost-user ended by ${exit.signal ?? `exit ${exit.code}`}`);
  });

  test("vhost-user client mode: no socket means exit, unless reconnect is set", { timeout: 60_000 }, async (t) => {
    const image = await ensureGuestImage();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-client-"));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, "absent.sock");
    const plain = await startGuest({ name: "client", image, cleanup: t, nics: [{ kind: "vhost-user", socket: sock }] });
    const e1 = await plain.finished(20_000);
    assert.notEqual(e1.exit.code, 0);
    assert.match(plain.stderr(), /absent\.sock/);
    const patient = await startGuest({ name: "client-rc", image, cleanup: t, nics: [{ kind: "vhost-user", socket: sock, reconnect: 1 }] });
    // it keeps retrying: a backend that appears later gets its connection
    await waitFor(() => /absent\.sock/.test(patient.stderr()) || patient.hasExited, { what: "QEMU's first failed connect", timeout: 20_000, interval: 50 });
    let connected = false;
    const srv = net.createServer((c) => { connected = true; c.destroy(); });
    srv.listen(sock);
    t.after(() => srv.close());
    await waitFor(() => connected, { what: "QEMU (reconnect=1) to connect to the backend that appeared", timeout: 20_000, describe: () => patient.stderr() });
    assert.equal(patient.hasExited, false, patient.stderr());
    await patient.kill(500);
  });

  test("kill() falls back to SIGKILL when SIGTERM is ignored", { timeout: 30_000 }, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tsvs-kill-"));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const fake = path.join(dir, "stubborn");
    // An ignored disposition survives exec: one process that ignores SIGTERM, as QEMU can.
    fs.writeFileSync(fake, "#!/bin/sh\ntrap '' TERM\necho TSVS-BOOTED\nexec sleep 1000\n", { mode: 0o755 });
    const g = await startGuest({ name: "stubborn", image: { kernel: "/k", initrd: "/i" } as never, qemuBinary: fake, cleanup: t });
    await g.waitFor(/TSVS-BOOTED/, 10_000);
    // the shell has exec'd sleep (which inherits the ignored SIGTERM)
    await waitFor(() => fs.readFileSync(`/proc/${g.pid}/comm`, "utf8").trim() === "sleep", { what: "the stub to exec sleep" });
    const exit = await g.kill(300);
    assert.equal(exit.signal, "SIGKILL");
  });

  test("a missing QEMU binary fails loudly", async () => {
    await assert.rejects(
      startGuest({ image: { kernel: "/nonexistent", initrd: "/nonexistent" } as never, qemuBinary: "/nonexistent/qemu" }),
      GuestError,
    );
  });
});
