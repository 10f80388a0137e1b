/**
 * The switch's configuration database: bridges, ports and OpenFlow rules,
 * stored as one JSON document written atomically (write temp, fsync, rename,
 * fsync the directory), so a crash leaves either the old or the new file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export type PortType = 'vhost-user' | 'vhost-user-client' | 'tap' | 'afpacket' | 'virtio-user';

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

const PORT_TYPES: readonly PortType[] = ['vhost-user', 'vhost-user-client', 'tap', 'afpacket', 'virtio-user'];

/** Validate a parsed document; throws ConfigError naming the first problem. */
export function validateConfig(doc: unknown): SwitchConfig {
  const d = doc as SwitchConfig;
  if (typeof d !== 'object' || d === null || d.version !== 1 || !Array.isArray(d.bridges)) {
    throw new ConfigError('config: expected {"version":1,"bridges":[...]}');
  }
  const names = new Set<string>();
  for (const b of d.bridges) {
    if (typeof b?.name !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(b.name)) throw new ConfigError(`config: bad bridge name ${JSON.stringify(b?.name)}`);
    if (!Array.isArray(b.ports) || !Array.isArray(b.flows)) throw new ConfigError(`config: bridge ${b.name}: ports and flows must be arrays`);
    for (const p of b.ports) {
      if (typeof p?.name !== 'string' || names.has(p.name)) throw new ConfigError(`config: bad or duplicate port name ${JSON.stringify(p?.name)}`);
      names.add(p.name);
      if (!PORT_TYPES.includes(p.type)) throw new ConfigError(`config: port ${p.name}: unknown type ${JSON.stringify(p.type)}`);
      if (!Number.isInteger(p.ofport) || p.ofport < 1 || p.ofport > 0xfeff) throw new ConfigError(`config: port ${p.name}: bad ofport ${p.ofport}`);
    }
    if (!b.flows.every((f) => typeof f === 'string')) throw new ConfigError(`config: bridge ${b.name}: flows must be strings`);
  }
  return d;
}

export class ConfigDb {
  readonly file: string;
  config: SwitchConfig;

  private constructor(file: string, config: SwitchConfig) {
    this.file = file;
    this.config = config;
  }

  /** Open (or create empty) the database at file. A corrupt file is an error, never silently replaced. */
  static open(file: string): ConfigDb {
    let cfg = emptyConfig();
    if (fs.existsSync(file)) {
      let doc: unknown;
      try {
        doc = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (e) {
        throw new ConfigError(`config database ${file} is not valid JSON: ${(e as Error).message}`);
      }
      cfg = validateConfig(doc);
    }
    return new ConfigDb(file, cfg);
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
