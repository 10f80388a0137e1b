/**
 * Test traffic shared by testpmd and the demo: UDP/IPv4 frames carrying a
 * magic word, a sequence number and a checksum, so the receiver can tell
 * intact frames from corrupted ones. Generation and checking allocate nothing.
 */
import type { Mempool } from '../mem/mempool.js';

export const MAGIC = 0x54535653; // 'TSVS'
/** Offset of our payload (after Ethernet 14 + IPv4 20 + UDP 8). */
const PAY = 42;
export const MIN_FRAME = 60;

export class TrafficGen {
  readonly size: number;
  readonly flows: number;
  private readonly template: Uint8Array;
  seq = 0;

  constructor(opts: { size: number; flows?: number; src?: number[]; dst?: number[] }) {
    if (!(opts.size >= MIN_FRAME && opts.size <= 9018)) throw new RangeError(`frame size must be in ${MIN_FRAME}..9018, got ${opts.size}`);
    this.size = opts.size;
    this.flows = Math.max(1, opts.flows ?? 1);
    const t = new Uint8Array(opts.size);
    t.set(opts.dst ?? [0x02, 0, 0, 0, 0, 0x02], 0);
    t.set(opts.src ?? [0x02, 0, 0, 0, 0, 0x01], 6);
    t[12] = 0x08;
    t[13] = 0x00;
    const ipLen = opts.size - 14;
    t.set([0x45, 0, ipLen >> 8, ipLen & 0xff, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 1, 1], 14);
    const udpLen = ipLen - 20;
    t.set([0x04, 0x00, 0x04, 0x01, udpLen >> 8, udpLen & 0xff, 0, 0], 34);
    for (let i = PAY + 12; i < opts.size; i++) t[i] = i & 0xff;
    this.template = t;
  }

  /** Write the next frame into pool buffer h. */
  fill(pool: Mempool, h: number): void {
    const d = pool.data;
    const off = pool.dataOffset(h);
    d.set(this.template, off);
    const seq = this.seq++;
    if (this.flows > 1) {
      const f = seq % this.flows;
      // vary source IP (last two bytes) and UDP source port
      d[off + 28] = (f >> 8) & 0xff;
      d[off + 29] = f & 0xff;
      d[off + 34] = 0x04 + ((f >> 16) & 0x3f);
      d[off + 35] = f & 0xff;
    }
    ipChecksum(d, off + 14);
    writeU32(d, off + PAY, MAGIC);
    writeU32(d, off + PAY + 4, seq >>> 0);
    writeU32(d, off + PAY + 8, (MAGIC ^ seq ^ this.size) >>> 0);
    pool.dataLen[h] = this.size;
    pool.pktLen[h] = this.size;
  }
}

export const CHECK_OK = 0;
export const CHECK_FOREIGN = 1;
export const CHECK_BAD = 2;

/** Check a received frame: ours and intact, not ours, or ours but damaged. */
export function checkFrame(d: Uint8Array, off: number, len: number): number {
  if (len < PAY + 12) return CHECK_FOREIGN;
  if (readU32(d, off + PAY) !== MAGIC) return CHECK_FOREIGN;
  const seq = readU32(d, off + PAY + 4);
  if (readU32(d, off + PAY + 8) !== ((MAGIC ^ seq ^ len) >>> 0)) return CHECK_BAD;
  for (let i = PAY + 12; i < len; i++) if (d[off + i] !== (i & 0xff)) return CHECK_BAD;
  return CHECK_OK;
}

export function frameSeq(d: Uint8Array, off: number): number {
  return readU32(d, off + PAY + 4);
}

function writeU32(d: Uint8Array, o: number, v: number): void {
  d[o] = v >>> 24;
  d[o + 1] = (v >>> 16) & 0xff;
  d[o + 2] = (v >>> 8) & 0xff;
  d[o + 3] = v & 0xff;
}

function readU32(d: Uint8Array, o: number): number {
  return ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
}

function ipChecksum(d: Uint8Array, o: number): void {
  d[o + 10] = 0;
  d[o + 11] = 0;
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += (d[o + i] << 8) | d[o + i + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  s = ~s & 0xffff;
  d[o + 10] = s >> 8;
  d[o + 11] = s & 0xff;
}

/** Swap source and destination MAC in place. */
export function macSwap(d: Uint8Array, off: number): void {
  for (let i = 0; i < 6; i++) {
    const t = d[off + i];
    d[off + i] = d[off + 6 + i];
    d[off + 6 + i] = t;
  }
}
