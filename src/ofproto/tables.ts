/**
 * OpenFlow tables 0..254: rules with priorities, counters and timeouts, kept
 * in one prioritized tuple-space classifier per table (src/dp/classifier.ts).
 *
 * Times are milliseconds supplied by the caller (no clock inside: testable).
 * `version` bumps on every change that can alter a translation (add, modify,
 * delete, expiry), so the datapath revalidator knows when megaflows may be
 * stale.
 */

import { Classifier } from '../dp/classifier.js';
import { FLOW_WORDS } from '../dp/flow-key.js';
import type { FlowSpec, Match, OfAction } from './flow-syntax.js';

export const N_TABLES = 255;

export interface Rule {
  readonly id: number;
  readonly table: number;
  readonly priority: number;
  readonly match: Match;
  actions: OfAction[];
  cookie: bigint;
  idleTimeout: number;
  hardTimeout: number;
  /** ms timestamps. */
  readonly created: number;
  lastUsed: number;
  nPackets: number;
  nBytes: number;
  /** OpenFlow flow-mod flags (OFPFF_SEND_FLOW_REM = 1, ...); 0 for rules from the CLI. */
  flags?: number;
  /** Set for rules an OpenFlow peer added (they are not stored in conf.json, as OVS keeps no flows). */
  origin?: 'openflow';
}

export type RemovalReason = 'idle_timeout' | 'hard_timeout' | 'delete';

export interface RemovedRule {
  rule: Rule;
  reason: RemovalReason;
}

interface Table {
  cls: Classifier;
  /**
   * Rules that match metadata: not in the classifier (whose key is the
   * datapath's), looked up by a scan in priority order after it.
   */
  metaRules: Rule[];
  /** classifier handle -> rule */
  byHandle: Map<number, Rule>;
  /** rule id -> classifier handle */
  handleOf: Map<number, number>;
}

export class FlowTables {
  /** Bumps on every change. */
  version = 0;
  private tables: (Table | undefined)[] = new Array(N_TABLES);
  private byId = new Map<number, Rule>();
  private nextId = 1;

  /** Number of rules in one table, or in all. */
  size(table?: number): number {
    if (table === undefined) return this.byId.size;
    return this.tables[table]?.byHandle.size ?? 0;
  }

  /** Rule by id. */
  get(id: number): Rule | undefined { return this.byId.get(id); }

  /**
   * add-flow: insert a rule. A rule with the same table, priority and match is
   * replaced (OpenFlow: the old entry, counters included, is cleared).
   */
  addFlow(spec: FlowSpec, now: number): Rule {
    const tid = spec.table ?? 0;
    if (tid < 0 || tid >= N_TABLES) throw new RangeError(`table ${tid} out of range`);
    const t = this.table(tid);
    const sm = spec.match.meta;
    if (sm === undefined) {
      const old = t.cls.findExact(spec.match.key, 0, spec.match.mask, 0, spec.priority);
      if (old >= 0) this.removeRule(t.byHandle.get(old)!);
    } else {
      const old = t.metaRules.find((r) => r.priority === spec.priority && matchEquals(r.match, spec.match));
      if (old) this.removeRule(old);
    }
    const match: Match = { key: new Uint32Array(FLOW_WORDS), mask: spec.match.mask.slice() };
    for (let i = 0; i < FLOW_WORDS; i++) match.key[i] = spec.match.key[i] & match.mask[i];
    if (sm !== undefined) match.meta = { value: sm.value & sm.mask, mask: sm.mask };
    const rule: Rule = {
      id: this.nextId++, table: tid, priority: spec.priority, match, actions: spec.actions.slice(),
      cookie: spec.cookie, idleTimeout: spec.idleTimeout, hardTimeout: spec.hardTimeout,
      created: now, lastUsed: now, nPackets: 0, nBytes: 0,
    };
    if (sm === undefined) {
      const h = t.cls.insert(match.key, 0, match.mask, 0, rule.priority, rule.id);
      t.byHandle.set(h, rule);
      t.handleOf.set(rule.id, h);
    } else {
      // priority descending, then insertion order
      let i = 0;
      while (i < t.metaRules.length && t.metaRules[i].priority >= rule.priority) i++;
      t.metaRules.splice(i, 0, rule);
    }
    this.byId.set(rule.id, rule);
    this.version++;
    return rule;
  }

  /**
   * Rules selected by criteria (match mode FlowSpec): strict = same priority
   * and exactly the same match; non-strict = the rule's match is at least as
   * specific as the criteria. table undefined = all tables; cookie/mask and
   * out_port filter too.
   */
  select(crit: FlowSpec, strict: boolean): Rule[] {
    const out: Rule[] = [];
    for (const r of this.rules(crit.table)) {
      if (strict) {
        if (r.priority !== crit.priority || !matchEquals(r.match, crit.match)) continue;
      } else if (!matchCovers(crit.match, r.match)) continue;
      if (((r.cookie ^ crit.cookie) & crit.cookieMask) !== 0n) continue;
      if (crit.outPort !== undefined && !outputsTo(r.actions, crit.outPort)) continue;
      if (crit.outGroup !== undefined && !usesGroup(r.actions, crit.outGroup)) continue;
      out.push(r);
    }
    return out;
  }

  /** del-flows / del-flows --strict. Returns the removed rules. */
  delFlows(crit: FlowSpec, strict: boolean): Rule[] {
    const sel = this.select(crit, strict);
    for (const r of sel) this.removeRule(r);
    return sel;
  }

  /** mod-flows: replace the actions of the selected rules. Returns how many. */
  modFlows(crit: FlowSpec, actions: readonly OfAction[], strict: boolean): number {
    return this.modFlowRules(crit, actions, strict).length;
  }

  /** mod-flows returning the modified rules. */
  modFlowRules(crit: FlowSpec, actions: readonly OfAction[], strict: boolean): Rule[] {
    const sel = this.select(crit, strict);
    for (const r of sel) r.actions = actions.slice();
    if (sel.length > 0) this.version++;
    return sel;
  }

  /** Remove one rule by id. */
  removeById(id: number): boolean {
    const r = this.byId.get(id);
    if (!r) return false;
    this.removeRule(r);
    return true;
  }

  /**
   * Highest-priority rule of `table` matching the key; the masks the lookup
   * examined are OR-ed into wc (if given).
   */
  lookup(table: number, key: Uint32Array, keyOff = 0, wc?: Uint32Array, wcOff = 0, metadata = 0n): Rule | undefined {
    const t = this.tables[table];
    if (!t) return undefined;
    const h = t.cls.lookupPriority(key, keyOff, wc, wcOff);
    const best = h < 0 ? undefined : t.byHandle.get(h);
    if (t.metaRules.length === 0) return best;
    // metadata rules of a higher priority win; each one examined adds its mask to wc
    // (metadata itself is a function of fields already in wc: the actions that wrote it depended on them)
    for (const r of t.metaRules) {
      if (best !== undefined && r.priority <= best.priority) break;
      const mk = r.match.mask;
      let ok = ((metadata ^ r.match.meta!.value) & r.match.meta!.mask) === 0n;
      for (let i = 0; i < FLOW_WORDS; i++) {
        if (wc) wc[wcOff + i] |= mk[i];
        if (((key[keyOff + i] ^ r.match.key[i]) & mk[i]) !== 0) ok = false;
      }
      if (ok) return r;
    }
    return best;
  }

  /** Account traffic to a rule. */
  credit(rule: Rule, packets: number, bytes: number, now: number): void {
    rule.nPackets += packets;
    rule.nBytes += bytes;
    if (packets > 0 && now > rule.lastUsed) rule.lastUsed = now;
  }

  /** Remove rules whose idle or hard timeout passed. */
  expire(now: number): RemovedRule[] {
    const out: RemovedRule[] = [];
    for (const r of [...this.byId.values()]) {
      if (r.hardTimeout > 0 && now - r.created >= r.hardTimeout * 1000) out.push({ rule: r, reason: 'hard_timeout' });
      else if (r.idleTimeout > 0 && now - r.lastUsed >= r.idleTimeout * 1000) out.push({ rule: r, reason: 'idle_timeout' });
    }
    for (const x of out) this.removeRule(x.rule);
    return out;
  }

  /** Rules of one table (or all), ordered by table, priority desc, id. */
  rules(table?: number): Rule[] {
    const out: Rule[] = [];
    if (table !== undefined) {
      const t = this.tables[table];
      if (t) out.push(...t.byHandle.values(), ...t.metaRules);
    } else out.push(...this.byId.values());
    out.sort((a, b) => a.table - b.table || b.priority - a.priority || a.id - b.id);
    return out;
  }

  /** Remove everything. */
  clear(): void {
    this.tables = new Array(N_TABLES);
    this.byId.clear();
    this.version++;
  }

  private table(tid: number): Table {
    let t = this.tables[tid];
    if (!t) {
      t = { cls: new Classifier(16), metaRules: [], byHandle: new Map(), handleOf: new Map() };
      this.tables[tid] = t;
    }
    return t;
  }

  private removeRule(r: Rule): void {
    const t = this.tables[r.table]!;
    const h = t.handleOf.get(r.id);
    if (h === undefined) {
      t.metaRules.splice(t.metaRules.indexOf(r), 1);
    } else {
      t.cls.remove(h);
      t.byHandle.delete(h);
      t.handleOf.delete(r.id);
    }
    this.byId.delete(r.id);
    this.version++;
  }
}

/** Whether the actions (write_actions included) output to `port` (OFPP_CONTROLLER: a controller action). */
export function outputsTo(actions: readonly OfAction[], port: number): boolean {
  return actions.some((a) => (a.type === 'output' && a.port === port) || (a.type === 'controller' && port === 0xfffd)
    || (a.type === 'write_actions' && outputsTo(a.actions, port)));
}

/** Whether the actions (write_actions included) use group `g`. */
export function usesGroup(actions: readonly OfAction[], g: number): boolean {
  return actions.some((a) => (a.type === 'group' && a.group === g) || (a.type === 'write_actions' && usesGroup(a.actions, g)));
}

/** Same mask and same masked value. */
export function matchEquals(a: Match, b: Match): boolean {
  const am = a.meta?.mask ?? 0n;
  if (am !== (b.meta?.mask ?? 0n) || (((a.meta?.value ?? 0n) ^ (b.meta?.value ?? 0n)) & am) !== 0n) return false;
  for (let i = 0; i < FLOW_WORDS; i++) {
    if (a.mask[i] !== b.mask[i]) return false;
    if (((a.key[i] ^ b.key[i]) & a.mask[i]) !== 0) return false;
  }
  return true;
}

/**
 * Non-strict (loose) match: every bit `crit` constrains is constrained by
 * `rule` to the same value, i.e. rule is at least as specific as crit.
 */
export function matchCovers(crit: Match, rule: Match): boolean {
  const cm = crit.meta?.mask ?? 0n;
  if ((cm & ~(rule.meta?.mask ?? 0n)) !== 0n || (((crit.meta?.value ?? 0n) ^ (rule.meta?.value ?? 0n)) & cm) !== 0n) return false;
  for (let i = 0; i < FLOW_WORDS; i++) {
    const cm = crit.mask[i];
    if ((cm & ~rule.mask[i]) !== 0) return false;
    if (((crit.key[i] ^ rule.key[i]) & cm) !== 0) return false;
  }
  return true;
}
