/**
 * Datapath flows in OVS's ODP syntax, as `ovs-appctl dpctl/dump-flows`
 * prints them for the netdev datapath:
 *   recirc_id(0),in_port(2),packet_type(ns=0,id=0),eth(src=..,dst=..),eth_type(0x0800),ipv4(frag=no), packets:N, bytes:N, used:0.5s, actions:3
 * Fully wildcarded fields are left out (with -m they are shown with a /0
 * mask); partly masked ones print as value/mask.
 */
import * as crypto from 'node:crypto';
import { formatMacWords as mac } from '../util/net.js';

const W_IN_PORT = 0, W_DL_HI = 1, W_DL_SRC_LO = 2, W_DL_DST_LO = 3, W_TYPE_TCI = 4, W_NW = 5, W_TP = 6, W_L3_SRC = 7, W_L3_DST = 11;

export interface OdpFlow {
  id: number;
  pmd: number;
  packets: number;
  bytes: number;
  used: string;
  actions: string;
  keyWords: number[];
  maskWords: number[];
}


const ip4 = (w: number): string => [(w >>> 24) & 0xff, (w >>> 16) & 0xff, (w >>> 8) & 0xff, w & 0xff].join('.');

function ip6(words: number[]): string {
  const h: string[] = [];
  for (const w of words) h.push(((w >>> 16) & 0xffff).toString(16), (w & 0xffff).toString(16));
  return h.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

/** value or value/mask, or undefined when wildcarded (unless all). */
function field(v: string, m: string, full: boolean, zero: boolean, all: boolean): string | undefined {
  if (zero) return all ? `${v}/${m}` : undefined;
  return full ? v : `${v}/${m}`;
}

export function formatOdpFlow(f: OdpFlow, verbose: boolean, names?: Map<number, string>): string {
  const k = f.keyWords.map((x, i) => (x & f.maskWords[i]) >>> 0);
  const m = f.maskWords.map((x) => x >>> 0);
  const parts: string[] = [];
  if (verbose) {
    const u = crypto.createHash('md5').update(`${f.pmd}:${f.id}:${k.join(',')}`).digest('hex');
    parts.push(`ufid:${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20, 32)}`);
  }
  // field order as OVS prints it (odp_flow_format): with -m every metadata field, names for ports
  const key: string[] = verbose
    ? ['skb_priority(0/0)', 'skb_mark(0/0)', 'ct_state(0/0)', 'ct_zone(0/0)', 'ct_mark(0/0)', 'ct_label(0/0)', 'recirc_id(0)', 'dp_hash(0/0)']
    : ['recirc_id(0)'];
  // tunnel metadata of frames from a tunnel port (words 16..18: tun_id, outer source, outer destination)
  if ((m[16] | m[17] | m[18]) !== 0) {
    const tn: string[] = [];
    if (m[16]) tn.push(`tun_id=0x${k[16].toString(16)}${m[16] === 0xffffffff ? '' : `/0x${m[16].toString(16)}`}`);
    if (m[17]) tn.push(`src=${ip4(k[17])}${m[17] === 0xffffffff ? '' : `/${ip4(m[17])}`}`);
    if (m[18]) tn.push(`dst=${ip4(k[18])}${m[18] === 0xffffffff ? '' : `/${ip4(m[18])}`}`);
    key.splice(verbose ? 1 : 0, 0, `tunnel(${tn.join(',')})`);
  }
  key.push(`in_port(${names?.get(k[W_IN_PORT]) ?? k[W_IN_PORT]})`);
  key.push('packet_type(ns=0,id=0)');
  // eth
  const srcM = mac(m[W_DL_HI] >>> 16, m[W_DL_SRC_LO]);
  const dstM = mac(m[W_DL_HI] & 0xffff, m[W_DL_DST_LO]);
  const ones = 'ff:ff:ff:ff:ff:ff';
  const zeros = '00:00:00:00:00:00';
  const eth: string[] = [];
  const s = field(mac(k[W_DL_HI] >>> 16, k[W_DL_SRC_LO]), srcM, srcM === ones, srcM === zeros, verbose);
  const d = field(mac(k[W_DL_HI] & 0xffff, k[W_DL_DST_LO]), dstM, dstM === ones, dstM === zeros, verbose);
  if (s) eth.push(`src=${s}`);
  if (d) eth.push(`dst=${d}`);
  if (eth.length) key.push(`eth(${eth.join(',')})`);
  const tciM = m[W_TYPE_TCI] & 0xffff;
  const tci = k[W_TYPE_TCI] & 0xffff;
  const type = k[W_TYPE_TCI] >>> 16;
  if (tciM !== 0 && tci & 0x1000) {
    key.push('eth_type(0x8100)', `vlan(vid=${tci & 0xfff}${(tciM & 0xe000) !== 0 ? `,pcp=${tci >>> 13}` : ''})`);
  }
  const inner: string[] = [];
  inner.push(`eth_type(0x${type.toString(16).padStart(4, '0')})`);
  const nwM = m[W_NW];
  const proto = k[W_NW] >>> 24;
  const protoKnown = (nwM >>> 24) === 0xff;
  if (type === 0x0800) {
    const f4: string[] = [];
    if (m[W_L3_SRC] || verbose) f4.push(`src=${ip4(k[W_L3_SRC])}${m[W_L3_SRC] === 0xffffffff ? '' : `/${ip4(m[W_L3_SRC])}`}`);
    if (m[W_L3_DST] || verbose) f4.push(`dst=${ip4(k[W_L3_DST])}${m[W_L3_DST] === 0xffffffff ? '' : `/${ip4(m[W_L3_DST])}`}`);
    if (protoKnown || verbose) f4.push(`proto=${proto}${protoKnown ? '' : `/0x${(nwM >>> 24).toString(16)}`}`);
    if ((nwM >>> 16) & 0xff || verbose) f4.push(`tos=0x${((k[W_NW] >>> 16) & 0xff).toString(16)}${((nwM >>> 16) & 0xff) === 0xff ? '' : `/0x${((nwM >>> 16) & 0xff).toString(16)}`}`);
    if ((nwM >>> 8) & 0xff || verbose) f4.push(`ttl=${(k[W_NW] >>> 8) & 0xff}${((nwM >>> 8) & 0xff) === 0xff ? '' : `/0x${((nwM >>> 8) & 0xff).toString(16)}`}`);
    f4.push(`frag=${k[W_NW] & 1 ? ((k[W_NW] & 2) ? 'later' : 'first') : 'no'}`);
    inner.push(`ipv4(${f4.join(',')})`);
  } else if (type === 0x86dd) {
    const f6: string[] = [];
    if (m.slice(W_L3_SRC, W_L3_SRC + 4).some((x) => x) || verbose) f6.push(`src=${ip6(k.slice(W_L3_SRC, W_L3_SRC + 4))}`);
    if (m.slice(W_L3_DST, W_L3_DST + 4).some((x) => x) || verbose) f6.push(`dst=${ip6(k.slice(W_L3_DST, W_L3_DST + 4))}`);
    if (protoKnown || verbose) f6.push(`proto=${proto}`);
    f6.push('frag=no');
    inner.push(`ipv6(${f6.join(',')})`);
  } else if (type === 0x0806) {
    const fa: string[] = [];
    if (m[W_L3_SRC] || verbose) fa.push(`sip=${ip4(k[W_L3_SRC])}`);
    if (m[W_L3_DST] || verbose) fa.push(`tip=${ip4(k[W_L3_DST])}`);
    if (protoKnown || verbose) fa.push(`op=${proto}`);
    if (fa.length) inner.push(`arp(${fa.join(',')})`);
  }
  const tpM = m[W_TP];
  if ((type === 0x0800 || type === 0x86dd) && protoKnown && (tpM || verbose)) {
    const sp = k[W_TP] >>> 16;
    const dp = k[W_TP] & 0xffff;
    const sm = tpM >>> 16;
    const dm = tpM & 0xffff;
    const pv = (v: number, mm: number): string => (mm === 0xffff ? String(v) : `${v}/0x${mm.toString(16)}`);
    const l4: string[] = [];
    const icmp = proto === 1 || proto === 58;
    if (sm || verbose) l4.push(`${icmp ? 'type' : 'src'}=${pv(sp, sm)}`);
    if (dm || verbose) l4.push(`${icmp ? 'code' : 'dst'}=${pv(dp, dm)}`);
    const name = { 6: 'tcp', 17: 'udp', 132: 'sctp', 1: 'icmp', 58: 'icmpv6' }[proto];
    if (name && l4.length) inner.push(`${name}(${l4.join(',')})`);
  }
  if (tciM !== 0 && tci & 0x1000) key.push(`encap(${inner.join(',')})`);
  else key.push(...inner);
  parts.push(key.join(','));
  parts.push(`packets:${f.packets}`, `bytes:${f.bytes}`, `used:${f.used}`);
  if (verbose) parts.push('dp:ovs');
  const acts = names ? f.actions.split(',').map((a) => (/^\d+$/.test(a) ? names.get(Number(a)) ?? a : a)).join(',') : f.actions;
  parts.push(`actions:${acts}`);
  return parts.join(', ');
}
