/**
 * Virtqueue memory layout (virtio 1.2 §2.7 split, §2.8 packed), described
 * once and shared by the device side and the driver side.
 *
 * All structures are little-endian. Index and flag fields that the two sides
 * hand over to each other are accessed through Uint16Array views with
 * Atomics (program-order barriers); descriptor bodies through a DataView.
 * The ring views are built by {@link mapSplitRing} / {@link mapPackedRing},
 * which check every area against GuestMemory (control path, may throw
 * {@link VirtqueueError}).
 */

import type { GuestMemory } from '../mem/guest-memory.js';
import { VirtqueueError } from './errors.js';

/** The typed-array views below assume a little-endian host (x86-64, arm64). */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Largest queue size for either ring kind (2^15). */
export const MAX_QUEUE_SIZE = 32768;

// --- descriptor flags (both kinds) ---
export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
/** Packed only: available / used wrap bits. */
export const PDESC_F_AVAIL = 1 << 7;
export const PDESC_F_USED = 1 << 15;

/** Descriptor size, both kinds (also the indirect-table entry size). */
export const DESC_SIZE = 16;

// --- split descriptor fields: struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; } ---
export const DESC_ADDR = 0;
export const DESC_LEN = 8;
export const DESC_FLAGS = 12;
export const DESC_NEXT = 14;

// --- packed descriptor fields: struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; } ---
export const PDESC_ADDR = 0;
export const PDESC_LEN = 8;
export const PDESC_ID = 12;
export const PDESC_FLAGS = 14;

// --- word indices for the hot paths ---
// const enums: tsc compiles every use to a literal (an imported `const` costs V8 a load and a TDZ
// check per use in a burst loop). assertLayout() below checks them against the byte layouts.

/** The u32 words of a descriptor in the desc32 views (little-endian host), both kinds. */
export const enum DescWord {
  ADDR_LO = 0,
  ADDR_HI = 1,
  LEN = 2,
  /** Split: flags (low 16 bits) | next << 16. */
  FLAGS_NEXT = 3,
  /** Packed: id (low 16 bits) | flags << 16. */
  ID_FLAGS = 3,
  /** Words per descriptor, and its log2: descriptor i starts at word i << SHIFT. */
  COUNT = 4,
  SHIFT = 2,
}

/** u16 indices into PackedRing.desc16: descriptor i's id at PER_DESC * i + ID, flags at PER_DESC * i + FLAGS. */
export const enum PackedU16 {
  PER_DESC = 8,
  ID = 6,
  FLAGS = 7,
}

/** u32 indices into SplitRing.used32: used element i's id at ELEM0 + PER_ELEM * i, its len one further. */
export const enum UsedWord {
  ELEM0 = 1,
  PER_ELEM = 2,
}

/** Bit fields the fast paths test. */
export const enum RingBits {
  /** Largest high word of an address below 2^53 (readAddr's limit), and the high word's weight. */
  ADDR_HI_MAX = 0x1fffff,
  ADDR_HI_UNIT = 0x100000000,
  /** The split flags in DescWord.FLAGS_NEXT. */
  SPLIT_FLAGS_MASK = 0xffff,
  /** Packed: bit numbers of the AVAIL and USED flags. */
  PACKED_AVAIL_BIT = 7,
  PACKED_USED_BIT = 15,
  /** Packed: the flags below AVAIL (NEXT, WRITE, INDIRECT, reserved 3-6); a one-buffer chain has only WRITE or none. */
  PACKED_LOW_MASK = 0x7f,
  /** Packed: AVAIL|USED, the flags of a descriptor used with wrap counter 1. */
  PACKED_USED_WRAP1 = 0x8080,
}

// --- split avail ring: { le16 flags; le16 idx; le16 ring[size]; le16 used_event; } ---
export const AVAIL_F_NO_INTERRUPT = 1;
export const AVAIL_FLAGS = 0;
export const AVAIL_IDX = 2;
export const AVAIL_RING = 4;
/** Byte offset of used_event in the avail ring. */
export const availUsedEventOff = (size: number): number => AVAIL_RING + 2 * size;

// --- split used ring: { le16 flags; le16 idx; struct { le32 id; le32 len; } ring[size]; le16 avail_event; } ---
export const USED_F_NO_NOTIFY = 1;
export const USED_FLAGS = 0;
export const USED_IDX = 2;
export const USED_RING = 4;
export const USED_ELEM_SIZE = 8;
/** Byte offset of avail_event in the used ring. */
export const usedAvailEventOff = (size: number): number => USED_RING + USED_ELEM_SIZE * size;

// --- packed event suppression: { le16 off_wrap; le16 flags; } ---
export const EVENT_OFF_WRAP = 0;
export const EVENT_FLAGS = 2;
export const PACKED_EVENT_SIZE = 4;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

// --- alignment (§2.7.10.1 / §2.8.10.1 tables) ---
export const SPLIT_DESC_ALIGN = 16;
export const SPLIT_AVAIL_ALIGN = 2;
export const SPLIT_USED_ALIGN = 4;
export const PACKED_DESC_ALIGN = 16;
export const PACKED_EVENT_ALIGN = 4;
/** Legacy (pre-1.0) contiguous layout alignment of the used ring. */
export const LEGACY_VRING_ALIGN = 4096;

export const splitDescSize = (size: number): number => DESC_SIZE * size;
export const splitAvailSize = (size: number, eventIdx = true): number => AVAIL_RING + 2 * size + (eventIdx ? 2 : 0);
export const splitUsedSize = (size: number, eventIdx = true): number =>
  USED_RING + USED_ELEM_SIZE * size + (eventIdx ? 2 : 0);
export const packedDescSize = (size: number): number => DESC_SIZE * size;

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/** Total bytes of a legacy contiguous split vring (`vring_size()` in virtio_ring.h). */
export function vringSize(size: number, align = LEGACY_VRING_ALIGN): number {
  return alignUp(splitDescSize(size) + splitAvailSize(size), align) + splitUsedSize(size);
}

/** Addresses of the three split areas in the legacy contiguous layout starting at `base`. */
export function vringLayout(
  base: number,
  size: number,
  align = LEGACY_VRING_ALIGN,
): { descAddr: number; availAddr: number; usedAddr: number } {
  const availAddr = base + splitDescSize(size);
  const usedAddr = alignUp(availAddr + splitAvailSize(size), align);
  return { descAddr: base, availAddr, usedAddr };
}

/** Bytes of a packed ring laid out as desc | driver event | device event (each aligned). */
export function packedVringSize(size: number): number {
  return packedDescSize(size) + 2 * PACKED_EVENT_SIZE;
}

/** Addresses of the packed areas laid out contiguously starting at `base` (16-aligned). */
export function packedLayout(
  base: number,
  size: number,
): { descAddr: number; driverEventAddr: number; deviceEventAddr: number } {
  const driverEventAddr = base + packedDescSize(size);
  return { descAddr: base, driverEventAddr, deviceEventAddr: driverEventAddr + PACKED_EVENT_SIZE };
}

/**
 * `vring_need_event()`: true if moving an index from `old` to `newIdx` passed
 * `event` (all three 16-bit, wrap-around aware).
 */
export function needEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

/**
 * Packed-ring event check (off_wrap form). `newPos` is the next position to be
 * written (0..size-1) and `wrap` the wrap counter that goes with it; `count` the
 * descriptors written since the last check. A count of a whole ring or more
 * always needs the event.
 */
export function packedNeedEvent(offWrap: number, size: number, newPos: number, wrap: number, count: number): boolean {
  if (count <= 0) return false;
  if (count >= size) return true;
  let off = offWrap & 0x7fff;
  if (offWrap >>> 15 !== wrap) off -= size;
  return needEvent(off & 0xffff, newPos, (newPos - count) & 0xffff);
}

/**
 * Does the other side of a packed ring want a notification, per its event
 * suppression area `ev` ([EV_OFF_WRAP, EV_FLAGS]), after `count` descriptors
 * written up to position newPos with wrap counter `wrap`?
 */
export function packedWantsEvent(ev: Uint16Array, eventIdx: boolean, size: number, newPos: number, wrap: number, count: number): boolean {
  const fl = Atomics.load(ev, EV_FLAGS) & 3;
  if (fl === RING_EVENT_FLAGS_DISABLE) return false;
  if (fl === RING_EVENT_FLAGS_DESC && eventIdx) return packedNeedEvent(Atomics.load(ev, EV_OFF_WRAP), size, newPos, wrap, count);
  return true;
}

/** Is a packed descriptor with these flags available for wrap counter `wrap` (device view)? */
export function packedIsAvail(flags: number, wrap: number): boolean {
  const a = (flags >>> 7) & 1;
  const u = (flags >>> 15) & 1;
  return a === wrap && u !== wrap;
}

/** Is a packed descriptor with these flags used for wrap counter `wrap` (driver view)? */
export function packedIsUsed(flags: number, wrap: number): boolean {
  const a = (flags >>> 7) & 1;
  const u = (flags >>> 15) & 1;
  return a === u && u === wrap;
}

/** Flags bits a driver writes to make a descriptor available with wrap counter `wrap`. */
export const packedAvailBits = (wrap: number): number => (wrap ? PDESC_F_AVAIL : PDESC_F_USED);
/** Flags bits a device writes to mark a descriptor used with wrap counter `wrap`. */
export const packedUsedBits = (wrap: number): number => (wrap ? PDESC_F_AVAIL | PDESC_F_USED : 0);

/** Read a 64-bit little-endian address as a number; -1 if >= 2^53. */
export function readAddr(dv: DataView, off: number): number {
  const hi = dv.getUint32(off + 4, true);
  if (hi > 0x1fffff) return -1;
  return hi * 0x100000000 + dv.getUint32(off, true);
}

/** Write a 64-bit little-endian address (a safe integer). */
export function writeAddr(dv: DataView, off: number, addr: number): void {
  dv.setUint32(off, addr % 0x100000000, true);
  dv.setUint32(off + 4, Math.floor(addr / 0x100000000), true);
}

/** One area mapped: the host buffer and byte offset where it starts. */
interface Mapped {
  buffer: ArrayBufferLike;
  byteOffset: number;
}

/** Locate a ring area in guest memory; throws VirtqueueError (control path). */
export function mapArea(mem: GuestMemory, gpa: number, len: number, align: number, what: string): Mapped {
  if (!HOST_LITTLE_ENDIAN) throw new VirtqueueError('BAD_CONFIG', 'virtqueues need a little-endian host');
  if (!Number.isSafeInteger(gpa) || gpa < 0) {
    throw new VirtqueueError('BAD_ADDR', `${what}: invalid address ${gpa}`);
  }
  if (gpa % align !== 0) {
    throw new VirtqueueError('MISALIGNED', `${what}: address 0x${gpa.toString(16)} not ${align}-byte aligned`);
  }
  const wi = mem.findGpa(gpa, len);
  if (wi < 0) {
    throw new VirtqueueError('BAD_ADDR', `${what}: 0x${gpa.toString(16)}+${len} is not inside one mapped window`);
  }
  const w = mem.windows[wi];
  const byteOffset = w.bytes.byteOffset + mem.off;
  if (byteOffset % align !== 0) {
    throw new VirtqueueError('MISALIGNED', `${what}: host view of 0x${gpa.toString(16)} is not ${align}-byte aligned`);
  }
  return { buffer: w.bytes.buffer, byteOffset };
}

/** Addresses (GPAs) of a split ring. */
export interface SplitRingAddrs {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

/** Typed views over the three areas of a split ring. */
export interface SplitRing {
  readonly size: number;
  /** Descriptor table, 16 B per entry. */
  readonly desc: DataView;
  /** Descriptor table as u32 (little-endian host): entry i at [4i]=addr lo, [4i+1]=addr hi, [4i+2]=len, [4i+3]=flags | next << 16. */
  readonly desc32: Uint32Array;
  /** Avail ring as u16: [0]=flags [1]=idx [2+i]=ring[i] [2+size]=used_event (if EVENT_IDX). */
  readonly avail: Uint16Array;
  /** Used ring as u16: [0]=flags [1]=idx [2+4*size]=avail_event (if EVENT_IDX). */
  readonly used16: Uint16Array;
  /** Used ring as u32: elem i at [1+2i]=id, [2+2i]=len. */
  readonly used32: Uint32Array;
}

/** u16 indices into SplitRing.avail / used16. */
export const AV_FLAGS = 0;
export const AV_IDX = 1;
export const AV_RING = 2;
export const avUsedEvent = (size: number): number => 2 + size;
export const US_FLAGS = 0;
export const US_IDX = 1;
export const usAvailEvent = (size: number): number => 2 + 4 * size;
/** u32 index of used elem `i`'s id (len is the next u32). */
export const usElem = (i: number): number => 1 + 2 * i;

/** Is `size` a valid split queue size (power of two in 1..32768)? */
export const validSplitSize = (size: number): boolean =>
  Number.isInteger(size) && size >= 1 && size <= MAX_QUEUE_SIZE && (size & (size - 1)) === 0;
/** Is `size` a valid packed queue size (1..32768)? */
export const validPackedSize = (size: number): boolean =>
  Number.isInteger(size) && size >= 1 && size <= MAX_QUEUE_SIZE;

/** Map a split ring (validates size, addresses, alignment). */
export function mapSplitRing(mem: GuestMemory, a: SplitRingAddrs, eventIdx: boolean): SplitRing {
  const size = a.size;
  if (!validSplitSize(size)) {
    throw new VirtqueueError('BAD_SIZE', `split queue size ${size} is not a power of 2 in 1..${MAX_QUEUE_SIZE}`);
  }
  const d = mapArea(mem, a.descAddr, splitDescSize(size), SPLIT_DESC_ALIGN, 'descriptor table');
  const av = mapArea(mem, a.availAddr, splitAvailSize(size, eventIdx), SPLIT_AVAIL_ALIGN, 'avail ring');
  const us = mapArea(mem, a.usedAddr, splitUsedSize(size, eventIdx), SPLIT_USED_ALIGN, 'used ring');
  return {
    size,
    desc: new DataView(d.buffer, d.byteOffset, splitDescSize(size)),
    desc32: new Uint32Array(d.buffer, d.byteOffset, splitDescSize(size) >> 2),
    avail: new Uint16Array(av.buffer, av.byteOffset, splitAvailSize(size, eventIdx) >> 1),
    used16: new Uint16Array(us.buffer, us.byteOffset, splitUsedSize(size, eventIdx) >> 1),
    used32: new Uint32Array(us.buffer, us.byteOffset, 1 + 2 * size),
  };
}

/** Addresses (GPAs) of a packed ring. */
export interface PackedRingAddrs {
  size: number;
  descAddr: number;
  /** Driver Event Suppression (driver writes, device reads). */
  driverEventAddr: number;
  /** Device Event Suppression (device writes, driver reads). */
  deviceEventAddr: number;
}

/** Typed views over the areas of a packed ring. */
export interface PackedRing {
  readonly size: number;
  readonly desc: DataView;
  /** Descriptor ring as u16: desc i id at [8i+6], flags at [8i+7]. */
  readonly desc16: Uint16Array;
  /** Descriptor ring as u32 (little-endian host): desc i at [4i]=addr lo, [4i+1]=addr hi, [4i+2]=len, [4i+3]=id | flags << 16. */
  readonly desc32: Uint32Array;
  /** Driver event suppression as u16: [0]=off_wrap [1]=flags. */
  readonly driverEvent: Uint16Array;
  /** Device event suppression as u16: [0]=off_wrap [1]=flags. */
  readonly deviceEvent: Uint16Array;
}

export const pdId = (i: number): number => 8 * i + 6;
export const pdFlags = (i: number): number => 8 * i + 7;
export const EV_OFF_WRAP = 0;
export const EV_FLAGS = 1;

/** Map a packed ring (validates size, addresses, alignment). */
export function mapPackedRing(mem: GuestMemory, a: PackedRingAddrs): PackedRing {
  const size = a.size;
  if (!validPackedSize(size)) {
    throw new VirtqueueError('BAD_SIZE', `packed queue size ${size} is not in 1..${MAX_QUEUE_SIZE}`);
  }
  const d = mapArea(mem, a.descAddr, packedDescSize(size), PACKED_DESC_ALIGN, 'descriptor ring');
  const dr = mapArea(mem, a.driverEventAddr, PACKED_EVENT_SIZE, PACKED_EVENT_ALIGN, 'driver event area');
  const dv = mapArea(mem, a.deviceEventAddr, PACKED_EVENT_SIZE, PACKED_EVENT_ALIGN, 'device event area');
  return {
    size,
    desc: new DataView(d.buffer, d.byteOffset, packedDescSize(size)),
    desc16: new Uint16Array(d.buffer, d.byteOffset, packedDescSize(size) >> 1),
    desc32: new Uint32Array(d.buffer, d.byteOffset, packedDescSize(size) >> 2),
    driverEvent: new Uint16Array(dr.buffer, dr.byteOffset, 2),
    deviceEvent: new Uint16Array(dv.buffer, dv.byteOffset, 2),
  };
}

/** Check a split ring index from the configuration (16-bit, default 0). */
export function checkSplitIdx(v: number | undefined, what: string): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new VirtqueueError('BAD_INDEX', `${what} ${v} is not a 16-bit index`);
  return v;
}

/** Decode a packed ring index from the configuration (pos | wrap << 15); default position 0, wrap 1. */
export function decodePackedIdx(v: number | undefined, size: number, what: string): [number, number] {
  if (v === undefined) return [0, 1];
  if (!Number.isInteger(v) || v < 0 || v > 0xffff || (v & 0x7fff) >= size) {
    throw new VirtqueueError('BAD_INDEX', `${what} 0x${Number(v).toString(16)} is not a position < ${size} with a wrap bit`);
  }
  return [v & 0x7fff, v >>> 15];
}

/**
 * The u32/u16 word indices above must agree with the byte layouts of the
 * spec structures: checked once, when the module loads (the hot paths then
 * use the word indices without checks).
 */
function assertLayout(): void {
  const checks: [string, boolean][] = [
    ['descriptor = 4 u32 words', DESC_SIZE === DescWord.COUNT * 4 && DescWord.COUNT === 1 << DescWord.SHIFT],
    ['split desc addr/len/flags/next words', DESC_ADDR === DescWord.ADDR_LO * 4 && DESC_LEN === DescWord.LEN * 4 && DESC_FLAGS === DescWord.FLAGS_NEXT * 4 && DESC_NEXT === DESC_FLAGS + 2],
    ['packed desc addr/len/id/flags words', PDESC_ADDR === DescWord.ADDR_LO * 4 && PDESC_LEN === DescWord.LEN * 4 && PDESC_ID === DescWord.ID_FLAGS * 4 && PDESC_FLAGS === PDESC_ID + 2],
    ['packed u16 id/flags of desc i', PackedU16.PER_DESC * 2 === DESC_SIZE && PackedU16.ID * 2 === PDESC_ID && PackedU16.FLAGS * 2 === PDESC_FLAGS && pdId(3) === PackedU16.PER_DESC * 3 + PackedU16.ID && pdFlags(3) === PackedU16.PER_DESC * 3 + PackedU16.FLAGS],
    ['packed AVAIL/USED bits', PDESC_F_AVAIL === 1 << RingBits.PACKED_AVAIL_BIT && PDESC_F_USED === 1 << RingBits.PACKED_USED_BIT && RingBits.PACKED_LOW_MASK === PDESC_F_AVAIL - 1 && RingBits.PACKED_USED_WRAP1 === (PDESC_F_AVAIL | PDESC_F_USED) && packedUsedBits(1) === RingBits.PACKED_USED_WRAP1],
    ['split flags fit the low half of word 3', (DESC_F_NEXT | DESC_F_WRITE | DESC_F_INDIRECT) <= RingBits.SPLIT_FLAGS_MASK],
    ['avail ring u16 indices', AV_FLAGS * 2 === AVAIL_FLAGS && AV_IDX * 2 === AVAIL_IDX && AV_RING * 2 === AVAIL_RING && avUsedEvent(8) * 2 === availUsedEventOff(8)],
    ['used ring u16/u32 indices', US_FLAGS * 2 === USED_FLAGS && US_IDX * 2 === USED_IDX && usElem(5) * 4 === USED_RING + 5 * USED_ELEM_SIZE && usElem(5) === UsedWord.ELEM0 + UsedWord.PER_ELEM * 5 && usAvailEvent(8) * 2 === usedAvailEventOff(8)],
    ['event suppression u16 indices', EV_OFF_WRAP * 2 === EVENT_OFF_WRAP && EV_FLAGS * 2 === EVENT_FLAGS],
    ['address words', (RingBits.ADDR_HI_MAX + 1) * RingBits.ADDR_HI_UNIT === 2 ** 53],
  ];
  const bad = checks.filter(([, ok]) => !ok).map(([what]) => what);
  if (bad.length) throw new Error(`virtqueue layout constants disagree: ${bad.join('; ')}`);
}
assertLayout();
