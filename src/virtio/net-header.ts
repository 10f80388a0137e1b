/**
 * virtio-net header (virtio 1.2 §5.1.6):
 *
 *   struct virtio_net_hdr {
 *     u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
 *     le16 csum_start; le16 csum_offset;
 *     le16 num_buffers;   // only with VERSION_1 or NET_F_MRG_RXBUF
 *   };
 *
 * 10 bytes for a legacy device without MRG_RXBUF, 12 bytes otherwise.
 */

import { F_VERSION_1, NET_F_MRG_RXBUF } from './features.js';

export const NET_HDR_LEN_LEGACY = 10;
export const NET_HDR_LEN = 12;

export const NET_HDR_F_NEEDS_CSUM = 1;
export const NET_HDR_F_DATA_VALID = 2;
export const NET_HDR_F_RSC_INFO = 4;

export const NET_HDR_GSO_NONE = 0;
export const NET_HDR_GSO_TCPV4 = 1;
export const NET_HDR_GSO_UDP = 3;
export const NET_HDR_GSO_TCPV6 = 4;
export const NET_HDR_GSO_UDP_L4 = 5;
export const NET_HDR_GSO_ECN = 0x80;

// field offsets
export const NH_FLAGS = 0;
export const NH_GSO_TYPE = 1;
export const NH_HDR_LEN = 2;
export const NH_GSO_SIZE = 4;
export const NH_CSUM_START = 6;
export const NH_CSUM_OFFSET = 8;
export const NH_NUM_BUFFERS = 10;

/** Header length for a negotiated feature set. */
export function netHdrLen(features: bigint): number {
  return (features & (F_VERSION_1 | NET_F_MRG_RXBUF)) !== 0n ? NET_HDR_LEN : NET_HDR_LEN_LEGACY;
}

export interface NetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  /** 0 when the header is the 10-byte legacy form. */
  numBuffers: number;
}

const u16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
};

/** Decode a header of `len` (10 or 12) bytes at bytes[off]. */
export function readNetHdr(bytes: Uint8Array, off: number, len: number): NetHdr {
  return {
    flags: bytes[off + NH_FLAGS],
    gsoType: bytes[off + NH_GSO_TYPE],
    hdrLen: u16(bytes, off + NH_HDR_LEN),
    gsoSize: u16(bytes, off + NH_GSO_SIZE),
    csumStart: u16(bytes, off + NH_CSUM_START),
    csumOffset: u16(bytes, off + NH_CSUM_OFFSET),
    numBuffers: len >= NET_HDR_LEN ? u16(bytes, off + NH_NUM_BUFFERS) : 0,
  };
}

/** Encode a header of `len` (10 or 12) bytes at bytes[off]. */
export function writeNetHdr(bytes: Uint8Array, off: number, len: number, h: Partial<NetHdr>): void {
  bytes[off + NH_FLAGS] = h.flags ?? 0;
  bytes[off + NH_GSO_TYPE] = h.gsoType ?? 0;
  put16(bytes, off + NH_HDR_LEN, h.hdrLen ?? 0);
  put16(bytes, off + NH_GSO_SIZE, h.gsoSize ?? 0);
  put16(bytes, off + NH_CSUM_START, h.csumStart ?? 0);
  put16(bytes, off + NH_CSUM_OFFSET, h.csumOffset ?? 0);
  if (len >= NET_HDR_LEN) put16(bytes, off + NH_NUM_BUFFERS, h.numBuffers ?? 0);
}

/** Hot path: zero a header of `len` bytes and set num_buffers (if the header has it). */
export function initNetHdr(bytes: Uint8Array, off: number, len: number, numBuffers: number): void {
  for (let i = 0; i < len; i++) bytes[off + i] = 0;
  if (len >= NET_HDR_LEN) put16(bytes, off + NH_NUM_BUFFERS, numBuffers);
}

/** Hot path: num_buffers of a 12-byte header at bytes[off]. */
export function getNumBuffers(bytes: Uint8Array, off: number): number {
  return u16(bytes, off + NH_NUM_BUFFERS);
}

/** Hot path: set num_buffers of a 12-byte header at bytes[off]. */
export function setNumBuffers(bytes: Uint8Array, off: number, n: number): void {
  put16(bytes, off + NH_NUM_BUFFERS, n);
}
