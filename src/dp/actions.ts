/**
 * Datapath actions as a compact program: an Int32Array of [opcode, args...].
 * The slow path (ofproto/xlate) builds it with ProgramBuilder; the fast path
 * runs it with executeActions, which edits the frame in place and reports
 * output ports through a caller-provided Int32Array. No allocation, no throw.
 *
 * Opcodes (args in brackets):
 *   OP_DROP          []            stop; outputs already reported stay valid
 *   OP_OUTPUT        [port]        send the frame as it is now to port
 *   OP_SET_DL_SRC    [hi16, lo32]  rewrite the Ethernet source
 *   OP_SET_DL_DST    [hi16, lo32]  rewrite the Ethernet destination
 *   OP_PUSH_VLAN     [tpid, tci]   insert a tag after the MACs (tci as on the wire)
 *   OP_SET_VLAN_VID  [vid]         set the outer tag's VID (no-op if untagged)
 *   OP_SET_VLAN_PCP  [pcp]         set the outer tag's PCP (no-op if untagged)
 *   OP_POP_VLAN      []            remove the outer tag (no-op if untagged)
 *   OP_SET_TUNNEL    [tun_id]      the tunnel id later outputs to flow-keyed tunnel ports
 *                                  send with (st[ST_TUN_SET] = 1, st[ST_TUN_ID]); the caller
 *                                  stores it in the packet's (and copies') tunnel metadata
 *   OP_SET_NW_SRC    [addr]        IPv4 source; the IP header checksum and the
 *   OP_SET_NW_DST    [addr]        TCP/UDP checksum (pseudo-header) are updated
 *                                  incrementally (RFC 1624); not IPv4: no-op
 *   OP_SET_TP_SRC    [port]        TCP/UDP source port (IPv4 or IPv6 without
 *   OP_SET_TP_DST    [port]        extension headers), checksum updated; a UDP
 *                                  checksum of 0 (none) stays 0; other: no-op
 * An empty program drops the packet.
 *
 * Execution contract (frame = bytes [off, off+len) of a larger buffer):
 *   st is an Int32Array of EXEC_STATE_WORDS: st[ST_OFF], st[ST_LEN] hold the
 *   current packet position (updated by VLAN push/pop), st[ST_NOUT] the number
 *   of ports written to outPorts, st[ST_ERR] an error code.
 *   executeActions(prog, pc, progLen, buf, st, outPorts) runs from pc and
 *   appends OUTPUT ports to outPorts[st[ST_NOUT]++]. It returns
 *     EXEC_DONE (-1)  end of program: send the frame to outPorts[0..st[ST_NOUT])
 *                     (the frame itself may be used for the last one);
 *     EXEC_ERROR (-2) st[ST_ERR] says why; the ports already in outPorts saw
 *                     the frame as it is now and may still be sent;
 *     pc >= 0         the next op modifies the frame (or outPorts is full)
 *                     while outputs are pending: transmit copies of the
 *                     frame to outPorts[0..st[ST_NOUT]) now, set st[ST_NOUT]=0
 *                     and call again with this pc.
 *   The common program (all edits, then all outputs) completes in one call.
 *   PUSH_VLAN uses 4 bytes of headroom (off >= 4: the MACs move back) or else
 *   4 bytes of tailroom (the payload moves forward); with neither it fails
 *   with ERR_NO_ROOM. POP_VLAN moves the MACs forward (off += 4).
 */
import { formatMacWords } from '../util/net.js';

export const OP_DROP = 0;
export const OP_OUTPUT = 1;
export const OP_SET_DL_SRC = 2;
export const OP_SET_DL_DST = 3;
export const OP_PUSH_VLAN = 4;
export const OP_SET_VLAN_VID = 5;
export const OP_SET_VLAN_PCP = 6;
export const OP_POP_VLAN = 7;
export const OP_SET_TUNNEL = 8;
export const OP_SET_NW_SRC = 9;
export const OP_SET_NW_DST = 10;
export const OP_SET_TP_SRC = 11;
export const OP_SET_TP_DST = 12;
const OP_MAX = 12;

/** Total length in words (opcode + args) of each opcode. */
export const OP_WORDS: readonly number[] = Object.freeze([1, 2, 3, 3, 3, 2, 2, 1, 2, 2, 2, 2, 2]);
const OP_WORDS_I32 = Int32Array.from(OP_WORDS);
const OP_MODIFIES = Int32Array.from([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);

export const ST_OFF = 0;
export const ST_LEN = 1;
export const ST_NOUT = 2;
export const ST_ERR = 3;
/** 1 once OP_SET_TUNNEL ran (the caller sets 0 before a program). */
export const ST_TUN_SET = 4;
export const ST_TUN_ID = 5;
export const EXEC_STATE_WORDS = 6;

export const EXEC_DONE = -1;
export const EXEC_ERROR = -2;

export const ERR_NONE = 0;
/** PUSH_VLAN without 4 bytes of head- or tailroom. */
export const ERR_NO_ROOM = 1;
/** Unknown opcode or op running past progLen. */
export const ERR_BAD_PROGRAM = 2;
/** Frame shorter than an Ethernet header. */
export const ERR_SHORT_FRAME = 3;

function isTagged(f: Uint8Array, off: number, len: number): boolean {
  if (len < 18) return false;
  const t = (f[off + 12] << 8) | f[off + 13];
  return t === 0x8100 || t === 0x88a8;
}

/** Run a program; see the module comment for the contract. */
export function executeActions(
  prog: Int32Array, pc: number, progLen: number,
  buf: Uint8Array, st: Int32Array, outPorts: Int32Array,
): number {
  let off = st[ST_OFF];
  let len = st[ST_LEN];
  st[ST_ERR] = ERR_NONE;
  while (pc < progLen) {
    const op = prog[pc];
    if (op < 0 || op > OP_MAX || pc + OP_WORDS_I32[op] > progLen) {
      st[ST_ERR] = ERR_BAD_PROGRAM;
      return EXEC_ERROR;
    }
    if (OP_MODIFIES[op] === 1 && st[ST_NOUT] > 0) {
      st[ST_OFF] = off; st[ST_LEN] = len;
      return pc;
    }
    switch (op) {
      case OP_DROP:
        st[ST_OFF] = off; st[ST_LEN] = len;
        return EXEC_DONE;
      case OP_OUTPUT: {
        const n = st[ST_NOUT];
        if (n >= outPorts.length) { st[ST_OFF] = off; st[ST_LEN] = len; return pc; }
        outPorts[n] = prog[pc + 1];
        st[ST_NOUT] = n + 1;
        break;
      }
      case OP_SET_DL_SRC:
      case OP_SET_DL_DST: {
        if (len < 14) { st[ST_ERR] = ERR_SHORT_FRAME; st[ST_OFF] = off; st[ST_LEN] = len; return EXEC_ERROR; }
        const p = off + (op === OP_SET_DL_SRC ? 6 : 0);
        const hi = prog[pc + 1];
        const lo = prog[pc + 2];
        buf[p] = hi >>> 8; buf[p + 1] = hi;
        buf[p + 2] = lo >>> 24; buf[p + 3] = lo >>> 16; buf[p + 4] = lo >>> 8; buf[p + 5] = lo;
        break;
      }
      case OP_PUSH_VLAN: {
        if (len < 14) { st[ST_ERR] = ERR_SHORT_FRAME; st[ST_OFF] = off; st[ST_LEN] = len; return EXEC_ERROR; }
        if (off >= 4) {
          buf.copyWithin(off - 4, off, off + 12);
          off -= 4;
        } else if (off + len + 4 <= buf.length) {
          buf.copyWithin(off + 16, off + 12, off + len);
        } else {
          st[ST_ERR] = ERR_NO_ROOM; st[ST_OFF] = off; st[ST_LEN] = len; return EXEC_ERROR;
        }
        len += 4;
        const tpid = prog[pc + 1];
        const tci = prog[pc + 2];
        buf[off + 12] = tpid >>> 8; buf[off + 13] = tpid;
        buf[off + 14] = tci >>> 8; buf[off + 15] = tci;
        break;
      }
      case OP_SET_VLAN_VID:
        if (isTagged(buf, off, len)) {
          const vid = prog[pc + 1] & 0xfff;
          buf[off + 14] = (buf[off + 14] & 0xf0) | (vid >>> 8);
          buf[off + 15] = vid;
        }
        break;
      case OP_SET_VLAN_PCP:
        if (isTagged(buf, off, len)) {
          buf[off + 14] = (buf[off + 14] & 0x1f) | ((prog[pc + 1] & 7) << 5);
        }
        break;
      case OP_POP_VLAN:
        if (isTagged(buf, off, len)) {
          buf.copyWithin(off + 4, off, off + 12);
          off += 4;
          len -= 4;
        }
        break;
      case OP_SET_TUNNEL:
        st[ST_TUN_SET] = 1;
        st[ST_TUN_ID] = prog[pc + 1];
        break;
      case OP_SET_NW_SRC:
      case OP_SET_NW_DST:
        setIpv4Addr(buf, off, len, op === OP_SET_NW_SRC ? 12 : 16, prog[pc + 1] >>> 0);
        break;
      case OP_SET_TP_SRC:
      case OP_SET_TP_DST:
        setL4Port(buf, off, len, op === OP_SET_TP_SRC ? 0 : 2, prog[pc + 1] & 0xffff);
        break;
    }
    pc += OP_WORDS_I32[op];
  }
  st[ST_OFF] = off; st[ST_LEN] = len;
  return EXEC_DONE;
}

/** Offset of the L3 header after up to two VLAN tags, or -1; l3Type gets the ethertype. */
function l3Start(f: Uint8Array, off: number, len: number): number {
  let p = off + 12;
  for (let i = 0; i < 3; i++) {
    if (p + 2 > off + len) return -1;
    const t = (f[p] << 8) | f[p + 1];
    if (t === 0x8100 || t === 0x88a8) { p += 4; continue; }
    l3TypeScratch = t;
    return p + 2;
  }
  return -1;
}
let l3TypeScratch = 0;

/** One's complement checksum `sum` after a 16-bit word changed from `from` to `to` (RFC 1624 eq. 3). */
function csumUpdate16(sum: number, from: number, to: number): number {
  let s = (~sum & 0xffff) + (~from & 0xffff) + (to & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

function rd16(f: Uint8Array, p: number): number { return (f[p] << 8) | f[p + 1]; }
function wr16(f: Uint8Array, p: number, v: number): void { f[p] = v >>> 8; f[p + 1] = v; }

/** Where the TCP/UDP checksum of an L4 header at l4 lives (offset in the header), or -1; UDP with checksum 0 gives -1. */
function l4CsumAt(f: Uint8Array, proto: number, l4: number, end: number): number {
  if (proto === 6) return l4 + 18 <= end ? l4 + 16 : -1;
  if (proto === 17) return l4 + 8 <= end && rd16(f, l4 + 6) !== 0 ? l4 + 6 : -1;
  return -1;
}

function setIpv4Addr(f: Uint8Array, off: number, len: number, at: number, addr: number): void {
  const ip = l3Start(f, off, len);
  const end = off + len;
  if (ip < 0 || l3TypeScratch !== 0x0800 || ip + 20 > end || (f[ip] >>> 4) !== 4) return;
  const ihl = (f[ip] & 15) * 4;
  if (ihl < 20 || ip + ihl > end) return;
  const p = ip + at;
  const oldHi = rd16(f, p);
  const oldLo = rd16(f, p + 2);
  const newHi = addr >>> 16;
  const newLo = addr & 0xffff;
  let c = csumUpdate16(rd16(f, ip + 10), oldHi, newHi);
  c = csumUpdate16(c, oldLo, newLo);
  wr16(f, ip + 10, c);
  // the pseudo-header of TCP/UDP includes the addresses (first fragment only carries the L4 header)
  if ((rd16(f, ip + 6) & 0x1fff) === 0) {
    const cs = l4CsumAt(f, f[ip + 9], ip + ihl, end);
    if (cs >= 0) {
      let l = csumUpdate16(rd16(f, cs), oldHi, newHi);
      l = csumUpdate16(l, oldLo, newLo);
      if (l === 0 && f[ip + 9] === 17) l = 0xffff;
      wr16(f, cs, l);
    }
  }
  wr16(f, p, newHi);
  wr16(f, p + 2, newLo);
}

function setL4Port(f: Uint8Array, off: number, len: number, at: number, port: number): void {
  const ip = l3Start(f, off, len);
  const end = off + len;
  if (ip < 0) return;
  let proto: number;
  let l4: number;
  if (l3TypeScratch === 0x0800) {
    if (ip + 20 > end || (f[ip] >>> 4) !== 4 || (rd16(f, ip + 6) & 0x1fff) !== 0) return;
    proto = f[ip + 9];
    l4 = ip + (f[ip] & 15) * 4;
  } else if (l3TypeScratch === 0x86dd) {
    if (ip + 40 > end) return;
    proto = f[ip + 6];
    l4 = ip + 40;
  } else {
    return;
  }
  if ((proto !== 6 && proto !== 17) || l4 + 4 > end) return;
  const old = rd16(f, l4 + at);
  const cs = l4CsumAt(f, proto, l4, end);
  if (cs >= 0) {
    let l = csumUpdate16(rd16(f, cs), old, port);
    if (l === 0 && proto === 17) l = 0xffff;
    wr16(f, cs, l);
  }
  wr16(f, l4 + at, port);
}

/** Builds a program (control path). */
export class ProgramBuilder {
  /** Words so far (a growable typed array, reused across reset(): no per-program array growth). */
  private words = new Int32Array(16);
  private n = 0;

  private push1(a: number): void {
    if (this.n + 1 > this.words.length) this.grow();
    this.words[this.n++] = a;
  }
  private push2(a: number, b: number): void {
    if (this.n + 2 > this.words.length) this.grow();
    this.words[this.n++] = a;
    this.words[this.n++] = b;
  }
  private push3(a: number, b: number, c: number): void {
    if (this.n + 3 > this.words.length) this.grow();
    this.words[this.n++] = a;
    this.words[this.n++] = b;
    this.words[this.n++] = c;
  }
  private grow(): void {
    const w = new Int32Array(this.words.length * 2);
    w.set(this.words);
    this.words = w;
  }

  output(port: number): this { this.push2(OP_OUTPUT, port | 0); return this; }
  setDlSrc(mac: number): this { this.push3(OP_SET_DL_SRC, Math.floor(mac / 2 ** 32) & 0xffff, (mac % 2 ** 32) | 0); return this; }
  setDlDst(mac: number): this { this.push3(OP_SET_DL_DST, Math.floor(mac / 2 ** 32) & 0xffff, (mac % 2 ** 32) | 0); return this; }
  /** tci as on the wire (pcp << 13 | dei << 12 | vid). */
  pushVlan(tpid: number, tci: number): this { this.push3(OP_PUSH_VLAN, tpid & 0xffff, tci & 0xffff); return this; }
  setVlanVid(vid: number): this { this.push2(OP_SET_VLAN_VID, vid & 0xfff); return this; }
  setVlanPcp(pcp: number): this { this.push2(OP_SET_VLAN_PCP, pcp & 7); return this; }
  popVlan(): this { this.push1(OP_POP_VLAN); return this; }
  setTunnel(id: number): this { this.push2(OP_SET_TUNNEL, id | 0); return this; }
  setNwSrc(addr: number): this { this.push2(OP_SET_NW_SRC, addr | 0); return this; }
  setNwDst(addr: number): this { this.push2(OP_SET_NW_DST, addr | 0); return this; }
  setTpSrc(port: number): this { this.push2(OP_SET_TP_SRC, port & 0xffff); return this; }
  setTpDst(port: number): this { this.push2(OP_SET_TP_DST, port & 0xffff); return this; }
  drop(): this { this.push1(OP_DROP); return this; }
  get length(): number { return this.n; }
  /** A copy of the program. */
  build(): Int32Array { return this.words.slice(0, this.n); }
  /** The program without copying: valid until the next change or reset(). */
  view(): Int32Array { return this.words.subarray(0, this.n); }
  /** Start a new program, keeping the storage. */
  reset(): this { this.n = 0; return this; }
}

/**
 * The length of the program without the ops after its last OUTPUT (and after word `keep`): they
 * change a frame no port receives, and would only cost the executor a copy. No allocation.
 */
export function liveLength(prog: Int32Array, keep = 0): number {
  let pc = 0;
  let end = 0;
  while (pc < prog.length) {
    const op = prog[pc];
    if (op < 0 || op > OP_MAX) return prog.length;
    pc += OP_WORDS_I32[op];
    if (op === OP_OUTPUT) end = pc;
  }
  return Math.min(prog.length, Math.max(end, keep));
}

/** Whether a program is well formed (known opcodes, complete args). */
export function validateProgram(prog: Int32Array, progLen = prog.length): boolean {
  let pc = 0;
  while (pc < progLen) {
    const op = prog[pc];
    if (op < 0 || op > OP_MAX || pc + OP_WORDS_I32[op] > progLen) return false;
    pc += OP_WORDS_I32[op];
  }
  return true;
}


/**
 * Text form in the style of ovs-dpctl dump-flows, e.g.
 * "set(eth(src=00:11:22:33:44:55)),push_vlan(tpid=0x8100,vid=5,pcp=0),2,3";
 * an empty program prints "drop".
 */
export function formatProgram(prog: Int32Array, progLen = prog.length): string {
  const out: string[] = [];
  let pc = 0;
  while (pc < progLen) {
    const op = prog[pc];
    if (op < 0 || op > OP_MAX || pc + OP_WORDS_I32[op] > progLen) { out.push(`<bad op ${op}>`); break; }
    switch (op) {
      case OP_DROP: out.push('drop'); break;
      case OP_OUTPUT: out.push(String(prog[pc + 1])); break;
      case OP_SET_DL_SRC: out.push(`set(eth(src=${formatMacWords(prog[pc + 1], prog[pc + 2])}))`); break;
      case OP_SET_DL_DST: out.push(`set(eth(dst=${formatMacWords(prog[pc + 1], prog[pc + 2])}))`); break;
      case OP_PUSH_VLAN: {
        const tci = prog[pc + 2];
        const tpid = prog[pc + 1];
        out.push(`push_vlan(${tpid !== 0x8100 ? `tpid=0x${tpid.toString(16)},` : ''}vid=${tci & 0xfff},pcp=${(tci >>> 13) & 7})`);
        break;
      }
      case OP_SET_VLAN_VID: out.push(`set_vlan_vid(${prog[pc + 1]})`); break;
      case OP_SET_VLAN_PCP: out.push(`set_vlan_pcp(${prog[pc + 1]})`); break;
      case OP_POP_VLAN: out.push('pop_vlan'); break;
      case OP_SET_TUNNEL: out.push(`set(tunnel(tun_id=0x${(prog[pc + 1] >>> 0).toString(16)}))`); break;
      case OP_SET_NW_SRC: case OP_SET_NW_DST: {
        const a = prog[pc + 1] >>> 0;
        out.push(`set(ipv4(${op === OP_SET_NW_SRC ? 'src' : 'dst'}=${[a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.')}))`);
        break;
      }
      case OP_SET_TP_SRC: out.push(`set(l4(src=${prog[pc + 1]}))`); break;
      case OP_SET_TP_DST: out.push(`set(l4(dst=${prog[pc + 1]}))`); break;
    }
    pc += OP_WORDS_I32[op];
  }
  return out.length === 0 ? 'drop' : out.join(',');
}
