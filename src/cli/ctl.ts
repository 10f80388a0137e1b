/**
 * Control commands: each sends one JSON-RPC request to the running daemon
 * and prints the answer, as text for people or as JSON with --json.
 */
import { resolve as resolvePath } from 'node:path';
import { rpcCall } from '../daemon/control.js';
import { runPaths } from '../daemon/run-dir.js';
import { UsageError, intOption } from '../util/options.js';
import { qemuMemoryArgs, qemuVhostUserArgs } from '../app/qemu-args.js';

type Values = Record<string, unknown>;

function need(pos: string[], n: number, what: string): void {
  if (pos.length < n) throw new UsageError(`missing ${what}`);
}


/** "10,20,30" (or "") as VLAN ids. */
function vlanList(text: string, what: string): number[] {
  return text.split(',').map((x) => x.trim()).filter((x) => x !== '').map((x) => intOption(x, what, 0, 4095) as number);
}

/** Build the RPC params of each command from its arguments. */
const PARAMS: Record<string, (v: Values, p: string[]) => Record<string, unknown>> = {
  'add-br': (_v, p) => (need(p, 1, 'bridge name'), { bridge: p[0] }),
  'del-br': (_v, p) => (need(p, 1, 'bridge name'), { bridge: p[0] }),
  'add-port': (v, p) => {
    need(p, 2, 'BR NAME');
    if (v.type === undefined) throw new UsageError('--type is required (vhost-user | vhost-user-client | tap | afpacket | vxlan)');
    return {
      bridge: p[0], name: p[1], type: v.type, path: v.path, iface: v.iface, netns: v.netns,
      remote_ip: v['remote-ip'], local_ip: v['local-ip'], key: v.key, dst_port: v.type === 'vxlan' ? intOption(v['dst-port'], 'dst-port', 1, 65535) : undefined,
      queues: intOption(v.queues, 'queues', 1, 16), ofport: intOption(v.ofport, 'ofport', 1, 0xfeff), mtu: intOption(v.mtu, 'mtu', 68, 65535),
      ...(v.tag !== undefined ? { tag: intOption(v.tag, 'tag', 0, 4095) } : {}),
      ...(v.trunks !== undefined ? { trunks: vlanList(String(v.trunks), '--trunks') } : {}),
      ...(v['vlan-mode'] !== undefined ? { vlan_mode: v['vlan-mode'] } : {}),
    };
  },
  'set-port': (_v, p) => {
    need(p, 2, 'PORT COLUMN=VALUE...');
    const out: Record<string, unknown> = { name: p[0] };
    for (const kv of p.slice(1)) {
      const m = /^(tag|trunks|vlan_mode)=(.*)$/.exec(kv);
      if (!m) throw new UsageError(`'${kv}': expected tag=N, trunks=N,N,... or vlan_mode=MODE (an empty value clears it)`);
      const val = m[2].replace(/^\[(.*)\]$/, '$1').trim();
      if (m[1] === 'tag') out.tag = val === '' ? null : intOption(val, 'tag', 0, 4095);
      else if (m[1] === 'trunks') out.trunks = vlanList(val, 'trunks');
      else out.vlan_mode = val === '' ? null : val;
    }
    return out;
  },
  'del-port': (_v, p) => (need(p, 2, 'BR NAME'), { bridge: p[0], name: p[1] }),
  'add-flow': (_v, p) => (need(p, 2, 'BR FLOW'), { bridge: p[0], flow: p.slice(1).join(' ') }),
  'set-controller': (_v, p) => (need(p, 2, 'BR TARGET...'), { bridge: p[0], targets: p.slice(1) }),
  'del-controller': (_v, p) => (need(p, 1, 'bridge name'), { bridge: p[0] }),
  'get-controller': (_v, p) => (need(p, 1, 'bridge name'), { bridge: p[0] }),
  'set-fail-mode': (_v, p) => (need(p, 2, 'BR standalone|secure'), { bridge: p[0], mode: p[1] }),
  'del-flows': (v, p) => (need(p, 1, 'bridge name'), { bridge: p[0], match: p.slice(1).join(' ') || undefined, strict: !!v.strict }),
  'dump-flows': (_v, p) => (need(p, 1, 'bridge name'), { bridge: p[0] }),
  'dump-dp-flows': () => ({}),
  show: () => ({}),
  'port-stats': (_v, p) => ({ port: p[0] }),
  'pmd-stats': () => ({}),
  'pmd-stats-clear': () => ({}),
  'pmd-rxq-show': () => ({}),
  memory: (v) => ({ gc: !!v.gc, snapshotDir: v['heap-snapshot'] === undefined ? undefined : resolvePath(String(v['heap-snapshot'])) }),
  'pmd-rxq-rebalance': () => ({}),
  'qemu-args': (_v, p) => (need(p, 1, 'port name'), { port: p[0] }),
  'revalidate-wait': () => ({}),
  'ovsdb-status': () => ({}),
  trace: (_v, p) => (need(p, 2, 'BR FLOW'), { bridge: p[0], flow: p.slice(1).join(',') }),
  'fdb-show': (_v, p) => (need(p, 1, 'bridge name'), { bridge: p[0] }),
  shutdown: () => ({}),
};

/** QEMU arguments for a vhost-user port, from the daemon's description of it. */
function qemuArgsOf(result: unknown): { text: string; data: string[] } {
  const d = (result as { data: { path: string; server: boolean; queues?: number } }).data;
  const args = [...qemuMemoryArgs({ share: true }), ...qemuVhostUserArgs(d.path, { server: d.server, queues: d.queues })];
  return { text: args.map((a) => (/[\s,]/.test(a) && !a.startsWith('-') ? `'${a}'` : a)).join(' '), data: args };
}

/** Commands whose answer the CLI turns into text itself (the daemon stays below src/app). */
const RENDER: Record<string, (result: unknown) => { text: string; data: unknown }> = {
  'qemu-args': qemuArgsOf,
};

/** Text rendering: the daemon answers { text?: string, ... }; fall back to JSON. */
function render(result: unknown): string {
  if (result && typeof result === 'object' && 'text' in result && typeof (result as { text: unknown }).text === 'string') {
    return (result as { text: string }).text;
  }
  if (result === null || result === true) return '';
  return JSON.stringify(result, null, 2);
}

/** The module of control command `name` (commands.ts loads it on demand; a CommandModule). */
export function command(name: string): { run(values: Values, positionals: string[]): Promise<number> } {
  return {
    async run(values: Values, positionals: string[]): Promise<number> {
      const mk = PARAMS[name];
      const params = mk(values, positionals);
      const dir = (values['run-dir'] as string | undefined) ?? undefined;
      const answer = await rpcCall(runPaths(dir).control, name, { ...params, json: !!values.json });
      const result = RENDER[name] ? RENDER[name](answer) : answer;
      if (values.json) {
        const r = result && typeof result === 'object' && 'data' in result ? (result as { data: unknown }).data : result;
        process.stdout.write(JSON.stringify(r ?? null, null, 2) + '\n');
      } else {
        const t = render(result);
        if (t) process.stdout.write(t.endsWith('\n') ? t : t + '\n');
      }
      return 0;
    },
  };
}
