/**
 * Compact flow key: a fixed layout of FLOW_WORDS u32 words extracted from a
 * frame, plus the hash of a masked key and the field table (as data) that the
 * OpenFlow parser, the classifier and the printers share.
 *
 * Layout (word index: contents, most significant bits first):
 *
 *   0 W_IN_PORT    in_port (32 bits)
 *   1 W_DL_HI      dl_src[0..1] << 16 | dl_dst[0..1]   (upper 16 bits of each MAC)
 *   2 W_DL_SRC_LO  dl_src[2..5]
 *   3 W_DL_DST_LO  dl_dst[2..5]
 *   4 W_TYPE_TCI   dl_type << 16 | vlan_tci
 *                  vlan_tci is the outermost tag's TCI with bit 0x1000 (CFI/DEI)
 *                  used as "tag present", exactly like OVS; a DEI bit set on the
 *                  wire is therefore not represented. No tag: vlan_tci = 0.
 *   5 W_NW         nw_proto << 24 | nw_tos << 16 | nw_ttl << 8 | nw_frag
 *                  nw_tos keeps the DSCP bits only (tos & 0xfc, as OVS nw_tos);
 *                  for ARP, nw_proto holds the low 8 bits of the opcode (arp_op).
 *                  nw_frag: FRAG_ANY (1) is a fragment, FRAG_LATER (2) not the first.
 *   6 W_TP         tp_src << 16 | tp_dst; for ICMP/ICMPv6 tp_src = type, tp_dst = code.
 *   7..10 W_L3_SRC IPv6 source (4 words, network order word by word); for IPv4 and
 *                  ARP only word 7 is used (nw_src / arp_spa), words 8..10 are 0.
 *  11..14 W_L3_DST same for the destination (nw_dst / arp_tpa in word 11).
 *  15 W_VLAN2      TCI of a second (inner) tag, same present-bit convention
 *                  (an 802.1ad 0x88a8 or 0x8100 outer tag followed by 0x8100).
 *  16 W_TUN_ID     tunnel id of a frame received on a tunnel port (the VXLAN VNI, 24 bits), else 0
 *  17 W_TUN_SRC    tunnel outer IPv4 source (the remote endpoint), else 0
 *  18 W_TUN_DST    tunnel outer IPv4 destination (our endpoint), else 0
 *                  extractKey writes 0 to these three; the datapath fills them from the
 *                  tunnel port's per-buffer metadata (src/port/vxlan.ts) for frames of tunnel ports.
 *
 * IPv6: the full 128-bit addresses are kept (no hashing). Only the fixed header
 * is parsed: if next-header is TCP (6), UDP (17), SCTP (132) or ICMPv6 (58) the L4
 * fields are extracted; extension headers (including the fragment header) are
 * not chased, nw_proto then holds the extension header's number and L4 is zero.
 *
 * Truncated frames: fields of the headers read completely are kept; a frame
 * ending inside a VLAN tag leaves dl_type 0; an IPv4/IPv6 header bounds L4 by
 * its length field (Ethernet padding ignored). IPv6 nw_frag is always 0.
 *
 * Because the key is a union (IPv4 vs IPv6 vs ARP share words), a match on an
 * L3 field is only meaningful together with dl_type; the OpenFlow prerequisites
 * (see FieldDef.prereq) guarantee that.
 */

export const W_IN_PORT = 0;
export const W_DL_HI = 1;
export const W_DL_SRC_LO = 2;
export const W_DL_DST_LO = 3;
export const W_TYPE_TCI = 4;
export const W_NW = 5;
export const W_TP = 6;
export const W_L3_SRC = 7;
export const W_L3_DST = 11;
export const W_VLAN2 = 15;
export const W_TUN_ID = 16;
export const W_TUN_SRC = 17;
export const W_TUN_DST = 18;
export const FLOW_WORDS = 19;

/**
 * The key's width is written out by hand where a loop over it would cost
 * (hashKey here, the EMC's and the datapath's key compares): each such place
 * calls this at module load with the width it was written for, so that a
 * change of FLOW_WORDS fails at start-up instead of comparing half a key.
 */
export function assertUnrolledFlowWords(words: number, where: string): void {
  if (words !== FLOW_WORDS) throw new Error(`${where} is unrolled for ${words} flow key words, FLOW_WORDS is ${FLOW_WORDS}`);
}
if (!(W_L3_SRC + 4 === W_L3_DST && W_L3_DST + 4 === W_VLAN2 && W_VLAN2 + 1 === W_TUN_ID && W_TUN_ID + 1 === W_TUN_SRC &&
  W_TUN_SRC + 1 === W_TUN_DST && W_TUN_DST + 1 === FLOW_WORDS && W_TP + 1 === W_L3_SRC)) {
  throw new Error('flow key word layout: the W_* indices do not tile FLOW_WORDS');
}

/** Bit of vlan_tci meaning "a tag is present" (the CFI bit position, as OVS). */
export const VLAN_CFI = 0x1000;
export const VLAN_VID_MASK = 0x0fff;
export const VLAN_PCP_MASK = 0xe000;

export const FRAG_ANY = 1;
export const FRAG_LATER = 2;

export const ETH_TYPE_IP = 0x0800;
export const ETH_TYPE_ARP = 0x0806;
export const ETH_TYPE_IPV6 = 0x86dd;
export const ETH_TYPE_VLAN = 0x8100;
export const ETH_TYPE_VLAN_8021AD = 0x88a8;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;

/** extractKey status: everything present was parsed. */
export const KEY_OK = 0;
/** The frame ended inside a header: fields up to that point are valid. */
export const KEY_TRUNCATED = 1;
/** A header was self-inconsistent (bad IP version, IHL < 5, ...). */
export const KEY_MALFORMED = 2;

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
 * The key is always fully written (unparsed fields are 0); every path writes
 * each word exactly once (no zero-fill first: this runs once per packet).
 *
 * The common frame (untagged IPv4 without options or fragmentation, carrying
 * complete TCP or UDP headers) takes a short path small enough for the JIT to
 * inline into the caller; everything else goes to extractKeyFull. Both give
 * the same key and status (a property test checks it).
 */
export function extractKey(
  frame: Uint8Array, off: number, len: number, inPort: number,
  key: Uint32Array, keyOff: number,
): number {
  // literal numbers below, not the W_* / ETH_TYPE_* constants: a module binding costs a load and a
  // TDZ check per use, and the bytecode must stay under V8's inlining limit
  if (off >= 0 && len >= 42 && off + len <= frame.length) {
    const dv = viewOf(frame);
    const p = off + 14;
    const tv = dv.getUint32(off + 12); // dl_type, IP version/IHL, TOS
    if ((tv >>> 8) === 0x080045) { // IPv4 without options
      const ff = dv.getUint32(p + 6); // flags/fragment offset, TTL, protocol
      const proto = ff & 0xff;
      const totLen = dv.getUint16(p + 2);
      // no MF flag, offset 0; L4 header complete inside the IP length, which fits in the frame
      if ((ff & 0x3fff0000) === 0 && totLen <= len - 14 &&
        ((proto === 17 && totLen >= 28) || (proto === 6 && totLen >= 40))) {
        const ko = keyOff;
        const a = dv.getUint32(off); // dst[0..3]
        const b = dv.getUint32(off + 4); // dst[4..5] src[0..1]
        key[ko] = inPort >>> 0; // W_IN_PORT
        key[ko + 1] = ((b << 16) | (a >>> 16)) >>> 0; // W_DL_HI
        key[ko + 2] = dv.getUint32(off + 8); // W_DL_SRC_LO
        key[ko + 3] = ((a << 16) | (b >>> 16)) >>> 0; // W_DL_DST_LO
        key[ko + 4] = 0x08000000; // W_TYPE_TCI: dl_type 0x0800, no tag
        key[ko + 5] = ((ff << 24) | ((tv & 0xfc) << 16) | (ff & 0xff00)) >>> 0; // W_NW: proto, tos, ttl, frag 0
        key[ko + 6] = dv.getUint32(p + 20); // W_TP
        key[ko + 7] = dv.getUint32(p + 12); // W_L3_SRC
        key[ko + 8] = 0;
        key[ko + 9] = 0;
        key[ko + 10] = 0;
        key[ko + 11] = dv.getUint32(p + 16); // W_L3_DST
        key[ko + 12] = 0;
        key[ko + 13] = 0;
        key[ko + 14] = 0;
        key[ko + 15] = 0; // W_VLAN2
        key[ko + 16] = 0; // W_TUN_ID
        key[ko + 17] = 0; // W_TUN_SRC
        key[ko + 18] = 0; // W_TUN_DST
        return 0; // KEY_OK
      }
    }
  }
  return extractKeyFull(frame, off, len, inPort, key, keyOff);
}

/**
 * Bytes of a frame {@link extractKey} reads when {@link keyFitsPrefix} holds: the key then depends
 * on frame[off, off+KEY_PREFIX_BYTES) only (one copy keeps just a private prefix of the frame).
 */
export const KEY_PREFIX_BYTES = 38;

/**
 * Does extractKey take this frame's key from its first KEY_PREFIX_BYTES bytes (its inlined IPv4
 * TCP/UDP branch: no options, not a fragment, L4 header inside the IP length)? Reads only those
 * bytes; `len` is the whole frame's length. Must stay the same test as extractKey's first branch.
 */
export function keyFitsPrefix(frame: Uint8Array, off: number, len: number): boolean {
  if (!(off >= 0 && len >= 42 && off + KEY_PREFIX_BYTES <= frame.length)) return false;
  const dv = viewOf(frame);
  if ((dv.getUint32(off + 12) >>> 8) !== 0x080045) return false;
  const ff = dv.getUint32(off + 20);
  const proto = ff & 0xff;
  const totLen = dv.getUint16(off + 16);
  return (ff & 0x3fff0000) === 0 && totLen <= len - 14 && ((proto === 17 && totLen >= 28) || (proto === 6 && totLen >= 40));
}

/**
 * Key word w (0..FLOW_WORDS-1) of the frame at off received on inPort, for a frame for which
 * {@link keyFitsPrefix} holds and a port without tunnel metadata: what extractKey would write
 * there, read from the frame alone (the datapath checks the words a megaflow's mask reads without
 * extracting the whole key).
 */
export function prefixKeyWord(frame: Uint8Array, off: number, inPort: number, w: number): number {
  const dv = viewOf(frame);
  switch (w) {
    case 0: return inPort >>> 0;
    case 1: return ((dv.getUint32(off + 4) << 16) | (dv.getUint32(off) >>> 16)) >>> 0;
    case 2: return dv.getUint32(off + 8);
    case 3: return ((dv.getUint32(off) << 16) | (dv.getUint32(off + 4) >>> 16)) >>> 0;
    case 4: return 0x08000000;
    case 5: {
      const ff = dv.getUint32(off + 20);
      return ((ff << 24) | ((dv.getUint32(off + 12) & 0xfc) << 16) | (ff & 0xff00)) >>> 0;
    }
    case 6: return dv.getUint32(off + 34);
    case 7: return dv.getUint32(off + 26);
    case 11: return dv.getUint32(off + 30);
    default: return 0;
  }
}

/**
 * Runs of one flow without parsing (the datapath's per-burst run, see processBurst): `ref`
 * (HEADER_REF_WORDS entries) holds the header words of a frame for which {@link keyFitsPrefix}
 * held, taken by {@link setHeaderRef}; {@link sameKeyHeaders} then says whether another frame of the
 * same input port has the same key without extracting it: every byte extractKey's first branch reads
 * for the key is equal (Ethernet addresses and type, IP version/IHL, TOS, flags/fragment offset, TTL,
 * protocol, addresses, L4 ports), and the frame passes the same length tests (its IP total length,
 * which the key does not hold, may differ; so may the IP id and checksum). Frames as 32-bit words
 * `w32` of the buffer, the frame starting at word q (4-aligned offset); `len` its length. A false
 * answer only means "extract the key".
 */
export const HEADER_REF_WORDS = 10;

/** Take frame (w32, q, len)'s header words as the reference (keyFitsPrefix must hold for it). */
export function setHeaderRef(w32: Int32Array, q: number, ref: Int32Array): void {
  ref[0] = w32[q]; // bytes 0-3: dl_dst
  ref[1] = w32[q + 1]; // 4-7: dl_dst, dl_src
  ref[2] = w32[q + 2]; // 8-11: dl_src
  ref[3] = w32[q + 3]; // 12-15: dl_type, version/IHL, TOS
  ref[4] = w32[q + 5]; // 20-23: flags/fragment offset, TTL, protocol
  ref[5] = w32[q + 6] >>> 16; // 26-27: nw_src (24-25, the checksum, not part of the key)
  ref[6] = w32[q + 7]; // 28-31: nw_src, nw_dst
  ref[7] = w32[q + 8]; // 32-35: nw_dst, tp_src
  ref[8] = w32[q + 9] & 0xffff; // 36-37: tp_dst (little-endian words: the low half holds the lower bytes)
  ref[9] = (ref[4] >>> 24) === 17 ? 28 : 40; // smallest IP total length of the protocol (UDP, TCP)
}

/** Same key as the reference frame's (see HEADER_REF_WORDS); the caller checked q + 10 words fit w32. */
export function sameKeyHeaders(w32: Int32Array, q: number, len: number, ref: Int32Array): boolean {
  if (!(len >= 42 && w32[q] === ref[0] && w32[q + 1] === ref[1] && w32[q + 2] === ref[2] && w32[q + 3] === ref[3] &&
    w32[q + 5] === ref[4] && (w32[q + 6] >>> 16) === ref[5] && w32[q + 7] === ref[6] && w32[q + 8] === ref[7] &&
    (w32[q + 9] & 0xffff) === ref[8])) return false;
  const w4 = w32[q + 4];
  const totLen = ((w4 & 0xff) << 8) | ((w4 >>> 8) & 0xff); // bytes 16-17, big-endian
  return totLen >= ref[9] && totLen <= len - 14;
}

/** extractKey for any frame (see there). */
export function extractKeyFull(
  frame: Uint8Array, off: number, len: number, inPort: number,
  key: Uint32Array, keyOff: number,
): number {
  const ko = keyOff;
  key[ko] = inPort >>> 0;
  key[ko + W_TUN_ID] = 0;
  key[ko + W_TUN_SRC] = 0;
  key[ko + W_TUN_DST] = 0;
  if (off < 0 || len < 0 || off + len > frame.length) {
    if (off < 0 || off > frame.length) { zeroFrom1(key, ko); return KEY_TRUNCATED; }
    len = frame.length - off;
  }
  const end = off + len;
  if (len < 14) { zeroFrom1(key, ko); return KEY_TRUNCATED; }
  const f = frame;
  // big-endian 16/32-bit loads through a DataView (cached per buffer); every load below is preceded
  // by a bounds check against end <= frame.length, so none can throw
  const dv = viewOf(f);
  key[ko + W_DL_HI] = ((dv.getUint16(off + 6) << 16) | dv.getUint16(off)) >>> 0;
  key[ko + W_DL_SRC_LO] = dv.getUint32(off + 8);
  key[ko + W_DL_DST_LO] = dv.getUint32(off + 2);
  let p = off + 14;
  let type = dv.getUint16(off + 12);
  let tci = 0;
  let tci2 = 0;
  if (type === ETH_TYPE_VLAN || type === ETH_TYPE_VLAN_8021AD) {
    if (p + 4 > end) {
      // frame ends inside the outer tag: no dl_type, no tci
      key[ko + W_TYPE_TCI] = 0;
      key[ko + W_VLAN2] = 0;
      zeroL3(key, ko);
      return KEY_TRUNCATED;
    }
    tci = (dv.getUint16(p) & ~VLAN_CFI) | VLAN_CFI;
    type = dv.getUint16(p + 2);
    p += 4;
    if (type === ETH_TYPE_VLAN) {
      if (p + 4 > end) {
        // ends inside the inner tag: the outer tci is known, dl_type is not
        key[ko + W_TYPE_TCI] = tci;
        key[ko + W_VLAN2] = 0;
        zeroL3(key, ko);
        return KEY_TRUNCATED;
      }
      tci2 = (dv.getUint16(p) & ~VLAN_CFI) | VLAN_CFI;
      type = dv.getUint16(p + 2);
      p += 4;
    }
  }
  key[ko + W_TYPE_TCI] = ((type << 16) | tci) >>> 0;
  key[ko + W_VLAN2] = tci2;

  if (type === ETH_TYPE_IP) {
    if (p + 20 > end) { zeroL3(key, ko); return KEY_TRUNCATED; }
    const vihl = f[p];
    const hlen = (vihl & 15) * 4;
    const totLen = dv.getUint16(p + 2);
    if ((vihl >> 4) !== 4 || hlen < 20 || totLen < hlen) { zeroL3(key, ko); return KEY_MALFORMED; }
    const fragOff = dv.getUint16(p + 6) & 0x3fff; // MF + offset
    let frag = 0;
    if (fragOff !== 0) {
      frag = FRAG_ANY;
      if ((fragOff & 0x1fff) !== 0) frag |= FRAG_LATER;
    }
    const proto = f[p + 9];
    key[ko + W_NW] = ((proto << 24) | ((f[p + 1] & 0xfc) << 16) | (f[p + 8] << 8) | frag) >>> 0;
    key[ko + W_L3_SRC] = dv.getUint32(p + 12);
    key[ko + W_L3_SRC + 1] = 0;
    key[ko + W_L3_SRC + 2] = 0;
    key[ko + W_L3_SRC + 3] = 0;
    key[ko + W_L3_DST] = dv.getUint32(p + 16);
    key[ko + W_L3_DST + 1] = 0;
    key[ko + W_L3_DST + 2] = 0;
    key[ko + W_L3_DST + 3] = 0;
    if (p + hlen > end) { key[ko + W_TP] = 0; return KEY_TRUNCATED; }
    // L4 is bounded by the IP total length (ignores Ethernet padding).
    let l4end = p + totLen;
    let status = KEY_OK;
    if (l4end > end) { l4end = end; status = KEY_TRUNCATED; }
    if ((frag & FRAG_LATER) !== 0) { key[ko + W_TP] = 0; return status; }
    const st = extractL4(f, dv, p + hlen, l4end, proto, false, key, ko);
    return st !== KEY_OK ? st : status;
  }
  if (type === ETH_TYPE_IPV6) {
    if (p + 40 > end) { zeroL3(key, ko); return KEY_TRUNCATED; }
    const b0 = f[p];
    if ((b0 >> 4) !== 6) { zeroL3(key, ko); return KEY_MALFORMED; }
    const tc = (((b0 & 15) << 4) | (f[p + 1] >> 4)) & 0xfc;
    const payLen = dv.getUint16(p + 4);
    const nh = f[p + 6];
    key[ko + W_NW] = ((nh << 24) | (tc << 16) | (f[p + 7] << 8)) >>> 0;
    key[ko + W_L3_SRC] = dv.getUint32(p + 8);
    key[ko + W_L3_SRC + 1] = dv.getUint32(p + 12);
    key[ko + W_L3_SRC + 2] = dv.getUint32(p + 16);
    key[ko + W_L3_SRC + 3] = dv.getUint32(p + 20);
    key[ko + W_L3_DST] = dv.getUint32(p + 24);
    key[ko + W_L3_DST + 1] = dv.getUint32(p + 28);
    key[ko + W_L3_DST + 2] = dv.getUint32(p + 32);
    key[ko + W_L3_DST + 3] = dv.getUint32(p + 36);
    let l4end = p + 40 + payLen;
    let status = KEY_OK;
    if (l4end > end) { l4end = end; status = KEY_TRUNCATED; }
    const st = extractL4(f, dv, p + 40, l4end, nh, true, key, ko);
    return st !== KEY_OK ? st : status;
  }
  if (type === ETH_TYPE_ARP) {
    if (p + 28 > end) { zeroL3(key, ko); return KEY_TRUNCATED; }
    if (dv.getUint16(p) !== 1 || dv.getUint16(p + 2) !== ETH_TYPE_IP || f[p + 4] !== 6 || f[p + 5] !== 4) {
      zeroL3(key, ko);
      return KEY_OK;
    }
    key[ko + W_NW] = (f[p + 7] << 24) >>> 0; // low 8 bits of the opcode
    key[ko + W_TP] = 0;
    key[ko + W_L3_SRC] = dv.getUint32(p + 14);
    key[ko + W_L3_SRC + 1] = 0;
    key[ko + W_L3_SRC + 2] = 0;
    key[ko + W_L3_SRC + 3] = 0;
    key[ko + W_L3_DST] = dv.getUint32(p + 24);
    key[ko + W_L3_DST + 1] = 0;
    key[ko + W_L3_DST + 2] = 0;
    key[ko + W_L3_DST + 3] = 0;
    return KEY_OK;
  }
  zeroL3(key, ko);
  return KEY_OK;
}

/** Words W_NW..W_L3_DST+3 (5..14) = 0 (straight-line: loops over typed arrays cost more here). */
function zeroL3(key: Uint32Array, ko: number): void {
  key[ko + 5] = 0; key[ko + 6] = 0; key[ko + 7] = 0; key[ko + 8] = 0; key[ko + 9] = 0;
  key[ko + 10] = 0; key[ko + 11] = 0; key[ko + 12] = 0; key[ko + 13] = 0; key[ko + 14] = 0;
}

/** Words 1..15 = 0 (frame too short for an Ethernet header). */
function zeroFrom1(key: Uint32Array, ko: number): void {
  key[ko + 1] = 0; key[ko + 2] = 0; key[ko + 3] = 0; key[ko + 4] = 0; key[ko + 15] = 0;
  zeroL3(key, ko);
}

/** Writes W_TP (0 when the protocol carries no ports or they are cut off). */
function extractL4(
  f: Uint8Array, dv: DataView, p: number, end: number, proto: number, v6: boolean,
  key: Uint32Array, keyOff: number,
): number {
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP) {
    if (p + 4 > end) { key[keyOff + W_TP] = 0; return KEY_TRUNCATED; }
    key[keyOff + W_TP] = dv.getUint32(p);
    const min = proto === IPPROTO_TCP ? 20 : proto === IPPROTO_UDP ? 8 : 12;
    return p + min > end ? KEY_TRUNCATED : KEY_OK;
  }
  if ((!v6 && proto === IPPROTO_ICMP) || (v6 && proto === IPPROTO_ICMPV6)) {
    if (p + 2 > end) { key[keyOff + W_TP] = 0; return KEY_TRUNCATED; }
    key[keyOff + W_TP] = ((f[p] << 16) | f[p + 1]) >>> 0;
    return p + 4 > end ? KEY_TRUNCATED : KEY_OK;
  }
  key[keyOff + W_TP] = 0;
  return KEY_OK;
}

// ---------------------------------------------------------------------------
// Hashing

/** Default hash basis. */
export const HASH_BASIS = 0x2545f491;

/**
 * murmur3-style hash of (key & mask) over all FLOW_WORDS words. No allocation.
 * Returns an unsigned 32-bit value.
 */
export function hashMasked(
  key: Uint32Array, keyOff: number, mask: Uint32Array, maskOff: number, basis: number,
): number {
  let h = basis | 0;
  for (let i = 0; i < FLOW_WORDS; i++) {
    h = mix(h, key[keyOff + i] & mask[maskOff + i]);
  }
  return finish(h, FLOW_WORDS);
}

/**
 * Hash of (key & mask) over only the listed word indices (idx[0..n)), the
 * form a classifier subtable uses (its mask's non-zero words). A word whose
 * mask is 0 contributes nothing, so hashMaskedWords over the non-zero words
 * equals the value for any superset list only if the same list is used: keep
 * one list per mask.
 */
export function hashMaskedWords(
  key: Uint32Array, keyOff: number, mask: Uint32Array, maskOff: number,
  idx: Int32Array, n: number, basis: number,
): number {
  let h = basis | 0;
  for (let j = 0; j < n; j++) {
    const i = idx[j];
    h = mix(h, key[keyOff + i] & mask[maskOff + i]);
  }
  return finish(h, n);
}

/**
 * Hash of the full (unmasked) key: for the exact-match cache, which compares
 * the whole key on a hash match, so this needs spread, not strength. It is
 * cheaper than hashMasked: each word is folded (k ^ k >>> 16: high bits reach
 * the low half), multiplied by its own odd constant and summed (no serial
 * chain of multiplies), then the sum goes through murmur3's finalizer. The
 * IPv6 upper address words and the inner VLAN (words 8..10, 12..15), zero for
 * most traffic, are only read further when one of them is set. Distinct
 * constants per word keep swapped fields (src <-> dst) apart.
 * Returns a SIGNED 32-bit value (an int32 crosses function boundaries
 * unboxed; a u32 above 2^31 would be a heap number).
 */
assertUnrolledFlowWords(19, 'hashKey');
export function hashKey(key: Uint32Array, keyOff: number, basis: number): number {
  const o = keyOff;
  // words as int32 (| 0): u32 values above 2^31 would otherwise be doubles
  let k = key[o] | 0;
  let h = (basis + Math.imul(k ^ (k >>> 16), 0x2fa4ab0d)) | 0;
  k = key[o + 1] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xdd71ce51)) | 0;
  k = key[o + 2] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xdb1a1047)) | 0;
  k = key[o + 3] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xd1e17cad)) | 0;
  k = key[o + 4] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x22322591)) | 0;
  k = key[o + 5] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xabfef849)) | 0;
  k = key[o + 6] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x4d62a825)) | 0;
  k = key[o + 7] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xe4c7cd8f)) | 0;
  k = key[o + 11] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x4b7a8965)) | 0;
  const up = key[o + 8] | key[o + 9] | key[o + 10] | key[o + 12] | key[o + 13] | key[o + 14] | key[o + 15] |
    key[o + 16] | key[o + 17] | key[o + 18];
  if (up !== 0) {
    k = key[o + 8] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xa94990b9)) | 0;
    k = key[o + 9] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x11367baf)) | 0;
    k = key[o + 10] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x63dbaca1)) | 0;
    k = key[o + 12] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0xe84b5027)) | 0;
    k = key[o + 13] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x9ad83375)) | 0;
    k = key[o + 14] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x03876567)) | 0;
    k = key[o + 15] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x1d62f337)) | 0;
    k = key[o + 16] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x5bd1e995)) | 0;
    k = key[o + 17] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x7feb352d)) | 0;
    k = key[o + 18] | 0; h = (h + Math.imul(k ^ (k >>> 16), 0x846ca68b)) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

/** One murmur3 step: fold the 32-bit word k into h (small and closure-free: V8 inlines it). */
function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number, n: number): number {
  h ^= n * 4;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** True when (a & mask) == (b & mask) on every word. */
export function maskedEqual(
  a: Uint32Array, aOff: number, b: Uint32Array, bOff: number, mask: Uint32Array, maskOff: number,
): boolean {
  for (let i = 0; i < FLOW_WORDS; i++) {
    if (((a[aOff + i] ^ b[bOff + i]) & mask[maskOff + i]) !== 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Field table

/** One contiguous piece of a field inside one key word. */
export interface FieldPart {
  readonly word: number;
  readonly shift: number;
  readonly width: number;
}

/**
 * OpenFlow prerequisite of a field (checked by the parser, like OVS):
 *  ip: dl_type=0x0800; ipv6: dl_type=0x86dd; ip_any: either;
 *  arp: dl_type=0x0806; l4: ip_any and nw_proto tcp/udp/sctp;
 *  icmp: (ip and nw_proto=1) or (ipv6 and nw_proto=58) -- OVS accepts icmp_type
 *  for ICMPv6 too; icmp6: ipv6 and nw_proto=58.
 */
export type FieldPrereq = 'none' | 'ip' | 'ipv6' | 'ip_any' | 'arp' | 'l4' | 'icmp' | 'icmp6';

/** How a field's value is written in ovs-ofctl syntax. */
export type FieldKind = 'int' | 'hex' | 'mac' | 'ipv4' | 'ipv6' | 'port' | 'tci';

export interface FieldDef {
  /** OVS name. */
  readonly name: string;
  /** Parts, most significant first; the value is their concatenation. */
  readonly parts: readonly FieldPart[];
  /** Total width in bits. */
  readonly bits: number;
  readonly kind: FieldKind;
  readonly prereq: FieldPrereq;
  /** Whether ovs-ofctl accepts value/mask for it. */
  readonly maskable: boolean;
}

function fd(name: string, kind: FieldKind, prereq: FieldPrereq, maskable: boolean,
  ...parts: FieldPart[]): FieldDef {
  let bits = 0;
  for (const p of parts) bits += p.width;
  return Object.freeze({ name, kind, prereq, maskable, parts: Object.freeze(parts), bits });
}
const part = (word: number, shift: number, width: number): FieldPart => Object.freeze({ word, shift, width });

/**
 * The fields, as data. dl_vlan and dl_vlan_pcp are the vid/pcp bits of
 * vlan_tci; a match on them also requires VLAN_CFI (handled by the parser).
 * Aliases share bits: arp_op/nw_proto, arp_spa/nw_src, arp_tpa/nw_dst,
 * icmp_type/icmp_code inside tp_src/tp_dst.
 */
export const FIELDS: readonly FieldDef[] = Object.freeze([
  fd('in_port', 'port', 'none', false, part(W_IN_PORT, 0, 32)),
  fd('tun_id', 'hex', 'none', true, part(W_TUN_ID, 0, 32)),
  fd('tun_src', 'ipv4', 'none', true, part(W_TUN_SRC, 0, 32)),
  fd('tun_dst', 'ipv4', 'none', true, part(W_TUN_DST, 0, 32)),
  fd('dl_src', 'mac', 'none', true, part(W_DL_HI, 16, 16), part(W_DL_SRC_LO, 0, 32)),
  fd('dl_dst', 'mac', 'none', true, part(W_DL_HI, 0, 16), part(W_DL_DST_LO, 0, 32)),
  fd('dl_type', 'hex', 'none', false, part(W_TYPE_TCI, 16, 16)),
  fd('vlan_tci', 'tci', 'none', true, part(W_TYPE_TCI, 0, 16)),
  fd('dl_vlan', 'int', 'none', false, part(W_TYPE_TCI, 0, 12)),
  fd('dl_vlan_pcp', 'int', 'none', false, part(W_TYPE_TCI, 13, 3)),
  fd('nw_proto', 'int', 'ip_any', false, part(W_NW, 24, 8)),
  fd('arp_op', 'int', 'arp', false, part(W_NW, 24, 8)),
  fd('nw_tos', 'int', 'ip_any', false, part(W_NW, 16, 8)),
  fd('nw_ttl', 'int', 'ip_any', false, part(W_NW, 8, 8)),
  fd('nw_frag', 'int', 'ip_any', true, part(W_NW, 0, 8)),
  fd('tp_src', 'int', 'l4', true, part(W_TP, 16, 16)),
  fd('tp_dst', 'int', 'l4', true, part(W_TP, 0, 16)),
  fd('icmp_type', 'int', 'icmp', false, part(W_TP, 16, 8)),
  fd('icmp_code', 'int', 'icmp', false, part(W_TP, 0, 8)),
  fd('icmpv6_type', 'int', 'icmp6', false, part(W_TP, 16, 8)),
  fd('icmpv6_code', 'int', 'icmp6', false, part(W_TP, 0, 8)),
  fd('nw_src', 'ipv4', 'ip', true, part(W_L3_SRC, 0, 32)),
  fd('nw_dst', 'ipv4', 'ip', true, part(W_L3_DST, 0, 32)),
  fd('arp_spa', 'ipv4', 'arp', true, part(W_L3_SRC, 0, 32)),
  fd('arp_tpa', 'ipv4', 'arp', true, part(W_L3_DST, 0, 32)),
  fd('ipv6_src', 'ipv6', 'ipv6', true,
    part(W_L3_SRC, 0, 32), part(W_L3_SRC + 1, 0, 32), part(W_L3_SRC + 2, 0, 32), part(W_L3_SRC + 3, 0, 32)),
  fd('ipv6_dst', 'ipv6', 'ipv6', true,
    part(W_L3_DST, 0, 32), part(W_L3_DST + 1, 0, 32), part(W_L3_DST + 2, 0, 32), part(W_L3_DST + 3, 0, 32)),
]);

const FIELD_BY_NAME = new Map<string, FieldDef>(FIELDS.map((f) => [f.name, f]));

/** Look a field up by its OVS name. */
export function fieldByName(name: string): FieldDef | undefined {
  return FIELD_BY_NAME.get(name);
}

/** Read a field (control path: returns a bigint). */
export function getField(key: Uint32Array, keyOff: number, f: FieldDef): bigint {
  let v = 0n;
  for (const p of f.parts) {
    const w = key[keyOff + p.word];
    const bits = p.width === 32 ? w >>> 0 : (w >>> p.shift) & ((1 << p.width) - 1);
    v = (v << BigInt(p.width)) | BigInt(bits >>> 0);
  }
  return v;
}

/** Write a field (other bits of the words are kept). */
export function setField(key: Uint32Array, keyOff: number, f: FieldDef, value: bigint): void {
  let v = value;
  for (let i = f.parts.length - 1; i >= 0; i--) {
    const p = f.parts[i];
    const m = p.width === 32 ? 0xffffffff : ((1 << p.width) - 1) << p.shift;
    const piece = Number(v & ((1n << BigInt(p.width)) - 1n));
    v >>= BigInt(p.width);
    const w = key[keyOff + p.word];
    key[keyOff + p.word] = ((w & ~m) | ((piece << p.shift) & m)) >>> 0;
  }
}

/** All-ones value of a field's width. */
export function fieldOnes(f: FieldDef): bigint {
  return (1n << BigInt(f.bits)) - 1n;
}

// ---------------------------------------------------------------------------
// Small helpers for the control path

/** MAC (6 bytes) -> 48-bit number; a 48-bit MAC number as text (src/util/net.ts). */
export { macToNumber, formatMacNumber as formatMac } from '../util/net.js';

/** dl_src of a key as a 48-bit number. */
export function keyDlSrc(key: Uint32Array, keyOff: number): number {
  return (key[keyOff + W_DL_HI] >>> 16) * 2 ** 32 + key[keyOff + W_DL_SRC_LO];
}

/** dl_dst of a key as a 48-bit number. */
export function keyDlDst(key: Uint32Array, keyOff: number): number {
  return (key[keyOff + W_DL_HI] & 0xffff) * 2 ** 32 + key[keyOff + W_DL_DST_LO];
}


/** Human-readable dump of a key (debugging). */
export function formatKey(key: Uint32Array, keyOff = 0): string {
  const w: string[] = [];
  for (let i = 0; i < FLOW_WORDS; i++) w.push(key[keyOff + i].toString(16).padStart(8, '0'));
  return w.join(' ');
}
