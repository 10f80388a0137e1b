/**
 * The OpenFlow side-by-side rig: a real OVS (dummy datapath, ports p1..p3 as ofports 1..3, fail_mode
 * secure, OpenFlow 1.3) and a tsvs daemon in a namespace made here with tap ports p1..p3 as ofports
 * 1..3, so that the same `ovs-ofctl -O OpenFlow13 ... unix:SOCK` commands drive both. Everything is
 * ended by the test's `after` hooks.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { waitFor } from './wait.js';
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

/**
 * Record what tsvs transmits on its tap ports p1..p3 (tcpdump in the namespace) into
 * DIR/tsvs-pN.pcap, next to OVS's DIR/ovs-pN.pcap (the rig's pcapDir); returns once every
 * tcpdump listens. The captures end with the test.
 */
export async function captureTsvsTaps(t: { after(fn: () => unknown): void }, rig: SideBySide, dir: string): Promise<void> {
  const dumps: ChildProcess[] = [];
  t.after(() => { for (const p of dumps) if (p.exitCode === null) p.kill('SIGKILL'); });
  for (const i of [1, 2, 3]) {
    const p = spawn('ip', ['netns', 'exec', rig.ns.name, 'tcpdump', '-i', `p${i}`, '-w', path.join(dir, `tsvs-p${i}.pcap`), '-U', '-n', '-s', '0'],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (x) => (err += x));
    dumps.push(p);
    await waitFor(() => /listening on/.test(err), { what: `tcpdump on p${i}`, describe: () => err });
  }
}

/** Frames (hex) of a pcap file (none if it is missing or has no records yet). */
export function pcapFrames(file: string): string[] {
  if (!fs.existsSync(file)) return [];
  const b = fs.readFileSync(file);
  if (b.length < 24) return [];
  const le = b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32LE(0) === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const out: string[] = [];
  for (let p = 24; p + 16 <= b.length; ) {
    const incl = u32(p + 8);
    if (p + 16 + incl > b.length) break;
    out.push(b.subarray(p + 16, p + 16 + incl).toString('hex'));
    p += 16 + incl;
  }
  return out;
}

/** [tsvs, OVS] frames sent out of each port p1..p3, once tsvs's captures hold as many frames as OVS's. */
export async function sentFrames(rig: SideBySide, dir: string): Promise<{ tsvs: string[][]; ovs: string[][] }> {
  const ovs = [1, 2, 3].map((i) => pcapFrames(path.join(dir, `ovs-p${i}.pcap`)));
  const total = ovs.reduce((a, f) => a + f.length, 0);
  const tsvs = await waitFor(() => {
    const f = [1, 2, 3].map((i) => pcapFrames(path.join(dir, `tsvs-p${i}.pcap`)));
    return f.reduce((a, x) => a + x.length, 0) >= total ? f : undefined;
  }, { what: `tcpdump saw the ${total} frames OVS sent`, describe: () => [1, 2, 3].map((i) => pcapFrames(path.join(dir, `tsvs-p${i}.pcap`)).length).join(',') });
  return { tsvs, ovs };
}
