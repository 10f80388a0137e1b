/** Test helper: build Ethernet frames from a small description; run action programs. */
import {
  executeActions, EXEC_DONE, EXEC_ERROR, EXEC_STATE_WORDS, ST_OFF, ST_LEN, ST_NOUT, ST_ERR,
} from '../../src/dp/actions.js';

export interface VlanTag { tpid: number; tci: number }

export interface PacketDesc {
  dst: number[];
  src: number[];
  vlans?: VlanTag[];
  l3: 'ipv4' | 'ipv6' | 'arp' | 'other';
  etherType?: number;
  proto?: number;
  tos?: number;
  ttl?: number;
  /** IPv4: 4 bytes; IPv6: 16 bytes. */
  srcIp?: number[];
  dstIp?: number[];
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  /** Extra IPv4 header words (options), 0..10. */
  ipOptWords?: number;
  /** IPv4 fragment: more-fragments flag and offset in 8-byte units. */
  mf?: boolean;
  fragOffset?: number;
  arpOp?: number;
  payload?: number;
}

export function buildFrame(d: PacketDesc): Uint8Array {
  const b: number[] = [...d.dst, ...d.src];
  for (const v of d.vlans ?? []) b.push(v.tpid >> 8, v.tpid & 255, (v.tci >> 8) & 255, v.tci & 255);
  const payload = d.payload ?? 0;
  const pay = Array.from({ length: payload }, (_, i) => (i * 7 + 3) & 255);
  const l4 = (): number[] => {
    const p = d.proto ?? 0;
    if (p === 6) return [d.sport! >> 8, d.sport! & 255, d.dport! >> 8, d.dport! & 255, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, ...pay];
    if (p === 17 || p === 132) {
      const hdr = [d.sport! >> 8, d.sport! & 255, d.dport! >> 8, d.dport! & 255, 0, 8 + payload, 0, 0];
      if (p === 132) hdr.push(0, 0, 0, 0);
      return [...hdr, ...pay];
    }
    if (p === 1 || p === 58) return [d.icmpType ?? 0, d.icmpCode ?? 0, 0, 0, 0, 0, 0, 0, ...pay];
    return pay;
  };
  switch (d.l3) {
    case 'ipv4': {
      b.push(0x08, 0x00);
      const opt = d.ipOptWords ?? 0;
      const later = (d.fragOffset ?? 0) !== 0;
      const body = later ? pay : l4();
      const hl = 20 + opt * 4;
      const tot = hl + body.length;
      const fo = ((d.mf ? 0x2000 : 0) | (d.fragOffset ?? 0));
      b.push(0x40 | (5 + opt), d.tos ?? 0, tot >> 8, tot & 255, 0, 1, fo >> 8, fo & 255, d.ttl ?? 64, d.proto ?? 0, 0, 0,
        ...d.srcIp!, ...d.dstIp!);
      for (let i = 0; i < opt; i++) b.push(1, 1, 1, 1);
      b.push(...body);
      break;
    }
    case 'ipv6': {
      b.push(0x86, 0xdd);
      const body = l4();
      const tc = d.tos ?? 0;
      b.push(0x60 | (tc >> 4), (tc & 15) << 4, 0, 0, body.length >> 8, body.length & 255, d.proto ?? 59, d.ttl ?? 64,
        ...d.srcIp!, ...d.dstIp!, ...body);
      break;
    }
    case 'arp':
      b.push(0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, d.arpOp ?? 1, ...d.src, ...d.srcIp!, 0, 0, 0, 0, 0, 0, ...d.dstIp!);
      break;
    case 'other':
      b.push((d.etherType ?? 0x1234) >> 8, (d.etherType ?? 0x1234) & 255, ...pay);
      break;
  }
  return Uint8Array.from(b);
}

export function mac(n: number): number[] {
  return [0x02, 0, 0, 0, (n >> 8) & 255, n & 255];
}

/** Run a whole program, collecting (port, frame bytes) per output. */
export function runAll(prog: Int32Array, frame: Uint8Array, headroom = 64, tailroom = 64): { out: [number, number[]][]; err: number } {
  const buf = new Uint8Array(headroom + frame.length + tailroom);
  buf.set(frame, headroom);
  const st = new Int32Array(EXEC_STATE_WORDS);
  st[ST_OFF] = headroom; st[ST_LEN] = frame.length;
  const ports = new Int32Array(4);
  const out: [number, number[]][] = [];
  let pc = 0;
  for (;;) {
    pc = executeActions(prog, pc, prog.length, buf, st, ports);
    for (let i = 0; i < st[ST_NOUT]; i++) out.push([ports[i], Array.from(buf.subarray(st[ST_OFF], st[ST_OFF] + st[ST_LEN]))]);
    st[ST_NOUT] = 0;
    if (pc === EXEC_DONE) return { out, err: 0 };
    if (pc === EXEC_ERROR) return { out, err: st[ST_ERR] };
  }
}

