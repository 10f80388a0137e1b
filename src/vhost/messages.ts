/**
 * vhost-user wire format, described once as data.
 *
 * A message is a 12-byte header (request u32, flags u32, size u32, native =
 * little-endian on x86-64) followed by `size` payload bytes (at most
 * {@link MAX_PAYLOAD}), with file descriptors in the ancillary data.
 *
 * {@link FRONTEND_REQUESTS} is the one table of frontend->backend requests:
 * name, payload kind and allowed sizes, allowed fd counts, what the backend
 * answers, the handler key (a {@link HandlerKey}: the compiler checks that
 * the backend implements every key and that no row names a missing one) and
 * whether the request quiesces the rings ({@link Quiesce}, DPDK's
 * `lock_all_qps`). {@link BACKEND_REQUESTS} is the same for
 * backend->frontend requests (sent on the SET_BACKEND_REQ_FD channel).
 * Both sides (src/vhost/backend.ts and the frontend) validate with
 * {@link validateRequest} / {@link validateReply} and build payloads with the
 * encode/decode helpers here.
 *
 * Numbers: 64-bit feature masks are bigint; 64-bit addresses are numbers,
 * decoded with guest-memory.ts `u64ToAddr` semantics: a value at or above
 * 2^53 decodes to -1 and must be rejected by the user.
 */
import { u64ToAddr } from '../mem/guest-memory.js';

// ---------------------------------------------------------------- header

export const HDR_SIZE = 12;
/** Largest payload we accept (QEMU's VhostUserMsg union is smaller). */
export const MAX_PAYLOAD = 4096;
/** Most memory regions in one SET_MEM_TABLE. */
export const MAX_MEM_REGIONS = 8;
/** Most config-space bytes in GET/SET_CONFIG. */
export const MAX_CONFIG_SIZE = 256;
/** Most fds on one message (matches src/sys/socket.ts MAX_FDS). */
export const MAX_MSG_FDS = 8;

export const VERSION = 0x1;
export const VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;

/** In SET_VRING_KICK/CALL/ERR's u64: bits 0-7 index, bit 8 "no fd" (poll instead). */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** Virtio feature bit 30: the backend speaks vhost-user protocol features. */
export const F_PROTOCOL_FEATURES = 30;
/** VHOST_F_LOG_ALL (live-migration dirty logging). */
export const F_LOG_ALL = 26;
/** SET_VRING_ADDR flag: log used-ring writes. */
export const VRING_F_LOG = 0x1;

export interface MsgHeader {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(b: Uint8Array, off = 0): MsgHeader {
  const dv = new DataView(b.buffer, b.byteOffset + off, HDR_SIZE);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

export function encodeHeader(b: Uint8Array, off: number, request: number, flags: number, size: number): void {
  const dv = new DataView(b.buffer, b.byteOffset + off, HDR_SIZE);
  dv.setUint32(0, request >>> 0, true);
  dv.setUint32(4, flags >>> 0, true);
  dv.setUint32(8, size >>> 0, true);
}

/** Header + payload as one buffer ready to send. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HDR_SIZE + payload.length);
  encodeHeader(out, 0, request, flags, payload.length);
  out.set(payload, HDR_SIZE);
  return out;
}

// ---------------------------------------------------------------- request codes

/** Frontend -> backend requests. */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;
export type ReqName = keyof typeof Req;

/** Backend -> frontend requests (on the backend request channel). */
export const BackendReq = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
} as const;
export type BackendReqName = keyof typeof BackendReq;

/** Protocol feature bit numbers (GET/SET_PROTOCOL_FEATURES). */
export const ProtoF = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;
export type ProtoFName = keyof typeof ProtoF;

/** Mask of the given feature bit numbers. */
export function featureMask(...bits: number[]): bigint {
  let m = 0n;
  for (const b of bits) m |= 1n << BigInt(b);
  return m;
}

export function hasFeature(mask: bigint, bit: number): boolean {
  return ((mask >> BigInt(bit)) & 1n) === 1n;
}

/** Names of the set bits of a protocol-feature mask (for logs). */
export function protocolFeatureNames(mask: bigint): string[] {
  const out: string[] = [];
  for (const [n, b] of Object.entries(ProtoF)) if (hasFeature(mask, b)) out.push(n);
  return out;
}

// ---------------------------------------------------------------- payload kinds

export type PayloadKind =
  | 'none'
  | 'u64'
  | 'state' // vring state: index u32, num u32
  | 'addr' // vring address: index, flags, desc, used, avail, log
  | 'memory' // memory table: nregions u32, padding u32, regions[n]
  | 'region' // single region: padding u64, region
  | 'log' // mmap size u64, mmap offset u64
  | 'iotlb'
  | 'config' // offset u32, size u32, flags u32, bytes[size]
  | 'inflight'
  | 'area' // u64, size u64, offset u64
  | 'opaque';

export const STATE_SIZE = 8;
export const ADDR_SIZE = 40;
export const REGION_SIZE = 32;
export const MEMORY_HDR_SIZE = 8;
export const SINGLE_REGION_SIZE = 8 + REGION_SIZE;
export const LOG_SIZE = 16;
export const IOTLB_SIZE = 32;
export const CONFIG_HDR_SIZE = 12;
export const INFLIGHT_SIZE = 24;
export const AREA_SIZE = 24;

/** What the backend sends back for a request. */
export type ReplyKind =
  /** Always replies with this payload kind (GET_*). */
  | { always: PayloadKind }
  /** Replies only when NEED_REPLY is set: a u64, 0 = success. */
  | 'ack';

export interface SizeRule {
  min: number;
  max: number;
}

export interface FdRule {
  min: number;
  max: number;
  /** Exact count derived from the payload (e.g. nregions, NOFD flag), checked after size. */
  fromPayload?: (payload: DataView) => number;
}

/**
 * The backend's handler for a request (src/vhost/backend-protocol.ts implements
 * exactly these, as a `Record<HandlerKey, ...>`). Requests we do not
 * implement name 'unsupported' explicitly.
 */
export type HandlerKey =
  | 'getFeatures'
  | 'setFeatures'
  | 'setOwner'
  | 'resetOwner'
  | 'resetDevice'
  | 'setMemTable'
  | 'addMemReg'
  | 'remMemReg'
  | 'getMaxMemSlots'
  | 'setLogBase'
  | 'setLogFd'
  | 'setVringNum'
  | 'setVringAddr'
  | 'setVringBase'
  | 'getVringBase'
  | 'setVringKick'
  | 'setVringCall'
  | 'setVringErr'
  | 'getProtocolFeatures'
  | 'setProtocolFeatures'
  | 'getQueueNum'
  | 'setVringEnable'
  | 'sendRarp'
  | 'netSetMtu'
  | 'setBackendReqFd'
  | 'getConfig'
  | 'setConfig'
  | 'setStatus'
  | 'getStatus'
  | 'vringKick'
  | 'unsupported';

/**
 * What a request does to the rings the data path is running (applied by the
 * backend's dispatcher around the handler, never by the handler itself):
 *  - 'none': the request changes nothing the data path uses.
 *  - 'changed': after the handler succeeds (and before its reply is built),
 *    the published data path is brought in line with the new state: if what
 *    the rings use changed (memory, addresses, fds, features, started rings)
 *    every lease is revoked and waited for (the rings are quiesced), then the
 *    next description is published; if only enable bits changed, only those.
 *  - 'always': the rings are quiesced before the handler runs (it may free
 *    what they use, e.g. a device reset) and republished after it, as DPDK's
 *    `lock_all_qps`.
 */
export type Quiesce = 'none' | 'changed' | 'always';

export interface RequestSpec {
  code: number;
  name: string;
  payload: PayloadKind;
  size: SizeRule;
  fds: FdRule;
  reply: ReplyKind;
  /** The backend's handler. */
  handler: HandlerKey;
  /** Whether (and when) the request quiesces the rings. */
  quiesce: Quiesce;
  /** Extra payload check (after size), returning a reason or null. */
  check?: (payload: DataView) => string | null;
}

const exact = (n: number): SizeRule => ({ min: n, max: n });
const range = (min: number, max: number): SizeRule => ({ min, max });
const NO_FDS: FdRule = { min: 0, max: 0 };
const ONE_FD: FdRule = { min: 1, max: 1 };

/** KICK/CALL/ERR: one fd unless the NOFD bit is set. */
function vringFdCount(p: DataView): number {
  return p.getUint32(0, true) & VRING_NOFD_MASK ? 0 : 1;
}

function memoryCheck(p: DataView): string | null {
  const n = p.getUint32(0, true);
  if (n > MAX_MEM_REGIONS) return `${n} regions (max ${MAX_MEM_REGIONS})`;
  if (p.byteLength < MEMORY_HDR_SIZE + n * REGION_SIZE) return `size ${p.byteLength} too small for ${n} regions`;
  return null;
}

function configCheck(p: DataView): string | null {
  const size = p.getUint32(4, true);
  if (size > MAX_CONFIG_SIZE) return `config size ${size} > ${MAX_CONFIG_SIZE}`;
  if (p.byteLength !== CONFIG_HDR_SIZE + size) return `payload ${p.byteLength} != 12 + config size ${size}`;
  return null;
}

function vringFdCheck(p: DataView): string | null {
  const v = p.getUint32(0, true);
  const hi = p.getUint32(4, true);
  if (hi !== 0 || (v & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) !== 0) return `reserved bits set in 0x${hi.toString(16)}${v.toString(16).padStart(8, '0')}`;
  return null;
}

function spec(
  name: ReqName,
  payload: PayloadKind,
  size: SizeRule,
  fds: FdRule,
  reply: ReplyKind,
  handler: HandlerKey,
  quiesce: Quiesce,
  check?: (p: DataView) => string | null,
): RequestSpec {
  return { code: Req[name], name, payload, size, fds, reply, handler, quiesce, check };
}

const ALWAYS_U64: ReplyKind = { always: 'u64' };

/** The one table of frontend->backend requests, indexed by request code. */
export const FRONTEND_REQUESTS: ReadonlyMap<number, RequestSpec> = new Map(
  [
    spec('GET_FEATURES', 'none', exact(0), NO_FDS, ALWAYS_U64, 'getFeatures', 'none'),
    spec('SET_FEATURES', 'u64', exact(8), NO_FDS, 'ack', 'setFeatures', 'changed'),
    spec('SET_OWNER', 'none', exact(0), NO_FDS, 'ack', 'setOwner', 'none'),
    spec('RESET_OWNER', 'none', exact(0), NO_FDS, 'ack', 'resetOwner', 'always'),
    spec('SET_MEM_TABLE', 'memory', range(MEMORY_HDR_SIZE, MEMORY_HDR_SIZE + MAX_MEM_REGIONS * REGION_SIZE),
      { min: 0, max: MAX_MEM_REGIONS, fromPayload: (p) => p.getUint32(0, true) }, 'ack', 'setMemTable', 'changed', memoryCheck),
    // With LOG_SHMFD (the only way we take it: the fd is the log) the frontend waits for a reply
    // whatever NEED_REPLY says (QEMU reads one and checks only its request code): a u64, 0 = mapped.
    spec('SET_LOG_BASE', 'log', exact(LOG_SIZE), ONE_FD, ALWAYS_U64, 'setLogBase', 'changed'),
    spec('SET_LOG_FD', 'opaque', range(0, 8), ONE_FD, 'ack', 'setLogFd', 'none'),
    spec('SET_VRING_NUM', 'state', exact(STATE_SIZE), NO_FDS, 'ack', 'setVringNum', 'none'),
    spec('SET_VRING_ADDR', 'addr', exact(ADDR_SIZE), NO_FDS, 'ack', 'setVringAddr', 'changed'),
    spec('SET_VRING_BASE', 'state', exact(STATE_SIZE), NO_FDS, 'ack', 'setVringBase', 'none'),
    spec('GET_VRING_BASE', 'state', exact(STATE_SIZE), NO_FDS, { always: 'state' }, 'getVringBase', 'changed'),
    spec('SET_VRING_KICK', 'u64', exact(8), { min: 0, max: 1, fromPayload: vringFdCount }, 'ack', 'setVringKick', 'changed', vringFdCheck),
    spec('SET_VRING_CALL', 'u64', exact(8), { min: 0, max: 1, fromPayload: vringFdCount }, 'ack', 'setVringCall', 'changed', vringFdCheck),
    spec('SET_VRING_ERR', 'u64', exact(8), { min: 0, max: 1, fromPayload: vringFdCount }, 'ack', 'setVringErr', 'none', vringFdCheck),
    spec('GET_PROTOCOL_FEATURES', 'none', exact(0), NO_FDS, ALWAYS_U64, 'getProtocolFeatures', 'none'),
    spec('SET_PROTOCOL_FEATURES', 'u64', exact(8), NO_FDS, 'ack', 'setProtocolFeatures', 'none'),
    spec('GET_QUEUE_NUM', 'none', exact(0), NO_FDS, ALWAYS_U64, 'getQueueNum', 'none'),
    spec('SET_VRING_ENABLE', 'state', exact(STATE_SIZE), NO_FDS, 'ack', 'setVringEnable', 'changed'),
    spec('SEND_RARP', 'u64', exact(8), NO_FDS, 'ack', 'sendRarp', 'none'),
    spec('NET_SET_MTU', 'u64', exact(8), NO_FDS, 'ack', 'netSetMtu', 'none'),
    spec('SET_BACKEND_REQ_FD', 'none', range(0, 8), ONE_FD, 'ack', 'setBackendReqFd', 'none'),
    spec('IOTLB_MSG', 'iotlb', range(26, IOTLB_SIZE), NO_FDS, 'ack', 'unsupported', 'none'),
    spec('SET_VRING_ENDIAN', 'state', exact(STATE_SIZE), NO_FDS, 'ack', 'unsupported', 'none'),
    spec('GET_CONFIG', 'config', range(CONFIG_HDR_SIZE, CONFIG_HDR_SIZE + MAX_CONFIG_SIZE), NO_FDS, { always: 'config' }, 'getConfig', 'none', configCheck),
    spec('SET_CONFIG', 'config', range(CONFIG_HDR_SIZE, CONFIG_HDR_SIZE + MAX_CONFIG_SIZE), NO_FDS, 'ack', 'setConfig', 'none', configCheck),
    spec('CREATE_CRYPTO_SESSION', 'opaque', range(0, MAX_PAYLOAD), NO_FDS, { always: 'opaque' }, 'unsupported', 'none'),
    spec('CLOSE_CRYPTO_SESSION', 'u64', exact(8), NO_FDS, 'ack', 'unsupported', 'none'),
    spec('POSTCOPY_ADVISE', 'none', exact(0), NO_FDS, { always: 'none' }, 'unsupported', 'none'),
    spec('POSTCOPY_LISTEN', 'none', exact(0), NO_FDS, 'ack', 'unsupported', 'none'),
    spec('POSTCOPY_END', 'none', exact(0), NO_FDS, ALWAYS_U64, 'unsupported', 'none'),
    spec('GET_INFLIGHT_FD', 'inflight', range(20, INFLIGHT_SIZE), NO_FDS, { always: 'inflight' }, 'unsupported', 'none'),
    spec('SET_INFLIGHT_FD', 'inflight', range(20, INFLIGHT_SIZE), ONE_FD, 'ack', 'unsupported', 'none'),
    spec('GPU_SET_SOCKET', 'none', exact(0), ONE_FD, 'ack', 'unsupported', 'none'),
    spec('RESET_DEVICE', 'none', exact(0), NO_FDS, 'ack', 'resetDevice', 'always'),
    spec('VRING_KICK', 'state', exact(STATE_SIZE), NO_FDS, 'ack', 'vringKick', 'none'),
    spec('GET_MAX_MEM_SLOTS', 'none', exact(0), NO_FDS, ALWAYS_U64, 'getMaxMemSlots', 'none'),
    spec('ADD_MEM_REG', 'region', exact(SINGLE_REGION_SIZE), ONE_FD, 'ack', 'addMemReg', 'changed'),
    // Older QEMU sent an fd with REM_MEM_REG; the spec says accept and ignore it.
    spec('REM_MEM_REG', 'region', exact(SINGLE_REGION_SIZE), { min: 0, max: 1 }, 'ack', 'remMemReg', 'changed'),
    spec('SET_STATUS', 'u64', exact(8), NO_FDS, 'ack', 'setStatus', 'changed'),
    spec('GET_STATUS', 'none', exact(0), NO_FDS, ALWAYS_U64, 'getStatus', 'none'),
  ].map((s) => [s.code, s]),
);

export interface BackendRequestSpec {
  code: number;
  name: BackendReqName;
  payload: PayloadKind;
  size: SizeRule;
  fds: FdRule;
}

/** Backend->frontend requests (the frontend validates what it receives with this). */
export const BACKEND_REQUESTS: ReadonlyMap<number, BackendRequestSpec> = new Map(
  (
    [
      { code: BackendReq.IOTLB_MSG, name: 'IOTLB_MSG', payload: 'iotlb', size: range(26, IOTLB_SIZE), fds: NO_FDS },
      { code: BackendReq.CONFIG_CHANGE_MSG, name: 'CONFIG_CHANGE_MSG', payload: 'none', size: range(0, 8), fds: NO_FDS },
      { code: BackendReq.VRING_HOST_NOTIFIER_MSG, name: 'VRING_HOST_NOTIFIER_MSG', payload: 'area', size: exact(AREA_SIZE), fds: { min: 0, max: 1 } },
      { code: BackendReq.VRING_CALL, name: 'VRING_CALL', payload: 'state', size: exact(STATE_SIZE), fds: NO_FDS },
      { code: BackendReq.VRING_ERR, name: 'VRING_ERR', payload: 'state', size: exact(STATE_SIZE), fds: NO_FDS },
    ] satisfies BackendRequestSpec[]
  ).map((s) => [s.code, s]),
);

/** Name of a frontend request code, e.g. 5 -> 'SET_MEM_TABLE'. */
export function requestName(code: number): string {
  return FRONTEND_REQUESTS.get(code)?.name ?? `UNKNOWN(${code})`;
}

export function backendRequestName(code: number): string {
  return BACKEND_REQUESTS.get(code)?.name ?? `UNKNOWN(${code})`;
}

// ---------------------------------------------------------------- errors

export type ProtocolErrorReason =
  | 'short-header' // EOF inside a header
  | 'short-payload' // EOF inside a payload
  | 'bad-version'
  | 'too-big' // size > MAX_PAYLOAD
  | 'unknown-request'
  | 'bad-size'
  | 'bad-fds'
  | 'too-many-fds' // more fds than one message may carry, accumulated over several reads
  | 'message-timeout' // a message started but not completed in time
  | 'bad-payload'
  | 'bad-value' // well-formed but not acceptable (index out of range, absurd region ...)
  | 'out-of-order' // not valid in the current state
  | 'unsupported'
  | 'bad-reply'
  | 'guest-memory-fault' // the frontend shrank a memory file under our mapping (SIGBUS absorbed)
  | 'io';

/** A protocol violation by the peer, with a machine-readable reason. */
export class VhostProtocolError extends Error {
  readonly reason: ProtocolErrorReason;
  readonly request: number;
  constructor(reason: ProtocolErrorReason, message: string, request = -1) {
    super(request >= 0 ? `${requestName(request)}: ${message}` : message);
    this.name = 'VhostProtocolError';
    this.reason = reason;
    this.request = request;
  }
}

/**
 * Check a received frontend request against the table. Returns the spec, or
 * throws VhostProtocolError. Does not look at connection state.
 */
export function validateRequest(hdr: MsgHeader, payload: Uint8Array, nfds: number): RequestSpec {
  if ((hdr.flags & VERSION_MASK) !== VERSION) throw new VhostProtocolError('bad-version', `flags 0x${hdr.flags.toString(16)}`, hdr.request);
  if (hdr.flags & FLAG_REPLY) throw new VhostProtocolError('bad-version', 'REPLY flag set on a request', hdr.request);
  const s = FRONTEND_REQUESTS.get(hdr.request);
  if (!s) throw new VhostProtocolError('unknown-request', `unknown request ${hdr.request}`);
  checkSizeAndFds(hdr.request, s.size, s.fds, payload, nfds);
  if (s.check) {
    const why = s.check(dv(payload));
    if (why) throw new VhostProtocolError('bad-payload', why, hdr.request);
  }
  return s;
}

/** Check a backend->frontend request against its table. */
export function validateBackendRequest(hdr: MsgHeader, payload: Uint8Array, nfds: number): BackendRequestSpec {
  if ((hdr.flags & VERSION_MASK) !== VERSION) throw new VhostProtocolError('bad-version', `flags 0x${hdr.flags.toString(16)}`);
  const s = BACKEND_REQUESTS.get(hdr.request);
  if (!s) throw new VhostProtocolError('unknown-request', `unknown backend request ${hdr.request}`);
  checkSizeAndFds(-1, s.size, s.fds, payload, nfds);
  return s;
}

/**
 * Check a reply (received by the frontend) to `request`: version, REPLY flag,
 * same request code, payload size for its kind. `needReply` tells whether an
 * ack was asked for.
 */
export function validateReply(request: number, hdr: MsgHeader, payload: Uint8Array, nfds: number): void {
  if ((hdr.flags & VERSION_MASK) !== VERSION || !(hdr.flags & FLAG_REPLY)) {
    throw new VhostProtocolError('bad-reply', `reply flags 0x${hdr.flags.toString(16)}`, request);
  }
  if (hdr.request !== request) throw new VhostProtocolError('bad-reply', `reply for request ${hdr.request}`, request);
  const s = FRONTEND_REQUESTS.get(request);
  const kind: PayloadKind = s && s.reply !== 'ack' ? s.reply.always : 'u64';
  const ok =
    kind === 'u64' ? payload.length === 8
    : kind === 'state' ? payload.length === STATE_SIZE
    : kind === 'config' ? payload.length === 0 || (payload.length >= CONFIG_HDR_SIZE && payload.length <= CONFIG_HDR_SIZE + MAX_CONFIG_SIZE)
    : kind === 'inflight' ? payload.length >= 20 && payload.length <= INFLIGHT_SIZE
    : kind === 'none' ? payload.length === 0
    : payload.length <= MAX_PAYLOAD;
  if (!ok) throw new VhostProtocolError('bad-reply', `reply payload of ${payload.length} bytes for kind ${kind}`, request);
  const maxFds = kind === 'inflight' || request === Req.POSTCOPY_ADVISE ? 1 : 0;
  if (nfds > maxFds) throw new VhostProtocolError('bad-reply', `${nfds} fds on reply`, request);
}

function checkSizeAndFds(request: number, size: SizeRule, fds: FdRule, payload: Uint8Array, nfds: number): void {
  if (payload.length < size.min || payload.length > size.max) {
    const want = size.min === size.max ? `${size.min}` : `${size.min}..${size.max}`;
    throw new VhostProtocolError('bad-size', `payload ${payload.length} bytes, expected ${want}`, request);
  }
  if (nfds < fds.min || nfds > fds.max) {
    throw new VhostProtocolError('bad-fds', `${nfds} fds, expected ${fds.min}..${fds.max}`, request);
  }
  if (fds.fromPayload) {
    const want = fds.fromPayload(dv(payload));
    if (nfds !== want) throw new VhostProtocolError('bad-fds', `${nfds} fds, payload says ${want}`, request);
  }
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

// ---------------------------------------------------------------- payload codecs

function u64At(d: DataView, off: number): number {
  return u64ToAddr(d.getUint32(off + 4, true), d.getUint32(off, true));
}

function setU64Num(d: DataView, off: number, v: number): void {
  if (!(v >= 0 && Number.isSafeInteger(v))) throw new RangeError(`u64 field: ${v} is not a safe non-negative integer`);
  d.setUint32(off, v % 0x100000000, true);
  d.setUint32(off + 4, Math.floor(v / 0x100000000), true);
}

/** u64 payload as a bigint (features, protocol features, any raw value). */
export function decodeU64(p: Uint8Array): bigint {
  return dv(p).getBigUint64(0, true);
}

export function encodeU64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  dv(b).setBigUint64(0, BigInt.asUintN(64, v), true);
  return b;
}

/** u64 payload as a number; -1 if it is >= 2^53. */
export function decodeU64Num(p: Uint8Array): number {
  return u64At(dv(p), 0);
}

export function encodeU64Num(v: number): Uint8Array {
  const b = new Uint8Array(8);
  setU64Num(dv(b), 0, v);
  return b;
}

export interface VringState {
  index: number;
  num: number;
}

export function decodeState(p: Uint8Array): VringState {
  const d = dv(p);
  return { index: d.getUint32(0, true), num: d.getUint32(4, true) };
}

export function encodeState(s: VringState): Uint8Array {
  const b = new Uint8Array(STATE_SIZE);
  const d = dv(b);
  d.setUint32(0, s.index >>> 0, true);
  d.setUint32(4, s.num >>> 0, true);
  return b;
}

/** SET_VRING_ADDR. desc/used/avail are -1 when the wire value is >= 2^53. */
export interface VringAddr {
  index: number;
  flags: number;
  desc: number;
  used: number;
  avail: number;
  /** Guest address for used-ring logging (raw). */
  log: bigint;
}

export function decodeAddr(p: Uint8Array): VringAddr {
  const d = dv(p);
  return {
    index: d.getUint32(0, true),
    flags: d.getUint32(4, true),
    desc: u64At(d, 8),
    used: u64At(d, 16),
    avail: u64At(d, 24),
    log: d.getBigUint64(32, true),
  };
}

export function encodeAddr(a: VringAddr): Uint8Array {
  const b = new Uint8Array(ADDR_SIZE);
  const d = dv(b);
  d.setUint32(0, a.index >>> 0, true);
  d.setUint32(4, a.flags >>> 0, true);
  setU64Num(d, 8, a.desc);
  setU64Num(d, 16, a.used);
  setU64Num(d, 24, a.avail);
  d.setBigUint64(32, BigInt.asUintN(64, a.log), true);
  return b;
}

/** One memory region. Fields are -1 when the wire value is >= 2^53. */
export interface MemRegionDesc {
  gpa: number;
  size: number;
  uaddr: number;
  mmapOffset: number;
}

function decodeRegionAt(d: DataView, off: number): MemRegionDesc {
  return { gpa: u64At(d, off), size: u64At(d, off + 8), uaddr: u64At(d, off + 16), mmapOffset: u64At(d, off + 24) };
}

function encodeRegionAt(d: DataView, off: number, r: MemRegionDesc): void {
  setU64Num(d, off, r.gpa);
  setU64Num(d, off + 8, r.size);
  setU64Num(d, off + 16, r.uaddr);
  setU64Num(d, off + 24, r.mmapOffset);
}

/** SET_MEM_TABLE payload (validated size: see the table's check). */
export function decodeMemTable(p: Uint8Array): MemRegionDesc[] {
  const d = dv(p);
  const n = d.getUint32(0, true);
  if (n > MAX_MEM_REGIONS || p.length < MEMORY_HDR_SIZE + n * REGION_SIZE) {
    throw new VhostProtocolError('bad-payload', `memory table of ${n} regions in ${p.length} bytes`, Req.SET_MEM_TABLE);
  }
  const out: MemRegionDesc[] = [];
  for (let i = 0; i < n; i++) out.push(decodeRegionAt(d, MEMORY_HDR_SIZE + i * REGION_SIZE));
  return out;
}

/** Encode a memory table with exactly regions.length regions (as QEMU and DPDK size it). */
export function encodeMemTable(regions: readonly MemRegionDesc[]): Uint8Array {
  if (regions.length > MAX_MEM_REGIONS) throw new RangeError(`${regions.length} regions (max ${MAX_MEM_REGIONS})`);
  const b = new Uint8Array(MEMORY_HDR_SIZE + regions.length * REGION_SIZE);
  const d = dv(b);
  d.setUint32(0, regions.length, true);
  regions.forEach((r, i) => encodeRegionAt(d, MEMORY_HDR_SIZE + i * REGION_SIZE, r));
  return b;
}

/** ADD_MEM_REG / REM_MEM_REG payload. */
export function decodeSingleRegion(p: Uint8Array): MemRegionDesc {
  return decodeRegionAt(dv(p), 8);
}

export function encodeSingleRegion(r: MemRegionDesc): Uint8Array {
  const b = new Uint8Array(SINGLE_REGION_SIZE);
  encodeRegionAt(dv(b), 8, r);
  return b;
}

/** SET_VRING_KICK/CALL/ERR u64. */
export interface VringFdArg {
  index: number;
  noFd: boolean;
}

export function decodeVringFd(p: Uint8Array): VringFdArg {
  const v = dv(p).getUint32(0, true);
  return { index: v & VRING_IDX_MASK, noFd: (v & VRING_NOFD_MASK) !== 0 };
}

export function encodeVringFd(a: VringFdArg): Uint8Array {
  if (a.index < 0 || a.index > VRING_IDX_MASK) throw new RangeError(`vring index ${a.index}`);
  const b = new Uint8Array(8);
  dv(b).setUint32(0, a.index | (a.noFd ? VRING_NOFD_MASK : 0), true);
  return b;
}

/** GET/SET_CONFIG. */
export interface ConfigPayload {
  offset: number;
  flags: number;
  data: Uint8Array;
}

export const CONFIG_FLAG_WRITABLE = 0;
export const CONFIG_FLAG_MIGRATION = 1;

export function decodeConfig(p: Uint8Array): ConfigPayload {
  const d = dv(p);
  const size = d.getUint32(4, true);
  if (size > MAX_CONFIG_SIZE || p.length !== CONFIG_HDR_SIZE + size) {
    throw new VhostProtocolError('bad-payload', `config size ${size} in ${p.length} bytes`);
  }
  return { offset: d.getUint32(0, true), flags: d.getUint32(8, true), data: p.slice(CONFIG_HDR_SIZE, CONFIG_HDR_SIZE + size) };
}

export function encodeConfig(c: ConfigPayload): Uint8Array {
  if (c.data.length > MAX_CONFIG_SIZE) throw new RangeError(`config of ${c.data.length} bytes`);
  const b = new Uint8Array(CONFIG_HDR_SIZE + c.data.length);
  const d = dv(b);
  d.setUint32(0, c.offset >>> 0, true);
  d.setUint32(4, c.data.length, true);
  d.setUint32(8, c.flags >>> 0, true);
  b.set(c.data, CONFIG_HDR_SIZE);
  return b;
}

/** GET/SET_INFLIGHT_FD. */
export interface InflightDesc {
  mmapSize: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}

export function decodeInflight(p: Uint8Array): InflightDesc {
  const d = dv(p);
  return { mmapSize: u64At(d, 0), mmapOffset: u64At(d, 8), numQueues: d.getUint16(16, true), queueSize: d.getUint16(18, true) };
}

export function encodeInflight(i: InflightDesc): Uint8Array {
  const b = new Uint8Array(INFLIGHT_SIZE);
  const d = dv(b);
  setU64Num(d, 0, i.mmapSize);
  setU64Num(d, 8, i.mmapOffset);
  d.setUint16(16, i.numQueues, true);
  d.setUint16(18, i.queueSize, true);
  return b;
}

/** SET_LOG_BASE. */
export interface LogDesc {
  mmapSize: number;
  mmapOffset: number;
}

export function decodeLog(p: Uint8Array): LogDesc {
  const d = dv(p);
  return { mmapSize: u64At(d, 0), mmapOffset: u64At(d, 8) };
}

export function encodeLog(l: LogDesc): Uint8Array {
  const b = new Uint8Array(LOG_SIZE);
  const d = dv(b);
  setU64Num(d, 0, l.mmapSize);
  setU64Num(d, 8, l.mmapOffset);
  return b;
}

/** IOTLB message (both directions). */
export interface IotlbMsg {
  iova: number;
  size: number;
  uaddr: number;
  perm: number;
  type: number;
}

export function decodeIotlb(p: Uint8Array): IotlbMsg {
  const d = dv(p);
  return { iova: u64At(d, 0), size: u64At(d, 8), uaddr: u64At(d, 16), perm: d.getUint8(24), type: d.getUint8(25) };
}

export function encodeIotlb(m: IotlbMsg): Uint8Array {
  const b = new Uint8Array(IOTLB_SIZE);
  const d = dv(b);
  setU64Num(d, 0, m.iova);
  setU64Num(d, 8, m.size);
  setU64Num(d, 16, m.uaddr);
  d.setUint8(24, m.perm);
  d.setUint8(25, m.type);
  return b;
}

/** VRING_HOST_NOTIFIER_MSG area. */
export interface VringArea {
  index: number;
  noFd: boolean;
  size: number;
  offset: number;
}

export function decodeArea(p: Uint8Array): VringArea {
  const d = dv(p);
  const v = d.getUint32(0, true);
  return { index: v & VRING_IDX_MASK, noFd: (v & VRING_NOFD_MASK) !== 0, size: u64At(d, 8), offset: u64At(d, 16) };
}

export function encodeArea(a: VringArea): Uint8Array {
  const b = new Uint8Array(AREA_SIZE);
  const d = dv(b);
  d.setUint32(0, (a.index & VRING_IDX_MASK) | (a.noFd ? VRING_NOFD_MASK : 0), true);
  setU64Num(d, 8, a.size);
  setU64Num(d, 16, a.offset);
  return b;
}

/** SEND_RARP: the guest MAC is the first 6 bytes of the u64. */
export function decodeRarpMac(p: Uint8Array): Uint8Array {
  return p.slice(0, 6);
}

/** Reply-ack payload: 0 = success. */
export function encodeAck(ok: boolean): Uint8Array {
  return encodeU64(ok ? 0n : 1n);
}

/** Build a reply message to `request`. */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  return encodeMessage(request, VERSION | FLAG_REPLY, payload);
}

/** Build a request message; needReply sets NEED_REPLY. */
export function encodeRequest(request: number, payload?: Uint8Array, needReply = false): Uint8Array {
  return encodeMessage(request, VERSION | (needReply ? FLAG_NEED_REPLY : 0), payload);
}
