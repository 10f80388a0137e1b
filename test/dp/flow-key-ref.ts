/**
 * Test reference: the straightforward flow-key extractor (zero the key, then
 * parse), as it was before extractKey got its fast path and write-once
 * layout. Property tests check that extractKey gives the same key and status.
 */
import {
  FLOW_WORDS, W_IN_PORT, W_DL_HI, W_DL_SRC_LO, W_DL_DST_LO, W_TYPE_TCI, W_NW, W_TP, W_L3_SRC, W_L3_DST, W_VLAN2,
  VLAN_CFI, FRAG_ANY, FRAG_LATER, ETH_TYPE_IP, ETH_TYPE_ARP, ETH_TYPE_IPV6, ETH_TYPE_VLAN, ETH_TYPE_VLAN_8021AD,
  IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_SCTP, KEY_OK, KEY_TRUNCATED, KEY_MALFORMED,
} from '../../src/dp/flow-key.js';

/** Murmur3 over all 16 words (the EMC hash before hashKey became cheaper): a quality yardstick. */
export function hashKeyMurmur(key: Uint32Array, keyOff: number, basis: number): number {
  let h = basis | 0;
  for (let i = 0; i < FLOW_WORDS; i++) {
    let k = Math.imul(key[keyOff + i] | 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= FLOW_WORDS * 4;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

let dvArr: Uint8Array | null = null;
let dvView: DataView | null = null;

/** A DataView over the same bytes as arr (one-entry cache: frames nearly always come from one mempool). */
function viewOf(arr: Uint8Array): DataView {
  if (arr !== dvArr) {
    dvArr = arr;
    dvView = new DataView(arr.buffer, arr.byteOffset, arr.byteLength);
  }
  return dvView!;
}

/**
 * Extract the flow key of the frame bytes [off, off+len) received on inPort
 * into key[keyOff .. keyOff+FLOW_WORDS). Never throws, never allocates.
 * The key is always fully written (unparsed fields are 0).
 */
export function extractKeyRef(
  frame: Uint8Array, off: number, len: number, inPort: number,
  key: Uint32Array, keyOff: number,
): number {
  for (let i = 0; i < FLOW_WORDS; i++) key[keyOff + i] = 0;
  key[keyOff + W_IN_PORT] = inPort >>> 0;
  if (off < 0 || len < 0 || off + len > frame.length) {
    if (off < 0 || off > frame.length) return KEY_TRUNCATED;
    len = frame.length - off;
  }
  const end = off + len;
  if (len < 14) return KEY_TRUNCATED;
  const f = frame;
  // big-endian 16/32-bit loads through a DataView (cached per buffer); every load below is preceded
  // by a bounds check against end <= frame.length, so none can throw
  const dv = viewOf(f);
  key[keyOff + W_DL_HI] = ((dv.getUint16(off + 6) << 16) | dv.getUint16(off)) >>> 0;
  key[keyOff + W_DL_SRC_LO] = dv.getUint32(off + 8);
  key[keyOff + W_DL_DST_LO] = dv.getUint32(off + 2);
  let p = off + 12;
  let type = (f[p] << 8) | f[p + 1];
  p += 2;
  let tci = 0;
  if (type === ETH_TYPE_VLAN || type === ETH_TYPE_VLAN_8021AD) {
    if (p + 4 > end) return KEY_TRUNCATED;
    tci = (((f[p] << 8) | f[p + 1]) & ~VLAN_CFI) | VLAN_CFI;
    type = (f[p + 2] << 8) | f[p + 3];
    p += 4;
    key[keyOff + W_TYPE_TCI] = tci;
    if (type === ETH_TYPE_VLAN) {
      if (p + 4 > end) return KEY_TRUNCATED;
      key[keyOff + W_VLAN2] = (((f[p] << 8) | f[p + 1]) & ~VLAN_CFI) | VLAN_CFI;
      type = (f[p + 2] << 8) | f[p + 3];
      p += 4;
    }
  }
  key[keyOff + W_TYPE_TCI] = ((type << 16) | tci) >>> 0;

  if (type === ETH_TYPE_IP) {
    if (p + 20 > end) return KEY_TRUNCATED;
    const vihl = f[p];
    if ((vihl >> 4) !== 4) return KEY_MALFORMED;
    const hlen = (vihl & 15) * 4;
    if (hlen < 20) return KEY_MALFORMED;
    const totLen = (f[p + 2] << 8) | f[p + 3];
    if (totLen < hlen) return KEY_MALFORMED;
    const tos = f[p + 1] & 0xfc;
    const fragOff = ((f[p + 6] << 8) | f[p + 7]) & 0x3fff; // MF + offset
    let frag = 0;
    if (fragOff !== 0) {
      frag = FRAG_ANY;
      if ((fragOff & 0x1fff) !== 0) frag |= FRAG_LATER;
    }
    const proto = f[p + 9];
    key[keyOff + W_NW] = ((proto << 24) | (tos << 16) | (f[p + 8] << 8) | frag) >>> 0;
    key[keyOff + W_L3_SRC] = dv.getUint32(p + 12);
    key[keyOff + W_L3_DST] = dv.getUint32(p + 16);
    if (p + hlen > end) return KEY_TRUNCATED;
    // L4 is bounded by the IP total length (ignores Ethernet padding).
    let l4end = p + totLen;
    let status = KEY_OK;
    if (l4end > end) { l4end = end; status = KEY_TRUNCATED; }
    if ((frag & FRAG_LATER) !== 0) return status;
    const st = extractL4(f, dv, p + hlen, l4end, proto, false, key, keyOff);
    return st !== KEY_OK ? st : status;
  }
  if (type === ETH_TYPE_IPV6) {
    if (p + 40 > end) return KEY_TRUNCATED;
    if ((f[p] >> 4) !== 6) return KEY_MALFORMED;
    const tc = (((f[p] & 15) << 4) | (f[p + 1] >> 4)) & 0xfc;
    const payLen = (f[p + 4] << 8) | f[p + 5];
    const nh = f[p + 6];
    key[keyOff + W_NW] = ((nh << 24) | (tc << 16) | (f[p + 7] << 8)) >>> 0;
    for (let w = 0; w < 4; w++) {
      const s = p + 8 + w * 4;
      key[keyOff + W_L3_SRC + w] = ((f[s] << 24) | (f[s + 1] << 16) | (f[s + 2] << 8) | f[s + 3]) >>> 0;
      const d = p + 24 + w * 4;
      key[keyOff + W_L3_DST + w] = ((f[d] << 24) | (f[d + 1] << 16) | (f[d + 2] << 8) | f[d + 3]) >>> 0;
    }
    let l4end = p + 40 + payLen;
    let status = KEY_OK;
    if (l4end > end) { l4end = end; status = KEY_TRUNCATED; }
    const st = extractL4(f, dv, p + 40, l4end, nh, true, key, keyOff);
    return st !== KEY_OK ? st : status;
  }
  if (type === ETH_TYPE_ARP) {
    if (p + 28 > end) return KEY_TRUNCATED;
    const htype = (f[p] << 8) | f[p + 1];
    const ptype = (f[p + 2] << 8) | f[p + 3];
    if (htype !== 1 || ptype !== ETH_TYPE_IP || f[p + 4] !== 6 || f[p + 5] !== 4) return KEY_OK;
    const op = ((f[p + 6] << 8) | f[p + 7]) & 0xff;
    key[keyOff + W_NW] = (op << 24) >>> 0;
    key[keyOff + W_L3_SRC] = ((f[p + 14] << 24) | (f[p + 15] << 16) | (f[p + 16] << 8) | f[p + 17]) >>> 0;
    key[keyOff + W_L3_DST] = ((f[p + 24] << 24) | (f[p + 25] << 16) | (f[p + 26] << 8) | f[p + 27]) >>> 0;
    return KEY_OK;
  }
  return KEY_OK;
}

function extractL4(
  f: Uint8Array, dv: DataView, p: number, end: number, proto: number, v6: boolean,
  key: Uint32Array, keyOff: number,
): number {
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP) {
    if (p + 4 > end) return KEY_TRUNCATED;
    key[keyOff + W_TP] = dv.getUint32(p);
    const min = proto === IPPROTO_TCP ? 20 : proto === IPPROTO_UDP ? 8 : 12;
    return p + min > end ? KEY_TRUNCATED : KEY_OK;
  }
  if ((!v6 && proto === IPPROTO_ICMP) || (v6 && proto === IPPROTO_ICMPV6)) {
    if (p + 2 > end) return KEY_TRUNCATED;
    key[keyOff + W_TP] = ((f[p] << 16) | f[p + 1]) >>> 0;
    return p + 4 > end ? KEY_TRUNCATED : KEY_OK;
  }
  return KEY_OK;
}

