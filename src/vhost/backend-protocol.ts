/**
 * The vhost-user backend's protocol side: a device-agnostic handler of one
 * frontend's session at a time (features, guest memory, rings, the published
 * data path). The socket side (listen/accept or connect/reconnect, one
 * connection at a time) is backend.ts, whose VhostUserBackend extends this.
 *
 * Dispatch is driven by the request table in messages.ts: the connection
 * validates size and fd count before a handler runs, NEED_REPLY / REPLY_ACK
 * is handled generically here, and a handler only mutates session state and
 * returns its reply payload. Handlers never touch the published data path
 * themselves: the table's `quiesce` column says which requests change what
 * the rings use, and the dispatcher ({@link VhostUserProtocol.handle}) then
 * runs {@link VhostUserProtocol.refresh}, which revokes the published
 * {@link DataPathDescription} (waiting until every lease has detached, so
 * memory is never unmapped under a running burst), then publishes the next
 * one. The device (e.g. net-device.ts) plugs in through {@link VhostUserDevice}.
 *
 * Where it runs: with its socket (backend.ts), on the event loop of the PMD worker that polls the
 * port (the daemon), or of whichever thread made the backend (tests, tsvs testpmd).
 */
import { EventEmitter } from 'node:events';
import * as libc from '../sys/libc.js';
import { UnixSocket } from '../sys/socket.js';
import { sigbusGuard, sigbusGuardProblem, type GuardFault } from '../sys/sigbus.js';
import { GuestMemory, GuestMemoryError, type GuestRegion } from '../mem/guest-memory.js';
import {
  Req,
  ProtoF,
  FRONTEND_REQUESTS,
  FLAG_NEED_REPLY,
  VERSION,
  FLAG_REPLY,
  F_PROTOCOL_FEATURES,
  F_LOG_ALL,
  VhostProtocolError,
  featureMask,
  hasFeature,
  protocolFeatureNames,
  requestName,
  decodeU64,
  decodeU64Num,
  encodeU64,
  decodeState,
  encodeState,
  decodeAddr,
  decodeMemTable,
  decodeSingleRegion,
  decodeVringFd,
  decodeConfig,
  encodeConfig,
  decodeRarpMac,
  decodeLog,
  encodeAck,
  VRING_F_LOG,
  type MemRegionDesc,
  type MsgHeader,
  type RequestSpec,
  type HandlerKey,
} from './messages.js';
import { VhostConnection, takeFd, defaultLogger, type Logger, type VhostMessage } from './connection.js';
import { mappingSharing } from './peer.js';
import { ControlBlock, type DataPathDescription, type DataPathLog, type DataPathQueue, type DataPathRegion } from './ring-lease.js';
import { DEFAULT_MAX_GUEST_MEMORY } from './limits.js';

// Virtio bits the generic layer looks at.
const F_EVENT_IDX = 29;
const F_RING_PACKED = 34;
/** Largest queue size (virtio: 2^15). */
export const MAX_QUEUE_SIZE_LIMIT = 32768;
/** Device status bit DRIVER_OK. */
export const STATUS_DRIVER_OK = 4;

/** What a device plugs into the protocol handler. Optional parts have safe defaults. */
export interface VhostUserDevice {
  /** Most virtqueues (ring indices 0..maxQueues-1). */
  readonly maxQueues: number;
  /** Virtio features offered (the backend adds VHOST_USER_F_PROTOCOL_FEATURES). */
  readonly features: bigint;
  /** Device-specific protocol features offered beyond the generic ones (e.g. MTU, RARP, CONFIG). */
  readonly protocolFeatures: bigint;
  /** GET_QUEUE_NUM reply (net: queue pairs). Default maxQueues. */
  queueNum?(): number;
  /** GET_CONFIG: bytes [offset, offset+size) of config space, or null (error). */
  getConfig?(offset: number, size: number): Uint8Array | null;
  /** SET_CONFIG: false refuses. */
  setConfig?(offset: number, data: Uint8Array, flags: number): boolean;
  /** NET_SET_MTU: false refuses. */
  setMtu?(mtu: number): boolean;
  /** Why NET_SET_MTU would refuse this MTU (for the error), or null. */
  mtuProblem?(mtu: number): string | null;
  /** SEND_RARP with the guest MAC. */
  sendRarp?(mac: Uint8Array): void;
  /** SET_FEATURES accepted. */
  featuresAcked?(features: bigint): void;
  /** The frontend went away or reset the device: forget session state. */
  reset?(): void;
}

/** Protocol features the generic layer implements (LOG_SHMFD: the dirty log of live migration, see SET_LOG_BASE). */
export const GENERIC_PROTOCOL_FEATURES = featureMask(
  ProtoF.MQ,
  ProtoF.LOG_SHMFD,
  ProtoF.REPLY_ACK,
  ProtoF.STATUS,
  ProtoF.BACKEND_REQ,
  ProtoF.CONFIGURE_MEM_SLOTS,
);

/** Memory slots we accept with ADD_MEM_REG. */
export const MAX_MEM_SLOTS = 32;
/** Default cap on the guest memory one frontend may map (sum of its regions): 1 TiB (src/vhost/limits.ts). */
export { DEFAULT_MAX_GUEST_MEMORY };

/** What the protocol side needs (backend.ts's BackendOptions adds the socket's). */
export interface ProtocolOptions {
  device: VhostUserDevice;
  logger?: Logger;
  /** Name for logs. */
  name: string;
  /** Warnings about frontends' bad messages: at most this many per 10 s per port, the rest counted (default 10); lines about connections coming and going: twice that. */
  warnPer10s?: number;
  /** Most guest memory (bytes, sum of the regions) a frontend may share with us (default 1 TiB). */
  maxGuestMemory?: number;
  /** How the user raises maxGuestMemory, named in the refusal (default 'maxGuestMemory'). */
  maxGuestMemoryName?: string;
}

/** What the frontend shares with us, and how it is protected against being shrunk under us. */
export interface GuestMemoryInfo {
  regions: number;
  bytes: number;
  /** Regions whose file is sealed against shrinking (F_SEAL_SHRINK): the kernel forbids truncation. */
  sealed: number;
  /** Regions covered by the SIGBUS guard (a truncation is absorbed and takes the port down). */
  guarded: number;
  /** Why some region is not sealed (e.g. 'fcntl(F_ADD_SEALS) (fd 12) failed: EPERM'), or ''. */
  unsealedWhy: string;
}

export interface BackendStats {
  connections: number;
  /** Rings whose frontend-given base disagreed with the ring and were resynced from it (see resyncRings). */
  ringResyncs: number;
  disconnects: number;
  messages: number;
  /** Rejected messages / failed requests by reason. */
  errors: Record<string, number>;
  /** Connections we closed because of a protocol error, by reason (framing errors included). */
  closeReasons: Record<string, number>;
  generations: number;
  /** Warning lines about bad messages not logged (rate limit), all connections. */
  suppressedWarnings: number;
}

/** Session state of one ring (control side). */
interface Vring {
  size: number;
  descU: number;
  availU: number;
  usedU: number;
  addrSet: boolean;
  lastAvail: number;
  lastUsed: number;
  /** SET_VRING_BASE seen (or positions read back): else packed rings start at 0x8000 (wrap 1). */
  baseSet: boolean;
  /**
   * The base came from the frontend (SET_VRING_BASE) and is not yet checked
   * against the ring itself: checked (and resynced) once when the ring starts.
   */
  baseUnchecked: boolean;
  kickFd: number;
  kickSet: boolean;
  callFd: number;
  errFd: number;
  enabled: boolean;
  started: boolean;
  /** SET_VRING_ADDR's log_guest_addr when it set VHOST_VRING_F_LOG (used-area writes are logged there), else -1. */
  logGpa: number;
}

function newVring(): Vring {
  return {
    size: 0,
    descU: -1,
    availU: -1,
    usedU: -1,
    addrSet: false,
    lastAvail: 0,
    lastUsed: 0,
    baseSet: false,
    baseUnchecked: false,
    kickFd: -1,
    kickSet: false,
    callFd: -1,
    errFd: -1,
    enabled: false,
    started: false,
    logGpa: -1,
  };
}

/** The dirty log shared by SET_LOG_BASE, mapped by us. */
interface MappedLog {
  /** Our address of the mapping (file offset 0), or 0 once unmapped. */
  base: number;
  /** Bytes mapped (the frontend's offset + size). */
  mapSize: number;
  /** The bitmap: base + the frontend's mmap offset, its size. */
  log: DataPathLog;
}

/** Largest dirty log we map: one bit per 4 KiB page of 2^45 bytes (32 TiB) of guest memory. */
export const MAX_LOG_SIZE = 1 << 30;

/** One region of guest memory mapped by us, in one mapping (viewed in <= 1 GiB windows on first use). */
interface MappedRegion {
  desc: MemRegionDesc;
  /** The region's file (ours to close), or -1 once closed. */
  fd: number;
  /** Our address of the mapping, or 0 once unmapped. */
  addr: number;
  /** The file is sealed against shrinking. */
  sealed: boolean;
  /** Why not sealed ('' when sealed). */
  unsealedWhy: string;
  /** SIGBUS guard slot, or -1. */
  guardSlot: number;
  /** ADD_MEM_REG count (QEMU sends the same region once per queue pair). */
  refs: number;
}

/**
 * A handler's result: the reply payload, nothing (ack-only requests), or a
 * function that builds the reply once the dispatcher has brought the rings in
 * line (GET_VRING_BASE reads the positions the stopped data path wrote back).
 */
type HandlerResult = Uint8Array | void | (() => Uint8Array);
type Handler = (msg: VhostMessage) => HandlerResult | Promise<HandlerResult>;

export interface BackendEvents {
  connect: [];
  disconnect: [reason: string | null];
  /** A new data-path description (null: stopped, nothing may touch guest memory). */
  datapath: [desc: DataPathDescription | null];
  link: [up: boolean];
}

export abstract class VhostUserProtocol extends EventEmitter<BackendEvents> {
  readonly device: VhostUserDevice;
  readonly name: string;
  readonly log: Logger;
  readonly control: ControlBlock;
  readonly stats: BackendStats = { connections: 0, ringResyncs: 0, disconnects: 0, messages: 0, errors: {}, closeReasons: {}, generations: 0, suppressedWarnings: 0 };
  readonly maxGuestMemory: number;
  private readonly maxGuestMemoryName: string;

  /** The frontend's connection (set and cleared by the socket side). */
  protected conn: VhostConnection | null = null;
  protected readonly warnPer10s: number;
  /** Rate limit of warnings about the current connection's messages. */
  /** Warnings about frontends' messages (rate-limited per port, not per connection: a new connection gets no new budget). */
  private readonly msgLog: LogLimiter;
  /** Serializes message handling, disconnects and close. */
  protected serial: Promise<void> = Promise.resolve();

  // --- session state ---
  private owner = false;
  private features = 0n;
  private featuresSet = false;
  private protocolFeatures = 0n;
  private status = 0;
  private regions: MappedRegion[] = [];
  private mem: GuestMemory | null = null;
  private rings: Vring[];
  private backendReq: UnixSocket | null = null;
  /** Frontend process id (SO_PEERCRED), or -1. */
  protected peer = -1;
  private memProblem: string | null = null;
  private sharingKey = '';
  private logFd = -1;
  /** The dirty log (SET_LOG_BASE), or null. */
  private dirtyLog: MappedLog | null = null;
  /** Whether the last published data path logged (for the on/off log line). */
  private logAnnounced = false;
  /** Dirty logs replaced while a data path may still use them. */
  private retiredLogs: MappedLog[] = [];

  // --- published data path ---
  private current: DataPathDescription | null = null;
  private currentKey = '';
  private linkIsUp = false;
  /** Regions and fds replaced while a data path may still use them. */
  private retiredRegions: MappedRegion[] = [];
  private retiredFds: number[] = [];
  private readonly handlers: Record<HandlerKey, Handler>;

  constructor(opts: ProtocolOptions) {
    super();
    this.device = opts.device;
    this.name = opts.name;
    this.log = opts.logger ?? defaultLogger;
    this.warnPer10s = opts.warnPer10s ?? 10;
    this.maxGuestMemory = opts.maxGuestMemory ?? DEFAULT_MAX_GUEST_MEMORY;
    this.maxGuestMemoryName = opts.maxGuestMemoryName ?? 'maxGuestMemory';
    if (!(this.maxGuestMemory > 0)) throw new RangeError(`maxGuestMemory ${this.maxGuestMemory} must be positive`);
    this.msgLog = new LogLimiter(this.warnPer10s);
    if (!(this.device.maxQueues >= 1 && this.device.maxQueues <= 256)) throw new RangeError(`maxQueues ${this.device.maxQueues} not in 1..256`);
    this.control = new ControlBlock(this.device.maxQueues);
    this.rings = Array.from({ length: this.device.maxQueues }, newVring);
    this.handlers = this.makeHandlers();
  }

  // ------------------------------------------------------------------ public state

  /** Some ready ring is enabled and the data path is published. */
  get linkUp(): boolean {
    return this.linkIsUp;
  }

  /** The current data-path description, or null. */
  get dataPath(): DataPathDescription | null {
    return this.current;
  }

  get negotiatedFeatures(): bigint {
    return this.features;
  }

  get negotiatedProtocolFeatures(): bigint {
    return this.protocolFeatures;
  }

  /**
   * A problem that keeps the device from working although the protocol
   * succeeded (e.g. guest memory not shared), or null.
   */
  get problem(): string | null {
    return this.memProblem;
  }

  /** The guest memory mapped now, and how it is protected (null: none). */
  get memoryInfo(): GuestMemoryInfo | null {
    if (this.regions.length === 0) return null;
    const i: GuestMemoryInfo = { regions: this.regions.length, bytes: 0, sealed: 0, guarded: 0, unsealedWhy: '' };
    for (const r of this.regions) {
      i.bytes += r.desc.size;
      if (r.sealed) i.sealed++;
      else if (!i.unsealedWhy) i.unsealedWhy = r.unsealedWhy;
      if (r.guardSlot >= 0) i.guarded++;
    }
    return i;
  }

  get deviceStatus(): number {
    return this.status;
  }

  /** Everything offered in GET_FEATURES (VHOST_F_LOG_ALL: we log our guest writes for live migration). */
  get offeredFeatures(): bigint {
    return this.device.features | (1n << BigInt(F_PROTOCOL_FEATURES)) | (1n << BigInt(F_LOG_ALL));
  }

  /** Dirty logging is on: VHOST_F_LOG_ALL negotiated and a log shared (SET_LOG_BASE). */
  get logging(): boolean {
    return this.dirtyLog !== null && hasFeature(this.features, F_LOG_ALL);
  }

  get offeredProtocolFeatures(): bigint {
    return GENERIC_PROTOCOL_FEATURES | this.device.protocolFeatures;
  }

  protected enqueue(fn: () => void | Promise<void>): Promise<void> {
    const p = this.serial.then(fn);
    this.serial = p.catch((e) => {
      this.log.log('error', `${this.name}: internal error: ${(e as Error)?.stack ?? e}`);
    });
    return p;
  }

  /** Back to the state before any frontend: data path stopped, memory unmapped, fds closed. */
  protected async resetSession(): Promise<void> {
    await this.stopDataPath();
    for (const r of this.regions) closeRegion(r);
    this.regions = [];
    this.mem = null;
    this.releaseRetired();
    for (const v of this.rings) closeRingFds(v);
    this.rings = Array.from({ length: this.device.maxQueues }, newVring);
    this.backendReq?.close();
    this.backendReq = null;
    libc.closeQuiet(this.logFd);
    this.logFd = -1;
    if (this.dirtyLog) unmapLog(this.dirtyLog);
    this.dirtyLog = null;
    this.logAnnounced = false;
    this.owner = false;
    this.memProblem = null;
    this.sharingKey = '';
    this.peer = -1;
    this.features = 0n;
    this.featuresSet = false;
    this.protocolFeatures = 0n;
    this.status = 0;
    this.device.reset?.();
  }

  // ------------------------------------------------------------------ dispatch

  protected onInvalid(conn: VhostConnection, hdr: MsgHeader, err: VhostProtocolError): boolean {
    this.countError(err.reason);
    const spec = FRONTEND_REQUESTS.get(hdr.request);
    this.warnLimited(`rejected ${requestName(hdr.request)}: ${err.message} [${err.reason}]`);
    // A request that always gets a payload reply cannot be answered sensibly: drop the connection.
    if (spec && spec.reply !== 'ack') return false;
    if (hdr.flags & FLAG_NEED_REPLY) {
      try {
        conn.send(hdr.request, VERSION | FLAG_REPLY, encodeAck(false));
      } catch {
        return false;
      }
    }
    return true;
  }

  /**
   * A warning about the current frontend's messages, rate-limited per
   * connection (a hostile frontend must not fill the log): at most
   * warnPer10s lines per 10 s window; the rest are counted and their number
   * logged with the next line that gets through (or when the connection ends).
   */
  private warnLimited(msg: string): void {
    if (!this.msgLog.allow()) {
      this.stats.suppressedWarnings++;
      return;
    }
    const n = this.msgLog.takeSuppressed();
    this.log.log('warn', `${this.name}: ${msg}${n > 0 ? ` (${n} similar warnings suppressed before this one)` : ''}`);
  }

  protected flushSuppressed(): void {
    const n = this.msgLog.takeSuppressed();
    if (n === 0) return;
    this.log.log('warn', `${this.name}: ${n} warnings about this frontend's messages were suppressed (rate limit)`);
  }

  private countError(reason: string): void {
    this.stats.errors[reason] = (this.stats.errors[reason] ?? 0) + 1;
  }

  protected async handle(conn: VhostConnection, msg: VhostMessage): Promise<void> {
    if (conn.isClosed || this.conn !== conn) return;
    const spec = FRONTEND_REQUESTS.get(msg.hdr.request) as RequestSpec;
    this.stats.messages++;
    this.log.log('debug', `${this.name}: ${spec.name} size ${msg.hdr.size} fds ${msg.fds.length} flags 0x${msg.hdr.flags.toString(16)}`);
    const h = this.handlers[spec.handler];
    let reply: Uint8Array | void;
    try {
      if (spec.quiesce === 'always') {
        // every lease released before the handler runs (it may free what the rings use), republished after
        await this.stopDataPath();
        try {
          reply = this.readyReply(await h(msg));
        } finally {
          await this.refresh();
        }
      } else {
        const r = await h(msg);
        if (spec.quiesce === 'changed') await this.refresh();
        reply = this.readyReply(r);
      }
    } catch (e) {
      if (!(e instanceof VhostProtocolError) && !(e instanceof GuestMemoryError) && !(e instanceof libc.SysError)) throw e;
      const err =
        e instanceof VhostProtocolError ? e : new VhostProtocolError('bad-value', (e as Error).message, msg.hdr.request);
      this.countError(err.reason);
      if (spec.reply !== 'ack') {
        conn.close(err); // the frontend waits for a payload we cannot give (logged in onClose)
        return;
      }
      this.warnLimited(`${err.message} [${err.reason}]`);
      if (msg.hdr.flags & FLAG_NEED_REPLY) this.sendReply(conn, msg.hdr.request, encodeAck(false));
      return;
    }
    if (spec.reply === 'ack') {
      if (msg.hdr.flags & FLAG_NEED_REPLY) this.sendReply(conn, msg.hdr.request, encodeAck(true));
    } else {
      this.sendReply(conn, msg.hdr.request, reply ?? new Uint8Array(0));
    }
  }

  private readyReply(r: HandlerResult): Uint8Array | void {
    return typeof r === 'function' ? r() : r;
  }

  private sendReply(conn: VhostConnection, request: number, payload: Uint8Array): void {
    if (conn.isClosed) return;
    try {
      conn.send(request, VERSION | FLAG_REPLY, payload);
    } catch (e) {
      conn.close(new VhostProtocolError('io', `reply: ${(e as Error).message}`, request));
    }
  }

  private ring(index: number, request: number): Vring {
    if (!(index >= 0 && index < this.rings.length)) {
      throw new VhostProtocolError('bad-value', `vring index ${index} out of range (0..${this.rings.length - 1})`, request);
    }
    return this.rings[index];
  }

  /**
   * The handlers, one per {@link HandlerKey}. A handler changes session state
   * and returns its reply; it never refreshes the data path (the table's
   * `quiesce` column does, in {@link handle}).
   */
  private makeHandlers(): Record<HandlerKey, Handler> {
    const R = Req;
    return {
      getFeatures: () => encodeU64(this.offeredFeatures),
      setFeatures: (m) => {
        const f = decodeU64(m.payload);
        const extra = f & ~this.offeredFeatures;
        if (extra !== 0n) throw new VhostProtocolError('bad-value', `features 0x${f.toString(16)} include unoffered 0x${extra.toString(16)}`, R.SET_FEATURES);
        const running = this.rings.some((v) => v.started);
        const changed = (f ^ this.features) & ~(1n << BigInt(F_LOG_ALL));
        if (running && this.featuresSet && changed !== 0n) {
          throw new VhostProtocolError('out-of-order', 'features changed while rings are running', R.SET_FEATURES);
        }
        this.features = f;
        this.featuresSet = true;
        this.device.featuresAcked?.(f);
      },
      setOwner: () => {
        this.owner = true;
      },
      resetOwner: () => {
        // Deprecated; treated as "disable all rings" (recommended by the spec).
        this.resetRings();
      },
      resetDevice: () => {
        this.resetRings();
        this.features = 0n;
        this.featuresSet = false;
        this.status = 0;
      },
      setMemTable: (m) => {
        const descs = decodeMemTable(m.payload);
        if (descs.length === 0) throw new VhostProtocolError('bad-value', 'empty memory table', R.SET_MEM_TABLE);
        // Same table again (QEMU resends it): keep our mappings.
        if (descs.length === this.regions.length && descs.every((d, i) => sameRegion(d, this.regions[i].desc))) {
          return;
        }
        this.checkTotal(descs.reduce((a, d) => a + Math.max(0, d.size), 0), R.SET_MEM_TABLE);
        const mapped: MappedRegion[] = [];
        try {
          for (let i = 0; i < descs.length; i++) mapped.push(this.mapRegion(descs[i], takeFd(m, i), R.SET_MEM_TABLE));
          const mem = buildMemory(mapped);
          this.retiredRegions.push(...this.regions);
          this.regions = mapped;
          this.mem = mem;
        } catch (e) {
          for (const r of mapped) closeRegion(r);
          throw e;
        }
      },
      addMemReg: (m) => {
        const d = decodeSingleRegion(m.payload);
        const same = this.regions.find((r) => sameRegion(r.desc, d));
        if (same) {
          // QEMU 7.2 announces each region once per queue pair (one vhost_dev each): count it.
          same.refs++;
          return;
        }
        if (this.regions.length >= MAX_MEM_SLOTS) throw new VhostProtocolError('bad-value', `more than ${MAX_MEM_SLOTS} regions`, R.ADD_MEM_REG);
        this.checkTotal(this.regions.reduce((a, r) => a + r.desc.size, 0) + Math.max(0, d.size), R.ADD_MEM_REG);
        const r = this.mapRegion(d, takeFd(m, 0), R.ADD_MEM_REG);
        try {
          const next = [...this.regions, r];
          this.mem = buildMemory(next);
          this.regions = next;
        } catch (e) {
          closeRegion(r);
          throw e;
        }
      },
      remMemReg: (m) => {
        const d = decodeSingleRegion(m.payload);
        const i = this.regions.findIndex((r) => r.desc.gpa === d.gpa && r.desc.size === d.size && (d.uaddr === r.desc.uaddr || d.uaddr === 0));
        if (i < 0) throw new VhostProtocolError('bad-value', `no region at gpa 0x${d.gpa.toString(16)} size 0x${d.size.toString(16)}`, R.REM_MEM_REG);
        if (--this.regions[i].refs > 0) return;
        const next = this.regions.filter((_, j) => j !== i);
        this.retiredRegions.push(this.regions[i]);
        this.regions = next;
        this.mem = next.length ? buildMemory(next) : null;
      },
      getMaxMemSlots: () => encodeU64(BigInt(MAX_MEM_SLOTS)),
      setVringNum: (m) => {
        const s = decodeState(m.payload);
        const v = this.ring(s.index, R.SET_VRING_NUM);
        if (v.started) throw new VhostProtocolError('out-of-order', `ring ${s.index} is running`, R.SET_VRING_NUM);
        if (!(s.num >= 1 && s.num <= MAX_QUEUE_SIZE_LIMIT)) throw new VhostProtocolError('bad-value', `queue size ${s.num} not in 1..${MAX_QUEUE_SIZE_LIMIT}`, R.SET_VRING_NUM);
        if (!this.packed() && (s.num & (s.num - 1)) !== 0) {
          throw new VhostProtocolError('bad-value', `split queue size ${s.num} is not a power of 2`, R.SET_VRING_NUM);
        }
        v.size = s.num;
      },
      setVringAddr: (m) => {
        const a = decodeAddr(m.payload);
        const v = this.ring(a.index, R.SET_VRING_ADDR);
        if (a.desc < 0 || a.avail < 0 || a.used < 0) throw new VhostProtocolError('bad-value', 'ring address >= 2^53', R.SET_VRING_ADDR);
        const logFlag = (a.flags & VRING_F_LOG) !== 0;
        if (logFlag && a.log > BigInt(Number.MAX_SAFE_INTEGER)) throw new VhostProtocolError('bad-value', 'log address >= 2^53', R.SET_VRING_ADDR);
        if (this.mem && v.size > 0) {
          const why = this.checkRingAddrs(v.size, a.desc, a.avail, a.used);
          if (why) throw new VhostProtocolError('bad-value', `ring ${a.index}: ${why}`, R.SET_VRING_ADDR);
        }
        v.descU = a.desc;
        v.availU = a.avail;
        v.usedU = a.used;
        v.logGpa = logFlag ? Number(a.log) : -1;
        v.addrSet = true;
      },
      setVringBase: (m) => {
        const s = decodeState(m.payload);
        const v = this.ring(s.index, R.SET_VRING_BASE);
        if (v.started) throw new VhostProtocolError('out-of-order', `ring ${s.index} is running`, R.SET_VRING_BASE);
        if (this.packed()) {
          v.lastAvail = s.num & 0xffff;
          v.lastUsed = s.num >>> 16 !== 0 ? s.num >>> 16 : v.lastAvail;
        } else {
          if (s.num > 0xffff) throw new VhostProtocolError('bad-value', `split ring base ${s.num} > 0xffff`, R.SET_VRING_BASE);
          v.lastAvail = s.num;
          v.lastUsed = s.num;
        }
        v.baseSet = true;
        v.baseUnchecked = true;
      },
      getVringBase: (m) => {
        const s = decodeState(m.payload);
        const v = this.ring(s.index, R.GET_VRING_BASE);
        v.started = false;
        if (v.kickFd >= 0) this.retiredFds.push(v.kickFd);
        v.kickFd = -1;
        v.kickSet = false;
        // built after the dispatcher's refresh, which reads back the positions of a stopped ring
        return () => {
          const num = this.packed() ? ((v.lastAvail & 0xffff) | ((v.lastUsed & 0xffff) << 16)) >>> 0 : v.lastAvail & 0xffff;
          return encodeState({ index: s.index, num });
        };
      },
      setVringKick: (m) => {
        const a = decodeVringFd(m.payload);
        const v = this.ring(a.index, R.SET_VRING_KICK);
        if (v.kickFd >= 0) this.retiredFds.push(v.kickFd);
        v.kickFd = a.noFd ? -1 : takeFd(m, 0);
        v.kickSet = true;
        v.started = true;
      },
      setVringCall: (m) => {
        const a = decodeVringFd(m.payload);
        const v = this.ring(a.index, R.SET_VRING_CALL);
        if (v.callFd >= 0) this.retiredFds.push(v.callFd);
        v.callFd = a.noFd ? -1 : takeFd(m, 0);
      },
      setVringErr: (m) => {
        const a = decodeVringFd(m.payload);
        const v = this.ring(a.index, R.SET_VRING_ERR);
        libc.closeQuiet(v.errFd);
        v.errFd = a.noFd ? -1 : takeFd(m, 0);
      },
      getProtocolFeatures: () => encodeU64(this.offeredProtocolFeatures),
      setProtocolFeatures: (m) => {
        const f = decodeU64(m.payload);
        const extra = f & ~this.offeredProtocolFeatures;
        if (extra !== 0n) throw new VhostProtocolError('bad-value', `protocol features 0x${f.toString(16)} include unoffered 0x${extra.toString(16)}`, R.SET_PROTOCOL_FEATURES);
        this.protocolFeatures = f;
        this.log.log('debug', `${this.name}: protocol features ${protocolFeatureNames(f).join(',')}`);
      },
      getQueueNum: () => encodeU64(BigInt(this.device.queueNum?.() ?? this.device.maxQueues)),
      setVringEnable: (m) => {
        const s = decodeState(m.payload);
        const v = this.ring(s.index, R.SET_VRING_ENABLE);
        if (s.num > 1) throw new VhostProtocolError('bad-value', `enable value ${s.num}`, R.SET_VRING_ENABLE);
        v.enabled = s.num === 1;
      },
      sendRarp: (m) => {
        if (!this.device.sendRarp) throw new VhostProtocolError('unsupported', 'device has no RARP', R.SEND_RARP);
        this.device.sendRarp(decodeRarpMac(m.payload));
      },
      netSetMtu: (m) => {
        const mtu = decodeU64Num(m.payload);
        if (!this.device.setMtu) throw new VhostProtocolError('unsupported', 'device has no MTU', R.NET_SET_MTU);
        if (!(mtu >= 68 && mtu <= 65535) || !this.device.setMtu(mtu)) {
          const why = this.device.mtuProblem?.(mtu) ?? `MTU ${mtu} not in 68..65535`;
          throw new VhostProtocolError('bad-value', `refused: ${why}`, R.NET_SET_MTU);
        }
      },
      setBackendReqFd: (m) => {
        this.backendReq?.close();
        this.backendReq = new UnixSocket(takeFd(m, 0));
      },
      getConfig: (m) => {
        const c = decodeConfig(m.payload);
        const data = this.device.getConfig?.(c.offset, c.data.length) ?? null;
        if (!data || data.length !== c.data.length) {
          this.warnLimited(`GET_CONFIG offset ${c.offset} size ${c.data.length} refused`);
          this.countError('bad-value');
          return new Uint8Array(0); // zero-length payload = error (spec)
        }
        return encodeConfig({ offset: c.offset, flags: c.flags, data });
      },
      setConfig: (m) => {
        const c = decodeConfig(m.payload);
        if (!this.device.setConfig || !this.device.setConfig(c.offset, c.data, c.flags)) {
          throw new VhostProtocolError('bad-value', `config write at ${c.offset}+${c.data.length} refused`, R.SET_CONFIG);
        }
      },
      setStatus: (m) => {
        const st = decodeU64Num(m.payload);
        if (!(st >= 0 && st <= 0xff)) throw new VhostProtocolError('bad-value', `status ${st}`, R.SET_STATUS);
        // Stored only (like DPDK): frontends write 0 during their own init; a reset is RESET_DEVICE.
        this.status = st;
      },
      getStatus: () => encodeU64(BigInt(this.status)),
      vringKick: (m) => {
        // In-band kick: we poll, nothing to do beyond checking the index.
        this.ring(decodeState(m.payload).index, R.VRING_KICK);
      },
      setLogBase: async (m) => {
        // Any failure closes the connection (the reply carries no error QEMU would look at): a
        // migration must fail rather than copy guest memory we wrote without logging it.
        const fd = takeFd(m, 0);
        let mapped: MappedLog;
        try {
          mapped = this.mapLog(decodeLog(m.payload), fd);
        } finally {
          libc.closeQuiet(fd);
        }
        if (this.dirtyLog) this.retiredLogs.push(this.dirtyLog);
        this.dirtyLog = mapped;
        this.log.log('info', `${this.name}: dirty log of ${mapped.log.size} bytes shared (pages up to ${fmtBytes(mapped.log.size * 8 * 4096)})`);
        // the dispatcher's refresh (quiesce 'changed') republishes the data path with the new log before we reply
        return encodeU64(0n);
      },
      setLogFd: (m) => {
        libc.closeQuiet(this.logFd);
        this.logFd = takeFd(m, 0);
      },
      unsupported: (m) => {
        throw new VhostProtocolError('unsupported', 'not supported', m.hdr.request);
      },
    };
  }

  // ------------------------------------------------------------------ dirty log

  /** Map the dirty log of SET_LOG_BASE (the fd stays the caller's). */
  private mapLog(d: { mmapSize: number; mmapOffset: number }, fd: number): MappedLog {
    const R = Req.SET_LOG_BASE;
    if (!hasFeature(this.protocolFeatures, ProtoF.LOG_SHMFD)) throw new VhostProtocolError('out-of-order', 'LOG_SHMFD not negotiated', R);
    if (!(d.mmapSize > 0 && d.mmapSize <= MAX_LOG_SIZE)) throw new VhostProtocolError('bad-value', `log size ${d.mmapSize} not in 1..${MAX_LOG_SIZE}`, R);
    if (!(d.mmapOffset >= 0 && d.mmapOffset <= MAX_LOG_SIZE)) throw new VhostProtocolError('bad-value', `log offset ${d.mmapOffset} beyond ${MAX_LOG_SIZE}`, R);
    let st: { size: number };
    try {
      st = libc.fstat(fd);
    } catch (e) {
      throw new VhostProtocolError('bad-value', `log fd: ${(e as Error).message}`, R);
    }
    const mapSize = d.mmapOffset + d.mmapSize;
    // a log past the end of its file would SIGBUS on the first mark
    if (mapSize > st.size) throw new VhostProtocolError('bad-value', `log 0x${d.mmapSize.toString(16)}@0x${d.mmapOffset.toString(16)} beyond its file (0x${st.size.toString(16)} bytes)`, R);
    // mapped from file offset 0 (the frontend's offset need not be page aligned), like DPDK
    const base = libc.mmap(fd, mapSize, 0);
    return { base, mapSize, log: { addr: base + d.mmapOffset, size: d.mmapSize } };
  }

  // ------------------------------------------------------------------ memory

  /** Refuse a memory table whose total exceeds the per-port cap (before anything is mapped). */
  private checkTotal(bytes: number, request: number): void {
    if (bytes > this.maxGuestMemory) {
      throw new VhostProtocolError(
        'bad-value',
        `guest memory of ${fmtBytes(bytes)} exceeds this port's limit of ${fmtBytes(this.maxGuestMemory)} (raise it with ${this.maxGuestMemoryName})`,
        request,
      );
    }
  }

  /**
   * Map one region. Its file is sealed against shrinking when it can be
   * (memfd with sealing allowed; QEMU's memory-backend-memfd is sealed
   * already), its size is checked after sealing, and the mapping is put under
   * the SIGBUS guard; a file that can neither be sealed nor guarded is
   * refused. One mapping per region whatever its size (views are made on
   * first use), so a huge sparse region costs no more than a small one.
   */
  private mapRegion(d: MemRegionDesc, fd: number, request: number): MappedRegion {
    try {
      if (d.gpa < 0 || d.size < 0 || d.uaddr < 0 || d.mmapOffset < 0) throw new VhostProtocolError('bad-value', 'region field >= 2^53', request);
      if (d.size === 0) throw new VhostProtocolError('bad-value', 'region of size 0', request);
      if (d.mmapOffset % 4096 !== 0) throw new VhostProtocolError('bad-value', `mmap offset 0x${d.mmapOffset.toString(16)} not page aligned`, request);
      if (d.gpa + d.size > Number.MAX_SAFE_INTEGER || d.uaddr + d.size > Number.MAX_SAFE_INTEGER) {
        throw new VhostProtocolError('bad-value', 'region end beyond 2^53', request);
      }
      // Seal first, so the size checked below cannot shrink afterwards.
      let sealed = false;
      let unsealedWhy = '';
      try {
        if ((libc.getSeals(fd) & libc.F_SEAL_SHRINK) === 0) libc.addSeals(fd, libc.F_SEAL_SHRINK);
        sealed = true;
      } catch (e) {
        unsealedWhy = (e as Error).message;
      }
      let st: { size: number; blksize: number };
      try {
        st = libc.fstat(fd);
      } catch (e) {
        throw new VhostProtocolError('bad-value', `region fd: ${(e as Error).message}`, request);
      }
      // Mapping past the end of the file would SIGBUS on first touch.
      if (d.mmapOffset + d.size > st.size) {
        throw new VhostProtocolError('bad-value', `region 0x${d.size.toString(16)}@0x${d.mmapOffset.toString(16)} beyond its file (0x${st.size.toString(16)} bytes)`, request);
      }
      const guard = sigbusGuard();
      if (!sealed && !guard) {
        this.countError('unsealable-memory');
        throw new VhostProtocolError(
          'bad-value',
          `region fd cannot be sealed against shrinking (${unsealedWhy}) and ${sigbusGuardProblem()}: ` +
            'refusing memory the frontend could truncate under the switch (share a memfd created with MFD_ALLOW_SEALING, e.g. QEMU memory-backend-memfd)',
          request,
        );
      }
      let addr: number;
      try {
        addr = libc.mmap(fd, d.size, d.mmapOffset);
      } catch (e) {
        throw new VhostProtocolError('bad-value', `mmap: ${(e as Error).message}`, request);
      }
      // a hugetlbfs mapping can only be replaced a whole huge page (its st_blksize) at a time
      let page = 4096;
      try {
        if (libc.fsType(fd) === libc.HUGETLBFS_MAGIC) page = st.blksize;
      } catch {
        /* not a filesystem file: 4 KiB pages */
      }
      const slot = guard ? guard.register(addr, d.size, page) : -1;
      if (slot < 0 && !sealed) {
        libc.munmap(addr, d.size);
        throw new VhostProtocolError('bad-value', `region fd cannot be sealed against shrinking (${unsealedWhy}) and the SIGBUS guard table is full`, request);
      }
      const r: MappedRegion = { desc: d, fd, addr, sealed, unsealedWhy, guardSlot: slot, refs: 1 };
      if (slot >= 0) guard!.watch(slot, (f) => this.onGuestMemoryFault(r, f));
      if (!sealed) this.log.log('info', `${this.name}: region gpa 0x${d.gpa.toString(16)} cannot be sealed (${unsealedWhy}); guarded against truncation`);
      return r;
    } catch (e) {
      libc.closeQuiet(fd);
      throw e;
    }
  }

  /**
   * The SIGBUS guard absorbed a fault in one of our regions: the frontend
   * truncated its memory file. The data path already reads zeros there; drop
   * the connection (which stops the data path and unmaps everything) and say why.
   */
  private onGuestMemoryFault(r: MappedRegion, f: GuardFault): void {
    if (!this.regions.includes(r) && !this.retiredRegions.includes(r)) return;
    const why =
      `guest memory truncated by the frontend (SIGBUS at 0x${f.addr.toString(16)}, offset 0x${(f.addr - r.addr).toString(16)} ` +
      `of region gpa 0x${r.desc.gpa.toString(16)} size 0x${r.desc.size.toString(16)}); the port's guest memory is dropped`;
    this.log.log('error', `${this.name}: ${why}`);
    this.memProblem = why;
    const conn = this.conn;
    if (conn && !conn.isClosed) conn.close(new VhostProtocolError('guest-memory-fault', why));
    else void this.enqueue(() => this.stopDataPath());
  }

  private checkRingAddrs(size: number, descU: number, availU: number, usedU: number): string | null {
    const mem = this.mem;
    if (!mem) return 'no memory table';
    const packed = this.packed();
    const descLen = 16 * size;
    const availLen = packed ? 4 : 6 + 2 * size;
    const usedLen = packed ? 4 : 6 + 8 * size;
    if (mem.uaddrToGpa(descU, descLen) < 0) return `descriptor table 0x${descU.toString(16)}+${descLen} outside guest memory`;
    if (mem.uaddrToGpa(availU, availLen) < 0) return `avail ring 0x${availU.toString(16)}+${availLen} outside guest memory`;
    if (mem.uaddrToGpa(usedU, usedLen) < 0) return `used ring 0x${usedU.toString(16)}+${usedLen} outside guest memory`;
    if (descU % 16 !== 0 || availU % 2 !== 0 || usedU % 4 !== 0) return 'ring areas misaligned';
    return null;
  }

  private packed(): boolean {
    return hasFeature(this.features, F_RING_PACKED);
  }

  // ------------------------------------------------------------------ data path publication

  /** Forget every ring (RESET_OWNER, RESET_DEVICE: quiesced before, see the table). */
  private resetRings(): void {
    for (const v of this.rings) closeRingFds(v);
    this.rings = Array.from({ length: this.device.maxQueues }, newVring);
  }

  private effectiveEnabled(v: Vring): boolean {
    // Without PROTOCOL_FEATURES a ring is enabled as soon as it starts.
    return v.enabled || !hasFeature(this.features, F_PROTOCOL_FEATURES);
  }

  /** The description the current state calls for (generation/control filled at publish), or null. */
  private desired(): Omit<DataPathDescription, 'generation' | 'control'> | null {
    const mem = this.mem;
    if (!mem || this.regions.length === 0 || this.memProblem) return null;
    // With STATUS, a frontend that is mid-initialisation (status set, DRIVER_OK not yet) is not ready.
    if (hasFeature(this.protocolFeatures, ProtoF.STATUS) && this.status !== 0 && !(this.status & STATUS_DRIVER_OK)) return null;
    const packed = this.packed();
    const logging = this.logging;
    const queues: (DataPathQueue | null)[] = this.rings.map(() => null);
    let any = false;
    this.rings.forEach((v, i) => {
      if (!(v.started && v.kickSet && v.addrSet && v.size > 0)) return;
      if (!packed && (v.size & (v.size - 1)) !== 0) return;
      const why = this.checkRingAddrs(v.size, v.descU, v.availU, v.usedU);
      if (why) {
        this.warnLimited(`ring ${i} not usable: ${why}`);
        return;
      }
      queues[i] = {
        index: i,
        size: v.size,
        desc: mem.uaddrToGpa(v.descU, 16 * v.size),
        avail: mem.uaddrToGpa(v.availU, packed ? 4 : 6 + 2 * v.size),
        used: mem.uaddrToGpa(v.usedU, packed ? 4 : 6 + 8 * v.size),
        lastAvailIdx: v.baseSet || !packed ? v.lastAvail : 0x8000,
        lastUsedIdx: v.baseSet || !packed ? v.lastUsed : 0x8000,
        callFd: v.callFd,
        logUsed: logging ? v.logGpa : -1,
      };
      any = true;
    });
    if (!any) return null;
    const regions: DataPathRegion[] = this.regions.map((r) => ({ gpa: r.desc.gpa, uaddr: r.desc.uaddr, size: r.desc.size, addr: r.addr }));
    const log = logging && this.dirtyLog ? { ...this.dirtyLog.log } : null;
    return { features: this.features, packed, eventIdx: hasFeature(this.features, F_EVENT_IDX), regions, queues, log };
  }

  /** Stop the published data path (if any), read back ring positions, free retired resources. */
  private async stopDataPath(): Promise<void> {
    const cur = this.current;
    if (cur) {
      await this.control.revoke((ms, users) =>
        this.log.log('warn', `${this.name}: data path has not released guest memory after ${ms} ms (${users} users)`),
      );
      for (const q of cur.queues) {
        if (!q) continue;
        const { lastAvail, lastUsed } = this.control.indices(q.index);
        const v = this.rings[q.index];
        v.lastAvail = lastAvail & 0xffff;
        v.lastUsed = lastUsed & 0xffff;
        v.baseSet = true;
        v.baseUnchecked = false;
      }
      this.current = null;
      this.currentKey = '';
      this.setLink(false);
      this.emit('datapath', null);
    }
    this.releaseRetired();
  }

  private releaseRetired(): void {
    for (const r of this.retiredRegions) closeRegion(r);
    this.retiredRegions = [];
    for (const fd of this.retiredFds) libc.closeQuiet(fd);
    this.retiredFds = [];
    for (const l of this.retiredLogs) unmapLog(l);
    this.retiredLogs = [];
  }

  /**
   * Bring the published data path in line with the session state: same
   * description -> only enable words change; otherwise stop, then publish.
   */
  private async refresh(): Promise<void> {
    this.checkSharing();
    this.resyncRings();
    const want = this.desired();
    const key = want ? JSON.stringify(want, (_k, val) => (typeof val === 'bigint' ? val.toString(16) : val)) : '';
    if (this.current && key === this.currentKey) {
      this.updateEnables();
      if (this.retiredFds.length || this.retiredRegions.length || this.retiredLogs.length) {
        // Nothing in use was replaced (a retired fd/region is not in the key): free now.
        this.releaseRetiredNotInUse();
      }
      return;
    }
    await this.stopDataPath();
    if (!want) return;
    // Ring positions may have been read back by stopDataPath: rebuild.
    const fresh = this.desired();
    if (!fresh) return;
    const gen = this.control.nextGeneration();
    for (const q of fresh.queues) if (q) this.control.setQueue(q.index, this.effectiveEnabled(this.rings[q.index]), q.lastAvailIdx, q.lastUsedIdx);
    const desc: DataPathDescription = { ...fresh, generation: gen, control: this.control.sab };
    this.control.publish(gen);
    this.current = desc;
    this.currentKey = JSON.stringify(fresh, (_k, val) => (typeof val === 'bigint' ? val.toString(16) : val));
    this.stats.generations++;
    this.log.log('debug', `${this.name}: data path generation ${gen}: queues ${fresh.queues.filter((q) => q).map((q) => q!.index).join(',')}`);
    this.emit('datapath', desc);
    if ((desc.log !== null) !== this.logAnnounced) {
      this.logAnnounced = desc.log !== null;
      this.log.log('info', `${this.name}: dirty logging ${this.logAnnounced ? `on (live migration): every guest page written is logged, ${desc.log!.size}-byte log` : 'off'}`);
    }
    this.updateEnables();
  }

  /**
   * Check a frontend-given ring base against the ring itself, once, when the
   * ring is about to run, and resync where they disagree (what DPDK's vhost
   * library does). A frontend that outlived its backend (DPDK virtio-user
   * server=1 or QEMU with a vhost-user-client port, after the switch was
   * killed or restarted) may send a base that is not where the ring stands:
   * DPDK sends SET_VRING_BASE 0 while its split ring is far ahead; QEMU sends
   * the used index it read (right) for split rings but, for packed rings, the
   * last base it got from GET_VRING_BASE (stale after a crash).
   *
   *  - split: the ring's used index is where the device stopped; if the base
   *    differs, both positions restart there (descriptors posted but not yet
   *    used are processed again: a guest TX frame in flight may be sent
   *    twice, guest RX buffers are reused). Same rule as DPDK's
   *    translate_ring_addresses().
   *  - packed: no index in shared memory. The descriptor at the base tells
   *    whether it fits: available for the base's wrap counter (work waiting)
   *    or used in the previous pass (nothing posted) fit; a descriptor
   *    already used in this pass (base behind) or posted for the other wrap
   *    counter (base ahead) does not, and the position is then found from
   *    the descriptors' flags (see packedResyncPoint).
   */
  private resyncRings(): void {
    const mem = this.mem;
    if (!mem || this.memProblem) return;
    const packed = this.packed();
    this.rings.forEach((v, i) => {
      if (!v.baseUnchecked || !(v.started && v.addrSet && v.size > 0)) return;
      if (this.checkRingAddrs(v.size, v.descU, v.availU, v.usedU) !== null) return; // desired() says why
      v.baseUnchecked = false;
      try {
        if (packed) {
          const descs = mem.slice(mem.uaddrToGpa(v.descU, 16 * v.size), 16 * v.size);
          const at = packedResyncPoint(descs, v.size, v.lastAvail);
          if (at === null) return;
          this.stats.ringResyncs++;
          this.log.log(
            'warn',
            `${this.name}: ring ${i}: the frontend's base (position ${v.lastAvail & 0x7fff}, wrap ${v.lastAvail >>> 15}) does not match the ` +
              `ring's descriptors: resuming at position ${at & 0x7fff}, wrap ${at >>> 15} (taken from the descriptor flags)`,
          );
          v.lastAvail = at;
          v.lastUsed = at;
          return;
        }
        const used = mem.slice(mem.uaddrToGpa(v.usedU, 4), 4);
        const avail = mem.slice(mem.uaddrToGpa(v.availU, 4), 4);
        const usedIdx = used[2] | (used[3] << 8);
        const availIdx = avail[2] | (avail[3] << 8);
        if (usedIdx === v.lastAvail && usedIdx === v.lastUsed) return;
        this.stats.ringResyncs++;
        this.log.log(
          'warn',
          `${this.name}: ring ${i}: the frontend's base ${v.lastAvail} is not the ring's used index ${usedIdx} (avail index ${availIdx}): ` +
            `resuming at ${usedIdx} (frames posted but not yet used are processed again)`,
        );
        v.lastAvail = usedIdx;
        v.lastUsed = usedIdx;
      } catch (e) {
        this.log.log('warn', `${this.name}: ring ${i}: cannot check its base against the ring: ${(e as Error).message}`);
      }
    });
  }

  /** Is every region shared by the frontend process (not MAP_PRIVATE on its side)? */
  private checkSharing(): void {
    const key = `${this.peer}:` + this.regions.map((r) => `${r.desc.uaddr}+${r.desc.size}`).join(',');
    if (key === this.sharingKey) return;
    this.sharingKey = key;
    let problem: string | null = null;
    for (const r of this.regions) {
      if (mappingSharing(this.peer, r.desc.uaddr, r.desc.size) === 'private') {
        problem =
          `guest memory not shared: the frontend (pid ${this.peer}) maps region gpa 0x${r.desc.gpa.toString(16)} ` +
          `privately, so guest writes never reach us (QEMU needs memory-backend-...,share=on); no packets can move`;
        break;
      }
    }
    if (problem !== this.memProblem) {
      this.memProblem = problem;
      if (problem) this.log.log('error', `${this.name}: ${problem}`);
    }
  }

  private releaseRetiredNotInUse(): void {
    const cur = this.current;
    const inUseFds = new Set<number>();
    if (cur) for (const q of cur.queues) if (q && q.callFd >= 0) inUseFds.add(q.callFd);
    const keep: number[] = [];
    for (const fd of this.retiredFds) {
      if (inUseFds.has(fd)) keep.push(fd);
      else libc.closeQuiet(fd);
    }
    this.retiredFds = keep;
    // Logs: a retired one is in use only if the current description names its bitmap.
    const keepL: MappedLog[] = [];
    for (const l of this.retiredLogs) {
      if (cur?.log && cur.log.addr === l.log.addr) keepL.push(l);
      else unmapLog(l);
    }
    this.retiredLogs = keepL;
    // Regions: any retired region's windows may be in the current description only if addresses match.
    if (cur && this.retiredRegions.length) {
      const used = new Set(cur.regions.map((r) => r.addr));
      const keepR: MappedRegion[] = [];
      for (const r of this.retiredRegions) {
        if (used.has(r.addr)) keepR.push(r);
        else closeRegion(r);
      }
      this.retiredRegions = keepR;
    }
  }

  private updateEnables(): void {
    const cur = this.current;
    let up = false;
    if (cur) {
      for (const q of cur.queues) {
        if (!q) continue;
        const en = this.effectiveEnabled(this.rings[q.index]);
        this.control.setEnabled(q.index, en);
        if (en) up = true;
      }
    }
    this.setLink(up);
  }

  private setLink(up: boolean): void {
    if (up === this.linkIsUp) return;
    this.linkIsUp = up;
    this.log.log('info', `${this.name}: link ${up ? 'up' : 'down'}`);
    this.emit('link', up);
  }
}

/** At most `limit` lines per 10 s window; counts what it refuses. */
export class LogLimiter {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;
  constructor(private readonly limit: number) {}
  allow(): boolean {
    const now = Date.now();
    if (now - this.windowStart >= 10000) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.limit) {
      this.suppressed++;
      return false;
    }
    this.inWindow++;
    return true;
  }
  /** Lines refused since the last call. */
  takeSuppressed(): number {
    const n = this.suppressed;
    this.suppressed = 0;
    return n;
  }
}

const PD_F_AVAIL = 1 << 7;
const PD_F_USED = 1 << 15;

/**
 * Packed ring: where should the device resume, given the frontend's base
 * (bits 0-14 position, bit 15 wrap counter)? Null when the base fits the
 * descriptor at it (available for its wrap counter, or left from the
 * previous pass with the slot before it written in this one); otherwise the position found from the flags: the AVAIL bit
 * of every slot is the pass (wrap counter) that last wrote it, driver or
 * device, so the first slot whose AVAIL bit differs from slot 0's is where
 * the driver writes next (V); walking back from V over slots still marked
 * available (AVAIL != USED) finds the first one the device has not used (D).
 * (Exact for one-descriptor buffers, direct or indirect, which is what DPDK
 * and Linux post; the trailing slots of a used multi-descriptor chain keep
 * their available flags and would make D land inside that chain.)
 */
export function packedResyncPoint(descs: Uint8Array, size: number, base: number): number | null {
  const flags = (p: number): number => descs[16 * p + 14] | (descs[16 * p + 15] << 8);
  const bit = (f: number, m: number): number => ((f & m) !== 0 ? 1 : 0);
  const pos = base & 0x7fff;
  const wrap = base >>> 15;
  if (pos < size) {
    const f = flags(pos);
    const a = bit(f, PD_F_AVAIL);
    const u = bit(f, PD_F_USED);
    if (a === wrap && u !== wrap) return null; // work waiting at our position
    if (a !== wrap && u !== wrap) {
      // used in the previous pass, nothing posted yet: then the slot before it was written in this
      // pass (the previous one when pos is 0); else the base is a whole pass behind
      const prevPass = bit(flags(pos === 0 ? size - 1 : pos - 1), PD_F_AVAIL);
      if (prevPass === (pos === 0 ? wrap ^ 1 : wrap)) return null;
    }
  }
  // the driver's next position and wrap counter
  const a0 = bit(flags(0), PD_F_AVAIL);
  let v = 0;
  while (v < size && bit(flags(v), PD_F_AVAIL) === a0) v++;
  let vw: number;
  if (v === size) {
    v = 0;
    vw = a0 ^ 1;
  } else {
    vw = a0;
  }
  // back from the driver's position over slots still available
  let d = v;
  let dw = vw;
  for (let n = 0; n < size; n++) {
    const p = d === 0 ? size - 1 : d - 1;
    const pw = d === 0 ? dw ^ 1 : dw;
    const f = flags(p);
    if (!(bit(f, PD_F_AVAIL) === pw && bit(f, PD_F_USED) !== pw)) break;
    d = p;
    dw = pw;
  }
  const at = d | (dw << 15);
  return at === (base & 0xffff) ? null : at;
}

function sameRegion(a: MemRegionDesc, b: MemRegionDesc): boolean {
  return a.gpa === b.gpa && a.size === b.size && a.uaddr === b.uaddr && a.mmapOffset === b.mmapOffset;
}

function buildMemory(regions: MappedRegion[]): GuestMemory {
  const gr: GuestRegion[] = regions.map((r) => ({
    gpa: r.desc.gpa,
    size: r.desc.size,
    uaddr: r.desc.uaddr,
    mmapOffset: r.desc.mmapOffset,
    addr: r.addr,
  }));
  try {
    return new GuestMemory(gr);
  } catch (e) {
    if (e instanceof GuestMemoryError) throw new VhostProtocolError('bad-value', e.message);
    throw e;
  }
}

function closeRegion(r: MappedRegion): void {
  if (r.guardSlot >= 0) sigbusGuard()?.unregister(r.guardSlot);
  r.guardSlot = -1;
  if (r.addr !== 0) libc.munmap(r.addr, r.desc.size);
  r.addr = 0;
  libc.closeQuiet(r.fd);
  r.fd = -1;
}

function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

function unmapLog(l: MappedLog): void {
  if (l.base !== 0) libc.munmap(l.base, l.mapSize);
  l.base = 0;
}

function closeRingFds(v: Vring): void {
  libc.closeQuiet(v.kickFd);
  libc.closeQuiet(v.callFd);
  libc.closeQuiet(v.errFd);
  v.kickFd = v.callFd = v.errFd = -1;
}
