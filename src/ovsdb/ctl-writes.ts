/**
 * Our own `tsvs add-br/del-br/add-port/del-port` in OVSDB mode: they write
 * the database (the same rows ovs-vsctl would write, plus next_cfg += 1) and
 * wait until the switch has applied them, so the database stays the one
 * source of configuration.
 */
import { OvsdbError } from './client.js';
import { mkSet, mkMap, mkUuid, whereUuid, uuidSet } from './datum.js';
import type { OvsdbVswitchd } from './vswitchd.js';

export class CtlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RpcError';
  }
}

const named = (n: string): unknown => ['named-uuid', n];

/** Our port types -> OVS interface type and options. */
export function ovsInterface(p: Record<string, unknown>, sockDir: string): { type: string; options: Record<string, string> } {
  const name = String(p.name);
  const type = String(p.type ?? '');
  switch (type) {
    case 'vhost-user':
      if (p.path !== undefined && p.path !== null && String(p.path) !== `${sockDir}/${name}`) {
        throw new CtlError(`in OVSDB mode a vhost-user port's socket is ${sockDir}/${name} (Open_vSwitch other_config:vhost-sock-dir); --path cannot move it`);
      }
      return { type: 'dpdkvhostuser', options: {} };
    case 'vhost-user-client':
      if (p.path === undefined || p.path === null) throw new CtlError('--path is required for type vhost-user-client');
      return { type: 'dpdkvhostuserclient', options: { 'vhost-server-path': String(p.path) } };
    case 'tap':
      if (p.iface !== undefined && p.iface !== null && String(p.iface) !== name) throw new CtlError('in OVSDB mode a tap port is named after its device (--iface must equal the port name)');
      return { type: 'tap', options: {} };
    case 'afpacket':
      if (p.iface !== undefined && p.iface !== null && String(p.iface) !== name) throw new CtlError('in OVSDB mode an afpacket port is named after its kernel interface (--iface must equal the port name)');
      return { type: 'system', options: {} };
    default:
      throw new CtlError(`port type '${type}' cannot be configured through OVSDB (use vhost-user, vhost-user-client, tap or afpacket)`);
  }
}

export async function ctlAddBr(v: OvsdbVswitchd, bridge: string): Promise<void> {
  if (v.findRow('Bridge', bridge) !== undefined) throw new CtlError(`bridge '${bridge}' already exists`);
  const ovs = v.ovsUuid();
  if (ovs === undefined) throw new OvsdbError('the Open_vSwitch table is empty: run ovs-vsctl init');
  await v.commit([
    { op: 'insert', table: 'Interface', row: { name: bridge, type: 'internal' }, 'uuid-name': 'i' },
    { op: 'insert', table: 'Port', row: { name: bridge, interfaces: named('i') }, 'uuid-name': 'p' },
    { op: 'insert', table: 'Bridge', row: { name: bridge, ports: named('p'), datapath_type: 'netdev' }, 'uuid-name': 'b' },
    { op: 'mutate', table: 'Open_vSwitch', where: whereUuid(ovs), mutations: [['bridges', 'insert', mkSet([named('b')])]] },
  ]);
}

export async function ctlDelBr(v: OvsdbVswitchd, bridge: string): Promise<void> {
  const b = v.findRow('Bridge', bridge);
  const ovs = v.ovsUuid();
  if (b === undefined || ovs === undefined) throw new CtlError(`no bridge named '${bridge}'`);
  await v.commit([{ op: 'mutate', table: 'Open_vSwitch', where: whereUuid(ovs), mutations: [['bridges', 'delete', mkSet([mkUuid(b)])]] }]);
}

export async function ctlAddPort(v: OvsdbVswitchd, p: Record<string, unknown>, sockDir: string): Promise<{ ofport: number; path?: string }> {
  const bridge = String(p.bridge);
  const name = String(p.name ?? '');
  const b = v.findRow('Bridge', bridge);
  if (b === undefined) throw new CtlError(`no bridge named '${bridge}'`);
  if (v.findRow('Port', name) !== undefined || v.findRow('Interface', name) !== undefined) throw new CtlError(`port '${name}' already exists`);
  const { type, options } = ovsInterface(p, sockDir);
  const row: Record<string, unknown> = { name, type, options: mkMap(options) };
  if (p.ofport !== undefined && p.ofport !== null) row.ofport_request = Number(p.ofport);
  if (p.mtu !== undefined && p.mtu !== null) row.mtu_request = Number(p.mtu);
  await v.commit([
    { op: 'insert', table: 'Interface', row, 'uuid-name': 'i' },
    { op: 'insert', table: 'Port', row: { name, interfaces: named('i'), ...portVlanRow(p) }, 'uuid-name': 'p' },
    { op: 'mutate', table: 'Bridge', where: whereUuid(b), mutations: [['ports', 'insert', mkSet([named('p')])]] },
  ]);
  const r = v.result(name);
  if (!r) throw new CtlError(`port ${name}: the switch did not pick it up`);
  if (r.error !== undefined) throw new CtlError(`Error detected while setting up '${name}': ${r.error}`);
  return { ofport: r.ofport, path: type === 'dpdkvhostuser' ? `${sockDir}/${name}` : options['vhost-server-path'] };
}

export async function ctlDelPort(v: OvsdbVswitchd, bridge: string, name: string): Promise<void> {
  const b = v.findRow('Bridge', bridge);
  if (b === undefined) throw new CtlError(`no bridge named '${bridge}'`);
  const pu = v.findRow('Port', name);
  const br = v.row('Bridge', b)!;
  if (pu === undefined || !uuidSet(br.ports).includes(pu)) throw new CtlError(`bridge ${bridge} has no port '${name}'`);
  await v.commit([{ op: 'mutate', table: 'Bridge', where: whereUuid(b), mutations: [['ports', 'delete', mkSet([mkUuid(pu)])]] }]);
}

/** tag / trunks / vlan_mode of a request as Port columns (only those given; null or [] writes an empty set). */
function portVlanRow(p: Record<string, unknown>): Record<string, unknown> {
  const row: Record<string, unknown> = {};
  if ('tag' in p) row.tag = p.tag === null || p.tag === undefined ? mkSet([]) : Number(p.tag);
  if ('trunks' in p) row.trunks = mkSet(((p.trunks as unknown[] | null) ?? []).map(Number));
  if ('vlan_mode' in p) row.vlan_mode = p.vlan_mode === null || p.vlan_mode === undefined ? mkSet([]) : String(p.vlan_mode);
  return row;
}

/** `tsvs set-port P tag=... trunks=... vlan_mode=...` in OVSDB mode: ovs-vsctl set Port P ... */
export async function ctlSetPort(v: OvsdbVswitchd, p: Record<string, unknown>): Promise<void> {
  const name = String(p.name ?? '');
  const pu = v.findRow('Port', name);
  if (pu === undefined) throw new CtlError(`no port '${name}'`);
  const row = portVlanRow(p);
  if (Object.keys(row).length === 0) return;
  await v.commit([{ op: 'update', table: 'Port', where: whereUuid(pu), row }]);
}
