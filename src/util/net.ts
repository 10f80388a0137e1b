/**
 * Ethernet addresses and the internet checksum, written once for every layer
 * (the vhost device's MAC, virtio-user's, OpenFlow match text, datapath action
 * text, unixctl flow dumps, pcap summaries, the traffic generator, the
 * af_packet checksum offload). A leaf module: imports nothing. Runs wherever
 * its caller runs (main thread or a PMD worker); the checksum helpers are
 * allocation-free and fit hot paths, the MAC text helpers are control path.
 */

// ---------------------------------------------------------------- MAC addresses

const MAC_TEXT = /^([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})$/;

/** `aa:bb:cc:dd:ee:ff` (one or two hex digits per byte, as OVS accepts) -> 6 bytes, or null. */
export function tryParseMac(s: string): Uint8Array | null {
  const m = MAC_TEXT.exec(s);
  if (!m) return null;
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) b[i] = parseInt(m[i + 1], 16);
  return b;
}

/** As {@link tryParseMac}; throws RangeError for text that is not a MAC address. */
export function parseMac(s: string): Uint8Array {
  const b = tryParseMac(s);
  if (!b) throw new RangeError(`bad MAC address "${s}"`);
  return b;
}

/** The 6 bytes at b[off..off+6) as `aa:bb:cc:dd:ee:ff`. */
export function formatMac(b: ArrayLike<number>, off = 0): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + (b[off + i] & 0xff).toString(16).padStart(2, '0');
  return s;
}

/** The 6 bytes at b[off..off+6) as a 48-bit number. */
export function macToNumber(b: ArrayLike<number>, off = 0): number {
  return b[off] * 2 ** 40 + b[off + 1] * 2 ** 32 + ((b[off + 2] << 24) >>> 0) + (b[off + 3] << 16) + (b[off + 4] << 8) + b[off + 5];
}

/** A 48-bit MAC number (or bigint) as `aa:bb:cc:dd:ee:ff`. */
export function formatMacNumber(mac: number | bigint): string {
  const v = BigInt(mac);
  let s = '';
  for (let i = 5; i >= 0; i--) s += (i < 5 ? ':' : '') + Number((v >> BigInt(i * 8)) & 0xffn).toString(16).padStart(2, '0');
  return s;
}

/** A MAC held as a 16-bit high part and a 32-bit low part (datapath action words) as text. */
export function formatMacWords(hi: number, lo: number): string {
  return formatMacNumber((hi & 0xffff) * 2 ** 32 + (lo >>> 0));
}

// ---------------------------------------------------------------- internet checksum (RFC 1071)

/** Add the big-endian 16-bit words of d[p..p+len) to acc (an odd last byte is padded with 0). Not folded. */
export function onesComplementSum(d: Uint8Array, p: number, len: number, acc: number): number {
  const end = p + (len & ~1);
  for (; p < end; p += 2) acc += (d[p] << 8) | d[p + 1];
  if ((len & 1) !== 0) acc += d[end] << 8;
  return acc;
}

/** Fold a sum of 16-bit words to 16 bits and complement it: the checksum field's value. */
export function checksumFold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return ~acc & 0xffff;
}

/** Compute and store the header checksum of the 20-byte IPv4 header (no options) at d[o..]. */
export function ipv4HeaderChecksum(d: Uint8Array, o: number): void {
  d[o + 10] = 0;
  d[o + 11] = 0;
  const c = checksumFold(onesComplementSum(d, o, 20, 0));
  d[o + 10] = c >> 8;
  d[o + 11] = c & 0xff;
}

/**
 * Compute the TCP/UDP/ICMPv6 checksum of the Ethernet frame at d[off..off+len)
 * (IPv4 or IPv6 without extension headers, VLAN tags allowed), as a NIC
 * would for a CHECKSUM_PARTIAL packet. Returns false (frame untouched) when
 * the frame is not one of those or is malformed.
 */
export function finishL4Checksum(d: Uint8Array, off: number, len: number): boolean {
  const end = off + len;
  let p = off + 12;
  if (p + 2 > end) return false;
  let et = (d[p] << 8) | d[p + 1];
  p += 2;
  while ((et === 0x8100 || et === 0x88a8) && p + 4 <= end) {
    et = (d[p + 2] << 8) | d[p + 3];
    p += 4;
  }
  let proto: number;
  let l4: number;
  let l4len: number;
  let acc: number;
  if (et === 0x0800) {
    if (p + 20 > end) return false;
    const ihl = (d[p] & 0xf) * 4;
    const tot = (d[p + 2] << 8) | d[p + 3];
    if (ihl < 20 || tot < ihl || p + tot > end) return false;
    if (((d[p + 6] & 0x3f) | d[p + 7]) !== 0) return false; // a fragment
    proto = d[p + 9];
    l4 = p + ihl;
    l4len = tot - ihl;
    acc = onesComplementSum(d, p + 12, 8, 0) + proto + l4len;
  } else if (et === 0x86dd) {
    if (p + 40 > end) return false;
    l4len = (d[p + 4] << 8) | d[p + 5];
    proto = d[p + 6];
    l4 = p + 40;
    if (l4 + l4len > end) return false;
    acc = onesComplementSum(d, p + 8, 32, 0) + (l4len >>> 16) + (l4len & 0xffff) + proto;
  } else {
    return false;
  }
  let field: number;
  if (proto === 6 && l4len >= 20) field = l4 + 16;
  else if (proto === 17 && l4len >= 8) field = l4 + 6;
  else if (proto === 58 && et === 0x86dd && l4len >= 4) field = l4 + 2;
  else return false;
  d[field] = 0;
  d[field + 1] = 0;
  let c = checksumFold(onesComplementSum(d, l4, l4len, acc));
  if (proto === 17 && c === 0) c = 0xffff;
  d[field] = c >> 8;
  d[field + 1] = c & 0xff;
  return true;
}
