/**
 * The switch's configuration database: bridges, ports and OpenFlow rules,
 * stored as one JSON document written atomically (write temp, fsync, rename,
 * fsync the directory), so a crash leaves either the old or the new file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { portNumberProblem } from '../dp/port-number.js';
import { portVlan, type PortVlanConfig } from '../ofproto/port-vlan.js';

export type PortType = 'vhost-user' | 'vhost-user-client' | 'tap' | 'afpacket' | 'virtio-user' | 'vxlan';

/** A tunnel port's settings (OVS Interface options remote_ip, local_ip, key, dst_port). */
export interface TunnelConfig {
  remoteIp: string;
  /** Default: the address the kernel's route to remoteIp would use. */
  localIp?: string;
  /** VNI, or 'flow' (set_field:N->tun_id). Default 0. */
  key?: number | 'flow';
  dstPort?: number;
}

export interface PortConfig {
  name: string;
  type: PortType;
  /** OpenFlow port number within its bridge. */
  ofport: number;
  /** vhost-user socket path (server: ours; client: the frontend's). */
  path?: string;
  /** Kernel interface for tap/afpacket. */
  iface?: string;
  queues?: number;
  mac?: string;
  mtu?: number;
  /** Network namespace of the kernel interface (afpacket, vxlan underlay). */
  netns?: string;
  /** vxlan: tunnel settings (iface is the underlay). */
  tunnel?: TunnelConfig;
  /** VLAN role in NORMAL, as OVS's Port columns (src/ofproto/port-vlan.ts). */
  vlan?: PortVlanConfig;
}

export interface BridgeConfig {
  name: string;
  ports: PortConfig[];
  /** Rules in ovs-ofctl syntax, in the order they were added. */
  flows: string[];
  /** OpenFlow controller targets (tcp:HOST:PORT, unix:PATH, ptcp:PORT, punix:PATH). */
  controllers?: string[];
  /** OVS fail_mode (default standalone). */
  failMode?: 'standalone' | 'secure';
}

export interface SwitchConfig {
  version: 1;
  bridges: BridgeConfig[];
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function emptyConfig(): SwitchConfig {
  return { version: 1, bridges: [] };
}

const PORT_TYPES: readonly PortType[] = ['vhost-user', 'vhost-user-client', 'tap', 'afpacket', 'virtio-user', 'vxlan'];

/** Validate a parsed document; throws ConfigError naming the first problem. */
export function validateConfig(doc: unknown): SwitchConfig {
  const { config, skipped } = loadConfig(doc);
  if (skipped.length > 0) throw new ConfigError(skipped[0]);
  return config;
}

/**
 * Read a parsed document, keeping what is valid: a document that is not
 * {"version":1,"bridges":[...]} throws ConfigError; a bad bridge or port entry
 * (bad name, unknown type, port number out of range, duplicate) is left out and
 * named in `skipped`, so that one bad entry cannot keep the switch from starting.
 */
export function loadConfig(doc: unknown): { config: SwitchConfig; skipped: string[] } {
  const d = doc as SwitchConfig;
  if (typeof d !== 'object' || d === null || d.version !== 1 || !Array.isArray(d.bridges)) {
    throw new ConfigError('config: expected {"version":1,"bridges":[...]}');
  }
  const skipped: string[] = [];
  const bridges: BridgeConfig[] = [];
  const names = new Set<string>();
  const bridgeNames = new Set<string>();
  const numbers = new Set<number>();
  for (const b of d.bridges) {
    if (typeof b?.name !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(b.name) || bridgeNames.has(b.name)) {
      skipped.push(`config: bad or duplicate bridge name ${JSON.stringify(b?.name)}: bridge skipped`);
      continue;
    }
    if (!Array.isArray(b.ports) || !Array.isArray(b.flows)) {
      skipped.push(`config: bridge ${b.name}: ports and flows must be arrays: bridge skipped`);
      continue;
    }
    bridgeNames.add(b.name);
    const ports: PortConfig[] = [];
    for (const p of b.ports as PortConfig[]) {
      let problem: string | null = null;
      if (typeof p?.name !== 'string' || names.has(p.name)) problem = `bad or duplicate port name ${JSON.stringify(p?.name)}`;
      else if (!PORT_TYPES.includes(p.type)) problem = `unknown type ${JSON.stringify(p.type)}`;
      else problem = portNumberProblem(p.ofport) ?? (numbers.has(p.ofport) ? `port number ${p.ofport} is used twice` : null);
      if (problem === null && p.vlan !== undefined) {
        try {
          portVlan(p.vlan);
        } catch (e) {
          problem = `vlan: ${(e as Error).message}`;
        }
      }
      if (problem !== null) {
        skipped.push(`config: bridge ${b.name}: port ${typeof p?.name === 'string' ? p.name : '?'}: ${problem}: port skipped`);
        continue;
      }
      names.add(p.name);
      numbers.add(p.ofport);
      ports.push(p);
    }
    const flows = (b.flows as unknown[]).filter((f): f is string => typeof f === 'string');
    if (flows.length !== b.flows.length) skipped.push(`config: bridge ${b.name}: ${b.flows.length - flows.length} rules that are not strings skipped`);
    bridges.push({ ...b, ports, flows });
  }
  return { config: { ...d, bridges }, skipped };
}

export class ConfigDb {
  readonly file: string;
  config: SwitchConfig;

  private constructor(file: string, config: SwitchConfig) {
    this.file = file;
    this.config = config;
  }

  /**
   * Entries of the file that were left out at open (each a message saying
   * what and why); the file as it was is kept in `keptAs` until the next save.
   */
  skipped: string[] = [];
  /** Where the file as read was copied when entries were skipped. */
  keptAs: string | null = null;
  /** Temporary files of earlier writers that died mid-save, removed at open. */
  removedTemps: string[] = [];

  /**
   * Open (or create empty) the database at file. A file that is not JSON or not
   * a configuration is an error, never silently replaced; a bad entry in it is
   * skipped (see `skipped`), and the original copied to FILE.skipped.json.
   * Stale `.FILE.PID.tmp` files of dead processes are removed.
   */
  static open(file: string): ConfigDb {
    let cfg = emptyConfig();
    const removedTemps = removeStaleTemps(file);
    let skipped: string[] = [];
    let keptAs: string | null = null;
    if (fs.existsSync(file)) {
      let doc: unknown;
      const text = fs.readFileSync(file, 'utf8');
      try {
        doc = JSON.parse(text);
      } catch (e) {
        throw new ConfigError(`config database ${file} is not valid JSON: ${(e as Error).message}`);
      }
      ({ config: cfg, skipped } = loadConfig(doc));
      if (skipped.length > 0) {
        keptAs = `${file}.skipped.json`;
        fs.writeFileSync(keptAs, text, { mode: 0o600 });
      }
    }
    const db = new ConfigDb(file, cfg);
    db.skipped = skipped;
    db.keptAs = keptAs;
    db.removedTemps = removedTemps;
    return db;
  }

  /** An empty database that is never read from disk (save() still writes file if called). */
  static inMemory(file: string): ConfigDb {
    return new ConfigDb(file, emptyConfig());
  }

  /** Persist atomically. */
  save(): void {
    const dir = path.dirname(this.file);
    const tmp = path.join(dir, `.${path.basename(this.file)}.${process.pid}.tmp`);
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(this.config, null, 2) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  }

  bridge(name: string): BridgeConfig | undefined {
    return this.config.bridges.find((b) => b.name === name);
  }
}

/** Remove `.BASENAME.PID.tmp` files next to file whose PID is not a live process (a writer killed mid-save). */
function removeStaleTemps(file: string): string[] {
  const dir = path.dirname(file);
  const re = new RegExp(`^\\.${path.basename(file).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d+)\\.tmp$`);
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = re.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid !== process.pid && pidAlive(pid)) continue;
    try {
      fs.unlinkSync(path.join(dir, n));
      removed.push(n);
    } catch {
      /* gone meanwhile */
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
