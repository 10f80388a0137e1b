/**
 * Translation of an exception packet (an upcall: its flow key) through the
 * OpenFlow tables into (1) a datapath action program (src/dp/actions.ts) and
 * (2) a megaflow mask: the set of key bits the translation depended on, so
 * that the megaflow (key & mask, mask) -> program is correct for every packet
 * it matches (OVS "wildcards un-wildcarding").
 *
 * What goes into the mask:
 *  - always in_port and dl_type (as OVS does), and for a frame received from a tunnel
 *    (tun_dst set) tun_id, tun_src and tun_dst;
 *  - for each table lookup, the masks of every classifier subtable examined
 *    (Classifier.lookupPriority), which is exactly what the choice of the
 *    winning rule depended on;
 *  - NORMAL: in_port, dl_src, dl_dst and the VLAN id + tag-present bits;
 *  - any VLAN-editing action (mod_vlan_vid/pcp, strip_vlan, push_vlan): both
 *    VLAN TCI words in full (the outcome depends on which tags exist and, for
 *    push_vlan, on the copied TCI; after a pop, later reads of the outer tag
 *    see the packet's inner tag);
 *  - setting a field never depends on its old value (the program always
 *    writes it), so mod_dl_src/dst add nothing.
 *
 * Semantics follow OVS: actions run in order; output to the in_port is
 * skipped unless the port is IN_PORT; FLOOD skips in_port and no-flood ports,
 * ALL skips in_port; resubmit(port,table) looks the (modified) flow up again
 * with in_port temporarily replaced; goto_table continues in a later table;
 * depth is bounded by MAX_RESUBMIT_DEPTH and the total number of table
 * lookups and group executions of one translation by MAX_RESUBMITS, as OVS
 * (64 and 64 * 64): a table set whose translation fans out (two resubmits per
 * table over 40 tables is 2^40 lookups) is cut off, and the packet dropped with
 * error too_deep / too_many_resubmits and an exact-match mask, so the drop flow
 * covers that flow alone.
 * A table miss drops. NORMAL learns (vlan, dl_src) -> in_port, then sends to
 * the learned port of dl_dst, or floods (unknown, broadcast or multicast
 * destination); a destination learned on in_port is dropped.
 *
 * VLAN model: the key carries up to two tags (outer, inner). A packet with
 * more than two tags is modeled with two; popping beyond them is a known
 * limitation (the datapath pops the real third tag, the model sees none).
 *
 * Ports: the key's in_port and the program's OUTPUT ports are datapath
 * port numbers; rules match OpenFlow port numbers. XlatePort maps both.
 *
 * OpenFlow 1.3 parts: output:CONTROLLER records a ControllerEvent (the
 * packet-in is sent by the caller, which must not install the translation
 * as a datapath flow: such flows stay on the slow path, as OVS's
 * "userspace" datapath action); the action set (write_actions /
 * clear_actions) runs at the end of the pipeline in the spec's order; groups
 * ALL/INDIRECT run every bucket on the packet as it was before the group (the
 * program restores addresses and tags between buckets), SELECT picks a bucket
 * by a hash of addresses and ports (which are then un-wildcarded).
 * write_metadata sets the metadata register that later tables match
 * (FlowTables keeps metadata rules beside the classifier); it starts at 0
 * for every packet and is not part of the datapath key.
 */

import {
  FLOW_WORDS, W_IN_PORT, W_DL_HI, W_DL_SRC_LO, W_DL_DST_LO, W_TYPE_TCI, W_VLAN2, W_TUN_ID, W_TUN_SRC, W_TUN_DST, VLAN_CFI,
  keyDlSrc, keyDlDst, ETH_TYPE_IP, ETH_TYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP, FRAG_LATER,
} from '../dp/flow-key.js';
import { ProgramBuilder, liveLength } from '../dp/actions.js';
import { inputVlan, includesVlan, outputVid, type PortVlan } from './port-vlan.js';
import {
  OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_IN_PORT, OFPP_LOCAL, OFPP_TABLE, type OfAction,
} from './flow-syntax.js';
import { W_NW, W_TP, W_L3_SRC, W_L3_DST } from '../dp/flow-key.js';
import type { FlowTables, Rule } from './tables.js';
import { isMulticastMac, type MacLearningTable } from './mac-learning.js';

export const MAX_RESUBMIT_DEPTH = 64;
/** Upper bound on resubmits, goto_tables and group executions in one translation (OVS's MAX_RESUBMITS). */
export const MAX_RESUBMITS = MAX_RESUBMIT_DEPTH * MAX_RESUBMIT_DEPTH;
/** Upper bound on datapath ops emitted for one translation. */
export const MAX_XLATE_OPS = 4096;

export interface XlatePort {
  /** OpenFlow port number (what rules and ovs-ofctl use; OFPP_LOCAL for the bridge port). */
  ofPort: number;
  /** Datapath port number (the key's in_port, OUTPUT argument). */
  dpPort: number;
  /** Excluded from FLOOD and from NORMAL flooding. */
  noFlood?: boolean;
  /** A tunnel port with options:key=flow: outputs carry the flow's tun_id (OP_SET_TUNNEL first). */
  tunnelKeyFlow?: boolean;
  /** Its VLAN role in NORMAL (OVS Port tag/trunks/vlan_mode); none: a trunk of every VLAN. */
  vlan?: PortVlan;
}

/** A group table entry (OpenFlow 1.1+ GROUP_MOD). */
export interface Group {
  id: number;
  type: 'all' | 'select' | 'indirect';
  buckets: { weight: number; actions: OfAction[] }[];
}

/** Everything xlate reads or updates: no I/O. */
export interface XlateEnv {
  tables: FlowTables;
  macs: MacLearningTable;
  ports: readonly XlatePort[];
  /** ms. */
  now: number;
  /** Group table (group id -> group); a missing group drops. */
  groups?: ReadonlyMap<number, Group>;
  /**
   * Fail-open (OVS fail_mode=standalone with no controller connected): the
   * bridge acts as a learning switch (NORMAL) whatever the tables say.
   */
  failOpen?: boolean;
}

/**
 * An output:CONTROLLER met during translation: the packet as the program
 * leaves it after `pc` words goes to the controller as a packet-in.
 */
export interface ControllerEvent {
  pc: number;
  maxLen: number;
  /** 'no_match': from a table-miss rule (priority 0, match all); 'action': any other rule. */
  reason: 'no_match' | 'action';
  table: number;
  cookie: bigint;
}

export interface XlateOptions {
  /** If given, credit 1 packet of this many bytes to every rule hit. */
  packetLen?: number;
  /** NORMAL learns source MACs (default true). */
  learn?: boolean;
}

export type XlateError = 'unknown_in_port' | 'too_deep' | 'too_many_resubmits' | 'too_many_actions';

/** Every XlateError, for counters. */
export const XLATE_ERRORS: readonly XlateError[] = ['unknown_in_port', 'too_deep', 'too_many_resubmits', 'too_many_actions'];

export interface XlateResult {
  /** Datapath program (empty = drop). */
  actions: Int32Array;
  /** Megaflow mask, FLOW_WORDS words. */
  mask: Uint32Array;
  /** Rules hit, in order (for stats attribution). */
  rules: Rule[];
  /** Whether NORMAL consulted the MAC table (revalidate on macs.version change). */
  usedMacLearning: boolean;
  tablesVersion: number;
  /** macs.version after the translation (it may learn). */
  macVersion: number;
  /** Packet-ins to send; when non-empty the translation must not become a datapath flow (slow path). */
  controller: ControllerEvent[];
  error?: XlateError;
}

class XlateAbort { constructor(readonly why: XlateError) {} }

/** Translation state (internal; XlateScratch keeps one). */
export interface Ctx {
  env: XlateEnv;
  flow: Uint32Array;
  wc: Uint32Array;
  prog: ProgramBuilder;
  rules: Rule[];
  opts: XlateOptions;
  byOf: Map<number, XlatePort>;
  usedMac: boolean;
  controller: ControllerEvent[];
  /** The rule whose actions run now (packet-in reason, table, cookie). */
  rule: Rule | undefined;
  /** OpenFlow action set (write_actions), by kind; run at the end of the pipeline. */
  actionSet: Map<string, OfAction>;
  depth: number;
  /** Table lookups after the first and group executions (capped at MAX_RESUBMITS). */
  resubmits: number;
  /** tun_id was set by an action (else an output to a flow-keyed tunnel depends on the received one). */
  tunSet: boolean;
  /** OpenFlow metadata register (write_metadata; 0 when the packet enters the pipeline). */
  meta: bigint;
}

function newCtx(env: XlateEnv, flow: Uint32Array, wc: Uint32Array, opts: XlateOptions, byOf: Map<number, XlatePort>): Ctx {
  return { env, flow, wc, prog: new ProgramBuilder(), rules: [], opts, byOf, usedMac: false, controller: [], rule: undefined, actionSet: new Map(), depth: 0, resubmits: 0, tunSet: false, meta: 0n };
}

/** prog without its dead tail (ops after the last output and the last packet-in point), e.g. NORMAL putting a frame's tag back. */
function live(prog: Int32Array, ctx: Ctx): Int32Array {
  let keep = 0;
  for (let i = 0; i < ctx.controller.length; i++) if (ctx.controller[i].pc > keep) keep = ctx.controller[i].pc;
  const n = liveLength(prog, keep);
  return n === prog.length ? prog : prog.subarray(0, n);
}

function result(ctx: Ctx, error: XlateError | undefined): XlateResult {
  // a cut-off translation depended on everything it had looked at, and maybe more: its drop flow matches exactly
  if (error) ctx.wc.fill(0xffffffff);
  return {
    // (ops after the last output, e.g. NORMAL putting a frame's tag back, change nothing anyone sees)
    actions: error ? new Int32Array(0) : live(ctx.prog.build(), ctx),
    mask: ctx.wc,
    rules: ctx.rules,
    usedMacLearning: ctx.usedMac,
    tablesVersion: ctx.env.tables.version,
    macVersion: ctx.env.macs.version,
    controller: error ? [] : ctx.controller,
    error,
  };
}

/**
 * Translate a PACKET_OUT: run `actions` on the packet whose key is `key`, as
 * if received on OpenFlow port inOfPort (which may be a reserved port such as
 * OFPP_CONTROLLER); output to OFPP_TABLE submits it to table 0.
 */
export function xlatePacketOut(env: XlateEnv, key: Uint32Array, inOfPort: number, actions: readonly OfAction[], opts: XlateOptions = {}): XlateResult {
  const flow = key.slice(0, FLOW_WORDS);
  flow[W_IN_PORT] = inOfPort;
  const byOf = new Map<number, XlatePort>();
  for (const p of env.ports) byOf.set(p.ofPort, p);
  const ctx = newCtx(env, flow, new Uint32Array(FLOW_WORDS), opts, byOf);
  let error: XlateError | undefined;
  try {
    doActions(ctx, actions, 0, 0);
    runActionSet(ctx);
  } catch (e) {
    if (!(e instanceof XlateAbort)) throw e;
    error = e.why;
  }
  return result(ctx, error);
}

/**
 * Storage one caller reuses across translations (the upcall and revalidation
 * paths): flow, mask, program builder, rule list and the port map are reset,
 * not reallocated, so a translation allocates next to nothing. What
 * xlateReuse() returns lives in it and is valid until its next call.
 */
export class XlateScratch {
  readonly flow = new Uint32Array(FLOW_WORDS);
  readonly wc = new Uint32Array(FLOW_WORDS);
  readonly ctx: Ctx;
  /** The ports array byOf was built from (rebuilt when the caller passes another). */
  private portsRef: readonly XlatePort[] | null = null;
  readonly res: XlateResult;
  static readonly NO_ACTIONS = new Int32Array(0);

  constructor() {
    this.ctx = newCtx(undefined as unknown as XlateEnv, this.flow, this.wc, {}, new Map());
    this.res = {
      actions: XlateScratch.NO_ACTIONS, mask: this.wc, rules: this.ctx.rules, usedMacLearning: false, tablesVersion: 0, macVersion: 0,
      controller: this.ctx.controller, error: undefined,
    };
  }

  /** Reset for a translation in env; returns the port of dpPort inPort (undefined: unknown). */
  start(env: XlateEnv, opts: XlateOptions, inDp: number): XlatePort | undefined {
    const c = this.ctx;
    c.env = env;
    c.opts = opts;
    if (this.portsRef !== env.ports) {
      this.portsRef = env.ports;
      c.byOf.clear();
      for (const p of env.ports) c.byOf.set(p.ofPort, p);
    }
    c.prog.reset();
    c.rules.length = 0;
    c.usedMac = false;
    if (c.controller.length > 0) c.controller = [];
    c.rule = undefined;
    if (c.actionSet.size > 0) c.actionSet = new Map();
    c.depth = 0;
    c.resubmits = 0;
    c.tunSet = false;
    c.meta = 0n;
    let inPort: XlatePort | undefined;
    for (const p of env.ports) if (p.dpPort === inDp) { inPort = p; break; }
    return inPort;
  }
}

function initWc(flow: Uint32Array, wc: Uint32Array): void {
  wc[W_IN_PORT] = 0xffffffff;
  wc[W_TYPE_TCI] |= 0xffff0000;
  // a frame that came through a tunnel: its megaflow matches the tunnel fields exactly (as OVS's xlate_wc_init)
  if (flow[W_TUN_DST] !== 0) {
    wc[W_TUN_ID] = 0xffffffff;
    wc[W_TUN_SRC] = 0xffffffff;
    wc[W_TUN_DST] = 0xffffffff;
  }
}

function run(ctx: Ctx, inPort: XlatePort | undefined): XlateError | undefined {
  if (!inPort) return 'unknown_in_port';
  ctx.flow[W_IN_PORT] = inPort.ofPort;
  try {
    if (ctx.env.failOpen) doNormal(ctx);
    else {
      doTable(ctx, 0, 0);
      runActionSet(ctx);
    }
  } catch (e) {
    if (!(e instanceof XlateAbort)) throw e;
    return e.why;
  }
  return undefined;
}

/** Translate the packet whose key is key[keyOff..keyOff+FLOW_WORDS). */
export function xlate(env: XlateEnv, key: Uint32Array, keyOff = 0, opts: XlateOptions = {}): XlateResult {
  const flow = key.slice(keyOff, keyOff + FLOW_WORDS);
  const wc = new Uint32Array(FLOW_WORDS);
  initWc(flow, wc);
  const byOf = new Map<number, XlatePort>();
  let inPort: XlatePort | undefined;
  for (const p of env.ports) {
    byOf.set(p.ofPort, p);
    if (p.dpPort === flow[W_IN_PORT]) inPort = p;
  }
  const ctx = newCtx(env, flow, wc, opts, byOf);
  return result(ctx, run(ctx, inPort));
}

/**
 * xlate() into reused storage (XlateScratch): the same translation, but the
 * result, its mask, rule list and actions (a view of the builder) belong to
 * the scratch and are overwritten by its next use. The controller events
 * array is fresh whenever it is non-empty (callers may keep it).
 */
export function xlateReuse(env: XlateEnv, key: Uint32Array, keyOff: number, opts: XlateOptions, sc: XlateScratch): XlateResult {
  const flow = sc.flow;
  for (let i = 0; i < FLOW_WORDS; i++) flow[i] = key[keyOff + i];
  sc.wc.fill(0);
  initWc(flow, sc.wc);
  const ctx = sc.ctx;
  const error = run(ctx, sc.start(env, opts, flow[W_IN_PORT]));
  if (error) sc.wc.fill(0xffffffff);
  const r = sc.res;
  r.actions = error ? XlateScratch.NO_ACTIONS : live(ctx.prog.view(), ctx);
  r.rules = ctx.rules;
  r.usedMacLearning = ctx.usedMac;
  r.tablesVersion = env.tables.version;
  r.macVersion = env.macs.version;
  r.controller = error || ctx.controller.length === 0 ? EMPTY_EVENTS : ctx.controller;
  r.error = error;
  return r;
}

const EMPTY_EVENTS = Object.freeze([]) as unknown as ControllerEvent[];

/** Action-set kind: one action of each kind is kept (spec 5.10); sets are per field. */
function setKind(a: OfAction): string | undefined {
  switch (a.type) {
    case 'strip_vlan': return 'pop_vlan';
    case 'push_vlan': return 'push_vlan';
    case 'mod_dl_src': case 'mod_dl_dst': case 'mod_vlan_vid': case 'mod_vlan_pcp':
    case 'set_vlan_vid': case 'set_vlan_pcp': case 'set_nw_src': case 'set_nw_dst': case 'set_tp_src': case 'set_tp_dst':
      return `set:${a.type.replace(/^(mod|set)_/, '')}`;
    case 'group': return 'group';
    case 'set_tunnel': return 'set:tunnel';
    case 'output': case 'controller': return 'output';
    default: return undefined;
  }
}

/** Execute the action set in the spec's order: pop, push, set-field, then group or output. */
function runActionSet(ctx: Ctx): void {
  const s = ctx.actionSet;
  if (s.size === 0) return;
  ctx.actionSet = new Map();
  const list: OfAction[] = [];
  const take = (k: string): void => { const a = s.get(k); if (a) list.push(a); };
  take('pop_vlan');
  take('push_vlan');
  for (const k of s.keys()) if (k.startsWith('set:')) take(k);
  if (s.has('group')) take('group');
  else take('output');
  doActions(ctx, list, ctx.rule?.table ?? 0, ctx.depth);
}

function doTable(ctx: Ctx, table: number, depth: number): void {
  if (depth > MAX_RESUBMIT_DEPTH) throw new XlateAbort('too_deep');
  if (depth > 0 && ++ctx.resubmits > MAX_RESUBMITS) throw new XlateAbort('too_many_resubmits');
  const rule = ctx.env.tables.lookup(table, ctx.flow, 0, ctx.wc, 0, ctx.meta);
  if (!rule) return;
  ctx.rules.push(rule);
  if (ctx.opts.packetLen !== undefined) ctx.env.tables.credit(rule, 1, ctx.opts.packetLen, ctx.env.now);
  const saved = ctx.rule;
  ctx.rule = rule;
  ctx.depth = depth;
  doActions(ctx, rule.actions, table, depth);
  ctx.rule = saved;
}

function isTableMiss(r: Rule): boolean {
  if (r.priority !== 0 || r.match.meta !== undefined) return false;
  for (let i = 0; i < FLOW_WORDS; i++) if (r.match.mask[i] !== 0) return false;
  return true;
}

/** Emit ops that bring the packet back from `cur` to `saved` (Ethernet addresses and VLAN tags). */
function restorePacket(ctx: Ctx, saved: Uint32Array): void {
  const f = ctx.flow;
  if (f[W_DL_HI] !== saved[W_DL_HI] || f[W_DL_SRC_LO] !== saved[W_DL_SRC_LO] || f[W_DL_DST_LO] !== saved[W_DL_DST_LO]) {
    ctx.prog.setDlSrc(keyDlSrc(saved, 0));
    ctx.prog.setDlDst(keyDlDst(saved, 0));
  }
  if (f[W_L3_SRC] !== saved[W_L3_SRC] && (saved[W_TYPE_TCI] >>> 16) === ETH_TYPE_IP) ctx.prog.setNwSrc(saved[W_L3_SRC]);
  if (f[W_L3_DST] !== saved[W_L3_DST] && (saved[W_TYPE_TCI] >>> 16) === ETH_TYPE_IP) ctx.prog.setNwDst(saved[W_L3_DST]);
  if (f[W_TP] !== saved[W_TP]) {
    const proto = saved[W_NW] >>> 24;
    if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) { ctx.prog.setTpSrc(saved[W_TP] >>> 16); ctx.prog.setTpDst(saved[W_TP] & 0xffff); }
  }
  if ((f[W_TYPE_TCI] & 0xffff) !== (saved[W_TYPE_TCI] & 0xffff) || f[W_VLAN2] !== saved[W_VLAN2]) {
    if (f[W_TYPE_TCI] & VLAN_CFI) ctx.prog.popVlan();
    if (f[W_VLAN2] & VLAN_CFI) ctx.prog.popVlan();
    if (saved[W_VLAN2] & VLAN_CFI) ctx.prog.pushVlan(0x8100, saved[W_VLAN2] & 0xffff & ~VLAN_CFI);
    if (saved[W_TYPE_TCI] & VLAN_CFI) ctx.prog.pushVlan(0x8100, saved[W_TYPE_TCI] & 0xffff & ~VLAN_CFI);
  }
  f.set(saved);
}

function doGroup(ctx: Ctx, id: number, table: number, depth: number): void {
  const g = ctx.env.groups?.get(id);
  if (!g || g.buckets.length === 0) return;
  if (depth > MAX_RESUBMIT_DEPTH) throw new XlateAbort('too_deep');
  if (++ctx.resubmits > MAX_RESUBMITS) throw new XlateAbort('too_many_resubmits');
  if (g.type === 'select') {
    // the choice depends on addresses and ports: un-wildcard them
    const f = ctx.flow;
    const words = [W_DL_HI, W_DL_SRC_LO, W_DL_DST_LO, W_NW, W_TP, W_L3_SRC, W_L3_SRC + 1, W_L3_SRC + 2, W_L3_SRC + 3,
      W_L3_DST, W_L3_DST + 1, W_L3_DST + 2, W_L3_DST + 3];
    let h = 0x9e3779b9;
    for (const w of words) {
      ctx.wc[w] = 0xffffffff;
      h = Math.imul(h ^ f[w], 0x85ebca6b) >>> 0;
      h ^= h >>> 13;
    }
    const total = g.buckets.reduce((a, b) => a + Math.max(b.weight, 0), 0);
    if (total <= 0) return;
    let pick = h % total;
    for (const b of g.buckets) {
      if (pick < b.weight) { doActions(ctx, b.actions, table, depth + 1); return; }
      pick -= b.weight;
    }
    return;
  }
  // ALL (and INDIRECT): every bucket sees the packet as it was before the group
  for (const b of g.buckets) {
    const saved = ctx.flow.slice();
    const savedSet = ctx.actionSet;
    ctx.actionSet = new Map();
    doActions(ctx, b.actions, table, depth + 1);
    ctx.actionSet = savedSet;
    restorePacket(ctx, saved);
  }
}

function vlanTouch(ctx: Ctx): void {
  ctx.wc[W_TYPE_TCI] |= 0xffff;
  ctx.wc[W_VLAN2] |= 0xffff;
}

function doActions(ctx: Ctx, actions: readonly OfAction[], table: number, depth: number): void {
  const f = ctx.flow;
  for (const a of actions) {
    if (ctx.prog.length > MAX_XLATE_OPS) throw new XlateAbort('too_many_actions');
    switch (a.type) {
      case 'output':
        doOutput(ctx, a.port);
        break;
      case 'mod_dl_src': {
        const hi = Math.floor(a.mac / 2 ** 32);
        f[W_DL_HI] = ((hi << 16) | (f[W_DL_HI] & 0xffff)) >>> 0;
        f[W_DL_SRC_LO] = a.mac % 2 ** 32;
        ctx.prog.setDlSrc(a.mac);
        break;
      }
      case 'mod_dl_dst': {
        const hi = Math.floor(a.mac / 2 ** 32);
        f[W_DL_HI] = ((f[W_DL_HI] & 0xffff0000) | hi) >>> 0;
        f[W_DL_DST_LO] = a.mac % 2 ** 32;
        ctx.prog.setDlDst(a.mac);
        break;
      }
      case 'set_nw_src':
      case 'set_nw_dst': {
        // only an IPv4 packet is changed: the decision depends on dl_type
        ctx.wc[W_TYPE_TCI] |= 0xffff0000;
        if ((f[W_TYPE_TCI] >>> 16) !== ETH_TYPE_IP) break;
        // the TCP/UDP checksum update depends on the protocol and fragment state
        ctx.wc[W_NW] |= 0xff0000ff;
        if (a.type === 'set_nw_src') { f[W_L3_SRC] = a.ip >>> 0; ctx.prog.setNwSrc(a.ip); }
        else { f[W_L3_DST] = a.ip >>> 0; ctx.prog.setNwDst(a.ip); }
        break;
      }
      case 'set_tp_src':
      case 'set_tp_dst': {
        ctx.wc[W_TYPE_TCI] |= 0xffff0000;
        ctx.wc[W_NW] |= 0xff0000ff;
        const type = f[W_TYPE_TCI] >>> 16;
        const proto = f[W_NW] >>> 24;
        if ((type !== ETH_TYPE_IP && type !== ETH_TYPE_IPV6) || proto !== (a.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP)) break;
        if ((f[W_NW] & FRAG_LATER) !== 0) break;
        if (a.type === 'set_tp_src') { f[W_TP] = ((a.port << 16) | (f[W_TP] & 0xffff)) >>> 0; ctx.prog.setTpSrc(a.port); }
        else { f[W_TP] = ((f[W_TP] & 0xffff0000) | a.port) >>> 0; ctx.prog.setTpDst(a.port); }
        break;
      }
      case 'set_vlan_vid':
      case 'set_vlan_pcp': {
        vlanTouch(ctx);
        const tci = f[W_TYPE_TCI] & 0xffff;
        if (tci & VLAN_CFI) {
          let nt: number;
          if (a.type === 'set_vlan_vid') { nt = (tci & ~0xfff) | a.vid; ctx.prog.setVlanVid(a.vid); }
          else { nt = (tci & ~0xe000) | (a.pcp << 13); ctx.prog.setVlanPcp(a.pcp); }
          f[W_TYPE_TCI] = ((f[W_TYPE_TCI] & 0xffff0000) | nt) >>> 0;
        }
        break;
      }
      case 'controller': {
        const r = ctx.rule;
        ctx.controller.push({
          pc: ctx.prog.length, maxLen: a.maxLen, reason: r && isTableMiss(r) ? 'no_match' : 'action',
          table: r?.table ?? 0, cookie: r?.cookie ?? 0n,
        });
        break;
      }
      case 'group':
        doGroup(ctx, a.group, table, depth);
        break;
      case 'clear_actions':
        ctx.actionSet = new Map();
        break;
      case 'write_actions':
        for (const x of a.actions) {
          const k = setKind(x);
          if (k !== undefined) ctx.actionSet.set(k, x);
        }
        break;
      case 'set_tunnel':
        f[W_TUN_ID] = a.id >>> 0;
        ctx.tunSet = true;
        break;
      case 'write_metadata':
        ctx.meta = (ctx.meta & ~a.mask) | (a.value & a.mask);
        break;
      case 'mod_vlan_vid':
      case 'mod_vlan_pcp': {
        vlanTouch(ctx);
        const tci = f[W_TYPE_TCI] & 0xffff;
        if (tci & VLAN_CFI) {
          let nt: number;
          if (a.type === 'mod_vlan_vid') { nt = (tci & ~0xfff) | a.vid; ctx.prog.setVlanVid(a.vid); }
          else { nt = (tci & ~0xe000) | (a.pcp << 13); ctx.prog.setVlanPcp(a.pcp); }
          f[W_TYPE_TCI] = ((f[W_TYPE_TCI] & 0xffff0000) | nt) >>> 0;
        } else {
          // Untagged: push a tag (OVS mod_vlan_vid / mod_vlan_pcp on an untagged packet).
          const wire = a.type === 'mod_vlan_vid' ? a.vid : a.pcp << 13;
          ctx.prog.pushVlan(0x8100, wire);
          f[W_VLAN2] = 0;
          f[W_TYPE_TCI] = ((f[W_TYPE_TCI] & 0xffff0000) | wire | VLAN_CFI) >>> 0;
        }
        break;
      }
      case 'strip_vlan': {
        vlanTouch(ctx);
        if (f[W_TYPE_TCI] & VLAN_CFI) {
          ctx.prog.popVlan();
          f[W_TYPE_TCI] = ((f[W_TYPE_TCI] & 0xffff0000) | (f[W_VLAN2] & 0xffff)) >>> 0;
          f[W_VLAN2] = 0;
        }
        break;
      }
      case 'push_vlan': {
        vlanTouch(ctx);
        const outer = f[W_TYPE_TCI] & 0xffff;
        // The new tag copies VID/PCP of the current outer tag, if any (OpenFlow 1.1+ / OVS).
        const wire = outer & VLAN_CFI ? outer & ~VLAN_CFI : 0;
        ctx.prog.pushVlan(a.tpid, wire);
        f[W_VLAN2] = outer;
        f[W_TYPE_TCI] = ((f[W_TYPE_TCI] & 0xffff0000) | wire | VLAN_CFI) >>> 0;
        break;
      }
      case 'resubmit': {
        const saved = f[W_IN_PORT];
        if (a.port !== undefined && a.port !== OFPP_IN_PORT) f[W_IN_PORT] = a.port;
        doTable(ctx, a.table ?? table, depth + 1);
        f[W_IN_PORT] = saved;
        break;
      }
      case 'goto_table':
        doTable(ctx, a.table, depth + 1);
        return;
    }
  }
}

function emit(ctx: Ctx, p: XlatePort | undefined): void {
  if (p) output(ctx, p);
}

/** OUTPUT to p; a flow-keyed tunnel port gets the flow's tun_id first. */
function output(ctx: Ctx, p: XlatePort): void {
  if (p.tunnelKeyFlow === true) {
    if (!ctx.tunSet) ctx.wc[W_TUN_ID] = 0xffffffff;
    ctx.prog.setTunnel(ctx.flow[W_TUN_ID]);
  }
  ctx.prog.output(p.dpPort);
}

function flood(ctx: Ctx, all: boolean): void {
  const inOf = ctx.flow[W_IN_PORT];
  for (const p of ctx.env.ports) {
    if (p.ofPort === inOf) continue;
    if (!all && p.noFlood) continue;
    output(ctx, p);
  }
}

function doOutput(ctx: Ctx, port: number): void {
  const inOf = ctx.flow[W_IN_PORT];
  switch (port) {
    case OFPP_NORMAL: doNormal(ctx); return;
    case OFPP_FLOOD: flood(ctx, false); return;
    case OFPP_ALL: flood(ctx, true); return;
    case OFPP_IN_PORT: emit(ctx, ctx.byOf.get(inOf)); return;
    case OFPP_TABLE: doTable(ctx, 0, ctx.depth + 1); return;
    case OFPP_LOCAL:
      if (inOf !== OFPP_LOCAL) emit(ctx, ctx.byOf.get(OFPP_LOCAL));
      return;
    default:
      if (port === inOf) return;
      emit(ctx, ctx.byOf.get(port));
  }
}

function doNormal(ctx: Ctx): void {
  const f = ctx.flow;
  const wc = ctx.wc;
  wc[W_DL_HI] = 0xffffffff;
  wc[W_DL_SRC_LO] = 0xffffffff;
  wc[W_DL_DST_LO] = 0xffffffff;
  wc[W_TYPE_TCI] |= VLAN_CFI | 0xfff;
  ctx.usedMac = true;
  const dst = keyDlDst(f, 0);
  // 01:80:c2:00:00:0x (STP, LACP, LLDP, ...) is for the bridge itself, not forwarded (OVS, forward_bpdu=false)
  if (Math.floor(dst / 16) === 0x0180c200000) return;
  const tci = f[W_TYPE_TCI] & 0xffff;
  const inOf = f[W_IN_PORT];
  // the frame's VLAN as its input port's role says (OVS input_vid_is_valid, xvlan_input_translate)
  const vlan = inputVlan(ctx.byOf.get(inOf)?.vlan, tci & VLAN_CFI ? tci & 0xfff : 0);
  if (vlan < 0) return; // a VLAN the input port does not carry: dropped
  const src = keyDlSrc(f, 0);
  const { macs, now } = ctx.env;
  if (ctx.opts.learn !== false) macs.learn(vlan, src, inOf, now);
  const saved = { tci: f[W_TYPE_TCI], vlan2: f[W_VLAN2] };
  const tag: NormalTag = { outer: tci & VLAN_CFI ? tci & 0xfff : -1 };
  const out = isMulticastMac(dst) ? undefined : macs.lookup(vlan, dst, now);
  const p = out === undefined ? undefined : ctx.byOf.get(out);
  if (out !== undefined && out === inOf) return;
  if (p !== undefined) outputNormal(ctx, p, vlan, saved, tag);
  else {
    // unknown, broadcast or multicast destination: every other port that carries the VLAN
    for (const q of ctx.env.ports) if (q.ofPort !== inOf && !q.noFlood) outputNormal(ctx, q, vlan, saved, tag);
  }
  // later actions see the frame as NORMAL found it
  setOuterVid(ctx, saved, tag, tci & VLAN_CFI ? tci & 0xfff : -1);
}

/** The outer tag NORMAL's outputs left on the frame: its VLAN id, or -1 for none (the frame's own tag popped, or none pushed). */
interface NormalTag { outer: number }

/** NORMAL's output of a frame of `vlan` to p (OVS output_normal): skipped unless p carries it; tagged as p's role says. */
function outputNormal(ctx: Ctx, p: XlatePort, vlan: number, saved: { tci: number; vlan2: number }, tag: NormalTag): void {
  if (!includesVlan(p.vlan, vlan)) return;
  const vid = outputVid(p.vlan, vlan);
  setOuterVid(ctx, saved, tag, vid === 0 ? -1 : vid);
  output(ctx, p);
}

/**
 * Bring the frame NORMAL received (outer tag saved.tci, inner saved.vlan2) to an outer tag with VLAN
 * id `want` (-1: none of NORMAL's; a tag of the frame's own keeps its PCP), from the state `tag`
 * the earlier outputs left; the flow key follows, as for the VLAN actions.
 */
function setOuterVid(ctx: Ctx, saved: { tci: number; vlan2: number }, tag: NormalTag, want: number): void {
  const f = ctx.flow;
  const type = f[W_TYPE_TCI] & 0xffff0000;
  const own = (saved.tci & VLAN_CFI) !== 0;
  const ownTci = saved.tci & 0xffff;
  if (tag.outer === want) return;
  if (want < 0) {
    ctx.prog.popVlan();
    f[W_TYPE_TCI] = (type | (own ? saved.vlan2 & 0xffff : 0)) >>> 0;
    f[W_VLAN2] = 0;
  } else if (tag.outer >= 0) {
    ctx.prog.setVlanVid(want);
    f[W_TYPE_TCI] = ((f[W_TYPE_TCI] & ~0xfff) | want) >>> 0;
  } else {
    // a tag on an untagged frame (PCP 0), or the frame's own tag back (its PCP kept) with this VLAN id
    const t = own ? (ownTci & ~VLAN_CFI & ~0xfff) | want : want;
    ctx.prog.pushVlan(0x8100, t);
    f[W_VLAN2] = own ? saved.vlan2 : 0;
    f[W_TYPE_TCI] = (type | t | VLAN_CFI) >>> 0;
  }
  tag.outer = want;
}
