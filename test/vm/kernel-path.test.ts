/**
 * Baseline: two QEMU/TCG guests on the kernel path (virtio-net -> tap -> Linux bridge -> tap ->
 * virtio-net) inside a namespace this test makes. They ping each other and move a few MB with
 * busybox nc, compared by md5. Fails (never skips) when qemu or the kernel package is missing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ensureGuestImage } from "../harness/guest-image.js";
import { NetNs } from "../harness/netns.js";
import { startGuest, type GuestRun, type GuestResult } from "../harness/qemu.js";

const PINGS = 100;
const MIB = 4;
const PORT = 5001;

/** Runs in both guests; TSVS_ROLE is server (receives) or client (sends). */
const SCRIPT = String.raw`
peer=$TSVS_PEER
if [ "$TSVS_ROLE" = server ]; then
  sleep 100000 | nc -l -p ${PORT} > /tmp/rx &
  ncpid=$!
fi
tsvs_wait_ping "$peer" 90 || { tsvs_result error what=peer-unreachable peer="$peer"; exit 1; }
out=$(ping -q -c ${PINGS} -i 0.05 -W 5 "$peer")
sent=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
recv=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
loss=$(echo "$out" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
avg=$(echo "$out" | sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
tsvs_result ping peer="$peer" sent="$sent" received="$recv" loss_pct="$loss" rtt_avg_ms="$avg"
if [ "$TSVS_ROLE" = server ]; then
  n=0
  while kill -0 $ncpid 2>/dev/null; do
    n=$((n+1)); [ $n -ge 600 ] && { tsvs_result error what=receive-timeout; exit 1; }
    usleep 200000
  done
  tsvs_result recv bytes="$(wc -c < /tmp/rx)" md5="$(md5sum /tmp/rx | cut -d' ' -f1)"
else
  dd if=/dev/urandom of=/tmp/tx bs=65536 count=$((${MIB} * 16)) 2>/dev/null
  t0=$(cut -d' ' -f1 /proc/uptime)
  n=0
  until nc "$peer" ${PORT} < /tmp/tx > /dev/null; do
    n=$((n+1)); [ $n -ge 40 ] && { tsvs_result error what=connect-failed; exit 1; }
    usleep 250000
  done
  t1=$(cut -d' ' -f1 /proc/uptime)
  tsvs_result send bytes="$(wc -c < /tmp/tx)" md5="$(md5sum /tmp/tx | cut -d' ' -f1)" t0="$t0" t1="$t1"
fi
`;

function one(run: GuestRun, name: string): GuestResult {
  const rs = run.results.filter((r) => r.name === name);
  assert.equal(rs.length, 1, `expected one "${name}" result, got ${JSON.stringify(run.results)}\n${run.output}`);
  return rs[0]!;
}

test("kernel path: two TCG guests on tap + Linux bridge ping and transfer", { timeout: 240_000 }, async (t) => {
  const image = await ensureGuestImage(); // throws (fails the test) without apt index, kernel package or busybox
  const ns = NetNs.create({ prefix: "kpath", cleanup: t });
  ns.addBridge("br0");
  ns.addTap("tap0", { bridge: "br0" });
  ns.addTap("tap1", { bridge: "br0" });

  const addr = ["10.77.0.1", "10.77.0.2"] as const;
  const macs = ["52:54:00:77:00:01", "52:54:00:77:00:02"] as const;
  const started = Date.now();
  const guests = await Promise.all([0, 1].map((i) =>
    startGuest({
      name: `kpath${i}`,
      image,
      netns: ns.name,
      nics: [{ kind: "tap", ifname: `tap${i}`, mac: macs[i] }],
      params: { ip: `${addr[i]}/24`, mtu: 1500, peer: addr[1 - i]!, role: i === 0 ? "server" : "client", timeout: 180 },
      script: SCRIPT,
      cleanup: t,
    })));
  const runs = await Promise.all(guests.map((g) => g.finished(200_000)));
  const elapsed = (Date.now() - started) / 1000;

  for (const [i, run] of runs.entries()) {
    assert.deepEqual(run.problems, [], `guest ${i} problems\n${run.output}`);
    assert.equal(run.scriptExit, 0, `guest ${i} script failed\n${run.output}`);
    const iface = one(run, "iface");
    assert.equal(iface["ifname"], "eth0");
    assert.equal(iface["mac"], macs[i]);
    assert.equal(iface["mtu"], 1500);
    assert.equal(iface["ip"], `${addr[i]}/24`);
    const ping = one(run, "ping");
    assert.equal(ping["peer"], addr[1 - i]);
    assert.equal(ping["sent"], PINGS);
    assert.equal(ping["received"], PINGS, `guest ${i} lost pings: ${JSON.stringify(ping)}`);
    assert.equal(ping["loss_pct"], 0);
  }
  const recv = one(runs[0]!, "recv");
  const send = one(runs[1]!, "send");
  assert.equal(send["bytes"], MIB * 1024 * 1024);
  assert.equal(recv["bytes"], send["bytes"]);
  assert.match(String(send["md5"]), /^[0-9a-f]{32}$/);
  assert.equal(recv["md5"], send["md5"]);

  const secs = Number(send["t1"]) - Number(send["t0"]);
  t.diagnostic(
    `kernel path baseline: ${elapsed.toFixed(1)} s wall for both guests; rtt avg ${one(runs[0]!, "ping")["rtt_avg_ms"]}/` +
    `${one(runs[1]!, "ping")["rtt_avg_ms"]} ms; ${MIB} MiB in ${secs.toFixed(2)} s guest time ` +
    `(${secs > 0 ? ((MIB * 8) / secs).toFixed(1) : "?"} Mbit/s under TCG)`,
  );
});
