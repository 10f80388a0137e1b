/**
 * The OpenFlow side-by-side rig: a real OVS (dummy datapath, ports p1..p3 as ofports 1..3, fail_mode
 * secure, OpenFlow 1.3) and a tsvs daemon in a namespace made here with tap ports p1..p3 as ofports
 * 1..3, so that the same `ovs-ofctl -O OpenFlow13 ... unix:SOCK` commands drive both. Everything is
 * ended by the test's `after` hooks.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { NetNs } from './netns.js';
import { startDaemon, type Daemon } from './daemon.js';
import { startDummyOvs, type DummyOvs } from './ovs-dummy.js';

export interface SideBySide {
  ovs: DummyOvs;
  ns: NetNs;
  d: Daemon;
  /** tsvs's management socket for br0, as ovs-ofctl takes it. */
  tsvs: string;
  /** [tsvs, OVS] management sockets. */
  both: string[];
}

export interface SideBySideOptions {
  /** Namespace name prefix. */
  prefix: string;
  /** OVS writes what each dummy port transmits to DIR/ovs-pN.pcap. */
  pcapDir?: string;
  /** Also set tsvs's br0 to fail_mode secure (OVS's always is). */
  secure?: boolean;
}

export async function startSideBySide(t: { after(fn: () => unknown): void }, opts: SideBySideOptions): Promise<SideBySide> {
  const ovs = startDummyOvs();
  t.after(() => ovs.stop());
  ovs.vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=dummy', 'fail_mode=secure', 'protocols=OpenFlow13',
    ...[1, 2, 3].flatMap((i) => ['--', 'add-port', 'br0', `p${i}`, '--', 'set', 'interface', `p${i}`, 'type=dummy', `ofport_request=${i}`,
      ...(opts.pcapDir ? [`options:tx_pcap=${path.join(opts.pcapDir, `ovs-p${i}.pcap`)}`] : [])]));

  const ns = NetNs.create({ prefix: opts.prefix });
  t.after(() => ns.delete());
  ns.exec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
  ns.exec('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
  const d = await startDaemon({ netns: ns.name });
  t.after(async () => { await d.stop(); });
  assert.equal((await d.cli('add-br', 'br0')).code, 0);
  if (opts.secure) await d.cli('set-fail-mode', 'br0', 'secure');
  for (const i of [1, 2, 3]) {
    const r = await d.cli('add-port', 'br0', `p${i}`, '--type', 'tap', '--iface', `p${i}`, '--ofport', String(i));
    assert.equal(r.code, 0, r.stderr);
  }
  const tsvs = `unix:${path.join(d.runDir, 'br0.mgmt')}`;
  return { ovs, ns, d, tsvs, both: [tsvs, ovs.mgmt('br0')] };
}
