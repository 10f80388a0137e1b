/**
 * vhost-user FRONTEND (the driver side, like DPDK's virtio-user): connects to
 * any vhost-user backend (DPDK net_vhost, OVS dpdkvhostuser, our own backend)
 * and hands it our rings and packet memory.
 *
 * Control path only. The device that owns the rings (src/port/virtio-user.ts)
 * plugs in through {@link FrontendDevice}: after feature negotiation it builds
 * fresh rings and says which memory to share; on a disconnect it takes back
 * every buffer. Addresses are our own process's virtual addresses, exactly as
 * DPDK virtio-user does it: in SET_MEM_TABLE gpa = uaddr = our mmap address,
 * and ring/buffer addresses are the same numbers.
 *
 * Negotiation order (DPDK virtio-user's, which every backend accepts):
 *   SET_OWNER, GET_FEATURES, [GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
 *   SET_STATUS ACK|DRIVER], SET_VRING_CALL (all vrings, before SET_FEATURES:
 *   DPDK's backend allocates vrings there), SET_FEATURES,
 *   [SET_STATUS +FEATURES_OK, GET_STATUS], SET_MEM_TABLE, per vring
 *   SET_VRING_NUM/BASE/ADDR/KICK (KICK last), [SET_VRING_ENABLE],
 *   [SET_STATUS DRIVER_OK]. With REPLY_ACK every SET_* asks for an ack.
 *
 * Vring 2q is the RX queue of pair q, 2q+1 its TX queue.
 *
 * Reconnect: when the backend goes away (EOF, error, bad reply, timeout) the
 * device is told (link down, buffers back to the pool); a client retries with
 * exponential backoff, a server keeps listening. Each new connection does the
 * whole negotiation again with fresh rings.
 */
import { UnixSocket } from '../sys/socket.js';
import * as libc from '../sys/libc.js';
import { SysError } from '../sys/libc.js';
import {
  Req,
  ProtoF,
  VERSION,
  FLAG_NEED_REPLY,
  VhostProtocolError,
  decodeU64,
  decodeU64Num,
  encodeU64,
  encodeState,
  encodeAddr,
  encodeMemTable,
  encodeVringFd,
  validateReply,
  featureMask,
  hasFeature,
  requestName,
  MAX_MEM_REGIONS,
  type MsgHeader,
} from './messages.js';
import { VhostConnection, defaultLogger, type Logger, type VhostMessage } from './connection.js';
import { SocketEndpoint } from './endpoint.js';
import {
  F_VERSION_1,
  NET_F_MRG_RXBUF,
  RING_F_EVENT_IDX,
  RING_F_INDIRECT_DESC,
  F_IN_ORDER,
  F_RING_PACKED,
  NET_F_MQ,
  NET_F_MAC,
  NET_F_STATUS,
  VHOST_USER_F_PROTOCOL_FEATURES,
  featureNames,
} from '../virtio/features.js';
import { netHdrLen } from '../virtio/net-header.js';

/** Virtio device status bits (virtio 1.2 §2.1). */
export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_FAILED = 0x80;

/** Protocol features we can use. */
export const FRONTEND_PROTOCOL_FEATURES = featureMask(ProtoF.MQ, ProtoF.REPLY_ACK, ProtoF.STATUS);

/** One memory area shared with the backend (gpa = uaddr = addr, mmap offset 0). */
export interface FrontendRegion {
  fd: number;
  addr: number;
  size: number;
}

/** Ring addresses of one vring (our virtual addresses). Packed: avail = driver area, used = device area. */
export interface VringAddrs {
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

export interface FrontendSetup {
  /** At most 8 regions (SET_MEM_TABLE). */
  regions: FrontendRegion[];
  /** 2 * queuePairs entries. */
  vrings: VringAddrs[];
}

/** What was agreed with the backend on this connection. */
export interface NegotiatedConfig {
  /** Features sent in SET_FEATURES (the driver's view; MAC/STATUS stripped as DPDK does). */
  features: bigint;
  /** What the backend offered. */
  deviceFeatures: bigint;
  protocolFeatures: bigint;
  packed: boolean;
  /** virtio-net header length (10 or 12). */
  hdrLen: number;
  queuePairs: number;
  queueSize: number;
  /** Backend's GET_QUEUE_NUM answer, or 0 when not asked. */
  backendQueues: number;
}

/** The side that owns the rings and buffers (the PMD). */
export interface FrontendDevice {
  /**
   * Build FRESH rings for cfg (all memory zeroed / reset, every buffer the
   * rings held back in the pool) and say what to share. May throw: the
   * connection is then dropped and retried.
   */
  setup(cfg: NegotiatedConfig): FrontendSetup;
  /** Negotiation finished: the backend may use the rings. */
  up(cfg: NegotiatedConfig): void;
  /** The backend is gone (or negotiation failed after setup): take every buffer back. */
  down(reason: string): void;
}

export interface FrontendOptions {
  /** vhost-user socket path. */
  path: string;
  /** Listen at path and let the backend connect (DPDK `server=1`). Default: connect as client. */
  server?: boolean;
  /** Queue pairs wanted (default 1); clamped to what the backend supports. */
  queuePairs?: number;
  /** Ring size (default 256). */
  queueSize?: number;
  /** Ask for VIRTIO_F_RING_PACKED (falls back to split if not offered). */
  packed?: boolean;
  /** Offer VIRTIO_NET_F_MRG_RXBUF (default true). */
  mrgRxbuf?: boolean;
  /** Offer VIRTIO_RING_F_EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** Offer VIRTIO_F_IN_ORDER (default false: the driver queues do not rely on it). */
  inOrder?: boolean;
  /** Offer VIRTIO_RING_F_INDIRECT_DESC (default false: one descriptor per packet already). */
  indirect?: boolean;
  /** Client reconnect backoff, ms (default 50 doubling to 2000). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Give up on a reply after this long and drop the connection (default 5000). */
  replyTimeoutMs?: number;
  logger?: Logger;
}

export type FrontendState = 'idle' | 'connecting' | 'negotiating' | 'up' | 'closed';

interface Pending {
  request: number;
  resolve: (m: VhostMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Thrown inside a negotiation that a newer connection (or close) has superseded. */
class Superseded extends Error {}

export class VhostUserFrontend {
  readonly path: string;
  readonly server: boolean;
  readonly opts: Required<Omit<FrontendOptions, 'logger' | 'server' | 'path'>>;
  private readonly dev: FrontendDevice;
  private readonly log: Logger;

  private _state: FrontendState = 'idle';
  /** Why the last connection ended or failed. */
  lastError = '';
  /** Completed negotiations (1 after the first connect, 2 after one reconnect ...). */
  connects = 0;
  /** Connections lost after negotiation. */
  disconnects = 0;
  negotiated: NegotiatedConfig | null = null;

  /** Listening / connecting and reconnecting (shared with the backend). */
  private readonly endpoint: SocketEndpoint;
  private conn: VhostConnection | null = null;
  private gen = 0;
  private pending: Pending | null = null;
  private kickFds: number[] = [];
  private callFds: number[] = [];
  private deviceSetUp = false;
  private upWaiters: (() => void)[] = [];

  constructor(opts: FrontendOptions, device: FrontendDevice) {
    this.path = opts.path;
    this.server = opts.server ?? false;
    this.opts = {
      queuePairs: opts.queuePairs ?? 1,
      queueSize: opts.queueSize ?? 256,
      packed: opts.packed ?? false,
      mrgRxbuf: opts.mrgRxbuf ?? true,
      eventIdx: opts.eventIdx ?? true,
      inOrder: opts.inOrder ?? false,
      indirect: opts.indirect ?? false,
      reconnectMinMs: opts.reconnectMinMs ?? 50,
      reconnectMaxMs: opts.reconnectMaxMs ?? 2000,
      replyTimeoutMs: opts.replyTimeoutMs ?? 5000,
    };
    if (!Number.isInteger(this.opts.queuePairs) || this.opts.queuePairs < 1 || this.opts.queuePairs > 127) {
      throw new RangeError(`queuePairs ${this.opts.queuePairs} must be in 1..127`);
    }
    const qs = this.opts.queueSize;
    if (!Number.isInteger(qs) || qs < 2 || qs > 32768) throw new RangeError(`queueSize ${qs} must be in 2..32768`);
    if (!this.opts.packed && (qs & (qs - 1)) !== 0) throw new RangeError(`split queueSize ${qs} must be a power of 2`);
    this.dev = device;
    this.log = opts.logger ?? defaultLogger;
    this.endpoint = new SocketEndpoint({
      path: this.path,
      client: !this.server,
      reconnectMinMs: this.opts.reconnectMinMs,
      reconnectMaxMs: this.opts.reconnectMaxMs,
      busy: () => this.conn !== null,
      onSocket: (s) => {
        if (this.conn) {
          this.log.log('warn', `${this.path}: a second backend connected while one is active; refused`);
          s.close();
          return;
        }
        this.attach(s);
      },
      onConnectError: (e) => {
        this.lastError = e.message;
      },
      onAcceptError: (e) => this.log.log('warn', `accept on ${this.path}: ${e.message}`),
    });
  }

  get state(): FrontendState {
    return this._state;
  }

  get isUp(): boolean {
    return this._state === 'up';
  }

  /** Features this frontend is willing to use (before intersecting with the backend's). */
  wantedFeatures(): bigint {
    const o = this.opts;
    let f = F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | NET_F_MAC | NET_F_STATUS;
    if (o.mrgRxbuf) f |= NET_F_MRG_RXBUF;
    if (o.eventIdx) f |= RING_F_EVENT_IDX;
    if (o.inOrder) f |= F_IN_ORDER;
    if (o.indirect) f |= RING_F_INDIRECT_DESC;
    if (o.packed) f |= F_RING_PACKED;
    if (o.queuePairs > 1) f |= NET_F_MQ;
    return f;
  }

  /** Start connecting (client) or listening (server). Throws if the server socket cannot be bound. */
  start(): void {
    if (this._state !== 'idle') return;
    this._state = 'connecting';
    this.endpoint.start();
  }

  /** Resolve when the link is up (rejects after ms). */
  waitUp(ms = 10000): Promise<void> {
    if (this._state === 'up') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.upWaiters = this.upWaiters.filter((w) => w !== done);
        reject(new Error(`vhost-user frontend ${this.path}: not up after ${ms} ms (state ${this._state}${this.lastError ? `, last error: ${this.lastError}` : ''})`));
      }, ms);
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      this.upWaiters.push(done);
    });
  }

  /** Notify the backend that vring `vq` has new buffers. Hot path: no allocation. */
  kick(vq: number): void {
    const fd = this.kickFds[vq];
    if (fd !== undefined && fd >= 0) {
      try {
        libc.eventfdWrite(fd, 1);
      } catch {
        /* counter saturated or fd gone: the disconnect path cleans up */
      }
    }
  }

  /** Stop for good: drop the connection (device told down), stop listening/retrying. */
  close(): void {
    if (this._state === 'closed') return;
    this.teardown('closed by us', false);
    this._state = 'closed';
    this.endpoint.close();
  }

  // ------------------------------------------------------------ connecting

  private attach(sock: UnixSocket): void {
    const gen = ++this.gen;
    this._state = 'negotiating';
    const conn = new VhostConnection(
      sock,
      {
        validate: (hdr, payload, nfds) => this.validate(hdr, payload, nfds),
        onMessage: (m) => this.onReply(m),
        onInvalid: () => false,
        onClose: (err) => {
          if (this.conn === conn) this.teardown(err ? `${err.reason}: ${err.message}` : 'backend closed the connection', true);
        },
      },
      { acceptReplies: true },
    );
    this.conn = conn;
    conn.start();
    this.negotiate(gen).catch((e: unknown) => {
      if (e instanceof Superseded || gen !== this.gen) return;
      const msg = (e as Error)?.message ?? String(e);
      this.log.log('warn', `vhost-user frontend ${this.path}: negotiation failed: ${msg}`);
      this.teardown(`negotiation failed: ${msg}`, true);
    });
  }

  /**
   * Drop the current connection: reject the pending reply, tell the device,
   * close eventfds, then retry (client) or wait for the next accept (server).
   */
  private teardown(reason: string, retry: boolean): void {
    this.gen++;
    this.lastError = reason;
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      clearTimeout(p.timer);
      p.reject(new Superseded(reason));
    }
    const conn = this.conn;
    this.conn = null;
    if (conn) conn.close();
    const wasUp = this._state === 'up';
    if (wasUp) this.disconnects++;
    if (this.deviceSetUp) {
      this.deviceSetUp = false;
      try {
        this.dev.down(reason);
      } catch (e) {
        this.log.log('error', `device down handler: ${(e as Error).message}`);
      }
    }
    for (const fd of this.kickFds) libc.closeQuiet(fd);
    for (const fd of this.callFds) libc.closeQuiet(fd);
    this.kickFds = [];
    this.callFds = [];
    this.negotiated = null;
    if (this._state !== 'closed') this._state = 'connecting';
    if (wasUp) this.log.log('info', `vhost-user frontend ${this.path}: link down (${reason})`);
    if (retry && this._state !== 'closed') this.endpoint.retry();
  }

  // ------------------------------------------------------------ request/reply

  private validate(hdr: MsgHeader, payload: Uint8Array, nfds: number): void {
    const p = this.pending;
    if (!p) throw new VhostProtocolError('bad-reply', `unsolicited message ${requestName(hdr.request)} from the backend`);
    validateReply(p.request, hdr, payload, nfds);
  }

  private onReply(m: VhostMessage): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    clearTimeout(p.timer);
    p.resolve(m);
  }

  private check(gen: number): VhostConnection {
    if (gen !== this.gen || !this.conn) throw new Superseded('connection replaced');
    return this.conn;
  }

  /** Send without waiting. */
  private send(gen: number, request: number, payload?: Uint8Array, fds: number[] = [], flags = VERSION): void {
    const conn = this.check(gen);
    try {
      conn.send(request, flags, payload, fds);
    } catch (e) {
      if (e instanceof SysError) throw new VhostProtocolError('io', `${requestName(request)}: ${e.message}`, request);
      throw e;
    }
  }

  /** Send and wait for the reply to this request. */
  private async ask(gen: number, request: number, payload?: Uint8Array, fds: number[] = [], flags = VERSION): Promise<VhostMessage> {
    this.check(gen);
    const reply = new Promise<VhostMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending?.timer === timer) {
          this.pending = null;
          reject(new VhostProtocolError('io', `no reply within ${this.opts.replyTimeoutMs} ms`, request));
        }
      }, this.opts.replyTimeoutMs);
      this.pending = { request, resolve, reject, timer };
    });
    try {
      this.send(gen, request, payload, fds, flags);
    } catch (e) {
      const p = this.pending;
      if (p) clearTimeout(p.timer);
      this.pending = null;
      reply.catch(() => undefined);
      throw e;
    }
    const m = await reply;
    this.check(gen);
    return m;
  }

  /** A SET_* request: with REPLY_ACK, ask for and check the ack. */
  private async set(gen: number, ack: boolean, request: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    if (!ack) {
      this.send(gen, request, payload, fds);
      return;
    }
    const m = await this.ask(gen, request, payload, fds, VERSION | FLAG_NEED_REPLY);
    const v = decodeU64(m.payload);
    if (v !== 0n) throw new VhostProtocolError('bad-reply', `backend refused (ack ${v})`, request);
  }

  private async getU64(gen: number, request: number): Promise<bigint> {
    const m = await this.ask(gen, request);
    return decodeU64(m.payload);
  }

  // ------------------------------------------------------------ negotiation

  private async negotiate(gen: number): Promise<void> {
    const o = this.opts;
    await this.set(gen, false, Req.SET_OWNER);
    const devFeatures = await this.getU64(gen, Req.GET_FEATURES);

    let proto = 0n;
    if ((devFeatures & VHOST_USER_F_PROTOCOL_FEATURES) !== 0n) {
      const offered = await this.getU64(gen, Req.GET_PROTOCOL_FEATURES);
      proto = offered & FRONTEND_PROTOCOL_FEATURES;
      await this.set(gen, false, Req.SET_PROTOCOL_FEATURES, encodeU64(proto));
    }
    const ack = hasFeature(proto, ProtoF.REPLY_ACK);
    const status = hasFeature(proto, ProtoF.STATUS);

    let features = devFeatures & this.wantedFeatures();
    let pairs = o.queuePairs;
    let backendQueues = 0;
    if (pairs > 1 && (features & NET_F_MQ) === 0n) {
      this.log.log('warn', `${this.path}: backend does not offer MQ; using 1 queue pair instead of ${pairs}`);
      pairs = 1;
    }
    if (pairs > 1 && hasFeature(proto, ProtoF.MQ)) {
      backendQueues = decodeU64Num(await this.ask(gen, Req.GET_QUEUE_NUM).then((m) => m.payload));
      if (backendQueues >= 1 && backendQueues < pairs) {
        this.log.log('warn', `${this.path}: backend supports ${backendQueues} queue pairs; using ${backendQueues} instead of ${pairs}`);
        pairs = backendQueues;
      }
    }
    if (pairs === 1) features &= ~NET_F_MQ;
    if (o.packed && (features & F_RING_PACKED) === 0n) {
      this.log.log('warn', `${this.path}: backend does not offer RING_PACKED; using split rings`);
    }
    const packed = (features & F_RING_PACKED) !== 0n;
    if (!packed && (o.queueSize & (o.queueSize - 1)) !== 0) {
      throw new VhostProtocolError('unsupported', `queue size ${o.queueSize} needs packed rings, which the backend does not offer`);
    }
    if (status) await this.set(gen, ack, Req.SET_STATUS, encodeU64(BigInt(STATUS_ACKNOWLEDGE | STATUS_DRIVER)));

    // eventfds for every vring; SET_VRING_CALL first (DPDK's backend creates the vrings there).
    const nvq = 2 * pairs;
    this.check(gen);
    for (let i = 0; i < nvq; i++) {
      this.callFds.push(libc.eventfd());
      this.kickFds.push(libc.eventfd());
    }
    for (let i = 0; i < nvq; i++) {
      await this.set(gen, ack, Req.SET_VRING_CALL, encodeVringFd({ index: i, noFd: false }), [this.callFds[i]]);
    }
    // MAC and STATUS describe config space, which virtio-user handles itself (as DPDK does).
    const sent = features & ~(NET_F_MAC | NET_F_STATUS);
    await this.set(gen, ack, Req.SET_FEATURES, encodeU64(sent));
    if (status) {
      await this.set(gen, ack, Req.SET_STATUS, encodeU64(BigInt(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)));
      const st = Number(await this.getU64(gen, Req.GET_STATUS));
      if (!(st & STATUS_FEATURES_OK)) throw new VhostProtocolError('bad-reply', `backend did not accept the features (status 0x${st.toString(16)})`, Req.GET_STATUS);
    }

    const cfg: NegotiatedConfig = {
      features: sent,
      deviceFeatures: devFeatures,
      protocolFeatures: proto,
      packed,
      hdrLen: netHdrLen(sent),
      queuePairs: pairs,
      queueSize: o.queueSize,
      backendQueues,
    };
    this.check(gen);
    this.deviceSetUp = true;
    const setup = this.dev.setup(cfg);
    if (setup.vrings.length !== nvq) throw new Error(`device set up ${setup.vrings.length} vrings, expected ${nvq}`);
    if (setup.regions.length < 1 || setup.regions.length > MAX_MEM_REGIONS) throw new Error(`device shares ${setup.regions.length} regions (1..${MAX_MEM_REGIONS})`);

    await this.set(
      gen,
      ack,
      Req.SET_MEM_TABLE,
      encodeMemTable(setup.regions.map((r) => ({ gpa: r.addr, size: r.size, uaddr: r.addr, mmapOffset: 0 }))),
      setup.regions.map((r) => r.fd),
    );
    for (let i = 0; i < nvq; i++) {
      const v = setup.vrings[i];
      await this.set(gen, ack, Req.SET_VRING_NUM, encodeState({ index: i, num: o.queueSize }));
      // Packed: position 0 with wrap counter 1 (bit 15).
      await this.set(gen, ack, Req.SET_VRING_BASE, encodeState({ index: i, num: packed ? 0x8000 : 0 }));
      await this.set(gen, ack, Req.SET_VRING_ADDR, encodeAddr({ index: i, flags: 0, desc: v.descAddr, used: v.usedAddr, avail: v.availAddr, log: 0n }));
      await this.set(gen, ack, Req.SET_VRING_KICK, encodeVringFd({ index: i, noFd: false }), [this.kickFds[i]]);
    }
    if ((sent & VHOST_USER_F_PROTOCOL_FEATURES) !== 0n) {
      for (let i = 0; i < nvq; i++) await this.set(gen, ack, Req.SET_VRING_ENABLE, encodeState({ index: i, num: 1 }));
    }
    if (status) {
      await this.set(gen, ack, Req.SET_STATUS, encodeU64(BigInt(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK)));
    }
    this.check(gen);
    this.negotiated = cfg;
    this._state = 'up';
    this.connects++;
    this.endpoint.resetBackoff();
    this.lastError = '';
    this.log.log(
      'info',
      `vhost-user frontend ${this.path}: up, ${pairs} queue pair(s), ${packed ? 'packed' : 'split'}, features ${featureNames(sent).join(',')}`,
    );
    this.dev.up(cfg);
    for (const w of this.upWaiters.splice(0)) w();
  }
}
