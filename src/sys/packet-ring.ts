/**
 * PACKET_MMAP (TPACKET_V2) rx/tx rings of a packet socket: layouts, mapping,
 * views over the shared frames, release, and the tx kick.
 *
 * Where it runs: mapped by the thread that opens the af-packet port and polled by the PMD worker
 * that owns it (the same thread in the daemon); packetRingKick is on the hot path.
 */
import { SysError, koffi, mmap, munmap, view } from './libc.js';
import { E, MSG_DONTWAIT, PACKET_RESERVE, PACKET_RX_RING, PACKET_TX_RING, PACKET_VERSION, SOL_PACKET, TPACKET_V2, c_sendto, c_setsockopt, fail, scratch, scratchAddr, sdv, setsockoptInt } from './netdev-native.js';

/**
 * struct tpacket2_hdr (32 bytes) at the start of every TPACKET_V2 ring frame:
 * u32 tp_status, u32 tp_len, u32 tp_snaplen, u16 tp_mac, u16 tp_net,
 * u32 tp_sec, u32 tp_nsec, u16 tp_vlan_tci, u16 tp_vlan_tpid, u8 pad[4];
 * then (rx) a struct sockaddr_ll at TPACKET_ALIGN(32) = 32. Byte offsets.
 */
export const TP2_STATUS = 0;
export const TP2_LEN = 4;
export const TP2_SNAPLEN = 8;
export const TP2_MAC = 12;
export const TP2_VLAN_TCI = 24;
export const TP2_VLAN_TPID = 26;
/** sll_pkttype of the sockaddr_ll after the header (rx). */
export const TP2_PKTTYPE = 32 + 10;
/** TPACKET2_HDRLEN: TPACKET_ALIGN(sizeof(tpacket2_hdr)) + sizeof(sockaddr_ll). */
export const TPACKET2_HDRLEN = 52;
/** Where a tx frame's data starts (TPACKET2_HDRLEN - sizeof(sockaddr_ll)). */
export const TP2_TX_DATA = 32;
/**
 * Most bytes between an rx frame's start and its tp_mac (Ethernet, no
 * vnet header): TPACKET_ALIGN(TPACKET2_HDRLEN + 16) + reserve - 14 <= 80 + reserve.
 */
export const TP2_RX_MAC_MAX = 80;

/** struct tpacket_req: the geometry of one ring. */
export interface PacketRingLayout {
  /** Bytes per block (a multiple of the page size; frames never straddle blocks). */
  blockSize: number;
  blockNr: number;
  /** Bytes per frame (a multiple of 16). */
  frameSize: number;
  frameNr: number;
}

/**
 * A ring geometry whose frames carry `payload` bytes after `headBytes` of
 * header (frame size rounded up to 16), about `frames` frames but at most
 * `maxBytes` in all (and at least 2 blocks).
 */
export function packetRingLayout(payload: number, headBytes: number, frames: number, maxBytes = 16 << 20): PacketRingLayout {
  if (!Number.isInteger(payload) || payload < 64 || payload > 1 << 20 || !Number.isInteger(frames) || frames < 1) {
    throw new RangeError(`packetRingLayout(${payload}, ${frames}): payload in 64..2^20, frames >= 1`);
  }
  const frameSize = (payload + headBytes + 15) & ~15;
  let blockSize = 1 << 16; // a power of two (walkers rely on it)
  while (blockSize < frameSize) blockSize *= 2;
  const perBlock = Math.floor(blockSize / frameSize);
  let blockNr = Math.ceil(frames / perBlock);
  const maxBlocks = Math.floor(maxBytes / blockSize);
  if (blockNr > maxBlocks) blockNr = maxBlocks;
  if (blockNr < 2) blockNr = 2;
  return { blockSize, blockNr, frameSize, frameNr: blockNr * perBlock };
}

/**
 * One mapped ring, with views over it. Frame i starts at byte
 * {@link frameOffset}(i) of u8 (u32/u16 index it >> 2 / >> 1; frames are
 * 16-aligned). tp_status words are shared with the kernel: read and write
 * them with Atomics on u32 (Int32 semantics are not needed: values are small).
 */
export class PacketRingView {
  readonly layout: PacketRingLayout;
  readonly frameSize: number;
  readonly frameNr: number;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  /** Native address of frame 0. */
  readonly addr: number;
  private readonly perBlock: number;
  constructor(layout: PacketRingLayout, addr: number) {
    this.layout = layout;
    this.frameSize = layout.frameSize;
    this.frameNr = layout.frameNr;
    this.perBlock = Math.floor(layout.blockSize / layout.frameSize);
    this.addr = addr;
    const ab = view(addr, layout.blockSize * layout.blockNr);
    this.u8 = new Uint8Array(ab);
    this.u16 = new Uint16Array(ab);
    this.u32 = new Uint32Array(ab);
    this.i32 = new Int32Array(ab);
  }
  /** Byte offset of frame i in the ring (frames do not cross block boundaries). */
  frameOffset(i: number): number {
    const b = Math.floor(i / this.perBlock);
    return b * this.layout.blockSize + (i - b * this.perBlock) * this.frameSize;
  }
}

/** The rings of one packet socket, mapped in one piece (rx ring first). */
export interface PacketRings {
  rx: PacketRingView | null;
  tx: PacketRingView | null;
  /** Mapping address and length (for munmap). */
  addr: number;
  size: number;
}

function setRing(fd: number, opt: number, l: PacketRingLayout | null, call: string): void {
  scratch.fill(0, 0, 16);
  if (l !== null) {
    sdv.setUint32(0, l.blockSize, true);
    sdv.setUint32(4, l.blockNr, true);
    sdv.setUint32(8, l.frameSize, true);
    sdv.setUint32(12, l.frameNr, true);
  }
  if (c_setsockopt(fd, SOL_PACKET, opt, scratchAddr, 16) < 0) fail(call, `fd ${fd}`);
}

/**
 * Switch packet socket fd to TPACKET_V2, give it an rx ring and/or a tx ring
 * (PACKET_RX_RING / PACKET_TX_RING) and map them. `reserve` is
 * PACKET_RESERVE (bytes left free before each received frame's network
 * header, which moves tp_mac). Throws SysError naming the refused call (e.g.
 * setsockopt(PACKET_RX_RING) ENOMEM); on failure the rings are released again
 * and the socket works as before (recv/send), except that its version is V2.
 */
export function mapPacketRings(fd: number, rx: PacketRingLayout | null, tx: PacketRingLayout | null, reserve = 0): PacketRings {
  setsockoptInt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2, 'setsockopt(PACKET_VERSION)', `fd ${fd}`);
  if (reserve > 0) setsockoptInt(fd, SOL_PACKET, PACKET_RESERVE, reserve, 'setsockopt(PACKET_RESERVE)', `fd ${fd}`);
  let haveRx = false;
  let haveTx = false;
  try {
    if (rx !== null) {
      setRing(fd, PACKET_RX_RING, rx, 'setsockopt(PACKET_RX_RING)');
      haveRx = true;
    }
    if (tx !== null) {
      setRing(fd, PACKET_TX_RING, tx, 'setsockopt(PACKET_TX_RING)');
      haveTx = true;
    }
    const rxBytes = rx === null ? 0 : rx.blockSize * rx.blockNr;
    const txBytes = tx === null ? 0 : tx.blockSize * tx.blockNr;
    const size = rxBytes + txBytes;
    if (size === 0) throw new SysError('mapPacketRings', E.EINVAL, 'no ring asked for');
    const addr = mmap(fd, size);
    try {
      return { rx: rx === null ? null : new PacketRingView(rx, addr), tx: tx === null ? null : new PacketRingView(tx, addr + rxBytes), addr, size };
    } catch (e) {
      munmap(addr, size);
      throw e;
    }
  } catch (e) {
    // a zeroed tpacket_req frees an unmapped ring
    if (haveRx) c_setsockopt(fd, SOL_PACKET, PACKET_RX_RING, (scratch.fill(0, 0, 16), scratchAddr), 16);
    if (haveTx) c_setsockopt(fd, SOL_PACKET, PACKET_TX_RING, (scratch.fill(0, 0, 16), scratchAddr), 16);
    throw e;
  }
}

/** Unmap rings mapped by {@link mapPacketRings} (drop their views first). */
export function unmapPacketRings(r: PacketRings): void {
  munmap(r.addr, r.size);
}

/**
 * Unmap fd's rings and give them back to the kernel (zeroed tpacket_req), so
 * the socket receives and sends through recv/send again. Never throws.
 */
export function releasePacketRings(fd: number, r: PacketRings): void {
  try {
    munmap(r.addr, r.size);
  } catch {
    /* not mapped */
  }
  scratch.fill(0, 0, 16);
  if (r.rx !== null) c_setsockopt(fd, SOL_PACKET, PACKET_RX_RING, scratchAddr, 16);
  scratch.fill(0, 0, 16);
  if (r.tx !== null) c_setsockopt(fd, SOL_PACKET, PACKET_TX_RING, scratchAddr, 16);
}

/**
 * sendto(fd, NULL, 0, MSG_DONTWAIT): have the kernel send every tx ring frame
 * marked TP_STATUS_SEND_REQUEST. Bytes queued, or -errno. Never throws.
 */
export function packetRingKick(fd: number): number {
  const r = c_sendto(fd, 0, 0, MSG_DONTWAIT, 0, 0) as number;
  return r < 0 ? -koffi.errno() : r;
}
