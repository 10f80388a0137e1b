/**
 * RFC 7047 JSON-RPC client for ovsdb-server: unix:PATH or tcp:HOST:PORT,
 * messages back to back (parsed incrementally), answers the server's
 * `echo`, probes an idle connection with its own echo, and reconnects with
 * exponential backoff. Each (re)connection calls `onSession`, which redoes
 * whatever state the session needs (get_schema, lock, monitor), as
 * ovs-vswitchd's IDL does.
 */
import * as net from 'node:net';
import { JsonSplitter } from './json-stream.js';

export class OvsdbError extends Error {
  /** The server's error object (RFC 7047: {error, details}), if any. */
  readonly detail: unknown;
  constructor(message: string, detail?: unknown) {
    super(message);
    this.name = 'OvsdbError';
    this.detail = detail;
  }
}

export interface Endpoint {
  kind: 'unix' | 'tcp';
  path?: string;
  host?: string;
  port?: number;
}

/** Parse an OVS remote: unix:PATH or tcp:HOST:PORT (IPv6 host in brackets). */
export function parseRemote(s: string): Endpoint {
  if (s.startsWith('unix:') && s.length > 5) return { kind: 'unix', path: s.slice(5) };
  const m = /^tcp:(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(s);
  if (m) {
    const port = Number(m[2]);
    if (port >= 1 && port <= 65535) return { kind: 'tcp', host: m[1].replace(/^\[|\]$/g, ''), port };
  }
  throw new OvsdbError(`bad OVSDB remote '${s}': expected unix:PATH or tcp:HOST:PORT`);
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  method: string;
}

export interface ClientOptions {
  /** Idle time before we send an echo, and then wait for any message (ms). OVS: 5000. */
  probeMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  log?: (level: 'info' | 'warn' | 'debug', msg: string) => void;
}

export type NotifyHandler = (method: string, params: unknown[]) => void;

export class OvsdbClient {
  readonly remote: string;
  private readonly ep: Endpoint;
  private sock: net.Socket | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private backoff: number;
  private stopped = false;
  private lastRx = 0;
  private probeSent = false;
  private probeTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly opts: Required<Omit<ClientOptions, 'log'>> & Pick<ClientOptions, 'log'>;
  /** Called with every notification (update, locked, stolen, ...). */
  onNotify: NotifyHandler = () => undefined;
  /** Called after each connection is made; a rejection drops the connection (and retries). */
  onSession: () => Promise<void> = async () => undefined;
  /** Called when a connection is lost. */
  onDisconnect: (why: string) => void = () => undefined;
  /** Connections made so far. */
  sessions = 0;

  constructor(remote: string, opts: ClientOptions = {}) {
    this.remote = remote;
    this.ep = parseRemote(remote);
    this.opts = { probeMs: opts.probeMs ?? 5000, backoffMinMs: opts.backoffMinMs ?? 100, backoffMaxMs: opts.backoffMaxMs ?? 8000, log: opts.log };
    this.backoff = this.opts.backoffMinMs;
  }

  get connected(): boolean {
    return this.sock !== null && !this.sock.destroyed && this.sock.readyState === 'open';
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop('client stopped');
  }

  private log(level: 'info' | 'warn' | 'debug', msg: string): void {
    this.opts.log?.(level, msg);
  }

  private connect(): void {
    if (this.stopped) return;
    const sock = this.ep.kind === 'unix' ? net.createConnection(this.ep.path!) : net.createConnection(this.ep.port!, this.ep.host!);
    this.sock = sock;
    const splitter = new JsonSplitter();
    sock.setEncoding('utf8');
    let up = false;
    sock.on('connect', () => {
      up = true;
      this.sessions++;
      this.lastRx = Date.now();
      this.probeSent = false;
      this.log('info', `${this.remote}: connected`);
      this.probeTimer = setInterval(() => this.probe(), Math.max(100, this.opts.probeMs / 2));
      this.probeTimer.unref();
      this.onSession().then(
        () => {
          this.backoff = this.opts.backoffMinMs;
        },
        (e: Error) => {
          if (this.sock === sock) {
            this.log('warn', `${this.remote}: session setup failed: ${e.message}`);
            this.drop(`session setup failed: ${e.message}`);
          }
        },
      );
    });
    sock.on('data', (chunk: string) => {
      this.lastRx = Date.now();
      this.probeSent = false;
      let msgs: string[];
      try {
        msgs = splitter.push(chunk);
      } catch (e) {
        this.log('warn', `${this.remote}: ${(e as Error).message}; reconnecting`);
        this.drop('protocol error');
        return;
      }
      for (const m of msgs) {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(m) as Record<string, unknown>;
        } catch (e) {
          this.log('warn', `${this.remote}: bad JSON from server: ${(e as Error).message}`);
          this.drop('protocol error');
          return;
        }
        this.onMessage(msg);
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (!up) this.log('debug', `${this.remote}: connection attempt failed: ${e.code ?? e.message}`);
      else this.log('warn', `${this.remote}: ${e.message}`);
    });
    sock.on('close', () => {
      if (this.sock === sock) this.drop(up ? 'connection closed' : 'connection failed');
    });
  }

  private drop(why: string): void {
    const sock = this.sock;
    this.sock = null;
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = null;
    if (sock) {
      sock.removeAllListeners('close');
      sock.destroy();
    }
    const err = new OvsdbError(`connection to ${this.remote} lost (${why})`);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    if (sock) this.onDisconnect(why);
    if (!this.stopped && !this.retryTimer) {
      const wait = this.backoff;
      this.backoff = Math.min(this.opts.backoffMaxMs, this.backoff * 2);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.connect();
      }, wait);
      this.retryTimer.unref();
    }
  }

  private probe(): void {
    if (!this.connected) return;
    const idle = Date.now() - this.lastRx;
    if (idle < this.opts.probeMs) return;
    if (!this.probeSent) {
      this.probeSent = true;
      this.lastRx = Date.now();
      this.request('echo', []).catch(() => undefined);
    } else {
      this.log('warn', `${this.remote}: no answer to echo for ${this.opts.probeMs} ms; reconnecting`);
      this.drop('inactivity probe');
    }
  }

  private send(obj: unknown): void {
    this.sock?.write(JSON.stringify(obj));
  }

  private onMessage(msg: Record<string, unknown>): void {
    if (typeof msg.method === 'string') {
      const params = Array.isArray(msg.params) ? (msg.params as unknown[]) : [];
      if (msg.method === 'echo' && msg.id !== null && msg.id !== undefined) {
        this.send({ id: msg.id, result: params, error: null });
        return;
      }
      if (msg.id === null || msg.id === undefined) {
        this.onNotify(msg.method, params);
        return;
      }
      // a request we do not serve
      this.send({ id: msg.id, result: null, error: { error: 'unknown method', details: msg.method } });
      return;
    }
    const id = msg.id as number;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (msg.error !== null && msg.error !== undefined) {
      const e = msg.error as { error?: string; details?: string } | string;
      const text = typeof e === 'string' ? e : `${e.error ?? 'error'}${e.details ? `: ${e.details}` : ''}`;
      p.reject(new OvsdbError(`${p.method}: ${text}`, e));
    } else p.resolve(msg.result);
  }

  /** Send one request; resolves with its result, rejects on an error reply or a lost connection. */
  request(method: string, params: unknown[]): Promise<unknown> {
    if (!this.connected) return Promise.reject(new OvsdbError(`not connected to ${this.remote}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.send({ id, method, params });
    });
  }

  /**
   * `transact`: resolves with the per-operation results; rejects if any
   * operation failed (RFC 7047: an error object in the results).
   */
  async transact(db: string, ops: unknown[]): Promise<Record<string, unknown>[]> {
    const res = (await this.request('transact', [db, ...ops])) as (Record<string, unknown> | null)[];
    for (let i = 0; i < res.length; i++) {
      const r = res[i];
      if (r && typeof r.error === 'string') {
        throw new OvsdbError(`transact: operation ${i} (${(ops[i] as { op?: string })?.op ?? '?'}): ${r.error}${r.details ? `: ${String(r.details)}` : ''}`, r);
      }
    }
    return res as Record<string, unknown>[];
  }
}
