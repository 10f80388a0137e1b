/**
 * One bridge's slow-path state: its OpenFlow tables, its MAC learning table
 * and its ports, plus translation of upcalls into megaflows.
 */
import { FLOW_WORDS } from '../dp/flow-key.js';
import { FlowTables } from '../ofproto/tables.js';
import { MacLearningTable } from '../ofproto/mac-learning.js';
import type { PortVlan } from '../ofproto/port-vlan.js';
import { xlate, xlateReuse, XlateScratch, XLATE_ERRORS, type XlatePort, type Group, type ControllerEvent, type XlateError } from '../ofproto/xlate.js';
import type { RemovedRule, Rule } from '../ofproto/tables.js';
import { UkeyTable, SIG_NONE } from './ukeys.js';
import { parseFlow, formatFlow, formatFlowStats, type PortResolver, type PortNamer } from '../ofproto/flow-syntax.js';

export interface Translation {
  key: Uint32Array;
  mask: Uint32Array;
  actions: Int32Array;
  /** output:CONTROLLER events: such translations stay on the slow path (not installed). */
  controller: ControllerEvent[];
  /** Set when the translation was cut off (the actions are then a drop). */
  error?: XlateError;
}

/** What a revalidation result or an upcall translation holds (the bridge's reused storage). */
export interface XlateView {
  mask: Uint32Array;
  actions: Int32Array;
  controller: ControllerEvent[];
  error?: XlateError;
}

/** An upcall's translation: key is the upcall key masked by mask. */
export interface UpcallView extends XlateView {
  key: Uint32Array;
}

/** A cached translation is redone in full at least this often (MAC learning refresh). */
const XCACHE_REFRESH_MS = 5000;

/** The rule a new bridge starts with, as in OVS standalone mode. */
export const DEFAULT_FLOW = 'priority=0,actions=NORMAL';

export class Bridge {
  readonly name: string;
  readonly tables = new FlowTables();
  readonly mac = new MacLearningTable();
  /** ofport -> port name */
  readonly ports = new Map<number, string>();
  /** OpenFlow group table. */
  readonly groups = new Map<number, Group>();
  /** OVS fail-open (standalone, controllers set, none connected): forward as NORMAL. */
  failOpen = false;
  /** Every datapath flow this bridge set up, by the handle its PMD keeps with it (OVS's ukeys). */
  readonly ukeys = new UkeyTable();
  /** Datapath flow id -> packets/bytes already credited, for a flow without a ukey (installed by other means). */
  private readonly credited = new Map<number, { packets: number; bytes: number }>();
  /** Revalidation passes begun (ukey lifetimes). */
  private pass = 0;
  /** Upcalls whose translation was cut off and dropped, by reason. */
  readonly xlateErrors = Object.fromEntries(XLATE_ERRORS.map((e) => [e, 0])) as Record<XlateError, number>;

  constructor(name: string) {
    this.name = name;
  }

  /** Tunnel ports with options:key=flow (their outputs carry the flow's tun_id). */
  readonly flowKeyTunnels = new Set<number>();

  /** Ports' VLAN roles in NORMAL (OVS Port tag/trunks/vlan_mode); a port not here is a trunk of every VLAN. */
  private readonly vlans = new Map<number, PortVlan>();
  private vlanVersion = 0;

  /** Set (or with undefined, clear) a port's VLAN role; flows translated before are revalidated. */
  setPortVlan(ofport: number, v: PortVlan | undefined): void {
    if (v === undefined) this.vlans.delete(ofport);
    else this.vlans.set(ofport, v);
    this.vlanVersion++;
  }

  portVlan(ofport: number): PortVlan | undefined {
    return this.vlans.get(ofport);
  }

  private portsCache: XlatePort[] = [];
  private portsCacheVlan = -1;

  /** The ports as xlate sees them: one array, rebuilt only when the ports, their tunnel keying or their VLAN roles change. */
  private xlatePorts(): XlatePort[] {
    const c = this.portsCache;
    let same = c.length === this.ports.size && this.portsCacheVlan === this.vlanVersion;
    if (same) {
      let i = 0;
      for (const no of this.ports.keys()) {
        const p = c[i++];
        if (p.ofPort !== no || (p.tunnelKeyFlow === true) !== this.flowKeyTunnels.has(no)) {
          same = false;
          break;
        }
      }
    }
    if (!same) {
      this.portsCache = [...this.ports.keys()].map((no) => {
        const p: XlatePort = { ofPort: no, dpPort: no };
        if (this.flowKeyTunnels.has(no)) p.tunnelKeyFlow = true;
        const v = this.vlans.get(no);
        if (v !== undefined) p.vlan = v;
        return p;
      });
      this.portsCacheVlan = this.vlanVersion;
    }
    return this.portsCache;
  }

  addFlow(text: string, resolvePort: PortResolver): void {
    const spec = parseFlow(text, { mode: 'add', resolvePort });
    this.tables.addFlow(spec, Date.now());
  }

  delFlows(text: string, strict: boolean, resolvePort: PortResolver): number {
    return this.delFlowRules(text, strict, resolvePort).length;
  }

  delFlowRules(text: string, strict: boolean, resolvePort: PortResolver): Rule[] {
    const spec = parseFlow(text, { mode: 'match', resolvePort });
    return this.tables.delFlows(spec, strict);
  }

  /** The current rules as add-flow text (what the database stores; rules from OpenFlow peers are not stored, as in OVS). */
  flowTexts(): string[] {
    return this.tables.rules().filter((r) => r.origin !== 'openflow').map((r) =>
      formatFlow({
        table: r.table, priority: r.priority, hasPriority: true, cookie: r.cookie, cookieMask: 0n,
        idleTimeout: r.idleTimeout, hardTimeout: r.hardTimeout, match: r.match, actions: r.actions, outPort: undefined,
      }),
    );
  }

  dump(now: number, namer: PortNamer): { text: string; table: number; priority: number; n_packets: number; n_bytes: number; duration_s: number }[] {
    return this.tables.rules().map((r) => ({
      text: formatFlowStats(
        {
          cookie: r.cookie, durationSec: (now - r.created) / 1000, table: r.table, nPackets: r.nPackets, nBytes: r.nBytes,
          idleTimeout: r.idleTimeout, hardTimeout: r.hardTimeout, priority: r.priority, match: r.match, actions: r.actions,
        },
        namer,
      ),
      table: r.table,
      priority: r.priority,
      n_packets: r.nPackets,
      n_bytes: r.nBytes,
      duration_s: (now - r.created) / 1000,
    }));
  }

  ruleCount(): number {
    return this.tables.size();
  }

  /**
   * Revalidation of one datapath flow (masked key keys[keyOff..], mask
   * masks[maskOff..], cumulative packets/bytes, its ukey handle xid and its id
   * in its PMD thread): while nothing a translation reads has changed (`sig`,
   * from xlateSig() at the start of the pass) and its last full translation is
   * younger than XCACHE_REFRESH_MS, its new hits are credited to the rules its
   * ukey holds and null is returned (the flow stands); otherwise it is
   * translated in full (which also refreshes MAC learning for a flow with
   * traffic), and the result is returned for the caller to compare with the
   * flow. A flow just set up holds its upcall's translation: it is not
   * translated again. What a non-null result holds is valid until the next
   * translation.
   */
  revalidate(keys: Uint32Array, keyOff: number, masks: Uint32Array, maskOff: number, now: number, packets: number, bytes: number, xid: number, flowId: number, sig: number): XlateView | null {
    const u = this.ukeys;
    const x = u.isLive(xid) && u.matches(xid, keys, keyOff, masks, maskOff) ? xid : -1;
    let cp: number;
    let cb: number;
    if (x >= 0) {
      u.seen[x] = this.pass;
      cp = u.packets[x];
      cb = u.bytes[x];
      if (u.sig[x] === sig && sig !== SIG_NONE && now - u.at[x] < XCACHE_REFRESH_MS && packets >= cp) {
        const dp = packets - cp;
        if (dp > 0) {
          const db = bytes - cb;
          u.packets[x] = packets;
          u.bytes[x] = bytes;
          for (const rule of u.rules[x]!) this.tables.credit(rule, dp, db, now);
        }
        return null;
      }
    } else {
      const c = this.credited.get(flowId);
      cp = c?.packets ?? 0;
      cb = c?.bytes ?? 0;
    }
    if (packets < cp) {
      cp = 0;
      cb = 0;
    }
    const dp = packets - cp;
    const db = bytes - cb;
    const r = this.xl(keys, keyOff, now, dp > 0, undefined);
    if (dp > 0) for (const rule of r.rules) this.tables.credit(rule, dp, db, now);
    if (x >= 0) {
      u.packets[x] = packets;
      u.bytes[x] = bytes;
      u.at[x] = now;
      u.sig[x] = !r.error && r.controller.length === 0 ? sig : SIG_NONE;
      u.setRules(x, r.rules);
    } else {
      const c = this.credited.get(flowId);
      if (c !== undefined) {
        c.packets = packets;
        c.bytes = bytes;
      } else this.credited.set(flowId, { packets, bytes });
    }
    return r;
  }

  /**
   * The generation of what every translation reads besides the flow key: the
   * rule tables, the MAC table, the ports and fail-open (a new number when
   * any of them changed). Groups are not versioned: while any group exists
   * every call gives a new number (every pass translates in full).
   */
  xlateSig(): number {
    if (this.groups.size > 0) return ++this.sigNum;
    const ports = this.xlatePorts();
    if (this.sigTables !== this.tables.version || this.sigMacs !== this.mac.version || this.sigPorts !== ports || this.sigFailOpen !== this.failOpen) {
      this.sigTables = this.tables.version;
      this.sigMacs = this.mac.version;
      this.sigPorts = ports;
      this.sigFailOpen = this.failOpen;
      this.sigNum++;
    }
    return this.sigNum;
  }

  private sigNum = 0;
  private sigTables = -1;
  private sigMacs = -1;
  private sigPorts: XlatePort[] | null = null;
  private sigFailOpen = false;
  /** Translation storage reused by every upcall and revalidation of this bridge. */
  private readonly scratch = new XlateScratch();
  /** The upcall key masked by its translation's mask (UpcallView.key). */
  private readonly mkey = new Uint32Array(FLOW_WORDS);
  private readonly uview: UpcallView = { key: this.mkey, mask: this.scratch.wc, actions: XlateScratch.NO_ACTIONS, controller: [], error: undefined };
  /** The generation the last translateUpcall() was made under (SIG_NONE: not to be trusted by revalidation). */
  private upSig = SIG_NONE;

  /** Start of a revalidation pass (before the flow dumps). */
  beginPass(): void {
    this.pass++;
  }

  /** End of a pass that met every flow: free the ukeys of flows that are gone. */
  endPass(): number {
    return this.ukeys.sweep(this.pass);
  }

  private xl(keys: Uint32Array, keyOff: number, now: number, learn: boolean, packetLen: number | undefined) {
    const env = this.xenv;
    env.tables = this.tables;
    env.macs = this.mac;
    env.ports = this.xlatePorts();
    env.now = now;
    env.groups = this.groups;
    env.failOpen = this.failOpen;
    const o = this.xopts;
    o.learn = learn;
    o.packetLen = packetLen;
    return xlateReuse(env, keys, keyOff, o, this.scratch);
  }

  private readonly xenv = { tables: this.tables, macs: this.mac, ports: [] as XlatePort[], now: 0, groups: this.groups, failOpen: false };
  private readonly xopts: { learn: boolean; packetLen: number | undefined } = { learn: true, packetLen: undefined };

  /**
   * Translate an upcall (key keys[keyOff..], frame of packetLen bytes: one
   * packet credited to the rules hit). The result is this bridge's reused
   * storage, valid until its next translation. A translation that can become
   * a datapath flow is kept as a seed for the flow's first revalidation.
   */
  translateUpcall(keys: Uint32Array, keyOff: number, now: number, packetLen: number): UpcallView {
    const r = this.xl(keys, keyOff, now, true, packetLen);
    if (r.error) this.xlateErrors[r.error]++;
    const k = this.mkey;
    const m = r.mask;
    for (let i = 0; i < FLOW_WORDS; i++) k[i] = keys[keyOff + i] & m[i];
    const v = this.uview;
    v.actions = r.actions;
    v.controller = r.controller;
    v.error = r.error;
    this.upSig = !r.error && r.controller.length === 0 ? this.xlateSig() : SIG_NONE;
    return v;
  }

  /**
   * Keep the last translateUpcall() as the ukey of the flow it installs;
   * returns its handle (for the install: the PMD keeps it with the flow).
   */
  keepUpcall(now: number): number {
    const u = this.ukeys;
    const x = u.alloc();
    const b = x * FLOW_WORDS;
    const m = this.scratch.wc;
    for (let i = 0; i < FLOW_WORDS; i++) {
      u.key[b + i] = this.mkey[i];
      u.mask[b + i] = m[i];
    }
    u.sig[x] = this.upSig;
    u.at[x] = now;
    u.packets[x] = 0;
    u.bytes[x] = 0;
    u.born[x] = this.pass;
    u.seen[x] = this.pass;
    u.setRules(x, this.scratch.res.rules);
    return x;
  }

  /** Translate a flow key (a copy of everything; see translateUpcall for the upcall path). */
  translate(key: Uint32Array, now: number, packetLen?: number): Translation {
    const r = this.xl(key, 0, now, true, packetLen);
    if (r.error) this.xlateErrors[r.error]++;
    const k = key.slice(0, FLOW_WORDS);
    for (let i = 0; i < FLOW_WORDS; i++) k[i] &= r.mask[i];
    return { key: k, mask: r.mask.slice(), actions: r.actions.slice(), controller: r.controller, error: r.error };
  }

  /** The xlate environment (PACKET_OUT translation). */
  env(now: number): Parameters<typeof xlate>[0] {
    return { tables: this.tables, macs: this.mac, ports: this.xlatePorts(), now, groups: this.groups, failOpen: this.failOpen };
  }

  megaflowId(key: Uint32Array, mask: Uint32Array): string {
    return `${Array.from(key).join(',')}/${Array.from(mask).join(',')}`;
  }

  /** Age out MAC entries and rules with timeouts; returns the expired rules. */
  expire(now: number): RemovedRule[] {
    this.mac.expire(now);
    return this.tables.expire(now);
  }

  /** Revalidation deleted the datapath flow (ukey xid, id flowId in its PMD thread). */
  forgetFlow(xid: number, flowId: number): void {
    this.ukeys.release(xid);
    this.credited.delete(flowId);
  }
}
