/**
 * OpenFlow connections: framing of messages on a stream socket, the HELLO
 * version negotiation (OpenFlow 1.3 only), ECHO replies and the keepalive
 * (an ECHO_REQUEST after `probeMs` without traffic; no answer within another
 * `probeMs` closes the connection, as OVS's inactivity probe), the passive
 * listeners (unix socket RUNDIR/BRIDGE.mgmt, ptcp:) and the active
 * controller connections (tcp:HOST:PORT, unix:PATH) that reconnect with
 * exponential backoff (1 s doubling up to 8 s, as OVS).
 */
import * as net from 'node:net';
import * as fs from 'node:fs';
import { EventEmitter } from 'node:events';
import {
  OFP_HEADER_LEN, OFP_VERSION, T, ET, EC, readHeader, encodeHello, decodeHello, encodeError, message, type OfHeader,
} from './wire.js';

export interface OfConnEvents {
  /** A message after the handshake (ECHO handled here). */
  message: [msg: Buffer, hdr: OfHeader];
  /** HELLO negotiated. */
  ready: [];
  close: [why: string];
}

let nextConnId = 1;

export class OfConnection extends EventEmitter<OfConnEvents> {
  readonly id = nextConnId++;
  /** Negotiated (always 0x04 once ready). */
  version = 0;
  ready = false;
  closed = false;
  private buf: Buffer = Buffer.alloc(0);
  private xid = 0x10000000;
  private lastRx = Date.now();
  private echoSent = 0;
  private probe: NodeJS.Timeout | null = null;
  /** Messages received and sent (statistics for `tsvs show`-like views). */
  rxMessages = 0;
  txMessages = 0;

  constructor(readonly sock: net.Socket, readonly peer: string, probeMs = 0) {
    super();
    sock.setNoDelay?.(true);
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (e) => this.close(e.message));
    sock.on('close', () => this.close('closed by peer'));
    this.sendRaw(encodeHello(this.nextXid()));
    if (probeMs > 0) {
      this.probe = setInterval(() => this.tick(probeMs), Math.max(100, probeMs / 2));
      this.probe.unref();
    }
  }

  nextXid(): number {
    this.xid = (this.xid + 1) >>> 0;
    return this.xid;
  }

  private tick(probeMs: number): void {
    const now = Date.now();
    if (this.echoSent > 0 && now - this.echoSent > probeMs) {
      this.close(`no answer to an echo request within ${probeMs} ms`);
      return;
    }
    if (this.echoSent === 0 && now - this.lastRx > probeMs && this.ready) {
      this.echoSent = now;
      this.send(message(T.ECHO_REQUEST, this.nextXid()));
    }
  }

  private onData(d: Buffer): void {
    this.lastRx = Date.now();
    this.echoSent = 0;
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (this.buf.length >= OFP_HEADER_LEN && !this.closed) {
      const len = this.buf.readUInt16BE(2);
      if (len < OFP_HEADER_LEN) {
        this.close(`message length ${len} below the header size`);
        return;
      }
      if (this.buf.length < len) break;
      const msg = this.buf.subarray(0, len);
      this.buf = this.buf.subarray(len);
      this.rxMessages++;
      this.onMessage(Buffer.from(msg));
    }
  }

  private onMessage(msg: Buffer): void {
    const h = readHeader(msg);
    if (!this.ready) {
      if (h.type !== T.HELLO) {
        this.sendRaw(encodeError(h.xid, ET.HELLO_FAILED, EC.HELLO_INCOMPATIBLE, msg));
        this.close(`first message is type ${h.type}, not HELLO`);
        return;
      }
      const hello = decodeHello(msg);
      if (!hello.versions.includes(OFP_VERSION)) {
        const text = Buffer.from(`we support version 0x04 (OpenFlow 1.3), you support ${hello.versions.map((v) => `0x0${v}`).join(', ')}`);
        this.sendRaw(encodeError(h.xid, ET.HELLO_FAILED, EC.HELLO_INCOMPATIBLE, text));
        this.close('no common OpenFlow version (we speak 1.3 only)');
        return;
      }
      this.version = OFP_VERSION;
      this.ready = true;
      this.emit('ready');
      return;
    }
    if (h.version !== OFP_VERSION) {
      this.send(encodeError(h.xid, ET.BAD_REQUEST, EC.BR_BAD_VERSION, msg));
      return;
    }
    switch (h.type) {
      case T.ECHO_REQUEST:
        this.send(message(T.ECHO_REPLY, h.xid, (w) => w.bytes(msg.subarray(OFP_HEADER_LEN))));
        return;
      case T.ECHO_REPLY:
        return;
      case T.HELLO:
        return;
      default:
        this.emit('message', msg, h);
    }
  }

  private sendRaw(b: Buffer): void {
    if (this.closed) return;
    this.txMessages++;
    this.sock.write(b);
  }

  send(b: Buffer): void {
    this.sendRaw(b);
  }

  close(why = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    if (this.probe) clearInterval(this.probe);
    this.sock.destroy();
    this.emit('close', why);
  }
}

/** A parsed controller target. */
export type Target =
  | { kind: 'tcp'; host: string; port: number; text: string }
  | { kind: 'unix'; path: string; text: string }
  | { kind: 'ptcp'; host: string; port: number; text: string }
  | { kind: 'punix'; path: string; text: string };

export const DEFAULT_OF_PORT = 6653;

/** Parse an OVS controller target: tcp:HOST[:PORT], unix:PATH, ptcp:[PORT][:HOST], punix:PATH. */
export function parseTarget(text: string): Target {
  const m = /^(tcp|unix|ptcp|punix):(.*)$/.exec(text);
  if (!m) throw new Error(`controller target '${text}': expected tcp:HOST[:PORT], unix:PATH, ptcp:[PORT][:HOST] or punix:PATH`);
  const [, kind, rest] = m;
  const portOf = (s: string | undefined): number => {
    if (s === undefined || s === '') return DEFAULT_OF_PORT;
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`controller target '${text}': bad port '${s}'`);
    return n;
  };
  switch (kind) {
    case 'tcp': {
      const mm = /^(\[[^\]]+\]|[^:]+)(?::(\d*))?$/.exec(rest);
      if (!mm) throw new Error(`controller target '${text}': expected tcp:HOST[:PORT]`);
      return { kind: 'tcp', host: mm[1].replace(/^\[|\]$/g, ''), port: portOf(mm[2]), text };
    }
    case 'ptcp': {
      const [p, host] = rest.split(':');
      return { kind: 'ptcp', host: host || '0.0.0.0', port: portOf(p), text };
    }
    case 'unix':
      if (rest === '') throw new Error(`controller target '${text}': empty path`);
      return { kind: 'unix', path: rest, text };
    default:
      if (rest === '') throw new Error(`controller target '${text}': empty path`);
      return { kind: 'punix', path: rest, text };
  }
}

export const MIN_BACKOFF_MS = 1000;
export const MAX_BACKOFF_MS = 8000;

/** An active connection to a controller, re-established with backoff while it is wanted. */
export class ActiveController {
  conn: OfConnection | null = null;
  /** Human-readable state: connecting, connected, backoff (last error). */
  state = 'connecting';
  lastError = '';
  connects = 0;
  private backoff = MIN_BACKOFF_MS;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    readonly target: Target & { kind: 'tcp' | 'unix' },
    private readonly probeMs: number,
    private readonly onConn: (c: OfConnection) => void,
  ) {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    this.state = 'connecting';
    const t = this.target;
    const sock = t.kind === 'tcp' ? net.connect({ host: t.host, port: t.port }) : net.connect(t.path);
    let up = false;
    sock.once('connect', () => {
      up = true;
      this.connects++;
      this.backoff = MIN_BACKOFF_MS;
      this.state = 'connected';
      const c = new OfConnection(sock, t.text, this.probeMs);
      this.conn = c;
      c.on('close', (why) => {
        this.conn = null;
        this.lastError = why;
        this.retry();
      });
      this.onConn(c);
    });
    sock.once('error', (e) => {
      if (up) return;
      this.lastError = e.message;
      sock.destroy();
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    this.state = `backoff (${this.lastError})`;
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, wait);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.conn?.close('controller removed');
  }
}

/** A passive listener (management socket, punix:, ptcp:). */
export class PassiveListener {
  private readonly server: net.Server;
  readonly conns = new Set<OfConnection>();

  private constructor(readonly target: Target & { kind: 'ptcp' | 'punix' }, server: net.Server) {
    this.server = server;
  }

  static async listen(target: Target & { kind: 'ptcp' | 'punix' }, onConn: (c: OfConnection) => void, probeMs = 0): Promise<PassiveListener> {
    const server = net.createServer();
    const l = new PassiveListener(target, server);
    server.on('connection', (sock) => {
      const c = new OfConnection(sock, target.kind === 'punix' ? `${target.path}` : `${sock.remoteAddress}:${sock.remotePort}`, probeMs);
      l.conns.add(c);
      c.on('close', () => l.conns.delete(c));
      onConn(c);
    });
    if (target.kind === 'punix') {
      try {
        fs.unlinkSync(target.path);
      } catch {
        /* not there */
      }
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (target.kind === 'punix') server.listen(target.path, () => resolve());
      else server.listen(target.port, target.host, () => resolve());
    });
    if (target.kind === 'punix') fs.chmodSync(target.path, 0o600);
    return l;
  }

  get address(): string {
    const a = this.server.address();
    return typeof a === 'string' ? a : a ? `${a.address}:${a.port}` : '';
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.close('listener closed');
    await new Promise<void>((r) => this.server.close(() => r()));
    if (this.target.kind === 'punix') {
      try {
        fs.unlinkSync(this.target.path);
      } catch {
        /* gone */
      }
    }
  }
}
