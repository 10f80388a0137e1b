/**
 * tsvs capture, the switch's side: a session per `tsvs capture` run. The PMD
 * thread that polls the port copies its frames into a ring in shared memory
 * (src/dp/capture-tap.ts); the CLI reads them with `capture-read` calls,
 * filtered here by an ovs-ofctl match (e.g. `tcp,tp_dst=80`). A session the
 * CLI stops reading (it died) ends after 10 s.
 */
import { newCaptureRing, CaptureReader, DIR_RX, DIR_TX } from '../dp/capture-tap.js';
import { FLOW_WORDS, extractKeyFull, maskedEqual } from '../dp/flow-key.js';
import { parseFlow, type Match } from '../ofproto/flow-syntax.js';
import type { MethodTable } from '../metrics/view.js';

export interface CapturePmd {
  captureStart(id: number, portNo: number, dirs: number, buf: SharedArrayBuffer): Promise<boolean>;
  captureStop(id: number): Promise<boolean>;
}

export interface CaptureHost {
  port(name: string): { portNo: number; pmd: CapturePmd } | undefined;
  bridgeOf(name: string): string | undefined;
  resolvePort(name: string): number | undefined;
}

/** Error for the user (bad port, filter, option). */
export class CaptureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CaptureError';
  }
}

interface Session {
  id: number;
  portName: string;
  portNo: number;
  pmd: CapturePmd;
  reader: CaptureReader;
  filter: Match | null;
  /** Frames to deliver in all (0: no limit). */
  count: number;
  delivered: number;
  /** Frames that did not match the filter. */
  filtered: number;
  lastRead: number;
  snaplen: number;
}

const IDLE_MS = 10_000;
const RING_BYTES = 16 << 20;

export class CaptureSessions {
  private readonly host: CaptureHost;
  private readonly sessions = new Map<number, Session>();
  private nextId = 1;
  private readonly timer: NodeJS.Timeout;
  private readonly key = new Uint32Array(FLOW_WORDS);

  constructor(host: CaptureHost) {
    this.host = host;
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const s of [...this.sessions.values()]) if (now - s.lastRead > IDLE_MS) void this.stop(s.id);
    }, 1000);
    this.timer.unref();
  }

  async start(p: { port?: unknown; direction?: unknown; filter?: unknown; count?: unknown; snaplen?: unknown; buffer?: unknown }): Promise<{ id: number; snaplen: number; port: string }> {
    const name = String(p.port ?? '');
    const at = this.host.port(name);
    if (!at) throw new CaptureError(`no port named '${name}'`);
    const dir = String(p.direction ?? 'both');
    const dirs = dir === 'rx' ? DIR_RX : dir === 'tx' ? DIR_TX : dir === 'both' ? DIR_RX | DIR_TX : -1;
    if (dirs < 0) throw new CaptureError(`--direction must be rx, tx or both, got '${dir}'`);
    const count = p.count === undefined || p.count === null ? 0 : Number(p.count);
    if (!Number.isInteger(count) || count < 0) throw new CaptureError(`-c must be a count >= 0, got '${String(p.count)}'`);
    const snap = p.snaplen === undefined || p.snaplen === null ? 9216 : Number(p.snaplen);
    if (!Number.isInteger(snap) || snap < 64 || snap > 65528) throw new CaptureError(`--snaplen must be 64..65528, got '${String(p.snaplen)}'`);
    let filter: Match | null = null;
    const ftext = p.filter === undefined || p.filter === null ? '' : String(p.filter).trim();
    if (ftext !== '') {
      try {
        filter = parseFlow(ftext, { mode: 'match', resolvePort: (n) => this.host.resolvePort(n) }).match;
      } catch (e) {
        throw new CaptureError(`filter: ${(e as Error).message}`);
      }
    }
    let slots = Math.max(256, Math.min(8192, Math.floor(RING_BYTES / (16 + snap))));
    if (p.buffer !== undefined && p.buffer !== null) {
      slots = Number(p.buffer);
      if (!Number.isInteger(slots) || slots < 16 || slots > 65536) throw new CaptureError(`--buffer must be 16..65536 frames, got '${String(p.buffer)}'`);
    }
    const ring = newCaptureRing(slots, snap);
    const id = this.nextId++;
    await at.pmd.captureStart(id, at.portNo, dirs, ring.buf);
    this.sessions.set(id, {
      id, portName: name, portNo: at.portNo, pmd: at.pmd, reader: new CaptureReader(ring.buf), filter, count, delivered: 0, filtered: 0,
      lastRead: Date.now(), snaplen: ring.snaplen,
    });
    return { id, snaplen: ring.snaplen, port: name };
  }

  /** Frames since the last read (base64), the counts, and whether the capture is over. */
  async read(p: { id?: unknown; max?: unknown }): Promise<{
    frames: { ts: number; dir: string; len: number; data: string }[]; overflow: number; seen: number; filtered: number; delivered: number; done: boolean; reason?: string;
  }> {
    const s = this.sessions.get(Number(p.id));
    if (!s) throw new CaptureError(`no capture session ${String(p.id)}`);
    s.lastRead = Date.now();
    const max = Math.max(1, Math.min(8192, Number(p.max ?? 4096) || 4096));
    const frames: { ts: number; dir: string; len: number; data: string }[] = [];
    for (const f of s.reader.drain(max)) {
      if (s.count > 0 && s.delivered >= s.count) break;
      if (s.filter !== null) {
        extractKeyFull(f.data, 0, f.data.length, s.portNo, this.key, 0);
        if (!maskedEqual(this.key, 0, s.filter.key, 0, s.filter.mask, 0)) {
          s.filtered++;
          continue;
        }
      }
      frames.push({ ts: f.tsMs, dir: f.dir, len: f.origLen, data: Buffer.from(f.data.buffer, f.data.byteOffset, f.data.length).toString('base64') });
      s.delivered++;
    }
    let reason: string | undefined;
    if (s.count > 0 && s.delivered >= s.count) reason = `${s.count} frames captured`;
    const now = this.host.port(s.portName);
    if (!now || now.portNo !== s.portNo) reason = `port ${s.portName} was deleted`;
    const out = { frames, overflow: s.reader.overflow, seen: s.reader.seen, filtered: s.filtered, delivered: s.delivered, done: reason !== undefined, reason };
    if (reason !== undefined) await this.stop(s.id);
    return out;
  }

  async stop(id: number): Promise<boolean> {
    const s = this.sessions.get(id);
    if (!s) return false;
    this.sessions.delete(id);
    await s.pmd.captureStop(id).catch(() => false);
    return true;
  }

  register(c: MethodTable): void {
    c.on('capture-start', (p) => this.start(p));
    c.on('capture-read', (p) => this.read(p));
    c.on('capture-stop', (p) => this.stop(Number(p.id)));
  }

  close(): void {
    clearInterval(this.timer);
    this.sessions.clear();
  }
}
