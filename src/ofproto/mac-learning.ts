/**
 * MAC learning table of one bridge: (VLAN, MAC) -> port, with aging
 * (default 300 s, like OVS mac-aging-time) and a maximum size (default 8192,
 * like OVS mac-table-size) beyond which the least recently learned entry is
 * evicted.
 *
 * `version` bumps whenever forwarding could change: a new entry, a MAC moving
 * to another port, an entry expiring, being evicted or flushed. (A refresh
 * of an existing entry on the same port does not bump it.) Translations that
 * consulted the table (NORMAL) must be revalidated when it changes.
 *
 * Times are milliseconds supplied by the caller.
 */
import { formatMacNumber } from '../util/net.js';

export const MAC_DEFAULT_AGING_SEC = 300;
export const MAC_DEFAULT_MAX_ENTRIES = 8192;

export interface MacEntry {
  readonly vlan: number;
  readonly mac: number;
  port: number;
  /** ms of the last time a frame from this MAC was seen. */
  lastSeen: number;
}

export type LearnResult = 'new' | 'moved' | 'refreshed' | 'ignored';

export interface MacLearningOptions {
  agingSec?: number;
  maxEntries?: number;
}

/** Whether a 48-bit MAC number has the group (multicast/broadcast) bit. */
export function isMulticastMac(mac: number): boolean {
  return Math.floor(mac / 2 ** 40) % 2 === 1;
}

export class MacLearningTable {
  agingSec: number;
  maxEntries: number;
  version = 0;
  /** Counters. */
  learned = 0;
  moved = 0;
  expired = 0;
  evicted = 0;
  /** Insertion order = least recently learned first (entries are re-inserted on refresh). */
  private map = new Map<string, MacEntry>();

  constructor(opts: MacLearningOptions = {}) {
    this.agingSec = opts.agingSec ?? MAC_DEFAULT_AGING_SEC;
    this.maxEntries = opts.maxEntries ?? MAC_DEFAULT_MAX_ENTRIES;
    if (this.maxEntries < 1) throw new RangeError('maxEntries must be >= 1');
  }

  get size(): number { return this.map.size; }

  /** Learn that `mac` on `vlan` was seen on `port` at `now`. Multicast sources are ignored. */
  learn(vlan: number, mac: number, port: number, now: number): LearnResult {
    if (isMulticastMac(mac)) return 'ignored';
    const k = keyOf(vlan, mac);
    const e = this.map.get(k);
    if (e && now - e.lastSeen < this.agingSec * 1000) {
      this.map.delete(k);
      this.map.set(k, e);
      e.lastSeen = now;
      if (e.port !== port) {
        e.port = port;
        this.moved++;
        this.version++;
        return 'moved';
      }
      return 'refreshed';
    }
    if (e) { this.map.delete(k); this.expired++; }
    while (this.map.size >= this.maxEntries) {
      const first = this.map.keys().next().value as string;
      this.map.delete(first);
      this.evicted++;
    }
    this.map.set(k, { vlan, mac, port, lastSeen: now });
    this.learned++;
    this.version++;
    return 'new';
  }

  /** Learned port of (vlan, mac), or undefined (also if aged out at `now`). */
  lookup(vlan: number, mac: number, now: number): number | undefined {
    const e = this.map.get(keyOf(vlan, mac));
    if (!e || now - e.lastSeen >= this.agingSec * 1000) return undefined;
    return e.port;
  }

  /** Remove entries older than the aging time. Returns how many. */
  expire(now: number): number {
    let n = 0;
    const limit = this.agingSec * 1000;
    for (const [k, e] of this.map) {
      if (now - e.lastSeen < limit) break; // map is ordered by lastSeen
      this.map.delete(k);
      n++;
    }
    if (n > 0) { this.expired += n; this.version++; }
    return n;
  }

  /** Forget everything learned on a port (port deleted / link down). */
  flushPort(port: number): number {
    let n = 0;
    for (const [k, e] of this.map) if (e.port === port) { this.map.delete(k); n++; }
    if (n > 0) this.version++;
    return n;
  }

  /** Forget everything. */
  flush(): void {
    if (this.map.size > 0) this.version++;
    this.map.clear();
  }

  /** Snapshot of the entries, least recently seen first. */
  entries(): MacEntry[] {
    return [...this.map.values()].map((e) => ({ ...e }));
  }

  /** `ovs-appctl fdb/show` style text. */
  format(now: number, portName?: (port: number) => string | undefined): string {
    const lines = [' port  VLAN  MAC                Age'];
    for (const e of [...this.map.values()].reverse()) {
      const age = Math.max(0, Math.floor((now - e.lastSeen) / 1000));
      const p = portName?.(e.port) ?? String(e.port);
      const mac = formatMacNumber(e.mac);
      lines.push(`${p.padStart(5)}  ${String(e.vlan).padStart(4)}  ${mac}  ${String(age).padStart(3)}`);
    }
    return lines.join('\n');
  }
}

function keyOf(vlan: number, mac: number): string {
  return `${vlan}/${mac}`;
}
