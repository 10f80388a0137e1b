/**
 * OpenFlow 1.3 wire format (OpenFlow Switch Specification 1.3.5; OVS's
 * include/openflow/openflow-1.3.h and nicira-ext.h): constants, the OXM field
 * table as data, and pure encoders/decoders between wire bytes and the ofproto
 * model (src/ofproto: Match, OfAction). No I/O here.
 *
 * Decoders throw OfError(type, code) for what is malformed or unsupported: the
 * session answers with an ERROR message carrying exactly that type and code.
 */

import {
  FLOW_WORDS, VLAN_CFI, fieldByName, getField, setField, fieldOnes, type FieldDef,
  ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_ARP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, IPPROTO_ICMPV6,
} from '../dp/flow-key.js';
import { newMatch, OFPP_IN_PORT, type Match, type OfAction } from '../ofproto/flow-syntax.js';

export const OFP_VERSION = 0x04;
export const OFP_HEADER_LEN = 8;
export const OFP_MAX_LEN = 0xffff;
export const OFP_NO_BUFFER = 0xffffffff;
/** OpenFlow 1.3 reserved port numbers (32-bit). */
export const OFPP13 = {
  MAX: 0xffffff00, IN_PORT: 0xfffffff8, TABLE: 0xfffffff9, NORMAL: 0xfffffffa, FLOOD: 0xfffffffb,
  ALL: 0xfffffffc, CONTROLLER: 0xfffffffd, LOCAL: 0xfffffffe, ANY: 0xffffffff,
} as const;
export const OFPG_ANY = 0xffffffff;
export const OFPG_ALL = 0xfffffffc;
export const OFPG_MAX = 0xffffff00;
export const OFPTT_ALL = 0xff;
export const OFPCML_NO_BUFFER = 0xffff;

export const T = {
  HELLO: 0, ERROR: 1, ECHO_REQUEST: 2, ECHO_REPLY: 3, EXPERIMENTER: 4, FEATURES_REQUEST: 5, FEATURES_REPLY: 6,
  GET_CONFIG_REQUEST: 7, GET_CONFIG_REPLY: 8, SET_CONFIG: 9, PACKET_IN: 10, FLOW_REMOVED: 11, PORT_STATUS: 12,
  PACKET_OUT: 13, FLOW_MOD: 14, GROUP_MOD: 15, PORT_MOD: 16, TABLE_MOD: 17, MULTIPART_REQUEST: 18,
  MULTIPART_REPLY: 19, BARRIER_REQUEST: 20, BARRIER_REPLY: 21, QUEUE_GET_CONFIG_REQUEST: 22,
  QUEUE_GET_CONFIG_REPLY: 23, ROLE_REQUEST: 24, ROLE_REPLY: 25, GET_ASYNC_REQUEST: 26, GET_ASYNC_REPLY: 27,
  SET_ASYNC: 28, METER_MOD: 29,
} as const;

export const MP = {
  DESC: 0, FLOW: 1, AGGREGATE: 2, TABLE: 3, PORT_STATS: 4, QUEUE: 5, GROUP: 6, GROUP_DESC: 7,
  GROUP_FEATURES: 8, METER: 9, METER_CONFIG: 10, METER_FEATURES: 11, TABLE_FEATURES: 12, PORT_DESC: 13,
  EXPERIMENTER: 0xffff,
} as const;

/** Error types and the codes we send (spec section 7.4.4). */
export const ET = {
  HELLO_FAILED: 0, BAD_REQUEST: 1, BAD_ACTION: 2, BAD_INSTRUCTION: 3, BAD_MATCH: 4, FLOW_MOD_FAILED: 5,
  GROUP_MOD_FAILED: 6, PORT_MOD_FAILED: 7, TABLE_MOD_FAILED: 8, QUEUE_OP_FAILED: 9, SWITCH_CONFIG_FAILED: 10,
  ROLE_REQUEST_FAILED: 11, METER_MOD_FAILED: 12, TABLE_FEATURES_FAILED: 13,
} as const;
export const EC = {
  HELLO_INCOMPATIBLE: 0,
  BR_BAD_VERSION: 0, BR_BAD_TYPE: 1, BR_BAD_MULTIPART: 2, BR_BAD_EXPERIMENTER: 3, BR_BAD_EXP_TYPE: 4, BR_EPERM: 5,
  BR_BAD_LEN: 6, BR_BUFFER_UNKNOWN: 8, BR_BAD_TABLE_ID: 9, BR_IS_SLAVE: 10, BR_BAD_PORT: 11, BR_BAD_PACKET: 12,
  BA_BAD_TYPE: 0, BA_BAD_LEN: 1, BA_BAD_EXPERIMENTER: 2, BA_BAD_EXP_TYPE: 3, BA_BAD_OUT_PORT: 4, BA_BAD_ARGUMENT: 5,
  BA_TOO_MANY: 7, BA_BAD_OUT_GROUP: 9, BA_MATCH_INCONSISTENT: 10, BA_BAD_SET_TYPE: 13, BA_BAD_SET_LEN: 14,
  BA_BAD_SET_ARGUMENT: 15,
  BI_UNKNOWN_INST: 0, BI_UNSUP_INST: 1, BI_BAD_TABLE_ID: 2, BI_UNSUP_METADATA: 3, BI_BAD_LEN: 7,
  BM_BAD_TYPE: 0, BM_BAD_LEN: 1, BM_BAD_FIELD: 6, BM_BAD_VALUE: 7, BM_BAD_MASK: 8, BM_BAD_PREREQ: 9, BM_DUP_FIELD: 10,
  FMF_UNKNOWN: 0, FMF_TABLE_FULL: 1, FMF_BAD_TABLE_ID: 2, FMF_OVERLAP: 3, FMF_BAD_TIMEOUT: 5, FMF_BAD_COMMAND: 6,
  FMF_BAD_FLAGS: 7,
  GMF_GROUP_EXISTS: 0, GMF_INVALID_GROUP: 1, GMF_UNKNOWN_GROUP: 8, GMF_BAD_TYPE: 10, GMF_BAD_COMMAND: 11,
  GMF_BAD_BUCKET: 12, GMF_LOOP: 7,
  PMF_BAD_PORT: 0,
  RRF_STALE: 0, RRF_UNSUP: 1, RRF_BAD_ROLE: 2,
  SCF_BAD_FLAGS: 0,
  TFF_EPERM: 5,
} as const;

export const FC = { ADD: 0, MODIFY: 1, MODIFY_STRICT: 2, DELETE: 3, DELETE_STRICT: 4 } as const;
export const FF = { SEND_FLOW_REM: 1, CHECK_OVERLAP: 2, RESET_COUNTS: 4, NO_PKT_COUNTS: 8, NO_BYT_COUNTS: 16 } as const;
export const PR = { NO_MATCH: 0, ACTION: 1, INVALID_TTL: 2 } as const;
export const RR = { IDLE_TIMEOUT: 0, HARD_TIMEOUT: 1, DELETE: 2, GROUP_DELETE: 3 } as const;
export const PSR = { ADD: 0, DELETE: 1, MODIFY: 2 } as const;
export const ROLE = { NOCHANGE: 0, EQUAL: 1, MASTER: 2, SLAVE: 3 } as const;
export const GT = { ALL: 0, SELECT: 1, INDIRECT: 2, FF: 3 } as const;
export const GC = { ADD: 0, MODIFY: 1, DELETE: 2 } as const;

const IT = { GOTO_TABLE: 1, WRITE_METADATA: 2, WRITE_ACTIONS: 3, APPLY_ACTIONS: 4, CLEAR_ACTIONS: 5, METER: 6 } as const;
const AT = { OUTPUT: 0, PUSH_VLAN: 17, POP_VLAN: 18, GROUP: 22, SET_FIELD: 25, EXPERIMENTER: 0xffff } as const;
const NX_VENDOR = 0x00002320;
const NXAST_RESUBMIT = 1;
const NXAST_RESUBMIT_TABLE = 14;

/** An error to send back: OFPT_ERROR with this type and code. */
export class OfError extends Error {
  constructor(readonly type: number, readonly code: number, msg: string) {
    super(msg);
    this.name = 'OfError';
  }
}

// ---------------------------------------------------------------------------
// Byte helpers

/** Growable big-endian writer. */
export class Writer {
  buf = Buffer.alloc(256);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
  u8(v: number): this { this.room(1); this.buf.writeUInt8(v & 0xff, this.len); this.len += 1; return this; }
  u16(v: number): this { this.room(2); this.buf.writeUInt16BE(v & 0xffff, this.len); this.len += 2; return this; }
  u32(v: number): this { this.room(4); this.buf.writeUInt32BE(v >>> 0, this.len); this.len += 4; return this; }
  u64(v: bigint | number): this { this.room(8); this.buf.writeBigUInt64BE(BigInt.asUintN(64, BigInt(v)), this.len); this.len += 8; return this; }
  bytes(b: Uint8Array): this { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; return this; }
  zeros(n: number): this { this.room(n); this.buf.fill(0, this.len, this.len + n); this.len += n; return this; }
  str(s: string, n: number): this { const b = Buffer.alloc(n); b.write(s.slice(0, n - 1), 'latin1'); return this.bytes(b); }
  pad8(from = 0): this { const r = (this.len - from) % 8; return r === 0 ? this : this.zeros(8 - r); }
  setU16(at: number, v: number): void { this.buf.writeUInt16BE(v & 0xffff, at); }
  done(): Buffer { return this.buf.subarray(0, this.len); }
}

/** A whole message: header with the length filled in. */
export function message(type: number, xid: number, body?: (w: Writer) => void): Buffer {
  const w = new Writer();
  w.u8(OFP_VERSION).u8(type).u16(0).u32(xid);
  body?.(w);
  if (w.len > OFP_MAX_LEN) throw new RangeError(`OpenFlow message of ${w.len} bytes is too long`);
  w.setU16(2, w.len);
  return w.done();
}

export interface OfHeader { version: number; type: number; length: number; xid: number }

export function readHeader(b: Buffer, off = 0): OfHeader {
  return { version: b[off], type: b[off + 1], length: b.readUInt16BE(off + 2), xid: b.readUInt32BE(off + 4) };
}

function need(b: Buffer, off: number, n: number, type: number, code: number, what: string): void {
  if (off + n > b.length) throw new OfError(type, code, `${what}: truncated`);
}

// ---------------------------------------------------------------------------
// OXM fields (class OFPXMC_OPENFLOW_BASIC = 0x8000), as data

export const OXM_CLASS_BASIC = 0x8000;
/** Nicira's NXM_1 class: OVS's tunnel endpoint fields (tun_src, tun_dst) travel in OpenFlow 1.3 matches under it. */
export const OXM_CLASS_NXM1 = 0x0001;

type Prereq = 'none' | 'ip' | 'ipv6' | 'ip_any' | 'arp' | 'tcp' | 'udp' | 'sctp' | 'icmp4' | 'icmp6' | 'vlan';

export interface OxmDef {
  /** OXM class (OXM_CLASS_BASIC, or OXM_CLASS_NXM1 for Nicira fields). */
  readonly cls: number;
  /** OXM field number. */
  readonly field: number;
  readonly name: string;
  /** Value length in bytes. */
  readonly len: number;
  readonly maskable: boolean;
  readonly prereq: Prereq;
  /** ofproto field (src/dp/flow-key.ts FIELDS) it maps to; special ones are handled in code. */
  readonly of: string;
}

const ox = (field: number, name: string, len: number, maskable: boolean, prereq: Prereq, of: string, cls = OXM_CLASS_BASIC): OxmDef =>
  Object.freeze({ cls, field, name, len, maskable, prereq, of });

/** The OXM fields tsvs matches on and sets (table features advertise exactly these). */
export const OXM_FIELDS: readonly OxmDef[] = Object.freeze([
  ox(0, 'in_port', 4, false, 'none', 'in_port'),
  ox(2, 'metadata', 8, true, 'none', 'metadata'),
  ox(3, 'eth_dst', 6, true, 'none', 'dl_dst'),
  ox(4, 'eth_src', 6, true, 'none', 'dl_src'),
  ox(5, 'eth_type', 2, false, 'none', 'dl_type'),
  ox(6, 'vlan_vid', 2, true, 'none', 'vlan_tci'),
  ox(7, 'vlan_pcp', 1, false, 'vlan', 'vlan_tci'),
  ox(8, 'ip_dscp', 1, false, 'ip_any', 'nw_tos'),
  ox(10, 'ip_proto', 1, false, 'ip_any', 'nw_proto'),
  ox(11, 'ipv4_src', 4, true, 'ip', 'nw_src'),
  ox(12, 'ipv4_dst', 4, true, 'ip', 'nw_dst'),
  ox(13, 'tcp_src', 2, false, 'tcp', 'tp_src'),
  ox(14, 'tcp_dst', 2, false, 'tcp', 'tp_dst'),
  ox(15, 'udp_src', 2, false, 'udp', 'tp_src'),
  ox(16, 'udp_dst', 2, false, 'udp', 'tp_dst'),
  ox(17, 'sctp_src', 2, false, 'sctp', 'tp_src'),
  ox(18, 'sctp_dst', 2, false, 'sctp', 'tp_dst'),
  ox(19, 'icmpv4_type', 1, false, 'icmp4', 'icmp_type'),
  ox(20, 'icmpv4_code', 1, false, 'icmp4', 'icmp_code'),
  ox(21, 'arp_op', 2, false, 'arp', 'arp_op'),
  ox(22, 'arp_spa', 4, true, 'arp', 'arp_spa'),
  ox(23, 'arp_tpa', 4, true, 'arp', 'arp_tpa'),
  ox(26, 'ipv6_src', 16, true, 'ipv6', 'ipv6_src'),
  ox(27, 'ipv6_dst', 16, true, 'ipv6', 'ipv6_dst'),
  ox(29, 'icmpv6_type', 1, false, 'icmp6', 'icmpv6_type'),
  ox(30, 'icmpv6_code', 1, false, 'icmp6', 'icmpv6_code'),
  // tunnel metadata (frames received on tunnel ports, src/port/vxlan.ts): the key keeps 32 bits of the
  // 64-bit tunnel id (a VXLAN VNI is 24), so a match or set_field above 32 bits is refused
  ox(38, 'tunnel_id', 8, true, 'none', 'tun_id'),
  ox(31, 'tun_ipv4_src', 4, true, 'none', 'tun_src', OXM_CLASS_NXM1),
  ox(32, 'tun_ipv4_dst', 4, true, 'none', 'tun_dst', OXM_CLASS_NXM1),
]);
/** Class and field as one number (the top 23 bits of an OXM header, without mask bit and length). */
const oxmId = (cls: number, field: number): number => cls * 128 + field;
const OXM_BY_ID = new Map<number, OxmDef>(OXM_FIELDS.map((d) => [oxmId(d.cls, d.field), d]));
/** OpenFlow-basic fields by number. */
const OXM_BY_FIELD = new Map<number, OxmDef>(OXM_FIELDS.filter((d) => d.cls === OXM_CLASS_BASIC).map((d) => [d.field, d]));
/** OpenFlow-basic fields set_field can write (the datapath has ops for these). */
export const SETTABLE_OXM: readonly number[] = [3, 4, 6, 7, 11, 12, 13, 14, 15, 16, 38];

export function oxmHeader(field: number, hasMask: boolean, len: number, cls = OXM_CLASS_BASIC): number {
  return ((cls << 16) | (field << 9) | (hasMask ? 0x100 : 0) | (hasMask ? 2 * len : len)) >>> 0;
}

function readBig(b: Buffer, off: number, len: number): bigint {
  let v = 0n;
  for (let i = 0; i < len; i++) v = (v << 8n) | BigInt(b[off + i]);
  return v;
}

function writeBig(w: Writer, v: bigint, len: number): void {
  for (let i = len - 1; i >= 0; i--) w.u8(Number((v >> BigInt(8 * i)) & 0xffn));
}

const FD = (n: string): FieldDef => fieldByName(n)!;

/** Set a match field from an OXM value/mask (bits outside the mask cleared). */
function putField(m: Match, name: string, value: bigint, mask: bigint): void {
  const f = FD(name);
  setField(m.mask, 0, f, mask);
  setField(m.key, 0, f, value & mask);
}

/**
 * Decode an ofp_match at b[off..] (type OXM). Returns the match and the
 * padded length consumed. Prerequisites are checked as the spec asks
 * (BAD_PREREQ); unknown or unsupported fields give BAD_FIELD.
 */
export function decodeMatch(b: Buffer, off: number): { match: Match; inPort?: number; size: number } {
  need(b, off, 4, ET.BAD_MATCH, EC.BM_BAD_LEN, 'match');
  const type = b.readUInt16BE(off);
  const len = b.readUInt16BE(off + 2);
  if (type !== 1) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_TYPE, `match type ${type} is not OXM`);
  if (len < 4) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_LEN, 'match length below 4');
  need(b, off, len, ET.BAD_MATCH, EC.BM_BAD_LEN, 'match');
  const m = newMatch();
  const seen = new Set<OxmDef>();
  const present = new Map<number, bigint>();
  let inPort: number | undefined;
  let p = off + 4;
  const end = off + len;
  while (p < end) {
    if (p + 4 > end) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_LEN, 'OXM header truncated');
    const hdr = b.readUInt32BE(p);
    const cls = hdr >>> 16;
    const field = (hdr >>> 9) & 0x7f;
    const hasMask = (hdr & 0x100) !== 0;
    const plen = hdr & 0xff;
    if (p + 4 + plen > end) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_LEN, 'OXM payload truncated');
    const def = OXM_BY_ID.get(oxmId(cls, field));
    if (!def) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_FIELD, `OXM class 0x${cls.toString(16)} field ${field} is not supported`);
    if (plen !== (hasMask ? 2 * def.len : def.len)) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_LEN, `OXM ${def.name}: length ${plen}`);
    if (hasMask && !def.maskable) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_MASK, `OXM ${def.name} is not maskable`);
    if (seen.has(def)) throw new OfError(ET.BAD_MATCH, EC.BM_DUP_FIELD, `OXM ${def.name} twice`);
    seen.add(def);
    const value = readBig(b, p + 4, def.len);
    const ones = (1n << BigInt(8 * def.len)) - 1n;
    const mask = hasMask ? readBig(b, p + 4 + def.len, def.len) : ones;
    if ((value & ~mask) !== 0n) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_VALUE, `OXM ${def.name}: value has bits outside its mask`);
    if (mask === ones && def.cls === OXM_CLASS_BASIC) present.set(field, value);
    switch (def.name) {
      case 'in_port':
        inPort = Number(value);
        putField(m, 'in_port', BigInt(fromOfPort(inPort)), 0xffffffffn);
        break;
      case 'metadata':
        if (mask !== 0n) m.meta = { value, mask };
        break;
      case 'vlan_vid': {
        // OFPVID_PRESENT (0x1000) is the tag-present bit, exactly ofproto's vlan_tci CFI convention
        const cur = getField(m.mask, 0, FD('vlan_tci'));
        const curV = getField(m.key, 0, FD('vlan_tci'));
        const mk = mask & 0x1fffn;
        putField(m, 'vlan_tci', (curV & ~mk) | (value & mk), cur | mk);
        break;
      }
      case 'vlan_pcp': {
        if (value > 7n) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_VALUE, 'vlan_pcp above 7');
        const cur = getField(m.mask, 0, FD('vlan_tci'));
        const curV = getField(m.key, 0, FD('vlan_tci'));
        putField(m, 'vlan_tci', (curV & ~0xe000n) | (value << 13n), cur | 0xe000n);
        break;
      }
      case 'ip_dscp':
        if (value > 63n) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_VALUE, 'ip_dscp above 63');
        // the key keeps the DSCP bits only (flow-key.ts), so the whole byte is the mask, as the CLI's nw_tos
        putField(m, 'nw_tos', value << 2n, 0xffn);
        break;
      case 'tunnel_id':
        if ((value >> 32n) !== 0n) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_VALUE, `tunnel_id 0x${value.toString(16)} does not fit 32 bits (a VXLAN VNI is 24)`);
        // bits 32-63 of every tunnel id here are 0, so a mask on them adds nothing: keep the low 32
        putField(m, 'tun_id', value, mask & 0xffffffffn);
        break;
      case 'arp_op':
        if (value > 255n) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_VALUE, 'arp_op above 255 is not supported');
        putField(m, 'arp_op', value, 0xffn);
        break;
      default:
        putField(m, def.of, value, mask);
    }
    p += 4 + plen;
  }
  // prerequisites (spec 7.2.3.6)
  const type_ = present.get(5);
  const proto = present.get(10);
  const isIp = type_ === BigInt(ETH_TYPE_IP);
  const isIp6 = type_ === BigInt(ETH_TYPE_IPV6);
  for (const def of seen) {
    let ok = true;
    switch (def.prereq) {
      case 'none': break;
      case 'ip': ok = isIp; break;
      case 'ipv6': ok = isIp6; break;
      case 'ip_any': ok = isIp || isIp6; break;
      case 'arp': ok = type_ === BigInt(ETH_TYPE_ARP); break;
      case 'tcp': ok = (isIp || isIp6) && proto === BigInt(IPPROTO_TCP); break;
      case 'udp': ok = (isIp || isIp6) && proto === BigInt(IPPROTO_UDP); break;
      case 'sctp': ok = (isIp || isIp6) && proto === BigInt(IPPROTO_SCTP); break;
      case 'icmp4': ok = isIp && proto === BigInt(IPPROTO_ICMP); break;
      case 'icmp6': ok = isIp6 && proto === BigInt(IPPROTO_ICMPV6); break;
      case 'vlan': {
        const vid = seen.has(OXM_BY_FIELD.get(6)!) ? getField(m.key, 0, FD('vlan_tci')) & BigInt(VLAN_CFI) : 0n;
        ok = vid !== 0n;
        break;
      }
    }
    if (!ok) throw new OfError(ET.BAD_MATCH, EC.BM_BAD_PREREQ, `OXM ${def.name}: prerequisite ${def.prereq} not met`);
  }
  return { match: m, inPort, size: (len + 7) & ~7 };
}

/** 32-bit OpenFlow 1.3 port -> ofproto's 16-bit port space (reserved ports map to 0xfff8..0xffff). */
export function fromOfPort(p: number): number {
  return p >= OFPP13.MAX ? (p & 0xffff) : p;
}
/** ofproto port -> OpenFlow 1.3 port. */
export function toOfPort(p: number): number {
  return p >= 0xff00 && p <= 0xffff ? (0xffff0000 | p) >>> 0 : p;
}

function oxm(w: Writer, field: number, len: number, value: bigint, mask?: bigint, cls = OXM_CLASS_BASIC): void {
  const ones = (1n << BigInt(8 * len)) - 1n;
  const hasMask = mask !== undefined && mask !== ones;
  w.u32(oxmHeader(field, hasMask, len, cls));
  writeBig(w, value & (hasMask ? mask : ones), len);
  if (hasMask) writeBig(w, mask, len);
}

/** Encode an ofp_match (OXM) for a Match; pads to 8. */
export function encodeMatch(w: Writer, m: Match): void {
  const start = w.len;
  w.u16(1).u16(0);
  const g = (name: string): [bigint, bigint] => { const f = FD(name); return [getField(m.key, 0, f), getField(m.mask, 0, f)]; };
  const [pv, pm] = g('in_port');
  if (pm !== 0n) oxm(w, 0, 4, BigInt(toOfPort(Number(pv))));
  if (m.meta && m.meta.mask !== 0n) oxm(w, 2, 8, m.meta.value, m.meta.mask);
  const [iv, im] = g('tun_id');
  if (im !== 0n) oxm(w, 38, 8, iv, im === 0xffffffffn ? (1n << 64n) - 1n : im);
  const [sv4, sm4] = g('tun_src');
  if (sm4 !== 0n) oxm(w, 31, 4, sv4, sm4, OXM_CLASS_NXM1);
  const [dv4, dm4] = g('tun_dst');
  if (dm4 !== 0n) oxm(w, 32, 4, dv4, dm4, OXM_CLASS_NXM1);
  for (const [name, field] of [['dl_dst', 3], ['dl_src', 4]] as const) {
    const [v, mk] = g(name);
    if (mk !== 0n) oxm(w, field, 6, v, mk);
  }
  const [tv, tm] = g('dl_type');
  if (tm !== 0n) oxm(w, 5, 2, tv);
  const [cv, cm] = g('vlan_tci');
  if ((cm & 0x1fffn) !== 0n) oxm(w, 6, 2, cv & 0x1fffn, cm & 0x1fffn);
  if ((cm & 0xe000n) !== 0n) oxm(w, 7, 1, (cv >> 13n) & 7n);
  const type = tm === 0xffffn ? Number(tv) : -1;
  const ipAny = type === ETH_TYPE_IP || type === ETH_TYPE_IPV6;
  if (ipAny) {
    const [sv, sm] = g('nw_tos');
    if (sm !== 0n) oxm(w, 8, 1, sv >> 2n);
    const [prv, prm] = g('nw_proto');
    if (prm !== 0n) oxm(w, 10, 1, prv);
    const proto = prm === 0xffn ? Number(prv) : -1;
    if (type === ETH_TYPE_IP) {
      const [a, am] = g('nw_src'); if (am !== 0n) oxm(w, 11, 4, a, am);
      const [d, dm] = g('nw_dst'); if (dm !== 0n) oxm(w, 12, 4, d, dm);
    } else {
      const [a, am] = g('ipv6_src'); if (am !== 0n) oxm(w, 26, 16, a, am);
      const [d, dm] = g('ipv6_dst'); if (dm !== 0n) oxm(w, 27, 16, d, dm);
    }
    const base = proto === IPPROTO_TCP ? 13 : proto === IPPROTO_UDP ? 15 : proto === IPPROTO_SCTP ? 17 : -1;
    if (base > 0) {
      const [s, smk] = g('tp_src'); if (smk !== 0n) oxm(w, base, 2, s);
      const [d, dmk] = g('tp_dst'); if (dmk !== 0n) oxm(w, base + 1, 2, d);
    } else if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) {
      const v6 = proto === IPPROTO_ICMPV6;
      const [s, smk] = g('icmp_type'); if (smk !== 0n) oxm(w, v6 ? 29 : 19, 1, s);
      const [d, dmk] = g('icmp_code'); if (dmk !== 0n) oxm(w, v6 ? 30 : 20, 1, d);
    }
  } else if (type === ETH_TYPE_ARP) {
    const [o, om] = g('arp_op'); if (om !== 0n) oxm(w, 21, 2, o);
    const [a, am] = g('arp_spa'); if (am !== 0n) oxm(w, 22, 4, a, am);
    const [d, dm] = g('arp_tpa'); if (dm !== 0n) oxm(w, 23, 4, d, dm);
  }
  w.setU16(start + 2, w.len - start);
  w.pad8(start);
}

/** A match on in_port only (packet-in). */
export function encodeInPortMatch(w: Writer, ofPort: number): void {
  const start = w.len;
  w.u16(1).u16(12);
  oxm(w, 0, 4, BigInt(toOfPort(ofPort)));
  w.pad8(start);
}

// ---------------------------------------------------------------------------
// Actions and instructions

/**
 * Decode an action list at b[off..off+len). Output ports are converted to
 * ofproto's port space. `where` names the context for errors.
 */
export function decodeActions(b: Buffer, off: number, len: number): OfAction[] {
  const out: OfAction[] = [];
  let p = off;
  const end = off + len;
  while (p < end) {
    if (p + 4 > end) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_LEN, 'action header truncated');
    const type = b.readUInt16BE(p);
    const alen = b.readUInt16BE(p + 2);
    if (alen < 8 || alen % 8 !== 0 || p + alen > end) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_LEN, `action type ${type}: length ${alen}`);
    switch (type) {
      case AT.OUTPUT: {
        if (alen !== 16) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_LEN, 'output: length');
        const port = b.readUInt32BE(p + 4);
        const maxLen = b.readUInt16BE(p + 8);
        if (port === 0 || port === OFPP13.ANY || (port > OFPP13.MAX && port < OFPP13.IN_PORT)) {
          throw new OfError(ET.BAD_ACTION, EC.BA_BAD_OUT_PORT, `output: port 0x${port.toString(16)}`);
        }
        if (port === OFPP13.CONTROLLER) out.push({ type: 'controller', maxLen });
        else out.push({ type: 'output', port: fromOfPort(port) });
        break;
      }
      case AT.PUSH_VLAN: {
        const tpid = b.readUInt16BE(p + 4);
        if (tpid !== 0x8100 && tpid !== 0x88a8) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_ARGUMENT, `push_vlan: ethertype 0x${tpid.toString(16)}`);
        out.push({ type: 'push_vlan', tpid });
        break;
      }
      case AT.POP_VLAN: out.push({ type: 'strip_vlan' }); break;
      case AT.GROUP: out.push({ type: 'group', group: b.readUInt32BE(p + 4) }); break;
      case AT.SET_FIELD: out.push(decodeSetField(b, p + 4, alen - 4)); break;
      case AT.EXPERIMENTER: {
        const vendor = b.readUInt32BE(p + 4);
        if (vendor !== NX_VENDOR) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_EXPERIMENTER, `experimenter 0x${vendor.toString(16)}`);
        const sub = b.readUInt16BE(p + 8);
        if ((sub !== NXAST_RESUBMIT && sub !== NXAST_RESUBMIT_TABLE) || alen !== 16) {
          throw new OfError(ET.BAD_ACTION, EC.BA_BAD_EXP_TYPE, `Nicira action ${sub} is not supported`);
        }
        const port = b.readUInt16BE(p + 10);
        const table = sub === NXAST_RESUBMIT_TABLE ? b[p + 12] : 255;
        const a: { type: 'resubmit'; port?: number; table?: number } = { type: 'resubmit' };
        if (port !== OFPP_IN_PORT) a.port = port;
        if (table !== 255) a.table = table;
        if (a.port === undefined && a.table === undefined) a.port = OFPP_IN_PORT;
        out.push(a);
        break;
      }
      default:
        throw new OfError(ET.BAD_ACTION, EC.BA_BAD_TYPE, `action type ${type} is not supported`);
    }
    p += alen;
  }
  return out;
}

function decodeSetField(b: Buffer, off: number, len: number): OfAction {
  if (len < 4) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_SET_LEN, 'set_field: truncated');
  const hdr = b.readUInt32BE(off);
  const field = (hdr >>> 9) & 0x7f;
  const plen = hdr & 0xff;
  if (hdr >>> 16 !== OXM_CLASS_BASIC || (hdr & 0x100) !== 0 || !SETTABLE_OXM.includes(field)) {
    throw new OfError(ET.BAD_ACTION, EC.BA_BAD_SET_TYPE, `set_field of OXM field ${field} is not supported`);
  }
  const def = OXM_BY_FIELD.get(field)!;
  if (plen !== def.len || 4 + plen > len) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_SET_LEN, `set_field ${def.name}: length ${plen}`);
  const v = readBig(b, off + 4, def.len);
  switch (field) {
    case 3: return { type: 'mod_dl_dst', mac: Number(v) };
    case 4: return { type: 'mod_dl_src', mac: Number(v) };
    case 6: return { type: 'set_vlan_vid', vid: Number(v & 0xfffn) };
    case 11: return { type: 'set_nw_src', ip: Number(v) };
    case 12: return { type: 'set_nw_dst', ip: Number(v) };
    case 13: return { type: 'set_tp_src', proto: 'tcp', port: Number(v) };
    case 14: return { type: 'set_tp_dst', proto: 'tcp', port: Number(v) };
    case 15: return { type: 'set_tp_src', proto: 'udp', port: Number(v) };
    case 16: return { type: 'set_tp_dst', proto: 'udp', port: Number(v) };
    case 38:
      if (v > 0xffffffffn) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_SET_ARGUMENT, `set_field tunnel_id 0x${v.toString(16)} does not fit 32 bits (a VXLAN VNI is 24)`);
      return { type: 'set_tunnel', id: Number(v) };
    default:
      if (v > 7n) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_SET_ARGUMENT, 'set_field vlan_pcp above 7');
      return { type: 'set_vlan_pcp', pcp: Number(v) };
  }
}

/** Encode one action (ofproto form) into the OpenFlow 1.3 action list. */
export function encodeAction(w: Writer, a: OfAction): void {
  const setField = (field: number, len: number, v: bigint): void => {
    const start = w.len;
    w.u16(AT.SET_FIELD).u16(0).u32(oxmHeader(field, false, len));
    writeBig(w, v, len);
    w.pad8(start);
    w.setU16(start + 2, w.len - start);
  };
  switch (a.type) {
    case 'output': w.u16(AT.OUTPUT).u16(16).u32(toOfPort(a.port)).u16(0).zeros(6); break;
    case 'controller': w.u16(AT.OUTPUT).u16(16).u32(OFPP13.CONTROLLER).u16(a.maxLen).zeros(6); break;
    case 'push_vlan': w.u16(AT.PUSH_VLAN).u16(8).u16(a.tpid).zeros(2); break;
    case 'strip_vlan': w.u16(AT.POP_VLAN).u16(8).zeros(4); break;
    case 'group': w.u16(AT.GROUP).u16(8).u32(a.group); break;
    case 'mod_dl_dst': setField(3, 6, BigInt(a.mac)); break;
    case 'mod_dl_src': setField(4, 6, BigInt(a.mac)); break;
    case 'set_vlan_vid': case 'mod_vlan_vid': setField(6, 2, BigInt(a.vid | VLAN_CFI)); break;
    case 'set_vlan_pcp': case 'mod_vlan_pcp': setField(7, 1, BigInt(a.pcp)); break;
    case 'set_tunnel': setField(38, 8, BigInt(a.id)); break; // OXM_OF_TUNNEL_ID
    case 'set_nw_src': setField(11, 4, BigInt(a.ip >>> 0)); break;
    case 'set_nw_dst': setField(12, 4, BigInt(a.ip >>> 0)); break;
    case 'set_tp_src': setField(a.proto === 'tcp' ? 13 : 15, 2, BigInt(a.port)); break;
    case 'set_tp_dst': setField(a.proto === 'tcp' ? 14 : 16, 2, BigInt(a.port)); break;
    case 'resubmit':
      w.u16(AT.EXPERIMENTER).u16(16).u32(NX_VENDOR).u16(NXAST_RESUBMIT_TABLE)
        .u16(a.port ?? OFPP_IN_PORT).u8(a.table ?? 255).zeros(3);
      break;
    default: break; // instructions are encoded by encodeInstructions
  }
}

/**
 * Decode instructions into ofproto's action list: apply-actions' actions,
 * then clear_actions, write_actions, write_metadata and goto_table markers,
 * in the spec's execution order.
 */
export function decodeInstructions(b: Buffer, off: number, len: number, table: number): OfAction[] {
  let apply: OfAction[] = [];
  let clear = false;
  let write: OfAction[] | undefined;
  let meta: { value: bigint; mask: bigint } | undefined;
  let goto: number | undefined;
  const seen = new Set<number>();
  let p = off;
  const end = off + len;
  while (p < end) {
    if (p + 4 > end) throw new OfError(ET.BAD_INSTRUCTION, EC.BI_BAD_LEN, 'instruction header truncated');
    const type = b.readUInt16BE(p);
    const ilen = b.readUInt16BE(p + 2);
    if (ilen < 8 || ilen % 8 !== 0 || p + ilen > end) throw new OfError(ET.BAD_INSTRUCTION, EC.BI_BAD_LEN, `instruction ${type}: length ${ilen}`);
    if (seen.has(type)) throw new OfError(ET.BAD_INSTRUCTION, EC.BI_UNSUP_INST, `instruction ${type} twice`);
    seen.add(type);
    switch (type) {
      case IT.APPLY_ACTIONS: apply = decodeActions(b, p + 8, ilen - 8); break;
      case IT.WRITE_ACTIONS: write = decodeActions(b, p + 8, ilen - 8); break;
      case IT.CLEAR_ACTIONS: clear = true; break;
      case IT.GOTO_TABLE: {
        goto = b[p + 4];
        if (goto <= table || goto >= 255) throw new OfError(ET.BAD_INSTRUCTION, EC.BI_BAD_TABLE_ID, `goto_table:${goto} from table ${table}`);
        break;
      }
      case IT.WRITE_METADATA:
        if (ilen !== 24) throw new OfError(ET.BAD_INSTRUCTION, EC.BI_BAD_LEN, 'write_metadata: length');
        meta = { value: b.readBigUInt64BE(p + 8), mask: b.readBigUInt64BE(p + 16) };
        break;
      case IT.METER:
        throw new OfError(ET.BAD_INSTRUCTION, EC.BI_UNSUP_INST, 'meters are not supported');
      default:
        throw new OfError(ET.BAD_INSTRUCTION, EC.BI_UNKNOWN_INST, `instruction type ${type}`);
    }
    p += ilen;
  }
  const out: OfAction[] = [...apply];
  if (clear) out.push({ type: 'clear_actions' });
  if (write) out.push({ type: 'write_actions', actions: write });
  if (meta) out.push({ type: 'write_metadata', value: meta.value, mask: meta.mask });
  if (goto !== undefined) out.push({ type: 'goto_table', table: goto });
  return out;
}

function isInstruction(a: OfAction): boolean {
  return a.type === 'clear_actions' || a.type === 'write_actions' || a.type === 'write_metadata' || a.type === 'goto_table';
}

/** Encode ofproto actions as OpenFlow 1.3 instructions (inverse of decodeInstructions). */
export function encodeInstructions(w: Writer, actions: readonly OfAction[]): void {
  const apply = actions.filter((a) => !isInstruction(a));
  if (apply.length > 0) {
    const start = w.len;
    w.u16(IT.APPLY_ACTIONS).u16(0).zeros(4);
    for (const a of apply) encodeAction(w, a);
    w.setU16(start + 2, w.len - start);
  }
  for (const a of actions) {
    switch (a.type) {
      case 'clear_actions': w.u16(IT.CLEAR_ACTIONS).u16(8).zeros(4); break;
      case 'write_actions': {
        const start = w.len;
        w.u16(IT.WRITE_ACTIONS).u16(0).zeros(4);
        for (const x of a.actions) encodeAction(w, x);
        w.setU16(start + 2, w.len - start);
        break;
      }
      case 'write_metadata': w.u16(IT.WRITE_METADATA).u16(24).zeros(4).u64(a.value).u64(a.mask); break;
      case 'goto_table': w.u16(IT.GOTO_TABLE).u16(8).u8(a.table).zeros(3); break;
      default: break;
    }
  }
}

// ---------------------------------------------------------------------------
// Structures

export interface OfPortDesc {
  portNo: number;
  mac: number;
  name: string;
  linkDown: boolean;
  adminDown: boolean;
  /** kbps */
  speed: number;
}

/** struct ofp_port (64 bytes). */
export function encodePort(w: Writer, p: OfPortDesc): void {
  w.u32(toOfPort(p.portNo)).zeros(4);
  writeBig(w, BigInt(p.mac), 6);
  w.zeros(2).str(p.name, 16);
  w.u32(p.adminDown ? 1 : 0); // config: OFPPC_PORT_DOWN
  w.u32(p.linkDown ? 1 : 4); // state: OFPPS_LINK_DOWN / OFPPS_LIVE
  const feat = 0x40 | 0x800; // OFPPF_10GB_FD | OFPPF_COPPER
  w.u32(feat).u32(0).u32(0).u32(0).u32(p.speed).u32(p.speed);
}

export interface HelloInfo { versions: number[] }

/** HELLO with a version bitmap element (only 1.3). */
export function encodeHello(xid: number): Buffer {
  return message(T.HELLO, xid, (w) => { w.u16(1).u16(8).u32(1 << OFP_VERSION); });
}

/** Versions offered by a peer's HELLO (its header version and any bitmap). */
export function decodeHello(msg: Buffer): HelloInfo {
  const h = readHeader(msg);
  let p = OFP_HEADER_LEN;
  while (p + 4 <= msg.length) {
    const t = msg.readUInt16BE(p);
    const l = msg.readUInt16BE(p + 2);
    if (l < 4 || p + l > msg.length) break;
    if (t === 1) {
      const vs: number[] = [];
      for (let i = 0; (i + 1) * 4 + 4 <= l; i++) {
        const word = msg.readUInt32BE(p + 4 + i * 4);
        for (let bit = 0; bit < 32; bit++) if (word & (1 << bit)) vs.push(i * 32 + bit);
      }
      return { versions: vs };
    }
    p += (l + 7) & ~7;
  }
  const vs: number[] = [];
  for (let v = 1; v <= h.version; v++) vs.push(v);
  return { versions: vs };
}

export function encodeError(xid: number, type: number, code: number, data: Uint8Array): Buffer {
  return message(T.ERROR, xid, (w) => { w.u16(type).u16(code).bytes(data.subarray(0, Math.min(data.length, 64))); });
}

/** The multipart replies for `entries`, split under the message size limit (REPLY_MORE on all but the last). */
export function multipartReplies(xid: number, mpType: number, entries: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let batch: Buffer[] = [];
  let size = 16;
  const flush = (more: boolean): void => {
    const parts = batch;
    out.push(message(T.MULTIPART_REPLY, xid, (w) => {
      w.u16(mpType).u16(more ? 1 : 0).zeros(4);
      for (const e of parts) w.bytes(e);
    }));
    batch = [];
    size = 16;
  };
  for (const e of entries) {
    if (size + e.length > 0xff00 && batch.length > 0) flush(true);
    batch.push(e);
    size += e.length;
  }
  flush(false);
  return out;
}

/** A zero-filled body builder for one entry. */
export function entry(build: (w: Writer) => void): Buffer {
  const w = new Writer();
  build(w);
  return Buffer.from(w.done());
}

export { FLOW_WORDS, fieldOnes };
