/**
 * A minimal OpenFlow 1.3 client for tests: connects to a switch's
 * management socket (tsvs RUNDIR/BR.mgmt or OVS's), does the HELLO, and
 * sends raw messages (SET_CONFIG, SET_ASYNC, BARRIER) and collects what the
 * switch sends (PACKET_IN decoded: reason, table, cookie, in_port, frame).
 * The same client runs against tsvs and real OVS, so what it sees can be
 * compared.
 */
import * as net from 'node:net';
import { waitFor } from './wait.js';

export interface PacketIn { reason: number; table: number; cookie: bigint; inPort: number; totalLen: number; frame: string }

const T = { HELLO: 0, ERROR: 1, ECHO_REQUEST: 2, ECHO_REPLY: 3, SET_CONFIG: 9, PACKET_IN: 10, BARRIER_REQUEST: 20, BARRIER_REPLY: 21, SET_ASYNC: 28 };

function msg(type: number, xid: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt8(4, 0);
  h.writeUInt8(type, 1);
  h.writeUInt16BE(8 + body.length, 2);
  h.writeUInt32BE(xid, 4);
  return Buffer.concat([h, body]);
}

export class OfTestClient {
  readonly packetIns: PacketIn[] = [];
  readonly errors: { type: number; code: number }[] = [];
  private buf = Buffer.alloc(0);
  private xid = 1;
  private barriers = new Set<number>();
  private helloSeen = false;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => undefined);
  }

  /** Connect to a unix socket path (unix:PATH accepted) and finish the HELLO exchange. */
  static async connect(target: string): Promise<OfTestClient> {
    const sock = net.connect(target.replace(/^unix:/, ''));
    await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const c = new OfTestClient(sock);
    const bitmap = Buffer.alloc(8);
    bitmap.writeUInt16BE(1, 0);
    bitmap.writeUInt16BE(8, 2);
    bitmap.writeUInt32BE(1 << 4, 4);
    sock.write(msg(T.HELLO, c.xid++, bitmap));
    await waitFor(() => c.helloSeen, { what: `HELLO from ${target}` });
    return c;
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 8) {
      const len = this.buf.readUInt16BE(2);
      if (this.buf.length < len) break;
      const m = this.buf.subarray(0, len);
      this.buf = this.buf.subarray(len);
      const type = m[1];
      const xid = m.readUInt32BE(4);
      if (type === T.HELLO) this.helloSeen = true;
      else if (type === T.ECHO_REQUEST) this.sock.write(msg(T.ECHO_REPLY, xid, m.subarray(8)));
      else if (type === T.BARRIER_REPLY) this.barriers.delete(xid);
      else if (type === T.ERROR) this.errors.push({ type: m.readUInt16BE(8), code: m.readUInt16BE(10) });
      else if (type === T.PACKET_IN) this.packetIns.push(decodePacketIn(m));
    }
  }

  /** SET_CONFIG (flags 0) with this miss_send_len. */
  setMissSendLen(n: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt16BE(n, 2);
    this.sock.write(msg(T.SET_CONFIG, this.xid++, b));
  }

  /** SET_ASYNC: packet-in reason masks (master, slave); port-status and flow-removed masks left at the defaults. */
  setAsync(packetInMaster: number, packetInSlave = 0): void {
    const b = Buffer.alloc(24);
    b.writeUInt32BE(packetInMaster, 0);
    b.writeUInt32BE(packetInSlave, 4);
    b.writeUInt32BE(0x7, 8);
    b.writeUInt32BE(0x7, 12);
    b.writeUInt32BE(0xf, 16);
    b.writeUInt32BE(0, 20);
    this.sock.write(msg(T.SET_ASYNC, this.xid++, b));
  }

  /** BARRIER_REQUEST, resolved by its reply. */
  async barrier(): Promise<void> {
    const x = this.xid++;
    this.barriers.add(x);
    this.sock.write(msg(T.BARRIER_REQUEST, x));
    await waitFor(() => !this.barriers.has(x), { what: 'BARRIER_REPLY' });
  }

  close(): void {
    this.sock.destroy();
  }
}

function decodePacketIn(m: Buffer): PacketIn {
  const totalLen = m.readUInt16BE(12);
  const reason = m[14];
  const table = m[15];
  const cookie = m.readBigUInt64BE(16);
  const mlen = m.readUInt16BE(26);
  let inPort = -1;
  for (let p = 28; p + 4 <= 24 + mlen; ) {
    const hdr = m.readUInt32BE(p);
    const plen = hdr & 0xff;
    if (hdr >>> 16 === 0x8000 && ((hdr >>> 9) & 0x7f) === 0) inPort = m.readUInt32BE(p + 4);
    p += 4 + plen;
  }
  const dataAt = 24 + ((mlen + 7) & ~7) + 2;
  return { reason, table, cookie, inPort, totalLen, frame: m.subarray(dataAt).toString('hex') };
}
