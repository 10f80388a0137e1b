/**
 * The guest image for userspace PMDs (issue 12): one boot of the `{ node, dpdk }` variant proves
 * Node 20 and the built tsvs package run in the guest, hugepages are reserved and mounted, the uio
 * modules are loaded and dpdk-testpmd's libraries all resolve. Reports boot time and image size.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { startGuest } from "../harness/qemu.js";

test("pmd guest image: node, tsvs, hugepages, uio, dpdk-testpmd", { timeout: 300_000 }, async (t) => {
  const image = await ensureGuestImage({ node: true, dpdk: true });
  assert.equal(image.cpu, "max");
  assert.ok(image.kernelArgs?.includes("hugepages=256"), JSON.stringify(image.kernelArgs));
  assert.ok(image.modules.includes("uio_pci_generic"), image.modules.join(","));
  const t0 = Date.now();
  const g = await startGuest({
    name: "pmd-image", image, cleanup: t,
    script: [
      `tsvs_result node version="$(node -e 'process.stdout.write(process.version)')"`,
      `tsvs_result tsvs version="$(tsvs --version)" koffi="$(cd /tsvs && node -e 'import("koffi").then(k=>process.stdout.write(String(typeof k.default.load)))')"`,
      `tsvs_result huge total="$(sed -n 's/^HugePages_Total: *//p' /proc/meminfo)" mounted="$(grep -c ' /mnt/huge hugetlbfs' /proc/mounts)"`,
      `tsvs_result mods uio="$(grep -c '^uio_pci_generic ' /proc/modules)"`,
      // every library resolves (the loader lists them without running main), and the plugins are there
      `tsvs_result dpdk missing="$(/lib64/ld-linux-x86-64.so.2 --list /usr/bin/dpdk-testpmd | grep -c 'not found')" ` +
        `plugins="$(ls /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_virtio.so.23 /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_mempool_ring.so.23 | wc -l)"`,
      `tsvs_result uptime s="$(cut -d' ' -f1 /proc/uptime)"`,
    ].join("\n") + "\n",
  });
  const booted = await g.waitFor(/TSVS-BOOTED ([0-9.]+)/, 120_000);
  const bootMs = Date.now() - t0;
  const run = await g.finished(180_000);
  assert.equal(run.scriptExit, 0, run.output);
  assert.deepEqual(run.problems, ["no ethernet interface"], run.output);
  const r = (name: string): Record<string, unknown> => {
    const x = run.results.find((y) => y.name === name);
    assert.ok(x, `no ${name} result:\n${run.output}`);
    return x;
  };
  assert.match(String(r("node")["version"]), /^v20\./);
  assert.match(String(r("tsvs")["version"]), /^tsvs \d+\.\d+\.\d+/);
  assert.equal(r("tsvs")["koffi"], "function", "koffi's native module loads in the guest");
  assert.equal(r("huge")["total"], 256);
  assert.equal(r("huge")["mounted"], 1);
  assert.equal(r("mods")["uio"], 1);
  assert.equal(r("dpdk")["missing"], 0);
  assert.equal(r("dpdk")["plugins"], 2);
  t.diagnostic(`initrd ${(image.initrdBytes! / 1048576).toFixed(1)} MiB; /init after ${booted[1]} s guest uptime, ` +
    `${(bootMs / 1000).toFixed(1)} s wall; script done at ${r("uptime")["s"]} s guest uptime`);
});
