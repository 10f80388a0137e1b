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
