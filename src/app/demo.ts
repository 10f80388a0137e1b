/**
 * `tsvs demo`: the whole product in one command. Starts a switch with
 * default settings in a temporary run directory, adds a bridge with two
 * vhost-user ports, attaches two virtio-user endpoints built on the tsvs
 * library (a traffic generator and a receiver, in their own worker thread),
 * pushes traffic for a few seconds with a live stats line, prints the flow
 * tables, the datapath flows and the PMD stats, then shuts everything down.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pino, destination } from 'pino';
import { Switch } from '../daemon/switch.js';
import { rpcCall } from '../daemon/control.js';
import { Testpmd, type PortReport } from './testpmd.js';
import { UsageError } from '../util/options.js';

/** What the drops the demo can meet mean, in a user's words. */
const DROP_HINT: Record<string, string> = {
  'tx-no-guest-buffers': 'the receiver had posted no free rx buffers: it is slower than the sender',
  'upcall-queue-full': 'new flows arrived faster than the slow path set them up',
  'pool-exhausted': 'no free packet buffer in the switch',
};

interface RpcText {
  text: string;
  data?: unknown;
}

export async function run(values: Record<string, unknown>): Promise<number> {
  const duration = values.duration !== undefined ? Number(values.duration) : 5;
  if (!(duration > 0 && duration <= 3600)) throw new UsageError(`--duration must be in (0, 3600] seconds, got '${String(values.duration)}'`);
  const json = !!values.json;
  const out = (s: string): void => {
    if (!json) process.stdout.write(s + '\n');
  };
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvs-demo-'));
  const log = pino({ level: process.env.TSVS_LOG_LEVEL ?? 'warn' }, destination(2));
  out(`tsvs demo: switch run dir ${runDir}`);
  const sw = await Switch.start({ runDir, log, poolSize: 8192, pmdSleepMaxUs: 0 });
  const ctl = sw.paths.control;
  const call = async (m: string, p: Record<string, unknown> = {}): Promise<RpcText> => (await rpcCall(ctl, m, p)) as RpcText;
  let gen: Testpmd | null = null;
  try {
    await call('add-br', { bridge: 'br0' });
    const s1 = path.join(runDir, 'vm1.sock');
    const s2 = path.join(runDir, 'vm2.sock');
    await call('add-port', { bridge: 'br0', name: 'vm1', type: 'vhost-user', path: s1 });
    await call('add-port', { bridge: 'br0', name: 'vm2', type: 'vhost-user', path: s2 });
    await call('add-flow', { bridge: 'br0', flow: 'priority=10,in_port=vm1,actions=output:vm2' });
    await call('add-flow', { bridge: 'br0', flow: 'priority=10,in_port=vm2,actions=output:vm1' });
    out('bridge br0: ports vm1, vm2 (vhost-user); rules in_port=vm1 -> vm2 and back');
    // Two virtio-user frontends of the tsvs library in one worker thread: vm1-guest transmits, vm2-guest receives and verifies.
    gen = new Testpmd({
      ports: [
        { name: 'vm1-guest', type: 'virtio-user', path: s1 },
        { name: 'vm2-guest', type: 'virtio-user', path: s2 },
      ],
      fwd: 'txrx', txpkts: 64, burst: 32, flows: 16,
    });
    await gen.ready;
    out(`moving 64-byte frames vm1 -> switch -> vm2 for ${duration} s ...`);
    const t0 = performance.now();
    let prevRx = 0;
    let prevT = t0;
    while (performance.now() - t0 < duration * 1000) {
      await new Promise((r) => setTimeout(r, 1000));
      const [g, s] = await gen.stats();
      const now = performance.now();
      const rate = (s.rx_packets - prevRx) / ((now - prevT) / 1000);
      prevRx = s.rx_packets;
      prevT = now;
      out(`  ${((now - t0) / 1000).toFixed(1)}s  sent ${g.tx_packets}  received ${s.rx_packets}  (${(rate / 1e6).toFixed(3)} Mpps)  bad ${s.rx_bad}`);
    }
    const final: PortReport[] = await gen.stop();
    gen = null;
    const genFinal = final.slice(0, 1);
    const sinkFinal = final.slice(1);
    const flows = await call('dump-flows', { bridge: 'br0' });
    const dpFlows = await call('dump-dp-flows');
    const pmd = await call('pmd-stats');
    const ports = await call('port-stats');
    out('\n== tsvs dump-flows br0');
    out(flows.text);
    out('\n== tsvs dump-dp-flows');
    out(dpFlows.text);
    out('\n== tsvs pmd-stats');
    out(pmd.text);
    out('\n== tsvs port-stats');
    out(ports.text);
    const sent = genFinal[0]?.tx_packets ?? 0;
    const got = sinkFinal[0]?.rx_packets ?? 0;
    const bad = sinkFinal[0]?.rx_bad ?? 0;
    // where every frame went: received, or dropped by the switch (per port and per PMD thread, by reason)
    const why: Record<string, number> = {};
    for (const p of (ports.data ?? []) as { drops?: Record<string, number> }[]) for (const [k, v] of Object.entries(p.drops ?? {})) why[k] = (why[k] ?? 0) + v;
    for (const t of (pmd.data ?? []) as { drops?: Record<string, number> }[]) for (const [k, v] of Object.entries(t.drops ?? {})) why[k] = (why[k] ?? 0) + v;
    const dropped = Object.values(why).reduce((a, b) => a + b, 0);
    const unaccounted = sent - got - dropped;
    out(`\nsummary: sent ${sent}, received ${got} (intact ${got - bad}, bad ${bad}), average ${(got / duration / 1e6).toFixed(3)} Mpps`);
    if (dropped > 0) {
      const reasons = Object.entries(why).map(([k, v]) => `${k} ${v}${DROP_HINT[k] ? ` (${DROP_HINT[k]})` : ''}`).join(', ');
      out(`         dropped by the switch ${dropped}: ${reasons}`);
    }
    out(unaccounted === 0 ? '         every frame is accounted for' : `         unaccounted ${unaccounted} (sent - received - dropped)`);
    if (json) {
      process.stdout.write(
        JSON.stringify({ duration_s: duration, sent, received: got, bad, dropped, drops: why, unaccounted, generator: genFinal, receiver: sinkFinal, pmd: pmd.data, ports: ports.data, dp_flows: dpFlows.data }) + '\n',
      );
    }
    if (got === 0) {
      process.stderr.write('tsvs demo: no packets arrived; see the port-stats drops above\n');
      return 1;
    }
    if (unaccounted !== 0) {
      process.stderr.write(`tsvs demo: ${unaccounted} frames are neither received nor counted as dropped\n`);
      return 1;
    }
    return bad === 0 ? 0 : 1;
  } finally {
    if (gen) await gen.stop();
    await sw.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}
