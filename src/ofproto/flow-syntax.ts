/**
 * ovs-ofctl flow syntax: parser and formatter (see ovs-fields(7),
 * ovs-actions(7), ovs-ofctl(8) "Flow Syntax"), driven by the field table in
 * src/dp/flow-key.ts.
 *
 * Match fields may come in any order, separated by commas or spaces;
 * everything after `actions=` is the action list. A field given twice takes
 * the later value (as ovs-ofctl does); dl_vlan and dl_vlan_pcp only replace
 * their bits of vlan_tci. Prerequisites are checked
 * after the whole match is read, like OVS (tp_dst needs tcp/udp/sctp, ...);
 * unlike ovs-ofctl 3.1, which silently drops a field whose prerequisite is
 * missing, we refuse it. Every error is a FlowSyntaxError naming the
 * 1-based column and the offending token.
 */

import {
  FIELDS, FLOW_WORDS, fieldByName, getField, setField, fieldOnes, formatMac,
  type FieldDef, VLAN_CFI,
  ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_ARP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP,
  IPPROTO_ICMP, IPPROTO_ICMPV6, FRAG_ANY, FRAG_LATER,
} from '../dp/flow-key.js';
import { tryParseMac, macToNumber } from '../util/net.js';

// ---------------------------------------------------------------------------
// Ports

export const OFPP_MAX = 0xff00;
export const OFPP_IN_PORT = 0xfff8;
export const OFPP_TABLE = 0xfff9;
export const OFPP_NORMAL = 0xfffa;
export const OFPP_FLOOD = 0xfffb;
export const OFPP_ALL = 0xfffc;
export const OFPP_CONTROLLER = 0xfffd;
export const OFPP_LOCAL = 0xfffe;
export const OFPP_NONE = 0xffff;
/** Default priority of a flow (OFP_DEFAULT_PRIORITY). */
export const DEFAULT_PRIORITY = 0x8000;

const RESERVED_PORTS: ReadonlyMap<string, number> = new Map([
  ['IN_PORT', OFPP_IN_PORT], ['NORMAL', OFPP_NORMAL], ['FLOOD', OFPP_FLOOD],
  ['ALL', OFPP_ALL], ['LOCAL', OFPP_LOCAL], ['NONE', OFPP_NONE],
]);
const RESERVED_NAMES: ReadonlyMap<number, string> = new Map([...RESERVED_PORTS].map(([k, v]) => [v, k]));

/** Name -> port number (e.g. an interface name); undefined if unknown. */
export type PortResolver = (name: string) => number | undefined;
/** Port number -> name for printing; undefined prints the number. */
export type PortNamer = (port: number) => string | undefined;

// ---------------------------------------------------------------------------
// Matches and actions

/** A match: value and mask, FLOW_WORDS words each (key bits outside mask are 0). */
export interface Match {
  readonly key: Uint32Array;
  readonly mask: Uint32Array;
  /**
   * OpenFlow metadata (the 64-bit pipeline register write_metadata sets), if
   * matched: value & mask. Not a datapath field (always 0 when a packet enters
   * the pipeline), so it lives beside the key.
   */
  meta?: { value: bigint; mask: bigint };
}

export function newMatch(): Match {
  return { key: new Uint32Array(FLOW_WORDS), mask: new Uint32Array(FLOW_WORDS) };
}

export type OfAction =
  /** output to a port; reserved ports (OFPP_NORMAL, FLOOD, ALL, IN_PORT, LOCAL) included. */
  | { type: 'output'; port: number }
  | { type: 'mod_dl_src'; mac: number }
  | { type: 'mod_dl_dst'; mac: number }
  | { type: 'mod_vlan_vid'; vid: number }
  | { type: 'mod_vlan_pcp'; pcp: number }
  | { type: 'strip_vlan' }
  | { type: 'push_vlan'; tpid: number }
  /** port undefined: keep in_port; table undefined: the current table. */
  | { type: 'resubmit'; port?: number; table?: number }
  | { type: 'goto_table'; table: number }
  /** output:CONTROLLER: a packet-in with at most maxLen bytes of the packet (0xffff: all). */
  | { type: 'controller'; maxLen: number }
  /** Run a group's buckets (OpenFlow 1.1+ group table). */
  | { type: 'group'; group: number }
  /** OpenFlow 1.2+ set_field vlan_vid / vlan_pcp: edit an existing tag only (no push when untagged). */
  | { type: 'set_vlan_vid'; vid: number }
  | { type: 'set_vlan_pcp'; pcp: number }
  /** set_field ipv4_src / ipv4_dst (checksums follow); no-op unless the packet is IPv4. */
  | { type: 'set_nw_src'; ip: number }
  | { type: 'set_nw_dst'; ip: number }
  /** set_field tcp_src/tcp_dst/udp_src/udp_dst (checksum follows); no-op unless the packet is of that protocol. */
  | { type: 'set_tp_src'; proto: 'tcp' | 'udp'; port: number }
  | { type: 'set_tp_dst'; proto: 'tcp' | 'udp'; port: number }
  /** OpenFlow 1.1+ instructions, kept in the list in execution order (after the apply-actions). */
  | { type: 'clear_actions' }
  | { type: 'write_actions'; actions: OfAction[] }
  | { type: 'write_metadata'; value: bigint; mask: bigint }
  /** set_field:N->tun_id (set_tunnel:N): the tunnel id outputs to flow-keyed tunnel ports (options:key=flow) send with. */
  | { type: 'set_tunnel'; id: number };

/** A parsed flow (add-flow) or flow criteria (del-flows / dump-flows). */
export interface FlowSpec {
  /** Table id; undefined in match mode means all tables. */
  table: number | undefined;
  priority: number;
  /** Whether priority= was given (strict deletes need it). */
  hasPriority: boolean;
  cookie: bigint;
  /** Cookie mask (match mode: "cookie=V/M"); 0 = cookie not matched. */
  cookieMask: bigint;
  idleTimeout: number;
  hardTimeout: number;
  match: Match;
  actions: OfAction[];
  /** Match mode: out_port= filter. */
  outPort: number | undefined;
  /** Match mode: out_group filter (OpenFlow). */
  outGroup?: number;
}

export class FlowSyntaxError extends Error {
  override readonly name = 'FlowSyntaxError';
  constructor(
    /** What is wrong, without the location. */
    readonly reason: string,
    /** 1-based column of the offending token in the input. */
    readonly column: number,
    /** The offending token as written. */
    readonly token: string,
  ) {
    super(`${reason} (at column ${column}: "${token}")`);
  }
}

export interface ParseOptions {
  /** 'add' (default): actions required; 'match': for del-flows/dump-flows, no actions. */
  mode?: 'add' | 'match';
  resolvePort?: PortResolver;
}

// ---------------------------------------------------------------------------
// Tokenizer

interface Token { text: string; col: number }

/** Split on commas/whitespace outside parentheses; col is 1-based in the full text. */
function tokenize(s: string, base: number): Token[] {
  const out: Token[] = [];
  let depth = 0;
  let start = -1;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s[i] : ',';
    const sep = depth === 0 && (c === ',' || c === ' ' || c === '\t' || c === '\n' || c === '\r');
    if (sep) {
      if (start >= 0) { out.push({ text: s.slice(start, i), col: base + start + 1 }); start = -1; }
      continue;
    }
    if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    if (start < 0) start = i;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Value parsers (throw plain strings; the caller adds the location)

class ValueError { constructor(readonly msg: string) {} }

function parseUint(s: string, bits: number, what: string): bigint {
  if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(s)) throw new ValueError(`${what}: "${s}" is not a number`);
  const v = BigInt(s);
  if (v >= 1n << BigInt(bits)) throw new ValueError(`${what}: ${s} does not fit in ${bits} bits`);
  return v;
}

function parseMac(s: string, what: string): bigint {
  const b = tryParseMac(s);
  if (!b) throw new ValueError(`${what}: "${s}" is not an Ethernet address`);
  return BigInt(macToNumber(b));
}

function parseIpv4(s: string, what: string): bigint {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) throw new ValueError(`${what}: "${s}" is not an IPv4 address`);
  let v = 0n;
  for (let i = 1; i <= 4; i++) {
    const b = Number(m[i]);
    if (b > 255) throw new ValueError(`${what}: "${s}" is not an IPv4 address`);
    v = (v << 8n) | BigInt(b);
  }
  return v;
}

function parseIpv6(s: string, what: string): bigint {
  const bad = (): never => { throw new ValueError(`${what}: "${s}" is not an IPv6 address`); };
  if (!/^[0-9a-fA-F:.]+$/.test(s)) bad();
  let str = s;
  let tail: number[] = [];
  const lastColon = str.lastIndexOf(':');
  if (str.includes('.')) {
    const v4 = parseIpv4(str.slice(lastColon + 1), what);
    tail = [Number(v4 >> 16n), Number(v4 & 0xffffn)];
    str = str.slice(0, lastColon + 1);
    if (!str.endsWith('::')) str = str.slice(0, -1);
  }
  const halves = str.split('::');
  if (halves.length > 2) bad();
  const parseGroups = (h: string): number[] => (h === '' ? [] : h.split(':').map((g) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) bad();
    return parseInt(g, 16);
  }));
  const head = parseGroups(halves[0]);
  let groups: number[];
  if (halves.length === 2) {
    const back = [...parseGroups(halves[1]), ...tail];
    const fill = 8 - head.length - back.length;
    if (fill < 1) bad();
    groups = [...head, ...new Array<number>(fill).fill(0), ...back];
  } else {
    groups = [...head, ...tail];
  }
  if (groups.length !== 8) bad();
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

function formatIpv4(v: bigint): string {
  const n = Number(v);
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function formatIpv6(v: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  // Longest run of >= 2 zero groups becomes "::" (RFC 5952).
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  // IPv4-mapped addresses print like inet_ntop: ::ffff:a.b.c.d
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${formatIpv4(v & 0xffffffffn)}`;
  }
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/** Number of leading one bits if mask is a CIDR prefix of `bits`, else -1. */
function prefixLen(mask: bigint, bits: number): number {
  const ones = (1n << BigInt(bits)) - 1n;
  for (let p = 0; p <= bits; p++) {
    const m = ones ^ ((1n << BigInt(bits - p)) - 1n);
    if (m === mask) return p;
  }
  return -1;
}

function prefixMask(p: number, bits: number): bigint {
  const ones = (1n << BigInt(bits)) - 1n;
  return ones ^ ((1n << BigInt(bits - p)) - 1n);
}

// ---------------------------------------------------------------------------
// Match building

interface Setter { field: string; tok: Token }

/** Set a field; a later assignment replaces an earlier one, as in ovs-ofctl. */
function setMasked(m: Match, f: FieldDef, value: bigint, mask: bigint): void {
  setField(m.mask, 0, f, mask);
  setField(m.key, 0, f, value & mask);
}

/** Merge bits into a field, keeping its other bits (dl_vlan / dl_vlan_pcp inside vlan_tci). */
function mergeMasked(m: Match, f: FieldDef, value: bigint, mask: bigint): void {
  const curMask = getField(m.mask, 0, f);
  const curVal = getField(m.key, 0, f);
  setField(m.mask, 0, f, curMask | mask);
  setField(m.key, 0, f, (curVal & ~mask) | (value & mask));
}

const F = (name: string): FieldDef => fieldByName(name)!;
const F_DL_TYPE = F('dl_type');
const F_NW_PROTO = F('nw_proto');
const F_TCI = F('vlan_tci');
const F_NW_FRAG = F('nw_frag');

const SHORTHANDS: ReadonlyMap<string, [number, number | undefined]> = new Map([
  ['ip', [ETH_TYPE_IP, undefined]], ['ipv6', [ETH_TYPE_IPV6, undefined]], ['arp', [ETH_TYPE_ARP, undefined]],
  ['tcp', [ETH_TYPE_IP, IPPROTO_TCP]], ['udp', [ETH_TYPE_IP, IPPROTO_UDP]], ['sctp', [ETH_TYPE_IP, IPPROTO_SCTP]],
  ['icmp', [ETH_TYPE_IP, IPPROTO_ICMP]],
  ['tcp6', [ETH_TYPE_IPV6, IPPROTO_TCP]], ['udp6', [ETH_TYPE_IPV6, IPPROTO_UDP]],
  ['sctp6', [ETH_TYPE_IPV6, IPPROTO_SCTP]], ['icmp6', [ETH_TYPE_IPV6, IPPROTO_ICMPV6]],
]);

const IP_FRAG: ReadonlyMap<string, [number, number]> = new Map([
  ['no', [0, FRAG_ANY]], ['yes', [FRAG_ANY, FRAG_ANY]], ['first', [FRAG_ANY, FRAG_ANY | FRAG_LATER]],
  ['later', [FRAG_ANY | FRAG_LATER, FRAG_ANY | FRAG_LATER]], ['not_later', [0, FRAG_LATER]],
]);

/** Reserved port numbers an action may name by number (output:0xfffa is output:NORMAL). */
const ACTION_RESERVED = new Set([OFPP_IN_PORT, OFPP_TABLE, OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_CONTROLLER, OFPP_LOCAL]);

/**
 * A port by name or number. In an action (output, resubmit) a number must be a
 * port (1..OFPP_MAX-1, the range src/dp/port-number.ts enforces everywhere) or
 * a reserved port: `output:999999` is refused.
 */
function parsePort(s: string, what: string, resolve: PortResolver | undefined, action = false): number {
  const r = RESERVED_PORTS.get(s.toUpperCase());
  if (r !== undefined) return r;
  if (/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(s)) {
    const v = Number(s);
    if (v > 0xffffffff) throw new ValueError(`${what}: port ${s} out of range`);
    if (action && !(v >= 1 && v < OFPP_MAX) && !ACTION_RESERVED.has(v)) {
      throw new ValueError(`${what}: port ${s} out of range (a port is 1..${OFPP_MAX - 1}, or a reserved port such as NORMAL, FLOOD, ALL, IN_PORT, LOCAL)`);
    }
    return v;
  }
  const p = resolve?.(s);
  if (p === undefined) throw new ValueError(`${what}: unknown port "${s}"`);
  return p;
}

/** Parse value[/mask] of a field of the table into the match. */
function applyField(m: Match, f: FieldDef, raw: string, resolve: PortResolver | undefined): void {
  const slash = raw.indexOf('/');
  const vs = slash >= 0 ? raw.slice(0, slash) : raw;
  const ms = slash >= 0 ? raw.slice(slash + 1) : undefined;
  if (ms !== undefined && !f.maskable) throw new ValueError(`${f.name}: field does not support a mask`);
  const ones = fieldOnes(f);
  let value: bigint;
  let mask = ones;
  switch (f.name) {
    case 'in_port':
      value = BigInt(parsePort(vs, f.name, resolve));
      break;
    case 'dl_vlan': {
      const v = parseUint(vs, 16, f.name);
      if (v === 0xffffn) { setMasked(m, F_TCI, 0n, 0xffffn); return; }
      if (v > 0xfffn) throw new ValueError(`dl_vlan: ${vs} is not a VLAN id (0..4095, or 0xffff for none)`);
      mergeMasked(m, F_TCI, v | BigInt(VLAN_CFI), 0x1fffn);
      return;
    }
    case 'dl_vlan_pcp': {
      const v = parseUint(vs, 8, f.name);
      if (v > 7n) throw new ValueError(`dl_vlan_pcp: ${vs} is not a priority (0..7)`);
      mergeMasked(m, F_TCI, (v << 13n) | BigInt(VLAN_CFI), 0xf000n);
      return;
    }
    case 'nw_frag': {
      const fr = IP_FRAG.get(raw);
      if (fr) { setMasked(m, f, BigInt(fr[0]), BigInt(fr[1])); return; }
      value = parseUint(vs, 8, f.name);
      if (ms !== undefined) mask = parseUint(ms, 8, f.name);
      break;
    }
    default:
      switch (f.kind) {
        case 'mac': value = parseMac(vs, f.name); if (ms !== undefined) mask = parseMac(ms, f.name); break;
        case 'ipv4':
          value = parseIpv4(vs, f.name);
          if (ms !== undefined) {
            if (/^\d+$/.test(ms)) {
              const p = Number(ms);
              if (p > 32) throw new ValueError(`${raw}: IPv4 network prefix bits not between 0 and 32, inclusive`);
              mask = prefixMask(p, 32);
            } else mask = parseIpv4(ms, f.name);
          }
          break;
        case 'ipv6':
          value = parseIpv6(vs, f.name);
          if (ms !== undefined) {
            if (/^\d+$/.test(ms)) {
              const p = Number(ms);
              if (p > 128) throw new ValueError(`${raw}: IPv6 network prefix bits not between 0 and 128, inclusive`);
              mask = prefixMask(p, 128);
            } else mask = parseIpv6(ms, f.name);
          }
          break;
        default:
          value = parseUint(vs, f.bits, f.name);
          if (ms !== undefined) mask = parseUint(ms, f.bits, f.name);
      }
  }
  if (f.name === 'nw_tos' && (value & 3n) !== 0n) {
    throw new ValueError(`nw_tos: ${vs} has ECN bits set (the low 2 bits must be 0)`);
  }
  setMasked(m, f, value & mask, mask);
}

function exactValue(m: Match, f: FieldDef): bigint | undefined {
  return getField(m.mask, 0, f) === fieldOnes(f) ? getField(m.key, 0, f) : undefined;
}

/** Why the match does not meet a prerequisite, or undefined if it does. */
function prereqFailure(m: Match, f: FieldDef): string | undefined {
  const type = exactValue(m, F_DL_TYPE);
  const proto = exactValue(m, F_NW_PROTO);
  const ip = type === BigInt(ETH_TYPE_IP);
  const ip6 = type === BigInt(ETH_TYPE_IPV6);
  switch (f.prereq) {
    case 'none': return undefined;
    case 'ip': return ip ? undefined : `${f.name}: requires ip`;
    case 'ipv6': return ip6 ? undefined : `${f.name}: requires ipv6`;
    case 'ip_any': return ip || ip6 ? undefined : `${f.name}: requires ip or ipv6`;
    case 'arp': return type === BigInt(ETH_TYPE_ARP) ? undefined : `${f.name}: requires arp`;
    case 'l4':
      return (ip || ip6) && (proto === 6n || proto === 17n || proto === 132n)
        ? undefined : `${f.name}: requires ip and tcp/udp/sctp`;
    case 'icmp':
      // icmp_type/icmp_code also serve ICMPv6, like OVS.
      return (ip && proto === 1n) || (ip6 && proto === 58n) ? undefined : `${f.name}: requires icmp or icmp6`;
    case 'icmp6': return ip6 && proto === 58n ? undefined : `${f.name}: requires icmp6`;
  }
}

// ---------------------------------------------------------------------------
// Actions

function parseActions(s: string, base: number, resolve: PortResolver | undefined, table: number | undefined): OfAction[] {
  const toks = tokenize(s, base);
  const out: OfAction[] = [];
  let sawDrop: Token | undefined;
  let sawGoto: Token | undefined;
  for (const tok of toks) {
    if (sawGoto) throw new FlowSyntaxError('invalid instruction ordering: goto_table must be the last action', sawGoto.col, sawGoto.text);
    try {
      const a = parseAction(tok.text, resolve);
      if (a === 'drop') { sawDrop = tok; continue; }
      if (a.type === 'goto_table') {
        sawGoto = tok;
        if (table !== undefined && a.table <= table) {
          throw new ValueError(`goto_table: table ${a.table} must be greater than the current table ${table}`);
        }
      }
      out.push(a);
    } catch (e) {
      if (e instanceof ValueError) throw new FlowSyntaxError(e.msg, tok.col, tok.text);
      throw e;
    }
  }
  if (sawDrop && out.length > 0) throw new FlowSyntaxError('drop must be the only action', sawDrop.col, sawDrop.text);
  return out;
}

/** set_field:VALUE->FIELD (ovs-ofctl syntax) for the fields the datapath can set. */
function parseSetField(arg: string): OfAction {
  const m = /^(.+)->\s*([a-z0-9_]+)$/.exec(arg);
  if (!m) throw new ValueError(`set_field: expected VALUE->FIELD, got '${arg}'`);
  const [, v, field] = m;
  const port = (): number => {
    const n = parseUint(v, 16, `set_field ${field}`);
    return Number(n);
  };
  switch (field) {
    case 'eth_src': case 'dl_src': return { type: 'mod_dl_src', mac: Number(parseMac(v, field)) };
    case 'eth_dst': case 'dl_dst': return { type: 'mod_dl_dst', mac: Number(parseMac(v, field)) };
    case 'vlan_vid': {
      const n = parseUint(v, 16, field);
      return { type: 'set_vlan_vid', vid: Number(n & 0xfffn) };
    }
    case 'vlan_pcp': {
      const n = parseUint(v, 8, field);
      if (n > 7n) throw new ValueError(`set_field: vlan_pcp ${v} is not a priority (0..7)`);
      return { type: 'set_vlan_pcp', pcp: Number(n) };
    }
    case 'tun_id': {
      const n = parseUint(v.trim(), 64, 'set_field');
      if (n > 0xffffffffn) throw new ValueError(`set_field: tunnel id ${v} does not fit 32 bits (a VXLAN VNI is 24)`);
      return { type: 'set_tunnel', id: Number(n) };
    }
    case 'ip_src': case 'nw_src': case 'ipv4_src': return { type: 'set_nw_src', ip: Number(parseIpv4(v, field)) };
    case 'ip_dst': case 'nw_dst': case 'ipv4_dst': return { type: 'set_nw_dst', ip: Number(parseIpv4(v, field)) };
    case 'tcp_src': return { type: 'set_tp_src', proto: 'tcp', port: port() };
    case 'tcp_dst': return { type: 'set_tp_dst', proto: 'tcp', port: port() };
    case 'udp_src': return { type: 'set_tp_src', proto: 'udp', port: port() };
    case 'udp_dst': return { type: 'set_tp_dst', proto: 'udp', port: port() };
    default: throw new ValueError(`set_field: field ${field} is not supported (eth_src, eth_dst, vlan_vid, vlan_pcp, ip_src, ip_dst, tcp_src, tcp_dst, udp_src, udp_dst, tun_id are)`);
  }
}

function parseAction(t: string, resolve: PortResolver | undefined): OfAction | 'drop' {
  if (t === 'drop') return 'drop';
  if (t === 'strip_vlan' || t === 'pop_vlan') return { type: 'strip_vlan' };
  if (t === 'CONTROLLER' || t === 'controller') return { type: 'controller', maxLen: 0xffff };
  if (/^CONTROLLER:/.test(t)) return parseAction(t.toLowerCase(), resolve);
  const m = /^([a-z_][a-z_0-9]*)(?::(.*)|\((.*)\))$/.exec(t);
  if (m) {
    const name = m[1];
    const arg = m[2] ?? m[3] ?? '';
    switch (name) {
      case 'output': return { type: 'output', port: parsePort(arg, 'output', resolve, true) };
      case 'mod_dl_src': return { type: 'mod_dl_src', mac: Number(parseMac(arg, name)) };
      case 'mod_dl_dst': return { type: 'mod_dl_dst', mac: Number(parseMac(arg, name)) };
      case 'mod_vlan_vid': {
        const v = parseUint(arg, 16, name);
        if (v > 0xfffn) throw new ValueError(`mod_vlan_vid: ${arg} is not a VLAN id (0..4095)`);
        return { type: 'mod_vlan_vid', vid: Number(v) };
      }
      case 'mod_vlan_pcp': {
        const v = parseUint(arg, 8, name);
        if (v > 7n) throw new ValueError(`mod_vlan_pcp: ${arg} is not a priority (0..7)`);
        return { type: 'mod_vlan_pcp', pcp: Number(v) };
      }
      case 'push_vlan': {
        const v = Number(parseUint(arg, 16, name));
        if (v !== 0x8100 && v !== 0x88a8) throw new ValueError(`push_vlan: ethertype ${arg} is not 0x8100 or 0x88a8`);
        return { type: 'push_vlan', tpid: v };
      }
      case 'controller': {
        const v = arg === '' ? 0xffffn : parseUint(arg.replace(/^max_len=/, ''), 16, name);
        return { type: 'controller', maxLen: Number(v) };
      }
      case 'group': return { type: 'group', group: Number(parseUint(arg, 32, name)) };
      case 'set_tunnel':
      case 'set_tunnel64': {
        const v = parseUint(arg, 64, name);
        if (v > 0xffffffffn) throw new ValueError(`${name}: tunnel id ${arg} does not fit 32 bits (a VXLAN VNI is 24)`);
        return { type: 'set_tunnel', id: Number(v) };
      }
      case 'mod_nw_src': return { type: 'set_nw_src', ip: Number(parseIpv4(arg, name)) };
      case 'mod_nw_dst': return { type: 'set_nw_dst', ip: Number(parseIpv4(arg, name)) };
      case 'set_field': return parseSetField(arg);
      case 'write_metadata': {
        const sl = arg.indexOf('/');
        const mask = sl >= 0 ? parseUint(arg.slice(sl + 1), 64, name) : (1n << 64n) - 1n;
        return { type: 'write_metadata', value: parseUint(sl >= 0 ? arg.slice(0, sl) : arg, 64, name) & mask, mask };
      }
      case 'goto_table': {
        const v = parseUint(arg, 8, name);
        if (v > 254n) throw new ValueError(`goto_table: table ${arg} out of range (0..254)`);
        return { type: 'goto_table', table: Number(v) };
      }
      case 'resubmit': {
        if (m[2] !== undefined) return { type: 'resubmit', port: parsePort(arg, 'resubmit', resolve, true) };
        const parts = arg.split(',');
        if (parts.length > 2) throw new ValueError(`resubmit: expected resubmit(port,table)`);
        const ps = parts[0].trim();
        const ts = (parts[1] ?? '').trim();
        const a: { type: 'resubmit'; port?: number; table?: number } = { type: 'resubmit' };
        if (ps !== '') a.port = parsePort(ps, 'resubmit', resolve, true);
        if (ts !== '') {
          const v = parseUint(ts, 8, 'resubmit');
          if (v > 254n) throw new ValueError(`resubmit: table ${ts} out of range (0..254)`);
          a.table = Number(v);
        }
        if (a.port === undefined && a.table === undefined) throw new ValueError('resubmit: at least one of port and table is required');
        return a;
      }
      default:
        throw new ValueError(`unknown action ${name}`);
    }
  }
  // Bare port: number, reserved name, or resolvable port name.
  const r = RESERVED_PORTS.get(t);
  if (r !== undefined && r !== OFPP_NONE) return { type: 'output', port: r };
  if (/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(t)) return { type: 'output', port: parsePort(t, 'output', resolve, true) };
  const p = /^[A-Za-z0-9_.-]+$/.test(t) ? resolve?.(t) : undefined;
  if (p !== undefined) return { type: 'output', port: p };
  throw new ValueError(`unknown action ${t}`);
}

// ---------------------------------------------------------------------------
// Flow parsing

/** Parse one flow in ovs-ofctl syntax. Throws FlowSyntaxError. */
export function parseFlow(text: string, opts: ParseOptions = {}): FlowSpec {
  const mode = opts.mode ?? 'add';
  const resolve = opts.resolvePort;
  const am = /(^|[\s,])(actions|apply_actions)\s*=/.exec(text);
  let matchPart = text;
  let actions: OfAction[] = [];
  if (am) {
    const kwCol = am.index + am[1].length;
    matchPart = text.slice(0, am.index);
    if (mode === 'match') {
      throw new FlowSyntaxError('actions are not allowed here', kwCol + 1, text.slice(kwCol).split(/[\s]/)[0]);
    }
    const astart = am.index + am[0].length;
    // table= must be known before the actions are checked (goto_table).
    const tm = /(?:^|[\s,])table\s*=\s*(0x[0-9a-fA-F]+|[0-9]+)(?=$|[\s,])/.exec(matchPart);
    const tableForGoto = tm ? Number(tm[1]) : 0;
    actions = parseActions(text.slice(astart), astart, resolve, tableForGoto <= 254 ? tableForGoto : undefined);
  } else if (mode === 'add') {
    throw new FlowSyntaxError('must specify an action (actions=...)', text.length + 1, '');
  }

  const spec: FlowSpec = {
    table: mode === 'add' ? 0 : undefined, priority: DEFAULT_PRIORITY, hasPriority: false,
    cookie: 0n, cookieMask: 0n, idleTimeout: 0, hardTimeout: 0,
    match: newMatch(), actions, outPort: undefined,
  };
  const setters: Setter[] = [];
  for (const tok of tokenize(matchPart, 0)) {
    const eq = tok.text.indexOf('=');
    const name = eq >= 0 ? tok.text.slice(0, eq) : tok.text;
    const val = eq >= 0 ? tok.text.slice(eq + 1) : undefined;
    try {
      if (val === undefined) {
        const sh = SHORTHANDS.get(name);
        if (!sh) {
          if (fieldByName(name) || isMeta(name)) throw new ValueError(`${name}: missing value`);
          throw new ValueError(`unknown keyword ${name}`);
        }
        setMasked(spec.match, F_DL_TYPE, BigInt(sh[0]), 0xffffn);
        if (sh[1] !== undefined) setMasked(spec.match, F_NW_PROTO, BigInt(sh[1]), 0xffn);
        continue;
      }
      if (val === '') throw new ValueError(`${name}: missing value`);
      switch (name) {
        case 'table': {
          const v = Number(parseUint(val, 8, name));
          if (v === 255 && mode === 'match') spec.table = undefined;
          else if (v > 254) throw new ValueError(`table: ${val} out of range (0..254)`);
          else spec.table = v;
          continue;
        }
        case 'priority':
          spec.priority = Number(parseUint(val, 16, name));
          spec.hasPriority = true;
          continue;
        case 'cookie': {
          const sl = val.indexOf('/');
          if (sl >= 0 && mode === 'add') throw new ValueError('cookie: a mask is only allowed when matching flows');
          spec.cookie = parseUint(sl >= 0 ? val.slice(0, sl) : val, 64, name);
          const mraw = sl >= 0 ? val.slice(sl + 1) : undefined;
          spec.cookieMask = mraw === undefined ? (1n << 64n) - 1n
            : mraw === '-1' ? (1n << 64n) - 1n : parseUint(mraw, 64, name);
          continue;
        }
        case 'idle_timeout': spec.idleTimeout = Number(parseUint(val, 16, name)); continue;
        case 'hard_timeout': spec.hardTimeout = Number(parseUint(val, 16, name)); continue;
        case 'out_port':
          if (mode !== 'match') throw new ValueError('out_port: only allowed when matching flows');
          spec.outPort = parsePort(val, name, resolve);
          continue;
        case 'metadata': {
          const sl = val.indexOf('/');
          const mask = sl >= 0 ? parseUint(val.slice(sl + 1), 64, name) : (1n << 64n) - 1n;
          const value = parseUint(sl >= 0 ? val.slice(0, sl) : val, 64, name);
          if (mask !== 0n) spec.match.meta = { value: value & mask, mask };
          continue;
        }
        case 'ip_frag': {
          const fr = IP_FRAG.get(val);
          if (!fr) throw new ValueError(`ip_frag: "${val}" is not one of no, yes, first, later, not_later`);
          setMasked(spec.match, F_NW_FRAG, BigInt(fr[0]), BigInt(fr[1]));
          setters.push({ field: 'nw_frag', tok });
          continue;
        }
      }
      const f = fieldByName(name);
      if (!f) throw new ValueError(`unknown keyword ${name}`);
      applyField(spec.match, f, val, resolve);
      setters.push({ field: f.name, tok });
    } catch (e) {
      if (e instanceof ValueError) throw new FlowSyntaxError(e.msg, tok.col, tok.text);
      throw e;
    }
  }
  for (const s of setters) {
    const why = prereqFailure(spec.match, fieldByName(s.field)!);
    if (why) throw new FlowSyntaxError(why, s.tok.col, s.tok.text);
  }
  return spec;
}

function isMeta(name: string): boolean {
  return ['table', 'priority', 'cookie', 'idle_timeout', 'hard_timeout', 'out_port', 'ip_frag', 'metadata'].includes(name);
}

// ---------------------------------------------------------------------------
// Formatting

function fmtPort(p: number, namer: PortNamer | undefined): string {
  const r = RESERVED_NAMES.get(p);
  if (r !== undefined) return r;
  return namer?.(p) ?? String(p);
}

function fmtInt(v: bigint, m: bigint, ones: bigint, hex: boolean): string {
  if (m === ones) return hex ? `0x${v.toString(16).padStart(4, '0')}` : v.toString();
  return `0x${v.toString(16)}/0x${m.toString(16)}`;
}

/** Format a match as ovs-ofctl prints it (OVS field order, shorthands). */
export function formatMatch(m: Match, priority = DEFAULT_PRIORITY, namer?: PortNamer): string {
  const out: string[] = [];
  if (priority !== DEFAULT_PRIORITY) out.push(`priority=${priority}`);
  const type = exactValue(m, F_DL_TYPE);
  const proto = exactValue(m, F_NW_PROTO);
  let shorthand: string | undefined;
  let protoAbsorbed = false;
  if (type === BigInt(ETH_TYPE_ARP)) shorthand = 'arp';
  else if (type === BigInt(ETH_TYPE_IP) || type === BigInt(ETH_TYPE_IPV6)) {
    const v6 = type === BigInt(ETH_TYPE_IPV6);
    const names: Record<number, string> = v6
      ? { 6: 'tcp6', 17: 'udp6', 132: 'sctp6', 58: 'icmp6' }
      : { 6: 'tcp', 17: 'udp', 132: 'sctp', 1: 'icmp' };
    if (proto !== undefined && names[Number(proto)] !== undefined) {
      shorthand = names[Number(proto)];
      protoAbsorbed = true;
    } else shorthand = v6 ? 'ipv6' : 'ip';
  }
  if (shorthand) out.push(shorthand);
  if (m.meta) out.push(`metadata=0x${m.meta.value.toString(16)}${m.meta.mask === (1n << 64n) - 1n ? '' : `/0x${m.meta.mask.toString(16)}`}`);
  const val = (name: string): [bigint, bigint, FieldDef] => {
    const f = F(name);
    return [getField(m.key, 0, f), getField(m.mask, 0, f), f];
  };
  const put = (name: string, alias?: string): void => {
    const [v, mk, f] = val(name);
    if (mk === 0n) return;
    const ones = fieldOnes(f);
    const nm = alias ?? name;
    switch (f.kind) {
      case 'mac': out.push(mk === ones ? `${nm}=${formatMac(v)}` : `${nm}=${formatMac(v)}/${formatMac(mk)}`); break;
      case 'ipv4': {
        const p = prefixLen(mk, 32);
        out.push(p === 32 ? `${nm}=${formatIpv4(v)}` : p >= 0 ? `${nm}=${formatIpv4(v)}/${p}` : `${nm}=${formatIpv4(v)}/${formatIpv4(mk)}`);
        break;
      }
      case 'ipv6': {
        const p = prefixLen(mk, 128);
        out.push(p === 128 ? `${nm}=${formatIpv6(v)}` : p >= 0 ? `${nm}=${formatIpv6(v)}/${p}` : `${nm}=${formatIpv6(v)}/${formatIpv6(mk)}`);
        break;
      }
      case 'port': out.push(`${nm}=${fmtPort(Number(v), namer)}`); break;
      default:
        if (name === 'tun_id') out.push(mk === ones ? `${nm}=0x${v.toString(16)}` : `${nm}=0x${v.toString(16)}/0x${mk.toString(16)}`);
        else out.push(`${nm}=${fmtInt(v, mk, ones, f.kind === 'hex')}`);
    }
  };
  // tunnel metadata first, as OVS prints it
  put('tun_id');
  put('tun_src');
  put('tun_dst');
  put('in_port');
  // VLAN, with OVS's rule for when dl_vlan/dl_vlan_pcp can express the mask.
  {
    const [v, mk] = val('vlan_tci');
    if (mk !== 0n) {
      const vidMask = mk & 0x0fffn;
      const pcpMask = mk & 0xe000n;
      const cfi = BigInt(VLAN_CFI);
      if ((mk & cfi) !== 0n && (v & cfi) !== 0n && (vidMask === 0n || vidMask === 0x0fffn)
        && (pcpMask === 0n || pcpMask === 0xe000n) && (vidMask !== 0n || pcpMask !== 0n)) {
        if (vidMask !== 0n) out.push(`dl_vlan=${v & 0xfffn}`);
        if (pcpMask !== 0n) out.push(`dl_vlan_pcp=${(v >> 13n) & 7n}`);
      } else if (mk === 0xffffn) out.push(`vlan_tci=0x${v.toString(16).padStart(4, '0')}`);
      else out.push(`vlan_tci=0x${v.toString(16).padStart(4, '0')}/0x${mk.toString(16).padStart(4, '0')}`);
    }
  }
  put('dl_src');
  put('dl_dst');
  if (!shorthand) put('dl_type');
  if (type === BigInt(ETH_TYPE_IPV6)) { put('ipv6_src'); put('ipv6_dst'); }
  if (type === BigInt(ETH_TYPE_ARP)) {
    put('arp_spa'); put('arp_tpa'); put('arp_op');
  } else if (type === BigInt(ETH_TYPE_IP)) {
    put('nw_src'); put('nw_dst');
  } else if (type !== BigInt(ETH_TYPE_IPV6)) {
    // Not reachable from parsed flows (prerequisites), but print what is there.
    put('nw_src'); put('nw_dst');
  }
  if (!protoAbsorbed && type !== BigInt(ETH_TYPE_ARP)) put('nw_proto');
  put('nw_tos');
  put('nw_ttl');
  {
    const [v, mk] = val('nw_frag');
    if (mk !== 0n) {
      let name: string | undefined;
      for (const [k, [fv, fm]] of IP_FRAG) if (BigInt(fv) === v && BigInt(fm) === mk) name = k;
      out.push(name ? `nw_frag=${name}` : `nw_frag=0x${v.toString(16)}/0x${mk.toString(16)}`);
    }
  }
  if (shorthand === 'icmp' || shorthand === 'icmp6') { put('icmp_type'); put('icmp_code'); }
  else { put('tp_src'); put('tp_dst'); }
  return out.join(',');
}

/** Format an action list as ovs-ofctl prints it ("drop" if empty). */
export function formatActions(actions: readonly OfAction[], namer?: PortNamer): string {
  if (actions.length === 0) return 'drop';
  return actions.map((a) => {
    switch (a.type) {
      case 'output': {
        const r = RESERVED_NAMES.get(a.port);
        return r !== undefined ? r : `output:${fmtPort(a.port, namer)}`;
      }
      case 'mod_dl_src': return `mod_dl_src:${formatMac(a.mac)}`;
      case 'mod_dl_dst': return `mod_dl_dst:${formatMac(a.mac)}`;
      case 'mod_vlan_vid': return `mod_vlan_vid:${a.vid}`;
      case 'mod_vlan_pcp': return `mod_vlan_pcp:${a.pcp}`;
      case 'strip_vlan': return 'strip_vlan';
      case 'push_vlan': return `push_vlan:0x${a.tpid.toString(16)}`;
      case 'goto_table': return `goto_table:${a.table}`;
      case 'controller': return a.maxLen === 0xffff ? 'CONTROLLER' : `CONTROLLER:${a.maxLen}`;
      case 'group': return `group:${a.group}`;
      case 'set_tunnel': return `set_field:0x${a.id.toString(16)}->tun_id`;
      case 'set_vlan_vid': return `set_field:${a.vid | VLAN_CFI}->vlan_vid`;
      case 'set_vlan_pcp': return `set_field:${a.pcp}->vlan_pcp`;
      case 'set_nw_src': return `set_field:${formatIpv4(BigInt(a.ip))}->ip_src`;
      case 'set_nw_dst': return `set_field:${formatIpv4(BigInt(a.ip))}->ip_dst`;
      case 'set_tp_src': return `set_field:${a.port}->${a.proto}_src`;
      case 'set_tp_dst': return `set_field:${a.port}->${a.proto}_dst`;
      case 'clear_actions': return 'clear_actions';
      case 'write_actions': return `write_actions(${formatActions(a.actions, namer)})`;
      case 'write_metadata': return `write_metadata:0x${a.value.toString(16)}${a.mask === 0xffffffffffffffffn ? '' : `/0x${a.mask.toString(16)}`}`;
      case 'resubmit':
        if (a.table === undefined) return `resubmit:${fmtPort(a.port!, namer)}`;
        return `resubmit(${a.port === undefined ? '' : fmtPort(a.port, namer)},${a.table})`;
    }
  }).join(',');
}

/** add-flow style text of a flow spec (parseFlow(formatFlow(s)) equals s). */
export function formatFlow(s: FlowSpec, namer?: PortNamer): string {
  const head: string[] = [];
  if (s.table !== undefined && s.table !== 0) head.push(`table=${s.table}`);
  if (s.cookie !== 0n) head.push(`cookie=0x${s.cookie.toString(16)}`);
  if (s.idleTimeout !== 0) head.push(`idle_timeout=${s.idleTimeout}`);
  if (s.hardTimeout !== 0) head.push(`hard_timeout=${s.hardTimeout}`);
  const m = formatMatch(s.match, s.priority, namer);
  if (m !== '') head.push(m);
  head.push(`actions=${formatActions(s.actions, namer)}`);
  return head.join(',');
}

/** The statistics dump-flows prints for a rule. */
export interface FlowStatsView {
  cookie: bigint;
  /** Seconds since the rule was added. */
  durationSec: number;
  table: number;
  nPackets: number;
  nBytes: number;
  idleTimeout: number;
  hardTimeout: number;
  priority: number;
  match: Match;
  actions: readonly OfAction[];
}

/**
 * One line of `ovs-ofctl dump-flows`, e.g.
 * " cookie=0x0, duration=1.234s, table=0, n_packets=3, n_bytes=180, priority=100,in_port=1 actions=output:2"
 * (without the leading space).
 */
export function formatFlowStats(r: FlowStatsView, namer?: PortNamer): string {
  let s = `cookie=0x${r.cookie.toString(16)}, duration=${r.durationSec.toFixed(3)}s, table=${r.table}, ` +
    `n_packets=${r.nPackets}, n_bytes=${r.nBytes}, `;
  if (r.idleTimeout !== 0) s += `idle_timeout=${r.idleTimeout}, `;
  if (r.hardTimeout !== 0) s += `hard_timeout=${r.hardTimeout}, `;
  s += formatMatch(r.match, r.priority, namer);
  if (!s.endsWith(' ')) s += ' ';
  return `${s}actions=${formatActions(r.actions, namer)}`;
}

/** Names of all match fields (from the field table). */
export const FIELD_NAMES: readonly string[] = FIELDS.map((f) => f.name);
