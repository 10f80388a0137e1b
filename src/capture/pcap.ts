/**
 * pcap (libpcap classic format, microsecond timestamps, Ethernet link type),
 * the format tcpdump -r and tshark read. And a one-line summary of a frame for
 * `tsvs capture` without -w.
 */
import { formatMac } from '../util/net.js';

export const LINKTYPE_ETHERNET = 1;

/** The 24-byte file header. */
export function pcapHeader(snaplen: number, linktype = LINKTYPE_ETHERNET): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0xa1b2c3d4, 0);
  b.writeUInt16LE(2, 4);
  b.writeUInt16LE(4, 6);
  b.writeInt32LE(0, 8);
  b.writeUInt32LE(0, 12);
  b.writeUInt32LE(snaplen, 16);
  b.writeUInt32LE(linktype, 20);
  return b;
}

/** One record: 16-byte header and the captured bytes. */
export function pcapRecord(tsMs: number, data: Uint8Array, origLen: number): Buffer {
  const b = Buffer.alloc(16 + data.length);
  const us = Math.round(tsMs * 1000);
  b.writeUInt32LE(Math.floor(us / 1e6), 0);
  b.writeUInt32LE(us % 1e6, 4);
  b.writeUInt32LE(data.length, 8);
  b.writeUInt32LE(Math.max(origLen, data.length), 12);
  b.set(data, 16);
  return b;
}

const mac = (d: Uint8Array, o: number): string => formatMac(d, o);
const ip4 = (d: Uint8Array, o: number): string => `${d[o]}.${d[o + 1]}.${d[o + 2]}.${d[o + 3]}`;

/** "02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10.0.0.1 > 10.0.0.2, udp 1024 > 1024" (best effort). */
export function frameSummary(d: Uint8Array): string {
  if (d.length < 14) return `runt frame (${d.length} bytes)`;
  let s = `${mac(d, 6)} > ${mac(d, 0)}`;
  let o = 12;
  let type = (d[o] << 8) | d[o + 1];
  while ((type === 0x8100 || type === 0x88a8) && d.length >= o + 6) {
    s += `, vlan ${((d[o + 2] << 8) | d[o + 3]) & 0xfff}`;
    o += 4;
    type = (d[o] << 8) | d[o + 1];
  }
  o += 2;
  if (type === 0x0800 && d.length >= o + 20) {
    const ihl = (d[o] & 0xf) * 4;
    const proto = d[o + 9];
    s += `, IPv4 ${ip4(d, o + 12)} > ${ip4(d, o + 16)}`;
    const l4 = o + ihl;
    const name = proto === 6 ? 'tcp' : proto === 17 ? 'udp' : proto === 1 ? 'icmp' : `proto ${proto}`;
    if ((proto === 6 || proto === 17) && d.length >= l4 + 4) s += `, ${name} ${(d[l4] << 8) | d[l4 + 1]} > ${(d[l4 + 2] << 8) | d[l4 + 3]}`;
    else s += `, ${name}`;
  } else if (type === 0x0806 && d.length >= o + 28) {
    const op = (d[o + 6] << 8) | d[o + 7];
    s += op === 1 ? `, ARP who-has ${ip4(d, o + 24)} tell ${ip4(d, o + 14)}` : `, ARP reply ${ip4(d, o + 14)} is-at ${mac(d, o + 8)}`;
  } else if (type === 0x86dd) s += ', IPv6';
  else s += `, ethertype 0x${type.toString(16).padStart(4, '0')}`;
  return s;
}
