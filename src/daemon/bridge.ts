/**
 * One bridge's slow-path state: its OpenFlow tables, its MAC learning table
 * and its ports, plus translation of upcalls into megaflows.
 */
import { FLOW_WORDS } from '../dp/flow-key.js';
import { FlowTables } from '../ofproto/tables.js';
import { MacLearningTable } from '../ofproto/mac-learning.js';
import { xlate, XLATE_ERRORS, type XlatePort, type Group, type ControllerEvent, type XlateError } from '../ofproto/xlate.js';
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
  private readonly xcache = new Map<number, { sig: string; key: Uint32Array; rules: Rule[]; at: number }>();
  /** Upcalls whose translation was cut off and dropped, by reason. */
  readonly xlateErrors = Object.fromEntries(XLATE_ERRORS.map((e) => [e, 0])) as Record<XlateError, number>;

  constructor(name: string) {
    this.name = name;
  }

  /** Tunnel ports with options:key=flow (their outputs carry the flow's tun_id). */
  readonly flowKeyTunnels = new Set<number>();

  private xlatePorts(): XlatePort[] {
    return [...this.ports.keys()].map((no) => (this.flowKeyTunnels.has(no) ? { ofPort: no, dpPort: no, tunnelKeyFlow: true } : { ofPort: no, dpPort: no }));
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
   * Translate a flow key. For an upcall, packetLen credits one packet to the
   * rules hit. For revalidation of datapath flow `flowId`, its cumulative
   * packets/bytes are credited as a delta, and MAC learning is refreshed only
   * if the flow saw traffic since the last pass.
   */
  /**
   * Revalidation of datapath flow `flowId` (cumulative packets/bytes): while
   * nothing a translation reads has changed (`sig`, from xlateSig() at the
   * start of the pass) and its last full translation is younger than
   * XCACHE_REFRESH_MS, its new hits are credited to the cached rules and null
   * is returned (the flow stands); otherwise it is translated in full (which
   * also refreshes MAC learning for a flow with traffic).
   */
  revalidate(key: Uint32Array, now: number, packets: number, bytes: number, flowId: number, sig: string): Translation | null {
    const c = this.xcache.get(flowId);
    // (flow ids are reused, and per PMD thread: the key must match too)
    if (c !== undefined && c.sig === sig && now - c.at < XCACHE_REFRESH_MS && sameKey(c.key, key)) {
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
    const r = this.translate(key, now, packets, bytes, flowId);
    if (!r.error && r.controller.length === 0) this.xcache.set(flowId, { sig, key: key.slice(0, FLOW_WORDS), rules: this.lastRules, at: now });
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
    return `${this.tables.version}|${this.mac.version}|${[...this.ports].join(';')}|${this.failOpen}`;
  }

  private sigSeq = 0;
  /** The rules hit by the last translate(). */
  private lastRules: Rule[] = [];

  translate(key: Uint32Array, now: number, packets?: number, bytes?: number, flowId?: number, packetLen?: number): Translation {
    let dp = 0;
    let db = 0;
    if (flowId !== undefined && packets !== undefined) {
      const c = this.credited.get(flowId) ?? { packets: 0, bytes: 0 };
      if (packets < c.packets) {
        c.packets = 0;
        c.bytes = 0;
      }
      dp = packets - c.packets;
      db = (bytes ?? 0) - c.bytes;
      c.packets = packets;
      c.bytes = bytes ?? 0;
      this.credited.set(flowId, c);
    }
    const learn = flowId === undefined || dp > 0;
    const r = xlate({ tables: this.tables, macs: this.mac, ports: this.xlatePorts(), now, groups: this.groups, failOpen: this.failOpen }, key, 0, {
      learn,
      packetLen: flowId === undefined ? packetLen : undefined,
    });
    if (dp > 0) for (const rule of r.rules) this.tables.credit(rule, dp, db, now);
    this.lastRules = r.rules;
    if (r.error && flowId === undefined) this.xlateErrors[r.error]++;
    const k = key.slice(0, FLOW_WORDS);
    for (let i = 0; i < FLOW_WORDS; i++) k[i] &= r.mask[i];
    return { key: k, mask: r.mask, actions: r.actions, controller: r.controller, error: r.error };
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

function sameKey(a: Uint32Array, b: ArrayLike<number>): boolean {
  for (let i = 0; i < FLOW_WORDS; i++) if (a[i] !== b[i] >>> 0) return false;
  return true;
}
