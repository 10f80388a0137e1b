/**
 * The OpenFlow 1.3 agent of one bridge: serves its management socket
 * (RUNDIR/BRIDGE.mgmt, what `ovs-ofctl -O OpenFlow13` talks to) and its
 * controller connections, and translates messages into the ofproto model
 * (FlowTables, groups) through an {@link OfBridgeHost} the daemon implements.
 *
 * API used by the daemon (src/daemon/switch.ts), and through it by the OVSDB
 * Controller table and `tsvs set-controller`:
 *   const a = new OpenFlowAgent(host, { mgmtPath, log });
 *   await a.start();                          // listen on the management socket
 *   await a.setControllers(['tcp:127.0.0.1:6653']);   // active/passive targets
 *   a.setFailMode('secure' | 'standalone');
 *   a.failOpen                                // standalone, controllers set, none connected
 *   a.packetIn(frame, inPort, ev)             // from the slow path (ControllerEvent)
 *   a.flowRemoved(rule, reason)               // expiry / CLI deletes
 *   a.portStatus(desc, reason)                // port added, deleted, link changed
 *   a.status()                                // controllers and their state
 *   await a.stop();
 *
 * Connections: the management socket and punix:/ptcp: targets are "service"
 * connections (no asynchronous messages until SET_CONFIG sets a nonzero
 * miss_send_len, as OVS), tcp:/unix:
 * targets are controllers (role EQUAL, the spec's default async masks).
 * Messages of one connection are handled in order, one at a time; BARRIER
 * answers only after host.sync() (the rule changes reached the datapath).
 */
import type { Logger } from 'pino';
import type { FlowTables, Rule, RemovalReason } from '../ofproto/tables.js';
import type { Group, ControllerEvent } from '../ofproto/xlate.js';
import { newMatch, type FlowSpec, type Match, type OfAction } from '../ofproto/flow-syntax.js';
import { FLOW_WORDS } from '../dp/flow-key.js';
import {
  T, MP, ET, EC, FC, FF, PR, RR, ROLE, GT, GC, OFPP13, OFPG_ANY, OFPG_ALL, OFPG_MAX, OFPTT_ALL, OFP_NO_BUFFER,
  OXM_FIELDS, OXM_CLASS_BASIC, SETTABLE_OXM, OfError, Writer, message, encodeError, multipartReplies, entry,
  decodeMatch, encodeMatch, encodeInPortMatch, decodeInstructions, encodeInstructions, decodeActions, encodeAction,
  encodePort, fromOfPort, toOfPort, oxmHeader, type OfHeader, type OfPortDesc,
} from './wire.js';
import { OfConnection, ActiveController, PassiveListener, parseTarget, type Target } from './conn.js';

export const N_OF_TABLES = 255;
/** Inactivity probe of controller connections, ms (OVS's default 5 s). */
export const PROBE_MS = 5000;

export interface OfPortStats {
  portNo: number;
  rxPackets: number; txPackets: number; rxBytes: number; txBytes: number; rxDropped: number; txDropped: number;
  durationMs: number;
}

/** What the agent needs from the switch (implemented in src/daemon). */
export interface OfBridgeHost {
  readonly name: string;
  readonly tables: FlowTables;
  readonly groups: Map<number, Group>;
  datapathId(): bigint;
  ports(): OfPortDesc[];
  portStats(): Promise<OfPortStats[]>;
  /** Run a PACKET_OUT (translation, datapath injection, packet-ins it causes). */
  packetOut(frame: Uint8Array, inPort: number, actions: OfAction[]): Promise<void>;
  /** Rules or groups changed (revalidation kick, fail-open recomputation). */
  changed(): void;
  /** Resolves when every change made before the call reached the datapath (and counters were credited). */
  sync(): Promise<void>;
}

export type FailMode = 'standalone' | 'secure';

interface Async { packetIn: [number, number]; portStatus: [number, number]; flowRemoved: [number, number] }

interface Session {
  conn: OfConnection;
  service: boolean;
  role: number;
  async: Async;
  missSendLen: number;
  configFlags: number;
  chain: Promise<void>;
}

/** The spec's default asynchronous configuration (service connections too: they are gated by miss_send_len, see wantsAsync). */
const defaultAsync = (): Async => ({ packetIn: [0x7, 0], portStatus: [0x7, 0x7], flowRemoved: [0xf, 0] });

/**
 * Whether a session receives an asynchronous message of this kind and reason.
 * As OVS: a service connection (management socket, punix:, ptcp:) receives
 * none until it sets a nonzero miss_send_len (SET_CONFIG, what `ovs-ofctl
 * monitor` does); then its SET_ASYNC masks apply as for a controller.
 */
function wantsAsync(s: Session, masks: [number, number], reason: number): boolean {
  if (!s.conn.ready || (s.service && s.missSendLen === 0)) return false;
  return (masks[s.role === ROLE.SLAVE ? 1 : 0] & (1 << reason)) !== 0;
}

const REASON_CODE: Record<RemovalReason, number> = { idle_timeout: RR.IDLE_TIMEOUT, hard_timeout: RR.HARD_TIMEOUT, delete: RR.DELETE };

export class OpenFlowAgent {
  private mgmt: PassiveListener | null = null;
  private readonly sessions = new Set<Session>();
  private readonly active = new Map<string, ActiveController>();
  private readonly passive = new Map<string, PassiveListener>();
  private failMode: FailMode = 'standalone';
  private generation: bigint | undefined;
  /** Messages refused with an ERROR (by type/code), for diagnostics. */
  readonly errorsSent = new Map<string, number>();
  packetInsSent = 0;

  constructor(readonly host: OfBridgeHost, private readonly opts: { mgmtPath: string; log: Logger }) {}

  async start(): Promise<void> {
    this.mgmt = await PassiveListener.listen({ kind: 'punix', path: this.opts.mgmtPath, text: `punix:${this.opts.mgmtPath}` },
      (c) => this.attach(c, true));
  }

  async stop(): Promise<void> {
    for (const a of this.active.values()) a.stop();
    this.active.clear();
    for (const p of this.passive.values()) await p.close();
    this.passive.clear();
    await this.mgmt?.close();
    this.mgmt = null;
  }

  // ---------------- controllers and fail mode ----------------

  /** Replace the controller targets (tcp:, unix: connect out; ptcp:, punix: listen). Throws on a bad target. */
  async setControllers(targets: readonly string[]): Promise<void> {
    const parsed: Target[] = targets.map((t) => parseTarget(t));
    const want = new Set(parsed.map((t) => t.text));
    for (const [k, a] of this.active) if (!want.has(k)) { a.stop(); this.active.delete(k); }
    for (const [k, p] of this.passive) if (!want.has(k)) { await p.close(); this.passive.delete(k); }
    for (const t of parsed) {
      if (t.kind === 'tcp' || t.kind === 'unix') {
        if (!this.active.has(t.text)) {
          this.active.set(t.text, new ActiveController(t, PROBE_MS, (c) => {
            this.opts.log.info(`bridge ${this.host.name}: connected to controller ${t.text}`);
            this.attach(c, false);
            this.host.changed();
          }));
        }
      } else if (!this.passive.has(t.text)) {
        this.passive.set(t.text, await PassiveListener.listen(t, (c) => this.attach(c, true), 0));
      }
    }
    this.host.changed();
  }

  get controllers(): string[] {
    return [...this.active.keys(), ...this.passive.keys()];
  }

  setFailMode(mode: FailMode): void {
    if (mode !== 'standalone' && mode !== 'secure') throw new Error(`fail mode '${String(mode)}': expected standalone or secure`);
    this.failMode = mode;
    this.host.changed();
  }

  getFailMode(): FailMode {
    return this.failMode;
  }

  /**
   * OVS fail-open: with fail_mode standalone, controllers configured and none
   * connected, the bridge forwards as a learning switch (NORMAL).
   */
  get failOpen(): boolean {
    if (this.failMode !== 'standalone' || this.active.size === 0) return false;
    for (const a of this.active.values()) if (a.conn?.ready) return false;
    return true;
  }

  status(): { target: string; state: string; connects: number; lastError: string }[] {
    return [...this.active.values()].map((a) => ({ target: a.target.text, state: a.conn?.ready ? 'connected' : a.state, connects: a.connects, lastError: a.lastError }));
  }

  // ---------------- sessions ----------------

  private attach(conn: OfConnection, service: boolean): void {
    const s: Session = { conn, service, role: ROLE.EQUAL, async: defaultAsync(), missSendLen: service ? 0 : 128, configFlags: 0, chain: Promise.resolve() };
    this.sessions.add(s);
    conn.on('ready', () => { if (!service) this.host.changed(); });
    conn.on('message', (msg, h) => {
      s.chain = s.chain.then(() => this.handle(s, msg, h)).catch((e: Error) => {
        this.opts.log.warn(`bridge ${this.host.name}: OpenFlow ${conn.peer}: ${e.message}`);
      });
    });
    conn.on('close', (why) => {
      this.sessions.delete(s);
      if (!service) {
        this.opts.log.info(`bridge ${this.host.name}: controller ${conn.peer} disconnected: ${why}`);
        this.host.changed();
      }
    });
  }

  private error(s: Session, h: OfHeader, msg: Buffer, e: OfError): void {
    const k = `${e.type}/${e.code}`;
    this.errorsSent.set(k, (this.errorsSent.get(k) ?? 0) + 1);
    this.opts.log.info(`bridge ${this.host.name}: OpenFlow ${s.conn.peer}: refused message type ${h.type}: ${e.message} (error ${k})`);
    s.conn.send(encodeError(h.xid, e.type, e.code, msg));
  }

  private async handle(s: Session, msg: Buffer, h: OfHeader): Promise<void> {
    try {
      await this.dispatch(s, msg, h);
    } catch (e) {
      if (e instanceof OfError) this.error(s, h, msg, e);
      else if (e instanceof RangeError) this.error(s, h, msg, new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, e.message));
      else throw e;
    }
  }

  private checkWritable(s: Session): void {
    if (s.role === ROLE.SLAVE) throw new OfError(ET.BAD_REQUEST, EC.BR_IS_SLAVE, 'the connection has role SLAVE');
  }

  private async dispatch(s: Session, msg: Buffer, h: OfHeader): Promise<void> {
    const c = s.conn;
    switch (h.type) {
      case T.FEATURES_REQUEST:
        c.send(message(T.FEATURES_REPLY, h.xid, (w) => {
          w.u64(this.host.datapathId()).u32(0).u8(N_OF_TABLES).u8(0).zeros(2);
          w.u32(0x1 | 0x2 | 0x4 | 0x8 | 0x40); // FLOW_STATS TABLE_STATS PORT_STATS GROUP_STATS PORT_BLOCKED
          w.u32(0);
        }));
        return;
      case T.GET_CONFIG_REQUEST:
        c.send(message(T.GET_CONFIG_REPLY, h.xid, (w) => w.u16(s.configFlags).u16(s.missSendLen)));
        return;
      case T.SET_CONFIG: {
        if (msg.length < 12) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'set_config: length');
        const flags = msg.readUInt16BE(8);
        if ((flags & 3) !== 0) throw new OfError(ET.SWITCH_CONFIG_FAILED, EC.SCF_BAD_FLAGS, 'only OFPC_FRAG_NORMAL is supported');
        s.configFlags = flags;
        s.missSendLen = msg.readUInt16BE(10);
        return;
      }
      case T.GET_ASYNC_REQUEST:
        c.send(message(T.GET_ASYNC_REPLY, h.xid, (w) => {
          for (const a of [s.async.packetIn, s.async.portStatus, s.async.flowRemoved]) w.u32(a[0]).u32(a[1]);
        }));
        return;
      case T.SET_ASYNC: {
        if (msg.length < 32) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'set_async: length');
        const r = (i: number): number => msg.readUInt32BE(8 + 4 * i);
        s.async = { packetIn: [r(0), r(1)], portStatus: [r(2), r(3)], flowRemoved: [r(4), r(5)] };
        return;
      }
      case T.ROLE_REQUEST:
        this.role(s, msg, h);
        return;
      case T.BARRIER_REQUEST:
        await this.host.sync();
        c.send(message(T.BARRIER_REPLY, h.xid));
        return;
      case T.FLOW_MOD:
        this.checkWritable(s);
        this.flowMod(msg);
        return;
      case T.GROUP_MOD:
        this.checkWritable(s);
        this.groupMod(msg);
        return;
      case T.PACKET_OUT:
        this.checkWritable(s);
        await this.packetOut(msg);
        return;
      case T.MULTIPART_REQUEST:
        await this.multipart(s, msg, h);
        return;
      case T.TABLE_MOD:
        this.checkWritable(s);
        // OpenFlow 1.3 table config bits are deprecated; nothing to change
        return;
      case T.EXPERIMENTER:
        throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_EXPERIMENTER, `experimenter 0x${msg.length >= 12 ? msg.readUInt32BE(8).toString(16) : '?'} messages are not supported`);
      default:
        throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_TYPE, `message type ${h.type} is not supported`);
    }
  }

  private role(s: Session, msg: Buffer, h: OfHeader): void {
    if (msg.length < 24) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'role_request: length');
    const role = msg.readUInt32BE(8);
    const gen = msg.readBigUInt64BE(16);
    if (role > ROLE.SLAVE) throw new OfError(ET.ROLE_REQUEST_FAILED, EC.RRF_BAD_ROLE, `role ${role}`);
    if (role === ROLE.MASTER || role === ROLE.SLAVE) {
      if (this.generation !== undefined && BigInt.asIntN(64, gen - this.generation) < 0n) {
        throw new OfError(ET.ROLE_REQUEST_FAILED, EC.RRF_STALE, `generation ${gen} is older than ${this.generation}`);
      }
      this.generation = gen;
    }
    if (role !== ROLE.NOCHANGE) {
      if (role === ROLE.MASTER) for (const o of this.sessions) if (o !== s && o.role === ROLE.MASTER) o.role = ROLE.SLAVE;
      s.role = role;
    }
    s.conn.send(message(T.ROLE_REPLY, h.xid, (w) => w.u32(s.role).zeros(4).u64(this.generation ?? 0n)));
  }

  // ---------------- flow mods ----------------

  private validateActions(actions: readonly OfAction[]): void {
    for (const a of actions) {
      if (a.type === 'group' && !this.host.groups.has(a.group)) {
        throw new OfError(ET.BAD_ACTION, EC.BA_BAD_OUT_GROUP, `group ${a.group} does not exist`);
      }
      if (a.type === 'write_actions') this.validateActions(a.actions);
    }
  }

  private flowMod(msg: Buffer): void {
    if (msg.length < 56) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'flow_mod: length');
    const cookie = msg.readBigUInt64BE(8);
    const cookieMask = msg.readBigUInt64BE(16);
    const table = msg[24];
    const cmd = msg[25];
    const idle = msg.readUInt16BE(26);
    const hard = msg.readUInt16BE(28);
    const priority = msg.readUInt16BE(30);
    const bufferId = msg.readUInt32BE(32);
    const outPort = msg.readUInt32BE(36);
    const outGroup = msg.readUInt32BE(40);
    const flags = msg.readUInt16BE(44);
    const { match, size } = decodeMatch(msg, 48);
    if (cmd > FC.DELETE_STRICT) throw new OfError(ET.FLOW_MOD_FAILED, EC.FMF_BAD_COMMAND, `command ${cmd}`);
    if (flags & ~0x1f) throw new OfError(ET.FLOW_MOD_FAILED, EC.FMF_BAD_FLAGS, `flags 0x${flags.toString(16)}`);
    const isDelete = cmd === FC.DELETE || cmd === FC.DELETE_STRICT;
    if (table === OFPTT_ALL ? !isDelete : table >= N_OF_TABLES) throw new OfError(ET.FLOW_MOD_FAILED, EC.FMF_BAD_TABLE_ID, `table ${table}`);
    const actions = isDelete ? [] : decodeInstructions(msg, 48 + size, msg.length - 48 - size, table);
    this.validateActions(actions);
    if (!isDelete && bufferId !== OFP_NO_BUFFER) throw new OfError(ET.BAD_REQUEST, EC.BR_BUFFER_UNKNOWN, `buffer ${bufferId}: this switch does not buffer packets`);
    const now = Date.now();
    const tables = this.host.tables;
    const spec: FlowSpec = {
      table: table === OFPTT_ALL ? undefined : table, priority, hasPriority: true, cookie: cmd === FC.ADD ? cookie : cookie,
      cookieMask: cmd === FC.ADD ? 0n : cookieMask, idleTimeout: idle, hardTimeout: hard, match, actions,
      outPort: isDelete && outPort !== OFPP13.ANY ? fromOfPort(outPort) : undefined,
      outGroup: isDelete && outGroup !== OFPG_ANY ? outGroup : undefined,
    };
    const add = (): void => {
      if (flags & FF.CHECK_OVERLAP) {
        for (const r of tables.rules(spec.table)) {
          if (r.priority === priority && overlaps(r.match, match)) {
            throw new OfError(ET.FLOW_MOD_FAILED, EC.FMF_OVERLAP, 'overlapping rule of the same priority');
          }
        }
      }
      const r = tables.addFlow({ ...spec, cookieMask: 0n }, now);
      r.flags = flags;
      r.origin = 'openflow';
    };
    switch (cmd) {
      case FC.ADD:
        add();
        break;
      case FC.MODIFY:
      case FC.MODIFY_STRICT: {
        const rules = tables.modFlowRules(spec, actions, cmd === FC.MODIFY_STRICT);
        if (rules.length === 0) {
          // as OVS: a modify that matches nothing adds the flow (unless it filters by cookie)
          if (cookieMask === 0n) add();
        } else {
          for (const r of rules) {
            if (flags & FF.RESET_COUNTS) { r.nPackets = 0; r.nBytes = 0; }
            r.origin = 'openflow';
          }
        }
        break;
      }
      default: {
        const removed = tables.delFlows(spec, cmd === FC.DELETE_STRICT);
        for (const r of removed) this.flowRemoved(r, 'delete');
      }
    }
    this.host.changed();
  }

  private groupMod(msg: Buffer): void {
    if (msg.length < 16) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'group_mod: length');
    const cmd = msg.readUInt16BE(8);
    const type = msg[10];
    const id = msg.readUInt32BE(12);
    const groups = this.host.groups;
    if (cmd === GC.DELETE) {
      const ids = id === OFPG_ALL ? [...groups.keys()] : [id];
      for (const g of ids) {
        if (!groups.delete(g)) continue;
        // flow entries that use a deleted group are removed (spec 6.7)
        const removed = this.host.tables.delFlows({ ...emptyCrit(), outGroup: g }, false);
        for (const r of removed) this.flowRemoved(r, 'delete', RR.GROUP_DELETE);
      }
      this.host.changed();
      return;
    }
    if (cmd !== GC.ADD && cmd !== GC.MODIFY) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_BAD_COMMAND, `command ${cmd}`);
    if (id > OFPG_MAX) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_INVALID_GROUP, `group id 0x${id.toString(16)}`);
    const kind = type === GT.ALL ? 'all' : type === GT.SELECT ? 'select' : type === GT.INDIRECT ? 'indirect' : undefined;
    if (!kind) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_BAD_TYPE, `group type ${type} is not supported (ALL, SELECT, INDIRECT are)`);
    const buckets: Group['buckets'] = [];
    let p = 16;
    while (p < msg.length) {
      if (p + 16 > msg.length) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_BAD_BUCKET, 'bucket truncated');
      const blen = msg.readUInt16BE(p);
      if (blen < 16 || p + blen > msg.length) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_BAD_BUCKET, `bucket length ${blen}`);
      const weight = msg.readUInt16BE(p + 2);
      const actions = decodeActions(msg, p + 16, blen - 16);
      for (const a of actions) {
        if (a.type === 'group') {
          if (a.group === id) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_LOOP, 'a group cannot use itself');
          if (!groups.has(a.group)) throw new OfError(ET.BAD_ACTION, EC.BA_BAD_OUT_GROUP, `group ${a.group} does not exist`);
        }
      }
      buckets.push({ weight: kind === 'select' ? weight : 1, actions });
      p += blen;
    }
    if (kind === 'indirect' && buckets.length !== 1) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_BAD_BUCKET, 'an indirect group has exactly one bucket');
    if (cmd === GC.ADD && groups.has(id)) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_GROUP_EXISTS, `group ${id} exists`);
    if (cmd === GC.MODIFY && !groups.has(id)) throw new OfError(ET.GROUP_MOD_FAILED, EC.GMF_UNKNOWN_GROUP, `group ${id} does not exist`);
    groups.set(id, { id, type: kind, buckets });
    this.host.tables.version++;
    this.host.changed();
  }

  private async packetOut(msg: Buffer): Promise<void> {
    if (msg.length < 24) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'packet_out: length');
    const bufferId = msg.readUInt32BE(8);
    const inPort = msg.readUInt32BE(12);
    const alen = msg.readUInt16BE(16);
    if (24 + alen > msg.length) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'packet_out: actions length');
    if (bufferId !== OFP_NO_BUFFER) throw new OfError(ET.BAD_REQUEST, EC.BR_BUFFER_UNKNOWN, `buffer ${bufferId}: this switch does not buffer packets`);
    if ((inPort > OFPP13.MAX && inPort !== OFPP13.CONTROLLER && inPort !== OFPP13.LOCAL) || inPort === 0) {
      throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_PORT, `in_port 0x${inPort.toString(16)}`);
    }
    const actions = decodeActions(msg, 24, alen);
    this.validateActions(actions);
    const frame = msg.subarray(24 + alen);
    if (frame.length < 14) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_PACKET, `packet of ${frame.length} bytes`);
    await this.host.packetOut(Uint8Array.from(frame), fromOfPort(inPort), actions);
  }

  // ---------------- asynchronous messages ----------------

  /** Send a packet-in (from the slow path or a packet-out) to the connections whose async config asks for it. */
  packetIn(frame: Uint8Array, inPort: number, ev: ControllerEvent): void {
    const reason = ev.reason === 'no_match' ? PR.NO_MATCH : PR.ACTION;
    // never buffered (buffer_id NO_BUFFER), so the whole packet goes up whatever max_len says
    // (OpenFlow 1.3.5 section 7.4.1; OVS 3.1 does the same)
    const len = frame.length;
    let built: Buffer | undefined;
    for (const s of this.sessions) {
      if (!wantsAsync(s, s.async.packetIn, reason)) continue;
      built ??= message(T.PACKET_IN, 0, (w) => {
        w.u32(OFP_NO_BUFFER).u16(frame.length).u8(reason).u8(ev.table).u64(ev.cookie);
        encodeInPortMatch(w, inPort);
        w.zeros(2).bytes(frame.subarray(0, len));
      });
      s.conn.send(built);
      this.packetInsSent++;
    }
  }

  /** FLOW_REMOVED for a rule with SEND_FLOW_REM (expiry, delete, group delete). */
  flowRemoved(r: Rule, reason: RemovalReason, code = REASON_CODE[reason]): void {
    if (((r.flags ?? 0) & FF.SEND_FLOW_REM) === 0) return;
    const now = Date.now();
    let built: Buffer | undefined;
    for (const s of this.sessions) {
      if (!wantsAsync(s, s.async.flowRemoved, code)) continue;
      built ??= message(T.FLOW_REMOVED, 0, (w) => {
        const d = Math.max(0, now - r.created);
        w.u64(r.cookie).u16(r.priority).u8(code).u8(r.table).u32(Math.floor(d / 1000)).u32((d % 1000) * 1e6);
        w.u16(r.idleTimeout).u16(r.hardTimeout).u64(r.nPackets).u64(r.nBytes);
        encodeMatch(w, r.match);
      });
      s.conn.send(built);
    }
  }

  /** PORT_STATUS (reason: 0 add, 1 delete, 2 modify). */
  portStatus(p: OfPortDesc, reason: number): void {
    let built: Buffer | undefined;
    for (const s of this.sessions) {
      if (!wantsAsync(s, s.async.portStatus, reason)) continue;
      built ??= message(T.PORT_STATUS, 0, (w) => { w.u8(reason).zeros(7); encodePort(w, p); });
      s.conn.send(built);
    }
  }

  // ---------------- multipart ----------------

  private async multipart(s: Session, msg: Buffer, h: OfHeader): Promise<void> {
    if (msg.length < 16) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'multipart: length');
    const type = msg.readUInt16BE(8);
    const body = msg.subarray(16);
    const reply = (entries: Buffer[]): void => { for (const m of multipartReplies(h.xid, type, entries)) s.conn.send(m); };
    switch (type) {
      case MP.DESC:
        reply([entry((w) => {
          w.str('tsvs', 256).str('tsvs userspace virtual switch', 256).str('tsvs (OpenFlow 1.3 agent)', 256)
            .str('None', 32).str(`bridge ${this.host.name}`, 256);
        })]);
        return;
      case MP.FLOW:
      case MP.AGGREGATE: {
        if (body.length < 32) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_LEN, 'flow stats request: length');
        const table = body[0];
        const outPort = body.readUInt32BE(4);
        const outGroup = body.readUInt32BE(8);
        const cookie = body.readBigUInt64BE(16);
        const cookieMask = body.readBigUInt64BE(24);
        const { match } = decodeMatch(body, 32);
        if (table !== OFPTT_ALL && table >= N_OF_TABLES) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_TABLE_ID, `table ${table}`);
        await this.host.sync(); // counters credited from the datapath
        const rules = this.host.tables.select({
          ...emptyCrit(), table: table === OFPTT_ALL ? undefined : table, cookie, cookieMask, match,
          outPort: outPort === OFPP13.ANY ? undefined : fromOfPort(outPort), outGroup: outGroup === OFPG_ANY ? undefined : outGroup,
        }, false);
        if (type === MP.AGGREGATE) {
          let p = 0;
          let b = 0;
          for (const r of rules) { p += r.nPackets; b += r.nBytes; }
          reply([entry((w) => w.u64(p).u64(b).u32(rules.length).zeros(4))]);
          return;
        }
        const now = Date.now();
        reply(rules.map((r) => entry((w) => {
          const d = Math.max(0, now - r.created);
          w.u16(0).u8(r.table).u8(0).u32(Math.floor(d / 1000)).u32((d % 1000) * 1e6);
          w.u16(r.priority).u16(r.idleTimeout).u16(r.hardTimeout).u16(r.flags ?? 0).zeros(4);
          w.u64(r.cookie).u64(r.nPackets).u64(r.nBytes);
          encodeMatch(w, r.match);
          encodeInstructions(w, r.actions);
          w.setU16(0, w.len);
        })));
        return;
      }
      case MP.TABLE: {
        const out: Buffer[] = [];
        for (let t = 0; t < N_OF_TABLES; t++) {
          const rules = this.host.tables.rules(t);
          let matched = 0;
          for (const r of rules) matched += r.nPackets;
          out.push(entry((w) => w.u8(t).zeros(3).u32(rules.length).u64(matched).u64(matched)));
        }
        reply(out);
        return;
      }
      case MP.PORT_STATS: {
        const want = body.length >= 4 ? body.readUInt32BE(0) : OFPP13.ANY;
        const stats = (await this.host.portStats()).filter((p) => want === OFPP13.ANY || toOfPort(p.portNo) === want);
        if (want !== OFPP13.ANY && stats.length === 0) throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_PORT, `port ${want}`);
        reply(stats.map((p) => entry((w) => {
          w.u32(toOfPort(p.portNo)).zeros(4);
          w.u64(p.rxPackets).u64(p.txPackets).u64(p.rxBytes).u64(p.txBytes).u64(p.rxDropped).u64(p.txDropped);
          w.u64(0).u64(0).u64(0).u64(0).u64(0).u64(0);
          w.u32(Math.floor(p.durationMs / 1000)).u32((p.durationMs % 1000) * 1e6);
        })));
        return;
      }
      case MP.PORT_DESC:
        reply(this.host.ports().map((p) => entry((w) => encodePort(w, p))));
        return;
      case MP.GROUP_DESC:
        reply([...this.host.groups.values()].sort((a, b) => a.id - b.id).map((g) => entry((w) => {
          w.u16(0).u8(g.type === 'all' ? GT.ALL : g.type === 'select' ? GT.SELECT : GT.INDIRECT).u8(0).u32(g.id);
          for (const b of g.buckets) {
            const start = w.len;
            w.u16(0).u16(g.type === 'select' ? b.weight : 0).u32(OFPP13.ANY).u32(OFPG_ANY).zeros(4);
            for (const a of b.actions) encodeAction(w, a);
            w.setU16(start, w.len - start);
          }
          w.setU16(0, w.len);
        })));
        return;
      case MP.GROUP_FEATURES:
        reply([entry((w) => {
          w.u32((1 << GT.ALL) | (1 << GT.SELECT) | (1 << GT.INDIRECT)).u32(0x2); // types; SELECT_WEIGHT
          w.u32(0xffffff00).u32(0xffffff00).u32(0xffffff00).u32(0);
          const acts = (1 << 0) | (1 << 17) | (1 << 18) | (1 << 22) | (1 << 25);
          w.u32(acts).u32(acts).u32(acts).u32(0);
        })]);
        return;
      case MP.TABLE_FEATURES:
        if (body.length > 0) throw new OfError(ET.TABLE_FEATURES_FAILED, EC.TFF_EPERM, 'changing table features is not supported');
        reply(tableFeatures());
        return;
      default:
        throw new OfError(ET.BAD_REQUEST, EC.BR_BAD_MULTIPART, `multipart type ${type} is not supported`);
    }
  }

  /** Open sessions (for tests and `show`). */
  get sessionCount(): number {
    return this.sessions.size;
  }
}

function emptyCrit(): FlowSpec {
  return {
    table: undefined, priority: 0, hasPriority: false, cookie: 0n, cookieMask: 0n, idleTimeout: 0, hardTimeout: 0,
    match: newMatch(), actions: [], outPort: undefined,
  };
}

/** Whether some packet (with some metadata) could match both. */
function overlaps(a: Match, b: Match): boolean {
  const am = a.meta?.mask ?? 0n;
  const bm = b.meta?.mask ?? 0n;
  if ((((a.meta?.value ?? 0n) ^ (b.meta?.value ?? 0n)) & am & bm) !== 0n) return false;
  for (let i = 0; i < FLOW_WORDS; i++) if (((a.key[i] ^ b.key[i]) & a.mask[i] & b.mask[i]) !== 0) return false;
  return true;
}

/** TABLE_FEATURES entries for every table, each with all the properties (and their _MISS twins). */
function tableFeatures(): Buffer[] {
  const instr = [1, 2, 3, 4, 5];
  const acts = [0, 17, 18, 22, 25];
  const matchHdrs = OXM_FIELDS.map((d) => oxmHeader(d.field, d.maskable, d.len, d.cls));
  const wildHdrs = OXM_FIELDS.map((d) => oxmHeader(d.field, false, d.len, d.cls));
  const setHdrs = OXM_FIELDS.filter((d) => d.cls === OXM_CLASS_BASIC && SETTABLE_OXM.includes(d.field)).map((d) => oxmHeader(d.field, false, d.len));
  const out: Buffer[] = [];
  for (let t = 0; t < N_OF_TABLES; t++) {
    out.push(entry((w) => {
      w.u16(0).u8(t).zeros(5).str(t === 0 ? 'classifier' : `table${t}`, 32);
      w.u64(0n).u64(0xffffffffffffffffn).u32(0).u32(1000000);
      const prop = (type: number, body: (w: Writer) => void): void => {
        const start = w.len;
        w.u16(type).u16(0);
        body(w);
        w.setU16(start + 2, w.len - start);
        w.pad8(start);
      };
      const myInstr = t === N_OF_TABLES - 1 ? instr.filter((i) => i !== 1) : instr;
      for (const k of [0, 1]) prop(k, (x) => { for (const i of myInstr) x.u16(i).u16(4); });
      for (const k of [2, 3]) prop(k, (x) => { for (let n = t + 1; n < N_OF_TABLES; n++) x.u8(n); });
      for (const k of [4, 5, 6, 7]) prop(k, (x) => { for (const a of acts) x.u16(a).u16(4); });
      prop(8, (x) => { for (const hd of matchHdrs) x.u32(hd); });
      prop(10, (x) => { for (const hd of wildHdrs) x.u32(hd); });
      for (const k of [12, 13, 14, 15]) prop(k, (x) => { for (const hd of setHdrs) x.u32(hd); });
      w.setU16(0, w.len);
    }));
  }
  return out;
}


