/**
 * One bridge's slow-path state: its OpenFlow tables, its MAC learning table
 * and its ports, plus translation of upcalls into megaflows.
 */
import { FLOW_WORDS } from '../dp/flow-key.js';
import { FlowTables } from '../ofproto/tables.js';
import { MacLearningTable } from '../ofproto/mac-learning.js';
import { xlate, xlateReuse, XlateScratch, XLATE_ERRORS, type XlatePort, type Group, type ControllerEvent, type XlateError } from '../ofproto/xlate.js';
import type { RemovedRule, Rule } from '../ofproto/tables.js';
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

/** A translation kept for revalidation (OVS's ukey): sig it was made under, masked key (then the mask, for a seed), rules hit. */
interface XcacheEntry { sig: string; key: Uint32Array; rules: Rule[]; at: number }

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
  /** Datapath flow id -> packets/bytes already credited to rules. */
  private readonly credited = new Map<number, { packets: number; bytes: number }>();
  /**
   * Per datapath flow, what its last full translation depended on (xlateSig)
   * and the rules it hit (OVS's ukey and xlate cache): see revalidate().
   */
  private readonly xcache = new Map<number, XcacheEntry>();
  /** Upcalls whose translation was cut off and dropped, by reason. */
  readonly xlateErrors = Object.fromEntries(XLATE_ERRORS.map((e) => [e, 0])) as Record<XlateError, number>;

  constructor(name: string) {
    this.name = name;
  }

  /** Tunnel ports with options:key=flow (their outputs carry the flow's tun_id). */
  readonly flowKeyTunnels = new Set<number>();

  private portsCache: XlatePort[] = [];

  /** The ports as xlate sees them: one array, rebuilt only when the ports or their tunnel keying change. */
  private xlatePorts(): XlatePort[] {
    const c = this.portsCache;
    let same = c.length === this.ports.size;
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
      this.portsCache = [...this.ports.keys()].map((no) => (this.flowKeyTunnels.has(no) ? { ofPort: no, dpPort: no, tunnelKeyFlow: true } : { ofPort: no, dpPort: no }));
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
   * Revalidation of datapath flow `flowId` (masked key keys[keyOff..], mask
   * masks[maskOff..], cumulative packets/bytes): while nothing a translation
   * reads has changed (`sig`, from xlateSig() at the start of the pass) and
   * its last full translation is younger than XCACHE_REFRESH_MS, its new hits
   * are credited to the cached rules and null is returned (the flow stands);
   * otherwise it is translated in full (which also refreshes MAC learning for
   * a flow with traffic). A flow met for the first time takes the translation
   * its upcall made (a seed, see translateUpcall) if that was made under the
   * same sig, so a flow just set up is not translated a second time.
   * What a non-null result holds is valid until the next translation.
   */
  revalidate(keys: Uint32Array, keyOff: number, masks: Uint32Array, maskOff: number, now: number, packets: number, bytes: number, flowId: number, sig: string): XlateView | null {
    let c = this.xcache.get(flowId);
    if ((c === undefined || !sameKey(c.key, keys, keyOff)) && (this.seeds.size > 0 || this.seedsOld.size > 0)) {
      const h = hashKeyMask(keys, keyOff, masks, maskOff);
      let sd = this.seeds.get(h);
      if (sd === undefined || !sameKeyMask(sd.key, keys, keyOff, masks, maskOff)) sd = this.seedsOld.get(h);
      if (sd !== undefined && sameKeyMask(sd.key, keys, keyOff, masks, maskOff)) {
        this.seeds.delete(h);
        this.seedsOld.delete(h);
        c = sd;
        this.xcache.set(flowId, sd);
        this.credited.set(flowId, { packets: 0, bytes: 0 });
      }
    }
    // (flow ids are reused, and per PMD thread: the key must match too)
    if (c !== undefined && c.sig === sig && now - c.at < XCACHE_REFRESH_MS && sameKey(c.key, keys, keyOff)) {
      const cr = this.credited.get(flowId);
      if (cr !== undefined && packets >= cr.packets) {
        const dp = packets - cr.packets;
        const db = bytes - cr.bytes;
        cr.packets = packets;
        cr.bytes = bytes;
        if (dp > 0) for (const rule of c.rules) this.tables.credit(rule, dp, db, now);
        return null;
      }
    }
    let dp = 0;
    let db = 0;
    const cr = this.credited.get(flowId) ?? { packets: 0, bytes: 0 };
    if (packets < cr.packets) {
      cr.packets = 0;
      cr.bytes = 0;
    }
    dp = packets - cr.packets;
    db = bytes - cr.bytes;
    cr.packets = packets;
    cr.bytes = bytes;
    this.credited.set(flowId, cr);
    const r = this.xl(keys, keyOff, now, dp > 0, undefined);
    if (dp > 0) for (const rule of r.rules) this.tables.credit(rule, dp, db, now);
    if (!r.error && r.controller.length === 0) this.xcache.set(flowId, { sig, key: keys.slice(keyOff, keyOff + FLOW_WORDS), rules: r.rules.slice(), at: now });
    else this.xcache.delete(flowId);
    return r;
  }

  /**
   * What every translation reads besides the flow key: the rule tables, the
   * MAC table, the ports and fail-open. Groups are not versioned: while any
   * group exists nothing is cached (every pass translates in full).
   */
  xlateSig(): string {
    if (this.groups.size > 0) return `g${++this.sigSeq}`;
    const ports = this.xlatePorts();
    if (this.sigTables !== this.tables.version || this.sigMacs !== this.mac.version || this.sigPorts !== ports || this.sigFailOpen !== this.failOpen) {
      this.sigTables = this.tables.version;
      this.sigMacs = this.mac.version;
      this.sigPorts = ports;
      this.sigFailOpen = this.failOpen;
      this.sigText = `${this.tables.version}|${this.mac.version}|${[...this.ports].join(';')}|${this.failOpen}`;
    }
    return this.sigText;
  }

  private sigSeq = 0;
  private sigTables = -1;
  private sigMacs = -1;
  private sigPorts: XlatePort[] | null = null;
  private sigFailOpen = false;
  private sigText = '';
  /** Translation storage reused by every upcall and revalidation of this bridge. */
  private readonly scratch = new XlateScratch();
  /** The upcall key masked by its translation's mask (UpcallView.key). */
  private readonly mkey = new Uint32Array(FLOW_WORDS);
  private readonly uview: UpcallView = { key: this.mkey, mask: this.scratch.wc, actions: XlateScratch.NO_ACTIONS, controller: [], error: undefined };
  /**
   * Translations made by upcalls, by hash of (masked key, mask), until the
   * flow they install is met by a revalidation pass (then they become its
   * xcache entry). Two generations: a pass ages them (rotateSeeds), so one
   * whose flow never appeared is gone after two passes.
   */
  private seeds = new Map<number, XcacheEntry>();
  private seedsOld = new Map<number, XcacheEntry>();

  /** Start of a revalidation pass: seeds older than the previous pass are dropped. */
  rotateSeeds(): void {
    if (this.seedsOld.size > 0) this.seedsOld = new Map();
    if (this.seeds.size > 0) {
      this.seedsOld = this.seeds;
      this.seeds = new Map();
    }
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
    if (!r.error && r.controller.length === 0 && this.groups.size === 0) {
      const km = new Uint32Array(2 * FLOW_WORDS);
      km.set(k);
      km.set(m, FLOW_WORDS);
      this.seeds.set(hashKeyMask(k, 0, m, 0), { sig: this.xlateSig(), key: km, rules: r.rules.slice(), at: now });
    }
    return v;
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

  forgetFlow(flowId: number): void {
    this.credited.delete(flowId);
    this.xcache.delete(flowId);
  }
}

function sameKey(a: Uint32Array, b: Uint32Array, off: number): boolean {
  for (let i = 0; i < FLOW_WORDS; i++) if (a[i] !== b[off + i]) return false;
  return true;
}

/** km: masked key then mask (2 * FLOW_WORDS words). */
function sameKeyMask(km: Uint32Array, keys: Uint32Array, keyOff: number, masks: Uint32Array, maskOff: number): boolean {
  if (km.length < 2 * FLOW_WORDS) return false;
  for (let i = 0; i < FLOW_WORDS; i++) if (km[i] !== keys[keyOff + i] || km[FLOW_WORDS + i] !== masks[maskOff + i]) return false;
  return true;
}

function hashKeyMask(keys: Uint32Array, keyOff: number, masks: Uint32Array, maskOff: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < FLOW_WORDS; i++) {
    h = Math.imul(h ^ keys[keyOff + i], 0x01000193);
    h = Math.imul(h ^ masks[maskOff + i], 0x01000193);
  }
  return h;
}
