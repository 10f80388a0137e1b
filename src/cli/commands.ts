/** The table of tsvs subcommands: name, options, and the module that runs it. */

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  arg?: string;
  help: string;
  default?: string | boolean;
}

export interface CommandModule {
  run(values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

export interface CommandSpec {
  name: string;
  args?: string;
  summary: string;
  options?: Record<string, OptionSpec>;
  load(): Promise<CommandModule>;
}

const common: Record<string, OptionSpec> = {
  json: { type: 'boolean', help: 'print the result as JSON' },
  'run-dir': { type: 'string', arg: 'DIR', help: 'daemon run directory (env TSVS_RUN_DIR)' },
};

/** A control command: sends one RPC to the daemon and prints the answer. */
function ctl(name: string, args: string | undefined, summary: string, extra: Record<string, OptionSpec> = {}): CommandSpec {
  return { name, args, summary, options: { ...common, ...extra }, load: () => import('./ctl.js').then((m) => m.command(name)) };
}

export const COMMANDS: CommandSpec[] = [
  {
    name: 'demo',
    summary: 'start a switch with two virtio-user endpoints, push traffic, print tables and stats, shut down',
    options: {
      duration: { type: 'string', arg: 'SECONDS', help: 'seconds of traffic', default: '5' },
      json: { type: 'boolean', help: 'print the final report as JSON' },
    },
    load: () => import('../app/demo.js'),
  },
  {
    name: 'daemon',
    summary: 'run the switch daemon in the foreground (logs to stderr)',
    options: {
      'run-dir': { type: 'string', arg: 'DIR', help: 'sockets, config database, pid (env TSVS_RUN_DIR)' },
      'pmd-cpus': { type: 'string', arg: 'LIST', help: 'CPUs for PMD threads, e.g. 1 or 0,1 (one PMD per CPU)', default: 'one unpinned PMD' },
      'pmd-sleep-max': { type: 'string', arg: 'USEC', help: 'max idle sleep of a PMD in microseconds (0: busy poll)', default: '0' },
      'pmd-auto-lb': { type: 'boolean', help: 'PMD auto load balancing (OVS pmd-auto-lb): move rx queues between PMD threads when one is overloaded and the move evens the load' },
      'pmd-auto-lb-load-threshold': { type: 'string', arg: 'PCT', help: 'a PMD thread this busy over the whole load window is overloaded', default: '95' },
      'pmd-auto-lb-improvement-threshold': { type: 'string', arg: 'PCT', help: 'rebalance only when the load variance improves by this much', default: '25' },
      'pmd-auto-lb-rebal-interval': { type: 'string', arg: 'MIN', help: 'minutes between automatic rebalances (fractions allowed)', default: '1' },
      'pmd-load-interval': { type: 'string', arg: 'MS', help: 'rx-queue load sampling period; loads are taken over the last 10 samples', default: '1000' },
      'one-copy': { type: 'string', arg: 'on|off', help: 'vhost-user to vhost-user on one PMD thread: copy each frame once, guest to guest (headers through a private copy)', default: 'off' },
      'pmd-perf-metrics': { type: 'boolean', help: 'pmd-stats also splits the time per packet into rx, processing and tx (costs a few clock reads per burst)' },
      'pool-size': { type: 'string', arg: 'N', help: 'packet buffers in the shared mempool (N x buffer size must stay under 1 GiB)', default: '16384' },
      'max-mtu': {
        type: 'string', arg: 'MTU',
        help: 'largest port MTU, 68..9710; sizes the packet buffers (MTU + 22 rounded up to 128, + 128 headroom, at least 2176 B: 9000 -> 9216 B, 16384 buffers = 144 MiB)',
        default: '1500',
      },
      'max-guest-mem': {
        type: 'string', arg: 'GIB',
        help: 'most guest memory one vhost-user frontend may share, in GiB (1..65536); a bigger memory table is refused',
        default: '1024',
      },
      'log-level': { type: 'string', arg: 'LEVEL', help: 'trace|debug|info|warn|error', default: 'info' },
      metrics: { type: 'string', arg: 'ADDR:PORT', help: 'serve Prometheus metrics at http://ADDR:PORT/metrics (PORT alone: 127.0.0.1; port 0: any free port, said in the log)', default: 'off' },
      web: { type: 'string', arg: 'ADDR:PORT', help: 'serve the live web dashboard at http://ADDR:PORT/ (PORT alone: 127.0.0.1)', default: 'off' },
      ovsdb: {
        type: 'string', arg: 'REMOTE',
        help: "configuration from ovsdb-server's Open_vSwitch database (unix:PATH or tcp:HOST:PORT), as ovs-vswitchd; conf.json is then not used",
      },
      'ovsdb-stats-interval': { type: 'string', arg: 'MS', help: 'OVSDB mode: how often Interface statistics and link state are written', default: '5000' },
    },
    load: () => import('../daemon/main.js'),
  },
  ctl('add-br', 'BR', 'add a bridge'),
  ctl('del-br', 'BR', 'delete a bridge and its ports'),
  ctl('add-port', 'BR NAME', 'add a port to a bridge', {
    type: { type: 'string', arg: 'TYPE', help: 'vhost-user | vhost-user-client | tap | afpacket | vxlan' },
    path: { type: 'string', arg: 'SOCK', help: 'vhost-user socket (server: created in the run dir by default)' },
    iface: { type: 'string', arg: 'IFNAME', help: 'kernel interface (tap, afpacket; vxlan: the underlay, default: the route to --remote-ip)' },
    netns: { type: 'string', arg: 'NS', help: 'network namespace of the kernel interface (afpacket, vxlan)' },
    'remote-ip': { type: 'string', arg: 'A.B.C.D', help: 'vxlan: the remote tunnel endpoint' },
    'local-ip': { type: 'string', arg: 'A.B.C.D', help: "vxlan: our tunnel endpoint address (tsvs answers ARP for it; default: the route's source)" },
    key: { type: 'string', arg: 'VNI|flow', help: 'vxlan: VNI (0..16777215, default 0) or flow (set_field:N->tun_id)' },
    'dst-port': { type: 'string', arg: 'PORT', help: 'vxlan: UDP destination port', default: '4789' },
    queues: { type: 'string', arg: 'N', help: 'queue pairs', default: '1' },
    ofport: { type: 'string', arg: 'N', help: 'OpenFlow port number (default: next free)' },
    mtu: { type: 'string', arg: 'MTU', help: "port MTU (tap, afpacket: set on the device; vhost-user: offered to the guest, default 1500); at most the daemon's --max-mtu" },
    tag: { type: 'string', arg: 'VLAN', help: 'NORMAL: an access port of this VLAN (OVS Port tag)' },
    trunks: { type: 'string', arg: 'LIST', help: 'NORMAL: the VLANs a trunk carries, e.g. 10,20 (default: all)' },
    'vlan-mode': { type: 'string', arg: 'MODE', help: 'NORMAL: access | trunk | native-tagged | native-untagged (default: access with --tag, else trunk)' },
  }),
  ctl('set-port', 'PORT COLUMN=VALUE...', "change a port's VLAN role in NORMAL while it runs, as ovs-vsctl set Port: tag=N, trunks=N,N,..., vlan_mode=MODE (an empty value clears it)"),
  ctl('del-port', 'BR NAME', 'delete a port'),
  ctl('add-flow', 'BR FLOW', 'add an OpenFlow rule (ovs-ofctl syntax)'),
  ctl('del-flows', 'BR [MATCH]', 'delete rules (all, or those matching)', { strict: { type: 'boolean', help: 'match priority and fields exactly' } }),
  ctl('dump-flows', 'BR', 'list the OpenFlow rules with counters'),
  ctl('set-controller', 'BR TARGET...', 'OpenFlow controllers of a bridge: tcp:HOST[:PORT] unix:PATH (connect, reconnecting) ptcp:PORT punix:PATH (listen)'),
  ctl('del-controller', 'BR', 'remove the OpenFlow controllers of a bridge'),
  ctl('get-controller', 'BR', 'controllers of a bridge, whether connected, and the fail mode'),
  ctl('set-fail-mode', 'BR MODE', 'standalone (NORMAL while no controller is connected, the default) or secure'),
  ctl('dump-dp-flows', undefined, 'list the installed datapath (megaflow) entries with masks and hits'),
  ctl('show', undefined, 'bridges, ports, link state and errors'),
  ctl('port-stats', '[PORT]', 'rx/tx counters and drops by reason'),
  ctl('pmd-stats', undefined, 'per PMD thread: packets, cache hits per level, upcalls, ns per packet, busy/idle'),
  ctl('pmd-stats-clear', undefined, 'reset the PMD counters'),
  ctl('memory', undefined, 'RSS by kind (anonymous, files, shared memory), V8 heap of the main thread and of each PMD thread, packet buffers free', {
    gc: { type: 'boolean', help: 'full garbage collections first, in every thread (heap = live objects; each PMD pauses a few ms)' },
    'heap-snapshot': { type: 'string', arg: 'DIR', help: 'also write a V8 heap snapshot of every thread into DIR (for Chrome DevTools; pauses each thread about 1 s)' },
  }),
  ctl('pmd-rxq-show', undefined, 'which PMD thread polls which rx queue, and each queue\'s measured share of its thread (pmd usage %)'),
  ctl('pmd-rxq-rebalance', undefined, 'move rx queues (vhost-user ports) between PMD threads by measured load now, as ovs-appctl dpif-netdev/pmd-rxq-rebalance'),
  ctl('qemu-args', 'PORT', 'print the QEMU arguments that attach a guest NIC to a vhost-user port'),
  ctl('revalidate-wait', undefined, 'wait until the datapath reflects every rule and port change made so far (as ovs-appctl revalidator/wait)'),
  ctl('trace', 'BR FLOW', 'trace a flow (ovs-ofctl match, e.g. in_port=1,dl_dst=...) through the tables: rules hit per table, megaflow, datapath actions (as ovs-appctl ofproto/trace)'),
  ctl('fdb-show', 'BR', 'the MAC learning table (as ovs-appctl fdb/show)'),
  ctl('ovsdb-status', undefined, 'OVSDB mode: connection to ovsdb-server, lock, last applied cur_cfg'),
  ctl('shutdown', undefined, 'stop the daemon'),
  {
    name: 'top',
    summary: 'live view: per port rates and drops, per PMD busy % and cache hits, busiest datapath flows (keys: q r t d n j k)',
    options: {
      'run-dir': common['run-dir'],
      interval: { type: 'string', arg: 'SECONDS', help: 'refresh period', default: '1' },
      count: { type: 'string', arg: 'N', help: 'frames to show, then exit', default: 'until q (1 when stdout is not a terminal)' },
      sort: { type: 'string', arg: 'KEY', help: 'sort ports by rx | tx | drops | name', default: 'rx' },
      plain: { type: 'boolean', help: 'plain text frames even on a terminal' },
    },
    load: () => import('./top.js'),
  },
  {
    name: 'dashboard',
    summary: 'serve the web dashboard of a running daemon (same page as tsvs daemon --web)',
    options: {
      'run-dir': common['run-dir'],
      listen: { type: 'string', arg: 'ADDR:PORT', help: 'where to serve it (PORT alone: 127.0.0.1)', default: '127.0.0.1:8080' },
    },
    load: () => import('./dashboard.js'),
  },
  {
    name: 'capture',
    args: 'PORT [FILTER]',
    summary: "copy a port's frames to a pcap file or stdout (FILTER: an ovs-ofctl match, e.g. udp,tp_dst=53)",
    options: {
      'run-dir': common['run-dir'],
      write: { type: 'string', short: 'w', arg: 'FILE', help: 'write pcap to FILE (- for stdout: tsvs capture p1 -w - | tcpdump -r -); default: a line per frame' },
      count: { type: 'string', short: 'c', arg: 'N', help: 'stop after N frames', default: 'until Ctrl-C' },
      direction: { type: 'string', arg: 'DIR', help: 'rx | tx | both', default: 'both' },
      snaplen: { type: 'string', arg: 'BYTES', help: 'bytes kept of each frame (64..65528)', default: '9216' },
      buffer: { type: 'string', arg: 'FRAMES', help: 'frames the capture ring holds (16..65536)', default: '16 MiB worth, 256..8192' },
    },
    load: () => import('./capture.js'),
  },
  {
    name: 'testpmd',
    summary: 'a testpmd-like application on the tsvs library (ports, forwarding modes, stats)',
    options: {
      port: {
        type: 'string', multiple: true, arg: 'SPEC',
        help: 'vhost-user:path=SOCK[,client=1][,queues=N] | virtio-user:path=SOCK[,server=1][,queues=N][,packed=1] | virtio-pci:PCI_ADDR[,packed=1] (in a VM, device bound to uio_pci_generic; repeatable)',
      },
      fwd: { type: 'string', arg: 'MODE', help: 'io | txonly | rxonly | macswap | mac | txrx (port 0 sends, the others receive and verify)', default: 'io' },
      txpkts: { type: 'string', arg: 'BYTES', help: 'frame size for txonly (64..9000)', default: '64' },
      burst: { type: 'string', arg: 'N', help: 'burst size (1..32)', default: '32' },
      flows: { type: 'string', arg: 'N', help: 'distinct flows in txonly (vary source IP/port)', default: '1' },
      'tx-buffers': { type: 'string', arg: 'N', help: 'txonly: buffers kept and replayed per queue, only seq/check rewritten (0: allocate and fill every frame, as DPDK txonly)', default: '1024' },
      duration: { type: 'string', arg: 'SECONDS', help: 'run time (0: until SIGINT)', default: '0' },
      'stats-period': { type: 'string', arg: 'SECONDS', help: 'print a stats line every period (0: off)', default: '0' },
      cpu: { type: 'string', arg: 'N', help: 'pin the forwarding worker to this CPU' },
      json: { type: 'boolean', help: 'print one final JSON object' },
    },
    load: () => import('../app/testpmd-cli.js'),
  },
  {
    name: 'pci-bind',
    args: 'PCI_ADDR DRIVER',
    summary: 'hand a PCI NIC to a driver: uio_pci_generic (for a userspace PMD, e.g. virtio-pci ports) or back to virtio-pci (the kernel)',
    options: {
      force: { type: 'boolean', help: 'bind even if its kernel interface is up, a process uses it, or no hugepages are reserved' },
      json: { type: 'boolean', help: 'print the result as JSON' },
    },
    load: () => import('./pci.js').then((m) => ({ run: m.runBind })),
  },
  {
    name: 'pci-list',
    summary: 'list the network PCI devices with their driver and kernel interface',
    options: {
      all: { type: 'boolean', help: 'every PCI device, not only network ones' },
      json: { type: 'boolean', help: 'print the list as JSON' },
    },
    load: () => import('./pci.js').then((m) => ({ run: m.runList })),
  },
];
