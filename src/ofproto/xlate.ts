/**
 * Translation of an exception packet (an upcall: its flow key) through the
 * OpenFlow tables into (1) a datapath action program (src/dp/actions.ts) and
 * (2) a megaflow mask: the set of key bits the translation depended on, so
 * that the megaflow (key & mask, mask) -> program is correct for every packet
 * it matches (OVS "wildcards un-wildcarding").
 *
 * What goes into the mask:
 *  - always in_port and dl_type (as OVS does);
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
 * depth is bounded by MAX_RESUBMIT_DEPTH (beyond it the packet is dropped).
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
 */

import {
  FLOW_WORDS, W_IN_PORT, W_DL_HI, W_DL_SRC_LO, W_DL_DST_LO, W_TYPE_TCI, W_VLAN2, VLAN_CFI,
  keyDlSrc, keyDlDst,
} from '../dp/flow-key.js';
import { ProgramBuilder } from '../dp/actions.js';
import {
  OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_IN_PORT, OFPP_LOCAL, type OfAction,
} from './flow-syntax.js';
import type { FlowTables, Rule } from './tables.js';
import { isMulticastMac, type MacLearningTable } from './mac-learning.js';

export const MAX_RESUBMIT_DEPTH = 64;
/** Upper bound on datapath ops emitted for one translation. */
export const MAX_XLATE_OPS = 4096;

export interface XlatePort {
  /** OpenFlow port number (what rules and ovs-ofctl use; OFPP_LOCAL for the bridge port). */
  ofPort: number;
  /** Datapath port number (the key's in_port, OUTPUT argument). */
  dpPort: number;
  /** Excluded from FLOOD and from NORMAL flooding. */
  noFlood?: boolean;
}

/** Everything xlate reads or updates: no I/O. */
export interface XlateEnv {
  tables: FlowTables;
  macs: MacLearningTable;
  ports: readonly XlatePort[];
  /** ms. */
  now: number;
}

export interface XlateOptions {
  /** If given, credit 1 packet of this many bytes to every rule hit. */
  packetLen?: number;
  /** NORMAL learns source MACs (default true). */
  learn?: boolean;
}

export type XlateError = 'unknown_in_port' | 'too_deep' | 'too_many_actions';

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
  error?: XlateError;
}

class XlateAbort { constructor(readonly why: XlateError) {} }

interface Ctx {
  env: XlateEnv;
  flow: Uint32Array;
  wc: Uint32Array;
  prog: ProgramBuilder;
  rules: Rule[];
  opts: XlateOptions;
  byOf: Map<number, XlatePort>;
  usedMac: boolean;
}

/** Translate the packet whose key is key[keyOff..keyOff+FLOW_WORDS). */
export function xlate(env: XlateEnv, key: Uint32Array, keyOff = 0, opts: XlateOptions = {}): XlateResult {
  const flow = key.slice(keyOff, keyOff + FLOW_WORDS);
  const wc = new Uint32Array(FLOW_WORDS);
  wc[W_IN_PORT] = 0xffffffff;
  wc[W_TYPE_TCI] |= 0xffff0000;
  const byOf = new Map<number, XlatePort>();
  let inPort: XlatePort | undefined;
  for (const p of env.ports) {
    byOf.set(p.ofPort, p);
    if (p.dpPort === flow[W_IN_PORT]) inPort = p;
  }
  const ctx: Ctx = { env, flow, wc, prog: new ProgramBuilder(), rules: [], opts, byOf, usedMac: false };
  let error: XlateError | undefined;
  if (!inPort) {
    error = 'unknown_in_port';
  } else {
    flow[W_IN_PORT] = inPort.ofPort;
    try {
      doTable(ctx, 0, 0);
    } catch (e) {
      if (!(e instanceof XlateAbort)) throw e;
      error = e.why;
    }
  }
  return {
    actions: error ? new Int32Array(0) : ctx.prog.build(),
    mask: wc,
    rules: ctx.rules,
    usedMacLearning: ctx.usedMac,
    tablesVersion: env.tables.version,
    macVersion: env.macs.version,
    error,
  };
}

function doTable(ctx: Ctx, table: number, depth: number): void {
  if (depth > MAX_RESUBMIT_DEPTH) throw new XlateAbort('too_deep');
  const rule = ctx.env.tables.lookup(table, ctx.flow, 0, ctx.wc, 0);
  if (!rule) return;
  ctx.rules.push(rule);
  if (ctx.opts.packetLen !== undefined) ctx.env.tables.credit(rule, 1, ctx.opts.packetLen, ctx.env.now);
  doActions(ctx, rule.actions, table, depth);
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
  if (p) ctx.prog.output(p.dpPort);
}

function flood(ctx: Ctx, all: boolean): void {
  const inOf = ctx.flow[W_IN_PORT];
  for (const p of ctx.env.ports) {
    if (p.ofPort === inOf) continue;
    if (!all && p.noFlood) continue;
    ctx.prog.output(p.dpPort);
  }
}

function doOutput(ctx: Ctx, port: number): void {
  const inOf = ctx.flow[W_IN_PORT];
  switch (port) {
    case OFPP_NORMAL: doNormal(ctx); return;
    case OFPP_FLOOD: flood(ctx, false); return;
    case OFPP_ALL: flood(ctx, true); return;
    case OFPP_IN_PORT: emit(ctx, ctx.byOf.get(inOf)); return;
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
  const tci = f[W_TYPE_TCI] & 0xffff;
  const vlan = tci & VLAN_CFI ? tci & 0xfff : 0;
  const src = keyDlSrc(f, 0);
  const dst = keyDlDst(f, 0);
  const inOf = f[W_IN_PORT];
  const { macs, now } = ctx.env;
  if (ctx.opts.learn !== false) macs.learn(vlan, src, inOf, now);
  if (isMulticastMac(dst)) { flood(ctx, false); return; }
  const out = macs.lookup(vlan, dst, now);
  if (out === undefined) { flood(ctx, false); return; }
  if (out === inOf) return;
  const p = ctx.byOf.get(out);
  if (!p) { flood(ctx, false); return; }
  ctx.prog.output(p.dpPort);
}
