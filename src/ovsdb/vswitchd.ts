/**
 * tsvs as ovs-vswitchd's stand-in: the Open_vSwitch database on a real
 * ovsdb-server is the configuration. As vswitchd does, we get_schema, take
 * the lock "ovs_vswitchd", monitor the tables we read, apply the whole
 * database (incrementally: unchanged ports are left alone, so they keep
 * forwarding) and then write back, in one transaction guarded by the lock,
 * `cur_cfg = next_cfg` with the results (ofport, error, link state, ...),
 * which is what a waiting `ovs-vsctl` blocks on. Interface statistics and
 * link state are refreshed every few seconds.
 *
 * The switch is reached only through `SwitchCalls` (its control methods),
 * so this layer does not depend on the daemon.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import { OvsdbClient, OvsdbError } from './client.js';
import { type Row, uuidOf, uuidSet, setOf, optional, strMap, mkSet, mkMap, mkOptional, mkUuid, whereUuid } from './datum.js';

export const DB = 'Open_vSwitch';
export const LOCK = 'ovs_vswitchd';

/** Interface types we can make (Open_vSwitch iface_types). */
export const IFACE_TYPES = ['dpdkvhostuser', 'dpdkvhostuserclient', 'internal', 'system', 'tap', 'vxlan'];
export const DATAPATH_TYPES = ['netdev'];
/** Number given to a bridge's own (internal) port: the highest the datapath has (OVS uses 65534). */
export const LOCAL_PORT = 1023;

/** What this layer needs from the switch: its control methods, by name. */
export interface SwitchCalls {
  call(method: string, params: Record<string, unknown>): Promise<unknown>;
  /** The run directory (default vhost-sock-dir, relative paths). */
  runDir: string;
}

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  debug(msg: string): void;
}

/** Columns read (and, for output columns, compared) per table. */
const READ: Record<string, string[]> = {
  Open_vSwitch: ['bridges', 'next_cfg', 'cur_cfg', 'other_config', 'datapath_types', 'iface_types'],
  Bridge: ['name', 'ports', 'datapath_type', 'fail_mode', 'controller', 'protocols', 'other_config'],
  Port: ['name', 'interfaces', 'tag', 'trunks', 'vlan_mode'],
  Interface: ['name', 'type', 'options', 'ofport_request', 'mtu_request', 'other_config'],
  Controller: ['target'],
  // (Bridge.fail_mode and Bridge.controller are read above)
};

/** How one interface of the database maps onto a tsvs port. */
export interface PortPlan {
  bridge: string;
  name: string;
  /** add-port params, or an error (the port cannot be made). */
  params?: Record<string, unknown>;
  error?: string;
  /** ofport_request, if any. */
  ofportRequest?: number;
}

/** Map an Interface row to tsvs add-port parameters (pure; exported for tests). */
export interface PortVlanColumns { tag?: number; trunks?: number[]; vlan_mode?: string }

/** A Port row's VLAN columns (empty sets left out). */
export function portVlanColumns(port: Row): PortVlanColumns {
  const out: PortVlanColumns = {};
  const tag = optional<number>(port.tag);
  if (typeof tag === 'number') out.tag = tag;
  const trunks = setOf(port.trunks).filter((x): x is number => typeof x === 'number').sort((a, b) => a - b);
  if (trunks.length > 0) out.trunks = trunks;
  const mode = optional<string>(port.vlan_mode);
  if (typeof mode === 'string') out.vlan_mode = mode;
  return out;
}

export function planInterface(bridge: string, iface: Row, sockDir: string): PortPlan {
  const name = String(iface.name);
  const type = String(iface.type ?? '');
  const opts = strMap(iface.options);
  const ofreq = optional<number>(iface.ofport_request);
  const mtu = optional<number>(iface.mtu_request);
  const plan: PortPlan = { bridge, name, ofportRequest: ofreq };
  const base: Record<string, unknown> = { bridge, name, ofport: ofreq, mtu };
  switch (type) {
    case 'dpdkvhostuser':
      plan.params = { ...base, type: 'vhost-user', path: path.join(sockDir, name) };
      break;
    case 'dpdkvhostuserclient': {
      const p = opts.get('vhost-server-path');
      if (!p) plan.error = `${name}: dpdkvhostuserclient needs options:vhost-server-path`;
      else plan.params = { ...base, type: 'vhost-user-client', path: p };
      break;
    }
    case 'internal':
    case 'tap':
      plan.params = { ...base, type: 'tap', iface: name };
      break;
    case '':
    case 'system':
      plan.params = { ...base, type: 'afpacket', iface: name };
      break;
    case 'vxlan': {
      // as OVS: options:remote_ip (a fixed address), local_ip, key (VNI or 'flow'), dst_port; the underlay
      // is the interface of the kernel's route to remote_ip
      const remote = opts.get('remote_ip');
      const unsupported = [...opts.keys()].filter((k) => !['remote_ip', 'local_ip', 'key', 'dst_port'].includes(k));
      if (!remote || remote === 'flow') plan.error = `${name}: vxlan needs options:remote_ip (an IPv4 address; remote_ip=flow is not supported)`;
      else if (unsupported.length > 0) plan.error = `${name}: vxlan options ${unsupported.join(', ')} are not supported (remote_ip, local_ip, key, dst_port are)`;
      else if (mtu !== undefined) plan.error = `${name}: a vxlan interface takes no mtu_request (its MTU is the underlay's - 50)`;
      else plan.params = { ...base, mtu: undefined, type: 'vxlan', remote_ip: remote, local_ip: opts.get('local_ip'), key: opts.get('key'), dst_port: opts.get('dst_port') };
      break;
    }
    default:
      plan.error = `could not open network device ${name} (Address family not supported by protocol)`;
  }
  return plan;
}

/** A stable datapath id for a bridge (16 hex digits), unless other_config:datapath-id sets one. */
export function datapathId(bridge: string, other: Map<string, string>): string {
  const want = other.get('datapath-id');
  if (want && /^[0-9a-fA-F]{16}$/.test(want)) return want.toLowerCase();
  const h = crypto.createHash('sha1').update(`tsvs-bridge:${bridge}`).digest();
  // like OVS: 0000 + a locally administered MAC
  h[0] = (h[0] & 0xfe) | 0x02;
  return '0000' + h.subarray(0, 6).toString('hex');
}

interface Applied {
  key: string;
  bridge: string;
  ofport: number;
  error?: string;
  uuid?: string;
  /** The Port row's tag/trunks/vlan_mode last given to the switch (JSON), applied without re-adding the port. */
  vlan?: string;
}

interface ShowPort {
  name: string;
  ofport: number;
  type: string;
  path?: string;
  iface?: string;
  mtu?: number;
  link: string;
  status: string;
  error: string;
}

interface StatRow {
  port: string;
  ofport: number;
  link: string;
  rxPackets: number;
  rxBytes: number;
  rxDropped: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
}

export interface VswitchdOptions {
  remote: string;
  sw: SwitchCalls;
  log: Logger;
  /** Interface statistics refresh period, ms (OVS: 5000). */
  statsMs?: number;
  probeMs?: number;
}

export class OvsdbVswitchd {
  readonly client: OvsdbClient;
  private readonly sw: SwitchCalls;
  private readonly log: Logger;
  /** The replica of the monitored tables: table -> uuid -> row. */
  private readonly tables = new Map<string, Map<string, Row>>();
  private locked = false;
  private monitoring = false;
  /** Our ports by interface name, as last applied. */
  private readonly applied = new Map<string, Applied>();
  /** Bridges we made. */
  private readonly bridges = new Set<string>();
  /** Controller targets and fail_mode last applied per bridge (JSON). */
  private readonly ctlApplied = new Map<string, string>();
  /** Output columns as last written, row uuid -> column -> JSON (cleared on reconnect). */
  private written = new Map<string, Map<string, string>>();
  private running = false;
  private again = false;
  /** next_cfg value whose configuration has been applied and acknowledged (cur_cfg written). */
  appliedCfg = -1;
  private waiters: { cfg: number; resolve(): void; reject(e: Error): void }[] = [];
  private statsTimer: NodeJS.Timeout | null = null;
  private readonly statsMs: number;
  private stopped = false;

  constructor(opts: VswitchdOptions) {
    this.sw = opts.sw;
    this.log = opts.log;
    this.statsMs = opts.statsMs ?? 5000;
    this.client = new OvsdbClient(opts.remote, {
      probeMs: opts.probeMs,
      log: (level, msg) => this.log[level](`ovsdb ${msg}`),
    });
    this.client.onSession = () => this.session();
    this.client.onNotify = (m, p) => this.onNotify(m, p);
    this.client.onDisconnect = (why) => {
      this.locked = false;
      this.monitoring = false;
      this.log.warn(`ovsdb: disconnected from ${opts.remote} (${why}); the switch keeps forwarding with its current configuration and reconnects`);
    };
  }

  start(): void {
    this.client.start();
    this.statsTimer = setInterval(() => this.kick(), this.statsMs);
    this.statsTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.client.stop();
    for (const w of this.waiters) w.reject(new OvsdbError('stopped'));
    this.waiters = [];
  }

  get connected(): boolean {
    return this.client.connected && this.monitoring;
  }

  get hasLock(): boolean {
    return this.locked;
  }

  private async session(): Promise<void> {
    this.written = new Map();
    this.tables.clear();
    const schema = (await this.client.request('get_schema', [DB])) as { version?: string; tables?: Record<string, { columns: Record<string, unknown> }> };
    const requests: Record<string, { columns: string[] }> = {};
    for (const [t, cols] of Object.entries(READ)) {
      const have = schema.tables?.[t]?.columns;
      if (!have) throw new OvsdbError(`database ${DB} has no table ${t}: is this the Open_vSwitch schema?`);
      requests[t] = { columns: cols.filter((c) => c in have) };
    }
    this.log.info(`ovsdb: connected to ${this.client.remote}, schema ${DB} ${schema.version ?? '?'}`);
    const lock = (await this.client.request('lock', [LOCK])) as { locked?: boolean };
    this.locked = lock?.locked === true;
    if (!this.locked) this.log.warn(`ovsdb: lock "${LOCK}" is held by another client (another ovs-vswitchd?); waiting for it before configuring`);
    const initial = await this.client.request('monitor', [DB, 'tsvs', requests]);
    this.applyUpdates(initial);
    this.monitoring = true;
    this.kick();
  }

  private onNotify(method: string, params: unknown[]): void {
    if (method === 'update') {
      this.applyUpdates(params[1]);
      this.kick();
    } else if (method === 'locked') {
      this.locked = true;
      this.log.info(`ovsdb: got lock "${LOCK}"`);
      this.kick();
    } else if (method === 'stolen') {
      this.locked = false;
      this.log.warn(`ovsdb: lock "${LOCK}" stolen by another client; not configuring until it is back`);
    }
  }

  private applyUpdates(u: unknown): void {
    if (!u || typeof u !== 'object') return;
    for (const [t, rows] of Object.entries(u as Record<string, Record<string, { old?: Row; new?: Row }>>)) {
      let tbl = this.tables.get(t);
      if (!tbl) this.tables.set(t, (tbl = new Map()));
      for (const [uuid, ru] of Object.entries(rows)) {
        if (ru.new) tbl.set(uuid, ru.new);
        else tbl.delete(uuid);
      }
    }
  }

  private table(t: string): Map<string, Row> {
    return this.tables.get(t) ?? new Map();
  }

  /** Run a reconcile pass now (or once more after the current one). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      try {
        do {
          this.again = false;
          await this.reconcile();
        } while (this.again && !this.stopped);
      } catch (e) {
        if (!this.stopped) this.log.warn(`ovsdb: ${(e as Error).message}`);
      } finally {
        this.running = false;
      }
    })();
  }

  /** Resolves once the configuration with next_cfg >= cfg is applied (cur_cfg written). */
  waitCfg(cfg: number, timeoutMs = 30000): Promise<void> {
    if (this.appliedCfg >= cfg) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { cfg, resolve, reject };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new OvsdbError(`the configuration (next_cfg ${cfg}) was not applied within ${timeoutMs} ms`));
        }
      }, timeoutMs).unref();
      this.kick();
    });
  }

  /** Where dpdkvhostuser sockets go (other_config:vhost-sock-dir, relative to the run dir). */
  vhostSockDir(): string {
    return this.sockDir(this.table('Open_vSwitch').values().next().value);
  }

  private sockDir(ovs: Row | undefined): string {
    const d = ovs ? strMap(ovs.other_config).get('vhost-sock-dir') : undefined;
    if (!d) return this.sw.runDir;
    return path.resolve(this.sw.runDir, d);
  }

  private async reconcile(): Promise<void> {
    if (!this.client.connected || !this.monitoring || !this.locked) return;
    const ovsRows = [...this.table('Open_vSwitch').entries()];
    if (ovsRows.length === 0) return; // not initialised yet (ovs-vsctl init)
    const [ovsUuid, ovs] = ovsRows[0];
    const nextCfg = Number(ovs.next_cfg ?? 0);
    const sockDir = this.sockDir(ovs);
    const bridgeRows = this.table('Bridge');
    const portRows = this.table('Port');
    const ifaceRows = this.table('Interface');

    // ---- the desired configuration
    const wantBridges = new Map<string, { uuid: string; row: Row }>();
    const plans = new Map<string, PortPlan & { uuid: string; key: string; vlan: PortVlanColumns }>();
    for (const bu of uuidSet(ovs.bridges)) {
      const b = bridgeRows.get(bu);
      if (!b) continue;
      const bname = String(b.name);
      wantBridges.set(bname, { uuid: bu, row: b });
      for (const pu of uuidSet(b.ports)) {
        const p = portRows.get(pu);
        if (!p) continue;
        for (const iu of uuidSet(p.interfaces)) {
          const i = ifaceRows.get(iu);
          if (!i) continue;
          const plan = planInterface(bname, i, sockDir);
          if (plans.has(plan.name)) continue; // OVS: duplicate interface names; first wins
          plans.set(plan.name, { ...plan, uuid: iu, key: JSON.stringify([plan.bridge, plan.params ?? null, plan.error ?? null]), vlan: portVlanColumns(p) });
        }
      }
    }

    // ---- remove what is gone or changed (before adding, so names and ofports are free)
    for (const [name, a] of [...this.applied]) {
      const want = plans.get(name);
      if (want && want.key === a.key) continue;
      this.applied.delete(name);
      if (a.error === undefined) {
        try {
          await this.sw.call('del-port', { bridge: a.bridge, name });
          this.log.info(`ovsdb: port ${name} removed from ${a.bridge}`);
        } catch (e) {
          this.log.warn(`ovsdb: del-port ${name}: ${(e as Error).message}`);
        }
      }
    }
    for (const b of [...this.bridges]) {
      if (wantBridges.has(b)) continue;
      this.bridges.delete(b);
      try {
        await this.sw.call('del-br', { bridge: b });
        this.log.info(`ovsdb: bridge ${b} removed`);
      } catch (e) {
        this.log.warn(`ovsdb: del-br ${b}: ${(e as Error).message}`);
      }
    }
    for (const b of wantBridges.keys()) {
      if (this.bridges.has(b)) continue;
      try {
        await this.sw.call('add-br', { bridge: b });
        this.bridges.add(b);
        this.log.info(`ovsdb: bridge ${b} added`);
      } catch (e) {
        this.log.warn(`ovsdb: add-br ${b}: ${(e as Error).message}`);
      }
    }
    // ports with an ofport_request first, so that others do not take their numbers
    const todo = [...plans.values()].filter((p) => !this.applied.has(p.name));
    todo.sort((a, b) => (a.ofportRequest !== undefined ? 0 : 1) - (b.ofportRequest !== undefined ? 0 : 1));
    for (const p of todo) {
      const a: Applied = { key: p.key, bridge: p.bridge, ofport: -1, uuid: p.uuid };
      if (!this.bridges.has(p.bridge)) a.error = `bridge ${p.bridge} could not be created`;
      else if (p.error !== undefined) a.error = p.error;
      else {
        let params = p.params!;
        if (p.ofportRequest !== undefined && (await this.ofportTaken(p.ofportRequest))) {
          this.log.warn(`ovsdb: ${p.name}: requested ofport ${p.ofportRequest} is in use; picking another`);
          params = { ...params, ofport: undefined };
        }
        if (p.name === p.bridge && params.ofport === undefined) {
          // the bridge's own port (OVS: LOCAL, 65534): the highest free number, so that
          // the other ports are numbered 1, 2, ... as on OVS
          for (let n = LOCAL_PORT; n > 0; n--) {
            if (!(await this.ofportTaken(n))) {
              params = { ...params, ofport: n };
              break;
            }
          }
        }
        try {
          const r = (await this.sw.call('add-port', params)) as { data?: { ofport?: number } };
          a.ofport = r?.data?.ofport ?? -1;
          this.log.info(`ovsdb: port ${p.name} (${String(params.type)}) added to ${p.bridge} as ofport ${a.ofport}`);
        } catch (e) {
          a.error = (e as Error).message.replace(/^cannot add port [^:]+: /, '');
        }
      }
      if (a.error !== undefined) this.log.warn(`ovsdb: ${p.name}: ${a.error}`);
      this.applied.set(p.name, a);
    }

    // ---- VLAN roles (Port tag, trunks, vlan_mode): changed in place, as OVS reconfigures a bundle
    for (const p of plans.values()) {
      const a = this.applied.get(p.name);
      if (!a || a.error !== undefined) continue;
      const want = JSON.stringify(p.vlan);
      if (a.vlan === want || (a.vlan === undefined && want === '{}')) continue;
      a.vlan = want;
      try {
        await this.sw.call('set-port', { name: p.name, tag: p.vlan.tag ?? null, trunks: p.vlan.trunks ?? [], vlan_mode: p.vlan.vlan_mode ?? null });
        this.log.info(`ovsdb: port ${p.name}: ${want === '{}' ? 'no VLAN role (trunk of all VLANs)' : `VLAN role ${want}`}`);
      } catch (e) {
        this.log.warn(`ovsdb: port ${p.name}: tag/trunks/vlan_mode: ${(e as Error).message}`);
      }
    }

    // ---- controllers and fail_mode (the OpenFlow agent's set-controller / set-fail-mode)
    const ctlRows = this.table('Controller');
    for (const [name, br] of wantBridges) {
      if (!this.bridges.has(name)) continue;
      const targets = uuidSet(br.row.controller).map((u) => ctlRows.get(u)?.target).filter((x): x is string => typeof x === 'string').sort();
      const failMode = optional<string>(br.row.fail_mode) ?? 'standalone';
      const want = JSON.stringify([targets, failMode]);
      if (this.ctlApplied.get(name) === want) continue;
      try {
        await this.sw.call('set-fail-mode', { bridge: name, mode: failMode });
        await this.sw.call('set-controller', { bridge: name, targets });
        this.ctlApplied.set(name, want);
        if (targets.length) this.log.info(`ovsdb: bridge ${name}: controllers ${targets.join(' ')}, fail_mode ${failMode}`);
      } catch (e) {
        this.ctlApplied.set(name, want);
        this.log.warn(`ovsdb: bridge ${name}: controllers ${targets.join(' ')}: ${(e as Error).message}`);
      }
    }
    for (const b of [...this.ctlApplied.keys()]) if (!this.bridges.has(b)) this.ctlApplied.delete(b);

    // ---- PMD auto load balancing (other_config:pmd-auto-lb*, as ovs-vswitchd reads them)
    const oc = strMap(ovs.other_config);
    const lb = {
      enabled: oc.get('pmd-auto-lb') === 'true',
      loadThreshold: oc.get('pmd-auto-lb-load-threshold'),
      improvementThreshold: oc.get('pmd-auto-lb-improvement-threshold'),
      rebalIntervalMin: oc.get('pmd-auto-lb-rebal-interval'),
    };
    // ---- one copy guest-to-guest (other_config:one-copy=true|false, ours: OVS has no such key)
    const oneCopy = oc.get('one-copy') ?? '';
    if (this.oneCopyApplied !== oneCopy) {
      this.oneCopyApplied = oneCopy;
      try {
        await this.sw.call('one-copy-set', { value: oneCopy });
      } catch (e) {
        this.log.warn(`ovsdb: other_config:one-copy: ${(e as Error).message}`);
      }
    }
    const lbWant = JSON.stringify(lb);
    if (this.autoLbApplied !== lbWant) {
      this.autoLbApplied = lbWant;
      try {
        await this.sw.call('pmd-auto-lb-set', lb);
      } catch (e) {
        this.log.warn(`ovsdb: other_config:pmd-auto-lb*: ${(e as Error).message}`);
      }
    }

    // ---- write back (only columns whose value changed), cur_cfg last in the same transaction
    await this.writeBack(ovsUuid, ovs, nextCfg, wantBridges, plans);
  }

  /** The pmd-auto-lb settings last given to the switch (JSON). */
  private autoLbApplied = '';
  private oneCopyApplied = '';

  private async ofportTaken(n: number): Promise<boolean> {
    for (const a of this.applied.values()) if (a.ofport === n) return true;
    const show = (await this.sw.call('show', {})) as { data?: { ports: ShowPort[] }[] };
    return (show.data ?? []).some((b) => b.ports.some((p) => p.ofport === n));
  }

  private diff(uuid: string, cols: Record<string, unknown>): Record<string, unknown> | null {
    let w = this.written.get(uuid);
    if (!w) this.written.set(uuid, (w = new Map()));
    const out: Record<string, unknown> = {};
    let any = false;
    for (const [c, v] of Object.entries(cols)) {
      const j = JSON.stringify(v);
      if (w.get(c) === j) continue;
      out[c] = v;
      any = true;
    }
    return any ? out : null;
  }

  private async writeBack(
    ovsUuid: string,
    ovs: Row,
    nextCfg: number,
    bridges: Map<string, { uuid: string; row: Row }>,
    plans: Map<string, PortPlan & { uuid: string }>,
  ): Promise<void> {
    const show = (await this.sw.call('show', {})) as { data?: { bridge: string; ports: ShowPort[] }[] };
    const byName = new Map<string, ShowPort>();
    for (const b of show.data ?? []) for (const p of b.ports) byName.set(p.name, p);
    const stats = new Map<string, StatRow>();
    try {
      const ps = (await this.sw.call('port-stats', {})) as { data?: StatRow[] };
      for (const r of ps.data ?? []) {
        const o = stats.get(r.port);
        if (!o || r.rxPackets + r.txPackets >= o.rxPackets + o.txPackets) stats.set(r.port, r);
      }
    } catch {
      /* no ports */
    }
    const updates: { table: string; uuid: string; row: Record<string, unknown>; cols: Record<string, unknown> }[] = [];
    const add = (table: string, uuid: string, cols: Record<string, unknown>): void => {
      const row = this.diff(uuid, cols);
      if (row) updates.push({ table, uuid, row, cols });
    };
    const ctlRows = this.table('Controller');
    for (const [name, br] of bridges) {
      add('Bridge', br.uuid, { datapath_id: datapathId(name, strMap(br.row.other_config)) });
      const cus = uuidSet(br.row.controller);
      if (cus.length === 0 || !this.bridges.has(name)) continue;
      let st: { target: string; state: string; lastError: string }[] = [];
      try {
        const g = (await this.sw.call('get-controller', { bridge: name })) as { data?: { status?: typeof st } };
        st = g.data?.status ?? [];
      } catch {
        /* no agent */
      }
      for (const cu of cus) {
        const target = ctlRows.get(cu)?.target;
        const x = st.find((y) => y.target === target);
        const connected = x?.state === 'connected';
        const status: Record<string, string> = { state: connected ? 'ACTIVE' : x ? (x.state === 'connecting' ? 'CONNECTING' : 'BACKOFF') : 'VOID' };
        if (x?.lastError && !connected) status.last_error = x.lastError;
        add('Controller', cu, { is_connected: connected, role: connected ? 'other' : mkSet([]), status: mkMap(status) });
      }
    }
    for (const [name, plan] of plans) {
      const a = this.applied.get(name);
      if (!a) continue;
      const sp = a.error === undefined ? byName.get(name) : undefined;
      if (a.error !== undefined || !sp) {
        add('Interface', plan.uuid, {
          ofport: -1,
          error: a.error ?? `${name}: not created`,
          link_state: mkSet([]),
          admin_state: mkSet([]),
          mtu: mkSet([]),
          mac_in_use: mkSet([]),
          status: mkMap({}),
          statistics: mkMap({}),
        });
        continue;
      }
      const st = stats.get(name);
      const status: Record<string, string> = {};
      if (sp.type === 'vhost-user' || sp.type === 'vhost-user-client') {
        status.mode = sp.type === 'vhost-user' ? 'server' : 'client';
        status.socket = sp.path ?? '';
        status.connected = sp.link === 'up' ? 'true' : 'false';
      }
      if (sp.status) status.tsvs_status = sp.status;
      status.driver_name = sp.type;
      add('Interface', plan.uuid, {
        ofport: sp.ofport,
        error: mkSet([]),
        link_state: sp.link === 'up' ? 'up' : 'down',
        admin_state: 'up',
        mtu: mkOptional(sp.mtu ?? 1500),
        mac_in_use: macInUse(sp),
        status: mkMap(status),
        statistics: mkMap(
          st
            ? {
                rx_packets: st.rxPackets, rx_bytes: st.rxBytes, rx_dropped: st.rxDropped,
                tx_packets: st.txPackets, tx_bytes: st.txBytes, tx_dropped: st.txDropped,
              }
            : {},
        ),
      });
    }
    add('Open_vSwitch', ovsUuid, {
      cur_cfg: nextCfg,
      datapath_types: mkSet(DATAPATH_TYPES),
      iface_types: mkSet(IFACE_TYPES),
    });
    void ovs;
    if (updates.length === 0) {
      this.ackCfg(nextCfg);
      return;
    }
    const ops: unknown[] = [{ op: 'assert', lock: LOCK }];
    for (const u of updates) ops.push({ op: 'update', table: u.table, where: whereUuid(u.uuid), row: u.row });
    try {
      await this.client.transact(DB, ops);
    } catch (e) {
      // forget what we meant to write so the next pass retries it
      for (const u of updates) this.written.delete(u.uuid);
      throw e;
    }
    for (const u of updates) {
      const w = this.written.get(u.uuid)!;
      for (const [c, v] of Object.entries(u.row)) w.set(c, JSON.stringify(v));
    }
    this.ackCfg(nextCfg);
  }

  private ackCfg(cfg: number): void {
    if (cfg > this.appliedCfg || this.appliedCfg === -1) this.appliedCfg = cfg;
    const keep = [];
    for (const w of this.waiters) {
      if (this.appliedCfg >= w.cfg) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  /** The interface's result as last applied: ofport (-1 on error) and error text. */
  result(name: string): { ofport: number; error?: string } | undefined {
    const a = this.applied.get(name);
    return a ? { ofport: a.ofport, error: a.error } : undefined;
  }

  // ---------------- writes for our own CLI in OVSDB mode ----------------

  /**
   * Run `ops` plus `next_cfg += 1` in one transaction (as a waiting
   * ovs-vsctl does), then wait until that configuration is applied.
   */
  async commit(ops: unknown[]): Promise<void> {
    const ovs = [...this.table('Open_vSwitch').keys()][0];
    if (!this.client.connected || ovs === undefined) throw new OvsdbError(`not connected to ovsdb-server at ${this.client.remote} (or its database is not initialised: ovs-vsctl init)`);
    const all = [
      ...ops,
      { op: 'mutate', table: 'Open_vSwitch', where: whereUuid(ovs), mutations: [['next_cfg', '+=', 1]] },
      { op: 'select', table: 'Open_vSwitch', where: whereUuid(ovs), columns: ['next_cfg'] },
    ];
    const res = await this.client.transact(DB, all);
    const sel = res[res.length - 1] as { rows?: { next_cfg: number }[] };
    const cfg = Number(sel.rows?.[0]?.next_cfg ?? 0);
    await this.waitCfg(cfg);
  }

  findRow(table: string, name: string): string | undefined {
    for (const [u, r] of this.table(table)) if (r.name === name) return u;
    return undefined;
  }

  row(table: string, uuid: string): Row | undefined {
    return this.table(table).get(uuid);
  }

  ovsUuid(): string | undefined {
    return [...this.table('Open_vSwitch').keys()][0];
  }
}

function macInUse(p: ShowPort): unknown {
  if (p.iface) {
    try {
      return fs.readFileSync(`/sys/class/net/${p.iface}/address`, 'utf8').trim();
    } catch {
      /* not a kernel device here */
    }
  }
  return '00:00:00:00:00:00';
}

export { uuidOf, mkUuid };
