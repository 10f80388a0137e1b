/**
 * A port's VLAN role in the NORMAL action, as OVS's Port columns `tag`, `trunks` and `vlan_mode`
 * (vswitchd/vswitch.xml; ofproto-dpif-xlate.c input_vid_is_valid, xvlan_input_translate,
 * xbundle_includes_vlan, xvlan_output_translate):
 *
 *  - access (a `tag`, the default when one is set): carries VLAN `tag` untagged; a tagged frame
 *    (VLAN id other than 0) received on it is dropped; a priority-tagged one (id 0) joins `tag`.
 *  - trunk (the default without a tag): carries the VLANs in `trunks` (all when none are listed)
 *    tagged; an untagged frame is VLAN 0, and VLAN 0 leaves untagged.
 *  - native-tagged: a trunk whose untagged frames join `tag` (and that carries `tag` tagged too,
 *    whatever `trunks` lists); `tag` leaves tagged.
 *  - native-untagged: the same, but `tag` leaves untagged.
 *
 * Only NORMAL applies the roles (MAC learning and flooding per VLAN, tags pushed, changed or
 * popped per output port); explicit OpenFlow outputs send the frame as the actions left it, as in
 * OVS. Pure data and decisions: no I/O.
 */

export type VlanMode = 'access' | 'trunk' | 'native-tagged' | 'native-untagged';
export const VLAN_MODES: readonly VlanMode[] = ['access', 'trunk', 'native-tagged', 'native-untagged'];

export interface PortVlan {
  mode: VlanMode;
  /** The access or native VLAN (0..4095); -1 for a trunk. */
  tag: number;
  /** Trunked VLANs; undefined = all (the empty `trunks` column). Not used by access ports. */
  trunks?: ReadonlySet<number>;
}

/** What a user or the database gives: the three Port columns, each optional. */
export interface PortVlanConfig {
  tag?: number;
  trunks?: number[];
  vlan_mode?: VlanMode;
}

export class PortVlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PortVlanError';
  }
}

const isVid = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 4095;

/**
 * The role of a port from its columns, with OVS's defaults (a tag and no mode: access; no tag: trunk).
 * Undefined when nothing is set (the port is then a trunk of every VLAN, which is what NORMAL does
 * with no VLAN configuration at all).
 */
export function portVlan(c: PortVlanConfig): PortVlan | undefined {
  if (c.tag !== undefined && !isVid(c.tag)) throw new PortVlanError(`tag ${String(c.tag)} must be a VLAN id in 0..4095`);
  for (const v of c.trunks ?? []) if (!isVid(v)) throw new PortVlanError(`trunks: ${String(v)} is not a VLAN id in 0..4095`);
  if (c.vlan_mode !== undefined && !VLAN_MODES.includes(c.vlan_mode)) {
    throw new PortVlanError(`vlan_mode '${String(c.vlan_mode)}' must be one of ${VLAN_MODES.join(', ')}`);
  }
  const mode: VlanMode = c.vlan_mode ?? (c.tag !== undefined ? 'access' : 'trunk');
  if (mode !== 'trunk' && c.tag === undefined) throw new PortVlanError(`vlan_mode ${mode} needs a tag`);
  if (mode === 'access' && (c.trunks?.length ?? 0) > 0) throw new PortVlanError('an access port takes no trunks (set vlan_mode to trunk or native-*)');
  if (c.tag === undefined && c.vlan_mode === undefined && (c.trunks?.length ?? 0) === 0) return undefined;
  const trunks = c.trunks !== undefined && c.trunks.length > 0 ? new Set(c.trunks) : undefined;
  return { mode, tag: mode === 'trunk' ? -1 : c.tag!, ...(trunks ? { trunks } : {}) };
}

/** Text of a role (for `show`), e.g. "tag=10" or "vlan_mode=native-untagged tag=10 trunks=20,30". */
export function formatPortVlan(v: PortVlan | undefined): string {
  if (v === undefined) return '';
  const parts: string[] = [];
  if (v.mode !== 'access' && v.mode !== 'trunk') parts.push(`vlan_mode=${v.mode}`);
  if (v.tag >= 0) parts.push(`tag=${v.tag}`);
  if (v.trunks) parts.push(`trunks=${[...v.trunks].sort((a, b) => a - b).join(',')}`);
  else if (v.mode === 'trunk') parts.push('trunks=all');
  return parts.join(' ');
}

/** Whether the port carries `vlan` tagged on input (a native port's trunks include its native VLAN, as OVS sets it). */
function trunksVlan(v: PortVlan, vlan: number): boolean {
  return v.mode !== 'access' && (v.trunks === undefined || v.trunks.has(vlan) || vlan === v.tag);
}

/** Whether the port carries `vlan` (a port without a role carries all). */
export function includesVlan(v: PortVlan | undefined, vlan: number): boolean {
  return v === undefined || vlan === v.tag || trunksVlan(v, vlan);
}

/**
 * The VLAN a frame received on the port belongs to, from its VLAN id (0: untagged or
 * priority-tagged), or -1 when the port must drop it.
 */
export function inputVlan(v: PortVlan | undefined, vid: number): number {
  if (v === undefined) return vid;
  switch (v.mode) {
    case 'access':
      return vid === 0 ? v.tag : -1;
    case 'native-tagged':
    case 'native-untagged':
      if (vid === 0) return v.tag;
      return trunksVlan(v, vid) ? vid : -1;
    case 'trunk':
      return trunksVlan(v, vid) ? vid : -1;
  }
}

/** The VLAN id a frame of `vlan` leaves the port with (0: untagged). */
export function outputVid(v: PortVlan | undefined, vlan: number): number {
  if (v === undefined) return vlan;
  switch (v.mode) {
    case 'access':
      return 0;
    case 'native-untagged':
      return vlan === v.tag ? 0 : vlan;
    case 'trunk':
    case 'native-tagged':
      return vlan;
  }
}
