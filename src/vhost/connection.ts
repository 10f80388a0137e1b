/**
 * vhost-user message framing over a non-blocking unix stream socket.
 *
 * Reads header then payload (either may be split over several reads), with
 * the fds that came with the message's bytes; checks framing (version, size
 * limit) and then asks a validator (the request table, see messages.ts)
 * BEFORE the message is dispatched. Fds a handler does not take (by setting
 * its slot to -1 with {@link takeFd}) are closed after dispatch, on every path
 * including errors and disconnects.
 *
 * Handlers may be asynchronous: while one runs, reading pauses, so messages
 * are handled strictly in order (a reply may wait for the data path to stop).
 */
import { UnixSocket } from '../sys/socket.js';
import { closeQuiet, SysError } from '../sys/libc.js';
import { watchReadable, type FdWatch } from '../sys/poll.js';
import {
  HDR_SIZE,
  MAX_PAYLOAD,
  MAX_MSG_FDS,
  VERSION_MASK,
  VERSION,
  FLAG_REPLY,
  VhostProtocolError,
  encodeMessage,
  type MsgHeader,
} from './messages.js';

/** Minimal logger: level and message. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export interface Logger {
  log(level: LogLevel, msg: string): void;
}

const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * A logger writing text lines to stderr at `min` level and above (default warn): for library
 * users and standalone tools (tsvs testpmd, tests). The daemon never lets a port fall back to
 * it: every port gets a logger that feeds the daemon's pino stream (in a PMD thread, through
 * { t: 'log' } messages to the main thread, see src/dp/pmd-thread.ts).
 */
export function stderrLogger(min: LogLevel = 'warn', prefix = 'vhost'): Logger {
  return {
    log(level, msg) {
      if (LEVELS[level] >= LEVELS[min]) process.stderr.write(`[${prefix}] ${level}: ${msg}\n`);
    },
  };
}

export const defaultLogger: Logger = stderrLogger();

/** A received message. `fds` slots set to -1 were taken by the handler. */
export interface VhostMessage {
  hdr: MsgHeader;
  payload: Uint8Array;
  fds: number[];
}

/** Take ownership of msg.fds[i] (the connection will not close it). */
export function takeFd(msg: VhostMessage, i: number): number {
  const fd = msg.fds[i];
  msg.fds[i] = -1;
  return fd;
}

export interface ConnectionHandlers {
  /** Throw VhostProtocolError to refuse the message; called before onMessage. */
  validate(hdr: MsgHeader, payload: Uint8Array, nfds: number): void;
  /** A valid message. May return a promise: reading pauses until it settles. */
  onMessage(msg: VhostMessage): void | Promise<void>;
  /**
   * An invalid (but correctly framed) message. Return true to keep the
   * connection, false to close it. Its fds are closed afterwards.
   */
  onInvalid(hdr: MsgHeader, err: VhostProtocolError): boolean;
  /** The connection is closed (err is null for an orderly EOF or a local close). */
  onClose(err: VhostProtocolError | null): void;
}

export interface ConnectionOptions {
  /** Accept headers with the REPLY flag (the frontend reading replies). Default false. */
  acceptReplies?: boolean;
  /**
   * A message whose first byte arrived must be complete within this many ms,
   * or the connection is closed ('message-timeout'): a peer that sends part of
   * a header and stops must not hold the port. Default 10000; 0 disables.
   */
  messageTimeoutMs?: number;
}

/** Default for {@link ConnectionOptions.messageTimeoutMs}. */
export const DEFAULT_MESSAGE_TIMEOUT_MS = 10000;

export class VhostConnection {
  readonly sock: UnixSocket;
  private readonly h: ConnectionHandlers;
  private watch: FdWatch | null = null;
  private readonly hdrBuf = new Uint8Array(HDR_SIZE);
  private hdrGot = 0;
  private hdr: MsgHeader | null = null;
  private payload: Uint8Array = new Uint8Array(0);
  private payloadGot = 0;
  private fds: number[] = [];
  private busy = false;
  private closed = false;
  private readonly acceptReplies: boolean;
  private readonly messageTimeoutMs: number;
  private messageTimer: NodeJS.Timeout | null = null;

  constructor(sock: UnixSocket, handlers: ConnectionHandlers, opts: ConnectionOptions = {}) {
    this.sock = sock;
    this.h = handlers;
    this.acceptReplies = opts.acceptReplies ?? false;
    this.messageTimeoutMs = opts.messageTimeoutMs ?? DEFAULT_MESSAGE_TIMEOUT_MS;
  }

  /** Arm the message timer at a message's first byte (no-op if armed or disabled). */
  private armMessageTimer(): void {
    if (this.messageTimer !== null || this.messageTimeoutMs <= 0 || this.closed) return;
    const t0 = Date.now();
    this.messageTimer = setTimeout(() => {
      this.messageTimer = null;
      if (this.closed) return;
      const got = this.hdr === null ? `${this.hdrGot} of ${HDR_SIZE} header bytes` : `${this.payloadGot} of ${this.payload.length} payload bytes`;
      this.close(new VhostProtocolError('message-timeout', `incomplete message after ${Date.now() - t0} ms (${got})`));
    }, this.messageTimeoutMs);
    this.messageTimer.unref?.();
  }

  private clearMessageTimer(): void {
    if (this.messageTimer !== null) clearTimeout(this.messageTimer);
    this.messageTimer = null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Start reading on the event loop. */
  start(): void {
    if (this.closed || this.watch) return;
    this.watch = watchReadable(this.sock.fd, () => this.pump());
    // Data may already be waiting.
    queueMicrotask(() => this.pump());
  }

  /** Send one message (header built here). Throws SysError if the peer is gone. */
  send(request: number, flags: number, payload?: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) throw new VhostProtocolError('io', 'send on a closed connection', request);
    this.sock.sendAll(encodeMessage(request, flags, payload), fds);
  }

  /** Close the socket and every fd not yet handed out. Idempotent. */
  close(err: VhostProtocolError | null = null): void {
    if (this.closed) return;
    this.closed = true;
    this.clearMessageTimer();
    this.watch?.close();
    this.watch = null;
    this.dropFds();
    this.sock.close();
    this.h.onClose(err);
  }

  private dropFds(): void {
    for (const fd of this.fds) closeQuiet(fd);
    this.fds = [];
  }

  /**
   * A message carries at most MAX_MSG_FDS fds in all, however its bytes are
   * split over reads (a frontend sending one byte per sendmsg, each with 8
   * fds, would otherwise make us hold fds without bound until the message
   * completes). Past the cap the connection is dropped; close() closes
   * every fd received for the message. A connection holds no other received
   * fds (handlers take theirs into the session, whose slots are bounded).
   */
  private capFds(): void {
    if (this.fds.length <= MAX_MSG_FDS) return;
    const n = this.fds.length;
    throw new VhostProtocolError(
      'too-many-fds',
      `${n} fds received for one message (${this.hdrGot + this.payloadGot} bytes so far, sent over several writes); the limit is ${MAX_MSG_FDS}`,
    );
  }

  private pump(): void {
    if (this.closed || this.busy) return;
    try {
      for (;;) {
        if (this.closed || this.busy) return;
        if (this.hdr === null) {
          const n = this.sock.recv(this.hdrBuf.subarray(this.hdrGot), this.fds);
          if (this.sock.lastTruncated) throw new VhostProtocolError('bad-fds', `more than ${MAX_MSG_FDS} fds on one message`);
          this.capFds();
          if (n < 0) return;
          if (n === 0) {
            if (this.hdrGot === 0 && this.fds.length === 0) return this.close(null);
            throw new VhostProtocolError('short-header', `EOF after ${this.hdrGot} header bytes`);
          }
          this.hdrGot += n;
          this.armMessageTimer();
          if (this.hdrGot < HDR_SIZE) continue;
          const dv = new DataView(this.hdrBuf.buffer);
          const hdr = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
          if ((hdr.flags & VERSION_MASK) !== VERSION) {
            throw new VhostProtocolError('bad-version', `flags 0x${hdr.flags.toString(16)} (request ${hdr.request})`);
          }
          if (!this.acceptReplies && hdr.flags & FLAG_REPLY) {
            throw new VhostProtocolError('bad-version', `REPLY flag on request ${hdr.request}`);
          }
          if (hdr.size > MAX_PAYLOAD) throw new VhostProtocolError('too-big', `payload size ${hdr.size} > ${MAX_PAYLOAD} (request ${hdr.request})`);
          this.hdr = hdr;
          this.payload = new Uint8Array(hdr.size);
          this.payloadGot = 0;
        }
        if (this.payloadGot < this.payload.length) {
          const n = this.sock.recv(this.payload.subarray(this.payloadGot), this.fds);
          if (this.sock.lastTruncated) throw new VhostProtocolError('bad-fds', `more than ${MAX_MSG_FDS} fds on one message`);
          this.capFds();
          if (n < 0) return;
          if (n === 0) throw new VhostProtocolError('short-payload', `EOF after ${this.payloadGot}/${this.payload.length} payload bytes`);
          this.payloadGot += n;
          if (this.payloadGot < this.payload.length) continue;
        }
        this.dispatch();
      }
    } catch (e) {
      if (e instanceof VhostProtocolError) return this.close(e);
      if (e instanceof SysError) return this.close(new VhostProtocolError('io', e.message));
      this.close(new VhostProtocolError('io', `internal error: ${(e as Error).message ?? e}`));
    }
  }

  private dispatch(): void {
    this.clearMessageTimer();
    const hdr = this.hdr as MsgHeader;
    const msg: VhostMessage = { hdr, payload: this.payload, fds: this.fds };
    this.hdr = null;
    this.hdrGot = 0;
    this.fds = [];
    this.payload = new Uint8Array(0);
    const release = (): void => {
      for (const fd of msg.fds) if (fd >= 0) closeQuiet(fd);
      msg.fds.length = 0;
    };
    try {
      this.h.validate(hdr, msg.payload, msg.fds.length);
    } catch (e) {
      release();
      if (!(e instanceof VhostProtocolError)) throw e;
      if (!this.h.onInvalid(hdr, e)) throw e;
      return;
    }
    let r: void | Promise<void>;
    try {
      r = this.h.onMessage(msg);
    } catch (e) {
      release();
      throw e;
    }
    if (r && typeof (r as Promise<void>).then === 'function') {
      this.busy = true;
      (r as Promise<void>).then(
        () => {
          release();
          this.busy = false;
          this.pump();
        },
        (e: unknown) => {
          release();
          this.busy = false;
          if (e instanceof VhostProtocolError) this.close(e);
          else this.close(new VhostProtocolError('io', `internal error: ${(e as Error)?.message ?? e}`));
        },
      );
      return;
    }
    release();
  }
}
